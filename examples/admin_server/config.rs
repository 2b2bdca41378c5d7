//! Configuration: the `ZTGATE_*` environment variables parsed into [`Settings`], the defaults
//! for credentials left unset, and the start-up errors ([`EnvError`], [`Fatal`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ztgate::clock::SystemClock;
use ztgate::identity::hmac_token::KeyRingSource;
use ztgate::identity::webhook::WebhookVerifier;
use ztgate::identity::{AccessJwt, ApiKeys, TokenCacheConfig};
use ztgate::secrets::{FileSecret, SecretSource, StaticSecret};
use ztgate::{AccessConfig, ConfigError, Gate, Policy};

use crate::LOG_TARGET;
use crate::serve::Limits;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_DB: &str = "ztgate-admin.sqlite";
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Well below the usual 1,024 open files, leaving room for everything else the process opens.
const DEFAULT_MAX_CONNECTIONS: usize = 512;
const DEFAULT_MAX_BODY_READS: usize = 64;
/// The range a timeout may be set to.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_CONNECTIONS_LIMIT: usize = 65_536;
/// How long the key ring read from `ZTGATE_HMAC_KEYS_FILE` is used before the file is read
/// again, and the range it may be set to (counted in whole seconds).
const DEFAULT_HMAC_KEYS_TTL: Duration = Duration::from_secs(60);
const MIN_HMAC_KEYS_TTL: Duration = Duration::from_secs(1);

pub(crate) enum Identity {
    /// Production: Access verification for the configured Cloudflare Access team.
    Access(Arc<AccessJwt>),
    /// No team domain: a local issuer, built once the listen address is known.
    Dev,
}

pub(crate) struct Settings {
    pub(crate) listen: SocketAddr,
    pub(crate) db: PathBuf,
    pub(crate) identity: Identity,
    pub(crate) credentials: CredentialSettings,
    /// Timeouts and the connection cap of the accept loop.
    pub(crate) limits: Limits,
    /// How many webhook bodies (unauthenticated, up to 1 MiB each) may be read at once.
    pub(crate) max_body_reads: usize,
}

/// The routes' credentials as configured, before [`CredentialSettings::resolve`].
pub(crate) struct CredentialSettings {
    /// `None`: unset (dev mode makes a key; production refuses every API key).
    api_keys: Option<ApiKeys>,
    /// `None`: unset (a random key per start).
    hmac_keys: Option<Arc<KeyRingSource>>,
    /// `None`: unset (the webhook route answers 503).
    webhook: Option<WebhookVerifier>,
    trust_cert_headers: bool,
}

/// The routes' credentials to run with.
pub(crate) struct Credentials {
    pub(crate) api_keys: ApiKeys,
    /// Unsubscribe links' keys: the first signs, all verify (re-read from a file if configured).
    pub(crate) ring: Arc<KeyRingSource>,
    /// Without a replay guard yet: that lives in the store.
    pub(crate) webhook: Option<WebhookVerifier>,
    pub(crate) trust_cert_headers: bool,
}

impl Settings {
    /// Reads every setting, and the key ring file if one is named (a missing or invalid one is
    /// an error now, not a 503 later).
    pub(crate) async fn from_env() -> Result<Self, EnvError> {
        let listen = env("ZTGATE_LISTEN")?.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen.parse().map_err(|_| {
            EnvError::new("ZTGATE_LISTEN", format!("{listen:?} is not an address such as 127.0.0.1:8080"))
        })?;
        let db = PathBuf::from(env("ZTGATE_DB")?.unwrap_or_else(|| DEFAULT_DB.to_owned()));
        let identity = match env("ZTGATE_TEAM_DOMAIN")? {
            Some(team) => Identity::Access(production_access(&team)?),
            None => {
                // Half a production configuration without a team domain is a mistake, not a
                // request for dev mode: refuse rather than start with a local issuer.
                for var in ["ZTGATE_AUD", "ZTGATE_CERTS_URL", "ZTGATE_ADMIN_EMAILS", "ZTGATE_SERVICE_TOKENS"]
                {
                    if env(var)?.is_some() {
                        return Err(EnvError::new(
                            "ZTGATE_TEAM_DOMAIN",
                            format!("is required when {var} is set (unset both for dev mode)"),
                        ));
                    }
                }
                Identity::Dev
            }
        };
        // Secrets: parse errors name the variable and never repeat its value.
        let api_keys = match env("ZTGATE_API_KEYS")? {
            None => None,
            Some(spec) => {
                let keys = ApiKeys::parse(&spec)?;
                if keys.names().is_empty() {
                    return Err(EnvError::new("ZTGATE_API_KEYS", "is set but holds no name:secret entry"));
                }
                Some(keys)
            }
        };
        let hmac_keys = hmac_keys().await?;
        let webhook = env("ZTGATE_WEBHOOK_SECRET")?.map(WebhookVerifier::svix).transpose()?;
        let trust_cert_headers = match env("ZTGATE_TRUST_CERT_HEADERS")?.as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(EnvError::new(
                    "ZTGATE_TRUST_CERT_HEADERS",
                    format!("{other:?} is neither 0 (ignore cf-cert-* headers) nor 1 (trust them)"),
                ));
            }
        };
        let credentials = CredentialSettings { api_keys, hmac_keys, webhook, trust_cert_headers };
        let limits = Limits {
            header_timeout: timeout("ZTGATE_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT)?,
            body_timeout: timeout("ZTGATE_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT)?,
            idle_timeout: timeout("ZTGATE_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT)?,
            max_connections: count("ZTGATE_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, MAX_CONNECTIONS_LIMIT)?,
        };
        let max_body_reads = count("ZTGATE_MAX_BODY_READS", DEFAULT_MAX_BODY_READS, limits.max_connections)?;
        Ok(Self { listen, db, identity, credentials, limits, max_body_reads })
    }
}

impl CredentialSettings {
    /// Gives each unset credential its default, with a warning. In dev mode (`dev`) an unset
    /// `ZTGATE_API_KEYS` becomes one random key named `dev`, returned too so it can be printed.
    pub(crate) async fn resolve(self, dev: bool) -> Result<(Credentials, Option<String>), Fatal> {
        let mut dev_api_key = None;
        let api_keys = match self.api_keys {
            Some(keys) => keys,
            None if dev => {
                let (keys, key) = crate::dev::api_keys()?;
                dev_api_key = Some(key);
                keys
            }
            None => {
                tracing::warn!(
                    target: LOG_TARGET,
                    "ZTGATE_API_KEYS is unset: API-key routes refuse every request"
                );
                ApiKeys::new()
            }
        };
        let ring = match self.hmac_keys {
            Some(ring) => ring,
            None => {
                tracing::warn!(
                    target: LOG_TARGET,
                    "ZTGATE_HMAC_KEYS is unset (and so is ZTGATE_HMAC_KEYS_FILE): unsubscribe links are \
                     signed with a random key made at start-up and will not survive a restart"
                );
                let spec = crate::dev::random_hmac_keys()?;
                load_ring(StaticSecret::new(spec), DEFAULT_HMAC_KEYS_TTL, "ZTGATE_HMAC_KEYS")
                    .await
                    .map_err(|e| Fatal::Runtime(format!("the random key ring: {e}")))?
            }
        };
        if self.webhook.is_none() {
            tracing::warn!(
                target: LOG_TARGET,
                "ZTGATE_WEBHOOK_SECRET is unset: POST /webhooks/inbound answers 503"
            );
        }
        if self.trust_cert_headers {
            tracing::warn!(
                target: LOG_TARGET,
                "ZTGATE_TRUST_CERT_HEADERS=1: cf-cert-* headers are believed; every request must come \
                 through Cloudflare"
            );
        }
        let credentials = Credentials {
            api_keys,
            ring,
            webhook: self.webhook,
            trust_cert_headers: self.trust_cert_headers,
        };
        Ok((credentials, dev_api_key))
    }
}

/// The key ring: fixed by `ZTGATE_HMAC_KEYS`, or read from `ZTGATE_HMAC_KEYS_FILE` now and
/// again once per `ZTGATE_HMAC_KEYS_TTL` (never both); `None` when neither is set.
async fn hmac_keys() -> Result<Option<Arc<KeyRingSource>>, EnvError> {
    let fixed = env("ZTGATE_HMAC_KEYS")?;
    let file = env("ZTGATE_HMAC_KEYS_FILE")?;
    let ttl = env("ZTGATE_HMAC_KEYS_TTL")?.is_some();
    match (fixed, file) {
        (Some(_), Some(_)) => Err(EnvError::new(
            "ZTGATE_HMAC_KEYS_FILE",
            "cannot be combined with ZTGATE_HMAC_KEYS: set one of them",
        )),
        (_, None) if ttl => Err(EnvError::new(
            "ZTGATE_HMAC_KEYS_TTL",
            "is only used with ZTGATE_HMAC_KEYS_FILE, which is unset",
        )),
        (Some(spec), None) => {
            Ok(Some(load_ring(StaticSecret::new(spec), DEFAULT_HMAC_KEYS_TTL, "ZTGATE_HMAC_KEYS").await?))
        }
        (None, Some(path)) => {
            if path.is_empty() {
                return Err(EnvError::new("ZTGATE_HMAC_KEYS_FILE", "is set but empty"));
            }
            let ttl = duration(
                "ZTGATE_HMAC_KEYS_TTL",
                DEFAULT_HMAC_KEYS_TTL,
                MIN_HMAC_KEYS_TTL..=MAX_TIMEOUT,
                "a TTL such as 60s (from 1s to 3600s)",
            )?;
            Ok(Some(load_ring(FileSecret::new(path), ttl, "ZTGATE_HMAC_KEYS_FILE").await?))
        }
        (None, None) => Ok(None),
    }
}

/// A key ring read from `source` (once per `ttl`), read now: an error names `var`, never the
/// text.
async fn load_ring(
    source: impl SecretSource,
    ttl: Duration,
    var: &'static str,
) -> Result<Arc<KeyRingSource>, EnvError> {
    match KeyRingSource::load(source, ttl, Arc::new(SystemClock)).await {
        Ok(ring) => Ok(Arc::new(ring)),
        // ztgate's messages never repeat a secret; say which variable the ring came from.
        Err(e) if e.setting() == "hmac_keys" => Err(EnvError::new(var, e.to_string())),
        Err(e) => Err(e.into()),
    }
}

fn production_access(team: &str) -> Result<Arc<AccessJwt>, EnvError> {
    if !team.starts_with("https://") {
        return Err(EnvError::new(
            "ZTGATE_TEAM_DOMAIN",
            format!("{team:?} must start with https://, e.g. https://acme.cloudflareaccess.com"),
        ));
    }
    let audiences = list("ZTGATE_AUD")?;
    if audiences.is_empty() {
        return Err(EnvError::new("ZTGATE_AUD", "is required: the Access application's AUD tag(s)"));
    }
    let emails = list("ZTGATE_ADMIN_EMAILS")?;
    if let Some(bad) = emails.iter().find(|e| !e.contains('@')) {
        return Err(EnvError::new("ZTGATE_ADMIN_EMAILS", format!("{bad:?} is not an email address")));
    }
    let service_tokens = list("ZTGATE_SERVICE_TOKENS")?;
    if emails.is_empty() && service_tokens.is_empty() {
        return Err(EnvError::new(
            "ZTGATE_ADMIN_EMAILS",
            "nobody would be allowed in: set ZTGATE_ADMIN_EMAILS and/or ZTGATE_SERVICE_TOKENS",
        ));
    }
    let mut builder = Gate::builder(AccessConfig::new(team, audiences)?)
        .policy(Policy::new().allow_emails(emails).allow_service_tokens(service_tokens));
    if let Some(url) = env("ZTGATE_CERTS_URL")? {
        builder = builder.certs_url(url);
    }
    Ok(Arc::new(builder.token_cache(token_cache()?).build_mechanism()?))
}

/// `ZTGATE_TOKEN_CACHE_MAX_AGE`: how long a verified Access token is answered without a new
/// signature check (1 s to 10 min, default 60 s; never past the token's `exp`), or `off`.
fn token_cache() -> Result<TokenCacheConfig, EnvError> {
    const NAME: &str = "ZTGATE_TOKEN_CACHE_MAX_AGE";
    if env(NAME)?.as_deref() == Some("off") {
        return Ok(TokenCacheConfig::disabled());
    }
    let range = Duration::from_secs(1)..=TokenCacheConfig::MAX_MAX_AGE;
    let max_age = duration(
        NAME,
        TokenCacheConfig::DEFAULT_MAX_AGE,
        range,
        "a duration such as 60s (from 1s to 600s), or off",
    )?;
    TokenCacheConfig::default().with_max_age(max_age).map_err(|e| EnvError::new(NAME, e.to_string()))
}

/// The value of `name`: unset → `None`; set → trimmed (empty counts as set, so it can be
/// refused rather than silently ignored).
fn env(name: &'static str) -> Result<Option<String>, EnvError> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v.trim().to_owned())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(EnvError::new(name, "is not valid UTF-8")),
    }
}

/// A timeout: whole seconds (`10` or `10s`) or milliseconds (`1500ms`), from 100 ms to 1 h.
fn timeout(name: &'static str, default: Duration) -> Result<Duration, EnvError> {
    duration(name, default, MIN_TIMEOUT..=MAX_TIMEOUT, "a timeout such as 10s or 500ms (from 100ms to 3600s)")
}

/// A duration: whole seconds (`10` or `10s`) or milliseconds (`1500ms`), within `range`;
/// `what` describes the accepted values in the error.
fn duration(
    name: &'static str,
    default: Duration,
    range: std::ops::RangeInclusive<Duration>,
    what: &str,
) -> Result<Duration, EnvError> {
    let Some(value) = env(name)? else { return Ok(default) };
    let (digits, unit) = match value.strip_suffix("ms") {
        Some(digits) => (digits, Duration::from_millis(1)),
        None => (value.strip_suffix('s').unwrap_or(&value), Duration::from_secs(1)),
    };
    let parsed = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse::<u32>().ok())
        .flatten()
        .map(|n| unit * n);
    match parsed {
        Some(d) if range.contains(&d) => Ok(d),
        _ => Err(EnvError::new(name, format!("{value:?} is not {what}"))),
    }
}

/// A count from 1 to `max`.
fn count(name: &'static str, default: usize, max: usize) -> Result<usize, EnvError> {
    let Some(value) = env(name)? else { return Ok(default) };
    match value.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) && value.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(EnvError::new(name, format!("{value:?} is not a whole number from 1 to {max}"))),
    }
}

/// A comma-separated list; empty items are dropped.
fn list(name: &'static str) -> Result<Vec<String>, EnvError> {
    Ok(env(name)?
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default())
}

/// A configuration error, naming the environment variable at fault.
#[derive(Debug)]
pub(crate) struct EnvError {
    var: &'static str,
    message: String,
}

impl EnvError {
    pub(crate) fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self { var, message: message.into() }
    }
}

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.var, self.message)
    }
}

/// ztgate names its own settings; say which environment variable set each one. (ztgate's
/// messages never repeat a secret, so they can be printed.)
impl From<ConfigError> for EnvError {
    fn from(e: ConfigError) -> Self {
        let var = match e.setting() {
            "team_domain" => "ZTGATE_TEAM_DOMAIN",
            "audiences" => "ZTGATE_AUD",
            "certs_url" => "ZTGATE_CERTS_URL",
            "policy" => "ZTGATE_ADMIN_EMAILS",
            "api_keys" => "ZTGATE_API_KEYS", // pragma: allowlist secret
            "hmac_keys" => "ZTGATE_HMAC_KEYS",
            "webhook_secret" => "ZTGATE_WEBHOOK_SECRET", // pragma: allowlist secret
            _ => "configuration",
        };
        Self::new(var, e.to_string())
    }
}

pub(crate) enum Fatal {
    Config(EnvError),
    Runtime(String),
}

impl From<EnvError> for Fatal {
    fn from(e: EnvError) -> Self {
        Self::Config(e)
    }
}

impl From<ConfigError> for Fatal {
    fn from(e: ConfigError) -> Self {
        Self::Config(e.into())
    }
}

impl Fatal {
    /// Prints the error to stderr and gives the exit status: 2 for invalid configuration.
    pub(crate) fn report(self) -> ExitCode {
        match self {
            Self::Config(e) => {
                eprintln!("admin_server: invalid configuration: {e}");
                ExitCode::from(2)
            }
            Self::Runtime(e) => {
                eprintln!("admin_server: {e}");
                ExitCode::FAILURE
            }
        }
    }
}
