//! The mechanism trait and how mechanisms combine.
//!
//! A [`Mechanism`] looks at the [`RequestFacts`] and answers one of three things
//! ([`Attempt`]): *not mine* (no credential of its kind), *verified* (a principal), or
//! *refused* (a credential of its kind was present but is invalid or not allowed).
//!
//! The trait is the extension point: a mechanism written outside ztgate declares the headers
//! it reads ([`Mechanism::headers`]; the request layer copies only those, bounded like every
//! other credential), proves a [`Principal::Custom`], and composes with the built-in ones.
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

use std::fmt;
use std::sync::Arc;

use http::HeaderName;

use crate::BoxFuture;
use crate::error::Rejection;
use crate::principal::{NoClaims, Principal, Proof};
use crate::request::RequestFacts;

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
///
/// ```
/// use http::HeaderName;
/// use ztgate::identity::{Attempt, Mechanism, Requirement};
/// use ztgate::request::RequestFacts;
/// use ztgate::{BoxFuture, CustomPrincipal, Gate, Principal, Rejection};
///
/// /// A device that proves itself with a header holding its registered id (illustration only:
/// /// a real mechanism checks a signature here).
/// #[derive(Debug)]
/// struct DeviceId;
///
/// static HEADERS: [HeaderName; 1] = [HeaderName::from_static("x-device-id")];
///
/// impl Mechanism for DeviceId {
///     fn name(&self) -> &'static str {
///         "device_id"
///     }
///     fn headers(&self) -> &[HeaderName] {
///         &HEADERS
///     }
///     fn attempt<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Attempt> {
///         let outcome = match facts.header("x-device-id") {
///             None => Attempt::NotPresent,
///             Some(id) if id.expose() == "dev-42" => {
///                 Attempt::Verified(Principal::Custom(CustomPrincipal::new("device", "dev-42")))
///             }
///             Some(_) => Attempt::Refused(Rejection::InvalidCredential {
///                 mechanism: "device_id",
///                 reason: "unknown device",
///             }),
///         };
///         Box::pin(std::future::ready(outcome))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let gate = Gate::new(Requirement::mechanism(DeviceId));
/// let req = http::Request::builder().header("x-device-id", "dev-42").body(()).unwrap();
/// assert_eq!(gate.check(&req).await.unwrap().id(), "custom:device:dev-42");
/// # }
/// ```
pub trait Mechanism<C = NoClaims>: Send + Sync + fmt::Debug + 'static {
    /// A short stable name for logs, [`Proof`]s and [`Rejection::InvalidCredential`], e.g.
    /// `"api_key"`.
    fn name(&self) -> &'static str;

    /// The request headers this mechanism reads beyond the built-in credentials, through
    /// [`RequestFacts::header`]. Only declared headers are copied into the facts, each at most
    /// once, as text, within [`RequestLimits::max_token_bytes`](crate::request::RequestLimits).
    /// The facts are read once per request for the whole requirement, so a mechanism also sees
    /// the headers its siblings in the same gate declared: read only the ones you declared.
    fn headers(&self) -> &[HeaderName] {
        &[]
    }

    /// Looks at the facts. Must not panic on any input.
    fn attempt<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Attempt<C>>;

    /// Whether this mechanism, as configured now, still admits `principal`, which a mechanism
    /// of the same [`name`](Mechanism::name) proved earlier: what
    /// [`Gate::recheck`](crate::Gate::recheck) asks for a connection that outlives its request,
    /// after a policy reload or a change to the mechanism's own list (a key removed or
    /// replaced). `now` is the gate's clock, in Unix seconds. No credential is at hand: decide
    /// from the principal alone, without I/O.
    ///
    /// The default admits: a mechanism whose admission depends only on the credential
    /// (a signature, a certificate) has nothing to decide again, and expiry and revocation are
    /// checked by the gate for every mechanism. Return [`Rejection::Forbidden`] when the caller
    /// is no longer allowed, a 401 rejection when the credential itself is no longer accepted.
    fn readmit(&self, principal: &Principal<C>, now: u64) -> Result<(), Rejection> {
        let _ = (principal, now);
        Ok(())
    }
}

/// A shared mechanism (e.g. one [`AccessJwt`](super::AccessJwt) whose key cache several routes
/// use) is a mechanism.
impl<C, M: Mechanism<C>> Mechanism<C> for Arc<M> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn headers(&self) -> &[HeaderName] {
        (**self).headers()
    }

    fn attempt<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Attempt<C>> {
        (**self).attempt(facts)
    }

    fn readmit(&self, principal: &Principal<C>, now: u64) -> Result<(), Rejection> {
        (**self).readmit(principal, now)
    }
}

/// Admitted as soon as one of `answers` admits (the rest are not asked); else the first
/// refusal; `None` when there was no answer at all.
pub(crate) fn first_admission(
    answers: impl IntoIterator<Item = Result<(), Rejection>>,
) -> Option<Result<(), Rejection>> {
    let mut refused = None;
    for answer in answers {
        match answer {
            Ok(()) => return Some(Ok(())),
            Err(r) => {
                refused.get_or_insert(r);
            }
        }
    }
    refused.map(Err)
}

/// What a route requires: built with [`Requirement::public`], [`Requirement::mechanism`],
/// [`Requirement::any_of`] and [`Requirement::all_of`]. Cheap to clone. `Debug` shows the
/// shape, e.g. `any_of([api_key, client_cert])`.
pub struct Requirement<C = NoClaims>(Node<C>);

enum Node<C> {
    /// Anyone, declared: proves [`Principal::Anonymous`].
    Public,
    One(Arc<dyn Mechanism<C>>),
    AnyOf(Vec<Requirement<C>>),
    AllOf(Vec<Requirement<C>>),
}

impl<C> Clone for Requirement<C> {
    fn clone(&self) -> Self {
        Self(match &self.0 {
            Node::Public => Node::Public,
            Node::One(m) => Node::One(m.clone()),
            Node::AnyOf(v) => Node::AnyOf(v.clone()),
            Node::AllOf(v) => Node::AllOf(v.clone()),
        })
    }
}

impl<C: 'static> fmt::Debug for Requirement<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Node::Public => f.write_str("public"),
            Node::One(m) => f.write_str(m.name()),
            Node::AnyOf(v) => f.debug_tuple("any_of").field(v).finish(),
            Node::AllOf(v) => f.debug_tuple("all_of").field(v).finish(),
        }
    }
}

/// The outcome of evaluating a requirement.
pub(crate) enum Outcome<C> {
    NotPresent,
    Verified(Principal<C>, Vec<Proof>),
    /// Refused by the mechanism named (its [`Mechanism::name`]).
    Refused(Rejection, &'static str),
}

impl<C: Send + Sync + 'static> Requirement<C> {
    /// Anyone, explicitly.
    pub fn public() -> Self {
        Self(Node::Public)
    }

    /// One mechanism.
    pub fn mechanism(m: impl Mechanism<C>) -> Self {
        Self(Node::One(Arc::new(m)))
    }

    /// The first whose credential is present decides; a bad credential never falls through.
    pub fn any_of(options: impl IntoIterator<Item = Requirement<C>>) -> Self {
        Self(Node::AnyOf(options.into_iter().collect()))
    }

    /// All must verify, in order.
    pub fn all_of(parts: impl IntoIterator<Item = Requirement<C>>) -> Self {
        Self(Node::AllOf(parts.into_iter().collect()))
    }

    /// Every header a mechanism of this requirement declared, each once.
    pub(crate) fn declared_headers(&self) -> Vec<HeaderName> {
        let mut out = Vec::new();
        self.collect_headers(&mut out);
        out
    }

    fn collect_headers(&self, out: &mut Vec<HeaderName>) {
        match &self.0 {
            Node::Public => {}
            Node::One(m) => {
                for h in m.headers() {
                    if !out.contains(h) {
                        out.push(h.clone());
                    }
                }
            }
            Node::AnyOf(v) | Node::AllOf(v) => v.iter().for_each(|r| r.collect_headers(out)),
        }
    }

    /// Whether this requirement, as it is now, still admits the principal `proof` names:
    /// some mechanism of the proof's name must be in it (`Node::Public` for an anonymous
    /// proof) and readmit `principal`. `Ok` if any does; else the first refusal, or
    /// [`Rejection::Forbidden`] when no mechanism of that name is left.
    pub(crate) fn readmit(&self, proof: &Proof, principal: &Principal<C>, now: u64) -> Result<(), Rejection> {
        self.readmit_by_name(proof, principal, now).unwrap_or(Err(Rejection::Forbidden))
    }

    /// [`Requirement::readmit`], `None` when no mechanism of the proof's name is in it.
    fn readmit_by_name(
        &self,
        proof: &Proof,
        principal: &Principal<C>,
        now: u64,
    ) -> Option<Result<(), Rejection>> {
        match &self.0 {
            Node::Public => (proof.mechanism == "public").then_some(Ok(())),
            Node::One(m) => (m.name() == proof.mechanism).then(|| m.readmit(principal, now)),
            Node::AnyOf(v) | Node::AllOf(v) => {
                first_admission(v.iter().filter_map(|r| r.readmit_by_name(proof, principal, now)))
            }
        }
    }

    pub(crate) fn evaluate<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Outcome<C>> {
        Box::pin(async move {
            match &self.0 {
                Node::Public => Outcome::Verified(
                    Principal::Anonymous,
                    vec![Proof { mechanism: "public", principal_id: "anonymous".to_owned() }],
                ),
                Node::One(m) => match m.attempt(facts).await {
                    Attempt::NotPresent => Outcome::NotPresent,
                    Attempt::Refused(r) => Outcome::Refused(r, m.name()),
                    Attempt::Verified(p) => {
                        let proof = Proof { mechanism: m.name(), principal_id: p.id() };
                        Outcome::Verified(p, vec![proof])
                    }
                },
                Node::AnyOf(options) => {
                    for option in options {
                        match option.evaluate(facts).await {
                            Outcome::NotPresent => continue,
                            decided => return decided,
                        }
                    }
                    Outcome::NotPresent
                }
                Node::AllOf(parts) => {
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
