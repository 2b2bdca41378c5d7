//! [`Gate`]: the request → identity pipeline for one protected surface.

use std::fmt;
use std::sync::Arc;

use http::Request;
use serde::de::DeserializeOwned;

use crate::clock::{Clock, SystemClock};
use crate::error::{ConfigError, Rejection};
use crate::identity::{AccessConfig, AccessVerifier, JwksCache, JwksConfig, KeyFetcher, Policy};
use crate::principal::{NoClaims, Principal, Verified};
use crate::request::{RequestFacts, RequestLimits};

/// Cloudflare Access verification plus a policy: everything needed to turn a request into a
/// [`Verified<Principal>`] or a [`Rejection`].
///
/// Cheap to clone (one `Arc`); clones share the JWKS cache. A `Gate` is itself the Tower
/// [`Layer`](tower_layer::Layer): `router.layer(gate)`.
pub struct Gate<C = NoClaims> {
    inner: Arc<GateInner<C>>,
}

struct GateInner<C> {
    verifier: AccessVerifier<C>,
    policy: Policy<C>,
    limits: RequestLimits,
}

impl<C> Clone for Gate<C> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<C> fmt::Debug for Gate<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("verifier", &self.inner.verifier)
            .field("policy", &self.inner.policy)
            .finish()
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
            tracing::info!(layer = "request", outcome = "refused", reason = %e, path = %truncated(req.uri().path()));
            Rejection::from(e)
        })
    }

    /// Runs verification and the policy on already extracted facts.
    pub async fn check_facts(&self, facts: &RequestFacts) -> Result<Verified<Principal<C>>, Rejection> {
        let Some(token) = facts.access_jwt() else {
            tracing::info!(layer = "identity", outcome = "missing_credential", method = %facts.method(), path = facts.path());
            return Err(Rejection::MissingCredential);
        };
        let principal = match self.inner.verifier.verify(token.expose()).await {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(layer = "identity", outcome = "invalid_credential", reason = %e, method = %facts.method(), path = facts.path());
                return Err(e.into());
            }
        };
        if !self.inner.policy.allows(&principal) {
            tracing::warn!(layer = "identity", outcome = "forbidden", principal = %principal.id(), method = %facts.method(), path = facts.path());
            return Err(Rejection::Forbidden);
        }
        tracing::info!(layer = "identity", outcome = "verified", principal = %principal.id(), method = %facts.method(), path = facts.path());
        Ok(Verified::new(principal))
    }

    /// The verifier, e.g. to warm its key cache at start-up with `keys().refresh()`.
    pub fn verifier(&self) -> &AccessVerifier<C> {
        &self.inner.verifier
    }
}

fn truncated(path: &str) -> &str {
    let mut end = path.len().min(256);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
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

    /// Builds the gate.
    pub fn build(self) -> Result<Gate<C>, ConfigError> {
        let policy = self.policy.ok_or_else(|| {
            ConfigError::new("policy", "no policy: declare who may pass (an empty Policy admits nobody)")
        })?;
        let fetcher: Arc<dyn KeyFetcher> = match self.fetcher {
            Some(f) => f,
            None => default_fetcher(self.certs_url.unwrap_or_else(|| self.config.default_certs_url()))?,
        };
        let keys = JwksCache::new(fetcher, self.clock.clone(), self.jwks);
        Ok(Gate {
            inner: Arc::new(GateInner {
                verifier: AccessVerifier::new(self.config, keys, self.clock),
                policy,
                limits: self.limits,
            }),
        })
    }
}

#[cfg(feature = "native")]
fn default_fetcher(url: String) -> Result<Arc<dyn KeyFetcher>, ConfigError> {
    Ok(Arc::new(crate::identity::HttpFetcher::new(&url)?))
}

#[cfg(not(feature = "native"))]
fn default_fetcher(_url: String) -> Result<Arc<dyn KeyFetcher>, ConfigError> {
    Err(ConfigError::new(
        "fetcher",
        "without the `native` feature, pass a KeyFetcher to GateBuilder::fetcher",
    ))
}
