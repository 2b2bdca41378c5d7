//! The discovery document and the JWKS as a Tower service: what a cloud fetches to verify the
//! workload's tokens.

use std::convert::Infallible;
use std::fmt;
use std::task::{Context, Poll};

use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use tower_service::Service;

use super::issuer::{DISCOVERY_PATH, JWKS_PATH, WorkloadIssuer};
use crate::BoxFuture;

/// The discovery document changes only with the configuration.
const DISCOVERY_CACHE: &str = "public, max-age=3600";
/// The JWKS changes with a rotation: verifiers should see a new key within minutes.
const JWKS_CACHE: &str = "public, max-age=300";
/// The longest a request waits for the key sources when the JWKS is (re)built; then 503.
const JWKS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Document {
    Discovery,
    Jwks,
}

/// A Tower [`Service`] answering `GET /.well-known/openid-configuration` and
/// `GET /.well-known/jwks.json` for a [`WorkloadIssuer`]. Build it with
/// [`WorkloadIssuer::discovery_service`]; cheap to clone.
///
/// It answers two paths and nothing else:
///
/// | request | answer |
/// |---|---|
/// | `GET {path}/.well-known/openid-configuration` | 200, the discovery document, `Cache-Control: public, max-age=3600` |
/// | `GET {path}/.well-known/jwks.json` | 200, the JWKS, `Cache-Control: public, max-age=300`; 503 `keys_unavailable` with `Retry-After` when the signing key cannot be read (or its source does not answer within 5 s) |
/// | another method on those paths | 405 with `Allow: GET` |
/// | any other path | 404 |
///
/// `{path}` is the issuer URL's path (empty for an origin such as `https://id.example.com`).
/// Each document is also answered without it, so the service works both where it sees the
/// whole path (plain hyper, axum's `route_service`) and where a router stripped the issuer's
/// path (axum's `nest_service("/workload", ..)` for an issuer `https://host/workload`).
/// Bodies are JSON (`application/json`), with `X-Content-Type-Options: nosniff`.
///
/// ```
/// # use std::sync::Arc;
/// # use ztgate::clock::SystemClock;
/// # use ztgate::secrets::EnvSecret;
/// # use ztgate::workload::{Algorithm, IssuerConfig, WorkloadIssuer};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let config = IssuerConfig::new("https://id.example.com", "svc", ["sts.amazonaws.com"])?;
/// # let issuer = WorkloadIssuer::new(config, Algorithm::Es256, EnvSecret::new("KEY"), Arc::new(SystemClock));
/// let app: axum::Router = axum::Router::new()
///    .route_service("/.well-known/openid-configuration", issuer.discovery_service())
///    .route_service("/.well-known/jwks.json", issuer.discovery_service());
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DiscoveryService {
    issuer: WorkloadIssuer,
}

impl fmt::Debug for DiscoveryService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoveryService").field("issuer", &self.issuer.config().issuer()).finish()
    }
}

impl WorkloadIssuer {
    /// The Tower service that answers this issuer's discovery document and JWKS.
    pub fn discovery_service(&self) -> DiscoveryService {
        DiscoveryService { issuer: self.clone() }
    }
}

impl DiscoveryService {
    fn document(&self, path: &str) -> Option<Document> {
        let prefix = self.issuer.config().path();
        let under = |suffix: &str| {
            path == suffix
                || path.strip_prefix(prefix).is_some_and(|rest| !prefix.is_empty() && rest == suffix)
        };
        if under(DISCOVERY_PATH) {
            Some(Document::Discovery)
        } else if under(JWKS_PATH) {
            Some(Document::Jwks)
        } else {
            None
        }
    }
}

impl<B> Service<Request<B>> for DiscoveryService {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(document) = self.document(request.uri().path()) else {
            return Box::pin(std::future::ready(Ok(error(StatusCode::NOT_FOUND, "not_found"))));
        };
        if request.method() != Method::GET {
            let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
            return Box::pin(std::future::ready(Ok(response)));
        }
        let issuer = self.issuer.clone();
        Box::pin(async move {
            Ok(match document {
                Document::Discovery => json(issuer.discovery_document().to_owned(), DISCOVERY_CACHE),
                Document::Jwks => match tokio::time::timeout(JWKS_TIMEOUT, issuer.jwks_document()).await {
                    Ok(Ok(jwks)) => json(jwks.to_string(), JWKS_CACHE),
                    failed => {
                        let reason = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "the key sources did not answer in time".to_owned(),
                        };
                        tracing::warn!(layer = "workload", outcome = "jwks_unavailable", error = ?reason);
                        let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "keys_unavailable");
                        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("5"));
                        response
                    }
                },
            })
        })
    }
}

fn json(body: String, cache_control: &'static str) -> Response<String> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

fn error(status: StatusCode, code: &'static str) -> Response<String> {
    let mut response = json(format!("{{\"code\":\"{code}\"}}"), "no-store");
    *response.status_mut() = status;
    response
}
