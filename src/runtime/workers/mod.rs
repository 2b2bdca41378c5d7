//! The Workers runtime (feature `workers`, wasm32): the Workers fetch API for the JWKS, with
//! the Cache API as a shared copy for new isolates, a polling single-flight, the JS clock,
//! RS256 through WebCrypto, Worker secrets.
//!
//! Isolates share no memory, so each new one would fetch the JWKS again. [`WorkersFetcher`]
//! therefore answers an isolate's *first* fetch from `caches.default` when a fresh copy is there
//! (keyed by the certs URL, with only what is left of its max-age), and stores every network
//! fetch there for the next isolate; later fetches (a refresh, an unknown `kid` after a key
//! rotation) always go to the network. See [`WorkersFetcher::with_edge_cache`].

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use worker::send::SendFuture;

use super::flight::{Patience, PollingFlight};
use crate::BoxFuture;
use crate::error::ConfigError;
use crate::identity::jwks::{check_fetch_config, network_error};
use crate::identity::ports::{Rs256Engine, SingleFlight};
use crate::identity::turnstile::{self, SiteverifyClient, SiteverifyRequest};
use crate::identity::{
    DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_JWKS_BYTES, FetchError, FetchedJwks, IdentityConfig, IdentityFetcher,
    KeyFetcher,
};
use crate::secrets::{Secret, SecretError, SecretFuture, SecretSource};
use response::read_checked;

mod durable;
mod edge_cache;
mod log;
mod response;
mod webcrypto;

pub use durable::{
    DurableClaims, DurableRateLimiter, DurableReplayGuard, DurableRevocations, DurableState, StateObject,
};
pub use log::ConsoleLog;
pub use webcrypto::set_webcrypto;

/// In Workers, `SystemTime::now()` panics; the JS clock (`Date.now()`, milliseconds) is the
/// wall clock there. Workers only advance it across I/O, which is fine at one-second grain.
/// A point in time, in milliseconds of the JS clock (see `runtime::Stopwatch`; `Instant`
/// panics on `wasm32-unknown-unknown`).
pub(super) type Mark = f64;

pub(super) fn mark() -> Mark {
    js_sys::Date::now()
}

pub(super) fn seconds_since(mark: Mark) -> f64 {
    let elapsed = (js_sys::Date::now() - mark) / 1000.0;
    if elapsed.is_finite() && elapsed > 0.0 { elapsed } else { 0.0 }
}

pub(super) fn unix_now() -> u64 {
    let millis = js_sys::Date::now();
    // NaN, negative or absurd values fail closed (0 = 1970: every token is "not yet valid").
    if millis.is_finite() && millis > 0.0 { (millis / 1000.0) as u64 } else { 0 }
}

pub(super) fn default_identity_fetcher(url: &str) -> Result<Arc<dyn IdentityFetcher>, ConfigError> {
    Ok(Arc::new(WorkersIdentityFetcher::new(url)?))
}

pub(super) fn default_fetcher(url: &str) -> Result<Arc<dyn KeyFetcher>, ConfigError> {
    Ok(Arc::new(WorkersFetcher::new(url)?))
}

pub(super) fn rs256_engine() -> Arc<dyn Rs256Engine> {
    Arc::new(webcrypto::WebCrypto::default())
}

/// Nothing runs in the background in Workers: work started from one request's I/O context is
/// cancelled with it, so the request that finds the keys stale refreshes them inline.
pub(super) fn background() -> Arc<dyn crate::identity::ports::Background> {
    Arc::new(Inline)
}

#[derive(Debug)]
struct Inline;

impl crate::identity::ports::Background for Inline {
    fn spawn(&self, _work: BoxFuture<'static, ()>) -> bool {
        false
    }
}

/// A bounded map per isolate (moka cannot run in Workers), misses shared through the polling
/// single-flight.
pub(super) fn token_store<V>(
    config: &crate::identity::TokenCacheConfig,
) -> Arc<dyn crate::identity::ports::VerifiedTokens<V>>
where
    V: crate::identity::token_cache::CacheValue + Clone + Send + Sync + 'static,
{
    Arc::new(super::bounded::BoundedTokens::new(config.max_bytes(), single_flight()))
}

/// A request waits for a fetch another request started with 10 ms timers of its own (see
/// `runtime::flight` on why not wakers), for at most the fetch timeout plus 2 s.
pub(super) fn single_flight<K, V>() -> Arc<dyn SingleFlight<K, V>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    const POLL: Duration = Duration::from_millis(10);
    let bound = DEFAULT_FETCH_TIMEOUT + Duration::from_secs(2);
    let patience = Patience {
        sleep: || SendFuture::new(worker::Delay::from(POLL)),
        max_sleeps: (bound.as_millis() / POLL.as_millis()) as u32,
    };
    Arc::new(PollingFlight::new(patience))
}

/// Fetches the JWKS with the Workers fetch API.
///
/// - timeout (default 5 s) for the whole fetch, body included, enforced with an
///   `AbortController`;
/// - body size cap (default 1 MiB) from `Content-Length` and while streaming;
/// - `redirect: "manual"` (a 3xx is a failed fetch); only `200` with a JSON `Content-Type`;
/// - `https://` only, except loopback hosts for local development and tests;
/// - **edge cache** (on by default, [`with_edge_cache`](Self::with_edge_cache)): the first
///   fetch of a fetcher (a new isolate) is answered from the Cache API (`caches.default`) when
///   another isolate stored a fresh copy there; that lookup is bounded by a fifth of the
///   timeout (1 s by default, so a miss plus the network fetch still fits the waiters' patience
///   of timeout + 2 s), and any failure of it falls back to the network. Every later fetch
///   goes to the network, so a key rotation is seen at once, and each successful network fetch
///   is stored for the next isolate in the background (the runtime's `waitUntil`; the request
///   does not wait for the write). The stored copy is checked like a network response (status,
///   JSON, size cap, a usable key) and hands on only the rest of its max-age. On `*.workers.dev`
///   the Cache API stores nothing: every lookup is a miss there.
///
/// A clone shares the "first fetch done" state: clones stand for the same isolate's fetcher.
#[derive(Clone)]
pub struct WorkersFetcher {
    url: worker::Url,
    timeout: Duration,
    max_bytes: usize,
    edge_cache: bool,
    /// Set by the first fetch: only that one may be answered from the Cache API.
    first_fetch_done: Arc<AtomicBool>,
}

impl fmt::Debug for WorkersFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkersFetcher")
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .field("max_bytes", &self.max_bytes)
            .field("edge_cache", &self.edge_cache)
            .finish()
    }
}

impl WorkersFetcher {
    /// A fetcher for `url` with the default timeout and size cap.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        Self::with_limits(url, DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_JWKS_BYTES)
    }

    /// A fetcher with explicit limits (both non-zero).
    pub fn with_limits(url: &str, timeout: Duration, max_bytes: usize) -> Result<Self, ConfigError> {
        let Endpoint { url: parsed, timeout, max_bytes } =
            Endpoint::checked("certs_url", url, timeout, max_bytes)?;
        Ok(Self { url: parsed, timeout, max_bytes, edge_cache: true, first_fetch_done: Arc::default() })
    }

    /// Whether the first fetch may be answered from the Cache API, and network fetches are
    /// stored there for new isolates (default `true`). Off: every fetch goes to the network
    /// and the Cache API is never touched.
    #[must_use]
    pub fn with_edge_cache(mut self, enabled: bool) -> Self {
        self.edge_cache = enabled;
        self
    }

    async fn fetch_jwks(&self) -> Result<FetchedJwks, FetchError> {
        let first = !self.first_fetch_done.swap(true, Ordering::AcqRel);
        if self.edge_cache
            && first
            && let Some(doc) = self.read_edge_cache().await
        {
            return Ok(doc);
        }
        let doc = self.fetch_bounded().await?;
        if self.edge_cache {
            self.store_in_edge_cache(&doc).await;
        }
        Ok(doc)
    }

    /// A fresh, valid copy from the Cache API, or `None` (one `tracing` event says why).
    async fn read_edge_cache(&self) -> Option<FetchedJwks> {
        use edge_cache::Lookup;
        let work = pin!(edge_cache::lookup(self.url.as_str(), self.max_bytes, unix_now()));
        let timer = pin!(worker::Delay::from(self.edge_cache_timeout()));
        match race(work, timer).await {
            Some(Lookup::Hit(doc)) => {
                let max_age_secs = doc.max_age.map(|d| d.as_secs());
                tracing::debug!(layer = "identity", outcome = "jwks_edge_cache_hit", max_age_secs = ?max_age_secs);
                Some(doc)
            }
            Some(Lookup::Miss) => {
                tracing::debug!(layer = "identity", outcome = "jwks_edge_cache_miss");
                None
            }
            Some(Lookup::Unusable(why)) => {
                tracing::debug!(layer = "identity", outcome = "jwks_edge_cache_unusable", reason = ?why);
                None
            }
            Some(Lookup::Failed(error)) => {
                tracing::warn!(layer = "identity", outcome = "jwks_edge_cache_failed", error = ?error);
                None
            }
            None => {
                tracing::warn!(layer = "identity", outcome = "jwks_edge_cache_failed", error = ?"timeout");
                None
            }
        }
    }

    /// Stores a network fetch for new isolates: in the background where the runtime has a
    /// global `waitUntil`, else waited for here within the edge-cache bound. Never an error.
    async fn store_in_edge_cache(&self, doc: &FetchedJwks) {
        let put = match edge_cache::put(self.url.as_str(), &doc.body, doc.max_age, unix_now()) {
            Ok(Some(put)) => put,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(layer = "identity", outcome = "jwks_edge_cache_put_failed", error = ?error);
                return;
            }
        };
        let logged = wasm_bindgen_futures::future_to_promise(async move {
            if let Err(e) = wasm_bindgen_futures::JsFuture::from(put).await {
                let error = edge_cache::describe(&e);
                tracing::warn!(layer = "identity", outcome = "jwks_edge_cache_put_failed", error = ?error);
            }
            Ok(wasm_bindgen::JsValue::UNDEFINED)
        });
        if !edge_cache::in_background(&logged) {
            let wait = pin!(wasm_bindgen_futures::JsFuture::from(logged));
            let timer = pin!(worker::Delay::from(self.edge_cache_timeout()));
            let _ = race(wait, timer).await;
        }
    }

    fn edge_cache_timeout(&self) -> Duration {
        self.timeout / 5
    }

    async fn fetch_bounded(&self) -> Result<FetchedJwks, FetchError> {
        bounded_fetch(&self.url, None, self.timeout, self.max_bytes).await
    }
}

/// One GET under the fetch rules, aborted at `timeout`, with `cookie` if given.
async fn bounded_fetch(
    url: &worker::Url,
    cookie: Option<&str>,
    timeout: Duration,
    max_bytes: usize,
) -> Result<FetchedJwks, FetchError> {
    bounded_send(url, Outgoing::Get { cookie }, timeout, max_bytes).await
}

/// What one bounded fetch sends.
#[derive(Clone, Copy)]
enum Outgoing<'a> {
    /// A GET, with a `Cookie` header if given.
    Get { cookie: Option<&'a str> },
    /// A POST of an `application/x-www-form-urlencoded` body.
    PostForm { body: &'a [u8] },
}

/// One request under the fetch rules, aborted at `timeout`.
async fn bounded_send(
    url: &worker::Url,
    outgoing: Outgoing<'_>,
    timeout: Duration,
    max_bytes: usize,
) -> Result<FetchedJwks, FetchError> {
    let controller = worker::AbortController::default();
    let signal = controller.signal();
    let work = pin!(fetch_once(url, outgoing, max_bytes, &signal));
    let timer = pin!(worker::Delay::from(timeout));
    let outcome = race(work, timer).await;
    if outcome.is_none() {
        // Stops the request and the body stream on the runtime's side too.
        controller.abort();
    }
    outcome.unwrap_or(Err(FetchError::Timeout))
}

async fn fetch_once(
    url: &worker::Url,
    outgoing: Outgoing<'_>,
    max_bytes: usize,
    signal: &worker::AbortSignal,
) -> Result<FetchedJwks, FetchError> {
    let mut init = worker::RequestInit::new();
    init.with_redirect(worker::RequestRedirect::Manual);
    let headers = worker::Headers::new();
    headers.set("accept", "application/json").map_err(network_error)?;
    match outgoing {
        Outgoing::Get { cookie } => {
            init.with_method(worker::Method::Get);
            if let Some(cookie) = cookie {
                headers.set("cookie", cookie).map_err(network_error)?;
            }
        }
        Outgoing::PostForm { body } => {
            init.with_method(worker::Method::Post);
            headers.set("content-type", SiteverifyRequest::CONTENT_TYPE).map_err(network_error)?;
            init.with_body(Some(js_sys::Uint8Array::from(body).into()));
        }
    }
    init.with_headers(headers);
    let request = worker::Request::new_with_init(url.as_str(), &init).map_err(network_error)?;
    let mut response =
        worker::Fetch::Request(request).send_with_signal(signal).await.map_err(network_error)?;
    read_checked(&mut response, max_bytes).await
}

/// Fetches a login's Access identity (`{team}/cdn-cgi/access/get-identity`) with the Workers
/// fetch API, the application token as the `CF_Authorization` cookie; bounded like
/// [`WorkersFetcher`] (timeout, 64 KiB cap, no redirects, JSON 200, `https://` except on
/// loopback).
#[derive(Clone)]
pub struct WorkersIdentityFetcher {
    endpoint: Endpoint,
}

impl fmt::Debug for WorkersIdentityFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.endpoint.debug("WorkersIdentityFetcher", f)
    }
}

impl WorkersIdentityFetcher {
    /// A fetcher for `url` with the default timeout and size cap.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        let endpoint =
            Endpoint::checked("identity_url", url, DEFAULT_FETCH_TIMEOUT, IdentityConfig::MAX_BYTES)?;
        Ok(Self { endpoint })
    }
}

/// A URL checked by the fetch rules, with the time and size bounds of each request to it.
#[derive(Clone)]
struct Endpoint {
    url: worker::Url,
    timeout: Duration,
    max_bytes: usize,
}

impl Endpoint {
    /// `url` parsed and checked (`https://` except on loopback, non-zero bounds); errors name
    /// `setting`.
    fn checked(
        setting: &'static str,
        url: &str,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Self, ConfigError> {
        let parsed = worker::Url::parse(url)
            .map_err(|e| ConfigError::new(setting, format!("{url:?} is not a URL: {e}")))?;
        check_fetch_config(setting, parsed.as_str(), parsed.scheme(), parsed.host_str(), timeout, max_bytes)?;
        Ok(Self { url: parsed, timeout, max_bytes })
    }

    /// `Debug` of the client called `name` that holds it.
    fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl IdentityFetcher for WorkersIdentityFetcher {
    fn fetch<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Vec<u8>, FetchError>> {
        Box::pin(SendFuture::new(async move {
            let cookie = format!("CF_Authorization={token}");
            let Endpoint { url, timeout, max_bytes } = &self.endpoint;
            bounded_fetch(url, Some(&cookie), *timeout, *max_bytes).await.map(|doc| doc.body)
        }))
    }
}

impl KeyFetcher for WorkersFetcher {
    fn fetch(&self) -> BoxFuture<'_, Result<FetchedJwks, FetchError>> {
        // JS futures are not `Send`; an isolate runs one thread, so nothing crosses threads.
        Box::pin(SendFuture::new(self.fetch_jwks()))
    }
}

/// Polls `work` and `timer` together: `Some(output)` if the work finished first.
async fn race<T>(
    mut work: std::pin::Pin<&mut impl Future<Output = T>>,
    mut timer: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<T> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(value) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(value));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// A Worker secret (`wrangler secret put NAME`) or plain var, read from the `Env` it was made
/// with. Empty counts as missing.
pub struct WorkerSecret {
    name: String,
    value: Option<Secret>,
}

impl fmt::Debug for WorkerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerSecret").field("name", &self.name).field("set", &self.value.is_some()).finish()
    }
}

impl WorkerSecret {
    /// Reads binding `name` of `env` (a secret or a var): the value is copied once, here.
    pub fn new(env: &worker::Env, name: impl Into<String>) -> Self {
        let name = name.into();
        let value = env
            .secret(&name)
            .or_else(|_| env.var(&name))
            .map(|v| v.to_string())
            .ok()
            .filter(|v| !v.is_empty())
            .map(Secret::from);
        Self { name, value }
    }
}

impl SecretSource for WorkerSecret {
    fn get(&self) -> SecretFuture<'_> {
        let value = self.value.clone().ok_or_else(|| SecretError::Missing(self.name.clone()));
        Box::pin(async move { value })
    }
}

/// A Secrets Store binding: every `get` awaits the store's `get()`. Wrap it in
/// [`PerRequest`](crate::secrets::PerRequest) (once per request) or
/// [`CachedSecret`](crate::secrets::CachedSecret) (once per TTL per isolate).
pub struct SecretStoreSecret {
    binding: String,
    store: Option<worker::send::SendWrapper<worker::SecretStore>>,
}

impl fmt::Debug for SecretStoreSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretStoreSecret").field("binding", &self.binding).finish_non_exhaustive()
    }
}

impl SecretStoreSecret {
    /// The Secrets Store binding `binding` of `env`; a missing binding fails on `get`.
    pub fn new(env: &worker::Env, binding: impl Into<String>) -> Self {
        let binding = binding.into();
        let store = env.secret_store(&binding).ok().map(worker::send::SendWrapper);
        Self { binding, store }
    }
}

impl SecretSource for SecretStoreSecret {
    fn get(&self) -> SecretFuture<'_> {
        Box::pin(SendFuture::new(async move {
            let store = self.store.as_ref().ok_or_else(|| SecretError::Missing(self.binding.clone()))?;
            match store.0.get().await {
                Ok(Some(value)) if !value.is_empty() => Ok(Secret::from(value)),
                Ok(_) => Err(SecretError::Missing(self.binding.clone())),
                Err(e) => Err(SecretError::Unavailable(e.to_string().chars().take(200).collect())),
            }
        }))
    }
}

pub(super) fn siteverify_client(
    url: &str,
    timeout: Duration,
) -> Result<Arc<dyn SiteverifyClient>, ConfigError> {
    Ok(Arc::new(WorkersSiteverify::with_limits(url, timeout, turnstile::MAX_ANSWER_BYTES)?))
}

/// Posts Turnstile tokens to siteverify with the Workers fetch API, for a
/// [`TurnstileVerifier`](crate::identity::turnstile::TurnstileVerifier); bounded like
/// [`WorkersFetcher`] (a timeout enforced with an `AbortController`, default 3 s; a 16 KiB cap
/// declared and while streaming; no redirects; a JSON 200 only; `https://` except on loopback).
#[derive(Clone)]
pub struct WorkersSiteverify {
    endpoint: Endpoint,
}

impl fmt::Debug for WorkersSiteverify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.endpoint.debug("WorkersSiteverify", f)
    }
}

impl WorkersSiteverify {
    /// A client for `url` with the default timeout and size cap
    /// ([`turnstile::DEFAULT_TIMEOUT`], [`turnstile::MAX_ANSWER_BYTES`]).
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        Self::with_limits(url, turnstile::DEFAULT_TIMEOUT, turnstile::MAX_ANSWER_BYTES)
    }

    /// A client with explicit limits (both non-zero); errors name setting `siteverify_url`.
    pub fn with_limits(url: &str, timeout: Duration, max_bytes: usize) -> Result<Self, ConfigError> {
        Ok(Self { endpoint: Endpoint::checked("siteverify_url", url, timeout, max_bytes)? })
    }
}

impl SiteverifyClient for WorkersSiteverify {
    fn siteverify<'a>(
        &'a self,
        request: &'a SiteverifyRequest,
    ) -> BoxFuture<'a, Result<Vec<u8>, FetchError>> {
        Box::pin(SendFuture::new(async move {
            let outgoing = Outgoing::PostForm { body: request.body() };
            let Endpoint { url, timeout, max_bytes } = &self.endpoint;
            bounded_send(url, outgoing, *timeout, *max_bytes).await.map(|answer| answer.body)
        }))
    }
}
