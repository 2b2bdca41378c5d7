//! Layer 2 — Identity: turn untrusted request facts into a proven [`Principal`](crate::Principal).
//!
//! A [`Mechanism`] reads [`RequestFacts`](crate::request::RequestFacts) and answers *not mine*,
//! *verified* or *refused*; a [`Requirement`] combines mechanisms (any-of, all-of, public).
//! The mechanisms, one file each with the code that verifies and the adapter that makes it a
//! mechanism:
//!
//! - [`AccessJwt`]: Cloudflare Access JWTs (RS256, strict claims) through an [`AccessVerifier`],
//!   authorized by a [`Policy`](crate::Policy); keys from a [`JwksCache`]; the user's Access
//!   identity (groups, login method, device posture) fetched when a rule needs it through an
//!   [`IdentityFetcher`]. [`AccessApplications`] serves several applications or teams at once.
//! - [`ApiKeyAuth`]: named API keys ([`ApiKeys`]), stored as SHA-256 digests, compared in
//!   constant time.
//! - [`ClientCertAuth`]: client certificates Cloudflare verified (mTLS), optionally pinned.
//! - [`hmac_token::SignedTokenAuth`]: HMAC-signed tokens (unsubscribe links, session cookies).
//! - [`envelope`]: signed envelopes for queue messages (an HMAC-signed token over the body's
//!   digest, bound to the queue's name, with an expiry and a replay guard), opened by the
//!   consumer before the body reaches storage.
//! - [`webhook`]: webhook signatures (Svix/Resend, GitHub, Stripe) and the replay guard. A
//!   webhook is verified over its raw body, so it is called by the handler that reads the body,
//!   with the request's headers, rather than run as a mechanism on the facts.
//!
//! Identity never touches storage and never names a runtime, Tower or the gate. What it needs
//! from a platform it asks through ports: [`KeyFetcher`] (the JWKS over HTTP or the Workers
//! fetch API), [`Clock`](crate::clock::Clock), [`SecretSource`](crate::secrets::SecretSource),
//! [`ReplayGuard`](webhook::ReplayGuard), and two the runtimes fill in without you seeing them:
//! a single-flight for concurrent key fetches and the engine that checks RS256 signatures.

mod access_apps;
pub(crate) mod access_identity;
pub(crate) mod access_jwt;
mod api_key;
mod client_cert;
pub mod envelope;
pub mod hmac_token;
pub(crate) mod jwks;
pub(crate) mod mechanism;
pub(crate) mod policy;
pub(crate) mod ports;
pub(crate) mod rs256;
pub mod shared_state;
pub(crate) mod token_cache;
pub mod turnstile;
pub mod webhook;

pub use crate::error::TokenError;
pub use access_apps::AccessApplications;
pub use access_identity::{IdentityConfig, IdentityFetcher};
pub use access_jwt::{AccessJwt, AccessVerifier};
pub use api_key::{ApiKeyAuth, ApiKeys};
pub use client_cert::ClientCertAuth;
pub use jwks::{
    DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_JWKS_BYTES, FetchError, FetchedJwks, JwksCache, JwksConfig, KeyError,
    KeyFetcher, StaticFetcher,
};
pub use mechanism::{Attempt, Mechanism, Requirement};
pub use policy::Decision;
pub use token_cache::TokenCacheConfig;
