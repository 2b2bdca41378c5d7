//! What a fleet of instances must share to decide alike: revocations and rate limits (the
//! webhook replay guard is the third, in [`webhook::ReplayGuard`](super::webhook::ReplayGuard)).
//! Each is a port: in memory by default (one process), and the runtimes' shared stores for a
//! fleet. Every operation is one atomic step in the store.
//!
//! - [`RevocationList`]: credentials revoked at run time, checked on every verified request
//!   (an API key by name, an HMAC-signed token by its token id, an Access login by `sub` or
//!   `identity_nonce`, a client certificate by fingerprint). A store that cannot answer makes the gate refuse (503
//!   `state_unavailable`): a revoked key must not work just because the store is down.
//! - [`RateLimiter`]: budgets per key (a client IP, a credential), spent by failed
//!   authentications (the gate checks the budget *before* any signature work and answers 429
//!   with `Retry-After` once it is spent; successes cost nothing) or by every request on a
//!   public route. GCRA: `limit` units per `window`, refilled continuously. A store that cannot
//!   answer lets requests through with a logged warning by default
//!   ([`RateLimit::fail_closed`] to refuse instead).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use crate::BoxFuture;
use crate::clock::Clock;
use crate::error::ConfigError;

/// Why a shared store could not answer. Messages are for operators and never hold a
/// connection string, a credential or a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateError {
    /// The store could not be reached, timed out, or answered with an error.
    Unavailable(String),
    /// The store holds as many entries as it may.
    Full {
        /// Its capacity.
        capacity: usize,
    },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(why) => write!(f, "shared state unavailable: {why}"),
            Self::Full { capacity } => write!(f, "shared state full: {capacity} entries"),
        }
    }
}

impl std::error::Error for StateError {}

/// What can be revoked, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RevocationKind {
    /// An API key, by its configured name.
    ApiKey,
    /// An Access login, by its `sub` (every login of that user) or its `identity_nonce` (one
    /// login).
    AccessSub,
    /// A client certificate, by its SHA-256 fingerprint (64 lowercase hex digits).
    Cert,
    /// One HMAC-signed token (v2), by its token id: the 22 characters of base64url that
    /// [`SignedToken::id`](super::hmac_token::SignedToken::id) gives. The subject's other tokens
    /// keep working; a v1 token has no id (remove its key from the ring instead).
    HmacToken,
}

impl RevocationKind {
    /// The stable name: `api_key`, `access_sub`, `cert`, `hmac_token`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key", // pragma: allowlist secret
            Self::AccessSub => "access_sub",
            Self::Cert => "cert",
            Self::HmacToken => "hmac_token",
        }
    }

    /// The kind called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::ApiKey, Self::AccessSub, Self::Cert, Self::HmacToken].into_iter().find(|k| k.name() == name)
    }
}

/// One revoked credential: a kind and an id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Revocation {
    kind: RevocationKind,
    id: String,
}

impl Revocation {
    /// The longest id accepted (bytes).
    pub const MAX_ID_BYTES: usize = 256;

    /// `id` of `kind`: 1 to [`Revocation::MAX_ID_BYTES`] bytes of printable ASCII without
    /// spaces (what names, subs, nonces and fingerprints are); a fingerprint is lowercased; an
    /// HMAC token id is exactly a [`TokenId`](super::hmac_token::TokenId)'s 22 characters of
    /// canonical base64url (case matters), since no other id can ever match a token.
    pub fn new(kind: RevocationKind, id: impl Into<String>) -> Result<Self, ConfigError> {
        let mut id: String = id.into();
        if id.is_empty() || id.len() > Self::MAX_ID_BYTES || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                "revocation",
                format!("a {} id is 1 to {} printable ASCII characters", kind.name(), Self::MAX_ID_BYTES),
            ));
        }
        if kind == RevocationKind::HmacToken && super::hmac_token::TokenId::parse(&id).is_none() {
            return Err(ConfigError::new(
                "revocation",
                "an hmac_token id is the 22 base64url characters of a v2 token's id (its 4th segment)",
            ));
        }
        if kind == RevocationKind::Cert {
            id.make_ascii_lowercase();
        }
        Ok(Self { kind, id })
    }

    /// The kind.
    pub fn kind(&self) -> RevocationKind {
        self.kind
    }

    /// The id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `kind:id`, the form stores keep.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind.name(), self.id)
    }

    /// The revocation a `kind:id` key names.
    pub fn from_key(key: &str) -> Option<Self> {
        let (kind, id) = key.split_once(':')?;
        Self::new(RevocationKind::from_name(kind)?, id).ok()
    }
}

/// Revoked credentials, shared by every instance: one revoked on one instance is refused by
/// all of them (within the store's propagation bound, see each implementation).
pub trait RevocationList: Send + Sync + fmt::Debug + 'static {
    /// Whether any of `candidates` (the ids of one request's credentials) is revoked.
    fn any_revoked<'a>(&'a self, candidates: &'a [Revocation]) -> BoxFuture<'a, Result<bool, StateError>>;

    /// Revokes `revocation` (stored, not only announced: an instance that starts or reconnects
    /// later still sees it). Revoking twice is one revocation.
    fn revoke<'a>(&'a self, revocation: &'a Revocation) -> BoxFuture<'a, Result<(), StateError>>;

    /// Every revocation, sorted.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Revocation>, StateError>>;
}

/// Revocations in this process's memory: right for one instance, and for tests. Bounded.
#[derive(Debug)]
pub struct InMemoryRevocations {
    set: RwLock<HashSet<Revocation>>,
    capacity: usize,
}

impl Default for InMemoryRevocations {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

impl InMemoryRevocations {
    /// The default capacity (100,000 revocations).
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// An empty list of at most `capacity` revocations; a revocation beyond it is refused
    /// (never one forgotten).
    pub fn with_capacity(capacity: usize) -> Self {
        Self { set: RwLock::new(HashSet::new()), capacity }
    }
}

impl RevocationList for InMemoryRevocations {
    fn any_revoked<'a>(&'a self, candidates: &'a [Revocation]) -> BoxFuture<'a, Result<bool, StateError>> {
        let set = self.set.read().unwrap_or_else(PoisonError::into_inner);
        let revoked = candidates.iter().any(|c| set.contains(c));
        Box::pin(std::future::ready(Ok(revoked)))
    }

    fn revoke<'a>(&'a self, revocation: &'a Revocation) -> BoxFuture<'a, Result<(), StateError>> {
        let mut set = self.set.write().unwrap_or_else(PoisonError::into_inner);
        let result = if set.contains(revocation) || set.len() < self.capacity {
            set.insert(revocation.clone());
            Ok(())
        } else {
            Err(StateError::Full { capacity: self.capacity })
        };
        Box::pin(std::future::ready(result))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Revocation>, StateError>> {
        let mut all: Vec<Revocation> =
            self.set.read().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect();
        all.sort();
        Box::pin(std::future::ready(Ok(all)))
    }
}

/// Budgets per key, shared by every instance (GCRA: `limit` units per `window`, refilled
/// continuously, so a burst of `limit` is allowed after a quiet `window`).
pub trait RateLimiter: Send + Sync + fmt::Debug + 'static {
    /// `None` when every key has budget left; else how long until the most spent one has.
    /// Spends nothing.
    fn check<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<Option<Duration>, StateError>>;

    /// Spends one unit of each key's budget that has one, atomically per key: `None` when each
    /// had one, else how long until the most spent one has (nothing is spent from a key
    /// without budget, so a client that keeps knocking does not push its own wait further).
    fn spend<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<Option<Duration>, StateError>>;
}

/// The budget of a [`RateLimiter`]: `limit` units per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    limit: u32,
    window: Duration,
}

impl Budget {
    /// `limit` units (1 to 1,000,000) per `window` (1 s to 1 day, whole seconds).
    pub fn new(limit: u32, window: Duration) -> Result<Self, ConfigError> {
        if !(1..=1_000_000).contains(&limit) {
            return Err(ConfigError::new("rate_limit", "the limit must be from 1 to 1,000,000"));
        }
        if window < Duration::from_secs(1) || window > Duration::from_secs(86_400) {
            return Err(ConfigError::new("rate_limit", "the window must be from 1 s to 1 day"));
        }
        Ok(Self { limit, window: Duration::from_secs(window.as_secs()) })
    }

    /// Units per window.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Milliseconds between two units (the emission interval).
    pub fn interval_ms(&self) -> u64 {
        (self.window.as_millis() as u64 / u64::from(self.limit)).max(1)
    }

    /// GCRA over `tat` (the theoretical arrival time, ms) at `now` (ms): the wait before one
    /// more unit may be spent (zero: now).
    pub(crate) fn wait(&self, tat: u64, now: u64) -> u64 {
        let tolerance = self.window.as_millis() as u64 - self.interval_ms();
        tat.saturating_sub(now).saturating_sub(tolerance)
    }

    /// The new theoretical arrival time after spending one unit at `now`.
    pub(crate) fn after_spend(&self, tat: u64, now: u64) -> u64 {
        tat.max(now) + self.interval_ms()
    }
}

/// Rate limits in this process's memory: right for one instance, and for tests. Bounded in
/// keys: when full, keys whose budget is whole again are dropped first; if none is, the
/// oldest is (a client that filled the table could otherwise lock everyone out).
pub struct InMemoryRateLimiter {
    budget: Budget,
    clock: Arc<dyn Clock>,
    /// Key → theoretical arrival time (ms).
    tats: Mutex<HashMap<String, u64>>,
    max_keys: usize,
}

impl fmt::Debug for InMemoryRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryRateLimiter")
            .field("budget", &self.budget)
            .field("max_keys", &self.max_keys)
            .finish()
    }
}

impl InMemoryRateLimiter {
    /// The default bound on keys tracked (100,000).
    pub const DEFAULT_MAX_KEYS: usize = 100_000;

    /// A limiter spending `budget` per key, reading time from `clock`.
    pub fn new(budget: Budget, clock: Arc<dyn Clock>) -> Self {
        Self { budget, clock, tats: Mutex::new(HashMap::new()), max_keys: Self::DEFAULT_MAX_KEYS }
    }

    /// At most `max_keys` keys tracked (at least 1).
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    fn now_ms(&self) -> u64 {
        self.clock.now().saturating_mul(1000)
    }
}

/// The longest wait of `waits`, as a duration (rounded up to whole seconds, at least 1 s when
/// any), or `None` when all are zero.
fn longest(waits: impl Iterator<Item = u64>) -> Option<Duration> {
    let wait = waits.max().unwrap_or(0);
    (wait > 0).then(|| Duration::from_secs(wait.div_ceil(1000).max(1)))
}

impl RateLimiter for InMemoryRateLimiter {
    fn check<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<Option<Duration>, StateError>> {
        let now = self.now_ms();
        let tats = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = longest(keys.iter().map(|k| tats.get(k).map_or(0, |&tat| self.budget.wait(tat, now))));
        Box::pin(std::future::ready(Ok(wait)))
    }

    fn spend<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<Option<Duration>, StateError>> {
        let now = self.now_ms();
        let mut tats = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        if tats.len() + keys.len() > self.max_keys {
            tats.retain(|_, tat| *tat > now);
            while tats.len() + keys.len() > self.max_keys {
                let Some(oldest) = tats.iter().min_by_key(|(_, tat)| **tat).map(|(k, _)| k.clone()) else {
                    break;
                };
                tats.remove(&oldest);
            }
        }
        let mut waits = Vec::with_capacity(keys.len());
        for key in keys {
            let tat = tats.get(key).copied().unwrap_or(now);
            let wait = self.budget.wait(tat, now);
            if wait == 0 {
                tats.insert(key.clone(), self.budget.after_spend(tat, now));
            }
            waits.push(wait);
        }
        Box::pin(std::future::ready(Ok(longest(waits.into_iter()))))
    }
}

/// How a gate uses a [`RateLimiter`]: what spends the budget, the keys' scope, and what to do
/// when the store cannot answer.
#[derive(Clone)]
pub struct RateLimit {
    limiter: Arc<dyn RateLimiter>,
    spends: Spends,
    scope: &'static str,
    fail_closed: bool,
}

/// What spends a [`RateLimit`]'s budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Spends {
    /// Failed authentications (a credential that did not verify, a stale login): checked
    /// before verifying, spent after a failure. Missing credentials and successes are free.
    Failures,
    /// Every request (public routes: a subscribe or contact form).
    Requests,
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("limiter", &self.limiter)
            .field("spends", &self.spends)
            .field("scope", &self.scope)
            .field("fail_closed", &self.fail_closed)
            .finish()
    }
}

impl RateLimit {
    /// Failed authentications spend `limiter`'s budget, per client IP and per credential,
    /// under the scope `auth`.
    pub fn failures(limiter: Arc<dyn RateLimiter>) -> Self {
        Self { limiter, spends: Spends::Failures, scope: "auth", fail_closed: false }
    }

    /// Every request spends `limiter`'s budget, per client IP, under `scope` (each public
    /// route its own budget: `subscribe`, `contact`).
    pub fn requests(limiter: Arc<dyn RateLimiter>, scope: &'static str) -> Self {
        Self { limiter, spends: Spends::Requests, scope, fail_closed: false }
    }

    /// Refuse (503 `state_unavailable`) when the store cannot answer, instead of letting the
    /// request through with a warning.
    pub fn fail_closed(mut self) -> Self {
        self.fail_closed = true;
        self
    }

    /// The limiter.
    pub fn limiter(&self) -> &Arc<dyn RateLimiter> {
        &self.limiter
    }

    /// What spends the budget.
    pub fn spends(&self) -> Spends {
        self.spends
    }

    /// The keys' scope.
    pub fn scope(&self) -> &'static str {
        self.scope
    }

    /// Whether an unanswering store refuses requests.
    pub fn is_fail_closed(&self) -> bool {
        self.fail_closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;

    #[tokio::test]
    async fn a_budget_of_n_allows_n_then_waits_until_one_unit_refills() {
        let clock = Arc::new(FixedClock::at(1_000));
        let limiter =
            InMemoryRateLimiter::new(Budget::new(5, Duration::from_secs(60)).unwrap(), clock.clone());
        let keys = vec!["ip:192.0.2.1".to_owned()];
        for i in 0..5 {
            assert_eq!(limiter.check(&keys).await.unwrap(), None, "unit {i}");
            assert_eq!(limiter.spend(&keys).await.unwrap(), None, "unit {i}");
        }
        // Spent: 12 s until one unit (60 s / 5) is back, and knocking does not push it further.
        assert_eq!(limiter.check(&keys).await.unwrap(), Some(Duration::from_secs(12)));
        assert_eq!(limiter.spend(&keys).await.unwrap(), Some(Duration::from_secs(12)));
        assert_eq!(limiter.check(&keys).await.unwrap(), Some(Duration::from_secs(12)));
        // Another key has its own budget.
        assert_eq!(limiter.check(&["ip:192.0.2.2".to_owned()]).await.unwrap(), None);
        clock.advance(Duration::from_secs(12));
        assert_eq!(limiter.check(&keys).await.unwrap(), None);
        assert_eq!(limiter.spend(&keys).await.unwrap(), None, "one unit back");
        assert!(limiter.spend(&keys).await.unwrap().is_some(), "and only one");
        clock.advance(Duration::from_secs(60));
        assert_eq!(limiter.check(&keys).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_full_key_table_drops_refilled_keys_before_live_ones() {
        let clock = Arc::new(FixedClock::at(1_000));
        let budget = Budget::new(1, Duration::from_secs(10)).unwrap();
        let limiter = InMemoryRateLimiter::new(budget, clock.clone()).with_max_keys(2);
        limiter.spend(&["a".to_owned()]).await.unwrap();
        clock.advance(Duration::from_secs(20));
        limiter.spend(&["b".to_owned()]).await.unwrap();
        limiter.spend(&["c".to_owned()]).await.unwrap();
        // `a` refilled and went; `b` is still spent.
        assert!(limiter.check(&["b".to_owned()]).await.unwrap().is_some());
        assert_eq!(limiter.tats.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn revocations_are_kept_by_kind_and_id_and_bounded() {
        let list = InMemoryRevocations::with_capacity(2);
        let key = Revocation::new(RevocationKind::ApiKey, "ops").unwrap();
        let cert = Revocation::new(RevocationKind::Cert, "AB12").unwrap();
        assert_eq!(cert.id(), "ab12");
        list.revoke(&key).await.unwrap();
        list.revoke(&key).await.unwrap();
        list.revoke(&cert).await.unwrap();
        assert!(list.any_revoked(&[Revocation::new(RevocationKind::Cert, "ab12").unwrap()]).await.unwrap());
        // Same id, other kind: not revoked.
        assert!(
            !list.any_revoked(&[Revocation::new(RevocationKind::AccessSub, "ops").unwrap()]).await.unwrap()
        );
        let third = Revocation::new(RevocationKind::ApiKey, "ci").unwrap();
        assert_eq!(list.revoke(&third).await, Err(StateError::Full { capacity: 2 }));
        assert_eq!(list.list().await.unwrap(), [key.clone(), cert]);
        assert_eq!(Revocation::from_key(&key.key()), Some(key));
        for bad in ["", "has space", "tab\tin"] {
            assert!(Revocation::new(RevocationKind::ApiKey, bad).is_err(), "{bad:?}");
        }
        assert!(Revocation::new(RevocationKind::ApiKey, "x".repeat(257)).is_err());
    }
}
