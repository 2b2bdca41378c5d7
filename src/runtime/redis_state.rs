//! Shared state in Redis (feature `redis`): what a fleet of native instances shares — the
//! webhook replay guard, the revocation list and the rate limits — through the `redis` crate's
//! tokio connection manager, which reconnects by itself after Redis restarts.
//!
//! - **Every call is bounded** ([`RedisStore::with_timeout`], default 50 ms): a slow or
//!   unreachable Redis answers [`StateError::Unavailable`] within it, never stalls a request.
//!   The gate then refuses what must not pass unchecked (revocations, replays: 503
//!   `state_unavailable`) and lets rate-limited requests through with a warning (unless the
//!   limit fails closed).
//! - **Replay guard**: `SET key 1 NX EXAT expires_at`, one atomic step.
//! - **Envelope claims** (queue messages, [`EnvelopeClaims`]): one Lua script reads the claim
//!   and, when there is none, sets it with its expiry, so two consumers can never both get
//!   [`Claim::First`].
//! - **Rate limits**: GCRA in one Lua script (`EVALSHA`, loaded on first use) over the
//!   budget keys, with Redis's own clock: never read-modify-write from the client, and one
//!   round trip per check.
//! - **Revocations** are stored in a set (never only published), with a version counter bumped
//!   in the same transaction. Each instance keeps a local view and asks Redis for the version
//!   when the view is older than [`RedisStore::REVOCATION_VIEW`] (500 ms), reading the set only
//!   when the version moved. So a revocation reaches every instance within a second, most
//!   requests cost no round trip at all, and an instance that cannot reach Redis for longer
//!   than the view's age refuses (it cannot know what was revoked meanwhile). Pub/sub was not
//!   chosen: a message sent while an instance is disconnected is lost, and the instance would
//!   keep serving a stale view without knowing it.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::BoxFuture;
use crate::error::ConfigError;
use crate::identity::envelope::{Claim, EnvelopeClaims};
use crate::identity::shared_state::{Budget, RateLimiter, Revocation, RevocationList, StateError};
use crate::identity::webhook::{ReplayGuard, ReplayStoreError};

/// A claim on `KEYS[1]` for the holder `ARGV[1]` until the Unix second `ARGV[2]` (`EXAT`): 0 the
/// first claim (now set), 1 held by that same holder, 2 held by another.
const CLAIM: &str = r"
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
  return 0
elseif holder == ARGV[1] then
  return 1
end
return 2
";

/// GCRA over `KEYS` with `ARGV` = interval ms, window ms, spend (1) or check (0). Returns the
/// longest wait in ms (0: every key had budget; a key without budget is not spent).
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2]) - interval
local spend = ARGV[3] == '1'
local longest = 0
for _, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local wait = tat - now - tolerance
  if wait < 0 then wait = 0 end
  if spend and wait == 0 then
    local next = tat + interval
    redis.call('SET', key, next, 'PX', next - now + 1000)
  end
  if wait > longest then longest = wait end
end
return longest
";

/// A connection to one Redis (lazy: made on first use, remade after failures), with the key
/// prefix and the time bound every call shares. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    client: ::redis::Client,
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    gcra: Arc<::redis::Script>,
    claim: Arc<::redis::Script>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("RedisStore").field("prefix", &self.prefix).field("timeout", &self.timeout).finish()
    }
}

impl RedisStore {
    /// The default bound on each call (50 ms).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
    /// How long a local view of the revocations is used before Redis is asked for changes.
    pub const REVOCATION_VIEW: Duration = Duration::from_millis(500);

    /// A store at `url` (`redis://host:port/db`, `rediss://` for TLS), keys under `ztgate:`.
    /// No connection is made here: a Redis that is down at start makes the first calls fail
    /// (and the gate refuse or let through as documented), not the start.
    pub fn connect(url: &str) -> Result<Self, ConfigError> {
        // The parser's message can quote the URL, password included: say only what is wrong.
        let client = ::redis::Client::open(url)
            .map_err(|_| ConfigError::new("redis_url", "not a Redis URL such as redis://127.0.0.1:6379/0"))?;
        let timeout = Self::DEFAULT_TIMEOUT;
        let connection = Self::manager(&client, timeout)?;
        Ok(Self {
            client,
            connection,
            prefix: "ztgate:".to_owned(),
            timeout,
            gcra: Arc::new(::redis::Script::new(GCRA)),
            claim: Arc::new(::redis::Script::new(CLAIM)),
        })
    }

    /// The lazy connection, its connect and response times bounded by `timeout` too.
    fn manager(client: &::redis::Client, timeout: Duration) -> Result<ConnectionManager, ConfigError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|e| {
            ConfigError::new("redis_url", format!("cannot set up the connection: {}", e.category()))
        })
    }

    /// Bound each call, the connection's making included, by `timeout` (1 ms to 5 s) instead
    /// of 50 ms.
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() || timeout > Duration::from_secs(5) {
            return Err(ConfigError::new("redis_timeout", "the Redis timeout must be from 1 ms to 5 s"));
        }
        self.connection = Self::manager(&self.client, timeout)?;
        self.timeout = timeout;
        Ok(self)
    }

    /// Makes the connection now and checks that Redis answers (`PING`), within the timeout:
    /// call it at start, so the first requests do not pay for the connection. A failure is
    /// only reported (the connection is tried again on the next call).
    pub async fn ping(&self) -> Result<(), StateError> {
        let answer: String = self.run(&::redis::cmd("PING")).await?;
        if answer == "PONG" {
            Ok(())
        } else {
            Err(StateError::Unavailable("redis: unexpected answer to PING".to_owned()))
        }
    }

    /// Put every key under `prefix` (default `ztgate:`), e.g. one per service sharing a Redis.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// A replay guard in this Redis.
    pub fn replay_guard(&self) -> RedisReplayGuard {
        RedisReplayGuard { store: self.clone() }
    }

    /// Claims on signed queue envelopes, in this Redis (see [`EnvelopeClaims`]).
    pub fn envelope_claims(&self) -> RedisEnvelopeClaims {
        RedisEnvelopeClaims { store: self.clone() }
    }

    /// A rate limiter spending `budget` per key, in this Redis.
    pub fn rate_limiter(&self, budget: Budget) -> RedisRateLimiter {
        RedisRateLimiter { store: self.clone(), budget }
    }

    /// The revocation list in this Redis, with a local view (see the module docs).
    pub fn revocations(&self) -> RedisRevocations {
        RedisRevocations { store: self.clone(), view: tokio::sync::Mutex::new(View::default()) }
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs `command` within the timeout.
    async fn run<T: ::redis::FromRedisValue>(&self, command: &::redis::Cmd) -> Result<T, StateError> {
        let mut connection = self.connection.clone();
        bounded(self.timeout, command.query_async(&mut connection)).await
    }
}

/// `work` within `timeout`, its error for operators (the kind, never a URL).
async fn bounded<T>(
    timeout: Duration,
    work: impl Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, StateError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(StateError::Unavailable(format!("redis: {}", e.category()))),
        Err(_) => Err(StateError::Unavailable(format!("redis: no answer within {} ms", timeout.as_millis()))),
    }
}

/// The webhook replay guard in Redis: `SET key 1 NX EXAT expires_at`.
#[derive(Debug, Clone)]
pub struct RedisReplayGuard {
    store: RedisStore,
}

impl ReplayGuard for RedisReplayGuard {
    fn first_seen<'a>(
        &'a self,
        key: &'a str,
        now: u64,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<bool, ReplayStoreError>> {
        Box::pin(async move {
            // Already past its expiry: nothing to remember (and EXAT in the past is refused).
            let at = expires_at.max(now.saturating_add(1));
            let mut command = ::redis::cmd("SET");
            command.arg(self.store.key(&format!("replay:{key}"))).arg(1).arg("NX").arg("EXAT").arg(at);
            let answer: Option<String> = self.store.run(&command).await.map_err(|e| match e {
                StateError::Unavailable(why) => ReplayStoreError::Unavailable(why),
                other => ReplayStoreError::Unavailable(other.to_string()),
            })?;
            Ok(answer.is_some())
        })
    }
}

/// Claims on signed queue envelopes in Redis: one Lua script, so reading the claim and setting
/// it are one atomic step for every consumer of the fleet.
#[derive(Debug, Clone)]
pub struct RedisEnvelopeClaims {
    store: RedisStore,
}

impl EnvelopeClaims for RedisEnvelopeClaims {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        holder: &'a str,
        now: u64,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<Claim, ReplayStoreError>> {
        Box::pin(async move {
            // Live through `expires_at` inclusive; EXAT in the past is refused by Redis.
            let at = expires_at.saturating_add(1).max(now.saturating_add(1));
            let mut invocation = self.store.claim.prepare_invoke();
            invocation.key(self.store.key(&format!("claim:{key}"))).arg(holder).arg(at);
            let mut connection = self.store.connection.clone();
            let answer: u8 = bounded(self.store.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|e| ReplayStoreError::Unavailable(e.to_string()))?;
            match answer {
                0 => Ok(Claim::First),
                1 => Ok(Claim::Held),
                2 => Ok(Claim::Taken),
                other => {
                    Err(ReplayStoreError::Unavailable(format!("redis: unexpected claim answer {other}")))
                }
            }
        })
    }
}

/// Rate limits in Redis: GCRA in one Lua script, Redis's clock.
#[derive(Debug, Clone)]
pub struct RedisRateLimiter {
    store: RedisStore,
    budget: Budget,
}

impl RedisRateLimiter {
    async fn gcra(&self, keys: &[String], spend: bool) -> Result<Option<Duration>, StateError> {
        let invocation = self.gcra_invocation(keys, spend);
        let mut connection = self.store.connection.clone();
        let wait_ms: u64 = bounded(self.store.timeout, invocation.invoke_async(&mut connection)).await?;
        Ok((wait_ms > 0).then(|| Duration::from_secs(wait_ms.div_ceil(1000).max(1))))
    }

    fn gcra_invocation(&self, keys: &[String], spend: bool) -> ::redis::ScriptInvocation<'_> {
        let mut invocation = self.store.gcra.prepare_invoke();
        for key in keys {
            invocation.key(self.store.key(&format!("rate:{key}")));
        }
        invocation
            .arg(self.budget.interval_ms())
            .arg(self.budget.window().as_millis() as u64)
            .arg(if spend { "1" } else { "0" });
        invocation
    }
}

impl RateLimiter for RedisRateLimiter {
    fn check<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<Option<Duration>, StateError>> {
        Box::pin(self.gcra(keys, false))
    }

    fn spend<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<Option<Duration>, StateError>> {
        Box::pin(self.gcra(keys, true))
    }
}

/// The local view of the revocation set.
#[derive(Default)]
struct View {
    /// Parsed once per change of the set, so a check allocates nothing.
    set: HashSet<Revocation>,
    version: Option<u64>,
    /// When Redis last confirmed the view.
    checked: Option<Instant>,
}

/// The revocation list in Redis: a set and a version, with a local view (see the module docs).
pub struct RedisRevocations {
    store: RedisStore,
    view: tokio::sync::Mutex<View>,
}

impl fmt::Debug for RedisRevocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRevocations").field("store", &self.store).finish()
    }
}

impl RedisRevocations {
    /// The view, confirmed by Redis within [`RedisStore::REVOCATION_VIEW`].
    async fn fresh_view(&self) -> Result<tokio::sync::MutexGuard<'_, View>, StateError> {
        let mut view = self.view.lock().await;
        if view.checked.is_some_and(|at| at.elapsed() < RedisStore::REVOCATION_VIEW) {
            return Ok(view);
        }
        let version: Option<u64> =
            self.store.run(::redis::cmd("GET").arg(self.store.key("revocations:version"))).await?;
        if version != view.version || view.version.is_none() {
            let members: Vec<String> =
                self.store.run(::redis::cmd("SMEMBERS").arg(self.store.key("revocations"))).await?;
            view.set = members.iter().filter_map(|k| Revocation::from_key(k)).collect();
            view.version = version;
        }
        view.checked = Some(Instant::now());
        Ok(view)
    }
}

impl RevocationList for RedisRevocations {
    fn any_revoked<'a>(&'a self, candidates: &'a [Revocation]) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            let view = self.fresh_view().await?;
            Ok(candidates.iter().any(|c| view.set.contains(c)))
        })
    }

    fn revoke<'a>(&'a self, revocation: &'a Revocation) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let mut pipe = ::redis::pipe();
            pipe.atomic()
                .cmd("SADD")
                .arg(self.store.key("revocations"))
                .arg(revocation.key())
                .ignore()
                .cmd("INCR")
                .arg(self.store.key("revocations:version"))
                .ignore();
            let mut connection = self.store.connection.clone();
            bounded::<()>(self.store.timeout, pipe.query_async(&mut connection)).await?;
            // This instance sees it at once; the others within the view's age.
            let mut view = self.view.lock().await;
            view.set.insert(revocation.clone());
            Ok(())
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Revocation>, StateError>> {
        Box::pin(async move {
            let members: Vec<String> =
                self.store.run(::redis::cmd("SMEMBERS").arg(self.store.key("revocations"))).await?;
            let mut all: Vec<Revocation> = members.iter().filter_map(|k| Revocation::from_key(k)).collect();
            all.sort();
            Ok(all)
        })
    }
}
