//! The async interceptor: identity for every gRPC call, before the service sees it.
//!
//! tonic's own `Interceptor` is synchronous and ztgate's check is async (a JWKS fetch, a
//! shared-state look-up), so this is a small Tower layer on the server instead
//! (`Server::builder().layer(AuthLayer::new(policies))`). Per call it:
//!
//! 1. proves the caller once, in [`prove`]: [`SelectGate::check_call`] with the request's
//!    method, URI and headers (gRPC metadata are HTTP/2 headers), under the gate
//!    [`RoutePolicies`] selects for the method path (`/ztgate.admin.v1.Admin/WhoAmI`);
//! 2. on success, puts the [`Verified<Principal>`] into the request extensions, where the
//!    handlers take it from (`request.extensions()`, see [`caller`]);
//! 3. on refusal, answers the gRPC status of the [`Rejection`] itself ([`status_of`]): the
//!    service is not called.
//!
//! The status message is the rejection's stable code and its message for people
//! (`missing_credential: no credential: ...`), never the credential.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, header};
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};
use tower::{Layer, Service};
use ztgate::{Call, Principal, Rejection, RoutePolicies, SelectGate, Verified};

/// Proves who sent `request`, under the policy `policies` declares for its method path, and
/// gives the request back with the [`Verified<Principal>`] in its extensions.
///
/// The one call into ztgate: [`SelectGate::check_call`] with the request's parts (the pipeline
/// the Tower layer runs: select, read, verify, log and count; a method nobody declared is 403
/// `no_policy`). The check reads the request before its future starts and borrows nothing, so
/// the future can be awaited while the request moves on.
pub async fn prove<B>(
    policies: &RoutePolicies,
    mut request: http::Request<B>,
) -> Result<http::Request<B>, Rejection> {
    let verified = policies.check_call(Call::from_request(&request)).await?;
    request.extensions_mut().insert(verified);
    Ok(request)
}

/// The gRPC status that answers `rejection`, by its HTTP status:
///
/// | HTTP | gRPC |
/// |---|---|
/// | 401 | `UNAUTHENTICATED` |
/// | 403 | `PERMISSION_DENIED` |
/// | 429, 413, 414, 431 (a budget or a size limit) | `RESOURCE_EXHAUSTED` |
/// | 503 | `UNAVAILABLE` |
/// | 400 | `INVALID_ARGUMENT` |
/// | 409 (a replayed message) | `ALREADY_EXISTS` |
/// | anything else | `INTERNAL` |
///
/// The message is `<code>: <message>`, both from the rejection (its message never holds a
/// credential). `Retry-After` and `WWW-Authenticate` become the metadata `retry-after` and
/// `www-authenticate`.
pub fn status_of(rejection: &Rejection) -> Status {
    let code = match rejection.status().as_u16() {
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        413 | 414 | 429 | 431 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        400 => Code::InvalidArgument,
        409 => Code::AlreadyExists,
        _ => Code::Internal,
    };
    let response: http::Response<String> = rejection.to_response();
    let mut headers = HeaderMap::new();
    for name in [header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(value) = response.headers().get(&name) {
            headers.insert(name, value.clone());
        }
    }
    Status::with_metadata(
        code,
        format!("{}: {rejection}", rejection.code()),
        MetadataMap::from_headers(headers),
    )
}

/// The caller the interceptor proved, from a handler's request. Without one (the layer was
/// left out of the server by mistake) the call is refused as `UNAUTHENTICATED`
/// (`identity_layer_missing`), never served.
pub fn caller<M>(request: &tonic::Request<M>) -> Result<&Verified<Principal>, Status> {
    request.extensions().get::<Verified<Principal>>().ok_or_else(|| {
        let missing = Rejection::LayerMissing;
        Status::unauthenticated(format!("{}: {missing}", missing.code()))
    })
}

/// The interceptor as a Tower [`Layer`]: `Server::builder().layer(AuthLayer::new(policies))`.
/// Cheap to clone (the policies are one `Arc`).
#[derive(Clone, Debug)]
pub struct AuthLayer {
    policies: RoutePolicies,
}

impl AuthLayer {
    /// Proves every call under `policies` (one rule per method path; no rule, no call).
    pub fn new(policies: RoutePolicies) -> Self {
        Self { policies }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated { policies: self.policies.clone(), inner }
    }
}

/// The service [`AuthLayer`] makes: identity first, then `S` with the proof in the request.
#[derive(Clone, Debug)]
pub struct Authenticated<S> {
    policies: RoutePolicies,
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Authenticated<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Call the service that was polled ready; a fresh clone waits for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let policies = self.policies.clone();
        Box::pin(async move {
            match prove(&policies, request).await {
                Ok(proven) => inner.call(proven).await,
                Err(rejection) => Ok(status_of(&rejection).into_http()),
            }
        })
    }
}
