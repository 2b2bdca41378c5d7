//! # ztgate — prove who is calling before anything else runs
//!
//! ztgate is zero-trust auth middleware for admin endpoints behind Cloudflare Access. It
//! works in three layers, always in this order:
//!
//! ```text
//!   Request  ──────────►  Identity  ──────────────►  Storage
//!   what arrived          who is calling, proven      handlers that can only run
//!   (RequestFacts)        (Verified<Principal>)       with a Verified<Principal> in hand
//! ```
//!
//! - [`request`] reads credentials and context from the request without believing them,
//!   with a size limit on everything it reads.
//! - [`identity`] verifies them: Cloudflare Access JWTs (RS256, strict claims, a JWKS cache
//!   with single-flight fetching), then a [`Policy`] decides who is allowed.
//! - [`storage`] holds the capability types storage functions take ([`storage::Actor`]); the
//!   proof itself, [`Verified`], can only be built by ztgate, so a handler or storage function
//!   that takes one cannot run before identity did.
//!
//! Failures fail closed: no or bad credential → 401 with `WWW-Authenticate`; proven but not
//! allowed → 403; no signing keys obtainable → 503 with `Retry-After`. Bodies are JSON with a
//! stable `code` (see [`Rejection`]).
//!
//! ## The smallest whole program (axum)
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use ztgate::{AccessConfig, Gate, Policy, Principal, Verified};
//!
//! async fn whoami(who: Verified<Principal>) -> String {
//!     who.id()
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let access = AccessConfig::new("https://acme.cloudflareaccess.com", ["<aud tag>"])?;
//!     let gate = Gate::builder(access)
//!         .policy(Policy::new().allow_emails(["alice@acme.com"]).allow_service_tokens(["ci.access"]))
//!         .build()?;
//!     let app = Router::new().route("/admin/whoami", get(whoami)).layer(gate);
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `native` | yes | the native runtime: `ztgate::native` (reqwest JWKS fetcher), moka single-flight; `ztgate::outbound`: fetching a URL a caller supplied, guarded against SSRF |
//! | `aws_lc_rs` | yes | RS256 through aws-lc (≈10× faster than `rust_crypto`) |
//! | `rust_crypto` | no | RS256 in pure Rust (pick instead of `aws_lc_rs`) |
//! | `axum` | no | the `Verified<Principal>` extractor, `IntoResponse` for [`Rejection`] |
//! | `dev` | no | `ztgate::dev`: a local issuer for dev mode and tests |
//! | `jwt_simple` | no | RS256 signatures checked by jwt-simple (pure Rust), not jsonwebtoken |
//! | `redis` | no | `ztgate::redis`: the replay guard, revocations and rate limits shared by a fleet through Redis |
//! | `config` | no | `ztgate::config`: one TOML file into the builders' types (routes, keys by digest or reference), for reloads |
//! | `cli` | no | the `ztgate` binary: `inspect`, `verify`, `jwks`, `mint-link`, `sign-webhook`, `check-config` |
//! | `workload` | no | `ztgate::workload`: outbound workload identity — short-lived RS256/ES256 JWTs from a key in a [`SecretSource`](secrets::SecretSource), their OIDC discovery document and JWKS as a Tower service, and AWS STS `AssumeRoleWithWebIdentity` credentials, cached |
//! | `workers` | no | the Cloudflare Workers runtime (wasm32): `ztgate::workers` — Workers fetch for the JWKS, JS clock, RS256 through WebCrypto, `request.cf` client certificates, Worker secrets. Build with `--no-default-features --features workers --target wasm32-unknown-unknown` |
//!
//! Counters and histograms go through the [`metrics`](mod@crate::metrics) facade (names and labels in
//! that module); install any exporter, e.g. Prometheus, in the application.
//!
//! Exactly one runtime (`native` or `workers`) and one crypto backend (`aws_lc_rs` or
//! `rust_crypto`) must be enabled; any other combination is a compile error that says so.
//!
//! ## How the crate is built
//!
//! `docs/architecture.md` has the picture. In short: [`request`] is a leaf; [`identity`] depends
//! on it and defines *ports* (key fetching, single-flight, RS256 verification, time, secrets,
//! shared state); the runtimes (`native`, `workers`) implement those ports and are chosen in one
//! place; the gate runs the one pipeline (select → extract → check → log) that every inbound
//! adapter (the Tower layer, the axum extractor, the Workers request adapter) calls.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![deny(unreachable_pub)]

#[cfg(not(any(feature = "native", feature = "workers")))]
compile_error!("enable a runtime: `native` (default: tokio/reqwest/moka) or `workers` (Cloudflare Workers)");

#[cfg(all(feature = "native", feature = "workers"))]
compile_error!(
    "enable exactly one runtime: `native` and `workers` exclude each other (for Workers: --no-default-features --features workers)"
);

#[cfg(all(feature = "workers", not(target_arch = "wasm32")))]
compile_error!(
    "the `workers` feature targets wasm32-unknown-unknown (cargo build --target wasm32-unknown-unknown)"
);

#[cfg(all(feature = "aws_lc_rs", feature = "rust_crypto"))]
compile_error!("enable exactly one of the `aws_lc_rs` and `rust_crypto` features");

#[cfg(not(any(feature = "aws_lc_rs", feature = "rust_crypto")))]
compile_error!("enable one crypto backend: `aws_lc_rs` (default) or `rust_crypto`");

mod adapters;
mod error;
mod gate;
mod principal;
mod runtime;

pub mod clock;
#[cfg(feature = "config")]
pub mod config;
#[cfg(feature = "dev")]
pub mod dev;
pub mod identity;
pub mod metrics;
#[cfg(feature = "native")]
pub mod outbound;
pub mod request;
pub mod secrets;
pub mod storage;
#[cfg(feature = "workload")]
pub mod workload;

// The public interface is:
pub use adapters::tower::{IdentityService, ResponseFuture};
pub use error::{ConfigError, Rejection};
pub use gate::{CachePolicy, Call, Gate, GateBuilder, ReloadablePolicies, RoutePolicies, SelectGate};
pub use gate::{HeaderHygiene, LoginRedirect};
pub use identity::access_jwt::AccessConfig;
pub use identity::policy::Policy;
pub use principal::{
    AccessIdentity, AccessUser, ApiKeyPrincipal, ClientCertPrincipal, CustomPrincipal, Group,
    IdentityProvider, NoClaims, PostureCheck, Principal, Proof, ServiceToken, SignedTokenPrincipal, Verified,
};

/// A boxed, sendable future: what the ports ([`identity::KeyFetcher`],
/// [`identity::webhook::ReplayGuard`], [`identity::Mechanism`]) return, so that they stay
/// object-safe.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The native runtime (feature `native`, the default): what a tokio service needs beyond the
/// defaults [`Gate::builder`] already picks.
#[cfg(feature = "native")]
pub mod native {
    pub use crate::runtime::native::{HttpFetcher, HttpIdentityFetcher, HttpSiteverify};
}

#[cfg(feature = "workers")]
pub mod workers {
    //! Cloudflare Workers: the same gates, compiled to `wasm32-unknown-unknown` with workers-rs
    //! (feature `workers`).
    //!
    //! What changes at the edge, and what this module provides for it:
    //! - **JWKS over the Workers fetch API**: [`WorkersFetcher`] (the [`Gate::builder`](crate::Gate::builder) default in a
    //!   Workers build), bounded like the native fetcher and checked by the same response rules.
    //!   The cache is the same [`JwksCache`](crate::identity::JwksCache); its single-flight runs
    //!   without moka, which panics in an isolate. Keep the [`Gate`](crate::Gate) in a `static` so the keys live
    //!   as long as the isolate (see the example below). A new isolate's first fetch is answered
    //!   from the Cache API when another isolate stored a fresh copy there
    //!   ([`WorkersFetcher::with_edge_cache`]), so isolates do not each fetch the JWKS.
    //! - **Time**: [`SystemClock`](crate::clock::SystemClock) reads `Date.now()` here;
    //!   `SystemTime::now()` panics in a Worker.
    //! - **RS256 through WebCrypto** (`crypto.subtle.verify`), with the pure-Rust check as the
    //!   fallback when WebCrypto is unavailable. [`set_webcrypto`] switches it off, to compare.
    //! - **Requests**: [`check`] runs the same pipeline as the Tower layer (select the gate, read
    //!   the facts, verify, log) on a `worker::Request`; [`request_facts`] is the request layer
    //!   alone. The client certificate comes from the raw `request.cf.tlsClientAuth` object
    //!   ([`client_cert`]); client-sent `cf-cert-*` headers are never read here.
    //! - **Logs**: [`ConsoleLog`] writes each `tracing` event as one JSON line to the console,
    //!   so decisions reach `wrangler tail` and Workers Logs with their fields.
    //! - **Secrets**: [`WorkerSecret`] (`env.SECRET`) and [`SecretStoreSecret`] (a Secrets Store
    //!   binding's `await get()`), both [`SecretSource`](crate::secrets::SecretSource)s; wrap in
    //!   [`PerRequest`](crate::secrets::PerRequest) to read at most once per request.
    //! - **Shared state for the fleet of isolates**: [`DurableState`] reaches one SQLite-backed
    //!   Durable Object by name through the binding you name, and hands out the replay guard,
    //!   the rate limiter and the revocation list; the Worker declares the object's class and
    //!   delegates to [`StateObject`] (`docs/fleet-state.md`). It also holds the claims on signed
    //!   queue envelopes ([`DurableState::envelope_claims`]).
    //! - **Event sources without a request**, each with its identity (`docs/workers.md`): a cron
    //!   trigger is the platform itself, [`Principal::Scheduled`](crate::Principal::Scheduled),
    //!   proven by the runtime's event ([`scheduled`]); a Workers RPC call over a service binding
    //!   carries the caller's credential as an argument, checked by the same route table and
    //!   pipeline as a request ([`check_rpc`], at the pseudo-route `RPC /rpc/<method>`); a queue
    //!   message is a signed envelope opened before its body reaches storage
    //!   ([`identity::envelope`](crate::identity::envelope), claims in the Durable Object).
    //!
    //! ```ignore
    //! use std::sync::OnceLock;
    //! use worker::{Context, Env, Request, event};
    //! use ztgate::{AccessConfig, Gate, Policy};
    //!
    //! static GATE: OnceLock<Gate> = OnceLock::new();
    //!
    //! #[event(fetch)]
    //! async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<http::Response<String>> {
    //!     let gate = match GATE.get() {
    //!         Some(gate) => gate,
    //!         None => {
    //!             let team = env.var("ZTGATE_TEAM_DOMAIN")?.to_string();
    //!             let config = AccessConfig::new(&team, ["aud-tag"]).map_err(|e| e.to_string())?;
    //!             // The JWKS comes from `{team}/cdn-cgi/access/certs` through a WorkersFetcher.
    //!             let gate = Gate::builder(config)
    //!                 .policy(Policy::new().allow_emails(["alice@example.com"]))
    //!                 .build()
    //!                 .map_err(|e| e.to_string())?;
    //!             GATE.get_or_init(|| gate)
    //!         }
    //!     };
    //!     match ztgate::workers::check(gate, &req).await {
    //!         Ok(who) => Ok(http::Response::new(format!("hello {}", who.principal().id()))),
    //!         Err(rejection) => Ok(rejection.to_response()),
    //!     }
    //! }
    //! ```
    //! `examples/worker/` is a complete Worker with the admin server's routes and configuration.

    pub use crate::adapters::workers::{MAX_HEADERS, check, client_cert, headers, request_facts};
    pub use crate::adapters::workers::{RPC_METHOD, RPC_TOKEN_PARAM, RpcCredential, check_rpc, scheduled};
    pub use crate::runtime::workers::WorkersSiteverify;
    pub use crate::runtime::workers::{
        ConsoleLog, SecretStoreSecret, WorkerSecret, WorkersFetcher, WorkersIdentityFetcher, set_webcrypto,
    };
    pub use crate::runtime::workers::{
        DurableClaims, DurableRateLimiter, DurableReplayGuard, DurableRevocations, DurableState, StateObject,
    };
}

/// Shared state for a fleet of native instances, in Redis (feature `redis`): the webhook
/// replay guard, the revocation list and the rate limits of
/// [`identity::shared_state`], one [`RedisStore`](redis::RedisStore) for all three.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ztgate::identity::shared_state::{Budget, RateLimit};
/// use ztgate::redis::RedisStore;
/// # fn main() -> Result<(), ztgate::ConfigError> {
/// let redis = RedisStore::connect("redis://127.0.0.1:6379/0")?;
/// let policies = ztgate::RoutePolicies::new()
///     .with_revocations(Arc::new(redis.revocations()))
///     .with_rate_limit(RateLimit::failures(Arc::new(redis.rate_limiter(Budget::new(20, Duration::from_secs(300))?))));
/// # let _ = policies;
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "redis")]
pub mod redis {
    pub use crate::runtime::redis_state::{
        RedisEnvelopeClaims, RedisRateLimiter, RedisReplayGuard, RedisRevocations, RedisStore,
    };
}

/// Hooks for ztgate's own tests, fuzz targets and benchmarks. **Not part of the API**: no
/// stability promise, may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::identity::jwks::{KeySet, parse_max_age, review_key};
    pub use crate::identity::rs256::Rs256Key;
}

/// The README's examples, compiled as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// `docs/without-tower.md`'s example, compiled as a doc test so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../docs/without-tower.md")]
pub struct WithoutTowerDoctests;
