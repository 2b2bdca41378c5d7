//! Cloudflare Workers: the same gates, compiled to `wasm32-unknown-unknown` with workers-rs
//! (feature `workers`).
//!
//! What changes at the edge, and what this module provides for it:
//! - **JWKS over the Workers fetch API**: [`WorkersFetcher`] (the `GateBuilder` default in a
//!   Workers build), bounded like the native fetcher
//!   (timeout through an `AbortController`, size cap while streaming, no redirects, 200 + JSON).
//!   The cache is the same [`JwksCache`](crate::identity::JwksCache) with the same semantics; its
//!   single-flight runs without moka, which panics in an isolate. Keep the [`Gate`] in a
//!   `static` so the keys live as long as the isolate (see the example below).
//! - **Time**: [`SystemClock`](crate::clock::SystemClock) reads `Date.now()` here;
//!   `SystemTime::now()` panics in a Worker.
//! - **RS256 through WebCrypto** (`crypto.subtle.verify`), with the pure-Rust check as the
//!   fallback when WebCrypto is unavailable. [`set_webcrypto`] switches it off, to compare.
//! - **Request facts**: [`request_facts`] reads a `worker::Request`, and the client certificate
//!   from the raw `request.cf.tlsClientAuth` object (workers-rs does not expose `certRevoked`,
//!   and its getters panic on a missing field; a panic resets the isolate). No `cf` or no
//!   `tlsClientAuth` means "no client certificate". Client-sent `cf-cert-*` headers are never
//!   read here: in a Worker the `cf` object is the edge's own word.
//! - **Secrets**: [`WorkerSecret`] (`env.SECRET`) and [`SecretStoreSecret`] (a Secrets Store
//!   binding's `await get()`), both [`SecretSource`]s; wrap in
//!   [`PerRequest`](crate::secrets::PerRequest) to read at most once per request.
//!
//! ```ignore
//! use std::sync::OnceLock;
//! use worker::{Context, Env, Request, event};
//! use ztgate::{AccessConfig, Gate, Policy};
//!
//! static GATE: OnceLock<Gate> = OnceLock::new();
//!
//! #[event(fetch)]
//! async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<http::Response<String>> {
//!     let gate = match GATE.get() {
//!         Some(gate) => gate,
//!         None => {
//!             let team = env.var("ZTGATE_TEAM_DOMAIN")?.to_string();
//!             let config = AccessConfig::new(&team, ["aud-tag"]).map_err(|e| e.to_string())?;
//!             // The JWKS comes from `{team}/cdn-cgi/access/certs` through a WorkersFetcher.
//!             let gate = Gate::builder(config)
//!                 .policy(Policy::new().allow_emails(["alice@example.com"]))
//!                 .build()
//!                 .map_err(|e| e.to_string())?;
//!             GATE.get_or_init(|| gate)
//!         }
//!     };
//!     match ztgate::workers::check(gate, &req).await {
//!         Ok(who) => Ok(http::Response::new(format!("hello {}", who.principal().id()))),
//!         Err(rejection) => Ok(rejection.to_response()),
//!     }
//! }
//! ```
//! `examples/worker/` is a complete Worker with the admin server's routes and configuration.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use futures_core::Stream;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use js_sys::Reflect;
use wasm_bindgen::JsValue;
use worker::send::SendFuture;

use crate::error::{ConfigError, Rejection};
use crate::identity::jwks::{
    BoxFuture, FetchError, FetchedJwks, KeyFetcher, check_fetch_config, parse_max_age,
};
use crate::layer::SelectGate;
use crate::principal::{Principal, Verified};
use crate::request::{ClientCertFacts, RequestFacts, RequestLimits};
use crate::secrets::{Secret, SecretError, SecretFuture, SecretSource};

/// Default timeout for one JWKS fetch (as on native).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default cap on a JWKS response body (as on native).
pub const DEFAULT_MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Most request headers copied into the facts; a request with more is refused (431).
pub const MAX_HEADERS: usize = 256;

/// Fetches the JWKS with the Workers fetch API.
///
/// - timeout (default 5 s) for the whole fetch, body included, enforced with an
///   `AbortController`;
/// - body size cap (default 1 MiB) from `Content-Length` and while streaming;
/// - `redirect: "manual"` (a 3xx is a failed fetch); only `200` with a JSON `Content-Type`;
/// - `https://` only, except loopback hosts for local development and tests.
#[derive(Clone)]
pub struct WorkersFetcher {
    url: worker::Url,
    timeout: Duration,
    max_bytes: usize,
}

impl fmt::Debug for WorkersFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkersFetcher")
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .field("max_bytes", &self.max_bytes)
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
        let parsed = worker::Url::parse(url)
            .map_err(|e| ConfigError::new("certs_url", format!("{url:?} is not a URL: {e}")))?;
        check_fetch_config(parsed.as_str(), parsed.scheme(), parsed.host_str(), timeout, max_bytes)?;
        Ok(Self { url: parsed, timeout, max_bytes })
    }

    async fn fetch_bounded(&self) -> Result<FetchedJwks, FetchError> {
        let controller = worker::AbortController::default();
        let signal = controller.signal();
        let work = pin!(self.fetch_once(&signal));
        let timer = pin!(worker::Delay::from(self.timeout));
        let outcome = race(work, timer).await;
        if outcome.is_none() {
            // Stops the request and the body stream on the runtime's side too.
            controller.abort();
        }
        outcome.unwrap_or(Err(FetchError::Timeout))
    }

    async fn fetch_once(&self, signal: &worker::AbortSignal) -> Result<FetchedJwks, FetchError> {
        let mut init = worker::RequestInit::new();
        init.with_method(worker::Method::Get).with_redirect(worker::RequestRedirect::Manual);
        let headers = worker::Headers::new();
        headers.set("accept", "application/json").map_err(network)?;
        init.with_headers(headers);
        let request = worker::Request::new_with_init(self.url.as_str(), &init).map_err(network)?;
        let mut response = worker::Fetch::Request(request).send_with_signal(signal).await.map_err(network)?;
        let status = response.status_code();
        if status != 200 {
            return Err(FetchError::Status(status));
        }
        let content_type = response.headers().get("content-type").ok().flatten().unwrap_or_default();
        let media_type = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if media_type != "application/json" && !media_type.ends_with("+json") {
            return Err(FetchError::ContentType(content_type.chars().take(64).collect()));
        }
        let limit = self.max_bytes;
        let declared = response.headers().get("content-length").ok().flatten();
        if declared.and_then(|v| v.trim().parse::<u64>().ok()).is_some_and(|n| n > limit as u64) {
            return Err(FetchError::TooLarge { limit });
        }
        let max_age = response.headers().get("cache-control").ok().flatten().and_then(|v| parse_max_age(&v));
        let mut stream = response.stream().map_err(network)?;
        let mut body = Vec::new();
        while let Some(chunk) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut stream).poll_next(cx)).await
        {
            let chunk = chunk.map_err(network)?;
            if body.len().saturating_add(chunk.len()) > limit {
                return Err(FetchError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(FetchedJwks { body, max_age })
    }
}

impl KeyFetcher for WorkersFetcher {
    fn fetch(&self) -> BoxFuture<'_, Result<FetchedJwks, FetchError>> {
        // JS futures are not `Send`; an isolate runs one thread, so nothing crosses threads.
        Box::pin(SendFuture::new(self.fetch_bounded()))
    }
}

fn network(e: impl fmt::Display) -> FetchError {
    FetchError::Network(e.to_string().chars().take(200).collect())
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

/// How a request waits for a JWKS fetch another request started: 10 ms timers of its own (see
/// `identity::flight` on why not wakers), for at most the fetch timeout plus 2 s.
pub(crate) fn flight_patience() -> crate::identity::flight::Patience<impl Fn() -> SendFuture<worker::Delay>> {
    const POLL: Duration = Duration::from_millis(10);
    let bound = DEFAULT_FETCH_TIMEOUT + Duration::from_secs(2);
    crate::identity::flight::Patience {
        sleep: || SendFuture::new(worker::Delay::from(POLL)),
        max_sleeps: (bound.as_millis() / POLL.as_millis()) as u32,
    }
}

/// Switches RS256 verification through WebCrypto on (the default) or off (pure Rust), for the
/// whole isolate. Only for measuring one against the other: both give the same answers.
pub fn set_webcrypto(enabled: bool) {
    crate::identity::backend::set_webcrypto_enabled(enabled);
}

/// The request layer for a `worker::Request`: the same facts, limits and refusals as
/// [`RequestFacts::extract`] on native, plus the client certificate from `request.cf`.
pub fn request_facts(req: &worker::Request, limits: &RequestLimits) -> Result<RequestFacts, Rejection> {
    let refuse = |e: crate::request::RequestError| {
        tracing::info!(layer = "request", outcome = "refused", reason = %e);
        Rejection::from(e)
    };
    let method = method_of(req)?;
    let url = req.url().map_err(|_| malformed("request URL"))?;
    let mut headers = HeaderMap::new();
    for (i, (name, value)) in req.headers().entries().enumerate() {
        if i >= MAX_HEADERS {
            return Err(refuse(crate::request::RequestError::HeaderTooLarge {
                header: "header count",
                limit: MAX_HEADERS,
            }));
        }
        // The runtime only hands over valid header names and values; anything else is dropped
        // rather than guessed at.
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value))
        {
            headers.append(name, value);
        }
    }
    let client_cert = client_cert(req);
    let facts = RequestFacts::from_parts_with_query(&method, url.path(), url.query(), &headers, limits)
        .map_err(refuse)?;
    Ok(facts.with_client_cert(client_cert))
}

/// Runs the gate `selector` picks for this request (deny by default: no gate is 403
/// `no_policy`), on the facts of [`request_facts`].
pub async fn check<G: SelectGate>(
    selector: &G,
    req: &worker::Request,
) -> Result<Verified<Principal<G::Claims>>, Rejection>
where
    G::Claims: serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let method = method_of(req)?;
    let path = req.path();
    let Some(gate) = selector.select(&method, &path) else {
        tracing::warn!(layer = "identity", outcome = "no_policy", %method);
        return Err(Rejection::NoPolicy);
    };
    let facts = request_facts(req, gate.limits())?;
    gate.check_facts(&facts).await
}

fn method_of(req: &worker::Request) -> Result<Method, Rejection> {
    Method::from_bytes(req.method().as_ref().as_bytes()).map_err(|_| malformed("request method"))
}

/// The runtime parsed the request already; failing again here is refused, never guessed at.
fn malformed(what: &'static str) -> Rejection {
    Rejection::from(crate::request::RequestError::NotText { header: what })
}

/// The `tlsClientAuth` fields ztgate reads (all strings in the Workers runtime).
const TLS_FIELDS: [&str; 7] = [
    "certPresented",
    "certVerified",
    "certRevoked",
    "certFingerprintSHA256",
    "certSubjectDN",
    "certIssuerDN",
    "certSerial",
];

/// The client certificate as the edge reports it in `request.cf.tlsClientAuth`, read from the
/// raw object. `None` when there is no `cf` or no `tlsClientAuth` (not an mTLS hostname, or a
/// local request): treated as "no client certificate". Never panics on odd values: a field
/// that is missing or not a string counts as absent.
pub fn client_cert(req: &worker::Request) -> Option<ClientCertFacts> {
    let request: &JsValue = req.inner().as_ref();
    let cf = Reflect::get(request, &"cf".into()).ok().filter(JsValue::is_object)?;
    let auth = Reflect::get(&cf, &"tlsClientAuth".into()).ok().filter(JsValue::is_object)?;
    let fields: HashMap<&str, String> = TLS_FIELDS
        .iter()
        .filter_map(|&name| {
            let value = Reflect::get(&auth, &name.into()).ok()?;
            // Bounded before it is copied anywhere else (the facts cut to 256 bytes again).
            value.as_string().filter(|v| v.len() <= 4096).map(|v| (name, v))
        })
        .collect();
    Some(ClientCertFacts::from_tls_client_auth(|name| fields.get(name).map(String::as_str)))
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
