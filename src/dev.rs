//! A local Access-style token issuer (feature `dev`): RSA keys made at run time, their JWKS,
//! and signed tokens shaped like Cloudflare's.
//!
//! For development servers and tests only: nothing here is needed to verify real tokens, and
//! keys never leave the process unless you print a token yourself.
//!
//! ```
//! use ztgate::dev::{DevKey, jwks_json};
//!
//! let key = DevKey::generate("dev-1").unwrap();
//! let jwks = jwks_json(&[&key]);
//! let token = key.sign(&serde_json::json!({
//!     "iss": "http://127.0.0.1:8080", "aud": ["dev"], "email": "dev@localhost",
//!     "sub": "dev", "iat": 1_700_000_000u64, "exp": 1_700_003_600u64,
//! }));
//! assert_eq!(token.split('.').count(), 3);
//! assert!(jwks.contains("\"dev-1\""));
//! ```

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// An RSA signing key with a `kid`.
pub struct DevKey {
    kid: String,
    pair: KeyPair,
}

impl fmt::Debug for DevKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// A key could not be made.
#[derive(Debug)]
pub struct DevKeyError;

impl fmt::Display for DevKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RSA key generation failed")
    }
}

impl std::error::Error for DevKeyError {}

impl DevKey {
    /// A fresh 2048-bit key.
    pub fn generate(kid: impl Into<String>) -> Result<Self, DevKeyError> {
        Self::generate_sized(kid, KeySize::Rsa2048)
    }

    /// A fresh key of the given size.
    pub fn generate_sized(kid: impl Into<String>, size: KeySize) -> Result<Self, DevKeyError> {
        Ok(Self { kid: kid.into(), pair: KeyPair::generate(size).map_err(|_| DevKeyError)? })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK: `kty`, `kid`, `use: sig`, `alg: RS256`, `n`, `e`.
    pub fn public_jwk(&self) -> Value {
        let public: PublicKeyComponents<Vec<u8>> = self.pair.public_key().into();
        json!({
            "kty": "RSA",
            "kid": self.kid,
            "use": "sig",
            "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(&public.n),
            "e": URL_SAFE_NO_PAD.encode(&public.e),
        })
    }

    /// Signs `claims` with the header `{"alg":"RS256","kid":..,"typ":"JWT"}`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&json!({ "alg": "RS256", "kid": self.kid, "typ": "JWT" }), claims)
    }

    /// Signs `claims` under any header (for attack tests: the signature is real RS256 even if
    /// the header lies).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        self.sign_raw(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// Signs raw header and payload bytes (for duplicate-key and non-JSON cases).
    pub fn sign_raw(&self, header: &[u8], payload: &[u8]) -> String {
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signing_input.as_bytes(), &mut signature)
            .expect("RSA signing with a freshly generated key and a correctly sized buffer cannot fail");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&signature))
    }
}

/// A JWKS document (`{"keys":[..]}`) for `keys`.
pub fn jwks_json(keys: &[&DevKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() }).to_string()
}

/// Claims of a Cloudflare Access user token.
pub fn user_claims(iss: &str, aud: &str, email: &str, now: u64, ttl_secs: u64) -> Value {
    json!({
        "aud": [aud], "email": email, "exp": now + ttl_secs, "iat": now, "nbf": now, "iss": iss,
        "type": "app", "identity_nonce": "dev-nonce", "sub": format!("sub-{email}"), "country": "XX",
    })
}

/// What Cloudflare's `get-identity` answers for a login of `email`: its identity provider
/// `groups` (names), how it logged in (`amr`, e.g. `["hwk"]`) and a device that passed the
/// posture rule `dev-posture` through WARP. Serve it from a local endpoint and point
/// `GateBuilder::identity_url` there.
pub fn identity_json(email: &str, groups: &[&str], amr: &[&str]) -> Value {
    json!({
        "email": email, "groups": groups, "amr": amr, "idp": {"id": "dev-idp", "type": "onetimepin"},
        "devicePosture": {"dev-posture": {"success": true, "rule_name": "dev device", "type": "warp"}},
        "is_warp": true, "is_gateway": false, "device_id": "dev-device", "user_uuid": format!("uuid-{email}"),
    })
}

/// Claims of a Cloudflare Access service-token token (`sub` is empty, no email).
pub fn service_claims(iss: &str, aud: &str, common_name: &str, now: u64, ttl_secs: u64) -> Value {
    json!({
        "aud": [aud], "common_name": common_name, "exp": now + ttl_secs, "iat": now, "nbf": now,
        "iss": iss, "type": "app", "sub": "",
    })
}
