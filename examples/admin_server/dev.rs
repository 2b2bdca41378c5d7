//! Offline dev mode (no `ZTGATE_TEAM_DOMAIN`): this process is its own Access issuer, with a
//! signing key made at start-up and its JWKS served at [`CERTS_PATH`], its own `get-identity`
//! endpoint at [`IDENTITY_PATH`] (the dev user is in the group [`DEV_GROUP`], which is what
//! admits them: the group check runs for real), and makes a random API key named `dev`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use ztgate::clock::unix_now;
use ztgate::dev::{DevKey, identity_json, jwks_json, user_claims};
use ztgate::identity::hmac_token::KeyRing;
use ztgate::identity::{AccessJwt, ApiKeys};
use ztgate::secrets::Secret;
use ztgate::{AccessConfig, Gate, Policy};

use crate::LOG_TARGET;
use crate::config::{EnvError, Fatal};

pub(crate) const CERTS_PATH: &str = "/cdn-cgi/access/certs";
pub(crate) const IDENTITY_PATH: &str = "/cdn-cgi/access/get-identity";
/// The group dev mode admits; the dev user's identity lists it.
pub(crate) const DEV_GROUP: &str = "ztgate-dev-admins";
const DEV_AUD: &str = "ztgate-dev";
const DEV_EMAIL: &str = "dev@localhost";
const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
const DEV_API_KEY_NAME: &str = "dev";

/// Dev mode's API keys: one random key named `dev`, returned too so it can be printed.
pub(crate) fn api_keys() -> Result<(ApiKeys, String), Fatal> {
    let key = random_api_key()?;
    let keys = ApiKeys::new();
    keys.insert(DEV_API_KEY_NAME, Secret::from(key.as_str()))?;
    Ok((keys, key))
}

/// A dev API key: 32 hex characters (128 bits) from the operating system's CSPRNG. ztgate
/// exposes that generator only through `KeyRing::random`, so: mint with a fresh random ring
/// (its MAC is keyed by 32 random bytes) and hash the token.
fn random_api_key() -> Result<String, Fatal> {
    let ring = KeyRing::random().map_err(|e| Fatal::Runtime(e.to_string()))?;
    let token = ring
        .mint("dev-api-key", DEV_API_KEY_NAME, unix_now(), Duration::from_secs(1))
        .map_err(|e| Fatal::Runtime(e.to_string()))?;
    let digest = Sha256::digest(token.as_bytes());
    Ok(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
}

/// A key ring of one random key (id `random`), as `ZTGATE_HMAC_KEYS` text: 64 hex characters
/// (256 bits) from the operating system's CSPRNG, through `KeyRing::random` as for
/// [`random_api_key`]. For when no key ring is configured; links die with the process.
pub(crate) fn random_hmac_keys() -> Result<Secret, Fatal> {
    let ring = KeyRing::random().map_err(|e| Fatal::Runtime(e.to_string()))?;
    let token = ring
        .mint("dev-hmac-key", "random", unix_now(), Duration::from_secs(1))
        .map_err(|e| Fatal::Runtime(e.to_string()))?;
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Secret::from(format!("random:{hex}")))
}

/// Dev mode: this process is its own Access issuer, at `http://<listen address>`.
pub(crate) struct DevIssuer {
    key: DevKey,
    origin: String,
}

impl DevIssuer {
    pub(crate) fn new(addr: SocketAddr) -> Result<Self, Fatal> {
        // Reach our own listener through loopback, whatever address it is bound to. The
        // JWKS is fetched over plain http, which ztgate only allows for loopback hosts.
        let ip = match addr.ip() {
            ip if ip.is_loopback() => ip,
            IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
            _ => {
                return Err(EnvError::new(
                    "ZTGATE_LISTEN",
                    format!(
                        "dev mode serves its own JWKS over http and needs a loopback address, not {addr}"
                    ),
                )
                .into());
            }
        };
        let key = DevKey::generate("ztgate-dev").map_err(|e| Fatal::Runtime(e.to_string()))?;
        Ok(Self { key, origin: format!("http://{}", SocketAddr::new(ip, addr.port())) })
    }

    /// Real Access verification, fetching our JWKS over HTTP exactly as production fetches
    /// Cloudflare's.
    pub(crate) fn access(&self) -> Result<Arc<AccessJwt>, EnvError> {
        Ok(Arc::new(
            Gate::builder(AccessConfig::new(&self.origin, [DEV_AUD])?)
                .certs_url(format!("{}{CERTS_PATH}", self.origin))
                .identity_url(format!("{}{IDENTITY_PATH}", self.origin))
                .policy(Policy::new().allow_groups([DEV_GROUP]))
                .build_mechanism()?,
        ))
    }

    fn curl_line(&self) -> String {
        let now = unix_now();
        let token =
            self.key.sign(&user_claims(&self.origin, DEV_AUD, DEV_EMAIL, now, DEV_TOKEN_TTL.as_secs()));
        format!("curl -H 'Cf-Access-Jwt-Assertion: {token}' {}/admin/whoami", self.origin)
    }

    /// What this issuer's `get-identity` answers for the `CF_Authorization` cookie `cookies`
    /// holds: the identity of the token's email, in [`DEV_GROUP`] if it is the dev user. The
    /// token is not checked here (the gate verified it before asking); `None` without one.
    pub(crate) fn identity(cookies: &str) -> Option<String> {
        let token = cookies.split(';').find_map(|c| c.trim().strip_prefix("CF_Authorization="))?;
        let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
        let email = claims["email"].as_str()?;
        let groups: &[&str] = if email == DEV_EMAIL { &[DEV_GROUP] } else { &[] };
        Some(identity_json(email, groups, &["otp"]).to_string())
    }

    /// The JWKS of the dev signing key, served at [`CERTS_PATH`].
    pub(crate) fn jwks(&self) -> String {
        jwks_json(&[&self.key])
    }

    /// Warns that this is dev mode and prints `curl` lines to try: a token for `dev@localhost`,
    /// and `api_key` (the random dev API key) when one was made.
    pub(crate) fn announce(&self, api_key: Option<&str>) {
        tracing::warn!(
            target: LOG_TARGET,
            "dev mode: tokens are signed by a key made at start-up; set ZTGATE_TEAM_DOMAIN for production"
        );
        println!("dev mode: try\n  {}", self.curl_line());
        if let Some(key) = api_key {
            println!("  curl -H 'X-Api-Key: {key}' {}/ops/stats", self.origin);
        }
    }
}
