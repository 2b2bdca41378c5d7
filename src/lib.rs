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
//! - [`storage`] holds the capability types: [`Verified`] can only be built by ztgate, so a
//!   handler or storage function that takes one cannot run before identity did.
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
//! | `native` | yes | the reqwest JWKS fetcher and moka single-flight cache |
//! | `aws_lc_rs` | yes | RS256 through aws-lc (≈10× faster than `rust_crypto`) |
//! | `rust_crypto` | no | RS256 in pure Rust (pick instead of `aws_lc_rs`) |
//! | `axum` | no | the `Verified<Principal>` extractor, `IntoResponse` for [`Rejection`] |
//! | `dev` | no | `ztgate::dev`: a local issuer for dev mode and tests |
//! | `jwt_simple` | no | RS256 signatures checked by jwt-simple (pure Rust), not jsonwebtoken |
//! | `workers` | no | Cloudflare Workers (wasm32): `ztgate::workers` — Workers fetch for the JWKS, JS clock, RS256 through WebCrypto, `request.cf` client certificates, Worker secrets. Build with `--no-default-features --features workers --target wasm32-unknown-unknown` |

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(not(any(feature = "native", feature = "workers")))]
compile_error!("enable a runtime: `native` (default: tokio/reqwest/moka) or `workers` (Cloudflare Workers)");

#[cfg(all(feature = "workers", not(target_arch = "wasm32")))]
compile_error!(
    "the `workers` feature targets wasm32-unknown-unknown (cargo build --target wasm32-unknown-unknown)"
);

#[cfg(all(feature = "aws_lc_rs", feature = "rust_crypto"))]
compile_error!("enable exactly one of the `aws_lc_rs` and `rust_crypto` features");

#[cfg(not(any(feature = "aws_lc_rs", feature = "rust_crypto")))]
compile_error!("enable one crypto backend: `aws_lc_rs` (default) or `rust_crypto`");

#[cfg(feature = "axum")]
mod axum;
pub mod clock;
#[cfg(feature = "dev")]
pub mod dev;
mod error;
mod gate;
pub mod identity;
mod layer;
mod principal;
pub mod request;
mod routes;
pub mod secrets;
pub mod storage;
#[cfg(feature = "workers")]
pub mod workers;

pub use error::{ConfigError, Rejection};

/// The README's examples, compiled as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
pub use gate::{Gate, GateBuilder};
pub use identity::{AccessConfig, Policy};
pub use layer::{IdentityService, ResponseFuture, SelectGate};
pub use principal::{
    AccessUser, ApiKeyPrincipal, ClientCertPrincipal, NoClaims, Principal, Proof, ServiceToken,
    SignedTokenPrincipal, Verified,
};
pub use routes::RoutePolicies;
pub use secrets::Secret;
