//! The Tower layer: [`Gate`] and [`RoutePolicies`] as middleware.
//!
//! The [`IdentityService`] runs the gate before the inner service. On success it inserts the
//! [`Verified<Principal<C>>`](crate::Verified) into the request extensions, removes the
//! identity headers a client could have forged (and sets ztgate's own, if asked: the selected
//! gate's [`HeaderHygiene`](crate::HeaderHygiene)), and calls the inner service; on failure it
//! answers with the [`Rejection`](crate::Rejection)'s response and the inner service never sees
//! the request. The request layer reads the credentials before anything is removed.
//!
//! A refusal for want of any credential becomes a redirect to the Access login page instead,
//! for a browser on a gate with a [`LoginRedirect`](crate::LoginRedirect).
//!
//! The inner service's response to a verified request gets `Cache-Control: private, no-store`
//! unless the handler set its own, so no shared cache keeps a response meant for one caller (or
//! carrying a credential); the selected gate's [`CachePolicy`](crate::CachePolicy) can force
//! it or turn it off.
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

use http::{Request, Response};
use serde::de::DeserializeOwned;
use tower_layer::Layer;
use tower_service::Service;

use crate::gate::pipeline::authenticate_for_response;
use crate::gate::{Gate, ReloadablePolicies, RoutePolicies, SelectGate};
use crate::request::RequestFacts;

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

impl<S, C: Send + Sync + 'static> Layer<S> for ReloadablePolicies<C> {
    type Service = IdentityService<S, ReloadablePolicies<C>>;

    fn layer(&self, inner: S) -> Self::Service {
        IdentityService { inner, gates: self.clone() }
    }
}

/// Middleware that verifies identity before calling `S`. Made by a [`Gate`],
/// [`RoutePolicies`] or [`ReloadablePolicies`] as a [`Layer`].
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
        // The pipeline reads the request now, so the future holds owned facts, not a borrow.
        let (method, uri) = (req.method(), req.uri());
        let checked = authenticate_for_response(&self.gates, method, uri.path(), |limits, declared| {
            RequestFacts::read(method, uri.path(), uri.query(), req.headers(), limits, declared)
        });
        Box::pin(async move {
            match checked.await {
                Ok((verified, gate)) => {
                    // The facts were read and verified: only now may the headers go.
                    gate.clean_headers(req.headers_mut(), &verified);
                    req.extensions_mut().insert(verified);
                    let mut response = inner.call(req).await?;
                    gate.cache_policy().apply(response.headers_mut());
                    Ok(response)
                }
                Err((rejection, gate)) => {
                    let login = gate
                        .as_ref()
                        .and_then(Gate::login_redirect)
                        .and_then(|login| login.respond(&rejection, req.method(), req.uri(), req.headers()));
                    Ok(login.unwrap_or_else(|| rejection.to_response()))
                }
            }
        })
    }
}
