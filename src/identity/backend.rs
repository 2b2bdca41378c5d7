//! The RS256 verification backend, behind one small interface so that a second, independent
//! implementation can be selected at build time and fuzzed against the first.
//!
//! - Default: `jsonwebtoken` (with its `aws_lc_rs` or `rust_crypto` crypto provider).
//! - Feature `jwt_simple`: `jwt-simple` with its pure-Rust RSA (`superboring` over the `rsa`
//!   crate). Only the RS256 signature check moves; every claim check stays ztgate's own.
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

use std::fmt;

#[cfg(not(feature = "jwt_simple"))]
use jsonwebtoken::{Algorithm, DecodingKey};

/// An RSA public key bound to RS256, prepared for verification.
///
/// Built only from JWKS components that passed the key filter; there is no way to use it
/// with another algorithm.
pub struct Rs256Key {
    #[cfg(not(feature = "jwt_simple"))]
    key: DecodingKey,
    #[cfg(feature = "jwt_simple")]
    key: jwt_simple::algorithms::RS256PublicKey,
    /// The same key for WebCrypto, imported on first use (Workers only).
    #[cfg(all(feature = "workers", target_arch = "wasm32"))]
    web: webcrypto::WebKey,
}

impl Rs256Key {
    /// Like [`Rs256Key::verify`], through the fastest engine of the platform: in a Workers build
    /// that is WebCrypto (`crypto.subtle.verify`, native code in the runtime), falling back to the
    /// pure-Rust check only when WebCrypto is unavailable (never when it says "invalid").
    /// Elsewhere it is [`Rs256Key::verify`].
    pub async fn verify_async(&self, signing_input: &[u8], signature_b64: &str) -> bool {
        // JS promises are not `Send`; a Workers isolate runs one thread, so nothing crosses one.
        #[cfg(all(feature = "workers", target_arch = "wasm32"))]
        if let Some(valid) =
            worker::send::SendFuture::new(self.web.verify(signing_input, signature_b64)).await
        {
            return valid;
        }
        self.verify(signing_input, signature_b64)
    }
}

impl fmt::Debug for Rs256Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rs256Key")
    }
}

#[cfg(not(feature = "jwt_simple"))]
impl Rs256Key {
    /// A key from its big-endian modulus and public exponent (no leading zeros).
    pub fn from_components(n: &[u8], e: &[u8]) -> Option<Self> {
        Some(Self {
            key: DecodingKey::from_rsa_raw_components(n, e),
            #[cfg(all(feature = "workers", target_arch = "wasm32"))]
            web: webcrypto::WebKey::new(n, e),
        })
    }

    /// Whether `signature_b64` (the third JWS segment, base64url without padding) is a valid
    /// RS256 signature of `signing_input` (the first two segments and their dot). Malformed
    /// signature encodings are `false`.
    pub fn verify(&self, signing_input: &[u8], signature_b64: &str) -> bool {
        jsonwebtoken::crypto::verify(signature_b64, signing_input, &self.key, Algorithm::RS256)
            .unwrap_or(false)
    }
}

#[cfg(feature = "jwt_simple")]
impl Rs256Key {
    /// A key from its big-endian modulus and public exponent (no leading zeros).
    ///
    /// `None` for keys jwt-simple refuses: fewer than 2048 or more than 4096 bits, or a
    /// public exponent other than 65537.
    pub fn from_components(n: &[u8], e: &[u8]) -> Option<Self> {
        jwt_simple::algorithms::RS256PublicKey::from_components(n, e).ok().map(|key| Self {
            key,
            #[cfg(all(feature = "workers", target_arch = "wasm32"))]
            web: webcrypto::WebKey::new(n, e),
        })
    }

    /// Whether `signature_b64` (the third JWS segment, base64url without padding) is a valid
    /// RS256 signature of `signing_input` (the first two segments and their dot). Malformed
    /// signature encodings are `false`, and so are signing inputs jwt-simple cannot verify
    /// (see the module documentation).
    pub fn verify(&self, signing_input: &[u8], signature_b64: &str) -> bool {
        jwt_simple_verify::verify(&self.key, signing_input, signature_b64)
    }
}

/// jwt-simple only verifies whole tokens, and after the signature it parses and checks claims
/// of its own. This wrapper turns that into a pure signature check:
///
/// 1. everything jwt-simple checks *before* the signature is checked here first, with jwt-simple's
///    own code where it is public (`Token::decode_metadata` parses the header exactly as
///    verification does), so an error that is not `JWTError::InvalidSignature` cannot come
///    from the header or the signature encoding;
/// 2. the options switch off every claim rule jwt-simple can switch off (issuer, audience,
///    subject, nonce, `iat`/`nbf`, token size), and pin the time at 0 so its always-on `exp`
///    rule holds for every `exp` (its 8192-byte header limit stays, and `decode_metadata`
///    applies the same one);
/// 3. what can still fail after the signature is decoding the payload (base64 or JSON, e.g.
///    an `exp` that is a string): those errors mean "signature valid, claims unreadable to
///    jwt-simple", and ztgate's own claim checks decide. Any other error is `false`.
#[cfg(feature = "jwt_simple")]
mod jwt_simple_verify {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jwt_simple::JWTError;
    use jwt_simple::algorithms::{RS256PublicKey, RSAPublicKeyLike};
    use jwt_simple::claims::NoCustomClaims;
    use jwt_simple::common::VerificationOptions;
    use jwt_simple::reexports::{coarsetime, ct_codecs, serde_json};
    use jwt_simple::token::Token;

    pub(super) fn verify(key: &RS256PublicKey, signing_input: &[u8], signature_b64: &str) -> bool {
        let Ok(signing_input) = std::str::from_utf8(signing_input) else { return false };
        let Some((header_b64, _payload_b64)) = signing_input.split_once('.') else { return false };
        if signing_input.matches('.').count() != 1 {
            return false;
        }
        // The same strict base64url as the jsonwebtoken backend (no padding, no non-canonical
        // trailing bits), then the decoder jwt-simple itself will use, so that neither can fail
        // later with an error that would be mistaken for one after the signature.
        if URL_SAFE_NO_PAD.decode(signature_b64).is_err() {
            return false;
        }
        use ct_codecs::Decoder as _;
        if ct_codecs::Base64UrlSafeNoPadding::decode_to_vec(signature_b64, None).is_err() {
            return false;
        }
        let token = format!("{signing_input}.{signature_b64}");
        let Ok(metadata) = Token::decode_metadata(&token) else { return false };
        if metadata.algorithm() != "RS256" || metadata.critical().is_some_and(|c| !c.is_empty()) {
            return false;
        }
        if metadata.signature_type().is_some_and(|t| {
            let t = t.to_uppercase();
            t != "JWT" && !t.ends_with("+JWT")
        }) {
            return false;
        }
        // A `salt` member is decoded before the signature; its errors would be ambiguous.
        let header_has_salt = ct_codecs::Base64UrlSafeNoPadding::decode_to_vec(header_b64, None)
            .ok()
            .and_then(|h| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&h).ok())
            .is_none_or(|h| h.contains_key("salt"));
        if header_has_salt {
            return false;
        }
        let options = VerificationOptions {
            accept_future: true,
            artificial_time: Some(coarsetime::UnixTimeStamp::from_secs(0)),
            time_tolerance: Some(coarsetime::Duration::from_secs(0)),
            max_token_length: None,
            max_header_length: None,
            ..VerificationOptions::default()
        };
        match key.verify_token::<NoCustomClaims>(&token, Some(options)) {
            Ok(_) => true,
            Err(e) => {
                if matches!(e.downcast_ref::<JWTError>(), Some(JWTError::InvalidSignature)) {
                    return false;
                }
                // Only the payload is decoded with these after the checks above passed.
                e.downcast_ref::<serde_json::Error>().is_some()
                    || e.downcast_ref::<ct_codecs::Error>().is_some()
            }
        }
    }
}

/// RS256 through WebCrypto in a Workers isolate.
///
/// `crypto.subtle.verify` runs in the runtime's native crypto, against about 265 µs per verify
/// for the pure-Rust RSA natively (more in wasm). The key is imported once per isolate (as a
/// JWK: `kty`, `n`, `e`, `alg: RS256`, usage `verify` only) and kept with the key set.
#[cfg(all(feature = "workers", target_arch = "wasm32"))]
mod webcrypto {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use js_sys::{Array, Object, Reflect};
    use wasm_bindgen::{JsCast, JsValue};
    use wasm_bindgen_futures::JsFuture;
    use web_sys::{CryptoKey, SubtleCrypto};
    use worker::send::SendWrapper;

    /// Off: every RS256 check takes the pure-Rust path (for comparing the two; see
    /// `ztgate::workers::set_webcrypto`).
    static DISABLED: AtomicBool = AtomicBool::new(false);

    pub(crate) fn set_enabled(enabled: bool) {
        DISABLED.store(!enabled, Ordering::Relaxed);
    }

    pub(super) struct WebKey {
        n: String,
        e: String,
        /// Imported on first use; a Workers isolate runs one thread, so the wrapper's
        /// `Send` holds.
        imported: Mutex<Option<SendWrapper<CryptoKey>>>,
    }

    impl WebKey {
        pub(super) fn new(n: &[u8], e: &[u8]) -> Self {
            Self { n: URL_SAFE_NO_PAD.encode(n), e: URL_SAFE_NO_PAD.encode(e), imported: Mutex::new(None) }
        }

        /// `Some(valid)` from WebCrypto, or `None` when WebCrypto is off or unavailable.
        pub(super) async fn verify(&self, signing_input: &[u8], signature_b64: &str) -> Option<bool> {
            if DISABLED.load(Ordering::Relaxed) {
                return None;
            }
            let subtle = subtle()?;
            // Same strict base64url as the pure-Rust path: a malformed signature is invalid.
            let Ok(signature) = URL_SAFE_NO_PAD.decode(signature_b64) else { return Some(false) };
            let key = self.key(&subtle).await?;
            let promise = subtle
                .verify_with_object_and_u8_array_and_u8_array(&algorithm(), &key, &signature, signing_input)
                .ok()?;
            match JsFuture::from(promise).await {
                Ok(valid) => Some(valid.as_bool() == Some(true)),
                // A rejected verify (e.g. a signature of the wrong length on some runtimes)
                // is an invalid signature, not a reason to try another engine.
                Err(_) => Some(false),
            }
        }

        async fn key(&self, subtle: &SubtleCrypto) -> Option<CryptoKey> {
            if let Some(key) = self.imported.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                return Some(key.0.clone());
            }
            let jwk = Object::new();
            for (name, value) in [("kty", "RSA"), ("n", &self.n), ("e", &self.e), ("alg", "RS256")] {
                Reflect::set(&jwk, &name.into(), &value.into()).ok()?;
            }
            let usages = Array::of1(&JsValue::from_str("verify"));
            let promise = subtle.import_key_with_object("jwk", &jwk, &algorithm(), false, &usages).ok()?;
            let key: CryptoKey = JsFuture::from(promise).await.ok()?.dyn_into().ok()?;
            *self.imported.lock().unwrap_or_else(|p| p.into_inner()) = Some(SendWrapper(key.clone()));
            Some(key)
        }
    }

    /// `{ name: "RSASSA-PKCS1-v1_5", hash: { name: "SHA-256" } }`
    fn algorithm() -> Object {
        let hash = Object::new();
        let _ = Reflect::set(&hash, &"name".into(), &"SHA-256".into());
        let algorithm = Object::new();
        let _ = Reflect::set(&algorithm, &"name".into(), &"RSASSA-PKCS1-v1_5".into());
        let _ = Reflect::set(&algorithm, &"hash".into(), &hash);
        algorithm
    }

    /// `globalThis.crypto.subtle`, read without any call that could throw into a panic.
    fn subtle() -> Option<SubtleCrypto> {
        let crypto = Reflect::get(&js_sys::global(), &"crypto".into()).ok().filter(JsValue::is_object)?;
        let subtle = Reflect::get(&crypto, &"subtle".into()).ok().filter(JsValue::is_object)?;
        Some(subtle.unchecked_into())
    }
}

#[cfg(all(feature = "workers", target_arch = "wasm32"))]
pub(crate) use webcrypto::set_enabled as set_webcrypto_enabled;
