//! Shared state at the edge in a Durable Object: the webhook replay guard, the claims on signed
//! queue envelopes, the rate limits and the revocation list of a fleet of isolates, in one SQLite-backed Durable Object that every
//! isolate reaches by name (see `docs/fleet-state.md`).
//!
//! Two halves, one wire format (JSON over the object's `fetch`, paths under `/v1/`):
//!
//! - [`StateObject`] is the object's logic. workers-rs exports a Durable Object class only from
//!   the Worker's own crate (`#[durable_object]` on a struct there), so the Worker declares a
//!   three-line class that delegates `fetch` and `alarm` to it.
//! - [`DurableState`] is the client: it holds the namespace binding the operator named and
//!   hands out [`DurableReplayGuard`], [`DurableClaims`], [`DurableRateLimiter`] and
//!   [`DurableRevocations`], the ports' implementations. Each call is one request to the object, bounded by a timeout.
//!
//! **Atomicity.** A Durable Object is single-threaded and each operation is one request whose
//! storage work runs synchronously (SQLite statements, no `await` between the read and the
//! write), so no other request to the object can interleave: set-if-absent, claim-if-absent,
//! GCRA and revoke-if-room are each one indivisible step, like a Redis Lua script.
//!
//! **Clocks.** The object's clock decides expiries and GCRA arrival times, one clock for every
//! isolate (as Redis's own clock does for native instances). The only numbers from callers are
//! a replay record's or a claim's `expires_at` and the budget.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::pin::pin;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use worker::send::SendFuture;
use worker::{SqlStorage, SqlStorageValue};

use super::race;
use crate::BoxFuture;
use crate::error::ConfigError;
use crate::identity::envelope::{Claim, EnvelopeClaims, MAX_HOLDER_LEN};
use crate::identity::shared_state::{Budget, RateLimiter, Revocation, RevocationList, StateError};
use crate::identity::webhook::{ReplayGuard, ReplayStoreError};

/// The longest key the object accepts (bytes): a scoped replay key, a rate-limit key, a
/// revocation's `kind:id`.
const MAX_KEY_BYTES: usize = 512;
/// The most keys in one call (a request spends at most a client IP and a credential).
const MAX_KEYS: usize = 16;
/// The largest request body the object reads.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Expired replay and rate rows deleted by each write, besides the alarm's sweeps.
const SWEEP_BATCH: u32 = 16;
/// How often the alarm sweeps expired rows while any are stored.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Local answers (revocation look-ups, known-spent budgets) kept per isolate, at most.
const MAX_LOCAL_ANSWERS: usize = 10_000;
/// The status the object answers when a table is full (the client's `Full` error).
const FULL_STATUS: u16 = 507;

// --- wire format ------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct ReplayAsk {
    key: String,
    expires_at: u64,
}

#[derive(Serialize, Deserialize)]
struct ReplayAnswer {
    first: bool,
}

#[derive(Serialize, Deserialize)]
struct ClaimAsk {
    key: String,
    holder: String,
    expires_at: u64,
}

#[derive(Serialize, Deserialize)]
struct ClaimAnswer {
    /// `first`, `held` or `taken`.
    claim: String,
}

#[derive(Serialize, Deserialize)]
struct RateAsk {
    keys: Vec<String>,
    limit: u32,
    window_secs: u64,
    spend: bool,
}

#[derive(Serialize, Deserialize)]
struct RateAnswer {
    /// The wait of each key, in the order asked (ms; 0: it had budget).
    waits_ms: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct KeysAsk {
    keys: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct RevokedAnswer {
    /// The keys asked that are revoked.
    revoked: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct RevokeAsk {
    key: String,
}

#[derive(Serialize, Deserialize)]
struct ListAnswer {
    keys: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Refusal {
    error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    capacity: Option<usize>,
}

#[derive(Serialize, Deserialize)]
struct Done {}

// --- the object ---------------------------------------------------------------------------------

/// The logic of the shared-state Durable Object: replay records, GCRA budgets and revocations
/// in the object's SQLite storage (so they survive the object's eviction and restarts), served
/// to [`DurableState`] clients over `fetch`.
///
/// Declare the class in the Worker and delegate to it (the class must be in
/// `new_sqlite_classes` of a `[[migrations]]` entry: the key-value backend has no SQL):
///
/// ```ignore
/// use worker::{DurableObject, Env, Request, Response, State, durable_object};
///
/// #[durable_object(alarm)]
/// pub struct ZtgateState {
///     inner: ztgate::workers::StateObject,
/// }
///
/// impl DurableObject for ZtgateState {
///     fn new(state: State, _env: Env) -> Self {
///         Self { inner: ztgate::workers::StateObject::new(state) }
///     }
///     async fn fetch(&self, req: Request) -> worker::Result<Response> {
///         self.inner.fetch(req).await
///     }
///     async fn alarm(&self) -> worker::Result<Response> {
///         self.inner.alarm().await
///     }
/// }
/// ```
///
/// Bounded: at most [`StateObject::DEFAULT_MAX_REPLAYS`] live replay records, and as many live
/// envelope claims (beyond, new messages are refused, never an old record forgotten), [`StateObject::DEFAULT_MAX_RATE_KEYS`]
/// budgets (beyond, whole budgets go first, then the oldest) and
/// [`StateObject::DEFAULT_MAX_REVOCATIONS`] revocations (beyond, a new one is refused). Expired
/// replay records and claims, and whole budgets, are deleted a few at a time by each write and all at once by
/// an alarm, every minute while any is stored.
pub struct StateObject {
    state: worker::State,
    max_replays: u64,
    max_rate_keys: u64,
    max_revocations: u64,
    /// The tables exist (created on the first request of this instance).
    ready: Cell<bool>,
    /// Rows per table, counted once per instance and then kept up to date by its writes (the
    /// object is the only writer); `None`: count again.
    counts: Cell<[Option<u64>; 4]>,
    /// An alarm is known to be set.
    alarm_set: Cell<bool>,
}

impl fmt::Debug for StateObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateObject")
            .field("max_replays", &self.max_replays)
            .field("max_rate_keys", &self.max_rate_keys)
            .field("max_revocations", &self.max_revocations)
            .finish_non_exhaustive()
    }
}

/// The object's tables.
#[derive(Clone, Copy)]
enum Table {
    Replay = 0,
    Rate = 1,
    Revocation = 2,
    Claim = 3,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Self::Replay => "ztgate_replay",
            Self::Rate => "ztgate_rate",
            Self::Revocation => "ztgate_revocation",
            Self::Claim => "ztgate_claim",
        }
    }
}

/// Why the object refused an operation.
enum Fault {
    /// A malformed request (400).
    Bad(&'static str),
    /// A table is full (507).
    Full(u64),
    /// The storage failed (500).
    Storage(String),
}

impl From<worker::Error> for Fault {
    fn from(e: worker::Error) -> Self {
        Self::Storage(short(&e.to_string()))
    }
}

const SCHEMA: [&str; 7] = [
    "CREATE TABLE IF NOT EXISTS ztgate_replay (key TEXT PRIMARY KEY, expires_at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ztgate_replay_expiry ON ztgate_replay (expires_at)",
    "CREATE TABLE IF NOT EXISTS ztgate_rate (key TEXT PRIMARY KEY, tat INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ztgate_rate_tat ON ztgate_rate (tat)",
    "CREATE TABLE IF NOT EXISTS ztgate_revocation (key TEXT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS ztgate_claim (key TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ztgate_claim_expiry ON ztgate_claim (expires_at)",
];

impl StateObject {
    /// Live replay records kept at most (1,000,000), and live envelope claims as many.
    pub const DEFAULT_MAX_REPLAYS: u64 = 1_000_000;
    /// Rate-limit keys kept at most (1,000,000).
    pub const DEFAULT_MAX_RATE_KEYS: u64 = 1_000_000;
    /// Revocations kept at most (100,000, as [`InMemoryRevocations`](crate::identity::shared_state::InMemoryRevocations)).
    pub const DEFAULT_MAX_REVOCATIONS: u64 = 100_000;

    /// The object for `state` (what the class's `new` receives), with the default bounds.
    pub fn new(state: worker::State) -> Self {
        Self {
            state,
            max_replays: Self::DEFAULT_MAX_REPLAYS,
            max_rate_keys: Self::DEFAULT_MAX_RATE_KEYS,
            max_revocations: Self::DEFAULT_MAX_REVOCATIONS,
            ready: Cell::new(false),
            counts: Cell::new([None; 4]),
            alarm_set: Cell::new(false),
        }
    }

    /// Other bounds (each at least 1): live replay records (and as many envelope claims),
    /// rate-limit keys, revocations.
    #[must_use]
    pub fn with_bounds(mut self, max_replays: u64, max_rate_keys: u64, max_revocations: u64) -> Self {
        self.max_replays = max_replays.max(1);
        self.max_rate_keys = max_rate_keys.max(1);
        self.max_revocations = max_revocations.max(1);
        self
    }

    /// Serves one request of a [`DurableState`] client: a JSON answer, or a JSON `error` with
    /// 400 (a malformed request), 507 (a full table) or 500 (the storage failed).
    pub async fn fetch(&self, mut req: worker::Request) -> worker::Result<worker::Response> {
        let path = req.path();
        let method = req.method();
        let body = if method == worker::Method::Post {
            match req.bytes().await {
                Ok(body) if body.len() <= MAX_BODY_BYTES => body,
                Ok(_) => return answer_fault(Fault::Bad("request body too large")),
                Err(_) => return answer_fault(Fault::Bad("unreadable request body")),
            }
        } else {
            Vec::new()
        };
        // From here to the answer, no await: the operation is one step of the object.
        let (outcome, wrote) = self.serve(&method, &path, &body);
        if wrote {
            self.keep_alarm().await;
        }
        match outcome {
            Ok(json) => worker::Response::ok(json).map(with_json_type),
            Err(fault) => answer_fault(fault),
        }
    }

    /// The alarm: deletes every expired replay record and whole budget, and sets itself again
    /// while rows are stored.
    pub async fn alarm(&self) -> worker::Result<worker::Response> {
        self.alarm_set.set(false);
        let remaining = self.ready().and_then(|()| {
            self.sweep(Table::Replay, now_secs(), None)?;
            self.sweep(Table::Claim, now_secs(), None)?;
            self.sweep(Table::Rate, now_ms(), None)?;
            Ok(self.count(Table::Replay)? + self.count(Table::Claim)? + self.count(Table::Rate)?)
        });
        match remaining {
            Ok(0) => {}
            Ok(_) => self.set_alarm().await,
            Err(fault) => {
                self.forget_counts();
                if let Fault::Storage(why) = fault {
                    tracing::warn!(layer = "storage", outcome = "state_sweep_failed", error = ?why);
                }
            }
        }
        worker::Response::empty()
    }

    /// The operation `path` names: its JSON answer, and whether it wrote rows that expire.
    fn serve(&self, method: &worker::Method, path: &str, body: &[u8]) -> (Result<String, Fault>, bool) {
        if let Err(fault) = self.ready() {
            return (Err(fault), false);
        }
        let outcome = match (method, path) {
            (worker::Method::Post, "/v1/replay") => {
                // Only a first delivery writes a record.
                parse::<ReplayAsk>(body)
                    .and_then(|ask| self.first_seen(&ask))
                    .map(|first| (to_json(&ReplayAnswer { first }), first))
            }
            (worker::Method::Post, "/v1/claim") => {
                parse::<ClaimAsk>(body).and_then(|ask| self.claim(&ask)).map(|claim| {
                    let name = match claim {
                        Claim::First => "first",
                        Claim::Held => "held",
                        Claim::Taken => "taken",
                    };
                    (to_json(&ClaimAnswer { claim: name.to_owned() }), claim == Claim::First)
                })
            }
            (worker::Method::Post, "/v1/rate") => parse::<RateAsk>(body).and_then(|ask| {
                self.gcra(&ask).map(|waits_ms| (to_json(&RateAnswer { waits_ms }), ask.spend))
            }),
            (worker::Method::Post, "/v1/revocations/any") => parse::<KeysAsk>(body)
                .and_then(|ask| self.revoked(&ask.keys))
                .map(|revoked| (to_json(&RevokedAnswer { revoked }), false)),
            (worker::Method::Post, "/v1/revocations") => parse::<RevokeAsk>(body)
                .and_then(|ask| self.revoke(&ask.key))
                .map(|()| (to_json(&Done {}), false)),
            (worker::Method::Get, "/v1/revocations") => {
                self.list().map(|keys| (to_json(&ListAnswer { keys }), false))
            }
            _ => Err(Fault::Bad("no such operation")),
        };
        match outcome {
            Ok((json, wrote)) => (Ok(json), wrote),
            Err(fault) => {
                if matches!(fault, Fault::Storage(_)) {
                    self.forget_counts();
                }
                (Err(fault), false)
            }
        }
    }

    fn sql(&self) -> SqlStorage {
        self.state.storage().sql()
    }

    /// Creates the tables once per instance.
    fn ready(&self) -> Result<(), Fault> {
        if self.ready.get() {
            return Ok(());
        }
        // A class without SQLite storage fails here, with the runtime's message naming
        // `new_sqlite_classes`.
        let sql = self.sql();
        for statement in SCHEMA {
            sql.exec(statement, None)?;
        }
        self.ready.set(true);
        Ok(())
    }

    /// `SELECT` of one integer column: its values.
    fn ints(&self, query: &str, args: Vec<SqlStorageValue>) -> Result<Vec<i64>, Fault> {
        self.sql()
            .exec(query, args)?
            .raw()
            .map(|row| match row?.first() {
                Some(SqlStorageValue::Integer(n)) => Ok(*n),
                Some(SqlStorageValue::Float(f)) => Ok(*f as i64),
                _ => Err(Fault::Storage("a stored number is not a number".to_owned())),
            })
            .collect()
    }

    /// `SELECT` of one text column: its values.
    fn texts(&self, query: &str, args: Vec<SqlStorageValue>) -> Result<Vec<String>, Fault> {
        self.sql()
            .exec(query, args)?
            .raw()
            .map(|row| match row?.first() {
                Some(SqlStorageValue::String(s)) => Ok(s.clone()),
                _ => Err(Fault::Storage("a stored key is not text".to_owned())),
            })
            .collect()
    }

    fn count(&self, table: Table) -> Result<u64, Fault> {
        let mut counts = self.counts.get();
        if let Some(n) = counts[table as usize] {
            return Ok(n);
        }
        let n = self.ints(&format!("SELECT COUNT(*) FROM {}", table.name()), vec![])?;
        let n = n.first().copied().unwrap_or(0).max(0) as u64;
        counts[table as usize] = Some(n);
        self.counts.set(counts);
        Ok(n)
    }

    fn adjust(&self, table: Table, by: i64) {
        let mut counts = self.counts.get();
        counts[table as usize] = counts[table as usize].map(|n| n.saturating_add_signed(by));
        self.counts.set(counts);
    }

    fn forget_counts(&self) {
        self.counts.set([None; 4]);
    }

    /// Deletes expired rows of `table` (a replay record past its second, a budget whole again
    /// at `now`), at most `limit` of them: how many went.
    fn sweep(&self, table: Table, now: u64, limit: Option<u32>) -> Result<u64, Fault> {
        let column = match table {
            Table::Replay | Table::Claim => "expires_at",
            Table::Rate => "tat",
            Table::Revocation => return Ok(0),
        };
        // A replay record is live through its `expires_at` second; a budget whose arrival time
        // is not after now is whole (the same as no row).
        let test = match table {
            Table::Replay | Table::Claim => "<",
            _ => "<=",
        };
        let name = table.name();
        let query = match limit {
            Some(n) => format!(
                "DELETE FROM {name} WHERE key IN (SELECT key FROM {name} WHERE {column} {test} ? LIMIT {n}) RETURNING key"
            ),
            None => format!("DELETE FROM {name} WHERE {column} {test} ? RETURNING key"),
        };
        let gone = self.texts(&query, vec![int(now)])?.len() as u64;
        self.adjust(table, -(gone as i64));
        Ok(gone)
    }

    /// Set-if-absent with expiry, on the object's clock.
    fn first_seen(&self, ask: &ReplayAsk) -> Result<bool, Fault> {
        check_key(&ask.key)?;
        let now = now_secs();
        self.sweep(Table::Replay, now, Some(SWEEP_BATCH))?;
        let record =
            self.ints("SELECT expires_at FROM ztgate_replay WHERE key = ?", vec![ask.key.as_str().into()])?;
        match record.first() {
            Some(&until) if until >= 0 && until as u64 >= now => return Ok(false),
            // An expired record of the same key: replaced, no new row.
            Some(_) => {}
            None => {
                if self.count(Table::Replay)? >= self.max_replays {
                    self.sweep(Table::Replay, now, None)?;
                    if self.count(Table::Replay)? >= self.max_replays {
                        return Err(Fault::Full(self.max_replays));
                    }
                }
            }
        }
        self.sql().exec(
            "INSERT INTO ztgate_replay (key, expires_at) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at",
            vec![ask.key.as_str().into(), int(ask.expires_at.max(now))],
        )?;
        if record.is_empty() {
            self.adjust(Table::Replay, 1);
        }
        Ok(true)
    }

    /// Claim-if-absent with expiry, on the object's clock: who holds `ask.key` now.
    fn claim(&self, ask: &ClaimAsk) -> Result<Claim, Fault> {
        check_key(&ask.key)?;
        if ask.holder.is_empty() || ask.holder.len() > MAX_HOLDER_LEN {
            return Err(Fault::Bad("a holder is 1 to 128 bytes"));
        }
        let now = now_secs();
        self.sweep(Table::Claim, now, Some(SWEEP_BATCH))?;
        let held = self
            .sql()
            .exec("SELECT holder, expires_at FROM ztgate_claim WHERE key = ?", vec![ask.key.as_str().into()])?
            .raw()
            .next()
            .transpose()?;
        match held.as_deref() {
            Some([SqlStorageValue::String(holder), SqlStorageValue::Integer(until)])
                if *until >= 0 && *until as u64 >= now =>
            {
                return Ok(if *holder == ask.holder { Claim::Held } else { Claim::Taken });
            }
            // An expired claim of the same key: replaced, no new row.
            Some(_) => {}
            None => {
                if self.count(Table::Claim)? >= self.max_replays {
                    self.sweep(Table::Claim, now, None)?;
                    if self.count(Table::Claim)? >= self.max_replays {
                        return Err(Fault::Full(self.max_replays));
                    }
                }
            }
        }
        self.sql().exec(
            "INSERT INTO ztgate_claim (key, holder, expires_at) VALUES (?, ?, ?) \
             ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at",
            vec![ask.key.as_str().into(), ask.holder.as_str().into(), int(ask.expires_at.max(now))],
        )?;
        if held.is_none() {
            self.adjust(Table::Claim, 1);
        }
        Ok(Claim::First)
    }

    /// GCRA over `ask.keys` with `Budget`'s own arithmetic (the in-memory limiter's), on the
    /// object's clock: the wait of each key, spending from those with budget if asked.
    fn gcra(&self, ask: &RateAsk) -> Result<Vec<u64>, Fault> {
        check_keys(&ask.keys)?;
        let budget = Budget::new(ask.limit, Duration::from_secs(ask.window_secs))
            .map_err(|_| Fault::Bad("not a budget"))?;
        let now = now_ms();
        if ask.spend {
            self.sweep(Table::Rate, now, Some(SWEEP_BATCH))?;
            let incoming = ask.keys.len() as u64;
            if self.count(Table::Rate)? + incoming > self.max_rate_keys {
                // As the in-memory limiter: whole budgets first, then the oldest.
                self.sweep(Table::Rate, now, None)?;
                let over = (self.count(Table::Rate)? + incoming).saturating_sub(self.max_rate_keys);
                if over > 0 {
                    let gone = self
                        .texts(
                            &format!(
                                "DELETE FROM ztgate_rate WHERE key IN \
                                 (SELECT key FROM ztgate_rate ORDER BY tat LIMIT {over}) RETURNING key"
                            ),
                            vec![],
                        )?
                        .len();
                    self.adjust(Table::Rate, -(gone as i64));
                }
            }
        }
        let mut waits = Vec::with_capacity(ask.keys.len());
        for key in &ask.keys {
            let row = self.ints("SELECT tat FROM ztgate_rate WHERE key = ?", vec![key.as_str().into()])?;
            let stored = row.first().map(|&tat| tat.max(0) as u64);
            let tat = stored.unwrap_or(now);
            let wait = budget.wait(tat, now);
            if ask.spend && wait == 0 {
                self.sql().exec(
                    "INSERT INTO ztgate_rate (key, tat) VALUES (?, ?) \
                     ON CONFLICT (key) DO UPDATE SET tat = excluded.tat",
                    vec![key.as_str().into(), int(budget.after_spend(tat, now))],
                )?;
                if stored.is_none() {
                    self.adjust(Table::Rate, 1);
                }
            }
            waits.push(wait);
        }
        Ok(waits)
    }

    /// The keys of `keys` that are revoked.
    fn revoked(&self, keys: &[String]) -> Result<Vec<String>, Fault> {
        check_keys(keys)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let marks = vec!["?"; keys.len()].join(", ");
        let args = keys.iter().map(|k| k.as_str().into()).collect();
        self.texts(&format!("SELECT key FROM ztgate_revocation WHERE key IN ({marks})"), args)
    }

    /// Stores a revocation; twice is once; refused (never one forgotten) when full.
    fn revoke(&self, key: &str) -> Result<(), Fault> {
        if Revocation::from_key(key).is_none() {
            return Err(Fault::Bad("not a revocation"));
        }
        if !self.revoked(&[key.to_owned()])?.is_empty() {
            return Ok(());
        }
        if self.count(Table::Revocation)? >= self.max_revocations {
            return Err(Fault::Full(self.max_revocations));
        }
        self.sql().exec("INSERT INTO ztgate_revocation (key) VALUES (?)", vec![key.into()])?;
        self.adjust(Table::Revocation, 1);
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>, Fault> {
        self.texts("SELECT key FROM ztgate_revocation ORDER BY key", vec![])
    }

    /// After a write of rows that expire: an alarm will sweep them (one is set unless one is).
    async fn keep_alarm(&self) {
        if self.alarm_set.get() {
            return;
        }
        match self.state.storage().get_alarm().await {
            Ok(Some(_)) => self.alarm_set.set(true),
            Ok(None) => self.set_alarm().await,
            Err(e) => {
                tracing::warn!(layer = "storage", outcome = "state_alarm_failed", error = ?short(&e.to_string()));
            }
        }
    }

    /// The next sweep, in [`SWEEP_EVERY`].
    async fn set_alarm(&self) {
        match self.state.storage().set_alarm(SWEEP_EVERY).await {
            Ok(()) => self.alarm_set.set(true),
            Err(e) => {
                tracing::warn!(layer = "storage", outcome = "state_alarm_failed", error = ?short(&e.to_string()));
            }
        }
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Fault> {
    serde_json::from_slice(body).map_err(|_| Fault::Bad("malformed request"))
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

fn check_key(key: &str) -> Result<(), Fault> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(Fault::Bad("a key is 1 to 512 bytes"));
    }
    Ok(())
}

fn check_keys(keys: &[String]) -> Result<(), Fault> {
    if keys.len() > MAX_KEYS {
        return Err(Fault::Bad("too many keys"));
    }
    keys.iter().try_for_each(|k| check_key(k))
}

fn int(n: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn with_json_type(mut response: worker::Response) -> worker::Response {
    let _ = response.headers_mut().set("content-type", "application/json");
    response
}

fn answer_fault(fault: Fault) -> worker::Result<worker::Response> {
    let (status, refusal) = match fault {
        Fault::Bad(why) => (400, Refusal { error: why.to_owned(), capacity: None }),
        Fault::Full(capacity) => {
            (FULL_STATUS, Refusal { error: "full".to_owned(), capacity: Some(capacity as usize) })
        }
        Fault::Storage(why) => {
            tracing::warn!(layer = "storage", outcome = "state_storage_failed", error = ?why);
            (500, Refusal { error: why, capacity: None })
        }
    };
    Ok(with_json_type(worker::Response::ok(to_json(&refusal))?.with_status(status)))
}

/// At most 200 characters of an error message.
fn short(message: &str) -> String {
    message.chars().take(200).collect()
}

fn now_ms() -> u64 {
    let millis = js_sys::Date::now();
    if millis.is_finite() && millis > 0.0 { millis as u64 } else { 0 }
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

// --- the clients ----------------------------------------------------------------------------

/// The client of the shared-state Durable Object: the namespace binding the operator named
/// (`[[durable_objects.bindings]]` in `wrangler.toml`), the object's name (every isolate
/// reaches the same object by name) and the bound on each call. Hands out the three ports.
/// Cheap to clone.
///
/// ```ignore
/// let state = ztgate::workers::DurableState::new(&env, "ZTGATE_STATE")?;
/// let verifier = verifier.with_replay_guard(Arc::new(state.replay_guard()));
/// let policies = policies
///     .with_revocations(Arc::new(state.revocations()))
///     .with_rate_limit(RateLimit::failures(Arc::new(state.rate_limiter(budget))));
/// ```
///
/// Every call is one request to the object, bounded by [`DurableState::with_timeout`] (1 s by
/// default). An object that does not answer in time, or answers with an error, is
/// [`StateError::Unavailable`] ([`ReplayStoreError::Unavailable`]): the gate then refuses
/// what must not pass unchecked (replays, revocations: 503 `state_unavailable`) and lets
/// rate-limited requests through with a warning unless the limit fails closed. A call that
/// timed out may still have been applied by the object.
#[derive(Clone)]
pub struct DurableState {
    namespace: worker::ObjectNamespace,
    binding: String,
    object: String,
    timeout: Duration,
}

impl fmt::Debug for DurableState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableState")
            .field("binding", &self.binding)
            .field("object", &self.object)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl DurableState {
    /// The default bound on each call (1 s).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    /// The default object name (`ztgate`).
    pub const DEFAULT_OBJECT: &'static str = "ztgate";
    /// How long an isolate reuses the object's answer about a credential's revocation: a
    /// revocation reaches every isolate within this (plus one call).
    pub const REVOCATION_VIEW: Duration = Duration::from_millis(500);

    /// The Durable Object namespace bound as `binding` in `env`, object
    /// [`DurableState::DEFAULT_OBJECT`]. An error names the binding when `env` has none by that
    /// name, or it is not a Durable Object namespace.
    pub fn new(env: &worker::Env, binding: &str) -> Result<Self, ConfigError> {
        let namespace = env.durable_object(binding).map_err(|_| {
            ConfigError::new(
                "durable_object",
                format!(
                    "no Durable Object binding {binding:?} ([[durable_objects.bindings]] in wrangler.toml)"
                ),
            )
        })?;
        Ok(Self {
            namespace,
            binding: binding.to_owned(),
            object: Self::DEFAULT_OBJECT.to_owned(),
            timeout: Self::DEFAULT_TIMEOUT,
        })
    }

    /// Use the object called `name` (1 to 64 printable ASCII characters) instead: one per
    /// service or environment sharing a namespace.
    pub fn with_object_name(mut self, name: &str) -> Result<Self, ConfigError> {
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                "durable_object",
                "an object name is 1 to 64 printable ASCII characters",
            ));
        }
        self.object = name.to_owned();
        Ok(self)
    }

    /// Bound each call by `timeout` (1 ms to 30 s) instead of 1 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() || timeout > Duration::from_secs(30) {
            return Err(ConfigError::new(
                "durable_object_timeout",
                "the Durable Object timeout must be from 1 ms to 30 s",
            ));
        }
        self.timeout = timeout;
        Ok(self)
    }

    /// The binding's name.
    pub fn binding(&self) -> &str {
        &self.binding
    }

    /// The webhook replay guard in the object.
    pub fn replay_guard(&self) -> DurableReplayGuard {
        DurableReplayGuard { state: self.clone() }
    }

    /// The claims on signed queue envelopes in the object (the replay check of
    /// [`EnvelopeVerifier`](crate::identity::envelope::EnvelopeVerifier)).
    pub fn envelope_claims(&self) -> DurableClaims {
        DurableClaims { state: self.clone() }
    }

    /// A rate limiter spending `budget` per key, in the object.
    pub fn rate_limiter(&self, budget: Budget) -> DurableRateLimiter {
        DurableRateLimiter { state: self.clone(), budget, spent: Mutex::new(HashMap::new()) }
    }

    /// The revocation list in the object, with answers reused for
    /// [`DurableState::REVOCATION_VIEW`].
    pub fn revocations(&self) -> DurableRevocations {
        DurableRevocations { state: self.clone(), answers: Mutex::new(HashMap::new()) }
    }

    /// One operation, within the timeout.
    async fn call<T: DeserializeOwned>(&self, path: &str, body: Option<String>) -> Result<T, StateError> {
        let work = pin!(self.send(path, body));
        let timer = pin!(worker::Delay::from(self.timeout));
        race(work, timer).await.unwrap_or_else(|| {
            Err(StateError::Unavailable(format!(
                "durable object {}: no answer within {} ms",
                self.binding,
                self.timeout.as_millis()
            )))
        })
    }

    async fn send<T: DeserializeOwned>(&self, path: &str, body: Option<String>) -> Result<T, StateError> {
        let unavailable = |what: &str, e: worker::Error| {
            StateError::Unavailable(format!(
                "durable object {}: {what}: {}",
                self.binding,
                short(&e.to_string())
            ))
        };
        // A stub per call: a stub is an I/O object of the request that made it.
        let stub = self
            .namespace
            .id_from_name(&self.object)
            .and_then(|id| id.get_stub())
            .map_err(|e| unavailable("no stub", e))?;
        let mut init = worker::RequestInit::new();
        match body {
            Some(body) => {
                let headers = worker::Headers::new();
                headers.set("content-type", "application/json").map_err(|e| unavailable("request", e))?;
                init.with_method(worker::Method::Post)
                    .with_headers(headers)
                    .with_body(Some(wasm_bindgen::JsValue::from_str(&body)));
            }
            None => {
                init.with_method(worker::Method::Get);
            }
        }
        let request = worker::Request::new_with_init(&format!("https://ztgate.state{path}"), &init)
            .map_err(|e| unavailable("request", e))?;
        let mut response = stub.fetch_with_request(request).await.map_err(|e| unavailable("fetch", e))?;
        let status = response.status_code();
        let text = response.text().await.map_err(|e| unavailable("answer", e))?;
        match status {
            200 => serde_json::from_str(&text).map_err(|_| {
                StateError::Unavailable(format!(
                    "durable object {}: an answer that is not ztgate's",
                    self.binding
                ))
            }),
            FULL_STATUS => {
                let capacity =
                    serde_json::from_str::<Refusal>(&text).ok().and_then(|r| r.capacity).unwrap_or(0);
                Err(StateError::Full { capacity })
            }
            _ => {
                let why = serde_json::from_str::<Refusal>(&text).map(|r| r.error).unwrap_or_default();
                Err(StateError::Unavailable(format!(
                    "durable object {}: answered {status} {}",
                    self.binding,
                    short(&why)
                )))
            }
        }
    }
}

/// The webhook replay guard in the Durable Object: set-if-absent with expiry, one step of the
/// object, expiry on the object's clock. Fails closed: an object that cannot answer is an
/// error (503), never a first delivery.
#[derive(Debug, Clone)]
pub struct DurableReplayGuard {
    state: DurableState,
}

impl ReplayGuard for DurableReplayGuard {
    fn first_seen<'a>(
        &'a self,
        key: &'a str,
        _now: u64,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<bool, ReplayStoreError>> {
        Box::pin(SendFuture::new(async move {
            let ask = ReplayAsk { key: key.to_owned(), expires_at };
            let answer: ReplayAnswer =
                self.state.call("/v1/replay", Some(to_json(&ask))).await.map_err(|e| match e {
                    StateError::Full { capacity } => ReplayStoreError::Full { capacity },
                    StateError::Unavailable(why) => ReplayStoreError::Unavailable(why),
                })?;
            Ok(answer.first)
        }))
    }
}

/// The claims on signed queue envelopes in the Durable Object: claim-if-absent with a holder and
/// an expiry, one step of the object, expiry on the object's clock. Fails closed: an object
/// that cannot answer is an error (the message is retried later), never a claim.
#[derive(Debug, Clone)]
pub struct DurableClaims {
    state: DurableState,
}

impl EnvelopeClaims for DurableClaims {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        holder: &'a str,
        _now: u64,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<Claim, ReplayStoreError>> {
        Box::pin(SendFuture::new(async move {
            let ask = ClaimAsk { key: key.to_owned(), holder: holder.to_owned(), expires_at };
            let answer: ClaimAnswer =
                self.state.call("/v1/claim", Some(to_json(&ask))).await.map_err(|e| match e {
                    StateError::Full { capacity } => ReplayStoreError::Full { capacity },
                    StateError::Unavailable(why) => ReplayStoreError::Unavailable(why),
                })?;
            match answer.claim.as_str() {
                "first" => Ok(Claim::First),
                "held" => Ok(Claim::Held),
                "taken" => Ok(Claim::Taken),
                _ => Err(ReplayStoreError::Unavailable("an answer that is not ztgate's".to_owned())),
            }
        }))
    }
}

/// Rate limits in the Durable Object: GCRA with [`Budget`]'s arithmetic (the same as in memory
/// and, in Lua, in Redis), on the object's clock.
///
/// Each isolate remembers, until it passes, the moment a key it saw spent has budget again:
/// until then [`check`](RateLimiter::check) answers without a call (a spent budget cannot
/// refill sooner, whatever other isolates do), so a client that keeps knocking costs the object
/// nothing. [`spend`](RateLimiter::spend) always asks the object.
pub struct DurableRateLimiter {
    state: DurableState,
    budget: Budget,
    /// Key → JS time (ms) its budget has a unit again.
    spent: Mutex<HashMap<String, u64>>,
}

impl fmt::Debug for DurableRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableRateLimiter")
            .field("state", &self.state)
            .field("budget", &self.budget)
            .finish()
    }
}

/// A wait in ms as the ports report it: whole seconds, rounded up, at least 1 s; `None` for 0.
fn as_wait(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_secs(ms.div_ceil(1000).max(1)))
}

impl DurableRateLimiter {
    async fn gcra(&self, keys: &[String], spend: bool) -> Result<Option<Duration>, StateError> {
        if keys.is_empty() {
            return Ok(None);
        }
        if !spend && let Some(wait) = self.known_spent(keys) {
            return Ok(Some(wait));
        }
        let ask = RateAsk {
            keys: keys.to_vec(),
            limit: self.budget.limit(),
            window_secs: self.budget.window().as_secs(),
            spend,
        };
        let answer: RateAnswer = self.state.call("/v1/rate", Some(to_json(&ask))).await?;
        let now = now_ms();
        let mut spent = self.spent.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, &wait) in keys.iter().zip(&answer.waits_ms) {
            if wait == 0 {
                spent.remove(key);
            } else {
                if spent.len() >= MAX_LOCAL_ANSWERS {
                    spent.retain(|_, until| *until > now);
                    if spent.len() >= MAX_LOCAL_ANSWERS {
                        spent.clear();
                    }
                }
                spent.insert(key.clone(), now.saturating_add(wait));
            }
        }
        Ok(as_wait(answer.waits_ms.iter().copied().max().unwrap_or(0)))
    }

    /// The longest wait of the keys this isolate knows are spent, if any.
    fn known_spent(&self, keys: &[String]) -> Option<Duration> {
        let now = now_ms();
        let spent = self.spent.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = keys.iter().filter_map(|k| spent.get(k)).map(|until| until.saturating_sub(now)).max()?;
        as_wait(wait)
    }
}

impl RateLimiter for DurableRateLimiter {
    fn check<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<Option<Duration>, StateError>> {
        Box::pin(SendFuture::new(self.gcra(keys, false)))
    }

    fn spend<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<Option<Duration>, StateError>> {
        Box::pin(SendFuture::new(self.gcra(keys, true)))
    }
}

/// The revocation list in the Durable Object, stored in its SQLite (never only announced).
///
/// Each isolate reuses the object's answer about a credential for
/// [`DurableState::REVOCATION_VIEW`] (500 ms), so a revocation reaches every isolate within a
/// second while a credential in steady use costs the object one call per isolate per half
/// second. A credential revoked through this isolate is refused by it at once. An object that
/// cannot answer, once an answer is older than the view, is an error: the gate refuses (503).
pub struct DurableRevocations {
    state: DurableState,
    /// `kind:id` → (revoked, JS time in ms of the object's answer).
    answers: Mutex<HashMap<String, (bool, u64)>>,
}

impl fmt::Debug for DurableRevocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableRevocations").field("state", &self.state).finish()
    }
}

impl DurableRevocations {
    /// The answer for `keys` from answers younger than the view, if every key has one (or one
    /// is revoked).
    fn known(&self, keys: &[String], now: u64) -> Option<bool> {
        let view = DurableState::REVOCATION_VIEW.as_millis() as u64;
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all_known = true;
        for key in keys {
            match answers.get(key) {
                Some(&(revoked, at)) if now.saturating_sub(at) < view && at <= now => {
                    if revoked {
                        return Some(true);
                    }
                }
                _ => all_known = false,
            }
        }
        all_known.then_some(false)
    }

    fn remember(&self, keys: &[String], revoked: &[String], now: u64) {
        let view = DurableState::REVOCATION_VIEW.as_millis() as u64;
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        if answers.len() + keys.len() > MAX_LOCAL_ANSWERS {
            answers.retain(|_, (_, at)| now.saturating_sub(*at) < view);
            if answers.len() + keys.len() > MAX_LOCAL_ANSWERS {
                answers.clear();
            }
        }
        for key in keys {
            answers.insert(key.clone(), (revoked.contains(key), now));
        }
    }
}

impl RevocationList for DurableRevocations {
    fn any_revoked<'a>(&'a self, candidates: &'a [Revocation]) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(SendFuture::new(async move {
            if candidates.is_empty() {
                return Ok(false);
            }
            let keys: Vec<String> = candidates.iter().map(Revocation::key).collect();
            if let Some(answer) = self.known(&keys, now_ms()) {
                return Ok(answer);
            }
            let ask = KeysAsk { keys: keys.clone() };
            let answer: RevokedAnswer = self.state.call("/v1/revocations/any", Some(to_json(&ask))).await?;
            self.remember(&keys, &answer.revoked, now_ms());
            Ok(!answer.revoked.is_empty())
        }))
    }

    fn revoke<'a>(&'a self, revocation: &'a Revocation) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(SendFuture::new(async move {
            let key = revocation.key();
            let ask = RevokeAsk { key: key.clone() };
            let _: Done = self.state.call("/v1/revocations", Some(to_json(&ask))).await?;
            // This isolate refuses it at once; the others within the view.
            self.remember(std::slice::from_ref(&key), std::slice::from_ref(&key), now_ms());
            Ok(())
        }))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Revocation>, StateError>> {
        Box::pin(SendFuture::new(async move {
            let answer: ListAnswer = self.state.call("/v1/revocations", None).await?;
            let mut all: Vec<Revocation> =
                answer.keys.iter().filter_map(|k| Revocation::from_key(k)).collect();
            all.sort();
            Ok(all)
        }))
    }
}
