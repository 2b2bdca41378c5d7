//! The Workers request adapter: a `worker::Request` → the request layer's facts (the client
//! certificate from `request.cf.tlsClientAuth`) → the one pipeline.
//!
//! The facts, limits and refusals are the native ones, plus two Workers rules: at most
//! [`MAX_HEADERS`] headers are copied (a request with more is refused, 431), and the client
//! certificate is the edge's own word from the raw `cf` object (workers-rs does not expose
//! `certRevoked`, and its getters panic on a missing field; a panic resets the isolate). No `cf`
//! or no `tlsClientAuth` means "no client certificate"; client-sent `cf-cert-*` headers are never
//! read here.
//!
//! Two event sources besides `fetch` carry an identity without an HTTP request:
//! - a **cron trigger**: [`scheduled`] turns the runtime's `ScheduledEvent` into a
//!   [`Principal::Scheduled`], the platform itself; the event object is the only proof there is,
//!   and only a scheduled handler is handed one;
//! - a **Workers RPC call** over a service binding: [`check_rpc`] runs the caller's credential
//!   (an HMAC-signed token or an Access JWT) through the same pipeline and route table as a
//!   request, at the pseudo-route `RPC /rpc/<method>`.

use std::collections::HashMap;
use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use js_sys::Reflect;
use wasm_bindgen::JsValue;

use crate::error::Rejection;
use crate::gate::SelectGate;
use crate::gate::pipeline::authenticate;
use crate::metrics::{self, Mechanisms};
use crate::principal::{Principal, Proof, Verified};
use crate::request::{ClientCertFacts, RequestError, RequestFacts, RequestLimits};

/// Most request headers copied into the facts; a request with more is refused (431).
pub const MAX_HEADERS: usize = 256;

/// The mechanism named in the proof (and the logs) of a [`Principal::Scheduled`].
const SCHEDULED: &str = "scheduled";

/// Proves that the platform itself is running a cron trigger: the `ScheduledEvent` the runtime
/// passes to a `#[event(scheduled)]` handler becomes a [`Verified`] [`Principal::Scheduled`]
/// with the trigger's cron expression, so that storage functions reached from a cron job take
/// a `&Verified<Principal>` like every other caller's, and can tell it apart
/// ([`Principal::as_scheduled`]).
///
/// There is no credential to check: the runtime calls a scheduled handler only for a trigger
/// configured on the Worker (`[triggers] crons` in `wrangler.toml`), and no HTTP request
/// reaches it (`wrangler dev --test-scheduled` opens `/__scheduled` locally, for tests; the
/// edge has no such route). What is checked is the cron string, which becomes part of the
/// principal's id and of logs: 1 to [`Principal::MAX_CRON_LEN`] bytes of printable ASCII,
/// else `401 invalid_credential` (mechanism `scheduled`), logged like every refusal.
///
/// ```ignore
/// #[event(scheduled)]
/// async fn scheduled(event: worker::ScheduledEvent, env: worker::Env, _ctx: worker::ScheduleContext) {
///     let Ok(platform) = ztgate::workers::scheduled(&event) else { return };
///     store::record_maintenance(&env, &platform).await;
/// }
/// ```
pub fn scheduled(event: &worker::ScheduledEvent) -> Result<Verified<Principal>, Rejection> {
    let cron = event.cron();
    let refuse = |reason: &'static str| {
        tracing::warn!(
            layer = "identity",
            outcome = "refused",
            via = SCHEDULED,
            reason,
            cron_bytes = cron.len()
        );
        let rejection = Rejection::InvalidCredential { mechanism: SCHEDULED, reason };
        metrics::decision(Mechanisms::Named(SCHEDULED), "refused", rejection.code(), 0.0);
        rejection
    };
    if cron.is_empty() {
        return Err(refuse("the event has no cron expression"));
    }
    if cron.len() > Principal::MAX_CRON_LEN {
        return Err(refuse("the cron expression is longer than 128 bytes"));
    }
    if !cron.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(refuse("the cron expression is not printable ASCII"));
    }
    let principal = Principal::Scheduled { cron };
    let proof = Proof { mechanism: SCHEDULED, principal_id: principal.id() };
    tracing::info!(layer = "identity", outcome = "verified", principal = ?proof.principal_id, via = ?[SCHEDULED]);
    metrics::decision(Mechanisms::Proofs(std::slice::from_ref(&proof)), "verified", "ok", 0.0);
    Ok(Verified::new(principal, vec![proof]))
}

/// The method of an RPC call's pseudo-request: declare RPC routes with it
/// (`RoutePolicies::route(RPC_METHOD, "/rpc/record_note", ..)`), so no rule written for HTTP
/// methods covers an RPC method by accident.
pub const RPC_METHOD: &str = "RPC";

/// The query parameter an RPC call's signed token is read from: a `SignedTokenAuth` for RPC
/// reads `TokenSource::Query(RPC_TOKEN_PARAM.into())`.
pub const RPC_TOKEN_PARAM: &str = "token";

/// The longest RPC method name [`check_rpc`] takes (`[A-Za-z0-9_]`).
const MAX_RPC_METHOD_LEN: usize = 64;

/// What the caller of a Workers RPC method presents. RPC over a service binding carries no
/// HTTP request, so the caller passes its credential as an argument and [`check_rpc`] puts it
/// where the mechanisms read it. `Debug` never shows the credential.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum RpcCredential<'a> {
    /// An HMAC-signed token (`identity::hmac_token`), minted for the purpose the route's
    /// `SignedTokenAuth` expects (e.g. `rpc:record_note`); read from the query parameter
    /// [`RPC_TOKEN_PARAM`].
    SignedToken(&'a str),
    /// A Cloudflare Access JWT (a service token's, typically), read as the
    /// `Cf-Access-Jwt-Assertion` header.
    AccessJwt(&'a str),
}

impl fmt::Debug for RpcCredential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SignedToken(_) => f.write_str("SignedToken(<redacted>)"),
            Self::AccessJwt(_) => f.write_str("AccessJwt(<redacted>)"),
        }
    }
}

/// Proves who makes a Workers RPC call: the same pipeline as [`check`] (select the gate, read
/// the facts under the gate's limits, verify, check revocations and the failure budget, log),
/// on a pseudo-request `RPC /rpc/<method>` that carries only `credential`. Declare the route
/// like any other, with [`RPC_METHOD`]; no route is 403 `no_policy`, no credential is 401
/// `missing_credential`. A method name that is not 1 to 64 characters of `[A-Za-z0-9_]` is
/// refused as `no_policy` (no route can name it).
///
/// The pseudo-request has no client IP, so a failure budget counts per credential only.
pub async fn check_rpc<G: SelectGate>(
    selector: &G,
    method: &str,
    credential: Option<RpcCredential<'_>>,
) -> Result<Verified<Principal<G::Claims>>, Rejection>
where
    G::Claims: serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let named = (1..=MAX_RPC_METHOD_LEN).contains(&method.len())
        && method.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !named {
        tracing::warn!(layer = "identity", outcome = "no_policy", via = "rpc", method_bytes = method.len());
        return Err(Rejection::NoPolicy);
    }
    let rpc = Method::from_bytes(RPC_METHOD.as_bytes())
        .map_err(|_| Rejection::from(malformed("request method")))?;
    let path = format!("/rpc/{method}");
    let mut headers = HeaderMap::new();
    let mut query = None;
    match credential {
        None => {}
        Some(RpcCredential::SignedToken(token)) => {
            // Encoded, so that whatever the caller passed reaches the mechanism as sent (and is
            // refused there, logged), never read as a second parameter.
            let encoded: String = worker::url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
            query = Some(format!("{RPC_TOKEN_PARAM}={encoded}"));
        }
        Some(RpcCredential::AccessJwt(jwt)) => {
            let Ok(value) = HeaderValue::from_str(jwt) else {
                tracing::info!(
                    layer = "request",
                    outcome = "refused",
                    via = "rpc",
                    reason = "the Access JWT is not header text"
                );
                return Err(malformed("Cf-Access-Jwt-Assertion").into());
            };
            headers.insert(HeaderName::from_static("cf-access-jwt-assertion"), value);
        }
    }
    authenticate(selector, &rpc, &path, |limits, declared| {
        RequestFacts::read(&rpc, &path, query.as_deref(), &headers, limits, declared)
    })
    .await
}

/// The request layer alone for a `worker::Request`: the same facts, limits and refusals as
/// [`RequestFacts::extract`] on native, plus the client certificate from `request.cf`. Reads no
/// headers declared by mechanisms of your own: [`check`] does, for the gate it selects.
pub fn request_facts(req: &worker::Request, limits: &RequestLimits) -> Result<RequestFacts, Rejection> {
    let (method, url) = method_and_url(req)?;
    read(req, &method, &url, limits, &[]).map_err(Rejection::from)
}

/// Proves who sent `req`: selects the gate (deny by default: no gate is 403 `no_policy`), reads
/// the facts, verifies and logs — the pipeline the Tower layer runs.
pub async fn check<G: SelectGate>(
    selector: &G,
    req: &worker::Request,
) -> Result<Verified<Principal<G::Claims>>, Rejection>
where
    G::Claims: serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (method, url) = method_and_url(req)?;
    authenticate(selector, &method, url.path(), |limits, declared| read(req, &method, &url, limits, declared))
        .await
}

/// The method and URL, parsed once per request (the gate selection and the facts share them).
fn method_and_url(req: &worker::Request) -> Result<(Method, worker::Url), Rejection> {
    let method =
        Method::from_bytes(req.method().as_ref().as_bytes()).map_err(|_| malformed("request method"))?;
    let url = req.url().map_err(|_| malformed("request URL"))?;
    Ok((method, url))
}

fn read(
    req: &worker::Request,
    method: &Method,
    url: &worker::Url,
    limits: &RequestLimits,
    declared: &[HeaderName],
) -> Result<RequestFacts, RequestError> {
    let headers = copy_headers(req)?;
    let facts = RequestFacts::read(method, url.path(), url.query(), &headers, limits, declared)?;
    Ok(facts.with_client_cert(client_cert(req)))
}

/// The request's headers as an [`http::HeaderMap`], with the bound the gate applies: more
/// than [`MAX_HEADERS`] is refused (431), never truncated. Use it where a handler needs the
/// headers itself (a webhook body check, say), so it reads exactly what the gate read.
pub fn headers(req: &worker::Request) -> Result<HeaderMap, Rejection> {
    copy_headers(req).map_err(Rejection::from)
}

fn copy_headers(req: &worker::Request) -> Result<HeaderMap, RequestError> {
    let mut headers = HeaderMap::new();
    for (i, (name, value)) in req.headers().entries().enumerate() {
        if i >= MAX_HEADERS {
            return Err(RequestError::HeaderTooLarge { header: "header count", limit: MAX_HEADERS });
        }
        // The runtime only hands over valid header names and values; anything else is dropped
        // rather than guessed at.
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value))
        {
            headers.append(name, value);
        }
    }
    Ok(headers)
}

/// The runtime parsed the request already; failing again here is refused, never guessed at.
fn malformed(what: &'static str) -> RequestError {
    RequestError::NotText { header: what }
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
