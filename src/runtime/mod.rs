//! Runtimes: the outbound side of each platform, implementing identity's ports.
//!
//! - `native` (feature `native`): the reqwest JWKS fetcher, moka's single-flight, the
//!   operating system's clock, RS256 by the compiled-in backend.
//! - `workers` (feature `workers`, wasm32): the Workers fetch API, a polling single-flight
//!   (a waiter must not be woken from another request's I/O context), the JS clock, RS256
//!   through WebCrypto, Worker secrets.
//!
//! This is the one place where a runtime is chosen: `platform` is whichever of the two is
//! compiled in (`lib.rs` refuses both or neither), and the public items that need the platform
//! ([`JwksCache::new`], [`AccessVerifier::new`], [`SystemClock`]'s [`Clock`] impl) are written
//! here, so neither identity nor `clock` names a runtime.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::clock::{Clock, SystemClock};
use crate::error::ConfigError;
use crate::identity::access_identity::IdentitySource;
use crate::identity::{
    AccessJwt, AccessVerifier, IdentityConfig, IdentityFetcher, JwksCache, JwksConfig, KeyFetcher,
    TokenCacheConfig,
};

#[cfg(any(feature = "workers", test))]
mod bounded;
// The Workers console logger's line format; compiled natively for its tests.
#[cfg(any(feature = "workers", test))]
mod flight;
#[cfg(any(feature = "workers", test))]
mod json_log;
#[cfg(feature = "native")]
pub(crate) mod native;
#[cfg(feature = "redis")]
pub(crate) mod redis_state;
#[cfg(feature = "workers")]
pub(crate) mod workers;

#[cfg(feature = "native")]
use native as platform;
#[cfg(all(feature = "workers", not(feature = "native")))]
use workers as platform;

/// The platform's wall clock ([`SystemClock`] is declared in `clock`, which names no runtime).
impl Clock for SystemClock {
    fn now(&self) -> u64 {
        platform::unix_now()
    }
}

/// Measures elapsed time for metrics: monotonic natively (`Instant`); the JS clock in
/// Workers, which advances only across I/O.
#[derive(Clone, Copy)]
pub(crate) struct Stopwatch(platform::Mark);

impl Stopwatch {
    /// Starts measuring.
    pub(crate) fn start() -> Self {
        Self(platform::mark())
    }

    /// Seconds since [`Stopwatch::start`].
    pub(crate) fn seconds(self) -> f64 {
        platform::seconds_since(self.0)
    }
}

/// The JWKS fetcher a [`GateBuilder`](crate::GateBuilder) uses unless given one: reqwest
/// natively, the Workers fetch API in Workers; both bounded the same way.
pub(crate) fn default_fetcher(url: &str) -> Result<Arc<dyn KeyFetcher>, ConfigError> {
    platform::default_fetcher(url)
}

/// The identity fetcher a [`GateBuilder`](crate::GateBuilder) uses unless given one, bounded
/// like the JWKS fetcher.
pub(crate) fn default_identity_fetcher(url: &str) -> Result<Arc<dyn IdentityFetcher>, ConfigError> {
    platform::default_identity_fetcher(url)
}

/// An identity source whose cache is the platform's store (moka natively, a bounded map per
/// isolate in Workers), bounded as `config` says.
pub(crate) fn identity_source(
    fetcher: Arc<dyn IdentityFetcher>,
    config: IdentityConfig,
    clock: Arc<dyn Clock>,
) -> IdentitySource {
    let store = platform::token_store(&config.store_config());
    IdentitySource::new(fetcher, store, config, clock)
}

impl JwksCache {
    /// A cache that fetches with `fetcher` and reads time from `clock`; concurrent fetches
    /// coalesce through the runtime's single-flight.
    pub fn new(fetcher: Arc<dyn KeyFetcher>, clock: Arc<dyn Clock>, config: JwksConfig) -> Self {
        Self::with_runtime(fetcher, clock, config, platform::single_flight(), platform::background())
    }
}

impl<C: DeserializeOwned + Clone + Send + Sync + 'static> AccessJwt<C> {
    /// Fetches users' identities with `fetcher` (cached as `config` says, in the platform's
    /// store), for the policy rules that need them.
    pub fn with_identity(self, fetcher: Arc<dyn IdentityFetcher>, config: IdentityConfig) -> Self {
        let clock = self.verifier().clock().clone();
        let enrich = self.enriches();
        self.with_identity_source(Arc::new(identity_source(fetcher, config, clock)), enrich)
    }
}

impl<C: DeserializeOwned + Clone + Send + Sync + 'static> AccessVerifier<C> {
    /// A verifier for `config`, with keys from `keys` and time from `clock`; signatures are
    /// checked by the platform's fastest RS256 engine (WebCrypto in Workers), and verified
    /// tokens are kept in the default [`TokenCacheConfig`] (on; 60 s at most).
    pub fn new(config: crate::AccessConfig, keys: JwksCache, clock: Arc<dyn Clock>) -> Self {
        Self::with_engine(config, keys, clock, platform::rs256_engine())
            .with_token_cache(TokenCacheConfig::default())
    }

    /// The verified-token cache (see [`TokenCacheConfig`]); [`TokenCacheConfig::disabled`]
    /// turns it off, so every request checks its token's signature. Replaces the cache (and
    /// what it held).
    pub fn with_token_cache(self, cache: TokenCacheConfig) -> Self {
        let store = cache.is_enabled().then(|| platform::token_store(&cache));
        self.with_store(cache, store)
    }
}

impl crate::identity::turnstile::TurnstileVerifier {
    /// A verifier for `config` that posts to its
    /// [`siteverify_url`](crate::identity::turnstile::TurnstileConfig::siteverify_url) with the
    /// platform's bounded client (reqwest natively, the Workers fetch API in Workers) within its
    /// [`timeout`](crate::identity::turnstile::TurnstileConfig::timeout), reads the secret key
    /// from `secret` on every verification and the time from `clock`.
    ///
    /// Fails for setting `siteverify_url` when the URL is not `https://` (plain `http://` only
    /// on a loopback host).
    pub fn new(
        config: crate::identity::turnstile::TurnstileConfig,
        secret: impl crate::secrets::SecretSource,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        let client = platform::siteverify_client(config.siteverify_url(), config.timeout())?;
        Ok(Self::with_client(config, secret, clock, client))
    }
}
