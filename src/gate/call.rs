//! Proving identity without Tower: one inbound call, as its parts ([`Call`]), through the one
//! pipeline ([`SelectGate::check_call`](crate::SelectGate::check_call)), and the re-check of a proof a long-lived connection
//! holds ([`Gate::recheck`]).

use http::{HeaderMap, HeaderName, Method, Request, Uri};

use super::{Gate, shared};
use crate::error::{Rejection, TokenError};
use crate::principal::{Principal, Verified};
use crate::request::{ClientCertFacts, RequestError, RequestFacts, RequestLimits};

/// One inbound call as its parts: what a caller without Tower (a tonic interceptor, a custom
/// hyper service, a Worker RPC method) hands to [`SelectGate::check_call`](crate::SelectGate::check_call).
///
/// It borrows the method, the URI and the headers; nothing is read until the check, and the
/// check reads them exactly as the Tower layer does (the same limits, the same refusals).
///
/// The client certificate comes from the gate's [`RequestLimits`](crate::request::RequestLimits)
/// (Cloudflare's `cf-cert-*` headers, read only when the operator trusts the hop that sets
/// them), unless the caller gives the facts itself with [`Call::with_client_cert`] — e.g. from a
/// Worker's `request.cf.tlsClientAuth`, or a TLS terminator of its own.
///
/// ```
/// use std::sync::Arc;
///
/// use http::{HeaderMap, Method, Uri};
/// use ztgate::identity::{ApiKeyAuth, ApiKeys, Requirement};
/// use ztgate::{Call, Gate, SelectGate};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let key = "k3y-0f-at-least-32-bytes-long-for-the-bot"; // pragma: allowlist secret
/// let keys = Arc::new(ApiKeys::parse(&format!("deploy-bot:{key}")).unwrap());
/// let gate = Gate::new(Requirement::mechanism(ApiKeyAuth::new(keys)));
///
/// let (method, uri) = (Method::POST, Uri::from_static("/ztgate.admin.v1.Admin/Reload"));
/// let mut headers = HeaderMap::new();
/// headers.insert("x-api-key", key.parse().unwrap());
/// let who = gate.check_call(Call::new(&method, &uri, &headers)).await.unwrap();
/// assert_eq!(who.principal().id(), "api_key:deploy-bot");
///
/// headers.clear();
/// let refused = gate.check_call(Call::new(&method, &uri, &headers)).await.unwrap_err();
/// assert_eq!(refused.code(), "missing_credential");
/// # }
/// ```
#[derive(Clone, Copy)]
pub struct Call<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    client_cert: Option<&'a ClientCertFacts>,
    cert_given: bool,
}

impl<'a> Call<'a> {
    /// A call with this method, URI (only its path and query are read) and headers.
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        Self { method, uri, headers, client_cert: None, cert_given: false }
    }

    /// The parts of an `http` request (`req.into_parts().0`, or what a framework hands out).
    pub fn from_parts(parts: &'a http::request::Parts) -> Self {
        Self::new(&parts.method, &parts.uri, &parts.headers)
    }

    /// The parts of an `http` request, whatever its body.
    pub fn from_request<B>(req: &'a Request<B>) -> Self {
        Self::new(req.method(), req.uri(), req.headers())
    }

    /// The client certificate, as the caller's platform reported it (`None`: no certificate
    /// was presented). Replaces whatever the gate would read from `cf-cert-*` headers.
    pub fn with_client_cert(mut self, facts: Option<&'a ClientCertFacts>) -> Self {
        self.client_cert = facts;
        self.cert_given = true;
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        self.method
    }

    /// The path, as the gate is selected by.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        self.headers
    }

    /// The request layer's facts, as the selected gate reads them.
    pub(crate) fn read_facts(
        &self,
        limits: &RequestLimits,
        declared: &[HeaderName],
    ) -> Result<RequestFacts, RequestError> {
        let facts = RequestFacts::read(
            self.method,
            self.uri.path(),
            self.uri.query(),
            self.headers,
            limits,
            declared,
        )?;
        Ok(if self.cert_given { facts.with_client_cert(self.client_cert.cloned()) } else { facts })
    }
}

impl std::fmt::Debug for Call<'_> {
    /// The method and path only: headers carry credentials, and the query may too.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method.as_str())
            .field("path", &self.uri.path())
            .field("headers", &self.headers.len())
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

impl<C: Send + Sync + 'static> Gate<C> {
    /// Whether a proof is still good, for a connection that outlives its request (a
    /// WebSocket, a gRPC stream, a server-sent event stream). `Err`, in this order:
    ///
    /// - the credential has expired: 401 `token_expired`, by this gate's clock, no leeway;
    /// - this gate, as it is now, no longer admits the principal
    ///   ([`Mechanism::readmit`](crate::identity::Mechanism::readmit) of the mechanism that
    ///   proved it): 403 `forbidden` when the policy no longer allows the caller or the route no
    ///   longer accepts that kind of credential, 401 when the credential itself is no longer
    ///   accepted (an API key removed or replaced, an HMAC token's signing key removed from
    ///   the ring);
    /// - one of its credentials has been revoked since: 401 `revoked`;
    /// - the revocation list cannot answer and the gate refuses in that case: 503
    ///   `state_unavailable`.
    ///
    /// Run it on a timer and before acting on each message, with the gate the route has now
    /// (after a reload, the new one), and close the connection on `Err` (see
    /// [`Rejection::close_code`]). [`Principal::expires_at`] tells when the credential
    /// expires, to close on time between two checks.
    ///
    /// No credential is kept, so nothing is verified or fetched again: a policy rule over the
    /// Access identity (groups, login method, device posture) is decided from the identity the
    /// principal carries, and refused (403) if it carries none. With an all-of requirement,
    /// the mechanism that proved the principal is asked; the other credentials are checked for
    /// expiry of the principal and for revocation only.
    pub async fn recheck(&self, verified: &Verified<Principal<C>>) -> Result<(), Rejection> {
        let principal = verified.principal();
        let now = self.clock.now();
        let outcome = match principal.expires_at() {
            Some(exp) if now >= exp => Err(Rejection::InvalidToken(TokenError::Expired)),
            _ => match self.readmit(verified, now) {
                Ok(()) => shared::check_revocations(self, principal, verified.proofs()).await,
                Err(rejection) => Err(rejection),
            },
        };
        if let Err(rejection) = &outcome {
            tracing::info!(layer = "identity", outcome = "session_ended", code = rejection.code(), principal = ?principal.id());
        }
        outcome
    }

    /// What the Tower layer does to a verified request's headers before its handler sees them
    /// ([`HeaderHygiene`](crate::HeaderHygiene), as set with
    /// [`Gate::with_header_hygiene`]): removes the identity headers a client could forge, and
    /// sets the verified `X-Ztgate-*` headers if asked to. For a caller without Tower that
    /// passes the request on (a custom hyper service, a proxy): call it with the proof this
    /// gate gave, before the request goes further.
    ///
    /// ```
    /// use http::{HeaderMap, Method, Uri};
    /// use ztgate::{Call, Gate, HeaderHygiene, SelectGate};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let gate = Gate::public().with_header_hygiene(HeaderHygiene::new().forward_verified_identity());
    /// let (method, uri) = (Method::GET, Uri::from_static("/"));
    /// let mut headers = HeaderMap::new();
    /// headers.insert("x-ztgate-principal", "user:admin@acme.com".parse().unwrap()); // forged
    /// headers.insert("cf-access-authenticated-user-email", "admin@acme.com".parse().unwrap());
    /// let verified = gate.check_call(Call::new(&method, &uri, &headers)).await.unwrap();
    ///
    /// gate.clean_headers(&mut headers, &verified);
    /// assert_eq!(headers.get("x-ztgate-principal").unwrap(), "anonymous"); // the proven one
    /// assert!(headers.get("cf-access-authenticated-user-email").is_none());
    /// # }
    /// ```
    pub fn clean_headers(&self, headers: &mut HeaderMap, verified: &Verified<Principal<C>>) {
        self.hygiene.apply(headers, self.inner.limits.trust_client_cert_headers, verified);
    }

    /// The admission part of [`Gate::recheck`]: the proof that names the principal, asked of
    /// this gate's requirement.
    fn readmit(&self, verified: &Verified<Principal<C>>, now: u64) -> Result<(), Rejection> {
        let principal = verified.principal();
        let id = principal.id();
        match verified.proofs().iter().find(|proof| proof.principal_id == id) {
            Some(proof) => self.inner.requirement.readmit(proof, principal, now),
            // Every proof this crate makes names its principal: fail closed if one does not.
            None => Err(Rejection::Forbidden),
        }
    }
}
