//! Outbound workload identity (feature `workload`): the service proves who *it* is to a cloud,
//! with no long-lived cloud key stored anywhere.
//!
//! The service is its own small OpenID Connect issuer. It signs short-lived JWTs with a key
//! read from a [`SecretSource`](crate::secrets::SecretSource) ([`WorkloadIssuer`]), publishes
//! the discovery document and the JWKS that let anyone verify them ([`DiscoveryService`], a
//! Tower service), and exchanges a token at the cloud's security token service for temporary
//! credentials ([`StsClient`]; [`WebIdentityCredentials`] keeps them until shortly before they
//! expire). The cloud trusts the issuer because an operator said so once: an IAM OIDC identity
//! provider and a role trust policy on AWS, a workload identity pool provider on GCP
//! (`docs/workload-identity.md` has both, and why the issuer must be public HTTPS).
//!
//! ```text
//!  service ──sign──► JWT (iss, sub, aud, exp ≤ 1 h) ──AssumeRoleWithWebIdentity──► STS
//!                                                                                │ fetches
//!  cloud ◄──── temporary credentials, cached until expiry − margin ◄─────────────┘ {iss}/.well-known/…
//! ```
//!
//! - **Tokens**: RS256 (2048–4096-bit RSA) or ES256 (P-256), signed by aws-lc; claims
//!   `iss`, `sub`, `aud`, `iat`, `nbf`, `exp` (1 min to 1 h after `iat`, default 5 min) and a
//!   random `jti`; the header's `kid` is the key's RFC 7638 thumbprint unless configured. The
//!   key is PEM (PKCS#8; PKCS#1 or SEC 1 too), read on every signature and parsed again only
//!   when its bytes change, so a rotated key is used at once.
//! - **Rotation**: [`PreviousKey`]s are published in the JWKS beside the signing key (never
//!   used to sign), so tokens the old key signed stay verifiable while verifiers catch up.
//! - **Discovery**: `GET {issuer path}/.well-known/openid-configuration` and
//!   `/.well-known/jwks.json`, with `Cache-Control`; anything else 404, another method 405.
//! - **Exchange**: a form POST per attempt, each with a timeout and a body cap; retries with
//!   jittered exponential backoff only for failures that may pass (timeouts, connection
//!   errors, 5xx, `IDPCommunicationError`, `Throttling`), never for `AccessDenied` and other
//!   refusals; a deadline on the whole. `https://` only, unless a test opts in to `http://` on
//!   loopback ([`StsConfig::dangerously_allow_http_on_loopback`]).
//! - **Secrets stay secret**: [`AwsCredentials`] and [`IssuedToken`] redact themselves in
//!   `Debug`; errors never quote a token, a credential or key material.
//!
//! ```
//! use std::sync::Arc;
//! use tower::ServiceExt as _;
//! use ztgate::clock::SystemClock;
//! use ztgate::secrets::StaticSecret;
//! use ztgate::workload::{Algorithm, IssuerConfig, StsClient, StsConfig, WebIdentityCredentials, WorkloadIssuer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
//! # use base64::Engine as _;
//! # let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &aws_lc_rs::rand::SystemRandom::new())?;
//! # let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", base64::prelude::BASE64_STANDARD.encode(der.as_ref()));
//! // In production: FileSecret::new("/run/secrets/workload-key.pem"), or a secret store.
//! let key = StaticSecret::new(pem);
//! let config = IssuerConfig::new("https://id.example.com", "system:billing-exporter", ["sts.amazonaws.com"])?;
//! let issuer = WorkloadIssuer::new(config, Algorithm::Es256, key, Arc::new(SystemClock));
//!
//! // What the cloud fetches, served by any Tower stack (axum, hyper, tonic).
//! let discovery = issuer.discovery_service();
//! let request = http::Request::get("/.well-known/openid-configuration").body(String::new())?;
//! let response = discovery.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! assert!(response.body().contains(r#""jwks_uri":"https://id.example.com/.well-known/jwks.json""#));
//!
//! // A token, for a look (the exchange below signs its own).
//! let token = issuer.sign().await?;
//! assert!(token.expires_at() - token.issued_at() <= 300);
//!
//! // Credentials, exchanged once and shared until shortly before they expire.
//! let sts = StsClient::new(
//!     StsConfig::new("arn:aws:iam::123456789012:role/billing-exporter", "billing-exporter")?
//!         .with_endpoint("https://sts.eu-west-1.amazonaws.com/"),
//! )?;
//! let aws = WebIdentityCredentials::new(issuer.clone(), sts, Arc::new(SystemClock));
//! # let _ = aws;
//! // let credentials = aws.credentials().await?;   // AccessKeyId, SecretAccessKey, SessionToken
//! # Ok(())
//! # }
//! ```

mod cache;
mod discovery;
mod issuer;
mod sts;

pub use cache::WebIdentityCredentials;
pub use discovery::DiscoveryService;
pub use issuer::{
    Algorithm, DISCOVERY_PATH, IssueError, IssuedToken, IssuerConfig, JWKS_PATH, MAX_PREVIOUS_KEYS,
    PreviousKey, WorkloadIssuer,
};
pub use sts::{AwsCredentials, DEFAULT_ENDPOINT, StsClient, StsConfig, StsError};
