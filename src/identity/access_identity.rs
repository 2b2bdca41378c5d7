//! The Access identity of a user: what `{team}/cdn-cgi/access/get-identity` says of the login
//! behind an application token (groups, `amr`, device posture, WARP), fetched after the token
//! verified, for the policy rules that need it.
//!
//! - **Only when needed.** The [`AccessJwt`](super::AccessJwt) mechanism fetches it when its
//!   [`Policy`](crate::Policy) cannot decide without it (a group, login-method, posture or WARP
//!   rule), or on every user when asked to
//!   ([`GateBuilder::enrich_identity`](crate::GateBuilder::enrich_identity)).
//! - **Cached by `identity_nonce`** (with the email), the claim Access changes on every new login: one fetch per
//!   login, whatever the number of requests; a new login (new nonce) fetches again. An entry
//!   lives [`IdentityConfig::ttl`] (default 5 min) and never past the token's `exp`. Bounded in
//!   entries and bytes. Concurrent requests of one login share one fetch.
//! - **Bounded like the JWKS fetch**: a timeout, a size cap, no redirects, `https://` except on
//!   loopback. The token goes as the `CF_Authorization` cookie, as a browser sends it.
//! - **Fails closed**: an endpoint that is down, slow, answers non-200, too much, or JSON that is
//!   not an identity, or an identity for another email, gives no identity; a decision that needs
//!   one is then 503 `identity_unavailable`. Nothing failed is cached.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::jwks::FetchError;
use super::ports::VerifiedTokens;
use super::token_cache::{CacheValue, TokenCacheConfig, TokenDigest};
use crate::BoxFuture;
use crate::clock::Clock;
use crate::error::{ConfigError, TokenError};
use crate::principal::{AccessIdentity, AccessUser};

/// Where identities come from: HTTP natively (`ztgate::native::HttpIdentityFetcher`), the
/// Workers fetch API at the edge, or a fixed answer in tests.
pub trait IdentityFetcher: Send + Sync + fmt::Debug + 'static {
    /// Fetches the identity of the login behind `token` (an application token that verified),
    /// once: the response body. Implementations bound time and size themselves.
    fn fetch<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Vec<u8>, FetchError>>;
}

/// Tuning for identity fetches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityConfig {
    ttl: Duration,
    max_entries: u64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self { ttl: Self::DEFAULT_TTL, max_entries: Self::DEFAULT_MAX_ENTRIES }
    }
}

impl IdentityConfig {
    /// How long a fetched identity is used by default (5 min).
    pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
    /// The longest TTL accepted (1 h): group membership changes at the provider reach ztgate
    /// within the TTL, so it stays short.
    pub const MAX_TTL: Duration = Duration::from_secs(3600);
    /// The default bound on cached identities (10,000 logins).
    pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;
    /// The largest identity document read (64 KiB).
    pub const MAX_BYTES: usize = 64 * 1024;

    /// How long a fetched identity is used (never past its token's `exp`), 1 s to
    /// [`IdentityConfig::MAX_TTL`].
    pub fn with_ttl(mut self, ttl: Duration) -> Result<Self, ConfigError> {
        if ttl < Duration::from_secs(1) || ttl > Self::MAX_TTL {
            return Err(ConfigError::new("identity", "the identity TTL must be from 1 s to 1 h"));
        }
        self.ttl = ttl;
        Ok(self)
    }

    /// At most this many identities are cached (at least 1).
    pub fn with_max_entries(mut self, max_entries: u64) -> Result<Self, ConfigError> {
        if max_entries == 0 {
            return Err(ConfigError::new("identity", "the identity cache needs room for one entry"));
        }
        self.max_entries = max_entries;
        Ok(self)
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The entry bound.
    pub fn max_entries(&self) -> u64 {
        self.max_entries
    }

    /// The store's bounds, in the verified-token cache's terms (its byte bound covers every
    /// entry at the size cap).
    pub(crate) fn store_config(&self) -> TokenCacheConfig {
        let bytes = self.max_entries.saturating_mul(Self::MAX_BYTES as u64 / 4).max(1 << 20);
        TokenCacheConfig::default()
            .with_max_entries(self.max_entries)
            .and_then(|c| c.with_max_bytes(bytes))
            .unwrap_or_default()
    }
}

/// A fetched identity and how long it may stand.
#[derive(Clone)]
pub(crate) struct CachedIdentity {
    identity: Arc<AccessIdentity>,
    /// Unix seconds: checked on every use (a store that expires by time drops it then too).
    valid_until: u64,
    time_to_live: Duration,
    weight: u32,
}

impl CacheValue for CachedIdentity {
    fn weight(&self) -> u32 {
        self.weight
    }

    fn time_to_live(&self) -> Duration {
        self.time_to_live
    }
}

/// Fetches and caches identities; see the module docs.
pub(crate) struct IdentitySource {
    fetcher: Arc<dyn IdentityFetcher>,
    store: Arc<dyn VerifiedTokens<CachedIdentity>>,
    config: IdentityConfig,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for IdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentitySource")
            .field("fetcher", &self.fetcher)
            .field("config", &self.config)
            .finish()
    }
}

impl IdentitySource {
    pub(crate) fn new(
        fetcher: Arc<dyn IdentityFetcher>,
        store: Arc<dyn VerifiedTokens<CachedIdentity>>,
        config: IdentityConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { fetcher, store, config, clock }
    }

    /// The identity of `user`'s login, whose verified application token is `token`.
    pub(crate) async fn identity<C>(
        &self,
        token: &str,
        user: &AccessUser<C>,
    ) -> Result<Arc<AccessIdentity>, TokenError> {
        // One login, one nonce: without one the token itself keys the entry. The email is part
        // of the key, so an entry can only ever answer for the user it was fetched for. Either
        // way the key is a digest, never the secret value.
        let login = user.identity_nonce.as_deref().unwrap_or(token);
        let key = TokenDigest::of(&format!("{}\n{login}", user.email));
        let cached =
            self.store.get_or_verify(key, Box::pin(self.fetch(token, &user.email, user.expires_at))).await?;
        if self.clock.now() < cached.valid_until {
            return Ok(cached.identity);
        }
        // Past its TTL or its token's expiry in a store that keeps entries longer: fetch anew.
        self.store.remove(&key).await;
        let cached =
            self.store.get_or_verify(key, Box::pin(self.fetch(token, &user.email, user.expires_at))).await?;
        Ok(cached.identity)
    }

    /// One fetch and its checks.
    async fn fetch(&self, token: &str, email: &str, expires_at: u64) -> Result<CachedIdentity, TokenError> {
        let body = self.fetcher.fetch(token).await.map_err(|e| unavailable(&e.to_string()))?;
        let identity: AccessIdentity =
            serde_json::from_slice(&body).map_err(|_| unavailable("the answer is not an identity"))?;
        if identity.email.as_deref().is_some_and(|e| !e.eq_ignore_ascii_case(email)) {
            return Err(unavailable("the identity is another user's"));
        }
        let now = self.clock.now();
        let until = expires_at.saturating_sub(now);
        let time_to_live = self.config.ttl.min(Duration::from_secs(until)).max(Duration::from_secs(1));
        let valid_until = now.saturating_add(time_to_live.as_secs()).min(expires_at);
        let weight = u32::try_from(body.len()).unwrap_or(u32::MAX).saturating_add(256);
        Ok(CachedIdentity { identity: Arc::new(identity), valid_until, time_to_live, weight })
    }
}

/// The one refusal of this module: 503 `identity_unavailable`, with why (for the log).
fn unavailable(why: &str) -> TokenError {
    TokenError::IdentityUnavailable(why.chars().take(200).collect())
}
