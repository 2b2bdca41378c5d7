//! The workload's own tokens: short-lived JWTs signed with a key read from a
//! [`SecretSource`], and the JWKS and discovery document that let a cloud verify them.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::clock::Clock;
use crate::error::ConfigError;
use crate::secrets::{Secret, SecretError, SecretSource};

/// Where the discovery document lives under the issuer URL (OpenID Connect Discovery 1.0 §4).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Where the JWKS lives under the issuer URL (named by the discovery document's `jwks_uri`).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The claims every token carries, as the discovery document lists them.
const CLAIMS: [&str; 7] = ["aud", "exp", "iat", "iss", "jti", "nbf", "sub"];
/// The longest `sub` and audience accepted (AWS allows 255 characters in a condition key's value).
const MAX_CLAIM_BYTES: usize = 255;
/// The most audiences one token names.
const MAX_AUDIENCES: usize = 8;
/// The longest configured key id.
const MAX_KID_BYTES: usize = 128;
/// The most previous keys a JWKS publishes beside the current one.
pub const MAX_PREVIOUS_KEYS: usize = 4;
/// How long a built JWKS is served before the key sources are read again (by the issuer's clock).
const JWKS_REBUILD_AFTER: u64 = 60;

/// The signature algorithm of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, a 2048- to 4096-bit RSA key. Accepted by every cloud.
    Rs256,
    /// ECDSA on P-256 with SHA-256: smaller tokens and keys, faster and constant-time signing.
    Es256,
}

impl Algorithm {
    /// The JOSE name: `RS256` or `ES256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the workload's tokens say: who issues them (`iss`), who they are about (`sub`), who
/// they are for (`aud`), and how long they live.
///
/// The issuer is the URL the cloud was told to trust: it fetches
/// `{issuer}/.well-known/openid-configuration`, then the JWKS it names. It must be `https://`
/// (plain `http://` is accepted only on a loopback host, for tests: no cloud would accept it),
/// with no query, fragment or credentials; a trailing `/` is removed, since the token's `iss`
/// must equal the configured provider URL character for character.
#[derive(Clone, Debug)]
pub struct IssuerConfig {
    issuer: String,
    /// The issuer URL's path (`""` for an origin), under which the documents are served.
    path: String,
    subject: String,
    audiences: Vec<String>,
    ttl: Duration,
    key_id: Option<String>,
}

impl IssuerConfig {
    /// The longest token lifetime accepted (1 h): a token is exchanged at once, and a stolen
    /// one should not outlive the credentials it could buy.
    pub const MAX_TTL: Duration = Duration::from_secs(3600);
    /// The shortest lifetime accepted (1 min), to leave room for clock skew and retries.
    pub const MIN_TTL: Duration = Duration::from_secs(60);
    /// The default lifetime (5 min).
    pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

    /// Tokens from `issuer` about `subject` for `audiences` (`sts.amazonaws.com` for AWS; the
    /// workload identity provider's resource name for GCP). Errors name `workload.issuer`,
    /// `workload.subject` or `workload.audiences`.
    pub fn new<I, S>(issuer: &str, subject: impl Into<String>, audiences: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let (issuer, path) = check_issuer(issuer)?;
        let subject = subject.into();
        check_claim("workload.subject", &subject)?;
        let audiences: Vec<String> = audiences.into_iter().map(Into::into).collect();
        if audiences.is_empty() || audiences.len() > MAX_AUDIENCES {
            return Err(ConfigError::new("workload.audiences", format!("1 to {MAX_AUDIENCES} audiences")));
        }
        for audience in &audiences {
            check_claim("workload.audiences", audience)?;
        }
        Ok(Self { issuer, path, subject, audiences, ttl: Self::DEFAULT_TTL, key_id: None })
    }

    /// The tokens' lifetime, whole seconds from [`IssuerConfig::MIN_TTL`] to
    /// [`IssuerConfig::MAX_TTL`] (default [`IssuerConfig::DEFAULT_TTL`]); else an error naming
    /// `workload.ttl`.
    pub fn with_ttl(mut self, ttl: Duration) -> Result<Self, ConfigError> {
        if ttl < Self::MIN_TTL || ttl > Self::MAX_TTL {
            return Err(ConfigError::new("workload.ttl", "must be between 60 s and 1 h"));
        }
        self.ttl = Duration::from_secs(ttl.as_secs());
        Ok(self)
    }

    /// A fixed `kid` for the signing key, instead of its RFC 7638 thumbprint (the default).
    /// A fixed id must change with the key: two keys under one `kid` make verifiers refuse
    /// both. 1 to 128 printable ASCII characters; else an error naming `workload.key_id`.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Result<Self, ConfigError> {
        self.key_id = Some(check_kid(key_id.into())?);
        Ok(self)
    }

    /// The issuer URL, as tokens carry it in `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `sub` of every token.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The `aud` of every token (a string for one audience, an array for several).
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// The tokens' lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}{DISCOVERY_PATH}", self.issuer)
    }

    /// `{issuer}/.well-known/jwks.json`, the discovery document's `jwks_uri`.
    pub fn jwks_url(&self) -> String {
        format!("{}{JWKS_PATH}", self.issuer)
    }

    /// The issuer URL's path (`""` for a bare origin).
    pub(crate) fn path(&self) -> &str {
        &self.path
    }
}

fn check_issuer(issuer: &str) -> Result<(String, String), ConfigError> {
    let setting = "workload.issuer";
    let url = reqwest::Url::parse(issuer)
        .map_err(|e| ConfigError::new(setting, format!("{issuer:?} is not a URL: {e}")))?;
    let host = url.host_str().unwrap_or("");
    match url.scheme() {
        "https" => {}
        "http" if crate::identity::jwks::is_loopback_host(host) => {}
        _ => return Err(ConfigError::new(setting, "must be https:// (http:// only on a loopback host)")),
    }
    if host.is_empty() || !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(setting, "must name a host and no credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(setting, "must have no query or fragment"));
    }
    let mut issuer = url.as_str().to_owned();
    while issuer.ends_with('/') {
        issuer.pop();
    }
    let path = url.path().trim_end_matches('/').to_owned();
    Ok((issuer, path))
}

fn check_claim(setting: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > MAX_CLAIM_BYTES || value.chars().any(char::is_control) {
        return Err(ConfigError::new(setting, "must be 1 to 255 bytes without control characters"));
    }
    Ok(())
}

fn check_kid(kid: String) -> Result<String, ConfigError> {
    if kid.is_empty() || kid.len() > MAX_KID_BYTES || !kid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new("workload.key_id", "must be 1 to 128 printable ASCII characters"));
    }
    Ok(kid)
}

// ---------------------------------------------------------------------------------------------
// Keys.

/// A key published in the JWKS beside the signing key, so tokens it signed stay verifiable
/// while a rotation settles (see `docs/workload-identity.md`). Its source holds the old PEM
/// private key, or its public JWK as the JWKS published it (a JSON object); only the public
/// part is ever published, under its RFC 7638 thumbprint or the configured `kid`.
#[derive(Debug)]
pub struct PreviousKey {
    algorithm: Algorithm,
    source: Box<dyn SecretSource>,
    key_id: Option<String>,
}

impl PreviousKey {
    /// The key in `source`, for `algorithm`, under its RFC 7638 thumbprint as `kid`.
    pub fn new(algorithm: Algorithm, source: impl SecretSource) -> Self {
        Self { algorithm, source: Box::new(source), key_id: None }
    }

    /// Under a fixed `kid` (the one its tokens carry, if it was signing with a fixed id).
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Result<Self, ConfigError> {
        self.key_id = Some(check_kid(key_id.into())?);
        Ok(self)
    }
}

/// The private half of the signing key (aws-lc).
enum Signer {
    Rs256(aws_lc_rs::rsa::KeyPair),
    Es256(aws_lc_rs::signature::EcdsaKeyPair),
}

impl Signer {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, IssueError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self {
            Signer::Rs256(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .map_err(|_| IssueError::Signing)?;
                Ok(signature)
            }
            Signer::Es256(pair) => {
                Ok(pair.sign(&rng, message).map_err(|_| IssueError::Signing)?.as_ref().to_vec())
            }
        }
    }
}

/// A key parsed from its source, remembered by the digest of the source's bytes so that a
/// source that still holds the same key is not parsed again.
struct LoadedKey {
    digest: [u8; 32],
    kid: String,
    /// Only for the signing key.
    signer: Option<Signer>,
    /// The public JWK, `kid`, `alg` and `use` included.
    jwk: serde_json::Value,
}

/// Why a key could not be read.
fn key_error(algorithm: Algorithm, what: &'static str) -> IssueError {
    IssueError::Key { algorithm, reason: what }
}

/// The label and DER body of a PEM document (the first one in `text`).
fn pem_der(text: &str) -> Option<(&str, Vec<u8>)> {
    let rest = &text[text.find("-----BEGIN ")? + 11..];
    let (label, rest) = rest.split_once("-----")?;
    let body = &rest[..rest.find(&format!("-----END {label}-----"))?];
    let body: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    Some((label, STANDARD.decode(body).ok()?))
}

/// The required members of a public JWK, as RFC 7638 orders them.
enum PublicKey {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { x: Vec<u8>, y: Vec<u8> },
}

impl PublicKey {
    fn jwk(&self, kid: &str, algorithm: Algorithm) -> serde_json::Value {
        let mut jwk = match self {
            PublicKey::Rsa { n, e } => {
                serde_json::json!({ "kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e) })
            }
            PublicKey::Ec { x, y } => serde_json::json!({
                "kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)
            }),
        };
        if let Some(members) = jwk.as_object_mut() {
            members.insert("kid".into(), kid.into());
            members.insert("alg".into(), algorithm.as_str().into());
            members.insert("use".into(), "sig".into());
        }
        jwk
    }

    /// RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
    fn thumbprint(&self) -> String {
        let canonical = match self {
            PublicKey::Rsa { n, e } => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(e),
                URL_SAFE_NO_PAD.encode(n)
            ),
            PublicKey::Ec { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                URL_SAFE_NO_PAD.encode(x),
                URL_SAFE_NO_PAD.encode(y)
            ),
        };
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }
}

fn parse_private(algorithm: Algorithm, text: &str) -> Result<(Signer, PublicKey), IssueError> {
    let (label, der) = pem_der(text).ok_or_else(|| key_error(algorithm, "not a PEM document"))?;
    match algorithm {
        Algorithm::Rs256 => {
            let pair = match label {
                "PRIVATE KEY" => aws_lc_rs::rsa::KeyPair::from_pkcs8(&der),
                "RSA PRIVATE KEY" => aws_lc_rs::rsa::KeyPair::from_der(&der),
                _ => return Err(key_error(algorithm, "not a PEM private key (PKCS#8 or PKCS#1)")),
            }
            .map_err(|_| key_error(algorithm, "not an RSA private key"))?;
            if !(256..=512).contains(&pair.public_modulus_len()) {
                return Err(key_error(algorithm, "the RSA modulus is not 2048 to 4096 bits"));
            }
            let components: aws_lc_rs::rsa::PublicKeyComponents<Vec<u8>> =
                aws_lc_rs::signature::KeyPair::public_key(&pair).into();
            let public = PublicKey::Rsa { n: components.n, e: components.e };
            Ok((Signer::Rs256(pair), public))
        }
        Algorithm::Es256 => {
            if !matches!(label, "PRIVATE KEY" | "EC PRIVATE KEY") {
                return Err(key_error(algorithm, "not a PEM private key (PKCS#8 or SEC 1)"));
            }
            let pair = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_der(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &der,
            )
            .map_err(|_| key_error(algorithm, "not a P-256 private key"))?;
            let point = aws_lc_rs::signature::KeyPair::public_key(&pair).as_ref().to_vec();
            let public = ec_point(&point).ok_or_else(|| key_error(algorithm, "not a P-256 private key"))?;
            Ok((Signer::Es256(pair), public))
        }
    }
}

/// `x` and `y` of an uncompressed P-256 point (`04 ‖ x ‖ y`).
fn ec_point(point: &[u8]) -> Option<PublicKey> {
    match point {
        [4, rest @ ..] if rest.len() == 64 => {
            Some(PublicKey::Ec { x: rest[..32].to_vec(), y: rest[32..].to_vec() })
        }
        _ => None,
    }
}

/// A public JWK as a previous JWKS published it: its key members only, checked by the rules
/// a verifier applies (for RSA, ztgate's own key filter; for EC, a point on P-256).
fn parse_public_jwk(algorithm: Algorithm, text: &str) -> Result<PublicKey, IssueError> {
    let jwk: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| key_error(algorithm, "neither a PEM private key nor a JWK"))?;
    let member = |name: &str| -> Result<Vec<u8>, IssueError> {
        let value = jwk.get(name).and_then(serde_json::Value::as_str);
        let value = value.ok_or_else(|| key_error(algorithm, "a JWK member is missing"))?;
        URL_SAFE_NO_PAD.decode(value).map_err(|_| key_error(algorithm, "a JWK member is not base64url"))
    };
    let kty = jwk.get("kty").and_then(serde_json::Value::as_str);
    match (algorithm, kty) {
        (Algorithm::Rs256, Some("RSA")) => {
            let (n, e) = (member("n")?, member("e")?);
            let review = serde_json::json!({
                "kty": "RSA", "kid": "previous", "n": URL_SAFE_NO_PAD.encode(&n), "e": URL_SAFE_NO_PAD.encode(&e)
            });
            crate::identity::jwks::review_key(review).map_err(|reason| key_error(algorithm, reason))?;
            Ok(PublicKey::Rsa { n, e })
        }
        (Algorithm::Es256, Some("EC"))
            if jwk.get("crv").and_then(serde_json::Value::as_str) == Some("P-256") =>
        {
            let (x, y) = (member("x")?, member("y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err(key_error(algorithm, "not a P-256 point"));
            }
            let point = [&[4u8][..], &x, &y].concat();
            aws_lc_rs::signature::ParsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                &point,
            )
            .map_err(|_| key_error(algorithm, "not a P-256 point"))?;
            Ok(PublicKey::Ec { x, y })
        }
        _ => Err(key_error(algorithm, "the JWK is not a key for the algorithm")),
    }
}

/// The key in `secret` (whose SHA-256 is `digest`), with its signer if it is the signing key.
fn load_key(
    algorithm: Algorithm,
    secret: &Secret,
    digest: [u8; 32],
    kid: Option<&str>,
    signing: bool,
) -> Result<LoadedKey, IssueError> {
    let text = std::str::from_utf8(secret.expose()).map_err(|_| key_error(algorithm, "not text"))?;
    let (signer, public) = if signing || text.contains("-----BEGIN ") {
        let (signer, public) = parse_private(algorithm, text)?;
        // A previous key's private half is dropped here: only its public JWK is kept.
        (signing.then_some(signer), public)
    } else {
        (None, parse_public_jwk(algorithm, text)?)
    };
    let kid = kid.map_or_else(|| public.thumbprint(), str::to_owned);
    let jwk = public.jwk(&kid, algorithm);
    Ok(LoadedKey { digest, kid, signer, jwk })
}

/// A key source and the key last parsed from it.
struct KeySlot {
    algorithm: Algorithm,
    source: Box<dyn SecretSource>,
    key_id: Option<String>,
    signing: bool,
    loaded: Mutex<Option<Arc<LoadedKey>>>,
}

impl KeySlot {
    fn lock(&self) -> MutexGuard<'_, Option<Arc<LoadedKey>>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key the source holds now, parsed again only if its bytes changed.
    async fn load(&self) -> Result<Arc<LoadedKey>, IssueError> {
        let secret = self.source.get().await.map_err(IssueError::Secret)?;
        let digest: [u8; 32] = Sha256::digest(secret.expose()).into();
        if let Some(key) = &*self.lock()
            && bool::from(key.digest.ct_eq(&digest))
        {
            return Ok(key.clone());
        }
        let key = Arc::new(load_key(self.algorithm, &secret, digest, self.key_id.as_deref(), self.signing)?);
        *self.lock() = Some(key.clone());
        Ok(key)
    }
}

impl fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kid = self.lock().as_ref().map(|k| k.kid.clone());
        f.debug_struct("KeySlot")
            .field("algorithm", &self.algorithm)
            .field("source", &self.source)
            .field("kid", &kid)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors and tokens.

/// Why a token could not be signed or the JWKS built. `Display` never shows key material.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssueError {
    /// The key's source could not be read.
    Secret(SecretError),
    /// The source's bytes are not a usable key for the algorithm (a fixed reason, never the bytes).
    Key {
        /// The algorithm the key was read for.
        algorithm: Algorithm,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The signature could not be made.
    Signing,
    /// The platform has no random source for the token id (`jti`).
    RandomUnavailable,
}

impl fmt::Display for IssueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IssueError::Secret(e) => write!(f, "signing key unavailable: {e}"),
            IssueError::Key { algorithm, reason } => write!(f, "unusable {algorithm} key: {reason}"),
            IssueError::Signing => f.write_str("the token could not be signed"),
            IssueError::RandomUnavailable => f.write_str("no random source for the token id"),
        }
    }
}

impl std::error::Error for IssueError {}

/// A signed token. `Debug` shows its claims' times and key id, never the token.
#[derive(Clone)]
pub struct IssuedToken {
    token: String,
    key_id: String,
    jwt_id: String,
    issued_at: u64,
    expires_at: u64,
}

impl IssuedToken {
    /// The compact JWT. Hand it to the token exchange; never to a log.
    pub fn expose(&self) -> &str {
        &self.token
    }

    /// The `kid` of its header.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Its `jti`: 128 random bits, base64url.
    pub fn jwt_id(&self) -> &str {
        &self.jwt_id
    }

    /// Its `iat` (and `nbf`), Unix seconds.
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }

    /// Its `exp`, Unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &format_args!("[redacted; {} bytes]", self.token.len()))
            .field("key_id", &self.key_id)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// The issuer.

/// A JWKS document, when it was built (by the issuer's clock), and the digest of the signing
/// key it publishes.
struct Built {
    document: Arc<str>,
    at: u64,
    signing_key: [u8; 32],
}

struct Inner {
    config: IssuerConfig,
    current: KeySlot,
    previous: Vec<KeySlot>,
    clock: Arc<dyn Clock>,
    discovery: String,
    /// The JWKS last built.
    jwks: Mutex<Option<Built>>,
    /// One rebuild at a time: concurrent requests for a stale JWKS wait for it.
    rebuild: tokio::sync::Mutex<()>,
}

/// Signs the workload's tokens and builds the documents that let a cloud verify them.
///
/// Cheap to clone (one `Arc`). The signing key is read from its [`SecretSource`] on every
/// [`sign`](WorkloadIssuer::sign) and parsed again only when the source's bytes change, so a
/// key rotated in the store is used at once; wrap a slow store in
/// [`CachedSecret`](crate::secrets::CachedSecret).
#[derive(Clone)]
pub struct WorkloadIssuer {
    inner: Arc<Inner>,
}

impl fmt::Debug for WorkloadIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadIssuer")
            .field("config", &self.inner.config)
            .field("current", &self.inner.current)
            .field("previous", &self.inner.previous)
            .finish()
    }
}

impl WorkloadIssuer {
    /// An issuer for `config` that signs with the `algorithm` key in `key` (PEM: PKCS#8; also
    /// PKCS#1 for RSA and SEC 1 for P-256) and reads the time from `clock`.
    ///
    /// The key is not read here: a missing or malformed key is an [`IssueError`] from the
    /// first [`sign`](WorkloadIssuer::sign) (call it at start-up to fail early).
    pub fn new(
        config: IssuerConfig,
        algorithm: Algorithm,
        key: impl SecretSource,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::build(config, algorithm, Box::new(key), Vec::new(), clock)
    }

    /// [`WorkloadIssuer::new`], with up to [`MAX_PREVIOUS_KEYS`] previous keys published in the
    /// JWKS beside the signing key (never used to sign). More is an error naming
    /// `workload.previous_keys`.
    pub fn with_previous_keys(
        config: IssuerConfig,
        algorithm: Algorithm,
        key: impl SecretSource,
        previous: Vec<PreviousKey>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        if previous.len() > MAX_PREVIOUS_KEYS {
            return Err(ConfigError::new("workload.previous_keys", format!("at most {MAX_PREVIOUS_KEYS}")));
        }
        Ok(Self::build(config, algorithm, Box::new(key), previous, clock))
    }

    fn build(
        config: IssuerConfig,
        algorithm: Algorithm,
        key: Box<dyn SecretSource>,
        previous: Vec<PreviousKey>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let current = KeySlot {
            algorithm,
            source: key,
            key_id: config.key_id.clone(),
            signing: true,
            loaded: Mutex::new(None),
        };
        let mut algorithms = vec![algorithm.as_str()];
        let previous: Vec<KeySlot> = previous
            .into_iter()
            .map(|p| {
                if !algorithms.contains(&p.algorithm.as_str()) {
                    algorithms.push(p.algorithm.as_str());
                }
                KeySlot {
                    algorithm: p.algorithm,
                    source: p.source,
                    key_id: p.key_id,
                    signing: false,
                    loaded: Mutex::new(None),
                }
            })
            .collect();
        let discovery = serde_json::json!({
            "issuer": config.issuer,
            "jwks_uri": config.jwks_url(),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algorithms,
            "claims_supported": CLAIMS,
        })
        .to_string();
        let inner = Inner {
            config,
            current,
            previous,
            clock,
            discovery,
            jwks: Mutex::new(None),
            rebuild: tokio::sync::Mutex::new(()),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The configuration.
    pub fn config(&self) -> &IssuerConfig {
        &self.inner.config
    }

    /// A token for the configured audiences, valid from now for the configured lifetime, with
    /// a fresh random `jti`. The header names the key (`kid`) and `typ: JWT`.
    ///
    /// Signing runs on the calling task: about 0.8 ms for 2048-bit RS256 and 30 µs for ES256
    /// (`benches/workload.rs`); a token is signed once per exchange.
    pub async fn sign(&self) -> Result<IssuedToken, IssueError> {
        let key = self.inner.current.load().await?;
        {
            // A new signing key: the JWKS must show it before a verifier sees a token it signed.
            let mut jwks = self.lock_jwks();
            if jwks.as_ref().is_some_and(|built| !bool::from(built.signing_key.ct_eq(&key.digest))) {
                *jwks = None;
            }
        }
        let config = &self.inner.config;
        let now = self.inner.clock.now();
        let expires_at = now.saturating_add(config.ttl.as_secs());
        let jwt_id = random_id()?;
        let audience = match config.audiences.as_slice() {
            [one] => serde_json::Value::from(one.as_str()),
            many => serde_json::Value::from(many.to_vec()),
        };
        let header =
            serde_json::json!({ "alg": self.inner.current.algorithm.as_str(), "kid": key.kid, "typ": "JWT" });
        let claims = serde_json::json!({
            "iss": config.issuer,
            "sub": config.subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": expires_at,
            "jti": jwt_id,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signer = key.signer.as_ref().ok_or(IssueError::Signing)?;
        let signature = signer.sign(signing_input.as_bytes())?;
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
        Ok(IssuedToken { token, key_id: key.kid.clone(), jwt_id, issued_at: now, expires_at })
    }

    /// The discovery document (`/.well-known/openid-configuration`), JSON.
    pub fn discovery_document(&self) -> &str {
        &self.inner.discovery
    }

    /// The JWKS document: the signing key's public half, then each previous key's, as JWKs
    /// with `kid`, `alg` and `use: sig`.
    ///
    /// Built from the key sources and kept for a minute (by the issuer's clock), or until
    /// [`sign`](WorkloadIssuer::sign) finds a new signing key, so a public endpoint serving it
    /// does not read the secret store on every request. A previous key that cannot be read,
    /// or that has the signing key's `kid`, is left out (with a warning); the signing key
    /// that cannot be read is an error.
    pub async fn jwks_document(&self) -> Result<Arc<str>, IssueError> {
        if let Some(document) = self.cached_jwks() {
            return Ok(document);
        }
        let _rebuild = self.inner.rebuild.lock().await;
        if let Some(document) = self.cached_jwks() {
            return Ok(document);
        }
        let current = self.inner.current.load().await?;
        let mut keys = vec![current.jwk.clone()];
        let mut kids = vec![current.kid.clone()];
        for slot in &self.inner.previous {
            match slot.load().await {
                Ok(key) if kids.contains(&key.kid) => {
                    if !bool::from(key.digest.ct_eq(&current.digest)) {
                        tracing::warn!(layer = "workload", outcome = "previous_key_kid_clash");
                    }
                }
                Ok(key) => {
                    kids.push(key.kid.clone());
                    keys.push(key.jwk.clone());
                }
                Err(e) => {
                    tracing::warn!(layer = "workload", outcome = "previous_key_unavailable", error = ?e.to_string());
                }
            }
        }
        let document: Arc<str> = serde_json::json!({ "keys": keys }).to_string().into();
        let built =
            Built { document: document.clone(), at: self.inner.clock.now(), signing_key: current.digest };
        *self.lock_jwks() = Some(built);
        Ok(document)
    }

    fn lock_jwks(&self) -> MutexGuard<'_, Option<Built>> {
        self.inner.jwks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached_jwks(&self) -> Option<Arc<str>> {
        let now = self.inner.clock.now();
        match &*self.lock_jwks() {
            // A clock that went backwards makes the copy stale rather than fresh for longer.
            Some(built) if now >= built.at && now - built.at < JWKS_REBUILD_AFTER => {
                Some(built.document.clone())
            }
            _ => None,
        }
    }
}

/// 128 bits from the operating system's CSPRNG, base64url.
fn random_id() -> Result<String, IssueError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|_| IssueError::RandomUnavailable)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_urls_are_https_origins_or_paths_without_query() {
        let ok = |url: &str| IssuerConfig::new(url, "s", ["a"]).map(|c| (c.issuer, c.path));
        assert_eq!(ok("https://id.example.com/").unwrap(), ("https://id.example.com".into(), "".into()));
        assert_eq!(
            ok("https://id.example.com/workload/").unwrap(),
            ("https://id.example.com/workload".into(), "/workload".into())
        );
        assert!(ok("http://127.0.0.1:8080").is_ok());
        for bad in [
            "http://id.example.com",
            "https://user:pw@id.example.com", // pragma: allowlist secret
            "https://id.example.com/?q=1",
            "https://id.example.com/#f",
            "ftp://id.example.com",
            "not a url",
        ] {
            assert_eq!(ok(bad).unwrap_err().setting(), "workload.issuer", "{bad}");
        }
    }

    #[test]
    fn the_thumbprint_is_rfc7638s_own_example() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZ\
                 CiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZ\
                 gnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniI\
                 qbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let key = PublicKey::Rsa { n: URL_SAFE_NO_PAD.decode(n).unwrap(), e: vec![1, 0, 1] };
        assert_eq!(key.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"); // pragma: allowlist secret
    }

    #[test]
    fn pem_documents_are_read_by_label_whatever_their_line_length() {
        let (label, der) =
            pem_der("junk\n-----BEGIN EC PRIVATE KEY-----\nAAEC\nAw==\n-----END EC PRIVATE KEY-----\n") // pragma: allowlist secret
                .unwrap();
        assert_eq!((label, der), ("EC PRIVATE KEY", vec![0, 1, 2, 3]));
        assert!(pem_der("-----BEGIN PRIVATE KEY-----\nAAEC\n-----END PUBLIC KEY-----").is_none()); // pragma: allowlist secret
        assert!(pem_der("-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----").is_none()); // pragma: allowlist secret
        assert!(pem_der("no pem").is_none());
    }

    #[test]
    fn claims_and_lifetimes_are_bounded() {
        assert!(IssuerConfig::new("https://i.example", "", ["a"]).is_err());
        assert!(IssuerConfig::new("https://i.example", "s\n", ["a"]).is_err());
        assert!(IssuerConfig::new("https://i.example", "s".repeat(256), ["a"]).is_err());
        assert!(IssuerConfig::new("https://i.example", "s", Vec::<String>::new()).is_err());
        assert!(IssuerConfig::new("https://i.example", "s", vec!["a"; 9]).is_err());
        let config = IssuerConfig::new("https://i.example", "s", ["a"]).unwrap();
        assert!(config.clone().with_ttl(Duration::from_secs(59)).is_err());
        assert!(config.clone().with_ttl(Duration::from_secs(3601)).is_err());
        assert_eq!(
            config.clone().with_ttl(Duration::from_millis(90_500)).unwrap().ttl(),
            Duration::from_secs(90)
        );
        assert!(config.clone().with_key_id("has space").is_err());
        assert!(config.with_key_id("k-2026").is_ok());
    }
}
