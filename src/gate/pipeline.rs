//! THE pipeline: select → extract → check → log and count. Every inbound adapter (the Tower layer, the
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
//!
//! Each decision is also counted ([`crate::metrics`]): `ztgate_decisions_total` and, for
//! the identity layer, `ztgate_decision_duration_seconds`.
//!
//! **Attacker text never starts a log line.** Principal ids, emails, subjects, common names,
//! paths, methods, reasons and error messages are all influenced by whoever sent the request,
//! and tracing-subscriber writes `Display` values (`%`) as they are, line breaks included. So
//! every value that is not a number or a fixed name is recorded in `Debug` form
//! (`field = ?value`): quoted, with `\n`, `\r`, `"`, `\` and every other control or
//! non-printable character escaped, whatever subscriber formats it. One rule, for ztgate's
//! events and the admin server's alike; `tests/log_injection.rs` drives line breaks through the
//! pipeline and scans the source for `%`.

use std::future::Future;

use http::Method;
use serde::de::DeserializeOwned;

use super::{Call, Gate, shared};
use crate::error::Rejection;
use crate::identity::mechanism::Outcome;
use crate::metrics::{self, Mechanisms};
use crate::principal::{Principal, Verified};
use crate::request::{RequestError, RequestFacts, RequestLimits, truncate};
use crate::runtime::Stopwatch;

/// Longest path written to a log event.
const MAX_LOGGED_PATH: usize = 256;

/// Chooses the [`Gate`] for a request: a [`Gate`] always chooses itself;
/// [`RoutePolicies`](crate::RoutePolicies) chooses by method and path, and `None` (no declared
/// policy) is refused with 403 `no_policy`.
pub trait SelectGate: Clone + Send + Sync + 'static {
    /// The custom-claims type of the gates.
    type Claims;

    /// The gate for this request, or `None` when no policy is declared for it. Owned (a
    /// [`Gate`] is one `Arc`), so a selector may hand out a gate it swaps later
    /// ([`ReloadablePolicies`](crate::ReloadablePolicies)) while requests already in flight
    /// finish with the one they started with.
    fn select(&self, method: &Method, path: &str) -> Option<Gate<Self::Claims>>;

    /// Proves who made `call`, without Tower: selects the gate (none is 403 `no_policy`),
    /// reads the facts, verifies, logs and counts — the pipeline the Tower layer and the
    /// Workers adapter run, for a tonic interceptor, a custom hyper service or a Worker RPC
    /// method. The call is read before the future starts, so the future borrows nothing.
    fn check_call(
        &self,
        call: Call<'_>,
    ) -> impl Future<Output = Result<Verified<Principal<Self::Claims>>, Rejection>> + Send + 'static + use<Self>
    where
        Self::Claims: DeserializeOwned + Send + Sync + 'static,
    {
        verified(begin(self, call.method(), call.path(), |limits, declared| {
            call.read_facts(limits, declared)
        }))
    }
}

impl<C: Send + Sync + 'static> SelectGate for Gate<C> {
    type Claims = C;

    fn select(&self, _method: &Method, _path: &str) -> Option<Gate<C>> {
        Some(self.clone())
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
/// request), then verifies. Refusals and successes are logged here, once. For adapters whose
/// request is not an `http` one (the Workers adapter); the others build a [`Call`].
#[cfg(feature = "workers")]
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
    verified(begin(selector, method, path, extract))
}

/// What the Tower layer needs of a request: the proof or the refusal, each with the gate that
/// decided (none when no policy matched or the request layer refused), whose settings say how to
/// treat the request and the response ([`CachePolicy`](super::CachePolicy),
/// [`HeaderHygiene`](super::HeaderHygiene), [`LoginRedirect`](super::LoginRedirect)).
pub(crate) type ForResponse<C> = Result<(Verified<Principal<C>>, Gate<C>), (Rejection, Option<Gate<C>>)>;

/// [`authenticate`], also giving the selected gate, for an adapter that answers with the inner
/// service's response (the Tower layer).
pub(crate) fn authenticate_for_response<G>(
    selector: &G,
    method: &Method,
    path: &str,
    extract: impl Extract,
) -> impl Future<Output = ForResponse<G::Claims>> + Send + 'static
where
    G: SelectGate,
    G::Claims: DeserializeOwned + Send + Sync + 'static,
{
    finish(begin(selector, method, path, extract))
}

/// Verify what [`begin`] selected and read: the asynchronous half, generic only in the claims
/// type, so its future borrows nothing of the request.
async fn finish<C>(begun: Result<(Gate<C>, RequestFacts), Rejection>) -> ForResponse<C>
where
    C: DeserializeOwned + Send + Sync + 'static,
{
    let (gate, facts) = begun.map_err(|rejection| (rejection, None))?;
    match check(&gate, &facts).await {
        Ok(verified) => Ok((verified, gate)),
        Err(rejection) => Err((rejection, Some(gate))),
    }
}

/// [`finish`], without the gate that decided.
fn verified<C>(
    begun: Result<(Gate<C>, RequestFacts), Rejection>,
) -> impl Future<Output = Result<Verified<Principal<C>>, Rejection>> + Send + 'static
where
    C: DeserializeOwned + Send + Sync + 'static,
{
    let finished = finish(begun);
    async move { finished.await.map(|(verified, _)| verified).map_err(|(rejection, _)| rejection) }
}

/// Select and extract: the synchronous half.
fn begin<G: SelectGate>(
    selector: &G,
    method: &Method,
    path: &str,
    extract: impl Extract,
) -> Result<(Gate<G::Claims>, RequestFacts), Rejection> {
    let Some(gate) = selector.select(method, path) else {
        tracing::warn!(layer = "identity", outcome = "no_policy", method = ?method.as_str(), path = ?truncate(path, MAX_LOGGED_PATH));
        let rejection = Rejection::NoPolicy;
        metrics::decision(Mechanisms::Named("none"), "no_policy", rejection.code(), 0.0);
        return Err(rejection);
    };
    let facts = extract(gate.limits(), gate.declared_headers()).map_err(|e| {
        tracing::info!(layer = "request", outcome = "refused", reason = ?e.to_string(), method = ?method.as_str(), path = ?truncate(path, MAX_LOGGED_PATH));
        let rejection = Rejection::from(e);
        metrics::decision(Mechanisms::Named("request"), "refused", rejection.code(), 0.0);
        rejection
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
    let stopwatch = Stopwatch::start();
    // Before any verification work: a spent budget is answered here.
    let limit = gate.rate_limit().map(|limit| (limit, shared::limit_keys(limit, facts)));
    if let Some((limit, keys)) = &limit
        && let Err(rejection) = shared::before(limit, keys).await
    {
        metrics::decision(Mechanisms::Named("rate_limit"), "refused", rejection.code(), stopwatch.seconds());
        return Err(rejection);
    }
    let outcome = gate.requirement().evaluate(facts).await;
    let outcome = match outcome {
        Outcome::Verified(principal, proofs) => {
            match shared::check_revocations(gate, &principal, &proofs).await {
                Ok(()) => Outcome::Verified(principal, proofs),
                Err(rejection) => Outcome::Refused(rejection, proofs.first().map_or("none", |p| p.mechanism)),
            }
        }
        other => other,
    };
    if let (Some((limit, keys)), Outcome::Refused(rejection, _)) = (&limit, &outcome) {
        shared::after_refusal(limit, keys, rejection).await;
    }
    let seconds = stopwatch.seconds();
    match outcome {
        Outcome::Verified(principal, proofs) => {
            let via: Vec<&str> = proofs.iter().map(|p| p.mechanism).collect();
            tracing::info!(layer = "identity", outcome = "verified", principal = ?principal.id(), via = ?via, method = ?method.as_str(), path = ?path);
            metrics::decision(Mechanisms::Proofs(&proofs), "verified", "ok", seconds);
            Ok(Verified::new(principal, proofs))
        }
        Outcome::NotPresent => {
            tracing::info!(layer = "identity", outcome = "missing_credential", method = ?method.as_str(), path = ?path);
            let rejection = Rejection::MissingCredential;
            metrics::decision(Mechanisms::Named("none"), "missing_credential", rejection.code(), seconds);
            Err(rejection)
        }
        Outcome::Refused(rejection, mechanism) => {
            tracing::info!(layer = "identity", outcome = "refused", code = rejection.code(), reason = ?rejection.to_string(), method = ?method.as_str(), path = ?path);
            metrics::decision(Mechanisms::Named(mechanism), "refused", rejection.code(), seconds);
            Err(rejection)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http::HeaderMap;

    use super::*;
    use crate::identity::Requirement;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Selects no gate: every request is `no_policy`.
    #[derive(Clone)]
    struct Nothing;

    impl SelectGate for Nothing {
        type Claims = crate::principal::NoClaims;
        fn select(&self, _: &Method, _: &str) -> Option<Gate> {
            None
        }
    }

    /// The events `begin` writes (no policy, refused by the request layer) record the path
    /// escaped: a path with a line break in it never starts a log line.
    #[test]
    fn a_path_with_line_breaks_never_starts_a_log_line_before_identity() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let path = "/x\nFORGED-BEGIN INFO ztgate: outcome=\"verified\"\rFORGED-BEGIN";
        let tight = Gate::with_limits(
            Requirement::public(),
            RequestLimits { max_path_bytes: 8, ..RequestLimits::default() },
        );
        tracing::subscriber::with_default(subscriber, || {
            let read = |limits: &RequestLimits, declared: &[http::HeaderName]| {
                RequestFacts::read(&Method::GET, path, None, &HeaderMap::new(), limits, declared)
            };
            assert!(matches!(begin(&Nothing, &Method::GET, path, read), Err(Rejection::NoPolicy)));
            assert!(matches!(begin(&tight, &Method::GET, path, read), Err(Rejection::Request(_))));
        });
        let logs = String::from_utf8(captured.0.lock().unwrap_or_else(|p| p.into_inner()).clone()).unwrap();
        assert_eq!(
            logs.matches("\\nFORGED-BEGIN").count(),
            2,
            "both events logged the path, escaped:\n{logs}"
        );
        for line in logs.split(['\n', '\r']) {
            assert!(!line.starts_with("FORGED-BEGIN"), "{line:?}\n{logs}");
        }
    }
}
