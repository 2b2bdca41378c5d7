//! The ports identity asks a runtime to fill in, beyond the public ones ([`KeyFetcher`],
//! [`Clock`], [`SecretSource`], [`ReplayGuard`]). The runtimes in `crate::runtime` implement
//! these and choose the defaults, in one place; identity never names a runtime.
//!
//! [`KeyFetcher`]: super::KeyFetcher
//! [`Clock`]: crate::clock::Clock
//! [`SecretSource`]: crate::secrets::SecretSource
//! [`ReplayGuard`]: super::webhook::ReplayGuard

use std::fmt;
use std::hash::Hash;

use super::rs256::Rs256Key;
use super::token_cache::{CacheValue, TokenDigest};
use crate::BoxFuture;
use crate::error::TokenError;

/// Concurrent callers with the same key share one run of one future.
///
/// Contract: while a run for `key` is in flight, other callers with `key` wait for it and get
/// a clone of its value instead of running their own `work`; each caller's `work` is polled
/// only if that caller ends up running. A caller arriving after a run finished may get that
/// run's value or run anew (callers must tolerate both: the JWKS cache keys flights by
/// generation, so either is the same). `None` means the value could not be had within the
/// implementation's bound (a leader that neither finished nor went away).
///
/// Natively this is moka's `get_with` (waiters are woken); in Workers a waiter must not be woken
/// from another request's I/O context, so waiters poll with timers of their own.
pub(crate) trait SingleFlight<K, V>: Send + Sync + fmt::Debug + 'static
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Runs `work` for `key`, or joins the run in flight.
    fn run<'a>(&'a self, key: K, work: BoxFuture<'a, V>) -> BoxFuture<'a, Option<V>>;
}

/// Checks RS256 signatures with the fastest engine of the platform.
///
/// The pure one ([`PureRs256`]) is the crypto backend compiled in (jsonwebtoken or jwt-simple);
/// in Workers, WebCrypto runs in the runtime's native code and falls back to the pure check
/// only when WebCrypto is unavailable, never when it says "invalid".
pub(crate) trait Rs256Engine: Send + Sync + fmt::Debug + 'static {
    /// Whether `signature_b64` (the third JWS segment) is a valid RS256 signature of
    /// `signing_input` (the first two segments and their dot) under `key`.
    fn verify<'a>(
        &'a self,
        key: &'a Rs256Key,
        signing_input: &'a [u8],
        signature_b64: &'a str,
    ) -> BoxFuture<'a, bool>;
}

/// The compiled-in crypto backend, with nothing in front of it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PureRs256;

impl Rs256Engine for PureRs256 {
    fn verify<'a>(
        &'a self,
        key: &'a Rs256Key,
        signing_input: &'a [u8],
        signature_b64: &'a str,
    ) -> BoxFuture<'a, bool> {
        Box::pin(std::future::ready(key.verify(signing_input, signature_b64)))
    }
}

/// The store of the verified-token cache (see `identity::token_cache`): bounded, each entry
/// kept at most its [`CacheValue::time_to_live`], concurrent misses of one key sharing one
/// verification.
///
/// Contract: `get_or_verify` returns the stored value for `key`, or runs `verify` — once for
/// all concurrent callers with `key` — and stores its `Ok` value (never an `Err`, which goes to
/// the callers that waited for it and is forgotten). Callers check a stored value's validity
/// themselves and [`VerifiedTokens::remove`] it when it no longer holds.
///
/// Natively this is moka's `try_get_with` (a weigher for the byte bound, an `Expiry` per
/// entry); in Workers, a bounded map per isolate with the polling single-flight.
pub(crate) trait VerifiedTokens<V>: Send + Sync + fmt::Debug + 'static
where
    V: CacheValue + Clone + Send + Sync + 'static,
{
    /// The stored value for `key`, or the value `verify` produces (stored if `Ok`).
    fn get_or_verify<'a>(
        &'a self,
        key: TokenDigest,
        verify: BoxFuture<'a, Result<V, TokenError>>,
    ) -> BoxFuture<'a, Result<V, TokenError>>;

    /// Forgets `key`.
    fn remove<'a>(&'a self, key: &'a TokenDigest) -> BoxFuture<'a, ()>;

    /// About how many entries are held (for metrics and tests; may lag behind inserts).
    fn len(&self) -> u64;
}

/// Runs work in the background: the JWKS refresh that keeps requests from waiting when the
/// key set reaches its max-age.
///
/// Natively the current tokio runtime's `spawn`; in Workers nothing is spawned (work started
/// from one request's I/O context dies with it), so the request that notices runs it inline.
pub(crate) trait Background: Send + Sync + fmt::Debug + 'static {
    /// Starts `work` and returns `true`, or returns `false` (without running it) when this
    /// platform or context cannot run work in the background.
    fn spawn(&self, work: BoxFuture<'static, ()>) -> bool;
}
