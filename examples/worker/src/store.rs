//! Layer 3 of the example: storage. Each function that stores or reads what callers sent takes
//! the caller's `&Verified<Principal>` (which only ztgate makes, after identity ran) and
//! accepts only the kinds of principal that may do that one thing:
//!
//! | function | accepts |
//! |---|---|
//! | [`record_message`] | an opened queue envelope of that queue (`signed_token`, purpose `queue:<name>`) |
//! | [`record_maintenance`] | the platform running a cron trigger (`scheduled`) only |
//! | [`record_note`] | an RPC caller's signed token (purpose `rpc:record_note`) or an Access service token |
//! | [`summary`] | an Access user or service token (the admin routes' principals) |
//!
//! Any other principal is [`StoreError::Refused`] before the object is asked, so, say, an admin
//! over HTTP cannot record a maintenance run, and a user's JWT passed over RPC cannot add a
//! note. [`count_rejected`] is the one write without a principal: it adds 1 to a counter named
//! by the consumer's own refusal code, and stores nothing a sender wrote.
//!
//! The data lives in the SQLite-backed Durable Object [`AppStore`] (binding `ZTGATE_STORE`): one
//! object for the whole fleet, single-threaded, so an insert-if-absent is one step. It is
//! separate from ztgate's own shared-state object (`ZTGATE_STATE`), which holds identity's
//! state (replays, revocations, budgets), never application data.

use serde_json::{Value, json};
use worker::js_sys;
use worker::{DurableObject, Env, Request, Response, SqlStorage, SqlStorageValue, State, durable_object};
use ztgate::{Principal, Verified};

/// The Durable Object binding of the application's storage (`wrangler.toml`).
pub const STORE_BINDING: &str = "ZTGATE_STORE";
/// The purpose an RPC caller's signed token is minted for.
pub const RPC_NOTE_PURPOSE: &str = "rpc:record_note";
/// The longest text a record or a note holds, in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Rows per table, at most: beyond, a write is refused (the queue retries it later).
const MAX_ROWS: i64 = 10_000;
/// The most failures a message may ask its storage step to fake (see [`QueueMessage`]).
const MAX_FAIL_FIRST: u64 = 5;
/// The largest request the object reads.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Why storage did not do it.
#[derive(Debug)]
pub enum StoreError {
    /// This principal may not do this (403).
    Refused(&'static str),
    /// The object could not be reached or failed (503; a queue message is retried).
    Unavailable(String),
}

/// What a queue message asks to store: the body of an opened envelope, parsed.
///
/// `{"kind": "note", "text": "..."}`; `"fail_first": N` (at most 5) makes the storage step
/// fail for this message's first N attempts, so that a test sees the queue retry it. Only a
/// sender holding the key ring can ask for it (the body is signed), and it can only make
/// storage fail, never succeed.
#[derive(Debug)]
pub struct QueueMessage {
    kind: String,
    text: String,
    fail_first: u64,
}

impl QueueMessage {
    /// Parses a verified body; `None` if it is not such an object (the sender is genuine but
    /// sent something this consumer does not take: never retried).
    pub fn parse(body: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(body).ok()?;
        let object = value.as_object()?;
        let kind = object.get("kind")?.as_str()?;
        let text = object.get("text")?.as_str()?;
        let fail_first = match object.get("fail_first") {
            None => 0,
            Some(n) => n.as_u64().filter(|n| *n <= MAX_FAIL_FIRST)?,
        };
        let kind_ok = (1..=32).contains(&kind.len())
            && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.');
        if !kind_ok || text.len() > MAX_TEXT_BYTES || object.len() > 3 {
            return None;
        }
        Some(Self { kind: kind.to_owned(), text: text.to_owned(), fail_first })
    }
}

/// The client of the [`AppStore`] object.
pub struct Store {
    namespace: worker::ObjectNamespace,
}

impl Store {
    /// The store bound as [`STORE_BINDING`].
    pub fn new(env: &Env) -> Result<Self, StoreError> {
        let namespace = env
            .durable_object(STORE_BINDING)
            .map_err(|_| StoreError::Unavailable(format!("no Durable Object binding {STORE_BINDING}")))?;
        Ok(Self { namespace })
    }

    async fn call(&self, path: &str, body: Option<Value>) -> Result<Value, StoreError> {
        let unavailable = |what: &str, e: worker::Error| StoreError::Unavailable(format!("{what}: {e}"));
        let stub = self
            .namespace
            .id_from_name("app")
            .and_then(|id| id.get_stub())
            .map_err(|e| unavailable("no stub", e))?;
        let mut init = worker::RequestInit::new();
        match body {
            Some(body) => {
                init.with_method(worker::Method::Post)
                    .with_body(Some(wasm_bindgen::JsValue::from_str(&body.to_string())));
            }
            None => {
                init.with_method(worker::Method::Get);
            }
        }
        let request = Request::new_with_init(&format!("https://app.store{path}"), &init)
            .map_err(|e| unavailable("request", e))?;
        let mut response = stub.fetch_with_request(request).await.map_err(|e| unavailable("fetch", e))?;
        let status = response.status_code();
        let text = response.text().await.map_err(|e| unavailable("answer", e))?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 200 {
            Ok(answer)
        } else {
            let why = answer.get("error").and_then(Value::as_str).unwrap_or("no reason");
            Err(StoreError::Unavailable(format!("store answered {status}: {why}")))
        }
    }
}

/// Stores a queue message under its envelope's id `id`, once: a redelivered message is not
/// stored again (`Ok(false)`). Only an envelope opened for `queue` is accepted.
pub async fn record_message(
    store: &Store,
    who: &Verified<Principal>,
    queue: &str,
    id: &str,
    message: &QueueMessage,
) -> Result<bool, StoreError> {
    let from_queue = matches!(who.principal(),
        Principal::SignedToken(t) if t.purpose.strip_prefix("queue:") == Some(queue));
    if !from_queue || !who.proved_by("signed_envelope") {
        return Err(StoreError::Refused("only a message of this queue is stored here"));
    }
    let ask = json!({
        "id": id, "kind": message.kind, "text": message.text, "by": who.id(),
        "fail_first": message.fail_first,
    });
    let answer = store.call("/records", Some(ask)).await?;
    Ok(answer.get("stored").and_then(Value::as_bool).unwrap_or(false))
}

/// Records a maintenance run: only the platform's cron trigger may (an HTTP caller, whoever it
/// is, is refused).
pub async fn record_maintenance(store: &Store, who: &Verified<Principal>) -> Result<u64, StoreError> {
    let Some(cron) = who.principal().as_scheduled() else {
        return Err(StoreError::Refused("maintenance runs are recorded by the cron trigger only"));
    };
    let answer = store.call("/maintenance", Some(json!({ "cron": cron, "by": who.id() }))).await?;
    Ok(answer.get("runs").and_then(Value::as_u64).unwrap_or(0))
}

/// Adds a note sent over RPC: only a signed token minted for [`RPC_NOTE_PURPOSE`], or an
/// Access service token (a machine), may.
pub async fn record_note(store: &Store, who: &Verified<Principal>, text: &str) -> Result<u64, StoreError> {
    let machine = match who.principal() {
        Principal::SignedToken(t) => t.purpose == RPC_NOTE_PURPOSE,
        Principal::Service(_) => true,
        _ => false,
    };
    if !machine {
        return Err(StoreError::Refused("notes come from services, over RPC"));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(StoreError::Refused("a note is at most 1024 bytes"));
    }
    let answer = store.call("/notes", Some(json!({ "text": text, "by": who.id() }))).await?;
    Ok(answer.get("notes").and_then(Value::as_u64).unwrap_or(0))
}

/// What is stored, for the admin routes: counts, the last records, the last maintenance run,
/// the last note, and the consumer's refusals by code.
pub async fn summary(store: &Store, who: &Verified<Principal>) -> Result<Value, StoreError> {
    if !matches!(who.principal(), Principal::User(_) | Principal::Service(_)) {
        return Err(StoreError::Refused("the summary is for admins"));
    }
    store.call("/summary", None).await
}

/// Adds 1 to the queue consumer's count of refused messages with code `reason` (one of
/// `EnvelopeError::code`'s, or `invalid_payload`). Takes no principal: a refused message has
/// none, and nothing it carried is stored.
pub async fn count_rejected(store: &Store, reason: &'static str) -> Result<(), StoreError> {
    store.call("/rejected", Some(json!({ "reason": reason }))).await.map(|_| ())
}

// --- the object -------------------------------------------------------------------------------

const SCHEMA: [&str; 5] = [
    "CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, kind TEXT NOT NULL, text TEXT NOT NULL, by TEXT NOT NULL, at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS attempts (id TEXT PRIMARY KEY, n INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS maintenance (at INTEGER NOT NULL, cron TEXT NOT NULL, by TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS notes (at INTEGER NOT NULL, text TEXT NOT NULL, by TEXT NOT NULL)",
];

/// The application's storage: records, maintenance runs, notes and counters in the object's
/// SQLite, served to [`Store`] over `fetch`. Every operation runs without an `await` between
/// its reads and writes, so no other request interleaves.
#[durable_object]
pub struct AppStore {
    state: State,
}

impl DurableObject for AppStore {
    fn new(state: State, _env: Env) -> Self {
        Self { state }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let body = if req.method() == worker::Method::Post {
            match req.bytes().await {
                Ok(body) if body.len() <= MAX_BODY_BYTES => {
                    serde_json::from_slice(&body).unwrap_or(Value::Null)
                }
                _ => return refuse(400, "unreadable or too large"),
            }
        } else {
            Value::Null
        };
        match self.serve(&req.path(), &body) {
            Ok(answer) => Response::from_json(&answer),
            Err((status, why)) => refuse(status, &why),
        }
    }
}

fn refuse(status: u16, why: &str) -> worker::Result<Response> {
    Ok(Response::from_json(&json!({ "error": why }))?.with_status(status))
}

type Fault = (u16, String);

impl AppStore {
    fn sql(&self) -> SqlStorage {
        self.state.storage().sql()
    }

    fn serve(&self, path: &str, body: &Value) -> Result<Value, Fault> {
        let sql = self.sql();
        for statement in SCHEMA {
            sql.exec(statement, None).map_err(storage)?;
        }
        let text = |name: &str| -> Result<String, Fault> {
            body.get(name)
                .and_then(Value::as_str)
                .filter(|s| s.len() <= MAX_TEXT_BYTES)
                .map(str::to_owned)
                .ok_or((400, format!("`{name}` is missing or too long")))
        };
        let now = (js_sys::Date::now() / 1000.0) as i64;
        match path {
            "/records" => {
                let id = text("id")?;
                if self.int("SELECT COUNT(*) FROM records WHERE id = ?", vec![id.clone().into()])? > 0 {
                    return Ok(json!({ "stored": false }));
                }
                let fail_first =
                    body.get("fail_first").and_then(Value::as_u64).unwrap_or(0).min(MAX_FAIL_FIRST);
                if fail_first > 0 {
                    sql.exec(
                        "INSERT INTO attempts (id, n) VALUES (?, 1) ON CONFLICT(id) DO UPDATE SET n = n + 1",
                        vec![id.clone().into()],
                    )
                    .map_err(storage)?;
                    let attempts =
                        self.int("SELECT n FROM attempts WHERE id = ?", vec![id.clone().into()])?;
                    if attempts <= fail_first as i64 {
                        self.bump("storage_failures")?;
                        return Err((503, format!("injected failure {attempts} of {fail_first}")));
                    }
                }
                self.room("records")?;
                sql.exec(
                    "INSERT INTO records (id, kind, text, by, at) VALUES (?, ?, ?, ?, ?)",
                    vec![
                        id.into(),
                        text("kind")?.into(),
                        text("text")?.into(),
                        text("by")?.into(),
                        now.into(),
                    ],
                )
                .map_err(storage)?;
                Ok(json!({ "stored": true }))
            }
            "/maintenance" => {
                self.room("maintenance")?;
                sql.exec(
                    "INSERT INTO maintenance (at, cron, by) VALUES (?, ?, ?)",
                    vec![now.into(), text("cron")?.into(), text("by")?.into()],
                )
                .map_err(storage)?;
                Ok(json!({ "runs": self.int("SELECT COUNT(*) FROM maintenance", vec![])? }))
            }
            "/notes" => {
                self.room("notes")?;
                sql.exec(
                    "INSERT INTO notes (at, text, by) VALUES (?, ?, ?)",
                    vec![now.into(), text("text")?.into(), text("by")?.into()],
                )
                .map_err(storage)?;
                Ok(json!({ "notes": self.int("SELECT COUNT(*) FROM notes", vec![])? }))
            }
            "/rejected" => {
                let reason = text("reason")?;
                if reason.len() > 32 || !reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                    return Err((400, "not a refusal code".to_owned()));
                }
                self.bump(&format!("rejected:{reason}"))?;
                Ok(json!({}))
            }
            "/summary" => self.summary(),
            _ => Err((404, "no such operation".to_owned())),
        }
    }

    fn summary(&self) -> Result<Value, Fault> {
        let rows = |query: &str| -> Result<Vec<Vec<SqlStorageValue>>, Fault> {
            self.sql()
                .exec(query, None)
                .map_err(storage)?
                .raw()
                .collect::<worker::Result<Vec<_>>>()
                .map_err(storage)
        };
        let cell = |row: &[SqlStorageValue], i: usize| match row.get(i) {
            Some(SqlStorageValue::String(s)) => json!(s),
            Some(SqlStorageValue::Integer(n)) => json!(n),
            Some(SqlStorageValue::Float(f)) => json!(f),
            _ => Value::Null,
        };
        let records: Vec<Value> =
            rows("SELECT id, kind, text, by FROM records ORDER BY at DESC, id LIMIT 50")?
                .iter()
                .map(
                    |r| json!({ "id": cell(r, 0), "kind": cell(r, 1), "text": cell(r, 2), "by": cell(r, 3) }),
                )
                .collect();
        let mut rejected = serde_json::Map::new();
        let mut storage_failures = 0;
        for row in rows("SELECT name, n FROM counters ORDER BY name")? {
            match (cell(&row, 0), cell(&row, 1)) {
                (Value::String(name), n) if name == "storage_failures" => {
                    storage_failures = n.as_i64().unwrap_or(0)
                }
                (Value::String(name), n) => {
                    if let Some(reason) = name.strip_prefix("rejected:") {
                        rejected.insert(reason.to_owned(), n);
                    }
                }
                _ => {}
            }
        }
        let last_run = rows("SELECT cron, by, at FROM maintenance ORDER BY rowid DESC LIMIT 1")?
            .first()
            .map(|r| json!({ "cron": cell(r, 0), "by": cell(r, 1), "at": cell(r, 2) }));
        let last_note = rows("SELECT text, by FROM notes ORDER BY rowid DESC LIMIT 1")?
            .first()
            .map(|r| json!({ "text": cell(r, 0), "by": cell(r, 1) }));
        Ok(json!({
            "queue": {
                "stored": self.int("SELECT COUNT(*) FROM records", vec![])?,
                "records": records,
                "rejected": rejected,
                "storage_failures": storage_failures,
            },
            "maintenance": { "runs": self.int("SELECT COUNT(*) FROM maintenance", vec![])?, "last": last_run },
            "rpc": { "notes": self.int("SELECT COUNT(*) FROM notes", vec![])?, "last": last_note },
        }))
    }

    /// The first integer of the first row (0 if none).
    fn int(&self, query: &str, args: Vec<SqlStorageValue>) -> Result<i64, Fault> {
        let row = self.sql().exec(query, args).map_err(storage)?.raw().next().transpose().map_err(storage)?;
        Ok(match row.as_deref().and_then(<[_]>::first) {
            Some(SqlStorageValue::Integer(n)) => *n,
            Some(SqlStorageValue::Float(f)) => *f as i64,
            _ => 0,
        })
    }

    fn bump(&self, name: &str) -> Result<(), Fault> {
        self.sql()
            .exec(
                "INSERT INTO counters (name, n) VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET n = n + 1",
                vec![name.into()],
            )
            .map(|_| ())
            .map_err(storage)
    }

    /// Refuses a write to a full table (507): the bound on what senders can make it hold.
    fn room(&self, table: &str) -> Result<(), Fault> {
        if self.int(&format!("SELECT COUNT(*) FROM {table}"), vec![])? >= MAX_ROWS {
            return Err((507, format!("{table} is full")));
        }
        Ok(())
    }
}

fn storage(e: worker::Error) -> Fault {
    (500, e.to_string().chars().take(200).collect())
}
