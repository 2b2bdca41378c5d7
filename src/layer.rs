//! The Tower layer: [`Gate`] as middleware.
//!
//! The [`IdentityService`] runs the gate before the inner service. On success it inserts the
//! [`Verified<Principal<C>>`](crate::Verified) into the request extensions and calls the inner
//! service; on failure it answers with the [`Rejection`](crate::Rejection)'s response and the
//! inner service never sees the request.
//!
//! ```
//! use tower::{ServiceBuilder, service_fn};
//! use ztgate::{AccessConfig, Gate, Policy, Principal, Verified};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gate = Gate::builder(AccessConfig::new("https://acme.cloudflareaccess.com", ["aud-tag"])?)
//!     .policy(Policy::new().allow_emails(["alice@acme.com"]))
//!     .build()?;
//! let service = ServiceBuilder::new().layer(gate).service(service_fn(|req: http::Request<String>| async move {
//!     let who = req.extensions().get::<Verified<Principal>>().expect("the layer ran");
//!     Ok::<_, std::convert::Infallible>(http::Response::new(who.id()))
//! }));
//! # let _ = service;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use serde::de::DeserializeOwned;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::Rejection;
use crate::gate::Gate;
use crate::routes::RoutePolicies;

/// Chooses the [`Gate`] for a request: a [`Gate`] always chooses itself; [`RoutePolicies`]
/// chooses by method and path, and `None` (no declared policy) is refused.
pub trait SelectGate: Clone + Send + Sync + 'static {
    /// The custom-claims type of the gates.
    type Claims;

    /// The gate for this request, or `None` when no policy is declared for it.
    fn select(&self, method: &Method, path: &str) -> Option<&Gate<Self::Claims>>;
}

impl<C: Send + Sync + 'static> SelectGate for Gate<C> {
    type Claims = C;

    fn select(&self, _method: &Method, _path: &str) -> Option<&Gate<C>> {
        Some(self)
    }
}

impl<S, C: Send + Sync + 'static> Layer<S> for Gate<C> {
    type Service = IdentityService<S, Gate<C>>;

    fn layer(&self, inner: S) -> Self::Service {
        IdentityService { inner, gates: self.clone() }
    }
}

impl<S, C: Send + Sync + 'static> Layer<S> for RoutePolicies<C> {
    type Service = IdentityService<S, RoutePolicies<C>>;

    fn layer(&self, inner: S) -> Self::Service {
        IdentityService { inner, gates: self.clone() }
    }
}

/// Middleware that verifies identity before calling `S`. Made by a [`Gate`] or
/// [`RoutePolicies`] as a [`Layer`].
#[derive(Clone, Debug)]
pub struct IdentityService<S, G> {
    inner: S,
    gates: G,
}

/// The future of [`IdentityService`].
pub type ResponseFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, G, ReqBody, ResBody> Service<Request<ReqBody>> for IdentityService<S, G>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: From<String> + 'static,
    G: SelectGate,
    G::Claims: DeserializeOwned + Clone + Send + Sync + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // Call the instance that poll_ready made ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(gate) = self.gates.select(req.method(), req.uri().path()).cloned() else {
            tracing::warn!(layer = "identity", outcome = "no_policy", method = %req.method(), path = %crate::request::truncate(req.uri().path(), 256));
            return Box::pin(async { Ok(Rejection::NoPolicy.to_response()) });
        };
        // Read the request now, so the future holds owned facts rather than a borrow of it.
        let facts = gate.extract(&req);
        Box::pin(async move {
            let checked = match facts {
                Ok(facts) => gate.check_facts(&facts).await,
                Err(rejection) => Err(rejection),
            };
            match checked {
                Ok(verified) => {
                    req.extensions_mut().insert(verified);
                    inner.call(req).await
                }
                Err(rejection) => Ok(rejection.to_response()),
            }
        })
    }
}
