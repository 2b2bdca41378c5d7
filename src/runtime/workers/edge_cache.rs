//! The Workers Cache API (`caches.default`) as a second source of the JWKS, so that a new
//! isolate does not refetch what another isolate of the same data center fetched.
//!
//! - **Key**: a synthetic `GET` request for the certs URL.
//! - **Stored**: a response built here, not the origin's: the body, `Content-Type:
//!   application/json`, `Cache-Control: max-age=<secs>` and `x-ztgate-fetched-at: <unix secs>`
//!   (the Cache API ignores puts with `Set-Cookie`, `private` or `no-store`, and nothing else
//!   of the origin's response is needed). Only a body that parses to at least one usable key is
//!   stored; a response the origin marked `max-age=0`/`no-store`/`no-cache` is not stored; the
//!   max-age is the origin's, at most 1 h (ztgate's default upper clamp), or 10 min without one
//!   (ztgate's default freshness).
//! - **Read**: the cache is one more source of untrusted bytes, so its response passes the same
//!   rules as the network's (200, JSON, size cap declared and while streaming), its body must
//!   parse to a usable key set, and the freshness handed to the JWKS cache is what is *left* of
//!   the stored max-age since `x-ztgate-fetched-at`: an entry without that header, dated ahead
//!   of the clock, or past its max-age is not used, whatever the Cache API's own expiry says.
//! - **Calls**: every JS access goes through `Reflect` (a missing `caches`, or a method that
//!   throws, is an error value, never a panic); the caller bounds the time.

use std::time::Duration;

use js_sys::{Array, Function, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::identity::jwks::KeySet;
use crate::identity::{FetchedJwks, JwksConfig};

/// The header that dates a stored copy (unix seconds of the network fetch).
const FETCHED_AT: &str = "x-ztgate-fetched-at";
/// A copy dated this far ahead of the local clock is refused (isolates' clocks agree far better).
const MAX_CLOCK_AHEAD_SECS: u64 = 60;

/// What a Cache API lookup found.
pub(super) enum Lookup {
    /// A fresh, valid copy; `max_age` is its remaining freshness.
    Hit(FetchedJwks),
    /// No entry for the key.
    Miss,
    /// An entry that is not used: why.
    Unusable(&'static str),
    /// The Cache API failed (missing, threw, rejected): its message, cut to a bound.
    Failed(String),
}

/// Looks the certs URL up in `caches.default` at unix time `now`.
pub(super) async fn lookup(url: &str, max_bytes: usize, now: u64) -> Lookup {
    let found = match lookup_js(url).await {
        Ok(found) => found,
        Err(e) => return Lookup::Failed(describe(&e)),
    };
    if found.is_undefined() || found.is_null() {
        return Lookup::Miss;
    }
    let Ok(response) = found.dyn_into::<web_sys::Response>() else {
        return Lookup::Failed("cache.match did not give a Response".to_owned());
    };
    let mut response = worker::Response::from(response);
    let fetched_at = response.headers().get(FETCHED_AT).ok().flatten();
    let doc = match super::response::read_checked(&mut response, max_bytes).await {
        Ok(doc) => doc,
        Err(_) => return Lookup::Unusable("the stored response breaks the JWKS response rules"),
    };
    let Some(remaining) = remaining_freshness(doc.max_age, fetched_at.as_deref(), now) else {
        return Lookup::Unusable("the stored copy is past its max-age or undated");
    };
    if !has_usable_keys(&doc.body) {
        return Lookup::Unusable("the stored body is not a usable JWKS");
    }
    Lookup::Hit(FetchedJwks { body: doc.body, max_age: Some(remaining), from_shared_cache: true })
}

async fn lookup_js(url: &str) -> Result<JsValue, JsValue> {
    let cache = default_cache()?;
    let key = web_sys::Request::new_with_str(url)?;
    let found = call(&cache, "match", &Array::of1(&key))?;
    JsFuture::from(Promise::resolve(&found)).await
}

/// Starts `cache.put` of `body` for the certs URL, fetched at unix time `now` with the origin's
/// `max_age`. `Ok(None)`: nothing to store (not cacheable, or no usable key).
pub(super) fn put(
    url: &str,
    body: &[u8],
    max_age: Option<Duration>,
    now: u64,
) -> Result<Option<Promise>, String> {
    let Some(max_age) = stored_max_age(max_age) else { return Ok(None) };
    if !has_usable_keys(body) {
        return Ok(None);
    }
    put_js(url, body, max_age, now).map(Some).map_err(|e| describe(&e))
}

fn put_js(url: &str, body: &[u8], max_age: u64, now: u64) -> Result<Promise, JsValue> {
    let cache = default_cache()?;
    let key = web_sys::Request::new_with_str(url)?;
    let headers = web_sys::Headers::new()?;
    headers.set("content-type", "application/json")?;
    headers.set("cache-control", &format!("max-age={max_age}"))?;
    headers.set(FETCHED_AT, &now.to_string())?;
    let init = web_sys::ResponseInit::new();
    init.set_status(200);
    init.set_headers(&headers);
    let mut copy = body.to_vec();
    let response = web_sys::Response::new_with_opt_u8_array_and_init(Some(&mut copy), &init)?;
    let put = call(&cache, "put", &Array::of2(&key, &response))?;
    Ok(Promise::resolve(&put))
}

/// The max-age a copy is stored with: the origin's (at most ztgate's default upper clamp), the
/// default freshness without one, nothing if the origin forbade caching (`max-age=0`,
/// `no-store`, `no-cache`, which `parse_max_age` reads as zero).
fn stored_max_age(origin: Option<Duration>) -> Option<u64> {
    let defaults = JwksConfig::default();
    let secs = origin.unwrap_or(defaults.default_max_age).as_secs().min(defaults.max_max_age.as_secs());
    (secs > 0).then_some(secs)
}

/// What is left of `max_age` for a copy fetched at `fetched_at` (unix seconds) at time `now`:
/// `None` if undated, dated ahead of the clock, or used up.
fn remaining_freshness(max_age: Option<Duration>, fetched_at: Option<&str>, now: u64) -> Option<Duration> {
    let max_age = max_age?.as_secs();
    let fetched_at: u64 = fetched_at?.trim().parse().ok()?;
    if fetched_at > now.saturating_add(MAX_CLOCK_AHEAD_SECS) {
        return None;
    }
    let age = now.saturating_sub(fetched_at);
    max_age.checked_sub(age).filter(|left| *left > 0).map(Duration::from_secs)
}

/// The check the JWKS cache applies to any body: a JWKS document with a usable RS256 key.
fn has_usable_keys(body: &[u8]) -> bool {
    KeySet::parse(body, usize::MAX).is_ok()
}

/// `globalThis.caches.default`, read without any call that could throw into a panic.
fn default_cache() -> Result<JsValue, JsValue> {
    let caches = Reflect::get(&js_sys::global(), &"caches".into())?;
    if !caches.is_object() {
        return Err("no caches in this runtime".into());
    }
    let cache = Reflect::get(&caches, &"default".into())?;
    if !cache.is_object() {
        return Err("no caches.default in this runtime".into());
    }
    Ok(cache)
}

/// `target[method](...args)`, a throw being an `Err`.
fn call(target: &JsValue, method: &str, args: &Array) -> Result<JsValue, JsValue> {
    let function: Function =
        Reflect::get(target, &method.into())?.dyn_into().map_err(|_| JsValue::from_str("not a function"))?;
    Reflect::apply(&function, target, args)
}

/// A JS error's message, cut to a bound (it is logged).
pub(super) fn describe(e: &JsValue) -> String {
    let text = e
        .as_string()
        .or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| "unknown error".to_owned());
    text.chars().take(200).collect()
}

/// Hands `promise` to the runtime's `waitUntil` (imported from `cloudflare:workers`, which
/// every current Workers runtime provides): the invocation lives until it settles, and the
/// request does not wait for it. `false` where there is no such `waitUntil` (an older
/// runtime; the namespace import cannot fail to link) or it threw (no request context).
pub(super) fn in_background(promise: &Promise) -> bool {
    background_js(promise).unwrap_or(false)
}

#[wasm_bindgen::prelude::wasm_bindgen(inline_js = r#"
import * as workers from "cloudflare:workers";
export function ztgate_in_background(promise) {
  const waitUntil = workers.waitUntil;
  if (typeof waitUntil !== "function") return false;
  waitUntil(promise);
  return true;
}
"#)]
extern "C" {
    #[wasm_bindgen(catch, js_name = ztgate_in_background)]
    fn background_js(promise: &Promise) -> Result<bool, JsValue>;
}
