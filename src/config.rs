//! Configuration files (feature `config`): one TOML file deserialised into the values the
//! builders take — the Access application and who it admits, API keys by digest or secret
//! reference, the HMAC key ring, the webhook secret, request limits, and the route table.
//!
//! A key the schema does not know is an error naming the key, its line and column: a typo
//! (`audience` for `audiences`) never silently leaves a check unconfigured. Secrets are
//! references (`{ env = "VAR" }`, `{ file = "/run/secrets/x" }`) or, for API keys, a SHA-256
//! digest; a secret written into the file (`{ value = ".." }`) works, and
//! [`ConfigFile::warnings`] says so. No error message or `Debug` output repeats a secret.
//!
//! ```
//! use ztgate::config::{ConfigFile, Mechanisms};
//! use ztgate::identity::{ApiKeyAuth, Requirement};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let text = r#"
//! [access]
//! team_domain = "https://acme.cloudflareaccess.com"
//! audiences = ["aud-tag"]
//! allow_emails = ["alice@acme.com"]
//!
//! [api_keys]
//! ## printf %s "$KEY" | sha256sum
//! ops = { sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8" } # pragma: allowlist secret
//!
//! [[routes]]
//! path = "/healthz"
//! method = "GET"
//! require = "public"
//!
//! [[routes]]
//! path = "/admin/{*rest}"
//! require = { all_of = ["access", "api_key"] }
//! "#;
//! let file: ConfigFile = ConfigFile::from_toml(text)?;
//! let access = file.access.as_ref().unwrap().builder()?.build_mechanism()?;
//! let keys = Arc::new(file.api_keys().await?);
//! let mechanisms = Mechanisms::new()
//!     .with("access", Requirement::mechanism(access))
//!     .with("api_key", Requirement::mechanism(ApiKeyAuth::new(keys)));
//! let policies = file.route_policies(&mechanisms)?;
//! assert_eq!(policies.rules().count(), 2);
//!
//! // A misspelt key is refused, with where it is.
//! let err = ConfigFile::<ztgate::config::NoServer>::from_toml("[access]\naudience = []\n").unwrap_err();
//! assert!(err.to_string().contains("line 2"), "{err}");
//! assert!(err.to_string().contains("audience"), "{err}");
//! # Ok(()) }
//! ```
//!
//! The schema, every table optional:
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `access.team_domain` | string | `https://<team>.cloudflareaccess.com`, the exact `iss` |
//! | `access.audiences` | strings | the application's AUD tags |
//! | `access.certs_url` | string | JWKS URL (default `{team_domain}/cdn-cgi/access/certs`) |
//! | `access.token_cache` | bool | the verified-token cache (default `true`) |
//! | `access.token_cache_max_age` | duration | how long a verified token is answered without a new signature check (default 60 s, at most 10 min) |
//! | `access.allow_emails`, `access.allow_email_domains`, `access.allow_service_tokens`, `access.allow_groups` | strings | who the Access mechanism admits ([`Policy`]; groups from the user's Access identity) |
//! | `access.require_auth_method` | strings | the login's `amr` must contain one (`hwk`, `mfa`...) |
//! | `access.max_session_age` | duration | older logins are 401 `session_too_old` |
//! | `access.identity_url` | string | where identities are fetched (default `{team_domain}/cdn-cgi/access/get-identity`) |
//! | `api_keys.<name>` | `{ sha256 = "<hex>" }`, `{ env = "VAR" }`, `{ file = "path" }` or `{ value = ".." }` | one API key per name |
//! | `hmac_keys.secret` | secret reference | the key ring, `kid:secret,...`, signing key first |
//! | `hmac_keys.ttl` | duration | how long a read ring is used before the secret is read again (default 60 s) |
//! | `webhook.scheme` | `"svix"`, `"github"`, `"stripe"` | the sender's format (default `svix`) |
//! | `webhook.secret` | secret reference | the endpoint's signing secret |
//! | `request.trust_cert_headers` | bool | believe `cf-cert-*` headers (only behind Cloudflare alone) |
//! | `[[routes]]` `method`, `path`, `require` | string, string, requirement | the route table, first match wins; `method` defaults to `"*"` |
//! | `server` | table | the application's own settings, typed by it (`ConfigFile<S>`) |
//!
//! A requirement is a mechanism's name (`"public"`, or a name given to [`Mechanisms::with`]),
//! or `{ any_of = [..] }` / `{ all_of = [..] }` of requirements. Durations are whole numbers
//! with a unit: `500ms`, `30s`, `5m`, `1h`, `7d` (a bare number is seconds).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, de::DeserializeOwned};

use crate::clock::Clock;
use crate::error::ConfigError;
use crate::gate::{GateBuilder, RoutePolicies};
use crate::identity::access_jwt::AccessConfig;
use crate::identity::hmac_token::KeyRingSource;
use crate::identity::policy::Policy;
use crate::identity::webhook::WebhookVerifier;
use crate::identity::{ApiKeys, Requirement, TokenCacheConfig};
use crate::principal::NoClaims;
use crate::request::RequestLimits;
use crate::secrets::{FileSecret, Secret, SecretError, SecretFuture, SecretSource};

/// The largest configuration file read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// The deepest nesting of `any_of` / `all_of` in one requirement.
pub const MAX_REQUIREMENT_DEPTH: usize = 8;

/// A whole configuration file. `S` is the application's own `[server]` table (listen address,
/// database, timeouts...), checked as strictly as the rest; [`NoServer`] refuses one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(bound(deserialize = "S: DeserializeOwned"))]
#[non_exhaustive]
pub struct ConfigFile<S = NoServer> {
    /// The Cloudflare Access application, and who it admits.
    pub access: Option<AccessSection>,
    /// API keys by name.
    #[serde(default)]
    pub api_keys: BTreeMap<String, KeySpec>,
    /// The HMAC key ring for signed links.
    pub hmac_keys: Option<HmacKeysSection>,
    /// The webhook signing secret.
    pub webhook: Option<WebhookSection>,
    /// How requests are read.
    #[serde(default)]
    pub request: RequestSection,
    /// The route table, first match wins.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// The application's own settings.
    pub server: Option<S>,
}

/// The `[server]` table of a program that has none: its presence is an error.
#[derive(Debug)]
#[non_exhaustive]
pub struct NoServer;

impl<'de> Deserialize<'de> for NoServer {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(de::Error::custom("this program has no [server] settings"))
    }
}

/// `[access]`: the Access application, its key cache, and its [`Policy`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AccessSection {
    /// The team domain, the exact `iss`.
    pub team_domain: String,
    /// The application's AUD tags.
    pub audiences: Vec<String>,
    /// Where the JWKS is (default `{team_domain}/cdn-cgi/access/certs`).
    pub certs_url: Option<String>,
    /// Whether verified tokens are cached (default `true`).
    #[serde(default = "yes")]
    pub token_cache: bool,
    /// How long a verified token is answered without a new signature check.
    #[serde(default, deserialize_with = "optional_duration")]
    pub token_cache_max_age: Option<Duration>,
    /// Emails admitted.
    #[serde(default)]
    pub allow_emails: Vec<String>,
    /// Email domains admitted.
    #[serde(default)]
    pub allow_email_domains: Vec<String>,
    /// Service-token common names admitted.
    #[serde(default)]
    pub allow_service_tokens: Vec<String>,
    /// Identity provider groups whose members are admitted (by id, name or email).
    #[serde(default)]
    pub allow_groups: Vec<String>,
    /// The login must have used one of these methods (`amr`: `hwk`, `mfa`, `swk`...).
    #[serde(default)]
    pub require_auth_method: Vec<String>,
    /// Logins older than this are 401 `session_too_old`.
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_session_age: Option<Duration>,
    /// Where users' identities are fetched (default `{team_domain}/cdn-cgi/access/get-identity`).
    pub identity_url: Option<String>,
}

fn yes() -> bool {
    true
}

impl AccessSection {
    /// The application: team domain and audiences, checked.
    pub fn config(&self) -> Result<AccessConfig, ConfigError> {
        AccessConfig::new(self.team_domain.as_str(), self.audiences.iter().map(String::as_str))
    }

    /// Who is admitted, and what their login must show. Empty lists admit nobody
    /// ([`ConfigFile::warnings`] says so).
    pub fn policy(&self) -> Policy {
        let mut policy = Policy::new()
            .allow_emails(&self.allow_emails)
            .allow_email_domains(&self.allow_email_domains)
            .allow_service_tokens(&self.allow_service_tokens)
            .allow_groups(&self.allow_groups);
        if !self.require_auth_method.is_empty() {
            policy = policy.require_auth_method(&self.require_auth_method);
        }
        if let Some(age) = self.max_session_age {
            policy = policy.max_session_age(age);
        }
        policy
    }

    /// The verified-token cache as configured.
    pub fn token_cache_config(&self) -> Result<TokenCacheConfig, ConfigError> {
        match (self.token_cache, self.token_cache_max_age) {
            (false, Some(_)) => Err(ConfigError::new(
                "token_cache",
                "access.token_cache_max_age is set but access.token_cache is false",
            )),
            (false, None) => Ok(TokenCacheConfig::disabled()),
            (true, None) => Ok(TokenCacheConfig::default()),
            (true, Some(max_age)) => TokenCacheConfig::default().with_max_age(max_age),
        }
    }

    /// A [`GateBuilder`] with everything this section sets (fetcher and clock are the
    /// runtime's defaults).
    pub fn builder(&self) -> Result<GateBuilder<NoClaims>, ConfigError> {
        let mut builder = crate::Gate::builder(self.config()?)
            .policy(self.policy())
            .token_cache(self.token_cache_config()?);
        if let Some(url) = &self.certs_url {
            builder = builder.certs_url(url.as_str());
        }
        if let Some(url) = &self.identity_url {
            builder = builder.identity_url(url.as_str());
        }
        Ok(builder)
    }

    /// Whether `other` describes the same application and key cache (everything but who is
    /// admitted): a reload may then keep the verifier and its caches
    /// ([`AccessJwt::with_policy`](crate::identity::AccessJwt::with_policy)).
    pub fn same_verifier(&self, other: &Self) -> bool {
        self.team_domain == other.team_domain
            && self.audiences == other.audiences
            && self.certs_url == other.certs_url
            && self.token_cache == other.token_cache
            && self.token_cache_max_age == other.token_cache_max_age
            && self.identity_url == other.identity_url
    }
}

/// Where a secret comes from. `Debug` never shows a written value.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum SecretRef {
    /// An environment variable, read on every use.
    Env(String),
    /// A file (a mounted secret), read on every use, at most 64 KiB.
    File(PathBuf),
    /// The secret itself, written in the file: works, with a warning.
    Value(String),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(var) => write!(f, "{{ env = {var:?} }}"),
            Self::File(path) => write!(f, "{{ file = {:?} }}", path.display().to_string()),
            Self::Value(_) => f.write_str("{ value = <redacted> }"),
        }
    }
}

impl SecretSource for SecretRef {
    fn get(&self) -> SecretFuture<'_> {
        let value = match self {
            Self::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Secret::from(v)),
                _ => Err(SecretError::Missing(var.clone())),
            },
            Self::File(path) => FileSecret::new(path.clone()).read(),
            Self::Value(v) => Ok(Secret::from(v.as_str())),
        };
        Box::pin(async move { value })
    }
}

/// One API key: its SHA-256 digest (the key itself is never in the file) or a reference to the
/// key. `Debug` never shows a written value.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum KeySpec {
    /// `printf %s "$KEY" | sha256sum`: 64 hex digits.
    Sha256(String),
    /// An environment variable holding the key.
    Env(String),
    /// A file holding the key.
    File(PathBuf),
    /// The key itself: works, with a warning.
    Value(String),
}

impl fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sha256(hex) => write!(f, "{{ sha256 = {hex:?} }}"),
            Self::Env(var) => SecretRef::Env(var.clone()).fmt(f),
            Self::File(path) => SecretRef::File(path.clone()).fmt(f),
            Self::Value(_) => f.write_str("{ value = <redacted> }"),
        }
    }
}

/// `[hmac_keys]`: the ring for signed links.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HmacKeysSection {
    /// `kid:secret,...`, the first key signs, all verify.
    pub secret: SecretRef,
    /// How long a ring is used before the secret is read again (default 60 s).
    #[serde(default, deserialize_with = "optional_duration")]
    pub ttl: Option<Duration>,
}

impl HmacKeysSection {
    /// The default `ttl`.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

    /// The ring, read now: a missing or invalid secret is an error at start, not a 503 later.
    pub async fn key_ring(&self, clock: Arc<dyn Clock>) -> Result<KeyRingSource, ConfigError> {
        let ttl = self.ttl.unwrap_or(Self::DEFAULT_TTL);
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(3600) {
            return Err(ConfigError::new("hmac_keys", "hmac_keys.ttl must be from 1s to 1h"));
        }
        KeyRingSource::load(self.secret.clone(), ttl, clock).await
    }
}

/// `[webhook]`: one sender's signing secret.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WebhookSection {
    /// The sender's format.
    #[serde(default)]
    pub scheme: WebhookSchemeName,
    /// The signing secret.
    pub secret: SecretRef,
}

/// The webhook formats a file can name.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WebhookSchemeName {
    /// Svix / Standard Webhooks (the default).
    #[default]
    Svix,
    /// GitHub.
    Github,
    /// Stripe.
    Stripe,
}

impl WebhookSection {
    /// The verifier (without a replay guard: add the application's), the secret read now.
    pub async fn verifier(&self) -> Result<WebhookVerifier, ConfigError> {
        let secret = self
            .secret
            .get()
            .await
            .map_err(|e| ConfigError::new("webhook_secret", format!("webhook.secret: {e}")))?;
        match self.scheme {
            WebhookSchemeName::Svix => WebhookVerifier::svix(secret),
            WebhookSchemeName::Github => WebhookVerifier::github(secret),
            WebhookSchemeName::Stripe => WebhookVerifier::stripe(secret),
        }
    }
}

/// `[request]`: how the request layer reads requests.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RequestSection {
    /// Believe Cloudflare's `cf-cert-*` headers: only when every request reaches the origin
    /// through Cloudflare (Tunnel, authenticated origin pulls).
    #[serde(default)]
    pub trust_cert_headers: bool,
}

impl RequestSection {
    /// The request limits: the defaults, with what this section sets.
    pub fn limits(&self) -> RequestLimits {
        RequestLimits { trust_client_cert_headers: self.trust_cert_headers, ..RequestLimits::default() }
    }
}

/// One `[[routes]]` entry.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteSpec {
    /// `GET`, `POST`... or `*` (the default) for any.
    #[serde(default = "any_method")]
    pub method: String,
    /// The path pattern: literal segments, `{name}`, a final `{*rest}`.
    pub path: String,
    /// What proves a caller on this route.
    pub require: RequirementSpec,
}

fn any_method() -> String {
    "*".to_owned()
}

/// A requirement as written: a mechanism's name, or any-of / all-of of requirements.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequirementSpec {
    /// A name from the [`Mechanisms`] (`"public"` is always there).
    Named(String),
    /// The first of these that finds its credential decides.
    AnyOf(Vec<RequirementSpec>),
    /// Every one of these must verify.
    AllOf(Vec<RequirementSpec>),
}

impl fmt::Display for RequirementSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, name: &str, v: &[RequirementSpec]| {
            write!(f, "{name}(")?;
            for (i, r) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{r}")?;
            }
            f.write_str(")")
        };
        match self {
            Self::Named(name) => f.write_str(name),
            Self::AnyOf(v) => list(f, "any_of", v),
            Self::AllOf(v) => list(f, "all_of", v),
        }
    }
}

impl<'de> Deserialize<'de> for RequirementSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RequirementSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mechanism name, { any_of = [..] } or { all_of = [..] }")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RequirementSpec::Named(v.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "an empty table: write { any_of = [..] } or { all_of = [..] }",
                    ));
                };
                let list: Vec<RequirementSpec> = match key.as_str() {
                    "any_of" | "all_of" => map.next_value()?,
                    other => return Err(de::Error::unknown_field(other, &["any_of", "all_of"])),
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom("one of any_of or all_of per table"));
                }
                if list.is_empty() {
                    return Err(de::Error::custom(format!("{key} needs at least one requirement")));
                }
                Ok(if key == "any_of" { RequirementSpec::AnyOf(list) } else { RequirementSpec::AllOf(list) })
            }

            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(de::Error::custom("a list: write { any_of = [..] } or { all_of = [..] }"))
            }
        }
        d.deserialize_any(V)
    }
}

/// The mechanisms a file's routes may name. `"public"` is always there; the application adds
/// what it built (`"access"`, `"api_key"`, a signed-link mechanism...).
pub struct Mechanisms<C = NoClaims> {
    named: BTreeMap<String, Requirement<C>>,
}

impl<C: 'static> fmt::Debug for Mechanisms<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.named.iter()).finish()
    }
}

impl<C: Send + Sync + 'static> Default for Mechanisms<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Send + Sync + 'static> Mechanisms<C> {
    /// Only `"public"`.
    pub fn new() -> Self {
        let mut named = BTreeMap::new();
        named.insert("public".to_owned(), Requirement::public());
        Self { named }
    }

    /// Names `requirement` (replacing one of the same name).
    pub fn with(mut self, name: impl Into<String>, requirement: Requirement<C>) -> Self {
        self.named.insert(name.into(), requirement);
        self
    }

    /// The names routes may use.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.named.keys().map(String::as_str)
    }

    /// The requirement `spec` describes; `at` names it in errors (`routes[2].require`).
    pub fn resolve(&self, spec: &RequirementSpec, at: &str) -> Result<Requirement<C>, ConfigError> {
        self.resolve_at(spec, at, 0)
    }

    fn resolve_at(
        &self,
        spec: &RequirementSpec,
        at: &str,
        depth: usize,
    ) -> Result<Requirement<C>, ConfigError> {
        if depth >= MAX_REQUIREMENT_DEPTH {
            return Err(ConfigError::new(
                "routes",
                format!("{at}: any_of/all_of nested deeper than {MAX_REQUIREMENT_DEPTH}"),
            ));
        }
        let all = |v: &[RequirementSpec]| -> Result<Vec<Requirement<C>>, ConfigError> {
            v.iter().map(|r| self.resolve_at(r, at, depth + 1)).collect()
        };
        match spec {
            RequirementSpec::Named(name) => self.named.get(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.names().collect();
                ConfigError::new(
                    "routes",
                    format!("{at}: no mechanism named {name:?} (known: {})", known.join(", ")),
                )
            }),
            RequirementSpec::AnyOf(v) => Ok(Requirement::any_of(all(v)?)),
            RequirementSpec::AllOf(v) => Ok(Requirement::all_of(all(v)?)),
        }
    }
}

impl<S: DeserializeOwned> ConfigFile<S> {
    /// Parses a file's text. Errors give the line and column and never quote the file (a
    /// line may hold a secret).
    pub fn from_toml(text: &str) -> Result<Self, ConfigFileError> {
        toml::from_str(text).map_err(|e| ConfigFileError::parse(None, text, &e))
    }

    /// Reads and parses the file at `path` (at most [`MAX_FILE_BYTES`], UTF-8).
    pub fn read(path: &Path) -> Result<Self, ConfigFileError> {
        use std::io::Read as _;
        let io = |e: std::io::Error| ConfigFileError::at(path, format!("cannot read: {e}"));
        let file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(ConfigFileError::at(path, format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let text = String::from_utf8(bytes).map_err(|_| ConfigFileError::at(path, "not UTF-8"))?;
        toml::from_str(&text).map_err(|e| ConfigFileError::parse(Some(path), &text, &e))
    }
}

impl<S> ConfigFile<S> {
    /// What works but should not be left so: secrets written into the file, an Access
    /// application that admits nobody. One line each, never a secret.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, spec) in &self.api_keys {
            if matches!(spec, KeySpec::Value(_)) {
                out.push(format!(
                    "api_keys.{name}: the key is written in the file; prefer {{ sha256 = .. }} or {{ env = .. }}"
                ));
            }
        }
        if self.hmac_keys.as_ref().is_some_and(|h| matches!(h.secret, SecretRef::Value(_))) {
            out.push(
                "hmac_keys.secret: the key ring is written in the file; prefer { env = .. } or { file = .. }"
                    .into(),
            );
        }
        if self.webhook.as_ref().is_some_and(|w| matches!(w.secret, SecretRef::Value(_))) {
            out.push(
                "webhook.secret: the secret is written in the file; prefer { env = .. } or { file = .. }"
                    .into(),
            );
        }
        if let Some(access) = &self.access
            && access.allow_emails.is_empty()
            && access.allow_email_domains.is_empty()
            && access.allow_service_tokens.is_empty()
        {
            out.push(
                "access: no allow_emails, allow_email_domains or allow_service_tokens: Access admits nobody"
                    .into(),
            );
        }
        out
    }

    /// The API keys, each digest checked and each reference read now.
    pub async fn api_keys(&self) -> Result<ApiKeys, ConfigError> {
        let keys = ApiKeys::new();
        for (name, spec) in &self.api_keys {
            let read = |source: SecretRef| async move {
                source.get().await.map_err(|e| ConfigError::new("api_keys", format!("api_keys.{name}: {e}")))
            };
            match spec {
                KeySpec::Sha256(hex) => keys.insert_digest(name, hex)?,
                KeySpec::Env(var) => keys.insert(name, read(SecretRef::Env(var.clone())).await?)?,
                KeySpec::File(path) => keys.insert(name, read(SecretRef::File(path.clone())).await?)?,
                KeySpec::Value(v) => keys.insert(name, Secret::from(v.as_str()))?,
            }
        }
        Ok(keys)
    }

    /// The route table, each requirement resolved against `mechanisms`, with the request
    /// limits of `[request]`.
    pub fn route_policies<C: Send + Sync + 'static>(
        &self,
        mechanisms: &Mechanisms<C>,
    ) -> Result<RoutePolicies<C>, ConfigError> {
        let mut policies = RoutePolicies::with_limits(self.request.limits());
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}] ({} {})", route.method, route.path);
            let requirement = mechanisms.resolve(&route.require, &at)?;
            policies = policies.route(&route.method, &route.path, requirement)?;
        }
        Ok(policies)
    }
}

/// A configuration file that could not be read or parsed: where, and why. Never quotes the
/// file's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFileError {
    path: Option<PathBuf>,
    line: Option<(usize, usize)>,
    message: String,
}

impl ConfigFileError {
    fn at(path: &Path, message: impl Into<String>) -> Self {
        Self { path: Some(path.to_owned()), line: None, message: message.into() }
    }

    fn parse(path: Option<&Path>, text: &str, e: &toml::de::Error) -> Self {
        let line = e.span().map(|span| {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            (line, column)
        });
        // toml's message names the key (`unknown field `audience``), not its value.
        let message = e.message().trim().replace('\n', " ");
        Self { path: path.map(Path::to_owned), line, message }
    }

    /// The line and column (1-based) the error is at, when known.
    pub fn line(&self) -> Option<(usize, usize)> {
        self.line
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.path {
            write!(f, "{}: ", path.display())?;
        }
        if let Some((line, column)) = self.line {
            write!(f, "line {line}, column {column}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigFileError {}

/// A duration as written in a file: `500ms`, `30s`, `5m`, `1h`, `7d`, or a bare number of
/// seconds (a string or an integer).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = if digits.is_empty() || digits.len() > 12 {
        return Err(format!("{text:?} is not a duration such as 30s, 500ms, 5m, 1h or 7d"));
    } else {
        digits.parse().map_err(|_| format!("{text:?} is not a duration"))?
    };
    let seconds = |k: u64| Duration::from_secs(n * k);
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(seconds(1)),
        "m" => Ok(seconds(60)),
        "h" => Ok(seconds(3600)),
        "d" => Ok(seconds(86_400)),
        _ => Err(format!("{text:?} has an unknown unit (ms, s, m, h or d)")),
    }
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"30s\", \"500ms\", \"5m\" or a number of seconds")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_duration(v).map(Some).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(|s| Some(Duration::from_secs(s)))
                .map_err(|_| E::custom("a negative duration"))
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, ConfigFileError> {
        ConfigFile::from_toml(text)
    }

    #[test]
    fn unknown_keys_are_errors_with_their_line_and_name() {
        let text = "[access]\nteam_domain = \"https://a.cloudflareaccess.com\"\naudiences = [\"x\"]\nallow_email = [\"a@b.c\"]\n";
        let err = parse(text).unwrap_err();
        assert_eq!(err.line().map(|l| l.0), Some(4), "{err}");
        assert!(err.message().contains("allow_email"), "{err}");
        let err = parse("[acess]\n").unwrap_err();
        assert!(err.message().contains("acess"), "{err}");
        let err = parse("[[routes]]\npath = \"/\"\nrequire = \"public\"\nmethods = \"GET\"\n").unwrap_err();
        assert_eq!(err.line().map(|l| l.0), Some(4), "{err}");
    }

    #[test]
    fn a_parse_error_never_quotes_a_secret_from_the_line() {
        let secret = "hunter2-very-secret-value-0123456789"; // pragma: allowlist secret
        for text in [
            format!("[api_keys]\nops = {{ valeu = \"{secret}\" }}\n"),
            format!("[webhook]\nsecret = {{ value = \"{secret}\" }}\nschema = \"svix\"\n"),
            format!("[api_keys]\nops = {{ value = \"{secret}\" \n"),
        ] {
            let err = parse(&text).unwrap_err();
            assert!(!err.to_string().contains(secret), "{err}");
            assert!(!format!("{err:?}").contains(secret), "{err:?}");
        }
        let file = parse(&format!("[api_keys]\nops = {{ value = \"{secret}\" }}\n")).unwrap();
        assert!(!format!("{file:?}").contains(secret));
        assert_eq!(file.warnings().len(), 1);
    }

    #[test]
    fn the_server_table_is_refused_unless_the_program_types_it() {
        assert!(parse("[server]\nlisten = \"x\"\n").unwrap_err().message().contains("no [server]"));
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Mine {
            #[allow(dead_code)]
            listen: String,
        }
        let ok: ConfigFile<Mine> = ConfigFile::from_toml("[server]\nlisten = \"x\"\n").unwrap();
        assert_eq!(ok.server.map(|s| s.listen).as_deref(), Some("x"));
        let bad = ConfigFile::<Mine>::from_toml("[server]\nlisten = \"x\"\nlsiten = 1\n").unwrap_err();
        assert_eq!(bad.line().map(|l| l.0), Some(3), "{bad}");
    }

    #[test]
    fn requirements_resolve_by_name_and_unknown_names_are_errors() {
        let file = parse(
            "[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nrequire = { any_of = [\"public\", { all_of = [\"public\"] }] }\n",
        )
        .unwrap();
        let p = file.route_policies(&Mechanisms::<NoClaims>::new()).unwrap();
        let rules: Vec<String> = p.rules().map(|(m, path, r)| format!("{m} {path} {r:?}")).collect();
        assert_eq!(rules, ["GET /a any_of([public, all_of([public])])"]);

        let file = parse("[[routes]]\npath = \"/a\"\nrequire = \"acess\"\n").unwrap();
        let err = file.route_policies(&Mechanisms::<NoClaims>::new()).unwrap_err().to_string();
        assert!(err.contains("acess") && err.contains("routes[0]"), "{err}");
        for bad in [
            "require = []",
            "require = {}",
            "require = { any_of = [] }",
            "require = { one_of = [\"public\"] }",
            "require = 3",
        ] {
            assert!(parse(&format!("[[routes]]\npath = \"/a\"\n{bad}\n")).is_err(), "{bad}");
        }
        let deep = format!(
            "[[routes]]\npath = \"/a\"\nrequire = {}\"public\"{}\n",
            "{ any_of = [".repeat(10),
            "] }".repeat(10)
        );
        let file = parse(&deep).unwrap();
        assert!(file.route_policies(&Mechanisms::<NoClaims>::new()).is_err());
    }

    #[test]
    fn durations_take_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "s", "5 weeks", "-1s", "1.5s", "99999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let file = parse("[access]\nteam_domain = \"https://a.cloudflareaccess.com\"\naudiences = [\"x\"]\ntoken_cache_max_age = 90\n").unwrap();
        assert_eq!(file.access.unwrap().token_cache_max_age, Some(Duration::from_secs(90)));
    }

    #[tokio::test]
    async fn api_keys_come_from_digests_and_references() {
        let file = parse(
            "[api_keys]\nops = { sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\" }\nmissing = { env = \"ZTGATE_TEST_NO_SUCH_VARIABLE_9\" }\n", // pragma: allowlist secret
        )
        .unwrap();
        let err = file.api_keys().await.unwrap_err().to_string();
        assert!(err.contains("api_keys.missing"), "{err}");
        let file = parse(
            "[api_keys]\nops = { sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\" }\n", // pragma: allowlist secret
        )
        .unwrap();
        let keys = file.api_keys().await.unwrap();
        // sha256("test") — too short for a real key, but the digest path cannot know its length.
        assert_eq!(keys.verify("test").as_deref(), Some("ops"));
    }
}
