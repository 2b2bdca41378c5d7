//! Storage in SQLite: every function asks for proof: an `Actor` (which only a verified request
//! can produce) or a `VerifiedWebhook` (which only a verified delivery can produce). The
//! webhook replay guard lives in the same file.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};
use ztgate::BoxFuture;
use ztgate::identity::turnstile::VerifiedHuman;
use ztgate::identity::webhook::{ReplayGuard, ReplayStoreError, VerifiedWebhook};
use ztgate::storage::Actor;

use crate::LOG_TARGET;
use crate::config::EnvError;

type Db = Arc<Mutex<Connection>>;

#[derive(Clone)]
pub(crate) struct Store {
    db: Db,
}

#[derive(serde::Serialize)]
pub(crate) struct Note {
    id: i64,
    text: String,
    author: String,
}

pub(crate) struct Stats {
    pub(crate) notes: i64,
    pub(crate) unsubscribes: i64,
    pub(crate) webhooks: i64,
    pub(crate) subscribers: i64,
}

/// A storage failure, already logged where it happened.
#[derive(Debug)]
pub(crate) struct StorageError;

fn lock(db: &Db) -> std::sync::MutexGuard<'_, Connection> {
    db.lock().unwrap_or_else(PoisonError::into_inner)
}

/// SQLite integers are signed; Unix seconds and sizes fit until long after anyone cares.
fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    pub(crate) fn open(path: &Path) -> Result<Self, EnvError> {
        let fail =
            |e: rusqlite::Error| EnvError::new("ZTGATE_DB", format!("cannot open {}: {e}", path.display()));
        let conn = Connection::open(path).map_err(fail)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS notes (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                text TEXT NOT NULL,
                author TEXT NOT NULL,
                created_at INTEGER NOT NULL DEFAULT (unixepoch())
            );
            CREATE TABLE IF NOT EXISTS subscribers (
                email TEXT PRIMARY KEY,
                hostname TEXT NOT NULL,
                created_at INTEGER NOT NULL DEFAULT (unixepoch())
            );
            CREATE TABLE IF NOT EXISTS unsubscribes (
                email TEXT PRIMARY KEY,
                created_at INTEGER NOT NULL DEFAULT (unixepoch())
            );
            CREATE TABLE IF NOT EXISTS webhook_messages (
                id TEXT PRIMARY KEY,
                signed_at INTEGER,
                body_bytes INTEGER NOT NULL,
                received_at INTEGER NOT NULL DEFAULT (unixepoch())
            );
            CREATE TABLE IF NOT EXISTS webhook_replay (
                key TEXT PRIMARY KEY,
                expires_at INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS webhook_replay_expiry ON webhook_replay (expires_at);",
        )
        .map_err(fail)?;
        Ok(Self { db: Arc::new(Mutex::new(conn)) })
    }

    pub(crate) async fn create_note(&self, by: &Actor, text: String) -> Result<i64, StorageError> {
        let author = by.id().to_owned();
        let id = self
            .blocking(by.id(), move |db| {
                db.execute("INSERT INTO notes (text, author) VALUES (?1, ?2)", (&text, &author))?;
                Ok(db.last_insert_rowid())
            })
            .await?;
        tracing::info!(target: LOG_TARGET, layer = "storage", outcome = "note_created", principal = ?by.id(), id);
        Ok(id)
    }

    pub(crate) async fn list_notes(&self, by: &Actor) -> Result<Vec<Note>, StorageError> {
        self.blocking(by.id(), |db| {
            let mut stmt = db.prepare("SELECT id, text, author FROM notes ORDER BY id")?;
            let rows =
                stmt.query_map([], |r| Ok(Note { id: r.get(0)?, text: r.get(1)?, author: r.get(2)? }))?;
            rows.collect()
        })
        .await
    }

    /// Deletes note `id`; `false` when there is no such note. `proofs` (mechanism=principal)
    /// go into the audit log line.
    pub(crate) async fn delete_note(
        &self,
        by: &Actor,
        id: i64,
        proofs: Vec<String>,
    ) -> Result<bool, StorageError> {
        let deleted =
            self.blocking(by.id(), move |db| db.execute("DELETE FROM notes WHERE id = ?1", [id])).await? == 1;
        if deleted {
            tracing::info!(target: LOG_TARGET, layer = "storage", outcome = "note_deleted", principal = ?by.id(), proofs = ?proofs, id);
        }
        Ok(deleted)
    }

    /// Adds `email` to the subscribers, for a visitor Turnstile vouched for; idempotent. `true`
    /// the first time.
    pub(crate) async fn add_subscriber(
        &self,
        human: &VerifiedHuman,
        email: String,
    ) -> Result<bool, StorageError> {
        let hostname = human.hostname().to_owned();
        let first = self
            .blocking("turnstile:human", move |db| {
                db.execute(
                    "INSERT INTO subscribers (email, hostname) VALUES (?1, ?2) ON CONFLICT (email) DO NOTHING",
                    (&email, &hostname),
                )
            })
            .await?
            == 1;
        tracing::info!(target: LOG_TARGET, layer = "storage", outcome = "subscribed", principal = "turnstile:human", first);
        Ok(first)
    }

    /// Records that `email` unsubscribed; idempotent. `true` the first time.
    pub(crate) async fn unsubscribe(&self, by: &Actor, email: String) -> Result<bool, StorageError> {
        let first = self
            .blocking(by.id(), move |db| {
                db.execute(
                    "INSERT INTO unsubscribes (email) VALUES (?1) ON CONFLICT (email) DO NOTHING",
                    [&email],
                )
            })
            .await?
            == 1;
        tracing::info!(target: LOG_TARGET, layer = "storage", outcome = "unsubscribed", principal = ?by.id(), first);
        Ok(first)
    }

    pub(crate) async fn stats(&self, by: &Actor) -> Result<Stats, StorageError> {
        self.blocking(by.id(), |db| {
            let count =
                |table: &str| db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0));
            Ok(Stats {
                notes: count("notes")?,
                unsubscribes: count("unsubscribes")?,
                subscribers: count("subscribers")?,
                webhooks: count("webhook_messages")?,
            })
        })
        .await
    }

    /// Stores an accepted delivery: its id, signed timestamp and body size.
    pub(crate) async fn record_webhook(
        &self,
        message: &VerifiedWebhook,
        body_bytes: usize,
    ) -> Result<(), StorageError> {
        let principal = format!("webhook:{}", message.scheme());
        let id = message.id().unwrap_or(message.replay_key()).to_owned();
        let signed_at = message.timestamp().map(sql_int);
        let size = sql_int(body_bytes as u64);
        let stored_id = id.clone();
        self.blocking(&principal, move |db| {
            db.execute(
                "INSERT INTO webhook_messages (id, signed_at, body_bytes) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO NOTHING",
                (&stored_id, signed_at, size),
            )
        })
        .await?;
        tracing::info!(target: LOG_TARGET, layer = "storage", outcome = "webhook_stored", principal = ?principal, id = ?id, body_bytes);
        Ok(())
    }

    /// The webhook replay guard, in this database: a replay is refused across restarts.
    pub(crate) fn replay_guard(&self) -> Arc<dyn ReplayGuard> {
        Arc::new(SqliteReplayGuard { db: self.db.clone() })
    }

    /// Runs `f` on the connection off the async runtime, logging failures with the caller.
    async fn blocking<T: Send + 'static>(
        &self,
        principal: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || f(&lock(&db)))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        result.map_err(|error| {
            tracing::error!(target: LOG_TARGET, layer = "storage", outcome = "error", principal = ?principal, error = ?error);
            StorageError
        })
    }
}

/// The webhook replay guard, in SQLite: it survives restarts, and several processes sharing
/// the file share it. Check and record are one `INSERT ... ON CONFLICT DO NOTHING` (one row
/// inserted = first delivery) in an immediate transaction with the expiry cleanup. A database
/// error is the guard's error: the delivery is refused with 503 and retried by the sender.
struct SqliteReplayGuard {
    db: Db,
}

impl std::fmt::Debug for SqliteReplayGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteReplayGuard")
    }
}

impl ReplayGuard for SqliteReplayGuard {
    fn first_seen<'a>(
        &'a self,
        key: &'a str,
        now: u64,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<bool, ReplayStoreError>> {
        let db = self.db.clone();
        let key = key.to_owned();
        Box::pin(async move {
            let answer = tokio::task::spawn_blocking(move || -> rusqlite::Result<bool> {
                let mut conn = lock(&db);
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // Records stay live through `expires_at` inclusive.
                tx.execute("DELETE FROM webhook_replay WHERE expires_at < ?1", [sql_int(now)])?;
                let inserted = tx.execute(
                    "INSERT INTO webhook_replay (key, expires_at) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                    (&key, sql_int(expires_at)),
                )?;
                tx.commit()?;
                Ok(inserted == 1)
            })
            .await;
            match answer {
                Ok(Ok(first)) => Ok(first),
                Ok(Err(e)) => Err(ReplayStoreError::Unavailable(format!("sqlite: {e}"))),
                Err(e) => Err(ReplayStoreError::Unavailable(format!("task failed: {e}"))),
            }
        })
    }
}
