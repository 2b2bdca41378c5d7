//! The verified-token cache: a browser sends the same Access token for its whole session, so
//! the *verification* of a token (signature and claims → principal) is kept, briefly, and the
//! RS256 check runs once per token instead of once per request.
//!
//! What is kept and what is not:
//! - **Verification only, never authorization.** An entry holds the principal a token proved;
//!   the [`Policy`](crate::Policy), revocations and every other rule run on every request, with
//!   the rules of that moment.
//! - **Keyed by the SHA-256 of the whole token**, compared in constant time: a token that
//!   differs in one byte (a tampered signature, a changed claim) has another digest and never
//!   meets the entry of the original.
//! - **Never past the token's own validity**: an entry is used while `now < exp + leeway` —
//!   exactly the instant [`AccessVerifier::verify`](super::AccessVerifier::verify) stops
//!   accepting the token — and at most [`TokenCacheConfig::max_age`] after it was verified
//!   (default 60 s). Times come from the verifier's [`Clock`](crate::clock::Clock).
//! - **Never past its signing key**: an entry remembers the key that checked it, and is used
//!   only while the current key set still holds that very key under that `kid`; once a JWKS
//!   refresh removes or replaces the key, the entry is dropped at its next use and the token
//!   is verified again (and refused).
//! - **Bounded** in entries and in bytes ([`TokenCacheConfig::max_entries`],
//!   [`TokenCacheConfig::max_bytes`]); a full cache evicts, it never refuses.
//! - **One check per token under concurrency**: concurrent requests carrying the same
//!   unverified token share one verification. Refusals are shared with the requests waiting
//!   for that one check, and not kept.
//!
//! The store is a port the runtime fills in (moka natively, a bounded map per isolate in
//! Workers).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use super::rs256::Rs256Key;
use crate::error::ConfigError;
use crate::principal::Principal;

/// Tuning for the verified-token cache of an [`AccessVerifier`](super::AccessVerifier). On by
/// default; [`TokenCacheConfig::disabled`] turns it off.
///
/// ```
/// use std::time::Duration;
/// use ztgate::identity::TokenCacheConfig;
///
/// let cache = TokenCacheConfig::default().with_max_age(Duration::from_secs(30))?.with_max_entries(50_000)?;
/// assert_eq!(cache.max_age(), Duration::from_secs(30));
/// assert!(!TokenCacheConfig::disabled().is_enabled());
/// # Ok::<(), ztgate::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenCacheConfig {
    enabled: bool,
    max_age: Duration,
    max_entries: u64,
    max_bytes: u64,
}

impl TokenCacheConfig {
    /// The default longest time an entry is used after its verification (60 s).
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);
    /// The largest [`TokenCacheConfig::max_age`] accepted (10 min): the cache trades
    /// freshness of nothing security-relevant (the entry's key and expiry are checked on every
    /// use), but a bound keeps the memory of one busy minute from lasting an hour.
    pub const MAX_MAX_AGE: Duration = Duration::from_secs(600);
    /// The default bound on entries (10,000 tokens: 10,000 concurrent browser sessions).
    pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;
    /// The default bound on the bytes held (16 MiB, counted as the token's length plus a fixed
    /// overhead per entry, an over-estimate of what the principal takes).
    pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;

    /// No cache: every request verifies its token's signature.
    pub fn disabled() -> Self {
        Self { enabled: false, ..Self::default() }
    }

    /// The longest time an entry is used after it was verified (never past the token's `exp`).
    /// Whole seconds, between 1 s and [`TokenCacheConfig::MAX_MAX_AGE`].
    pub fn with_max_age(mut self, max_age: Duration) -> Result<Self, ConfigError> {
        if max_age.as_secs() == 0 || max_age > Self::MAX_MAX_AGE {
            return Err(ConfigError::new(
                "token_cache.max_age",
                format!("{}s is not between 1s and {}s", max_age.as_secs(), Self::MAX_MAX_AGE.as_secs()),
            ));
        }
        self.max_age = Duration::from_secs(max_age.as_secs());
        Ok(self)
    }

    /// The most tokens kept (at least 1).
    pub fn with_max_entries(mut self, max_entries: u64) -> Result<Self, ConfigError> {
        if max_entries == 0 {
            return Err(ConfigError::new("token_cache.max_entries", "must be at least 1"));
        }
        self.max_entries = max_entries;
        Ok(self)
    }

    /// The most bytes kept, as counted by [`TokenCacheConfig::DEFAULT_MAX_BYTES`]'s rule
    /// (at least 64 KiB).
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Result<Self, ConfigError> {
        if max_bytes < 64 * 1024 {
            return Err(ConfigError::new("token_cache.max_bytes", "must be at least 65536 bytes"));
        }
        self.max_bytes = max_bytes;
        Ok(self)
    }

    /// Whether the cache is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// See [`TokenCacheConfig::with_max_age`].
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// See [`TokenCacheConfig::with_max_entries`].
    pub fn max_entries(&self) -> u64 {
        self.max_entries
    }

    /// See [`TokenCacheConfig::with_max_bytes`].
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The weight of one entry for a token of `token_len` bytes: its bytes, and never less
    /// than `max_bytes / max_entries`, so that a store bounded by total weight
    /// ([`TokenCacheConfig::max_bytes`]) also holds at most `max_entries` entries.
    pub(crate) fn weight(&self, token_len: usize) -> u32 {
        let bytes = (token_len as u64).saturating_add(ENTRY_OVERHEAD);
        let floor = self.max_bytes.div_ceil(self.max_entries.max(1));
        u32::try_from(bytes.max(floor)).unwrap_or(u32::MAX)
    }
}

/// Bytes counted per entry beyond the token's length: the digest, the key's `Arc`, the `kid`,
/// times, and the store's own bookkeeping.
const ENTRY_OVERHEAD: u64 = 256;

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_age: Self::DEFAULT_MAX_AGE,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

/// The SHA-256 of a whole token: the cache's key. Equality is constant-time.
#[derive(Clone, Copy)]
pub(crate) struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub(crate) fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

impl PartialEq for TokenDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for TokenDigest {}

impl Hash for TokenDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // A digest is uniform already; its first 8 bytes are as good a hash input as all 32.
        state.write(&self.0[..8]);
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest of a bearer token is not the token, but nothing needs to print it either.
        f.write_str("TokenDigest(redacted)")
    }
}

/// One verified token: what it proved, with what key, and until when that proof may be reused.
pub(crate) struct Verification<C> {
    pub(crate) principal: Principal<C>,
    /// The `kid` and key that checked the signature.
    pub(crate) kid: Box<str>,
    pub(crate) key: Arc<Rs256Key>,
    /// Unix seconds from which the entry is no longer used.
    pub(crate) valid_until: u64,
    /// How long the store may keep it (memory only; `valid_until` decides use).
    #[allow(dead_code, reason = "read by stores that expire by time (moka); others rely on `fresh_at`")]
    pub(crate) time_to_live: Duration,
    pub(crate) weight: u32,
}

impl<C> Verification<C> {
    /// Whether this verification may stand in for a new one at `now` as far as time goes
    /// (the caller checks its key too).
    pub(crate) fn fresh_at(&self, now: u64) -> bool {
        now < self.valid_until
    }
}

/// What a token-cache store needs to know of its values.
pub(crate) trait CacheValue {
    /// The entry's weight against the store's byte bound.
    fn weight(&self) -> u32;
    /// How long the store may keep the entry.
    #[allow(dead_code, reason = "read by stores that expire by time (moka); others rely on `fresh_at`")]
    fn time_to_live(&self) -> Duration;
}

impl<C> CacheValue for Arc<Verification<C>> {
    fn weight(&self) -> u32 {
        self.weight
    }

    fn time_to_live(&self) -> Duration {
        self.time_to_live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_bounds() {
        let cfg = TokenCacheConfig::default();
        assert!(cfg.is_enabled());
        assert_eq!(cfg.max_age(), Duration::from_secs(60));
        for bad in [Duration::ZERO, Duration::from_millis(999), Duration::from_secs(601)] {
            assert_eq!(
                cfg.clone().with_max_age(bad).unwrap_err().setting(),
                "token_cache.max_age",
                "{bad:?}"
            );
        }
        assert_eq!(
            cfg.clone().with_max_age(Duration::from_millis(1500)).unwrap().max_age(),
            Duration::from_secs(1)
        );
        assert!(cfg.clone().with_max_entries(0).is_err());
        assert!(cfg.clone().with_max_bytes(1000).is_err());
    }

    #[test]
    fn the_weight_floor_makes_the_byte_bound_an_entry_bound_too() {
        let cfg = TokenCacheConfig::default().with_max_entries(4).unwrap().with_max_bytes(1 << 20).unwrap();
        // 4 entries of at least a quarter of the bytes each: a fifth never fits.
        assert_eq!(cfg.weight(10), (1 << 20) / 4);
        let roomy = TokenCacheConfig::default();
        // A token longer than the floor (16 MiB / 10,000 = 1,678 bytes) weighs its own bytes.
        assert_eq!(roomy.weight(4000), 4000 + ENTRY_OVERHEAD as u32);
        assert_eq!(roomy.weight(1000), 1678);
        assert!(u64::from(roomy.weight(0)) * roomy.max_entries() >= roomy.max_bytes());
    }

    #[test]
    fn digests_differ_for_a_one_byte_change_and_compare_equal_otherwise() {
        let a = TokenDigest::of("a.b.c");
        assert_eq!(a, TokenDigest::of("a.b.c"));
        assert_ne!(a, TokenDigest::of("a.b.d"));
        assert_eq!(format!("{a:?}"), "TokenDigest(redacted)");
    }
}
