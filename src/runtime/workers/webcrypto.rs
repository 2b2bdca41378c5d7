//! RS256 through WebCrypto in a Workers isolate.
//!
//! `crypto.subtle.verify` runs in the runtime's native crypto, against about 265 µs per verify
//! for the pure-Rust RSA natively (more in wasm). Each key is imported once per isolate (as a
//! JWK: `kty`, `n`, `e`, `alg: RS256`, usage `verify` only) and kept with the key itself
//! ([`Rs256Key`]'s engine state), so it lives exactly as long as the key set holds the key.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use js_sys::{Array, Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{CryptoKey, SubtleCrypto};
use worker::send::{SendFuture, SendWrapper};

use crate::BoxFuture;
use crate::identity::ports::{PureRs256, Rs256Engine};
use crate::identity::rs256::Rs256Key;

/// Off: every RS256 check takes the pure-Rust path (for comparing the two).
static DISABLED: AtomicBool = AtomicBool::new(false);

/// Switches RS256 verification through WebCrypto on (the default) or off (pure Rust), for the
/// whole isolate. Only for measuring one against the other: both give the same answers.
pub fn set_webcrypto(enabled: bool) {
    DISABLED.store(!enabled, Ordering::Relaxed);
}

/// The engine: WebCrypto, or the compiled-in backend when WebCrypto is off or unavailable
/// (never when it says "invalid").
#[derive(Debug, Default)]
pub(super) struct WebCrypto {
    fallback: PureRs256,
}

impl Rs256Engine for WebCrypto {
    fn verify<'a>(
        &'a self,
        key: &'a Rs256Key,
        signing_input: &'a [u8],
        signature_b64: &'a str,
    ) -> BoxFuture<'a, bool> {
        // JS promises are not `Send`; a Workers isolate runs one thread, so nothing crosses one.
        Box::pin(SendFuture::new(async move {
            match verify(key, signing_input, signature_b64).await {
                Some(valid) => valid,
                None => self.fallback.verify(key, signing_input, signature_b64).await,
            }
        }))
    }
}

/// `Some(valid)` from WebCrypto, or `None` when WebCrypto is off or unavailable.
async fn verify(key: &Rs256Key, signing_input: &[u8], signature_b64: &str) -> Option<bool> {
    if DISABLED.load(Ordering::Relaxed) {
        return None;
    }
    let subtle = subtle()?;
    // Same strict base64url as the pure-Rust path: a malformed signature is invalid.
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature_b64) else { return Some(false) };
    let crypto_key = imported(key, &subtle).await?;
    let promise = subtle
        .verify_with_object_and_u8_array_and_u8_array(&algorithm(), &crypto_key, &signature, signing_input)
        .ok()?;
    match JsFuture::from(promise).await {
        Ok(valid) => Some(valid.as_bool() == Some(true)),
        // A rejected verify (e.g. a signature of the wrong length on some runtimes) is an
        // invalid signature, not a reason to try another engine.
        Err(_) => Some(false),
    }
}

/// The key's `CryptoKey`, imported on first use and kept with the key.
async fn imported(key: &Rs256Key, subtle: &SubtleCrypto) -> Option<CryptoKey> {
    if let Some(kept) = key.engine_state().and_then(|s| s.downcast_ref::<SendWrapper<CryptoKey>>()) {
        return Some(kept.0.clone());
    }
    let jwk = Object::new();
    let (n, e) = (URL_SAFE_NO_PAD.encode(key.modulus()), URL_SAFE_NO_PAD.encode(key.exponent()));
    for (name, value) in [("kty", "RSA"), ("n", n.as_str()), ("e", e.as_str()), ("alg", "RS256")] {
        Reflect::set(&jwk, &name.into(), &value.into()).ok()?;
    }
    let usages = Array::of1(&JsValue::from_str("verify"));
    let promise = subtle.import_key_with_object("jwk", &jwk, &algorithm(), false, &usages).ok()?;
    let crypto_key: CryptoKey = JsFuture::from(promise).await.ok()?.dyn_into().ok()?;
    // A Workers isolate runs one thread, so the wrapper's `Send + Sync` hold.
    let state: Arc<dyn Any + Send + Sync> = Arc::new(SendWrapper(crypto_key.clone()));
    key.keep_engine_state(state);
    Some(crypto_key)
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
