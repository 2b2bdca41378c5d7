//! [`Gate`]: the request → identity pipeline for one protected surface.

use std::fmt;
use std::sync::Arc;

use http::Request;
use serde::de::DeserializeOwned;

use crate::clock::{Clock, SystemClock};
use crate::error::{ConfigError, Rejection};
use crate::identity::mechanism::Outcome;
use crate::identity::{
    AccessConfig, AccessJwt, AccessVerifier, JwksCache, JwksConfig, KeyFetcher, Policy, Requirement,
};
use crate::principal::{NoClaims, Principal, Verified};
use crate::request::{RequestFacts, RequestLimits};

/// A [`Requirement`] (mechanisms and how they combine) plus request limits: everything needed
/// to turn a request into a [`Verified<Principal>`] or a [`Rejection`].
///
/// [`Gate::builder`] makes the common Cloudflare Access gate; [`Gate::new`] takes any
/// requirement (any-of, all-of, API keys, mTLS, public...).
///
/// Cheap to clone (one `Arc`); clones share the JWKS cache. A `Gate` is itself the Tower
/// [`Layer`](tower_layer::Layer): `router.layer(gate)`.
pub struct Gate<C = NoClaims> {
    inner: Arc<GateInner<C>>,
}

struct GateInner<C> {
    requirement: Requirement<C>,
    limits: RequestLimits,
}

impl<C> Clone for Gate<C> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<C: 'static> fmt::Debug for Gate<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate").field("requirement", &self.inner.requirement).finish()
    }
}

impl Gate<NoClaims> {
    /// Starts a gate for Cloudflare Access with `config`.
    pub fn builder(config: AccessConfig) -> GateBuilder<NoClaims> {
        GateBuilder {
            config,
            policy: None,
            fetcher: None,
            certs_url: None,
            clock: Arc::new(SystemClock),
            jwks: JwksConfig::default(),
            limits: RequestLimits::default(),
        }
    }
}

impl<C: DeserializeOwned + Send + Sync + 'static> Gate<C> {
    /// Runs request extraction, verification and the policy on `req`.
    ///
    /// The request is read before the returned future starts, so the future does not borrow
    /// it (and is `Send` even when the body type is not `Sync`).
    pub fn check<B>(
        &self,
        req: &Request<B>,
    ) -> impl Future<Output = Result<Verified<Principal<C>>, Rejection>> + Send + '_ {
        let facts = self.extract(req);
        async move { self.check_facts(&facts?).await }
    }

    /// The request layer alone: reads the facts of `req` (and logs a refusal).
    pub fn extract<B>(&self, req: &Request<B>) -> Result<RequestFacts, Rejection> {
        RequestFacts::extract(req, &self.inner.limits).map_err(|e| {
            tracing::info!(layer = "request", outcome = "refused", reason = %e, path = %crate::request::truncate(req.uri().path(), 256));
            Rejection::from(e)
        })
    }

    /// Runs the requirement on already extracted facts.
    pub async fn check_facts(&self, facts: &RequestFacts) -> Result<Verified<Principal<C>>, Rejection> {
        let (method, path) = (facts.method(), facts.path());
        match self.inner.requirement.evaluate(facts).await {
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
}

impl<C> Gate<C> {
    /// The request limits this gate reads requests with.
    pub fn limits(&self) -> &RequestLimits {
        &self.inner.limits
    }

    /// The requirement this gate enforces.
    pub fn requirement(&self) -> &Requirement<C> {
        &self.inner.requirement
    }
}

impl<C: Send + Sync + 'static> Gate<C> {
    /// A gate whose principals carry custom claims `C` (see [`GateBuilder::custom_claims`]).
    /// With the default claims type, use [`Gate::new`] or [`Gate::with_limits`].
    pub fn with_claims(requirement: Requirement<C>, limits: RequestLimits) -> Self {
        Self { inner: Arc::new(GateInner { requirement, limits }) }
    }
}

impl Gate<NoClaims> {
    /// A gate enforcing `requirement` with default request limits.
    pub fn new(requirement: Requirement) -> Self {
        Self::with_claims(requirement, RequestLimits::default())
    }

    /// A gate enforcing `requirement` with explicit request limits (e.g. to trust Cloudflare's
    /// client-certificate headers).
    pub fn with_limits(requirement: Requirement, limits: RequestLimits) -> Self {
        Self::with_claims(requirement, limits)
    }

    /// A gate that admits everyone as [`Principal::Anonymous`]: public routes, declared.
    pub fn public() -> Self {
        Self::new(Requirement::Public)
    }
}

/// Builds a [`Gate`]. A policy is required: a gate that admits "whoever has a valid token"
/// must say so with [`Policy::allow_if`]`(|_| true)`.
pub struct GateBuilder<C> {
    config: AccessConfig,
    policy: Option<Policy<C>>,
    fetcher: Option<Arc<dyn KeyFetcher>>,
    certs_url: Option<String>,
    clock: Arc<dyn Clock>,
    jwks: JwksConfig,
    limits: RequestLimits,
}

impl<C> fmt::Debug for GateBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateBuilder").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<C: DeserializeOwned + Send + Sync + 'static> GateBuilder<C> {
    /// Deserializes extra user claims into `D` (from the whole claim set). Call before
    /// [`GateBuilder::policy`], whose predicates see the same type.
    pub fn custom_claims<D>(self) -> GateBuilder<D> {
        GateBuilder {
            config: self.config,
            policy: None,
            fetcher: self.fetcher,
            certs_url: self.certs_url,
            clock: self.clock,
            jwks: self.jwks,
            limits: self.limits,
        }
    }

    /// Who may pass.
    pub fn policy(mut self, policy: Policy<C>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Fetch the JWKS from this URL instead of `{team_domain}/cdn-cgi/access/certs`.
    pub fn certs_url(mut self, url: impl Into<String>) -> Self {
        self.certs_url = Some(url.into());
        self
    }

    /// Use a custom key fetcher (tests, the Workers fetch API, a fixed key set).
    pub fn fetcher(mut self, fetcher: Arc<dyn KeyFetcher>) -> Self {
        self.fetcher = Some(fetcher);
        self
    }

    /// Read time from `clock` (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Tune the JWKS cache.
    pub fn jwks_config(mut self, config: JwksConfig) -> Self {
        self.jwks = config;
        self
    }

    /// Tune request size limits.
    pub fn request_limits(mut self, limits: RequestLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Builds the gate: the Access mechanism alone, with the configured request limits.
    pub fn build(self) -> Result<Gate<C>, ConfigError> {
        let limits = self.limits.clone();
        let access = self.build_mechanism()?;
        Ok(Gate::with_claims(Requirement::mechanism(access), limits))
    }

    /// Builds only the Access mechanism, to combine with others in a [`Requirement`]
    /// (the request limits set here are then unused: give them to the [`Gate`]).
    pub fn build_mechanism(self) -> Result<AccessJwt<C>, ConfigError> {
        let policy = self.policy.ok_or_else(|| {
            ConfigError::new("policy", "no policy: declare who may pass (an empty Policy admits nobody)")
        })?;
        let fetcher: Arc<dyn KeyFetcher> = match self.fetcher {
            Some(f) => f,
            None => default_fetcher(self.certs_url.unwrap_or_else(|| self.config.default_certs_url()))?,
        };
        let keys = JwksCache::new(fetcher, self.clock.clone(), self.jwks);
        Ok(AccessJwt::new(AccessVerifier::new(self.config, keys, self.clock), policy))
    }
}

#[cfg(feature = "native")]
fn default_fetcher(url: String) -> Result<Arc<dyn KeyFetcher>, ConfigError> {
    Ok(Arc::new(crate::identity::HttpFetcher::new(&url)?))
}

#[cfg(all(feature = "workers", not(feature = "native")))]
fn default_fetcher(url: String) -> Result<Arc<dyn KeyFetcher>, ConfigError> {
    Ok(Arc::new(crate::workers::WorkersFetcher::new(&url)?))
}

#[cfg(not(any(feature = "native", feature = "workers")))]
fn default_fetcher(_url: String) -> Result<Arc<dyn KeyFetcher>, ConfigError> {
    Err(ConfigError::new(
        "fetcher",
        "without the `native` or `workers` feature, pass a KeyFetcher to GateBuilder::fetcher",
    ))
}
