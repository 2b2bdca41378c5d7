//! THE pipeline: select → extract → check → log. Every inbound adapter (the Tower layer, the
//! Workers request adapter, and later WebSocket, RPC and queue entry points) calls
//! [`authenticate`], so a request is read, verified and logged the same way whichever adapter
//! ran.
//!
//! Events, all `tracing` with `layer` (`request` or `identity`), `outcome`, `method` and the
//! path cut to 256 bytes (never the query, which may carry tokens):
//! - `no_policy` (warn): no gate is declared for the method and path;
//! - `refused` in layer `request` (info): the request layer refused the request's shape;
//! - `verified` (info, with `principal` and `via`), `missing_credential` (info), `refused` in
//!   layer `identity` (info, with `code` and `reason`).

use std::future::Future;

use http::Method;
use serde::de::DeserializeOwned;

use super::Gate;
use crate::error::Rejection;
use crate::identity::mechanism::Outcome;
use crate::principal::{Principal, Verified};
use crate::request::{RequestError, RequestFacts, RequestLimits, truncate};

/// Longest path written to a log event.
const MAX_LOGGED_PATH: usize = 256;

/// Chooses the [`Gate`] for a request: a [`Gate`] always chooses itself;
/// [`RoutePolicies`](crate::RoutePolicies) chooses by method and path, and `None` (no declared
/// policy) is refused with 403 `no_policy`.
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

/// How an adapter reads the request layer's facts: given the selected gate's limits and the
/// headers its mechanisms declared.
pub(crate) trait Extract:
    FnOnce(&RequestLimits, &[http::HeaderName]) -> Result<RequestFacts, RequestError>
{
}

impl<F: FnOnce(&RequestLimits, &[http::HeaderName]) -> Result<RequestFacts, RequestError>> Extract for F {}

/// Selects the gate and reads the facts now (so the returned future borrows nothing of the
/// request), then verifies. Refusals and successes are logged here, once.
pub(crate) fn authenticate<G>(
    selector: &G,
    method: &Method,
    path: &str,
    extract: impl Extract,
) -> impl Future<Output = Result<Verified<Principal<G::Claims>>, Rejection>> + Send + 'static
where
    G: SelectGate,
    G::Claims: DeserializeOwned + Send + Sync + 'static,
{
    let begun = begin(selector, method, path, extract).map(|(gate, facts)| (gate.clone(), facts));
    async move {
        let (gate, facts) = begun?;
        check(&gate, &facts).await
    }
}

/// Select and extract: the synchronous half.
fn begin<'g, G: SelectGate>(
    selector: &'g G,
    method: &Method,
    path: &str,
    extract: impl Extract,
) -> Result<(&'g Gate<G::Claims>, RequestFacts), Rejection> {
    let Some(gate) = selector.select(method, path) else {
        tracing::warn!(layer = "identity", outcome = "no_policy", %method, path = truncate(path, MAX_LOGGED_PATH));
        return Err(Rejection::NoPolicy);
    };
    let facts = extract(gate.limits(), gate.declared_headers()).map_err(|e| {
        tracing::info!(layer = "request", outcome = "refused", reason = %e, %method, path = truncate(path, MAX_LOGGED_PATH));
        Rejection::from(e)
    })?;
    Ok((gate, facts))
}

/// Run the requirement on the facts and log the outcome: the asynchronous half.
pub(crate) async fn check<C>(
    gate: &Gate<C>,
    facts: &RequestFacts,
) -> Result<Verified<Principal<C>>, Rejection>
where
    C: Send + Sync + 'static,
{
    let (method, path) = (facts.method(), truncate(facts.path(), MAX_LOGGED_PATH));
    match gate.requirement().evaluate(facts).await {
        Outcome::Verified(principal, proofs) => {
            let via: Vec<&str> = proofs.iter().map(|p| p.mechanism).collect();
            tracing::info!(layer = "identity", outcome = "verified", principal = %principal.id(), via = ?via, %method, path);
            Ok(Verified::new(principal, proofs))
        }
        Outcome::NotPresent => {
            tracing::info!(layer = "identity", outcome = "missing_credential", %method, path);
            Err(Rejection::MissingCredential)
        }
        Outcome::Refused(rejection) => {
            tracing::info!(layer = "identity", outcome = "refused", code = rejection.code(), reason = %rejection, %method, path);
            Err(rejection)
        }
    }
}
