//! The gate: [`Gate`] (a requirement plus request limits), [`GateBuilder`] (the Cloudflare
//! Access gate in five lines), [`RoutePolicies`] (per-route gates, deny by default), and the
//! one pipeline every inbound adapter runs ([`pipeline`]). What the Tower layer does around
//! the pipeline is set on the gate too: [`CachePolicy`], [`HeaderHygiene`], [`LoginRedirect`].

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Request, header};
use serde::de::DeserializeOwned;

use crate::clock::{Clock, SystemClock};
use crate::error::{ConfigError, Rejection};
use crate::identity::access_jwt::AccessConfig;
use crate::identity::policy::Policy;
use crate::identity::shared_state::{RateLimit, RevocationList};
use crate::identity::{
    AccessJwt, AccessVerifier, IdentityConfig, IdentityFetcher, JwksCache, JwksConfig, KeyFetcher,
    Requirement, TokenCacheConfig,
};
use crate::principal::{NoClaims, Principal, Verified};
use crate::request::{RequestFacts, RequestLimits};

mod call;
mod forwarding;
mod login;
pub(crate) mod pipeline;
mod reload;
mod routes;
mod shared;

pub use call::Call;
pub use forwarding::HeaderHygiene;
pub use login::LoginRedirect;
pub use pipeline::SelectGate;
pub use reload::ReloadablePolicies;
pub use routes::RoutePolicies;

/// A [`Requirement`] (mechanisms and how they combine) plus request limits: everything needed
/// to turn a request into a [`Verified<Principal>`] or a [`Rejection`].
///
/// [`Gate::builder`] makes the common Cloudflare Access gate; [`Gate::new`] takes any
/// requirement (any-of, all-of, API keys, mTLS, public...).
///
/// Cheap to clone (one `Arc`); clones share the JWKS cache. A `Gate` is itself the Tower
/// [`Layer`](tower_layer::Layer): `router.layer(gate)`. As a layer it removes identity headers
/// a client could forge from the requests it verified (see [`HeaderHygiene`]), marks the
/// responses to them `Cache-Control: private, no-store` (see [`CachePolicy`]), and can send a
/// browser without a credential to the Access login page (see [`LoginRedirect`]).
pub struct Gate<C = NoClaims> {
    inner: Arc<GateInner<C>>,
    cache: CachePolicy,
    hygiene: HeaderHygiene,
    login: Option<LoginRedirect>,
    revocations: Option<Arc<dyn RevocationList>>,
    /// Let requests through (logged) when the revocation list cannot answer, instead of 503.
    revocations_fail_open: bool,
    rate_limit: Option<RateLimit>,
    /// What [`Gate::recheck`] reads the time from.
    clock: Arc<dyn Clock>,
}

/// What the Tower layer does to the `Cache-Control` header of a response to a request it
/// verified. Refusals always carry `Cache-Control: no-store`, whatever this says.
///
/// A response to an authenticated request is for that caller alone, and may carry a
/// credential (a freshly minted link token, a session): no shared cache (a CDN, a corporate
/// proxy) may keep it, nor the browser's disk cache. So by default the layer adds
/// `Cache-Control: private, no-store` to every such response whose handler did not set a
/// `Cache-Control` of its own. A handler that did set one (say `private, max-age=60` for a
/// slow report) made a decision about its own route, and it is kept; choose
/// [`CachePolicy::ForcePrivateNoStore`] to override handlers too, or
/// [`CachePolicy::Unchanged`] for routes that manage caching themselves.
///
/// This applies to public routes ([`Gate::public`]) as well: their responses are verified, as
/// anonymous. A public route that wants to be cached sets its own `Cache-Control`.
///
/// Only the Tower layer (and so axum) applies it. [`Gate::check`] and the Workers adapter
/// return the principal and leave the response to you: set `Cache-Control: private, no-store`
/// there yourself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CachePolicy {
    /// `Cache-Control: private, no-store`, unless the handler set a `Cache-Control` of its own
    /// (the default).
    #[default]
    PrivateNoStore,
    /// `Cache-Control: private, no-store` on every verified response, replacing whatever the
    /// handler set.
    ForcePrivateNoStore,
    /// The layer leaves `Cache-Control` to the handler.
    Unchanged,
}

impl CachePolicy {
    /// Applies the policy to the headers of a response to a verified request.
    pub(crate) fn apply(self, headers: &mut HeaderMap) {
        const PRIVATE_NO_STORE: HeaderValue = HeaderValue::from_static("private, no-store");
        match self {
            Self::PrivateNoStore if headers.contains_key(header::CACHE_CONTROL) => {}
            Self::PrivateNoStore | Self::ForcePrivateNoStore => {
                // `insert` replaces every value the handler may have set.
                headers.insert(header::CACHE_CONTROL, PRIVATE_NO_STORE);
            }
            Self::Unchanged => {}
        }
    }
}

struct GateInner<C> {
    requirement: Requirement<C>,
    limits: RequestLimits,
    /// What the requirement's mechanisms read beyond the built-in credentials.
    declared_headers: Vec<HeaderName>,
}

impl<C> Clone for Gate<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cache: self.cache,
            hygiene: self.hygiene.clone(),
            login: self.login.clone(),
            revocations: self.revocations.clone(),
            revocations_fail_open: self.revocations_fail_open,
            rate_limit: self.rate_limit.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl<C: 'static> fmt::Debug for Gate<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("requirement", &self.inner.requirement)
            .field("cache", &self.cache)
            .field("hygiene", &self.hygiene)
            .field("login", &self.login)
            .field("revocations", &self.revocations)
            .field("rate_limit", &self.rate_limit)
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
            token_cache: TokenCacheConfig::default(),
            limits: RequestLimits::default(),
            identity_url: None,
            identity_fetcher: None,
            identity: IdentityConfig::default(),
            enrich: false,
        }
    }
}

impl<C: DeserializeOwned + Send + Sync + 'static> Gate<C> {
    /// Proves who sent `req`: the request layer, the requirement and its policies, logged,
    /// exactly as the Tower layer does it. For callers without Tower (a custom hyper service,
    /// a gRPC interceptor): pass the request, or `http::Request::from_parts(parts, ())`.
    ///
    /// The request is read before the returned future starts, so the future does not borrow
    /// it (and is `Send` even when the body type is not `Sync`).
    pub fn check<B>(
        &self,
        req: &Request<B>,
    ) -> impl Future<Output = Result<Verified<Principal<C>>, Rejection>> + Send + 'static + use<B, C> {
        SelectGate::check_call(self, Call::from_request(req))
    }

    /// The request layer alone, as this gate reads requests (its limits, and the headers its
    /// mechanisms declared).
    pub fn extract<B>(&self, req: &Request<B>) -> Result<RequestFacts, Rejection> {
        let uri = req.uri();
        RequestFacts::read(
            req.method(),
            uri.path(),
            uri.query(),
            req.headers(),
            self.limits(),
            self.declared_headers(),
        )
        .map_err(Rejection::from)
    }

    /// Runs the requirement on facts already read (e.g. by [`Gate::extract`], or by an adapter
    /// that reads them from elsewhere), and logs the outcome.
    pub async fn check_facts(&self, facts: &RequestFacts) -> Result<Verified<Principal<C>>, Rejection> {
        pipeline::check(self, facts).await
    }
}

impl<C> Gate<C> {
    /// Read time from `clock` in [`Gate::recheck`] (default: the system clock; a gate from
    /// [`Gate::builder`] uses the builder's clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The request limits this gate reads requests with.
    pub fn limits(&self) -> &RequestLimits {
        &self.inner.limits
    }

    /// The requirement this gate enforces.
    pub fn requirement(&self) -> &Requirement<C> {
        &self.inner.requirement
    }

    pub(crate) fn declared_headers(&self) -> &[HeaderName] {
        &self.inner.declared_headers
    }

    /// How the Tower layer marks responses to requests this gate verified (default:
    /// [`CachePolicy::PrivateNoStore`]). E.g. `Gate::public().with_cache_policy(CachePolicy::Unchanged)`
    /// for public routes that set their own caching.
    pub fn with_cache_policy(mut self, policy: CachePolicy) -> Self {
        self.cache = policy;
        self
    }

    /// The [`CachePolicy`] the Tower layer applies for this gate.
    pub fn cache_policy(&self) -> CachePolicy {
        self.cache
    }

    /// What the Tower layer removes from (and, if asked, adds to) the headers of a request
    /// this gate verified, before the inner service sees it (default: [`HeaderHygiene::new`],
    /// client-sent identity headers removed). E.g.
    /// `gate.with_header_hygiene(HeaderHygiene::new().forward_verified_identity())` in front
    /// of an upstream that reads `X-Ztgate-Principal`.
    pub fn with_header_hygiene(mut self, hygiene: HeaderHygiene) -> Self {
        self.hygiene = hygiene;
        self
    }

    /// The [`HeaderHygiene`] the Tower layer applies for this gate.
    pub fn header_hygiene(&self) -> &HeaderHygiene {
        &self.hygiene
    }

    /// Send a browser that arrives with no credential (a `GET` or `HEAD` accepting
    /// `text/html`) to the Access login page instead of answering 401 (Tower layer only; off
    /// by default). See [`LoginRedirect`] for exactly when, and why it cannot be an open
    /// redirect.
    pub fn with_login_redirect(mut self, login: LoginRedirect) -> Self {
        self.login = Some(login);
        self
    }

    /// The [`LoginRedirect`] the Tower layer uses for this gate, if any.
    pub fn login_redirect(&self) -> Option<&LoginRedirect> {
        self.login.as_ref()
    }

    /// Refuse verified requests whose credential is in `list` (401 `revoked`): an API key by
    /// name, an Access login by `sub` or `identity_nonce`, a client certificate by
    /// fingerprint. Checked on every request, after verification; a list that cannot answer
    /// refuses (503 `state_unavailable`).
    pub fn with_revocations(mut self, list: Arc<dyn RevocationList>) -> Self {
        self.revocations = Some(list);
        self
    }

    /// The revocation list, if any.
    pub fn revocations(&self) -> Option<&Arc<dyn RevocationList>> {
        self.revocations.as_ref()
    }

    /// When the revocation list cannot answer, let verified requests through unchecked
    /// (logged as `revocations_unchecked`) instead of refusing them with 503. The default
    /// refuses: an outage of the store is exactly when a revoked key must not start working.
    pub fn allow_unchecked_while_revocations_unavailable(mut self) -> Self {
        self.revocations_fail_open = true;
        self
    }

    /// Whether verified requests pass unchecked while the revocation list cannot answer.
    pub fn revocations_fail_open(&self) -> bool {
        self.revocations_fail_open
    }

    /// Budget requests per client (and, for failures, per credential): answered 429 with
    /// `Retry-After` before any verification once spent. See [`RateLimit`].
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// The rate limit, if any.
    pub fn rate_limit(&self) -> Option<&RateLimit> {
        self.rate_limit.as_ref()
    }
}

impl<C: Send + Sync + 'static> Gate<C> {
    /// A gate whose principals carry custom claims `C` (see [`GateBuilder::custom_claims`]).
    /// With the default claims type, use [`Gate::new`] or [`Gate::with_limits`].
    pub fn with_claims(requirement: Requirement<C>, limits: RequestLimits) -> Self {
        let declared_headers = requirement.declared_headers();
        Self {
            inner: Arc::new(GateInner { requirement, limits, declared_headers }),
            cache: CachePolicy::default(),
            hygiene: HeaderHygiene::default(),
            login: None,
            revocations: None,
            revocations_fail_open: false,
            rate_limit: None,
            clock: Arc::new(SystemClock),
        }
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
        Self::new(Requirement::public())
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
    token_cache: TokenCacheConfig,
    limits: RequestLimits,
    identity_url: Option<String>,
    identity_fetcher: Option<Arc<dyn IdentityFetcher>>,
    identity: IdentityConfig,
    enrich: bool,
}

impl<C> fmt::Debug for GateBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateBuilder").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<C: DeserializeOwned + Clone + Send + Sync + 'static> GateBuilder<C> {
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
            token_cache: self.token_cache,
            limits: self.limits,
            identity_url: self.identity_url,
            identity_fetcher: self.identity_fetcher,
            identity: self.identity,
            enrich: self.enrich,
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

    /// Use a custom key fetcher (tests, a fixed key set, other limits). The default is the
    /// runtime's: `ztgate::native::HttpFetcher` or `ztgate::workers::WorkersFetcher`.
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

    /// Tune the verified-token cache (on by default; [`TokenCacheConfig::disabled`] turns it
    /// off).
    pub fn token_cache(mut self, config: TokenCacheConfig) -> Self {
        self.token_cache = config;
        self
    }

    /// Tune request size limits.
    pub fn request_limits(mut self, limits: RequestLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Fetch users' Access identities (groups, login method, device posture) from this URL
    /// instead of `{team_domain}/cdn-cgi/access/get-identity` (`https://`, or `http://` on
    /// loopback). Identities are fetched only when a [`Policy`] rule needs one, or for every
    /// user with [`GateBuilder::enrich_identity`].
    pub fn identity_url(mut self, url: impl Into<String>) -> Self {
        self.identity_url = Some(url.into());
        self
    }

    /// Fetch identities with a fetcher of your own (tests, another HTTP stack).
    pub fn identity_fetcher(mut self, fetcher: Arc<dyn IdentityFetcher>) -> Self {
        self.identity_fetcher = Some(fetcher);
        self
    }

    /// Tune the identity cache (TTL, size).
    pub fn identity_config(mut self, config: IdentityConfig) -> Self {
        self.identity = config;
        self
    }

    /// Fetch the Access identity of every verified user, so handlers can read groups from
    /// [`AccessUser::identity`](crate::AccessUser::identity) even when no rule needs them. A
    /// failed fetch then leaves the identity empty (and a rule that needs it refuses with 503).
    pub fn enrich_identity(mut self) -> Self {
        self.enrich = true;
        self
    }

    /// Builds the gate: the Access mechanism alone, with the configured request limits.
    pub fn build(self) -> Result<Gate<C>, ConfigError> {
        let (limits, clock) = (self.limits.clone(), self.clock.clone());
        let access = self.build_mechanism()?;
        Ok(Gate::with_claims(Requirement::mechanism(access), limits).with_clock(clock))
    }

    /// Builds only the Access mechanism, to combine with others in a [`Requirement`]
    /// (the request limits set here are then unused: give them to the [`Gate`]).
    pub fn build_mechanism(self) -> Result<AccessJwt<C>, ConfigError> {
        let policy = self.policy.ok_or_else(|| {
            ConfigError::new("policy", "no policy: declare who may pass (an empty Policy admits nobody)")
        })?;
        let fetcher: Arc<dyn KeyFetcher> = match self.fetcher {
            Some(f) => f,
            None => crate::runtime::default_fetcher(
                &self.certs_url.unwrap_or_else(|| self.config.default_certs_url()),
            )?,
        };
        let identity_fetcher: Arc<dyn IdentityFetcher> = match self.identity_fetcher {
            Some(f) => f,
            None => crate::runtime::default_identity_fetcher(
                &self.identity_url.unwrap_or_else(|| self.config.default_identity_url()),
            )?,
        };
        let identity = crate::runtime::identity_source(identity_fetcher, self.identity, self.clock.clone());
        let keys = JwksCache::new(fetcher, self.clock.clone(), self.jwks);
        let verifier = AccessVerifier::new(self.config, keys, self.clock).with_token_cache(self.token_cache);
        Ok(AccessJwt::new(verifier, policy).with_identity_source(Arc::new(identity), self.enrich))
    }
}
