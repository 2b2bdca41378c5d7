//! The default RS256 backend: jsonwebtoken, with the crypto provider its feature selects.

use jsonwebtoken::{Algorithm, DecodingKey};

pub(super) struct Key(DecodingKey);

impl Key {
    pub(super) fn new(n: &[u8], e: &[u8]) -> Option<Self> {
        Some(Self(DecodingKey::from_rsa_raw_components(n, e)))
    }

    pub(super) fn verify(&self, signing_input: &[u8], signature_b64: &str) -> bool {
        jsonwebtoken::crypto::verify(signature_b64, signing_input, &self.0, Algorithm::RS256).unwrap_or(false)
    }
}
