//! Cloudflare Turnstile: prove a human (or at least a browser that passed Cloudflare's
//! challenge) filled in a public form — subscribe, contact — before the form is acted on.
//!
//! The widget on the page yields a one-time token (the `cf-turnstile-response` form field).
//! Only Cloudflare can tell whether it is genuine: a [`TurnstileVerifier`] posts it with the
//! site's secret key to the siteverify endpoint and checks the answer. Like a webhook, it is
//! verified over the request body, so the handler that reads the form calls it; it is not a
//! [`Mechanism`](crate::identity::Mechanism) on the request facts.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::sync::Arc;
//!
//! use ztgate::BoxFuture;
//! use ztgate::Rejection;
//! use ztgate::clock::FixedClock;
//! use ztgate::identity::FetchError;
//! use ztgate::identity::turnstile::{SiteverifyClient, SiteverifyRequest, TurnstileConfig, TurnstileVerifier};
//! use ztgate::secrets::StaticSecret;
//!
//! // Stands in for Cloudflare here; in production `TurnstileVerifier::new` posts to
//! // https://challenges.cloudflare.com/turnstile/v0/siteverify.
//! #[derive(Debug)]
//! struct Answers(&'static str);
//!
//! impl SiteverifyClient for Answers {
//!     fn siteverify<'a>(&'a self, _: &'a SiteverifyRequest) -> BoxFuture<'a, Result<Vec<u8>, FetchError>> {
//!         Box::pin(async move { Ok(self.0.as_bytes().to_vec()) })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = TurnstileConfig::new(["blog.example.com"])?.with_action("subscribe")?;
//! let clock = Arc::new(FixedClock::at(1_800_000_010)); // 2027-01-15T08:00:10Z
//! let cloudflare = Answers(
//!     r#"{"success":true,"challenge_ts":"2027-01-15T08:00:00.000Z","hostname":"blog.example.com",
//!         "action":"subscribe","cdata":"","error-codes":[]}"#,
//! );
//! // In production: `TurnstileVerifier::new(config, EnvSecret::new("TURNSTILE_SECRET"), clock)?`.
//! let verifier =
//!     TurnstileVerifier::with_client(config, StaticSecret::new("0x4AAAAAAA-example"), clock, Arc::new(cloudflare));
//!
//! let client_ip = Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)));
//! let human = verifier.verify("0.token-from-the-form", client_ip).await?;
//! assert_eq!(human.hostname(), "blog.example.com");
//! assert_eq!(human.action(), Some("subscribe"));
//!
//! // No token at all: refused before anything is posted (401 invalid_credential).
//! let refused = verifier.verify("", client_ip).await.unwrap_err();
//! assert_eq!(Rejection::from(refused).code(), "invalid_credential");
//! # Ok(())
//! # }
//! ```
//!
//! ## The checks, in order
//!
//! 1. the token is 1 to [`MAX_TOKEN_BYTES`] bytes (Cloudflare's documented maximum); anything
//!    else is refused without a call, so a flood of junk costs no outbound request;
//! 2. the secret key is read from its [`SecretSource`] (on every verification, so a rotated
//!    key is used at once); it is only ever written into the posted form;
//! 3. one POST (`application/x-www-form-urlencoded`: `secret`, `response`, and `remoteip` when
//!    given) to the siteverify URL, bounded: [`DEFAULT_TIMEOUT`] (3 s) for the whole exchange,
//!    [`MAX_ANSWER_BYTES`] (16 KiB) of answer, no redirects, a JSON `200` only, `https://`
//!    except on loopback. Any failure — refused connection, timeout, another status, a body
//!    that is not the documented JSON — **fails closed** (503);
//! 4. `timeout-or-duplicate` among the `error-codes`: the token was verified before (each is
//!    good for one siteverify call) or is older than Cloudflare's 300 s — refused as reuse;
//! 5. `success` must be `true`; `invalid-input-secret` / `missing-input-secret` are the
//!    operator's mistake (503 `not_configured`), `internal-error` is Cloudflare's (503), any
//!    other failure is the visitor's (401);
//! 6. `hostname` must be one of the configured hostnames (ASCII case-insensitive): a token
//!    solved on another site using the same widget is refused;
//! 7. `action`, when configured, must be equal: a token solved on the login form is refused on
//!    the subscribe form;
//! 8. `challenge_ts` (RFC 3339) must be at most [`max_age`](TurnstileConfig::with_max_age)
//!    old (default [`DEFAULT_MAX_AGE`], 300 s) and at most [`MAX_FUTURE_SKEW`] (60 s) ahead of
//!    the [`Clock`].
//!
//! Nothing is cached: every call posts, and the same token twice is refused the second time
//! by Cloudflare itself (step 4).
//!
//! Refusals are 401 `invalid_credential` (mechanism `turnstile`) with a fixed reason per check
//! ([`TurnstileError::reason`]); see [`TurnstileError`] for the 503s. Neither the token nor
//! the secret appears in an error, a `Debug` output or a log event.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::jwks::FetchError;
use crate::BoxFuture;
use crate::clock::Clock;
use crate::error::{ConfigError, Rejection};
use crate::secrets::{Secret, SecretError, SecretSource};

/// Cloudflare's siteverify endpoint, the default [`TurnstileConfig::siteverify_url`].
pub const SITEVERIFY_URL: &str = "https://challenges.cloudflare.com/turnstile/v0/siteverify";
/// Default bound on one siteverify call, connect and answer included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest timeout [`TurnstileConfig::with_timeout`] accepts: a form should not wait longer.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// Cap on a siteverify answer (a genuine one is a few hundred bytes).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// Longest token posted: Cloudflare documents 2048 characters as the maximum.
pub const MAX_TOKEN_BYTES: usize = 2048;
/// Default (and longest) age of a challenge: Cloudflare's tokens are valid for 300 s.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// How far ahead of the clock a `challenge_ts` may be (clock skew between hosts).
pub const MAX_FUTURE_SKEW: Duration = Duration::from_secs(60);

/// Longest `action` Cloudflare accepts.
const MAX_ACTION_CHARS: usize = 32;
/// Most hostnames one verifier accepts.
const MAX_HOSTNAMES: usize = 64;
/// Most error codes kept from one answer (for the log; the body is capped anyway).
const MAX_ERROR_CODES: usize = 8;
/// What the secret is called in errors: never its value.
const SECRET_NAME: &str = "Turnstile secret key";

/// How a siteverify call is made: reqwest natively (`ztgate::native::HttpSiteverify`), the
/// Workers fetch API at the edge (`ztgate::workers::WorkersSiteverify`), or a fixed answer in
/// tests. The client knows the URL; the verifier knows nothing of HTTP.
pub trait SiteverifyClient: Send + Sync + fmt::Debug + 'static {
    /// POSTs `request` (its [`body`](SiteverifyRequest::body), with
    /// `Content-Type: application/x-www-form-urlencoded`) once, and returns the answer's body.
    /// Implementations bound time and size themselves, follow no redirect and accept a JSON
    /// `200` only; everything else is an error.
    fn siteverify<'a>(&'a self, request: &'a SiteverifyRequest)
    -> BoxFuture<'a, Result<Vec<u8>, FetchError>>;
}

/// One siteverify form, encoded. It holds the secret key and the visitor's token, so `Debug`
/// shows only its length.
pub struct SiteverifyRequest {
    body: Secret,
}

impl SiteverifyRequest {
    /// The `Content-Type` of [`body`](Self::body).
    pub const CONTENT_TYPE: &'static str = "application/x-www-form-urlencoded";

    /// The form `secret=..&response=..[&remoteip=..]`, each value form-urlencoded.
    pub fn new(secret: &Secret, response: &str, remote_ip: Option<IpAddr>) -> Self {
        let mut body = Vec::with_capacity(secret.len() * 3 + response.len() * 3 + 64);
        body.extend_from_slice(b"secret=");
        form_encode(&mut body, secret.expose());
        body.extend_from_slice(b"&response=");
        form_encode(&mut body, response.as_bytes());
        if let Some(ip) = remote_ip {
            body.extend_from_slice(b"&remoteip=");
            form_encode(&mut body, ip.to_string().as_bytes());
        }
        Self { body: Secret::new(body) }
    }

    /// The encoded form: send it, never log it.
    pub fn body(&self) -> &[u8] {
        self.body.expose()
    }
}

impl fmt::Debug for SiteverifyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteverifyRequest").field("bytes", &self.body.len()).finish_non_exhaustive()
    }
}

/// `application/x-www-form-urlencoded` (WHATWG URL §5.2): alphanumerics and `*-._` as they
/// are, space as `+`, every other byte as `%XX`.
fn form_encode(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b),
            b' ' => out.push(b'+'),
            _ => out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
        }
    }
}

/// What a [`TurnstileVerifier`] accepts, and where it asks. Safe by default: the hostnames are
/// required, the age is Cloudflare's 300 s at most.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnstileConfig {
    hostnames: Vec<String>,
    action: Option<String>,
    max_age: Duration,
    siteverify_url: String,
    timeout: Duration,
}

impl TurnstileConfig {
    /// Accepts challenges solved on one of `hostnames` (the site's host names as the browser
    /// saw them, e.g. `blog.example.com`; compared ASCII case-insensitively, no wildcards).
    ///
    /// Fails for setting `turnstile_hostnames` when the list is empty, longer than 64, or a
    /// name is empty, longer than 253 bytes, or holds anything but letters, digits, `-` and `.`.
    pub fn new<I, S>(hostnames: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut names = Vec::new();
        for name in hostnames {
            let name = name.as_ref();
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !valid {
                return Err(ConfigError::new(
                    "turnstile_hostnames",
                    format!("{name:?} is not a host name (letters, digits, `-` and `.`)"),
                ));
            }
            names.push(name.to_ascii_lowercase());
        }
        if names.is_empty() || names.len() > MAX_HOSTNAMES {
            return Err(ConfigError::new(
                "turnstile_hostnames",
                format!("name 1 to {MAX_HOSTNAMES} hostnames the widget is served on"),
            ));
        }
        Ok(Self {
            hostnames: names,
            action: None,
            max_age: DEFAULT_MAX_AGE,
            siteverify_url: SITEVERIFY_URL.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Also requires the widget's `action` (its `data-action`) to be exactly `action`, so a
    /// token solved on one form is refused on another. Fails for setting `turnstile_action`
    /// unless `action` is 1 to 32 letters, digits, `_` or `-` (Cloudflare's rule).
    pub fn with_action(mut self, action: &str) -> Result<Self, ConfigError> {
        let valid = !action.is_empty()
            && action.len() <= MAX_ACTION_CHARS
            && action.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ConfigError::new(
                "turnstile_action",
                format!("{action:?} is not 1 to {MAX_ACTION_CHARS} letters, digits, `_` or `-`"),
            ));
        }
        self.action = Some(action.to_owned());
        Ok(self)
    }

    /// The oldest `challenge_ts` accepted (whole seconds, 1 s to [`DEFAULT_MAX_AGE`]; default
    /// [`DEFAULT_MAX_AGE`]). Lower it to narrow the time between the challenge and the form's
    /// submission. Fails for setting `turnstile_max_age`.
    pub fn with_max_age(mut self, max_age: Duration) -> Result<Self, ConfigError> {
        if max_age < Duration::from_secs(1) || max_age > DEFAULT_MAX_AGE {
            return Err(ConfigError::new(
                "turnstile_max_age",
                format!("must be between 1 s and {} s (tokens live 300 s)", DEFAULT_MAX_AGE.as_secs()),
            ));
        }
        self.max_age = Duration::from_secs(max_age.as_secs());
        Ok(self)
    }

    /// Where [`TurnstileVerifier::new`]'s client posts (default [`SITEVERIFY_URL`]):
    /// `https://`, or `http://` on a loopback host for tests. Checked when the client is built.
    pub fn with_siteverify_url(mut self, url: impl Into<String>) -> Self {
        self.siteverify_url = url.into();
        self
    }

    /// The bound on one siteverify call for [`TurnstileVerifier::new`]'s client (1 ms to
    /// [`MAX_TIMEOUT`]; default [`DEFAULT_TIMEOUT`]). Fails for setting `turnstile_timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout < Duration::from_millis(1) || timeout > MAX_TIMEOUT {
            return Err(ConfigError::new(
                "turnstile_timeout",
                format!("must be between 1 ms and {} s", MAX_TIMEOUT.as_secs()),
            ));
        }
        self.timeout = timeout;
        Ok(self)
    }

    /// The accepted hostnames, lowercased.
    pub fn hostnames(&self) -> &[String] {
        &self.hostnames
    }

    /// The required action, if any.
    pub fn action(&self) -> Option<&str> {
        self.action.as_deref()
    }

    /// The oldest challenge accepted.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The siteverify URL.
    pub fn siteverify_url(&self) -> &str {
        &self.siteverify_url
    }

    /// The bound on one siteverify call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Verifies Turnstile tokens for one site; see the [module docs](self) for the checks.
///
/// Build it with `TurnstileVerifier::new(config, secret, clock)`, which posts with the
/// platform's HTTP client (reqwest natively, the Workers fetch API at the edge) to
/// [`TurnstileConfig::siteverify_url`], or with [`with_client`](Self::with_client). Cheap to
/// clone. `Debug` never shows the secret.
///
/// ```
/// # use std::sync::Arc;
/// # use ztgate::clock::SystemClock;
/// # use ztgate::identity::turnstile::{TurnstileConfig, TurnstileVerifier};
/// # use ztgate::secrets::EnvSecret;
/// # fn main() -> Result<(), ztgate::ConfigError> {
/// let config = TurnstileConfig::new(["blog.example.com"])?.with_action("subscribe")?;
/// let verifier = TurnstileVerifier::new(config, EnvSecret::new("TURNSTILE_SECRET"), Arc::new(SystemClock))?;
/// // In the form's handler:
/// // let human = verifier.verify(&form.turnstile, client_ip).await.map_err(Rejection::from)?;
/// # drop(verifier);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TurnstileVerifier {
    config: Arc<TurnstileConfig>,
    secret: Arc<dyn SecretSource>,
    clock: Arc<dyn Clock>,
    client: Arc<dyn SiteverifyClient>,
}

impl fmt::Debug for TurnstileVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnstileVerifier")
            .field("config", &self.config)
            .field("secret", &self.secret)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl TurnstileVerifier {
    /// A verifier that posts through `client` (which decides where and how: `config`'s URL
    /// and timeout are for the platform's client of `TurnstileVerifier::new` only), reading
    /// the secret key from `secret` on every verification and the time from `clock`.
    pub fn with_client(
        config: TurnstileConfig,
        secret: impl SecretSource,
        clock: Arc<dyn Clock>,
        client: Arc<dyn SiteverifyClient>,
    ) -> Self {
        Self { config: Arc::new(config), secret: Arc::new(secret), clock, client }
    }

    /// What this verifier accepts.
    pub fn config(&self) -> &TurnstileConfig {
        &self.config
    }

    /// Verifies the visitor's token (the form's `cf-turnstile-response`): one siteverify call,
    /// then the checks of the [module docs](self). `remote_ip` is the visitor's address, if
    /// known for certain (behind Cloudflare, `CF-Connecting-IP`); Cloudflare may then refuse a
    /// token solved from another address.
    ///
    /// Convert the error with `Rejection::from` for the response: 401 for the visitor's
    /// failures, 503 when the answer could not be had (fail closed) or the secret is missing
    /// or refused.
    pub async fn verify(
        &self,
        token: &str,
        remote_ip: Option<IpAddr>,
    ) -> Result<VerifiedHuman, TurnstileError> {
        let result = self.check(token, remote_ip).await;
        log(&result);
        result
    }

    async fn check(&self, token: &str, remote_ip: Option<IpAddr>) -> Result<VerifiedHuman, TurnstileError> {
        if token.is_empty() {
            return Err(TurnstileError::MissingToken);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TurnstileError::TokenTooLong);
        }
        let secret = self.secret.get().await.map_err(TurnstileError::Secret)?;
        if secret.is_empty() {
            return Err(TurnstileError::Secret(SecretError::Missing(SECRET_NAME.to_owned())));
        }
        let request = SiteverifyRequest::new(&secret, token, remote_ip);
        drop(secret);
        let body = self.client.siteverify(&request).await.map_err(TurnstileError::Unavailable)?;
        drop(request);
        // serde's message can quote the answer; its position and category are enough.
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
            let why = format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column());
            TurnstileError::Unavailable(FetchError::Malformed(format!("not a siteverify answer: {why}")))
        })?;
        self.judge(answer, self.clock.now())
    }

    fn judge(&self, answer: Answer, now: u64) -> Result<VerifiedHuman, TurnstileError> {
        let codes = answer.error_codes;
        if codes.iter().any(|c| c == "timeout-or-duplicate") {
            return Err(TurnstileError::Reused);
        }
        if !answer.success {
            let has = |code: &str| codes.iter().any(|c| c == code);
            if has("invalid-input-secret") || has("missing-input-secret") {
                return Err(TurnstileError::SecretRejected);
            }
            if has("internal-error") {
                return Err(TurnstileError::Unavailable(FetchError::Network(
                    "siteverify reported internal-error".to_owned(),
                )));
            }
            let error_codes = codes.into_iter().take(MAX_ERROR_CODES).collect();
            return Err(TurnstileError::Failed { error_codes });
        }
        let malformed = |what: &str| {
            TurnstileError::Unavailable(FetchError::Malformed(format!("a successful answer without {what}")))
        };
        let hostname = answer.hostname.ok_or_else(|| malformed("a hostname"))?;
        if !self.config.hostnames.iter().any(|h| h.eq_ignore_ascii_case(&hostname)) {
            return Err(TurnstileError::HostnameMismatch { hostname });
        }
        let action = answer.action.filter(|a| !a.is_empty());
        if let Some(expected) = &self.config.action
            && action.as_deref() != Some(expected.as_str())
        {
            return Err(TurnstileError::ActionMismatch { action });
        }
        let stamp = answer.challenge_ts.ok_or_else(|| malformed("a challenge_ts"))?;
        let challenge_ts = parse_rfc3339(&stamp).ok_or_else(|| malformed("an RFC 3339 challenge_ts"))?;
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        let max_age = i64::try_from(self.config.max_age.as_secs()).unwrap_or(i64::MAX);
        let skew = i64::try_from(MAX_FUTURE_SKEW.as_secs()).unwrap_or(i64::MAX);
        if challenge_ts < now.saturating_sub(max_age) {
            return Err(TurnstileError::ChallengeTooOld);
        }
        if challenge_ts > now.saturating_add(skew) {
            return Err(TurnstileError::ChallengeInFuture);
        }
        Ok(VerifiedHuman {
            hostname: hostname.to_ascii_lowercase(),
            action,
            cdata: answer.cdata.filter(|c| !c.is_empty()),
            challenge_ts: u64::try_from(challenge_ts).unwrap_or(0),
        })
    }
}

/// The siteverify answer's members ztgate reads; others (`messages`, `metadata`) are ignored.
/// A member of the wrong type, or twice, makes the answer malformed.
#[derive(Deserialize)]
struct Answer {
    success: bool,
    #[serde(default)]
    challenge_ts: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    cdata: Option<String>,
    #[serde(rename = "error-codes", default)]
    error_codes: Vec<String>,
}

fn log(result: &Result<VerifiedHuman, TurnstileError>) {
    // Every value below that is not a fixed name is `?`-formatted: the hostname, action and
    // error codes come from an answer about a token the visitor chose.
    match result {
        Ok(human) => tracing::debug!(
            layer = "identity",
            mechanism = "turnstile",
            outcome = "verified",
            hostname = ?human.hostname,
            action = ?human.action
        ),
        Err(TurnstileError::Unavailable(e)) => tracing::warn!(
            layer = "identity",
            mechanism = "turnstile",
            outcome = "siteverify_unavailable",
            error = ?describe(e)
        ),
        Err(TurnstileError::Secret(e)) => tracing::error!(
            layer = "identity",
            mechanism = "turnstile",
            outcome = "secret_unavailable",
            error = ?e.to_string()
        ),
        Err(TurnstileError::SecretRejected) => tracing::error!(
            layer = "identity",
            mechanism = "turnstile",
            outcome = "secret_rejected",
            reason = ?"siteverify refused the secret key"
        ),
        Err(TurnstileError::Failed { error_codes }) => tracing::info!(
            layer = "identity",
            mechanism = "turnstile",
            outcome = "refused",
            reason = ?TurnstileError::FAILED,
            error_codes = ?error_codes
        ),
        Err(TurnstileError::HostnameMismatch { hostname }) => tracing::info!(
            layer = "identity",
            mechanism = "turnstile",
            outcome = "refused",
            reason = ?TurnstileError::HOSTNAME,
            hostname = ?hostname
        ),
        Err(TurnstileError::ActionMismatch { action }) => tracing::info!(
            layer = "identity",
            mechanism = "turnstile",
            outcome = "refused",
            reason = ?TurnstileError::ACTION,
            action = ?action
        ),
        Err(e) => tracing::info!(
            layer = "identity",
            mechanism = "turnstile",
            outcome = "refused",
            reason = ?e.reason()
        ),
    }
}

/// A failed siteverify call in words (`FetchError`'s own `Display` speaks of a JWKS).
fn describe(e: &FetchError) -> String {
    match e {
        FetchError::Network(why) => format!("the call failed: {why}"),
        FetchError::Timeout => "no answer within the timeout".to_owned(),
        FetchError::Status(status) => format!("it answered HTTP {status}"),
        FetchError::ContentType(t) => format!("it answered Content-Type {t:?}, not JSON"),
        FetchError::TooLarge { limit } => format!("its answer is larger than {limit} bytes"),
        FetchError::Malformed(why) => why.clone(),
        other => other.to_string(),
    }
}

/// Seconds since the Unix epoch of an RFC 3339 date-time (`2027-01-15T08:00:00.096Z`,
/// `2027-01-15t09:00:00+01:00`), or `None`. The fraction is dropped; a leap second is refused.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let at = |i: usize| b.get(i).copied();
    if at(4) != Some(b'-') || at(7) != Some(b'-') || !matches!(at(10), Some(b'T' | b't')) {
        return None;
    }
    if at(13) != Some(b':') || at(16) != Some(b':') {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    if at(i) == Some(b'.') {
        let fraction = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if !(1..=9).contains(&fraction) {
            return None;
        }
        i += 1 + fraction;
    }
    let offset = match at(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && at(i + 3) == Some(b':') => {
            let (h, m) = (digits(i + 1, 2)?, digits(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A token Cloudflare vouched for, and what it said about it. Nothing in it is secret; the
/// token itself is not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedHuman {
    hostname: String,
    action: Option<String>,
    cdata: Option<String>,
    challenge_ts: u64,
}

impl VerifiedHuman {
    /// The hostname the challenge was solved on (one of the configured ones), lowercased.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The widget's action, if it had one (equal to the configured one, if configured).
    pub fn action(&self) -> Option<&str> {
        self.action.as_deref()
    }

    /// The widget's customer data (`data-cdata`), if any: set by the page, so as much to be
    /// trusted as the page is.
    pub fn cdata(&self) -> Option<&str> {
        self.cdata.as_deref()
    }

    /// When the challenge was solved, Unix seconds.
    pub fn challenge_ts(&self) -> u64 {
        self.challenge_ts
    }
}

/// Why a token was refused, finely. Converts into the [`Rejection`] a route answers with:
///
/// | variant | status | `code` |
/// |---|---|---|
/// | [`MissingToken`](Self::MissingToken), [`TokenTooLong`](Self::TokenTooLong), [`Failed`](Self::Failed), [`Reused`](Self::Reused), [`HostnameMismatch`](Self::HostnameMismatch), [`ActionMismatch`](Self::ActionMismatch), [`ChallengeTooOld`](Self::ChallengeTooOld), [`ChallengeInFuture`](Self::ChallengeInFuture) | 401 | `invalid_credential` (mechanism `turnstile`, [`reason`](Self::reason)) |
/// | [`Unavailable`](Self::Unavailable) | 503 | `state_unavailable` (`Turnstile siteverify`) |
/// | [`SecretRejected`](Self::SecretRejected), [`Secret`](Self::Secret)`(Missing)` | 503 | `not_configured` |
/// | [`Secret`](Self::Secret)`(Unavailable)` | 503 | `state_unavailable` (`Turnstile secret key`) |
///
/// No variant carries the token or the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TurnstileError {
    /// No token: the form was sent without the widget's field, or with it empty.
    MissingToken,
    /// The token is longer than [`MAX_TOKEN_BYTES`]: not posted.
    TokenTooLong,
    /// Siteverify said `success: false` (an invalid or forged token, a bad request).
    Failed {
        /// Its `error-codes` (at most 8), for the log.
        error_codes: Vec<String>,
    },
    /// Siteverify said `timeout-or-duplicate`: the token was verified before (a replay), or
    /// expired before it was sent.
    Reused,
    /// The challenge was solved on a hostname not configured.
    HostnameMismatch {
        /// The hostname siteverify reported.
        hostname: String,
    },
    /// The challenge's action is not the configured one.
    ActionMismatch {
        /// The action siteverify reported, if any.
        action: Option<String>,
    },
    /// `challenge_ts` is older than the configured max age.
    ChallengeTooOld,
    /// `challenge_ts` is more than [`MAX_FUTURE_SKEW`] ahead of the clock.
    ChallengeInFuture,
    /// Siteverify refused the secret key (`invalid-input-secret`, `missing-input-secret`): the
    /// operator's mistake, not the visitor's.
    SecretRejected,
    /// The secret key could not be read from its source.
    Secret(SecretError),
    /// No usable answer: the call failed, timed out, was answered with another status or a
    /// body that is not a siteverify answer, or siteverify reported `internal-error`. The token
    /// is refused (fail closed).
    Unavailable(FetchError),
}

impl TurnstileError {
    const FAILED: &'static str = "the Turnstile challenge was not passed";
    const HOSTNAME: &'static str = "the Turnstile challenge was solved on another hostname";
    const ACTION: &'static str = "the Turnstile challenge was solved for another action";

    /// The fixed reason shown to the caller (the 401's message), or, for the 503s, a fixed
    /// description.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "no Turnstile token was sent",
            Self::TokenTooLong => "the Turnstile token is too long",
            Self::Failed { .. } => Self::FAILED,
            Self::Reused => "the Turnstile token was already used or has expired",
            Self::HostnameMismatch { .. } => Self::HOSTNAME,
            Self::ActionMismatch { .. } => Self::ACTION,
            Self::ChallengeTooOld => "the Turnstile challenge is too old",
            Self::ChallengeInFuture => "the Turnstile challenge is dated in the future",
            Self::SecretRejected => "siteverify refused the Turnstile secret key", // pragma: allowlist secret
            Self::Secret(_) => "the Turnstile secret key is unavailable",
            Self::Unavailable(_) => "Turnstile siteverify is unavailable",
        }
    }
}

impl fmt::Display for TurnstileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(e) => e.fmt(f),
            Self::Unavailable(e) => write!(f, "Turnstile siteverify is unavailable: {}", describe(e)),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for TurnstileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Secret(e) => Some(e),
            Self::Unavailable(e) => Some(e),
            _ => None,
        }
    }
}

impl From<TurnstileError> for Rejection {
    fn from(e: TurnstileError) -> Self {
        match e {
            // 503s: nothing the visitor did; a retry may pass once the answer can be had.
            TurnstileError::Unavailable(_) => Self::StateUnavailable { what: "Turnstile siteverify" },
            TurnstileError::Secret(SecretError::Unavailable(_)) => {
                Self::StateUnavailable { what: "Turnstile secret key" }
            }
            TurnstileError::Secret(_) => Self::NotConfigured { what: "Turnstile secret key" },
            TurnstileError::SecretRejected => Self::NotConfigured { what: "valid Turnstile secret key" },
            other => Self::InvalidCredential { mechanism: "turnstile", reason: other.reason() },
        }
    }
}

/// `docs/turnstile.md`'s examples, compiled as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../docs/turnstile.md")]
struct TurnstileDocs;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates_are_read_exactly() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2027-01-15T08:00:00Z"), Some(1_800_000_000));
        assert_eq!(parse_rfc3339("2027-01-15T08:00:00.999Z"), Some(1_800_000_000));
        assert_eq!(parse_rfc3339("2027-01-15t09:30:00+01:30"), Some(1_800_000_000));
        assert_eq!(parse_rfc3339("2027-01-15T07:00:00-01:00"), Some(1_800_000_000));
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1));
        for bad in [
            "",
            "2027-01-15",
            "2027-01-15T08:00:00",
            "2027-01-15 08:00:00Z",
            "2027-01-15T08:00:00.Z",
            "2027-01-15T08:00:00.1234567890Z",
            "2027-01-15T08:00:60Z",
            "2027-13-15T08:00:00Z",
            "2023-02-29T00:00:00Z",
            "2027-01-15T24:00:00Z",
            "2027-01-15T08:00:00+0100",
            "2027-01-15T08:00:00Z ",
            "+027-01-15T08:00:00Z",
            "2027-01-15T08:00:00+24:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_form_is_encoded_as_browsers_do() {
        let request = SiteverifyRequest::new(
            &Secret::from("0x4A+/=&k y"),
            "a.b-c_d*~é",
            Some("2001:db8::1".parse().unwrap()),
        );
        assert_eq!(
            std::str::from_utf8(request.body()).unwrap(),
            "secret=0x4A%2B%2F%3D%26k+y&response=a.b-c_d*%7E%C3%A9&remoteip=2001%3Adb8%3A%3A1"
        );
        assert_eq!(
            format!("{request:?}"),
            format!("SiteverifyRequest {{ bytes: {}, .. }}", request.body().len())
        );
    }

    #[test]
    fn configuration_that_would_weaken_the_checks_is_refused() {
        assert!(TurnstileConfig::new(Vec::<String>::new()).is_err());
        assert!(TurnstileConfig::new([""]).is_err());
        assert!(TurnstileConfig::new(["*.example.com"]).is_err());
        assert!(TurnstileConfig::new(["example.com/path"]).is_err());
        let config = TurnstileConfig::new(["Blog.Example.com"]).unwrap();
        assert_eq!(config.hostnames(), ["blog.example.com"]);
        assert!(config.clone().with_max_age(Duration::from_secs(301)).is_err());
        assert!(config.clone().with_max_age(Duration::ZERO).is_err());
        assert!(config.clone().with_action("").is_err());
        assert!(config.clone().with_action("has space").is_err());
        assert!(config.clone().with_action(&"a".repeat(33)).is_err());
        assert!(config.clone().with_timeout(Duration::ZERO).is_err());
        assert!(config.clone().with_timeout(Duration::from_secs(11)).is_err());
        assert_eq!(config.with_max_age(Duration::from_secs(60)).unwrap().max_age(), Duration::from_secs(60));
    }
}
