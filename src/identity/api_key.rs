//! API keys and shared-secret service tokens: named, stored as SHA-256 digests, compared in
//! constant time, revocable at run time ([`ApiKeys`]); [`ApiKeyAuth`] is the mechanism that
//! reads them from `X-Api-Key` or `Authorization: Bearer`.
//!
//! The presented key is hashed first, so the comparison always runs over 32 bytes whatever
//! its length, and every stored digest is compared (no early exit on a match, a length or a
//! prefix). Only digests are kept in memory.
//!
//! ```
//! use ztgate::identity::ApiKeys;
//!
//! let keys = ApiKeys::parse("deploy:0123456789abcdef0123,backup:fedcba9876543210fedc").unwrap();
//! // A prefix or an extra character is not a key.
//! assert_eq!(keys.verify("0123456789abcdef0123").as_deref(), Some("deploy")); // pragma: allowlist secret
//! assert_eq!(keys.verify("0123456789abcdef012"), None); // pragma: allowlist secret
//! assert!(keys.revoke("deploy"));
//! assert_eq!(keys.verify("0123456789abcdef0123"), None); // pragma: allowlist secret
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::mechanism::{Attempt, Mechanism};
use crate::BoxFuture;
use crate::error::{ConfigError, Rejection};
use crate::principal::{ApiKeyPrincipal, Principal};
use crate::request::{RequestError, RequestFacts};
use crate::secrets::Secret;

const MIN_KEY_BYTES: usize = ApiKeys::MIN_KEY_BYTES;
const MAX_KEY_BYTES: usize = ApiKeys::MAX_KEY_BYTES;

struct StoredKey {
    name: String,
    digest: [u8; 32],
}

/// A revocable set of named API keys.
#[derive(Default)]
pub struct ApiKeys {
    keys: RwLock<Vec<StoredKey>>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("ApiKeys")
            .field("names", &keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

impl ApiKeys {
    /// Shortest key accepted: 16 bytes (e.g. 128 bits of hex-encoded randomness, 32 characters,
    /// is the recommended size; 16 is the floor).
    pub const MIN_KEY_BYTES: usize = 16;
    /// Longest key accepted when presented; longer inputs are refused before hashing.
    pub const MAX_KEY_BYTES: usize = 512;

    /// An empty set (admits nobody).
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `name:secret,name:secret` (the `ZTGATE_API_KEYS` format). Names are
    /// `[A-Za-z0-9_.-]{1,64}`; secrets at least [`ApiKeys::MIN_KEY_BYTES`] long.
    pub fn parse(spec: &str) -> Result<Self, ConfigError> {
        let keys = Self::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, secret) = entry
                .split_once(':')
                .ok_or_else(|| ConfigError::new("api_keys", "each entry must be name:secret"))?;
            keys.insert(name.trim(), Secret::from(secret.trim()))?;
        }
        Ok(keys)
    }

    /// Adds (or replaces) the key called `name`.
    pub fn insert(&self, name: &str, key: Secret) -> Result<(), ConfigError> {
        check_name(name)?;
        if key.len() < MIN_KEY_BYTES || key.len() > MAX_KEY_BYTES {
            return Err(ConfigError::new(
                "api_keys",
                format!("the key named {name:?} must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes long"),
            ));
        }
        self.store(name, Sha256::digest(key.expose()).into())
    }

    /// Adds (or replaces) the key called `name` by its SHA-256 digest alone (64 hex digits,
    /// e.g. `printf %s "$KEY" | sha256sum`), so a configuration file need not hold the key.
    /// The key's length cannot be checked from its digest: make keys of at least
    /// [`ApiKeys::MIN_KEY_BYTES`] random bytes.
    pub fn insert_digest(&self, name: &str, sha256_hex: &str) -> Result<(), ConfigError> {
        check_name(name)?;
        let bad = || {
            ConfigError::new(
                "api_keys",
                format!("the digest of the key named {name:?} is not 64 hex digits (a SHA-256)"),
            )
        };
        let hex = sha256_hex.trim().as_bytes();
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
            let text = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(text, 16).map_err(|_| bad())?;
        }
        self.store(name, digest)
    }

    fn store(&self, name: &str, digest: [u8; 32]) -> Result<(), ConfigError> {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if keys.iter().any(|k| k.name != name && bool::from(k.digest.ct_eq(&digest))) {
            return Err(ConfigError::new(
                "api_keys",
                format!("the key named {name:?} duplicates another key"),
            ));
        }
        keys.retain(|k| k.name != name);
        keys.push(StoredKey { name: name.to_owned(), digest });
        Ok(())
    }

    /// Revokes the key called `name`; returns whether it existed. Takes effect for the next
    /// request.
    pub fn revoke(&self, name: &str) -> bool {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let before = keys.len();
        keys.retain(|k| k.name != name);
        keys.len() != before
    }

    /// Names of the configured keys.
    pub fn names(&self) -> Vec<String> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).iter().map(|k| k.name.clone()).collect()
    }

    /// The name of the key equal to `presented`, if any. Constant-time in the key contents.
    pub fn verify(&self, presented: &str) -> Option<String> {
        self.verify_digest(presented).map(|(name, _)| name)
    }

    /// The name of the key equal to `presented` and its digest.
    fn verify_digest(&self, presented: &str) -> Option<(String, [u8; 32])> {
        if presented.is_empty() || presented.len() > MAX_KEY_BYTES {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.find(&digest).map(|name| (name, digest))
    }

    /// Whether the key `name` is still configured with this digest (not revoked, not
    /// replaced under the same name). Constant-time in the digests.
    fn holds(&self, name: &str, digest: &[u8; 32]) -> bool {
        self.find(digest).is_some_and(|found| found == name)
    }

    /// The name of the key with this digest. Constant-time in the digests.
    fn find(&self, digest: &[u8; 32]) -> Option<String> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, key) in keys.iter().enumerate() {
            let matches = key.digest.ct_eq(digest);
            index.conditional_assign(&(i as u64), matches);
            found |= matches;
        }
        bool::from(found).then(|| keys[index as usize].name.clone())
    }
}

/// Key names are `[A-Za-z0-9_.-]{1,64}`: they appear in logs and principals.
fn check_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(ConfigError::new(
            "api_keys",
            format!("{name:?} is not a valid key name ([A-Za-z0-9_.-]{{1,64}})"),
        ));
    }
    Ok(())
}

/// API keys from `X-Api-Key` or `Authorization: Bearer`.
///
/// Any configured key proves its name; [`ApiKeyAuth::only`] narrows a route to some names.
#[derive(Debug, Clone)]
pub struct ApiKeyAuth {
    keys: Arc<ApiKeys>,
    only: Option<HashSet<String>>,
}

impl ApiKeyAuth {
    /// The mechanism's name, in proofs, logs and rejections.
    pub const NAME: &'static str = "api_key";

    /// Accepts every key in `keys` (shared: revocations apply at once).
    pub fn new(keys: Arc<ApiKeys>) -> Self {
        Self { keys, only: None }
    }

    /// Accepts only keys with these names (a valid key with another name gets 403).
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.only = Some(names.into_iter().map(Into::into).collect());
        self
    }
}

impl<C: Send + Sync + 'static> Mechanism<C> for ApiKeyAuth {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn attempt<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Attempt<C>> {
        Box::pin(async move {
            let presented = match (facts.api_key_header(), facts.bearer()) {
                (None, None) => return Attempt::NotPresent,
                (Some(a), Some(b)) if a.expose() != b.expose() => {
                    return Attempt::Refused(Rejection::Request(RequestError::AmbiguousCredential {
                        name: "X-Api-Key and Authorization",
                    }));
                }
                (Some(k), _) | (None, Some(k)) => k,
            };
            match self.keys.verify_digest(presented.expose()) {
                None => Attempt::Refused(Rejection::InvalidCredential {
                    mechanism: Self::NAME,
                    reason: "unknown or revoked key",
                }),
                Some((name, _)) if self.only.as_ref().is_some_and(|only| !only.contains(&name)) => {
                    tracing::warn!(layer = "identity", outcome = "forbidden", mechanism = Self::NAME, principal = ?format!("api_key:{name}"));
                    Attempt::Refused(Rejection::Forbidden)
                }
                Some((name, digest)) => {
                    Attempt::Verified(Principal::ApiKey(ApiKeyPrincipal { name, digest }))
                }
            }
        })
    }

    /// The same key is still configured under its name (not revoked, not replaced: 401), and
    /// this route still accepts that name (403).
    fn readmit(&self, principal: &Principal<C>, _now: u64) -> Result<(), Rejection> {
        let Principal::ApiKey(key) = principal else { return Err(Rejection::Forbidden) };
        if !self.keys.holds(&key.name, &key.digest) {
            return Err(Rejection::InvalidCredential {
                mechanism: Self::NAME,
                reason: "unknown or revoked key",
            });
        }
        if self.only.as_ref().is_some_and(|only| !only.contains(&key.name)) {
            return Err(Rejection::Forbidden);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_stored_by_digest_verifies_and_a_bad_digest_is_a_config_error() {
        let keys = ApiKeys::new();
        // Some other key's digest: any 64 hex digits.
        let digest = "0a2aeb0a5ba2a2d2dd6b4c2b8ba1a1e7fb4ec8ca9af1e6e0c8f9c6e4f5b7e3a1"; // pragma: allowlist secret
        let real: [u8; 32] = Sha256::digest(b"abcdefghijklmnopqrstuvwxyz012345").into(); // pragma: allowlist secret
        let real_hex: String = real.iter().map(|b| format!("{b:02x}")).collect();
        keys.insert_digest("ops", &real_hex).unwrap();
        assert_eq!(keys.verify("abcdefghijklmnopqrstuvwxyz012345").as_deref(), Some("ops")); // pragma: allowlist secret
        assert_eq!(keys.verify("abcdefghijklmnopqrstuvwxyz01234"), None); // pragma: allowlist secret
        keys.insert_digest("other", digest).unwrap();
        assert_eq!(keys.names().len(), 2);
        for bad in ["", "00", &"g".repeat(64), &format!("{real_hex}00"), "é".repeat(32).as_str()] {
            assert!(keys.insert_digest("x", bad).is_err(), "{bad:?}");
        }
        assert!(keys.insert_digest("bad name", &real_hex).is_err());
        // The same key under two names is refused, as with plaintext keys.
        assert!(keys.insert_digest("again", &real_hex).is_err());
    }

    #[test]
    fn keys_with_an_extra_character_or_only_a_prefix_are_refused() {
        let keys = ApiKeys::parse("ops:abcdefghijklmnopqrstuvwxyz012345").unwrap();
        assert_eq!(keys.verify("abcdefghijklmnopqrstuvwxyz012345").as_deref(), Some("ops"));
        assert_eq!(keys.verify("abcdefghijklmnopqrstuvwxyz0123456"), None);
        assert_eq!(keys.verify("abcdefghijklmnopqrstuvwxyz01234"), None);
        assert_eq!(keys.verify("Abcdefghijklmnopqrstuvwxyz012345"), None);
        assert_eq!(keys.verify(""), None);
        assert_eq!(keys.verify(&"a".repeat(MAX_KEY_BYTES + 1)), None);
    }

    #[test]
    fn bad_specs_are_refused_without_echoing_secrets() {
        for spec in
            ["nocolon", "name:short", ":abcdefghijklmnopqrstuvwxyz", "bad name:abcdefghijklmnopqrstuvwxyz"]
        {
            let err = ApiKeys::parse(spec).unwrap_err();
            assert_eq!(err.setting(), "api_keys");
            assert!(!err.to_string().contains("abcdefghijklmnop"), "{err}");
        }
        let err = ApiKeys::parse("a:abcdefghijklmnopqrstuvwxyz,b:abcdefghijklmnopqrstuvwxyz").unwrap_err();
        assert!(err.to_string().contains("duplicates"));
    }

    #[test]
    fn revocation_and_rotation_take_effect_immediately() {
        let keys = ApiKeys::parse("a:aaaaaaaaaaaaaaaaaaaa,b:bbbbbbbbbbbbbbbbbbbb").unwrap();
        assert!(keys.revoke("a"));
        assert!(!keys.revoke("a"));
        assert_eq!(keys.verify("aaaaaaaaaaaaaaaaaaaa"), None);
        assert_eq!(keys.verify("bbbbbbbbbbbbbbbbbbbb").as_deref(), Some("b"));
        keys.insert("b", Secret::from("cccccccccccccccccccc")).unwrap();
        assert_eq!(keys.verify("bbbbbbbbbbbbbbbbbbbb"), None);
        assert_eq!(keys.verify("cccccccccccccccccccc").as_deref(), Some("b"));
        assert!(!format!("{keys:?}").contains("cccc"));
    }
}
