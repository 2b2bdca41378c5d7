//! Layer 2 — Identity: turn untrusted request facts into a proven [`Principal`](crate::Principal).
//!
//! - [`access_jwt`]: Cloudflare Access JWT verification (RS256, strict claims).
//! - [`jwks`]: the signing-key cache with single-flight fetching and bounded staleness.
//! - [`policy`]: which proven principals are allowed.
//!
//! Identity code never touches storage, and never reads a request directly: it takes
//! [`RequestFacts`](crate::request::RequestFacts).

pub mod access_jwt;
pub mod api_key;
pub mod backend;
#[cfg(feature = "native")]
mod http_fetcher;
pub mod jwks;
pub mod mechanism;
pub mod policy;

pub use access_jwt::{AccessConfig, AccessVerifier, TokenError};
pub use api_key::ApiKeys;
#[cfg(feature = "native")]
pub use http_fetcher::{DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_JWKS_BYTES, HttpFetcher};
pub use jwks::{FetchError, FetchedJwks, JwksCache, JwksConfig, KeyError, KeyFetcher, StaticFetcher};
pub use mechanism::{AccessJwt, ApiKeyAuth, Attempt, ClientCertAuth, Mechanism, Requirement};
pub use policy::Policy;
