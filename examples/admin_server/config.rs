//! Configuration: the `ZTGATE_*` environment variables and the file `ZTGATE_CONFIG` names,
//! parsed into [`Settings`]; the defaults for credentials left unset; and the start-up errors
//! ([`EnvError`], [`Fatal`]).
//!
//! A variable that is set wins over the file, setting by setting; the file's values go through
//! the same checks as the variables', and an error names both the variable and the file's key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use ztgate::clock::SystemClock;
use ztgate::config::{ConfigFile, RouteSpec};
use ztgate::identity::hmac_token::KeyRingSource;
use ztgate::identity::shared_state::Budget;
use ztgate::identity::turnstile::{TurnstileConfig, TurnstileVerifier};
use ztgate::identity::webhook::WebhookVerifier;
use ztgate::identity::{AccessJwt, ApiKeys, TokenCacheConfig};
use ztgate::secrets::{EnvSecret, FileSecret, SecretSource, StaticSecret};
use ztgate::{AccessConfig, ConfigError, Gate, Policy};

use crate::LOG_TARGET;
use crate::serve::Limits;
use crate::ws::SocketLimits;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_DB: &str = "ztgate-admin.sqlite";
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Well below the usual 1,024 open files, leaving room for everything else the process opens.
const DEFAULT_MAX_CONNECTIONS: usize = 512;
const DEFAULT_MAX_BODY_READS: usize = 64;
/// `GET /admin/ws`: sockets open at once, and how often each one's proof is checked again.
const DEFAULT_MAX_WEBSOCKETS: usize = 256;
const DEFAULT_WS_RECHECK: Duration = Duration::from_secs(10);
/// `POST /api/subscribe` per client IP: 5 per hour.
const DEFAULT_SUBSCRIBE_LIMIT: (u32, u64) = (5, 3600);
/// Failed authentications per client IP and per credential: 20 per 5 minutes.
const DEFAULT_AUTH_FAILURES: (u32, u64) = (20, 300);
/// The range a timeout may be set to.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_CONNECTIONS_LIMIT: usize = 65_536;
/// How long the key ring read from `ZTGATE_HMAC_KEYS_FILE` is used before the file is read
/// again, and the range it may be set to (counted in whole seconds).
const DEFAULT_HMAC_KEYS_TTL: Duration = Duration::from_secs(60);
const MIN_HMAC_KEYS_TTL: Duration = Duration::from_secs(1);

/// The `[server]` table of the configuration file: this program's own settings, written as
/// the variables are (`listen = "127.0.0.1:8080"`, `header_timeout = "10s"`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerSection {
    listen: Option<String>,
    db: Option<String>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_connections: Option<u32>,
    max_body_reads: Option<u32>,
    max_websockets: Option<u32>,
    ws_recheck: Option<String>,
    auth_failures: Option<String>,
    redis_url: Option<String>,
}

/// The configuration file, as this program reads it.
pub(crate) type File = ConfigFile<ServerSection>;

/// Where settings come from: the environment first, then the file `ZTGATE_CONFIG` names.
pub(crate) struct Sources {
    file: Option<(String, File)>,
}

impl Sources {
    /// Reads `ZTGATE_CONFIG` (unset: the environment alone). The file is parsed whole, here:
    /// an unknown key is an error naming it and its line.
    pub(crate) fn load() -> Result<Self, EnvError> {
        let Some(path) = env("ZTGATE_CONFIG")? else { return Ok(Self { file: None }) };
        if path.is_empty() {
            return Err(EnvError::new("ZTGATE_CONFIG", "is set but empty"));
        }
        let file = File::read(std::path::Path::new(&path))
            .map_err(|e| EnvError::new("ZTGATE_CONFIG", e.to_string()))?;
        for warning in file.warnings() {
            tracing::warn!(target: LOG_TARGET, layer = "config", outcome = "config_warning", warning = ?warning);
        }
        Ok(Self { file: Some((path, file)) })
    }

    /// The parsed file, if there is one.
    pub(crate) fn file(&self) -> Option<&File> {
        self.file.as_ref().map(|(_, f)| f)
    }

    /// The file's route table (empty: the built-in one).
    pub(crate) fn routes(&self) -> &[RouteSpec] {
        self.file().map_or(&[], |f| f.routes.as_slice())
    }

    /// `var` if set, else the file's value for the same setting, written as the variable would be.
    fn get(&self, var: &'static str) -> Result<Option<String>, EnvError> {
        match env(var)? {
            Some(v) => Ok(Some(v)),
            None => Ok(self.file_value(var).map(|(value, _)| value)),
        }
    }

    /// The file's value for the setting `var` names, and its key in the file.
    fn file_value(&self, var: &str) -> Option<(String, &'static str)> {
        let file = self.file()?;
        let server = file.server.as_ref();
        let access = file.access.as_ref();
        let list = |v: &[String], key| (!v.is_empty()).then(|| (v.join(","), key));
        match var {
            "ZTGATE_LISTEN" => server?.listen.clone().map(|v| (v, "server.listen")),
            "ZTGATE_DB" => server?.db.clone().map(|v| (v, "server.db")),
            "ZTGATE_HEADER_TIMEOUT" => server?.header_timeout.clone().map(|v| (v, "server.header_timeout")),
            "ZTGATE_BODY_TIMEOUT" => server?.body_timeout.clone().map(|v| (v, "server.body_timeout")),
            "ZTGATE_IDLE_TIMEOUT" => server?.idle_timeout.clone().map(|v| (v, "server.idle_timeout")),
            "ZTGATE_MAX_CONNECTIONS" => {
                server?.max_connections.map(|v| (v.to_string(), "server.max_connections"))
            }
            "ZTGATE_MAX_BODY_READS" => {
                server?.max_body_reads.map(|v| (v.to_string(), "server.max_body_reads"))
            }
            "ZTGATE_MAX_WEBSOCKETS" => {
                server?.max_websockets.map(|v| (v.to_string(), "server.max_websockets"))
            }
            "ZTGATE_WS_RECHECK" => server?.ws_recheck.clone().map(|v| (v, "server.ws_recheck")),
            "ZTGATE_AUTH_FAILURES" => server?.auth_failures.clone().map(|v| (v, "server.auth_failures")),
            "ZTGATE_REDIS_URL" => server?.redis_url.clone().map(|v| (v, "server.redis_url")),
            "ZTGATE_TEAM_DOMAIN" => access.map(|a| (a.team_domain.clone(), "access.team_domain")),
            "ZTGATE_AUD" => list(&access?.audiences, "access.audiences"),
            "ZTGATE_CERTS_URL" => access?.certs_url.clone().map(|v| (v, "access.certs_url")),
            "ZTGATE_ADMIN_EMAILS" => list(&access?.allow_emails, "access.allow_emails"),
            "ZTGATE_SERVICE_TOKENS" => list(&access?.allow_service_tokens, "access.allow_service_tokens"),
            "ZTGATE_ADMIN_GROUPS" => list(&access?.allow_groups, "access.allow_groups"),
            "ZTGATE_REQUIRE_AUTH_METHOD" => list(&access?.require_auth_method, "access.require_auth_method"),
            "ZTGATE_MAX_SESSION_AGE" => {
                access?.max_session_age.map(|d| (format!("{}s", d.as_secs()), "access.max_session_age"))
            }
            "ZTGATE_IDENTITY_URL" => access?.identity_url.clone().map(|v| (v, "access.identity_url")),
            "ZTGATE_TOKEN_CACHE_MAX_AGE" => {
                let a = access?;
                match (a.token_cache, a.token_cache_max_age) {
                    (false, _) => Some(("off".to_owned(), "access.token_cache")),
                    (true, Some(d)) => Some((format!("{}ms", d.as_millis()), "access.token_cache_max_age")),
                    (true, None) => None,
                }
            }
            "ZTGATE_TRUST_CERT_HEADERS" => {
                file.request.trust_cert_headers.then(|| ("1".to_owned(), "request.trust_cert_headers"))
            }
            _ => None,
        }
    }

    /// An error about the setting `var`, saying which key of which file gave the value when the
    /// variable is unset.
    fn error(&self, var: &'static str, message: impl Into<String>) -> EnvError {
        let message = message.into();
        match (env(var), &self.file, self.file_value(var)) {
            (Ok(None), Some((path, _)), Some((_, key))) => {
                EnvError::new(var, format!("{message} (from {key} in {path})"))
            }
            _ => EnvError::new(var, message),
        }
    }
}

pub(crate) enum Identity {
    /// Production: Access verification for the configured Cloudflare Access team.
    Access(AccessSettings),
    /// No team domain: a local issuer, built once the listen address is known.
    Dev,
}

/// Production Access, as configured: what decides the verifier (and so its key and token
/// caches), who is admitted, and the mechanism built from both.
pub(crate) struct AccessSettings {
    /// Team, audiences, certs URL, identity URL, token cache: a reload that keeps these keeps
    /// the caches.
    pub(crate) verifier_key: Vec<String>,
    who: Admins,
    pub(crate) mechanism: Arc<AccessJwt>,
}

/// Who is admitted, and what their login must show.
#[derive(Clone)]
struct Admins {
    emails: Vec<String>,
    service_tokens: Vec<String>,
    groups: Vec<String>,
    auth_methods: Vec<String>,
    max_session_age: Option<Duration>,
}

impl Admins {
    fn policy(&self) -> Policy {
        let mut policy = Policy::new()
            .allow_emails(&self.emails)
            .allow_service_tokens(&self.service_tokens)
            .allow_groups(&self.groups);
        if !self.auth_methods.is_empty() {
            policy = policy.require_auth_method(&self.auth_methods);
        }
        if let Some(age) = self.max_session_age {
            policy = policy.max_session_age(age);
        }
        policy
    }
}

impl AccessSettings {
    /// Who is admitted, as a policy.
    pub(crate) fn policy(&self) -> Policy {
        self.who.policy()
    }
}

pub(crate) struct Settings {
    pub(crate) sources: Sources,
    pub(crate) listen: SocketAddr,
    pub(crate) db: PathBuf,
    pub(crate) identity: Identity,
    pub(crate) credentials: CredentialSettings,
    /// Timeouts and the connection cap of the accept loop.
    pub(crate) limits: Limits,
    /// How many webhook bodies (unauthenticated, up to 1 MiB each) may be read at once.
    pub(crate) max_body_reads: usize,
    /// `GET /admin/ws`: sockets open at once, and how often each one's proof is checked.
    pub(crate) sockets: SocketLimits,
    /// Failed authentications allowed per client IP and per credential.
    pub(crate) auth_failures: Budget,
    /// Where the fleet's shared state lives; `None`: this process's memory.
    pub(crate) redis_url: Option<String>,
    /// `POST /api/subscribe` requests per client IP.
    pub(crate) subscribe_limit: Budget,
    /// What the gates do while a shared store cannot answer.
    pub(crate) when_unavailable: WhenUnavailable,
    /// The human check of `POST /api/subscribe`; `None`: not configured (the route answers 503).
    pub(crate) turnstile: Option<Arc<TurnstileVerifier>>,
}

/// The routes' credentials as configured, before [`CredentialSettings::resolve`].
#[derive(Default)]
pub(crate) struct CredentialSettings {
    /// `None`: unset (dev mode makes a key; production refuses every API key).
    pub(crate) api_keys: Option<ApiKeys>,
    /// `None`: unset (a random key per start).
    pub(crate) hmac_keys: Option<Arc<KeyRingSource>>,
    /// `None`: unset (the webhook route answers 503).
    pub(crate) webhook: Option<WebhookVerifier>,
    pub(crate) trust_cert_headers: bool,
}

/// The routes' credentials to run with.
pub(crate) struct Credentials {
    pub(crate) api_keys: Arc<ApiKeys>,
    /// Unsubscribe links' keys: the first signs, all verify (re-read from a file if configured).
    pub(crate) ring: Arc<KeyRingSource>,
    /// Without a replay guard yet: that lives in the store.
    pub(crate) webhook: Option<WebhookVerifier>,
    pub(crate) trust_cert_headers: bool,
}

impl Settings {
    /// Reads every setting (the environment, then the file `ZTGATE_CONFIG` names), and the
    /// key ring if one is named (a missing or invalid one is an error now, not a 503 later).
    pub(crate) async fn load() -> Result<Self, EnvError> {
        let src = Sources::load()?;
        let listen = src.get("ZTGATE_LISTEN")?.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen.parse().map_err(|_| {
            src.error("ZTGATE_LISTEN", format!("{listen:?} is not an address such as 127.0.0.1:8080"))
        })?;
        let db = PathBuf::from(src.get("ZTGATE_DB")?.unwrap_or_else(|| DEFAULT_DB.to_owned()));
        let identity = match src.get("ZTGATE_TEAM_DOMAIN")? {
            Some(team) => Identity::Access(production_access(&src, &team)?),
            None => {
                // Half a production configuration without a team domain is a mistake, not a
                // request for dev mode: refuse rather than start with a local issuer.
                for var in [
                    "ZTGATE_AUD",
                    "ZTGATE_CERTS_URL",
                    "ZTGATE_ADMIN_EMAILS",
                    "ZTGATE_SERVICE_TOKENS",
                    "ZTGATE_ADMIN_GROUPS",
                    "ZTGATE_REQUIRE_AUTH_METHOD",
                    "ZTGATE_MAX_SESSION_AGE",
                    "ZTGATE_IDENTITY_URL",
                ] {
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
        // Secrets: parse errors name the variable (or the file's key) and never repeat a value.
        let api_keys = match env("ZTGATE_API_KEYS")? {
            None => match src.file() {
                Some(file) if !file.api_keys.is_empty() => Some(file.api_keys().await.map_err(file_error)?),
                _ => None,
            },
            Some(spec) => {
                let keys = ApiKeys::parse(&spec)?;
                if keys.names().is_empty() {
                    return Err(EnvError::new("ZTGATE_API_KEYS", "is set but holds no name:secret entry"));
                }
                Some(keys)
            }
        };
        let hmac_keys = hmac_keys(&src).await?;
        let webhook = match env("ZTGATE_WEBHOOK_SECRET")? {
            Some(secret) => Some(WebhookVerifier::svix(secret)?),
            None => match src.file().and_then(|f| f.webhook.as_ref()) {
                Some(section) => Some(section.verifier().await.map_err(file_error)?),
                None => None,
            },
        };
        let trust_cert_headers = match src.get("ZTGATE_TRUST_CERT_HEADERS")?.as_deref() {
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
            header_timeout: timeout(&src, "ZTGATE_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT)?,
            body_timeout: timeout(&src, "ZTGATE_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT)?,
            idle_timeout: timeout(&src, "ZTGATE_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT)?,
            max_connections: count(
                &src,
                "ZTGATE_MAX_CONNECTIONS",
                DEFAULT_MAX_CONNECTIONS,
                MAX_CONNECTIONS_LIMIT,
            )?,
        };
        let max_body_reads =
            count(&src, "ZTGATE_MAX_BODY_READS", DEFAULT_MAX_BODY_READS, limits.max_connections)?;
        let sockets = SocketLimits {
            max: count(&src, "ZTGATE_MAX_WEBSOCKETS", DEFAULT_MAX_WEBSOCKETS, MAX_CONNECTIONS_LIMIT)?,
            recheck: duration(
                &src,
                "ZTGATE_WS_RECHECK",
                DEFAULT_WS_RECHECK,
                Duration::from_millis(100)..=Duration::from_secs(300),
                "an interval such as 10s or 500ms (from 100ms to 300s)",
            )?,
        };
        let auth_failures = budget(&src, "ZTGATE_AUTH_FAILURES", DEFAULT_AUTH_FAILURES)?;
        let redis_url = src.get("ZTGATE_REDIS_URL")?.filter(|url| !url.is_empty());
        let subscribe_limit = budget(&src, "ZTGATE_SUBSCRIBE_LIMIT", DEFAULT_SUBSCRIBE_LIMIT)?;
        let turnstile = turnstile()?;
        let when_unavailable = WhenUnavailable {
            allow_unchecked_revocations: choice(
                &src,
                "ZTGATE_REVOCATIONS_WHEN_UNAVAILABLE",
                "refuse",
                "allow",
            )?,
            accept_unchecked_replays: choice(&src, "ZTGATE_REPLAYS_WHEN_UNAVAILABLE", "refuse", "accept")?,
            refuse_unlimited: choice(&src, "ZTGATE_RATE_LIMITS_WHEN_UNAVAILABLE", "allow", "refuse")?,
        };
        Ok(Self {
            sources: src,
            listen,
            db,
            identity,
            credentials,
            limits,
            max_body_reads,
            sockets,
            auth_failures,
            redis_url,
            subscribe_limit,
            turnstile,
            when_unavailable,
        })
    }
}

/// An error of the file's secrets or routes (the variable at fault is the file's).
pub(crate) fn file_error(e: ConfigError) -> EnvError {
    EnvError::new("ZTGATE_CONFIG", e.to_string())
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
            api_keys: Arc::new(api_keys),
            ring,
            webhook: self.webhook,
            trust_cert_headers: self.trust_cert_headers,
        };
        Ok((credentials, dev_api_key))
    }
}

/// The key ring: fixed by `ZTGATE_HMAC_KEYS`, or read from `ZTGATE_HMAC_KEYS_FILE` now and
/// again once per `ZTGATE_HMAC_KEYS_TTL` (never both), else the file's `[hmac_keys]`; `None`
/// when none is set.
async fn hmac_keys(src: &Sources) -> Result<Option<Arc<KeyRingSource>>, EnvError> {
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
                src,
                "ZTGATE_HMAC_KEYS_TTL",
                DEFAULT_HMAC_KEYS_TTL,
                MIN_HMAC_KEYS_TTL..=MAX_TIMEOUT,
                "a TTL such as 60s (from 1s to 3600s)",
            )?;
            Ok(Some(load_ring(FileSecret::new(path), ttl, "ZTGATE_HMAC_KEYS_FILE").await?))
        }
        (None, None) => match src.file().and_then(|f| f.hmac_keys.as_ref()) {
            Some(section) => {
                Ok(Some(Arc::new(section.key_ring(Arc::new(SystemClock)).await.map_err(file_error)?)))
            }
            None => Ok(None),
        },
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

fn production_access(src: &Sources, team: &str) -> Result<AccessSettings, EnvError> {
    if !team.starts_with("https://") {
        return Err(src.error(
            "ZTGATE_TEAM_DOMAIN",
            format!("{team:?} must start with https://, e.g. https://acme.cloudflareaccess.com"),
        ));
    }
    let audiences = list(src, "ZTGATE_AUD")?;
    if audiences.is_empty() {
        return Err(src.error("ZTGATE_AUD", "is required: the Access application's AUD tag(s)"));
    }
    let emails = list(src, "ZTGATE_ADMIN_EMAILS")?;
    if let Some(bad) = emails.iter().find(|e| !e.contains('@')) {
        return Err(src.error("ZTGATE_ADMIN_EMAILS", format!("{bad:?} is not an email address")));
    }
    let service_tokens = list(src, "ZTGATE_SERVICE_TOKENS")?;
    let groups = list(src, "ZTGATE_ADMIN_GROUPS")?;
    if emails.is_empty() && service_tokens.is_empty() && groups.is_empty() {
        return Err(EnvError::new(
            "ZTGATE_ADMIN_EMAILS",
            "nobody would be allowed in: set ZTGATE_ADMIN_EMAILS, ZTGATE_ADMIN_GROUPS and/or ZTGATE_SERVICE_TOKENS",
        ));
    }
    let auth_methods = list(src, "ZTGATE_REQUIRE_AUTH_METHOD")?;
    let max_session_age = match src.get("ZTGATE_MAX_SESSION_AGE")? {
        None => None,
        Some(_) => Some(duration(
            src,
            "ZTGATE_MAX_SESSION_AGE",
            Duration::ZERO,
            Duration::from_secs(60)..=ztgate::AccessConfig::MAX_LIFETIME,
            "a session age in seconds such as 43200 (from 60s to 31 days)",
        )?),
    };
    let who = Admins { emails, service_tokens, groups, auth_methods, max_session_age };
    let certs_url = src.get("ZTGATE_CERTS_URL")?;
    let identity_url = src.get("ZTGATE_IDENTITY_URL")?;
    let token_cache_setting = src.get("ZTGATE_TOKEN_CACHE_MAX_AGE")?;
    let mut builder =
        Gate::builder(AccessConfig::new(team, audiences.clone()).map_err(|e| src_config_error(src, e))?)
            .policy(who.policy());
    if let Some(url) = &certs_url {
        builder = builder.certs_url(url.as_str());
    }
    if let Some(url) = &identity_url {
        builder = builder.identity_url(url.as_str());
    }
    let mechanism = Arc::new(
        builder.token_cache(token_cache(src)?).build_mechanism().map_err(|e| src_config_error(src, e))?,
    );
    let mut verifier_key =
        vec![team.to_owned(), certs_url.unwrap_or_default(), identity_url.unwrap_or_default()];
    verifier_key.push(token_cache_setting.unwrap_or_default());
    verifier_key.extend(audiences);
    Ok(AccessSettings { verifier_key, who, mechanism })
}

/// ztgate's error about one of its settings, naming the variable (and the file's key).
fn src_config_error(src: &Sources, e: ConfigError) -> EnvError {
    let var = EnvError::from(e.clone()).var;
    src.error(var, e.to_string())
}

/// `ZTGATE_TOKEN_CACHE_MAX_AGE`: how long a verified Access token is answered without a new
/// signature check (1 s to 10 min, default 60 s; never past the token's `exp`), or `off`.
fn token_cache(src: &Sources) -> Result<TokenCacheConfig, EnvError> {
    const NAME: &str = "ZTGATE_TOKEN_CACHE_MAX_AGE";
    if src.get(NAME)?.as_deref() == Some("off") {
        return Ok(TokenCacheConfig::disabled());
    }
    let range = Duration::from_secs(1)..=TokenCacheConfig::MAX_MAX_AGE;
    let max_age = duration(
        src,
        NAME,
        TokenCacheConfig::DEFAULT_MAX_AGE,
        range,
        "a duration such as 60s (from 1s to 600s), or off",
    )?;
    TokenCacheConfig::default().with_max_age(max_age).map_err(|e| src.error(NAME, e.to_string()))
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
fn timeout(src: &Sources, name: &'static str, default: Duration) -> Result<Duration, EnvError> {
    duration(
        src,
        name,
        default,
        MIN_TIMEOUT..=MAX_TIMEOUT,
        "a timeout such as 10s or 500ms (from 100ms to 3600s)",
    )
}

/// A duration: whole seconds (`10` or `10s`) or milliseconds (`1500ms`), within `range`;
/// `what` describes the accepted values in the error.
fn duration(
    src: &Sources,
    name: &'static str,
    default: Duration,
    range: std::ops::RangeInclusive<Duration>,
    what: &str,
) -> Result<Duration, EnvError> {
    let Some(value) = src.get(name)? else { return Ok(default) };
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
        _ => Err(src.error(name, format!("{value:?} is not {what}"))),
    }
}

/// `ZTGATE_TURNSTILE_SECRET` (read from the environment on every verification, never kept
/// here), with `ZTGATE_TURNSTILE_HOSTNAMES` (required with it), `ZTGATE_TURNSTILE_ACTION`
/// (default `subscribe`) and `ZTGATE_TURNSTILE_URL` (default Cloudflare's siteverify).
fn turnstile() -> Result<Option<Arc<TurnstileVerifier>>, EnvError> {
    const SECRET: &str = "ZTGATE_TURNSTILE_SECRET"; // pragma: allowlist secret
    if env(SECRET)?.is_none_or(|s| s.is_empty()) {
        for var in ["ZTGATE_TURNSTILE_HOSTNAMES", "ZTGATE_TURNSTILE_ACTION", "ZTGATE_TURNSTILE_URL"] {
            if env(var)?.is_some() {
                return Err(EnvError::new(SECRET, format!("is required when {var} is set")));
            }
        }
        return Ok(None);
    }
    let hostnames: Vec<String> = env("ZTGATE_TURNSTILE_HOSTNAMES")?
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let named = |var: &'static str| move |e: ConfigError| EnvError::new(var, e.to_string());
    let mut config = TurnstileConfig::new(hostnames).map_err(named("ZTGATE_TURNSTILE_HOSTNAMES"))?;
    let action = env("ZTGATE_TURNSTILE_ACTION")?.unwrap_or_else(|| "subscribe".to_owned());
    config = config.with_action(&action).map_err(named("ZTGATE_TURNSTILE_ACTION"))?;
    if let Some(url) = env("ZTGATE_TURNSTILE_URL")? {
        config = config.with_siteverify_url(url);
    }
    let verifier = TurnstileVerifier::new(config, EnvSecret::new(SECRET), Arc::new(SystemClock))
        .map_err(named("ZTGATE_TURNSTILE_URL"))?;
    Ok(Some(Arc::new(verifier)))
}

/// What the gates do while a shared store (Redis) cannot answer. The defaults refuse what must
/// not pass unchecked and let budgets through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WhenUnavailable {
    /// Verified requests pass without the revocation check (default: 503).
    pub(crate) allow_unchecked_revocations: bool,
    /// Signed webhooks are accepted without the replay check (default: 503).
    pub(crate) accept_unchecked_replays: bool,
    /// Requests are refused when their budget cannot be checked (default: let through).
    pub(crate) refuse_unlimited: bool,
}

/// `var` is `off_word` (default, `false`) or `on_word` (`true`).
fn choice(src: &Sources, var: &'static str, off_word: &str, on_word: &str) -> Result<bool, EnvError> {
    match src.get(var)?.as_deref() {
        None => Ok(false),
        Some(v) if v == off_word => Ok(false),
        Some(v) if v == on_word => Ok(true),
        Some(other) => Err(src.error(var, format!("{other:?} is neither {off_word} nor {on_word}"))),
    }
}

/// A budget `N/window`, e.g. `20/300s`: N from 1 to 1,000,000 per a window of whole seconds
/// from 1 s to 1 day.
fn budget(src: &Sources, name: &'static str, default: (u32, u64)) -> Result<Budget, EnvError> {
    let bad = |value: &str| {
        src.error(name, format!("{value:?} is not a budget such as 20/300s (failures per window)"))
    };
    let Some(value) = src.get(name)? else {
        return Budget::new(default.0, Duration::from_secs(default.1))
            .map_err(|e| EnvError::new(name, e.to_string()));
    };
    let (n, window) = value.split_once('/').ok_or_else(|| bad(&value))?;
    let n: u32 = n.trim().parse().map_err(|_| bad(&value))?;
    let window = window.trim();
    let secs: u64 = window.strip_suffix('s').unwrap_or(window).parse().map_err(|_| bad(&value))?;
    Budget::new(n, Duration::from_secs(secs)).map_err(|e| src.error(name, e.to_string()))
}

/// A count from 1 to `max`.
fn count(src: &Sources, name: &'static str, default: usize, max: usize) -> Result<usize, EnvError> {
    let Some(value) = src.get(name)? else { return Ok(default) };
    match value.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) && value.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(src.error(name, format!("{value:?} is not a whole number from 1 to {max}"))),
    }
}

/// A comma-separated list; empty items are dropped.
fn list(src: &Sources, name: &'static str) -> Result<Vec<String>, EnvError> {
    Ok(src
        .get(name)?
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
            "identity_url" => "ZTGATE_IDENTITY_URL",
            "policy" => "ZTGATE_ADMIN_EMAILS",
            "api_keys" => "ZTGATE_API_KEYS", // pragma: allowlist secret
            "hmac_keys" => "ZTGATE_HMAC_KEYS",
            "webhook_secret" => "ZTGATE_WEBHOOK_SECRET", // pragma: allowlist secret
            "redis_url" => "ZTGATE_REDIS_URL",
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
