//! Layer 2 — Identity: turn untrusted request facts into a proven [`Principal`](crate::Principal).
//!
//! - [`access_jwt`]: Cloudflare Access JWT verification (RS256, strict claims).
//! - [`jwks`]: the signing-key cache with single-flight fetching and bounded staleness.
//! - [`mechanism`]: the mechanism trait, API keys, mTLS, signed tokens, and any-of/all-of.
//! - [`api_key`]: named API keys stored as SHA-256 digests, compared in constant time.
//! - [`hmac_token`]: HMAC-signed tokens (unsubscribe links, magic links, session cookies).
//! - [`webhook`]: webhook signatures (Svix/Resend, GitHub, Stripe) and a replay guard.
//! - [`policy`]: which proven principals are allowed.
//!
//! Identity code never touches storage, and never reads a request directly: it takes
//! [`RequestFacts`](crate::request::RequestFacts).

pub mod access_jwt;
pub mod api_key;
pub mod backend;
#[cfg(any(not(feature = "native"), test))]
pub(crate) mod flight;
pub mod hmac_token;
#[cfg(feature = "native")]
mod http_fetcher;
pub mod jwks;
pub mod mechanism;
pub mod policy;
pub mod webhook;

pub use access_jwt::{AccessConfig, AccessVerifier, TokenError};
pub use api_key::ApiKeys;
pub use hmac_token::{HmacKey, HmacTokenError, KeyRing, MintError, SignedToken};
#[cfg(feature = "native")]
pub use http_fetcher::{DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_JWKS_BYTES, HttpFetcher};
pub use jwks::{FetchError, FetchedJwks, JwksCache, JwksConfig, KeyError, KeyFetcher, StaticFetcher};
pub use mechanism::{
    AccessJwt, ApiKeyAuth, Attempt, ClientCertAuth, Mechanism, Requirement, SignedTokenAuth, TokenSource,
};
pub use policy::Policy;
pub use webhook::{InMemoryReplayGuard, ReplayGuard, VerifiedWebhook, WebhookVerifier};
