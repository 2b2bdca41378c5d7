//! The Workers request adapter: a `worker::Request` → the request layer's facts (the client
//! certificate from `request.cf.tlsClientAuth`) → the one pipeline.
//!
//! The facts, limits and refusals are the native ones, plus two Workers rules: at most
//! [`MAX_HEADERS`] headers are copied (a request with more is refused, 431), and the client
//! certificate is the edge's own word from the raw `cf` object (workers-rs does not expose
//! `certRevoked`, and its getters panic on a missing field; a panic resets the isolate). No `cf`
//! or no `tlsClientAuth` means "no client certificate"; client-sent `cf-cert-*` headers are never
//! read here.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use js_sys::Reflect;
use wasm_bindgen::JsValue;

use crate::error::Rejection;
use crate::gate::SelectGate;
use crate::gate::pipeline::authenticate;
use crate::principal::{Principal, Verified};
use crate::request::{ClientCertFacts, RequestError, RequestFacts, RequestLimits};

/// Most request headers copied into the facts; a request with more is refused (431).
pub const MAX_HEADERS: usize = 256;

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
