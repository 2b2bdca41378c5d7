//! The RS256 verification backend, behind one small interface so that a second, independent
//! implementation can be selected at build time and fuzzed against the first.
//!
//! Default: `jsonwebtoken` (with its `aws_lc_rs` or `rust_crypto` crypto provider).

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey};

/// An RSA public key bound to RS256, prepared for verification.
///
/// Built only from JWKS components that passed the key filter; there is no way to use it
/// with another algorithm.
pub struct Rs256Key {
    key: DecodingKey,
}

impl fmt::Debug for Rs256Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rs256Key")
    }
}

impl Rs256Key {
    /// A key from its big-endian modulus and public exponent (no leading zeros).
    pub fn from_components(n: &[u8], e: &[u8]) -> Option<Self> {
        Some(Self { key: DecodingKey::from_rsa_raw_components(n, e) })
    }

    /// Whether `signature_b64` (the third JWS segment, base64url without padding) is a valid
    /// RS256 signature of `signing_input` (the first two segments and their dot). Malformed
    /// signature encodings are `false`.
    pub fn verify(&self, signing_input: &[u8], signature_b64: &str) -> bool {
        jsonwebtoken::crypto::verify(signature_b64, signing_input, &self.key, Algorithm::RS256)
            .unwrap_or(false)
    }
}
