//! Cloudflare Access JWT verification.
//!
//! The checks, in order, each failing closed:
//! 1. size cap, then exactly three base64url segments (strict: no padding, no `+`/`/`);
//! 2. header: `alg` is exactly `RS256`, `kid` is a string, no `crit`. `jku`, `x5u`, `x5c` and
//!    `jwk` are never read: keys come only from the configured JWKS;
//! 3. the key for `kid` from the [`JwksCache`], bound to RS256;
//! 4. the RS256 signature over the first two segments;
//! 5. claims: `iss` equals the team domain exactly; `aud` (string or array) contains a
//!    configured tag; `exp` present and in the future; `nbf` and `iat`, if present, not in the
//!    future; all within a bounded leeway. A time claim of the wrong JSON type (string, float,
//!    null, negative) is refused, not treated as absent. Duplicate claim names are refused.
//!    The lifetime is bounded ([`AccessConfig::with_max_lifetime`], default 31 days, the
//!    longest Access session): `exp − iat` (when `iat` is present) and `exp − now` (always,
//!    plus the leeway) may not exceed it, so a token that claims to live for years (`exp` of
//!    `u64::MAX`) is refused however it was signed. Envoy's `jwt_authn` calls this
//!    `max_lifetime`.
//! 6. the principal: a `common_name` claim makes a [`ServiceToken`]
//!    (never a user, whatever else it carries); otherwise a user with a non-empty `email`.
//!
//! ## One person, one id
//!
//! Access compares emails case-insensitively, so `ADMIN@acme.com` and `admin@acme.com` are the
//! same person. The verifier normalises the email once, here, and everything downstream (the
//! [`Policy`] allowlist, [`Principal::id`] `user:<email>`, what storage records as the author,
//! the logs) sees the normalised form. Exactly what is normalised:
//! - the whole `email` (local part and domain) is **ASCII-lowercased**: `A`–`Z` become `a`–`z`;
//! - nothing else: no Unicode case folding (`Ä` stays `Ä`), no Unicode normalisation (NFC/NFKC),
//!   no trimming, no removal of dots or `+tags`. Two addresses that differ in anything but ASCII
//!   case are two principals;
//! - service tokens: `common_name` is kept and compared **exactly** as sent. Cloudflare issues
//!   Client IDs in lowercase (`<hex>.access`) and a token always carries its own, so one token
//!   has one id; an allowlist entry in another case does not match (fail closed).
//!
//! [`AccessJwt`] is the mechanism: the verifier above, then a [`Policy`] that decides who of
//! the proven principals may pass.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, IgnoredAny};

use super::access_identity::IdentitySource;
use super::jwks::{JwksCache, KeyError};
use super::mechanism::{Attempt, Mechanism};
use super::policy::Decision;
use super::policy::Policy;
use super::ports::{Rs256Engine, VerifiedTokens};
use super::rs256::Rs256Key;
use super::token_cache::{TokenCacheConfig, TokenDigest, Verification};
use crate::BoxFuture;
use crate::clock::Clock;
use crate::error::{ConfigError, Rejection, TokenError};
use crate::principal::{AccessIdentity, AccessUser, NoClaims, Principal, ServiceToken};
use crate::request::RequestFacts;

const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What an Access token must match: the team domain (the exact `iss`) and the application
/// audience tags.
#[derive(Clone, Debug)]
pub struct AccessConfig {
    team_domain: String,
    audiences: Vec<String>,
    leeway: Duration,
    max_lifetime: Duration,
}

impl AccessConfig {
    /// The longest token lifetime ztgate accepts, and the default (31 days): the longest
    /// session duration Cloudflare Access offers. [`AccessConfig::with_max_lifetime`] can only
    /// lower it.
    pub const MAX_LIFETIME: Duration = Duration::from_secs(31 * 86_400);
    /// The largest leeway ztgate accepts for time claims (5 min).
    pub const MAX_LEEWAY: Duration = Duration::from_secs(300);
    /// The default leeway for `exp`, `nbf` and `iat` (60 s).
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

    /// `team_domain` is the issuer, e.g. `https://acme.cloudflareaccess.com` (a trailing `/` is
    /// removed); `audiences` are the Application Audience (AUD) tags to accept. Both are
    /// required: an empty audience list would accept tokens minted for any application.
    pub fn new<I, S>(team_domain: impl Into<String>, audiences: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut team_domain: String = team_domain.into();
        while team_domain.ends_with('/') {
            team_domain.pop();
        }
        let rest = match (team_domain.strip_prefix("https://"), team_domain.strip_prefix("http://")) {
            (Some(rest), _) => rest,
            // Plain http only for a local issuer (dev mode, tests): never for a real team.
            (None, Some(rest)) if is_loopback_authority(rest) => rest,
            _ => {
                return Err(ConfigError::new(
                    "team_domain",
                    format!("{team_domain:?} must start with https:// (http:// only for loopback hosts)"),
                ));
            }
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) {
            return Err(ConfigError::new(
                "team_domain",
                format!("{team_domain:?} must be a bare origin such as https://acme.cloudflareaccess.com"),
            ));
        }
        let audiences: Vec<String> = audiences.into_iter().map(Into::into).collect();
        if audiences.is_empty() || audiences.iter().any(|a| a.trim().is_empty()) {
            return Err(ConfigError::new("audiences", "at least one non-empty Access AUD tag is required"));
        }
        Ok(Self { team_domain, audiences, leeway: Self::DEFAULT_LEEWAY, max_lifetime: Self::MAX_LIFETIME })
    }

    /// Leeway for `exp`, `nbf` and `iat` (default 60 s, at most [`AccessConfig::MAX_LEEWAY`]).
    pub fn with_leeway(mut self, leeway: Duration) -> Result<Self, ConfigError> {
        if leeway > Self::MAX_LEEWAY {
            return Err(ConfigError::new(
                "leeway",
                format!("{}s exceeds the maximum of {}s", leeway.as_secs(), Self::MAX_LEEWAY.as_secs()),
            ));
        }
        self.leeway = leeway;
        Ok(self)
    }

    /// The longest lifetime a token may have (default and maximum
    /// [`AccessConfig::MAX_LIFETIME`], 31 days): a token is refused (401 `invalid_token`,
    /// [`TokenError::LifetimeTooLong`]) when `exp − iat` exceeds it, or `exp − now` exceeds it
    /// plus the leeway. Set it to your Access application's session duration (e.g. 24 h) so a
    /// token can never outlive a session Access would have ended.
    ///
    /// Whole seconds, at least one second and at most [`AccessConfig::MAX_LIFETIME`]: a gate
    /// that accepted longer lifetimes than Access ever issues would only accept forgeries and
    /// minting bugs. Anything else is a [`ConfigError`] naming `max_lifetime`.
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Result<Self, ConfigError> {
        if max_lifetime.as_secs() == 0 || max_lifetime > Self::MAX_LIFETIME {
            return Err(ConfigError::new(
                "max_lifetime",
                format!(
                    "{}s is not between 1s and the maximum of {}s (31 days)",
                    max_lifetime.as_secs(),
                    Self::MAX_LIFETIME.as_secs()
                ),
            ));
        }
        self.max_lifetime = Duration::from_secs(max_lifetime.as_secs());
        Ok(self)
    }

    /// The longest lifetime accepted (see [`AccessConfig::with_max_lifetime`]).
    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    /// The issuer tokens must carry.
    pub fn team_domain(&self) -> &str {
        &self.team_domain
    }

    /// The accepted audience tags.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// The JWKS URL Cloudflare publishes for this team: `{team_domain}/cdn-cgi/access/certs`.
    pub fn default_certs_url(&self) -> String {
        format!("{}/cdn-cgi/access/certs", self.team_domain)
    }

    /// Where Cloudflare answers the identity of a login:
    /// `{team_domain}/cdn-cgi/access/get-identity`.
    pub fn default_identity_url(&self) -> String {
        format!("{}/cdn-cgi/access/get-identity", self.team_domain)
    }

    /// The same application settings for other audience tags (another application of the
    /// team, e.g. for one route).
    pub fn with_audiences<I, S>(&self, audiences: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut other = Self::new(self.team_domain.clone(), audiences)?;
        other.leeway = self.leeway;
        other.max_lifetime = self.max_lifetime;
        Ok(other)
    }
}

/// `127.0.0.1:8080`, `[::1]:80`, `localhost:3000`...
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    super::jwks::is_loopback_host(host)
}

/// Verifies Cloudflare Access JWTs against a JWKS cache and the configuration.
///
/// `C` is the caller's type for extra user claims; it is deserialized from the whole claim
/// set, so `#[derive(Deserialize)] struct Mine { groups: Vec<String> }` reads a top-level
/// `groups` claim.
///
/// Verified tokens are cached (see [`TokenCacheConfig`]): a token seen again within its
/// validity, the cache's max age and the life of its signing key is not checked again; what it
/// proved is returned, and the [`Policy`] of an [`AccessJwt`] still runs on every request.
pub struct AccessVerifier<C = NoClaims> {
    config: AccessConfig,
    keys: JwksCache,
    clock: Arc<dyn Clock>,
    rs256: Arc<dyn Rs256Engine>,
    token_cache: TokenCacheConfig,
    tokens: Option<Arc<dyn VerifiedTokens<Arc<Verification<C>>>>>,
    /// Signatures checked so far (misses of the token cache, or every token with it off).
    signatures_checked: AtomicU64,
    _claims: PhantomData<fn() -> C>,
}

impl<C> fmt::Debug for AccessVerifier<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessVerifier")
            .field("config", &self.config)
            .field("keys", &self.keys)
            .field("token_cache", &self.token_cache)
            .finish()
    }
}

#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default, deserialize_with = "present")]
    kid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    crit: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RegisteredClaims {
    #[serde(default, deserialize_with = "present")]
    iss: Option<String>,
    #[serde(default, deserialize_with = "present")]
    aud: Option<Audience>,
    #[serde(default, deserialize_with = "present")]
    exp: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    nbf: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    iat: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    sub: Option<String>,
    #[serde(default, deserialize_with = "present")]
    email: Option<String>,
    #[serde(default, deserialize_with = "present")]
    common_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    country: Option<String>,
    #[serde(default, deserialize_with = "present")]
    identity_nonce: Option<String>,
    /// `app` for application tokens; `org` for the organization's own login session.
    #[serde(default, rename = "type", deserialize_with = "present")]
    kind: Option<String>,
}

/// A present field must have its type: `null` is a wrong type, not an absence.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl<C: DeserializeOwned + Clone + Send + Sync + 'static> AccessVerifier<C> {
    /// A verifier whose signatures are checked by `rs256` (the runtime's engine; the public
    /// constructor, `AccessVerifier::new`, is in `crate::runtime`, which picks it), without a
    /// token cache.
    pub(crate) fn with_engine(
        config: AccessConfig,
        keys: JwksCache,
        clock: Arc<dyn Clock>,
        rs256: Arc<dyn Rs256Engine>,
    ) -> Self {
        let token_cache = TokenCacheConfig::disabled();
        Self {
            config,
            keys,
            clock,
            rs256,
            token_cache,
            tokens: None,
            signatures_checked: AtomicU64::new(0),
            _claims: PhantomData,
        }
    }

    /// This verifier with the token cache `store` (the runtime's) configured by `config`.
    pub(crate) fn with_store(
        mut self,
        config: TokenCacheConfig,
        store: Option<Arc<dyn VerifiedTokens<Arc<Verification<C>>>>>,
    ) -> Self {
        self.token_cache = config;
        self.tokens = store;
        self
    }

    /// The clock the checks read.
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The token cache's configuration.
    pub fn token_cache(&self) -> &TokenCacheConfig {
        &self.token_cache
    }

    /// About how many verified tokens are cached now (0 with the cache off). For metrics.
    pub fn cached_tokens(&self) -> u64 {
        self.tokens.as_ref().map_or(0, |t| t.len())
    }

    /// How many token signatures this verifier has checked (each an RSA-2048 verification,
    /// tens of microseconds): with the token cache on, a token seen again within its cached
    /// life adds none. For metrics.
    pub fn signatures_checked(&self) -> u64 {
        self.signatures_checked.load(Ordering::Relaxed)
    }

    /// The configuration.
    pub fn config(&self) -> &AccessConfig {
        &self.config
    }

    /// The key cache.
    pub fn keys(&self) -> &JwksCache {
        &self.keys
    }

    /// Verifies `token` and returns the principal it proves.
    pub async fn verify(&self, token: &str) -> Result<Principal<C>, TokenError> {
        let parts = split(token)?;
        let Some(tokens) = &self.tokens else {
            return self.verify_parts(&parts).await.map(|(principal, _)| principal);
        };
        let digest = TokenDigest::of(token);
        // Set by the verification, which runs only on a miss (for this caller or the one whose
        // verification it joined).
        let missed = AtomicBool::new(false);
        let verification = async {
            missed.store(true, Ordering::Relaxed);
            self.verification(&parts, token.len()).await
        };
        let cached = tokens.get_or_verify(digest, Box::pin(verification)).await;
        crate::metrics::token_cache_lookup(!missed.load(Ordering::Relaxed), tokens.len());
        let cached = cached?;
        if cached.fresh_at(self.clock.now()) && self.keys.is_current(&cached.kid, &cached.key) {
            return Ok(cached.principal.clone());
        }
        // Past its token's validity or the cache's max age, or its key left the key set: the
        // entry goes, and the token is verified again (and refused, most likely), uncached.
        tokens.remove(&digest).await;
        self.verify_parts(&parts).await.map(|(principal, _)| principal)
    }

    /// A verification to cache: the checks of [`AccessVerifier::verify`], and until when
    /// their result may stand in for them.
    async fn verification(
        &self,
        parts: &Parts<'_>,
        token_len: usize,
    ) -> Result<Arc<Verification<C>>, TokenError> {
        let (principal, proof) = self.verify_parts(parts).await?;
        let now = self.clock.now();
        // `verify_parts` accepts while `now < exp + leeway`: never a second longer from here.
        let valid_until = proof
            .exp
            .saturating_add(self.config.leeway.as_secs())
            .min(now.saturating_add(self.token_cache.max_age().as_secs()));
        Ok(Arc::new(Verification {
            principal,
            kid: proof.kid.into_boxed_str(),
            key: proof.key,
            valid_until,
            time_to_live: std::time::Duration::from_secs(valid_until.saturating_sub(now).max(1)),
            weight: self.token_cache.weight(token_len),
        }))
    }

    /// Every check, uncached: the principal, and the key and `exp` that proved it.
    async fn verify_parts(&self, parts: &Parts<'_>) -> Result<(Principal<C>, KeyProof), TokenError> {
        let header: JoseHeader = decode_json(parts.header, "header")?;
        if header.alg != "RS256" {
            return Err(TokenError::Algorithm);
        }
        if header.crit.is_some() {
            return Err(TokenError::CriticalHeader);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key: Arc<Rs256Key> = self.keys.key(&kid).await.map_err(|e| match e {
            KeyError::UnknownKid => TokenError::UnknownKey,
            KeyError::Unavailable { retry_after } => TokenError::KeysUnavailable { retry_after },
        })?;
        self.signatures_checked.fetch_add(1, Ordering::Relaxed);
        if !self.rs256.verify(&key, parts.signing_input.as_bytes(), parts.signature).await {
            return Err(TokenError::Signature);
        }
        let payload =
            URL_SAFE_NO_PAD.decode(parts.payload).map_err(|_| TokenError::Malformed("payload encoding"))?;
        // RFC 7519 §7.2: the claims set is UTF-8 JSON. serde_json skips the strings of members
        // it ignores without validating them, so check the whole payload first.
        let payload =
            std::str::from_utf8(&payload).map_err(|_| TokenError::Claims("claims are not UTF-8".into()))?;
        let (principal, exp) = self.check_claims(payload)?;
        Ok((principal, KeyProof { kid, key, exp }))
    }

    /// Checks the claims of an already signature-verified payload; returns the principal and
    /// the token's `exp`.
    fn check_claims(&self, payload: &str) -> Result<(Principal<C>, u64), TokenError> {
        let claims: RegisteredClaims =
            serde_json::from_str(payload).map_err(|e| TokenError::Claims(claim_error(&e)))?;
        if claims.iss.as_deref() != Some(self.config.team_domain.as_str()) {
            return Err(TokenError::Issuer);
        }
        let audience_ok = match &claims.aud {
            Some(Audience::One(a)) => self.config.audiences.iter().any(|want| want == a),
            Some(Audience::Many(list)) => {
                list.iter().any(|a| self.config.audiences.iter().any(|want| want == a))
            }
            None => false,
        };
        if !audience_ok {
            return Err(TokenError::Audience);
        }
        if claims.kind.as_deref().is_some_and(|kind| kind != "app") {
            return Err(TokenError::TokenType);
        }
        let now = self.clock.now();
        let leeway = self.config.leeway.as_secs();
        let exp = claims.exp.ok_or(TokenError::MissingExpiry)?;
        if exp.saturating_add(leeway) <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(TokenError::IssuedInFuture);
        }
        let max_lifetime = self.config.max_lifetime.as_secs();
        if claims.iat.is_some_and(|iat| exp.saturating_sub(iat) > max_lifetime)
            || exp.saturating_sub(now) > max_lifetime.saturating_add(leeway)
        {
            return Err(TokenError::LifetimeTooLong);
        }
        if let Some(common_name) = claims.common_name {
            if common_name.is_empty() {
                return Err(TokenError::Claims("empty common_name".into()));
            }
            return Ok((Principal::Service(ServiceToken { common_name, expires_at: exp }), exp));
        }
        let mut email = claims
            .email
            .filter(|e| !e.is_empty())
            .ok_or_else(|| TokenError::Claims("neither email nor common_name".into()))?;
        // One person, one id (module docs): compared and recorded in this form.
        email.make_ascii_lowercase();
        let custom: C = serde_json::from_str(payload).map_err(|e| TokenError::Claims(claim_error(&e)))?;
        Ok((
            Principal::User(AccessUser {
                email,
                sub: claims.sub.unwrap_or_default(),
                country: claims.country,
                identity_nonce: claims.identity_nonce,
                issued_at: claims.iat,
                expires_at: exp,
                identity: None,
                custom,
            }),
            exp,
        ))
    }
}

/// What proved a token: the key (by `kid`) that checked its signature, and its `exp`.
struct KeyProof {
    kid: String,
    key: Arc<Rs256Key>,
    exp: u64,
}

/// serde_json messages can quote input; keep only the category and position.
fn claim_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let kind = if msg.starts_with("duplicate field") {
        "duplicate claim"
    } else if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
        "claim of the wrong type"
    } else {
        "claims are not a JSON object"
    };
    format!("{kind} (column {})", e.column())
}

struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    signing_input: &'a str,
}

fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("token too long"));
    }
    let mut it = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(TokenError::Malformed("not three segments"));
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(TokenError::Malformed("empty segment"));
    }
    let signing_input = &token[..header.len() + 1 + payload.len()];
    Ok(Parts { header, payload, signature, signing_input })
}

/// The `iss` and `aud` a token claims, read without verifying anything: only to pick which
/// application's verifier checks it (which then checks everything again, after the signature).
pub(super) fn claimed_issuer(token: &str) -> Result<(String, Vec<String>), TokenError> {
    #[derive(Deserialize)]
    struct Routing {
        #[serde(default)]
        iss: Option<String>,
        #[serde(default)]
        aud: Option<Audience>,
    }
    let parts = split(token)?;
    let routing: Routing = decode_json(parts.payload, "payload")?;
    let iss = routing.iss.ok_or(TokenError::Issuer)?;
    let aud = match routing.aud {
        Some(Audience::One(a)) => vec![a],
        Some(Audience::Many(list)) => list,
        None => return Err(TokenError::Audience),
    };
    Ok((iss, aud))
}

fn decode_json<T: DeserializeOwned>(segment: &str, what: &'static str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| TokenError::Malformed(what))?;
    // RFC 7515 §4: the JOSE header is UTF-8 JSON, including members ztgate ignores (serde_json
    // would skip those without validating them).
    let text = std::str::from_utf8(&bytes).map_err(|_| TokenError::Malformed(what))?;
    serde_json::from_str(text).map_err(|_| TokenError::Malformed(what))
}

/// Cloudflare Access JWTs as a [`Mechanism`]: verified by an [`AccessVerifier`], then
/// authorized by a [`Policy`]. A valid token of someone the policy does not admit is 403.
///
/// When the policy has rules over the user's Access identity (groups, login method, device
/// posture, WARP), the identity is fetched from the team's `get-identity` endpoint once the
/// token verified, and only when the decision needs it: cached per login (`identity_nonce`),
/// 5 minutes at most and never past the token's `exp`, bounded like the JWKS fetch (see
/// [`IdentityConfig`](super::IdentityConfig)). The gates [`GateBuilder`](crate::GateBuilder) builds can always fetch it.
pub struct AccessJwt<C = NoClaims> {
    /// Shared with the mechanisms made by [`AccessJwt::with_policy`].
    verifier: Arc<AccessVerifier<C>>,
    policy: Policy<C>,
    identity: Option<Arc<IdentitySource>>,
    /// Fetch the identity for every user, whether or not a rule needs it.
    enrich: bool,
}

impl<C> fmt::Debug for AccessJwt<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessJwt")
            .field("verifier", &self.verifier)
            .field("policy", &self.policy)
            .field("identity", &self.identity)
            .field("enrich", &self.enrich)
            .finish()
    }
}

impl<C> AccessJwt<C> {
    /// The mechanism's name, in proofs, logs and rejections.
    pub const NAME: &'static str = "access_jwt";

    /// Verifies with `verifier`, admits whom `policy` allows. Without an identity source
    /// (`AccessJwt::with_identity`), a policy rule that needs the user's identity refuses with
    /// 503 `identity_unavailable`.
    pub fn new(verifier: AccessVerifier<C>, policy: Policy<C>) -> Self {
        Self { verifier: Arc::new(verifier), policy, identity: None, enrich: false }
    }

    /// The same verifier (its JWKS cache, verified-token cache and counters, all shared) and
    /// identity source under another policy: what a configuration reload that changes only
    /// who is allowed builds, so no key is fetched and no signature checked again. Tokens
    /// cached by the verifier are still authorized by the new policy on their next request.
    pub fn with_policy(&self, policy: Policy<C>) -> Self {
        Self { verifier: self.verifier.clone(), policy, identity: self.identity.clone(), enrich: self.enrich }
    }

    /// The verifier (e.g. to warm its key cache).
    pub fn verifier(&self) -> &AccessVerifier<C> {
        &self.verifier
    }

    /// The policy.
    pub fn policy(&self) -> &Policy<C> {
        &self.policy
    }

    /// Whether every user's identity is fetched.
    pub(crate) fn enriches(&self) -> bool {
        self.enrich
    }

    pub(crate) fn with_identity_source(mut self, source: Arc<IdentitySource>, enrich: bool) -> Self {
        self.identity = Some(source);
        self.enrich = enrich;
        self
    }
}

impl<C: DeserializeOwned + Clone + Send + Sync + 'static> AccessJwt<C> {
    /// A mechanism for other audience tags of the same team (another application, say for one
    /// route), admitting whom `policy` allows: the JWKS cache and the identity source are
    /// shared with this one, the verified-token cache is its own.
    pub fn with_audiences<I, S>(&self, audiences: I, policy: Policy<C>) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let config = self.verifier.config().with_audiences(audiences)?;
        let verifier =
            AccessVerifier::new(config, self.verifier.keys().clone(), self.verifier.clock().clone())
                .with_token_cache(self.verifier.token_cache().clone());
        Ok(Self {
            verifier: Arc::new(verifier),
            policy,
            identity: self.identity.clone(),
            enrich: self.enrich,
        })
    }

    /// The token's identity, or why it could not be had (logged).
    async fn fetch_identity(
        &self,
        token: &str,
        user: &AccessUser<C>,
    ) -> Result<Arc<AccessIdentity>, TokenError> {
        let Some(source) = &self.identity else {
            tracing::error!(
                layer = "identity",
                outcome = "identity_unavailable",
                mechanism = Self::NAME,
                reason = "no identity source configured"
            );
            return Err(TokenError::IdentityUnavailable("no identity source is configured".into()));
        };
        source.identity(token, user).await.inspect_err(|e| {
            tracing::warn!(layer = "identity", outcome = "identity_unavailable", mechanism = Self::NAME, principal = ?format!("user:{}", user.email), reason = ?e.to_string());
        })
    }
}

impl<C: DeserializeOwned + Clone + Send + Sync + 'static> Mechanism<C> for AccessJwt<C> {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn attempt<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Attempt<C>> {
        Box::pin(async move {
            let Some(token) = facts.access_jwt() else { return Attempt::NotPresent };
            let mut principal = match self.verifier.verify(token.expose()).await {
                Err(e) => return Attempt::Refused(Rejection::from(e)),
                Ok(p) => p,
            };
            let now = Some(self.verifier.clock().now());
            // An identity fetched for enrichment that failed is not fetched again for a rule.
            let mut failed = None;
            if let Principal::User(user) = &mut principal
                && self.enrich
            {
                match self.fetch_identity(token.expose(), user).await {
                    Ok(identity) => user.identity = Some(identity),
                    Err(e) => failed = Some(e),
                }
            }
            let mut decision = self.policy.decide(&principal, now);
            if decision == Decision::NeedsIdentity
                && let Principal::User(user) = &mut principal
            {
                let fetched = match failed {
                    Some(e) => Err(e),
                    None => self.fetch_identity(token.expose(), user).await,
                };
                match fetched {
                    Ok(identity) => user.identity = Some(identity),
                    Err(e) => return Attempt::Refused(Rejection::from(e)),
                }
                decision = self.policy.decide(&principal, now);
            }
            match decision {
                Decision::Allow => Attempt::Verified(principal),
                Decision::SessionTooOld => {
                    tracing::info!(layer = "identity", outcome = "session_too_old", mechanism = Self::NAME, principal = ?principal.id());
                    Attempt::Refused(Rejection::SessionTooOld)
                }
                Decision::Forbidden | Decision::NeedsIdentity => {
                    tracing::warn!(layer = "identity", outcome = "forbidden", mechanism = Self::NAME, principal = ?principal.id());
                    Attempt::Refused(Rejection::Forbidden)
                }
            }
        })
    }

    /// The policy, decided again over the principal as it was proven (with the Access
    /// identity it carries, if one was fetched): a rule that needs an identity the principal
    /// does not carry refuses, since there is no token to fetch it with.
    fn readmit(&self, principal: &Principal<C>, now: u64) -> Result<(), Rejection> {
        match self.policy.decide(principal, Some(now)) {
            Decision::Allow => Ok(()),
            Decision::SessionTooOld => Err(Rejection::SessionTooOld),
            Decision::Forbidden | Decision::NeedsIdentity => Err(Rejection::Forbidden),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_requires_origin_and_audience() {
        assert!(AccessConfig::new("https://acme.cloudflareaccess.com/", ["aud"]).is_ok());
        assert_eq!(
            AccessConfig::new("https://acme.cloudflareaccess.com/", ["aud"]).unwrap().team_domain(),
            "https://acme.cloudflareaccess.com"
        );
        assert!(AccessConfig::new("acme.cloudflareaccess.com", ["aud"]).is_err());
        assert!(AccessConfig::new("http://acme.cloudflareaccess.com", ["aud"]).is_err());
        assert!(AccessConfig::new("http://127.0.0.1:8080", ["aud"]).is_ok());
        assert!(AccessConfig::new("http://[::1]:8080", ["aud"]).is_ok());
        assert!(AccessConfig::new("http://127.0.0.1.evil.com", ["aud"]).is_err());
        assert!(AccessConfig::new("https://acme.cloudflareaccess.com/path", ["aud"]).is_err());
        assert!(AccessConfig::new("https://acme.cloudflareaccess.com", Vec::<String>::new()).is_err());
        assert!(AccessConfig::new("https://acme.cloudflareaccess.com", [" "]).is_err());
        let cfg = AccessConfig::new("https://a.cloudflareaccess.com", ["x"]).unwrap();
        assert!(cfg.clone().with_leeway(AccessConfig::MAX_LEEWAY + Duration::from_secs(1)).is_err());
        assert!(cfg.clone().with_leeway(Duration::from_secs(0)).is_ok());
        assert_eq!(cfg.max_lifetime(), AccessConfig::MAX_LIFETIME);
        assert_eq!(AccessConfig::MAX_LIFETIME, Duration::from_secs(2_678_400));
        let day = Duration::from_secs(86_400);
        assert_eq!(cfg.clone().with_max_lifetime(day).unwrap().max_lifetime(), day);
        assert!(cfg.clone().with_max_lifetime(AccessConfig::MAX_LIFETIME).is_ok());
        for bad in
            [Duration::ZERO, Duration::from_millis(999), AccessConfig::MAX_LIFETIME + Duration::from_secs(1)]
        {
            assert_eq!(cfg.clone().with_max_lifetime(bad).unwrap_err().setting(), "max_lifetime", "{bad:?}");
        }
    }

    #[test]
    fn split_is_strict() {
        assert!(split("a.b.c").is_ok());
        assert!(split("a.b").is_err());
        assert!(split("a.b.c.d").is_err());
        assert!(split("a..c").is_err());
        assert!(split("a.b.").is_err());
        assert!(split(&format!("a.{}.c", "b".repeat(MAX_TOKEN_BYTES))).is_err());
    }
}
