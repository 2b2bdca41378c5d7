//! RS256 keys and the crypto backend that checks their signatures, behind one small interface
//! so that a second, independent implementation can be selected at build time and fuzzed
//! against the first. One file per backend:
//!
//! - `jsonwebtoken.rs` (default): `jsonwebtoken` with its `aws_lc_rs` or `rust_crypto` provider.
//! - `jwt_simple.rs` (feature `jwt_simple`): `jwt-simple` with its pure-Rust RSA (`superboring`
//!   over the `rsa` crate). Only the RS256 signature check moves; every claim check stays
//!   ztgate's own.
//!
//! Both answer the same question: is `signature_b64` a valid RS256 signature of
//! `signing_input` under this key? The `jwt_simple` backend is stricter in three documented
//! ways, all failing closed (see `docs/hardening.md`):
//! - keys: jwt-simple only builds RSA keys of 2048–4096 bits with `e = 65537`, so other keys
//!   that pass ztgate's own filter (up to 8192 bits, other odd exponents) are dropped;
//! - inputs: jwt-simple verifies whole compact tokens only, so the signing input must be a
//!   JWS signing input (`header.payload`, UTF-8, one dot) whose header jwt-simple can parse;
//! - headers: jwt-simple refuses a `typ` other than `JWT`/`*+JWT`, a non-empty `crit`, a
//!   `salt`, and header members of unexpected JSON types (`jwk` must be a string, say).
//!
//! Which *engine* runs the check (the backend here, or WebCrypto in Workers) is a port:
//! [`Rs256Engine`](super::ports::Rs256Engine).

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

#[cfg(not(feature = "jwt_simple"))]
mod jsonwebtoken;
#[cfg(not(feature = "jwt_simple"))]
use self::jsonwebtoken as backend;

#[cfg(feature = "jwt_simple")]
mod jwt_simple;
#[cfg(feature = "jwt_simple")]
use self::jwt_simple as backend;

/// An RSA public key bound to RS256, prepared for verification.
///
/// Built only from JWKS components that passed the key filter; there is no way to use it
/// with another algorithm.
pub struct Rs256Key {
    key: backend::Key,
    n: Box<[u8]>,
    e: Box<[u8]>,
    /// What an engine prepared from this key (WebCrypto's imported `CryptoKey`), kept with the
    /// key so it lives exactly as long as the key does.
    engine_state: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl Rs256Key {
    /// A key from its big-endian modulus and public exponent (no leading zeros). `None` for
    /// keys the backend refuses (see the module docs).
    pub fn from_components(n: &[u8], e: &[u8]) -> Option<Self> {
        Some(Self { key: backend::Key::new(n, e)?, n: n.into(), e: e.into(), engine_state: OnceLock::new() })
    }

    /// Whether `other` is the same public key (same modulus and exponent; public values, so
    /// an ordinary comparison).
    pub(crate) fn same_key(&self, other: &Self) -> bool {
        self.n == other.n && self.e == other.e
    }

    /// Whether `signature_b64` (the third JWS segment, base64url without padding) is a valid
    /// RS256 signature of `signing_input` (the first two segments and their dot), checked by
    /// the compiled-in backend. Malformed signature encodings are `false`.
    pub fn verify(&self, signing_input: &[u8], signature_b64: &str) -> bool {
        self.key.verify(signing_input, signature_b64)
    }

    /// The modulus, big-endian without leading zeros (for engines that import the key).
    #[allow(dead_code)] // read by the Workers WebCrypto engine
    pub(crate) fn modulus(&self) -> &[u8] {
        &self.n
    }

    /// The public exponent, big-endian without leading zeros.
    #[allow(dead_code)] // read by the Workers WebCrypto engine
    pub(crate) fn exponent(&self) -> &[u8] {
        &self.e
    }

    /// The state an engine keeps for this key, if it made one.
    #[allow(dead_code)] // read by the Workers WebCrypto engine
    pub(crate) fn engine_state(&self) -> Option<&Arc<dyn Any + Send + Sync>> {
        self.engine_state.get()
    }

    /// Keeps `state` for this key (the first one kept wins; a concurrent import is redundant,
    /// not wrong).
    #[allow(dead_code)] // read by the Workers WebCrypto engine
    pub(crate) fn keep_engine_state(&self, state: Arc<dyn Any + Send + Sync>) {
        let _ = self.engine_state.set(state);
    }
}

impl fmt::Debug for Rs256Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rs256Key")
    }
}
