//! Mechanisms and how they combine.
//!
//! A [`Mechanism`] looks at the [`RequestFacts`] and answers one of three things
//! ([`Attempt`]): *not mine* (no credential of its kind), *verified* (a principal), or
//! *refused* (a credential of its kind was present but is invalid or not allowed).
//!
//! A [`Requirement`] combines mechanisms:
//! - [`Requirement::any_of`]: the first mechanism whose credential is present decides. A
//!   present-but-invalid credential denies; it never falls through to a weaker mechanism.
//! - [`Requirement::all_of`]: every mechanism must verify (defense in depth, e.g. an Access
//!   user *and* an API key). The principal is the first one's; [`Verified::proofs`] lists all.
//! - [`Requirement::public`]: an explicit, named "no identity", so that public routes are
//!   declared rather than forgotten.
//!
//! Empty combinations deny: `any_of([])` and `all_of([])` prove nobody.
//!
//! ```
//! use std::sync::Arc;
//! use ztgate::Gate;
//! use ztgate::identity::{ApiKeyAuth, ApiKeys, ClientCertAuth, Requirement};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let keys = Arc::new(ApiKeys::parse("deploy:0123456789abcdef0123").unwrap());
//! // A machine may call with an API key or a pinned client certificate.
//! let gate = Gate::new(Requirement::any_of([
//!     Requirement::mechanism(ApiKeyAuth::new(keys)),
//!     Requirement::mechanism(ClientCertAuth::new().pin_subject_dns(["CN=deployer"])),
//! ]));
//! let req = http::Request::builder().header("x-api-key", "0123456789abcdef0123").body(()).unwrap();
//! let who = gate.check(&req).await.unwrap();
//! assert_eq!(who.id(), "api_key:deploy");
//! assert!(who.proved_by("api_key"));
//! # }
//! ```
//!
//! [`Verified::proofs`]: crate::Verified::proofs

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::access_jwt::AccessVerifier;
use super::api_key::ApiKeys;
use super::jwks::BoxFuture;
use super::policy::Policy;
use crate::error::Rejection;
use crate::principal::{ApiKeyPrincipal, ClientCertPrincipal, NoClaims, Principal, Proof};
use crate::request::{CertVerification, RequestFacts};

/// One mechanism's answer.
#[derive(Debug)]
pub enum Attempt<C = NoClaims> {
    /// No credential of this mechanism's kind.
    NotPresent,
    /// A valid, allowed credential.
    Verified(Principal<C>),
    /// A credential of this kind that is invalid, or proves someone not allowed here.
    Refused(Rejection),
}

/// A way of proving identity from request facts.
pub trait Mechanism<C = NoClaims>: Send + Sync + fmt::Debug + 'static {
    /// A short stable name for logs and [`Proof`]s, e.g. `"api_key"`.
    fn name(&self) -> &'static str;

    /// Looks at the facts. Must not panic on any input.
    fn attempt<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Attempt<C>>;
}

/// What a route requires. Cheap to clone.
pub enum Requirement<C = NoClaims> {
    /// Anyone, declared: proves [`Principal::Anonymous`].
    Public,
    /// One mechanism.
    One(Arc<dyn Mechanism<C>>),
    /// The first mechanism whose credential is present decides.
    AnyOf(Vec<Requirement<C>>),
    /// Every one must verify.
    AllOf(Vec<Requirement<C>>),
}

impl<C> Clone for Requirement<C> {
    fn clone(&self) -> Self {
        match self {
            Self::Public => Self::Public,
            Self::One(m) => Self::One(m.clone()),
            Self::AnyOf(v) => Self::AnyOf(v.clone()),
            Self::AllOf(v) => Self::AllOf(v.clone()),
        }
    }
}

impl<C: 'static> fmt::Debug for Requirement<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Public => f.write_str("public"),
            Self::One(m) => f.write_str(m.name()),
            Self::AnyOf(v) => f.debug_tuple("any_of").field(v).finish(),
            Self::AllOf(v) => f.debug_tuple("all_of").field(v).finish(),
        }
    }
}

/// The outcome of evaluating a requirement.
pub(crate) enum Outcome<C> {
    NotPresent,
    Verified(Principal<C>, Vec<Proof>),
    Refused(Rejection),
}

impl<C: Send + Sync + 'static> Requirement<C> {
    /// Anyone, explicitly.
    pub fn public() -> Self {
        Self::Public
    }

    /// One mechanism.
    pub fn mechanism(m: impl Mechanism<C>) -> Self {
        Self::One(Arc::new(m))
    }

    /// The first whose credential is present decides; a bad credential never falls through.
    pub fn any_of(options: impl IntoIterator<Item = Requirement<C>>) -> Self {
        Self::AnyOf(options.into_iter().collect())
    }

    /// All must verify, in order.
    pub fn all_of(parts: impl IntoIterator<Item = Requirement<C>>) -> Self {
        Self::AllOf(parts.into_iter().collect())
    }

    pub(crate) fn evaluate<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Outcome<C>> {
        Box::pin(async move {
            match self {
                Self::Public => Outcome::Verified(
                    Principal::Anonymous,
                    vec![Proof { mechanism: "public", principal_id: "anonymous".to_owned() }],
                ),
                Self::One(m) => match m.attempt(facts).await {
                    Attempt::NotPresent => Outcome::NotPresent,
                    Attempt::Refused(r) => Outcome::Refused(r),
                    Attempt::Verified(p) => {
                        let proof = Proof { mechanism: m.name(), principal_id: p.id() };
                        Outcome::Verified(p, vec![proof])
                    }
                },
                Self::AnyOf(options) => {
                    for option in options {
                        match option.evaluate(facts).await {
                            Outcome::NotPresent => continue,
                            decided => return decided,
                        }
                    }
                    Outcome::NotPresent
                }
                Self::AllOf(parts) => {
                    let mut first: Option<Principal<C>> = None;
                    let mut proofs = Vec::new();
                    for part in parts {
                        match part.evaluate(facts).await {
                            Outcome::Verified(p, mut more) => {
                                proofs.append(&mut more);
                                first.get_or_insert(p);
                            }
                            other => return other,
                        }
                    }
                    match first {
                        Some(p) => Outcome::Verified(p, proofs),
                        None => Outcome::NotPresent,
                    }
                }
            }
        })
    }
}

/// Cloudflare Access JWTs, authorized by a [`Policy`].
pub struct AccessJwt<C = NoClaims> {
    verifier: AccessVerifier<C>,
    policy: Policy<C>,
}

impl<C> fmt::Debug for AccessJwt<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessJwt").field("verifier", &self.verifier).field("policy", &self.policy).finish()
    }
}

impl<C> AccessJwt<C> {
    /// Verifies with `verifier`, admits whom `policy` allows.
    pub fn new(verifier: AccessVerifier<C>, policy: Policy<C>) -> Self {
        Self { verifier, policy }
    }

    /// The verifier (e.g. to warm its key cache).
    pub fn verifier(&self) -> &AccessVerifier<C> {
        &self.verifier
    }
}

impl<C: DeserializeOwned + Send + Sync + 'static> Mechanism<C> for AccessJwt<C> {
    fn name(&self) -> &'static str {
        "access_jwt"
    }

    fn attempt<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Attempt<C>> {
        Box::pin(async move {
            let Some(token) = facts.access_jwt() else { return Attempt::NotPresent };
            match self.verifier.verify(token.expose()).await {
                Err(e) => Attempt::Refused(e.into()),
                Ok(p) if self.policy.allows(&p) => Attempt::Verified(p),
                Ok(p) => {
                    tracing::warn!(layer = "identity", outcome = "forbidden", mechanism = "access_jwt", principal = %p.id());
                    Attempt::Refused(Rejection::Forbidden)
                }
            }
        })
    }
}

/// API keys from `X-Api-Key` or `Authorization: Bearer`.
///
/// Any configured key proves its name; [`ApiKeyAuth::only`] narrows a route to some names.
#[derive(Debug, Clone)]
pub struct ApiKeyAuth {
    keys: Arc<ApiKeys>,
    only: Option<HashSet<String>>,
}

impl ApiKeyAuth {
    /// Accepts every key in `keys` (shared: revocations apply at once).
    pub fn new(keys: Arc<ApiKeys>) -> Self {
        Self { keys, only: None }
    }

    /// Accepts only keys with these names (a valid key with another name gets 403).
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.only = Some(names.into_iter().map(Into::into).collect());
        self
    }
}

impl<C: Send + Sync + 'static> Mechanism<C> for ApiKeyAuth {
    fn name(&self) -> &'static str {
        "api_key"
    }

    fn attempt<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Attempt<C>> {
        Box::pin(async move {
            let presented = match (facts.api_key_header(), facts.bearer()) {
                (None, None) => return Attempt::NotPresent,
                (Some(a), Some(b)) if a.expose() != b.expose() => {
                    return Attempt::Refused(Rejection::Request(
                        crate::request::RequestError::AmbiguousCredential {
                            name: "X-Api-Key and Authorization",
                        },
                    ));
                }
                (Some(k), _) | (None, Some(k)) => k,
            };
            match self.keys.verify(presented.expose()) {
                None => Attempt::Refused(Rejection::InvalidCredential {
                    mechanism: "api_key",
                    reason: "unknown or revoked key",
                }),
                Some(name) if self.only.as_ref().is_some_and(|only| !only.contains(&name)) => {
                    tracing::warn!(layer = "identity", outcome = "forbidden", mechanism = "api_key", principal = %format!("api_key:{name}"));
                    Attempt::Refused(Rejection::Forbidden)
                }
                Some(name) => Attempt::Verified(Principal::ApiKey(ApiKeyPrincipal { name })),
            }
        })
    }
}

/// mTLS: a client certificate Cloudflare verified and did not find revoked, optionally pinned
/// by SHA-256 fingerprint or subject DN.
///
/// Facts come from [`RequestFacts::client_cert`]: Workers' `request.cf.tlsClientAuth`, or the
/// `cf-cert-*` headers only when the hop is trusted. No certificate → not mine; presented but
/// not verified, revoked, or revocation unknown → 401; verified but not pinned → 403.
#[derive(Debug, Clone, Default)]
pub struct ClientCertAuth {
    fingerprints: HashSet<String>,
    subject_dns: HashSet<String>,
}

impl ClientCertAuth {
    /// Any verified, unrevoked certificate from the zone's CA.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pins these SHA-256 fingerprints (hex, any case, `:` separators allowed).
    pub fn pin_fingerprints<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, fps: I) -> Self {
        self.fingerprints
            .extend(fps.into_iter().map(|f| f.as_ref().replace(':', "").trim().to_ascii_lowercase()));
        self
    }

    /// Pins these subject DNs (exact match).
    pub fn pin_subject_dns<I: IntoIterator<Item = S>, S: Into<String>>(mut self, dns: I) -> Self {
        self.subject_dns.extend(dns.into_iter().map(Into::into));
        self
    }
}

impl<C: Send + Sync + 'static> Mechanism<C> for ClientCertAuth {
    fn name(&self) -> &'static str {
        "client_cert"
    }

    fn attempt<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Attempt<C>> {
        let refuse =
            |reason| Attempt::Refused(Rejection::InvalidCredential { mechanism: "client_cert", reason });
        let outcome = match facts.client_cert() {
            None => Attempt::NotPresent,
            Some(cert) if !cert.presented => Attempt::NotPresent,
            Some(cert) => match (&cert.verified, cert.revoked, &cert.fingerprint_sha256) {
                (Some(CertVerification::Success), Some(false), Some(fp)) => {
                    let pinned = self.fingerprints.is_empty() && self.subject_dns.is_empty()
                        || self.fingerprints.contains(fp)
                        || cert.subject_dn.as_ref().is_some_and(|dn| self.subject_dns.contains(dn));
                    if pinned {
                        Attempt::Verified(Principal::ClientCert(ClientCertPrincipal {
                            fingerprint_sha256: fp.clone(),
                            subject_dn: cert.subject_dn.clone().unwrap_or_default(),
                            issuer_dn: cert.issuer_dn.clone().unwrap_or_default(),
                        }))
                    } else {
                        Attempt::Refused(Rejection::Forbidden)
                    }
                }
                (Some(CertVerification::Success), Some(true), _) => refuse("certificate revoked"),
                (Some(CertVerification::Success), None, _) => refuse("revocation status unknown"),
                (Some(CertVerification::Success), _, None) => refuse("no certificate fingerprint"),
                _ => refuse("certificate not verified"),
            },
        };
        Box::pin(std::future::ready(outcome))
    }
}

/// Where a [`SignedTokenAuth`] finds its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// A query parameter, e.g. `?token=...` in an unsubscribe link.
    Query(String),
    /// A cookie, e.g. a session cookie.
    Cookie(String),
}

/// HMAC-signed tokens (see [`hmac_token`](super::hmac_token)) for one purpose, read from a
/// query parameter or a cookie. A token for another purpose, expired, forged or from a
/// rotated-out key is refused (401).
#[derive(Clone, Debug)]
pub struct SignedTokenAuth {
    ring: Arc<super::hmac_token::KeyRing>,
    purpose: String,
    source: TokenSource,
    clock: Arc<dyn crate::clock::Clock>,
}

impl SignedTokenAuth {
    /// Tokens minted by `ring` for `purpose`, found at `source`, checked against `clock`.
    pub fn new(
        ring: Arc<super::hmac_token::KeyRing>,
        purpose: impl Into<String>,
        source: TokenSource,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Self {
        Self { ring, purpose: purpose.into(), source, clock }
    }
}

impl<C: Send + Sync + 'static> Mechanism<C> for SignedTokenAuth {
    fn name(&self) -> &'static str {
        "signed_token"
    }

    fn attempt<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Attempt<C>> {
        let found = match &self.source {
            TokenSource::Query(name) => Ok(facts.query_param(name)),
            TokenSource::Cookie(name) => facts.cookie(name),
        };
        let outcome = match found {
            Err(e) => Attempt::Refused(Rejection::Request(e)),
            Ok(None) => Attempt::NotPresent,
            Ok(Some(token)) => match self.ring.verify(token.expose(), &self.purpose, self.clock.now()) {
                Ok(t) => Attempt::Verified(Principal::SignedToken(crate::principal::SignedTokenPrincipal {
                    subject: t.subject,
                    purpose: t.purpose,
                    expires_at: t.expires_at,
                })),
                Err(e) => Attempt::Refused(e.into()),
            },
        };
        Box::pin(std::future::ready(outcome))
    }
}
