//! The token exchange: AWS STS `AssumeRoleWithWebIdentity`, bounded in time, size and retries.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use quick_xml::events::Event;

use crate::error::ConfigError;
use crate::identity::FetchError;
use crate::identity::jwks::append_capped;

/// The global STS endpoint. AWS recommends the regional one of the workload's region
/// (`https://sts.<region>.amazonaws.com/`), or an interface VPC endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://sts.amazonaws.com/";
/// The STS query API version.
const VERSION: &str = "2011-06-15";
/// The longest AWS error message kept (it is logged and shown).
const MAX_MESSAGE_CHARS: usize = 256;
/// The deepest XML nesting accepted (an STS answer is five levels deep).
const MAX_XML_DEPTH: usize = 8;
/// The most XML elements accepted in one answer.
const MAX_XML_ELEMENTS: usize = 64;
/// The longest sleep between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How to reach STS and how long to wait for it.
///
/// Every bound has a default and a ceiling. The endpoint must be `https://`; plain `http://`
/// to a loopback host (a local STS such as moto's in tests) needs
/// [`StsConfig::dangerously_allow_http_on_loopback`].
///
/// The endpoint does not go through [`outbound`](crate::outbound)'s address guard: it is the
/// operator's configuration, not a caller's input, and an interface VPC endpoint for STS
/// legitimately resolves to a private address that the guard refuses.
#[derive(Clone, Debug)]
pub struct StsConfig {
    endpoint: String,
    role_arn: String,
    session_name: String,
    duration: Duration,
    attempt_timeout: Duration,
    deadline: Duration,
    max_attempts: u32,
    backoff: Duration,
    max_response_bytes: usize,
    refresh_margin: Duration,
    allow_http_on_loopback: bool,
}

impl StsConfig {
    /// The default lifetime asked for the credentials (1 h).
    pub const DEFAULT_DURATION: Duration = Duration::from_secs(3600);
    /// The default timeout of one attempt, connection included (5 s).
    pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
    /// The default bound on a whole exchange, every attempt and pause included (15 s).
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(15);
    /// The default number of attempts (3: the first and two retries).
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
    /// The default first pause between attempts (200 ms, doubled each time, with jitter).
    pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(200);
    /// The default cap on an answer (64 KiB; a real one is about 2 KiB).
    pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;
    /// The default time before expiry at which cached credentials are replaced (5 min).
    pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(300);

    /// Credentials for the role `role_arn` (`arn:aws:iam::<account>:role/<name>`) under the
    /// session name `session_name` (2 to 64 characters of `A-Z a-z 0-9 + = , . @ _ -`; it
    /// shows in CloudTrail), from [`DEFAULT_ENDPOINT`] with the default bounds. Errors name
    /// `sts.role_arn` or `sts.session_name`.
    pub fn new(role_arn: impl Into<String>, session_name: impl Into<String>) -> Result<Self, ConfigError> {
        let role_arn = role_arn.into();
        if !role_arn.starts_with("arn:")
            || role_arn.len() < 20
            || role_arn.len() > 2048
            || !role_arn.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::new(
                "sts.role_arn",
                "must be a role ARN (arn:aws:iam::<account>:role/<name>)",
            ));
        }
        let session_name = session_name.into();
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b);
        if !(2..=64).contains(&session_name.len()) || !session_name.bytes().all(allowed) {
            return Err(ConfigError::new("sts.session_name", "must be 2 to 64 of A-Z a-z 0-9 + = , . @ _ -"));
        }
        Ok(Self {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            role_arn,
            session_name,
            duration: Self::DEFAULT_DURATION,
            attempt_timeout: Self::DEFAULT_ATTEMPT_TIMEOUT,
            deadline: Self::DEFAULT_DEADLINE,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            backoff: Self::DEFAULT_BACKOFF,
            max_response_bytes: Self::DEFAULT_MAX_RESPONSE_BYTES,
            refresh_margin: Self::DEFAULT_REFRESH_MARGIN,
            allow_http_on_loopback: false,
        })
    }

    /// The STS endpoint (checked when the [`StsClient`] is built).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into();
        self
    }

    /// The credentials' lifetime asked for (`DurationSeconds`): 15 min to 12 h, whole seconds
    /// (default 1 h; the role's maximum session duration must allow it). Else an error naming
    /// `sts.duration`.
    pub fn with_duration(mut self, duration: Duration) -> Result<Self, ConfigError> {
        if duration < Duration::from_secs(900) || duration > Duration::from_secs(43_200) {
            return Err(ConfigError::new("sts.duration", "must be between 15 min and 12 h"));
        }
        self.duration = Duration::from_secs(duration.as_secs());
        Ok(self)
    }

    /// The timeout of one attempt, connection and body included: above 0, at most 60 s.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(ConfigError::new("sts.attempt_timeout", "must be above 0 and at most 60 s"));
        }
        self.attempt_timeout = timeout;
        Ok(self)
    }

    /// The bound on a whole exchange (and on a call waiting for one): above 0, at most 120 s.
    /// Past it the exchange is [`StsError::DeadlineExceeded`], whatever was in progress.
    pub fn with_deadline(mut self, deadline: Duration) -> Result<Self, ConfigError> {
        if deadline.is_zero() || deadline > Duration::from_secs(120) {
            return Err(ConfigError::new("sts.deadline", "must be above 0 and at most 120 s"));
        }
        self.deadline = deadline;
        Ok(self)
    }

    /// How many attempts an exchange may make (1 to 10, default 3). Only a failure that may
    /// pass is retried: a timeout, a connection failure, a 5xx, or STS's own
    /// `IDPCommunicationError` and `Throttling`; never a refusal such as `AccessDenied` or
    /// `InvalidIdentityToken`.
    pub fn with_max_attempts(mut self, attempts: u32) -> Result<Self, ConfigError> {
        if !(1..=10).contains(&attempts) {
            return Err(ConfigError::new("sts.max_attempts", "must be 1 to 10"));
        }
        self.max_attempts = attempts;
        Ok(self)
    }

    /// The first pause between attempts, doubled after each (at most 2 s) with random jitter
    /// down to half: at most 10 s.
    pub fn with_backoff(mut self, backoff: Duration) -> Result<Self, ConfigError> {
        if backoff > Duration::from_secs(10) {
            return Err(ConfigError::new("sts.backoff", "must be at most 10 s"));
        }
        self.backoff = backoff;
        Ok(self)
    }

    /// The cap on an answer's body, from `Content-Length` and while reading: 1 KiB to 1 MiB.
    pub fn with_max_response_bytes(mut self, max: usize) -> Result<Self, ConfigError> {
        if !(1024..=1 << 20).contains(&max) {
            return Err(ConfigError::new("sts.max_response_bytes", "must be 1 KiB to 1 MiB"));
        }
        self.max_response_bytes = max;
        Ok(self)
    }

    /// How long before their expiry cached credentials are replaced (default 5 min, at most
    /// 1 h). Capped, per credentials, at half their lifetime, so short-lived credentials are
    /// still used for a while.
    pub fn with_refresh_margin(mut self, margin: Duration) -> Result<Self, ConfigError> {
        if margin > Duration::from_secs(3600) {
            return Err(ConfigError::new("sts.refresh_margin", "must be at most 1 h"));
        }
        self.refresh_margin = margin;
        Ok(self)
    }

    /// **For tests and local development only**: accept an `http://` endpoint on a loopback
    /// host (`127.0.0.0/8`, `::1`, `localhost`), such as a moto server. The web-identity token
    /// goes out and the credentials come back in clear text; other hosts stay `https://` only.
    pub fn dangerously_allow_http_on_loopback(mut self) -> Self {
        self.allow_http_on_loopback = true;
        self
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The role asked for.
    pub fn role_arn(&self) -> &str {
        &self.role_arn
    }

    /// The bound on a whole exchange.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// See [`StsConfig::with_refresh_margin`].
    pub fn refresh_margin(&self) -> Duration {
        self.refresh_margin
    }
}

// ---------------------------------------------------------------------------------------------
// Credentials and errors.

/// Temporary AWS credentials. `Debug` shows the access key id (an identifier, as in
/// CloudTrail), the expiry and the role; never the secret key or the session token.
#[derive(Clone)]
pub struct AwsCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: u64,
    assumed_role_arn: Option<String>,
}

impl AwsCredentials {
    /// The access key id (`ASIA…`).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret access key: sign requests with it; never log it.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The session token (`X-Amz-Security-Token`): send it; never log it.
    pub fn session_token(&self) -> &str {
        &self.session_token
    }

    /// When the credentials expire, Unix seconds.
    pub fn expiration(&self) -> u64 {
        self.expiration
    }

    /// The assumed role's session ARN (`arn:aws:sts::<account>:assumed-role/<role>/<session>`),
    /// if STS named it.
    pub fn assumed_role_arn(&self) -> Option<&str> {
        self.assumed_role_arn.as_deref()
    }
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .field("session_token", &"[redacted]")
            .field("expiration", &self.expiration)
            .field("assumed_role_arn", &self.assumed_role_arn)
            .finish()
    }
}

/// Why no credentials were obtained. `Display` is for people and never contains the token or
/// a credential; AWS's message is cut to 256 characters with control characters removed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StsError {
    /// The web-identity token could not be signed.
    Token(super::issuer::IssueError),
    /// STS answered with an AWS error: `AccessDenied`, `InvalidIdentityToken`,
    /// `ExpiredTokenException`, `IDPRejectedClaim`… (not retried unless it may pass, see
    /// [`StsConfig::with_max_attempts`]).
    Aws {
        /// The HTTP status.
        status: u16,
        /// The AWS error code.
        code: String,
        /// AWS's message, cut and cleaned.
        message: String,
    },
    /// A failure status without an AWS error document (a proxy's 502, for instance).
    Status(u16),
    /// One attempt took longer than its timeout.
    Timeout,
    /// The connection failed (refused, reset, TLS…).
    Network(String),
    /// The answer was larger than the cap.
    TooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The answer was not the STS document expected.
    Malformed(String),
    /// The deadline passed before an answer: nothing more is waited for.
    DeadlineExceeded {
        /// The deadline.
        deadline: Duration,
        /// The attempts started.
        attempts: u32,
        /// The last failed attempt's error, if one failed before the deadline.
        last: Option<Box<StsError>>,
    },
}

impl StsError {
    /// Whether another attempt may succeed: a timeout, a connection failure, a 5xx, or STS's
    /// `IDPCommunicationError` (it could not reach the issuer's JWKS) and `Throttling`.
    pub fn is_retryable(&self) -> bool {
        match self {
            StsError::Timeout | StsError::Network(_) => true,
            StsError::Status(status) => *status >= 500,
            StsError::Aws { status, code, .. } => {
                *status >= 500 || matches!(code.as_str(), "IDPCommunicationError" | "Throttling")
            }
            _ => false,
        }
    }
}

impl fmt::Display for StsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StsError::Token(e) => write!(f, "web-identity token: {e}"),
            StsError::Aws { status, code, message } => write!(f, "STS refused ({status} {code}): {message}"),
            StsError::Status(status) => write!(f, "STS answered {status}"),
            StsError::Timeout => f.write_str("STS timed out"),
            StsError::Network(message) => write!(f, "STS unreachable: {message}"),
            StsError::TooLarge { limit } => write!(f, "STS answer larger than {limit} bytes"),
            StsError::Malformed(why) => write!(f, "STS answer malformed: {why}"),
            StsError::DeadlineExceeded { deadline, attempts, last } => {
                write!(f, "no STS answer within {} ms ({attempts} attempts", deadline.as_millis())?;
                match last {
                    Some(last) => write!(f, "; last: {last})"),
                    None => f.write_str(")"),
                }
            }
        }
    }
}

impl std::error::Error for StsError {}

impl From<FetchError> for StsError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Timeout => StsError::Timeout,
            FetchError::TooLarge { limit } => StsError::TooLarge { limit },
            FetchError::Status(status) => StsError::Status(status),
            other => StsError::Network(other.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client.

struct Inner {
    config: StsConfig,
    client: reqwest::Client,
    url: reqwest::Url,
}

/// Calls STS `AssumeRoleWithWebIdentity`: one form POST per attempt, each bounded by the
/// attempt timeout and the body cap, retried with exponential backoff when the failure may
/// pass, the whole bounded by the deadline. No redirects, no proxy. Cheap to clone.
///
/// [`WebIdentityCredentials`](super::WebIdentityCredentials) is what most callers want: it
/// signs the token, calls this, and caches the answer.
#[derive(Clone)]
pub struct StsClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for StsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StsClient").field("config", &self.inner.config).finish()
    }
}

impl StsClient {
    /// A client for `config`. Fails for `sts.endpoint` when it is not a URL, not `https://`,
    /// or `http://` without [`StsConfig::dangerously_allow_http_on_loopback`] (then on a
    /// loopback host only).
    pub fn new(config: StsConfig) -> Result<Self, ConfigError> {
        let setting = "sts.endpoint";
        let parsed = reqwest::Url::parse(&config.endpoint)
            .map_err(|e| ConfigError::new(setting, format!("{:?} is not a URL: {e}", config.endpoint)))?;
        if parsed.scheme() != "https" && !config.allow_http_on_loopback {
            return Err(ConfigError::new(
                setting,
                "must be https:// (http:// on a loopback host needs dangerously_allow_http_on_loopback)",
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(ConfigError::new(setting, "must hold no credentials"));
        }
        // The native fetch rules: https (http only on loopback), the timeout on the whole
        // request, no redirects, no proxy.
        let (client, url) = crate::runtime::native::bounded_client(
            setting,
            &config.endpoint,
            config.attempt_timeout,
            config.max_response_bytes,
        )?;
        Ok(Self { inner: Arc::new(Inner { config, client, url }) })
    }

    /// The configuration.
    pub fn config(&self) -> &StsConfig {
        &self.inner.config
    }

    /// Exchanges `web_identity_token` for credentials, within the deadline.
    pub async fn assume_role_with_web_identity(
        &self,
        web_identity_token: &str,
    ) -> Result<AwsCredentials, StsError> {
        let until = tokio::time::Instant::now() + self.inner.config.deadline;
        self.exchange_until(web_identity_token, until).await
    }

    /// The exchange, given up at `until`.
    pub(crate) async fn exchange_until(
        &self,
        web_identity_token: &str,
        until: tokio::time::Instant,
    ) -> Result<AwsCredentials, StsError> {
        let config = &self.inner.config;
        let form = form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", VERSION),
            ("RoleArn", &config.role_arn),
            ("RoleSessionName", &config.session_name),
            ("WebIdentityToken", web_identity_token),
            ("DurationSeconds", &config.duration.as_secs().to_string()),
        ]);
        let mut attempts = 0u32;
        let mut last: Option<StsError> = None;
        let run = async {
            loop {
                attempts += 1;
                match self.attempt(&form).await {
                    Ok(credentials) => return Ok(credentials),
                    Err(e) if e.is_retryable() && attempts < config.max_attempts => {
                        tracing::info!(layer = "workload", outcome = "sts_retry", attempt = attempts, error = ?e.to_string());
                        last = Some(e);
                        tokio::time::sleep(backoff(config.backoff, attempts)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let outcome = tokio::time::timeout_at(until, run).await;
        match outcome {
            Ok(Ok(credentials)) => Ok(credentials),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StsError::DeadlineExceeded {
                deadline: config.deadline,
                attempts,
                last: last.map(Box::new),
            }),
        }
    }

    /// One POST: the credentials, or the error this attempt ended with.
    async fn attempt(&self, form: &str) -> Result<AwsCredentials, StsError> {
        let max = self.inner.config.max_response_bytes;
        let request = self
            .inner
            .client
            .post(self.inner.url.clone())
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded; charset=utf-8")
            .body(form.to_owned());
        let mut response =
            request.send().await.map_err(|e| StsError::from(crate::runtime::native::classify(e)))?;
        let status = response.status().as_u16();
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(StsError::TooLarge { limit: max });
        }
        let mut body = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| StsError::from(crate::runtime::native::classify(e)))?
        {
            append_capped(&mut body, &chunk, max)?;
        }
        match (status, parse_answer(&body)) {
            (200, Ok(Answer::Credentials(credentials))) => Ok(credentials),
            (200, Ok(Answer::Error { code, message })) => Err(StsError::Aws { status, code, message }),
            (200, Err(why)) => Err(StsError::Malformed(why.to_owned())),
            (_, Ok(Answer::Error { code, message })) => Err(StsError::Aws { status, code, message }),
            (_, _) => Err(StsError::Status(status)),
        }
    }
}

/// `base·2^(attempt−1)`, at most [`MAX_BACKOFF`], less a random part of up to half (jitter, so
/// a fleet that failed together does not retry together).
fn backoff(base: Duration, attempt: u32) -> Duration {
    let full = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(MAX_BACKOFF);
    let mut byte = [0u8; 1];
    let jitter = match getrandom::getrandom(&mut byte) {
        Ok(()) => full / 2 * u32::from(byte[0]) / 255,
        Err(_) => Duration::ZERO,
    };
    full - jitter
}

/// `application/x-www-form-urlencoded`: every byte but the unreserved ones percent-encoded.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        for (j, part) in [name, value].into_iter().enumerate() {
            if j > 0 {
                out.push('=');
            }
            for b in part.bytes() {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The answer.

/// What an STS answer says.
#[derive(Debug)]
enum Answer {
    Credentials(AwsCredentials),
    Error { code: String, message: String },
}

const SUCCESS_ROOT: &str = "AssumeRoleWithWebIdentityResponse";
const RESULT: &str = "AssumeRoleWithWebIdentityResponse/AssumeRoleWithWebIdentityResult";

/// Reads an STS answer: the credentials of a `AssumeRoleWithWebIdentityResponse`, or the code
/// and message of an `ErrorResponse`. Strict: UTF-8, no DTD, only XML's predefined entities
/// and character references, bounded depth and element count, each field at most once.
fn parse_answer(body: &[u8]) -> Result<Answer, &'static str> {
    let leaves = leaves(body)?;
    let one = |path: &str| -> Result<Option<&str>, &'static str> {
        let mut found = leaves.iter().filter(|(p, _)| p == path);
        let first = found.next().map(|(_, text)| text.as_str());
        match found.next() {
            Some(_) => Err("a field appears twice"),
            None => Ok(first),
        }
    };
    let root = leaves.first().map(|(path, _)| path.split('/').next().unwrap_or("")).unwrap_or("");
    if root == "ErrorResponse" {
        let code =
            one("ErrorResponse/Error/Code")?.filter(|c| !c.is_empty()).ok_or("an error without a code")?;
        let message = one("ErrorResponse/Error/Message")?.unwrap_or("");
        return Ok(Answer::Error { code: clean(code, 64), message: clean(message, MAX_MESSAGE_CHARS) });
    }
    if root != SUCCESS_ROOT {
        return Err("not an AssumeRoleWithWebIdentity answer");
    }
    let field = |name: &str| -> Result<&str, &'static str> {
        one(&format!("{RESULT}/Credentials/{name}"))?
            .filter(|v| !v.is_empty())
            .ok_or("a credential field is missing")
    };
    let access_key_id = field("AccessKeyId")?;
    if !(16..=128).contains(&access_key_id.len()) || !access_key_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err("the access key id is not 16 to 128 letters and digits");
    }
    let secret_access_key = field("SecretAccessKey")?;
    let session_token = field("SessionToken")?;
    if secret_access_key.chars().chain(session_token.chars()).any(|c| c.is_control() || c == ' ') {
        return Err("a credential holds a space or a control character");
    }
    let expiration =
        parse_timestamp(field("Expiration")?).ok_or("the expiration is not an RFC 3339 UTC time")?;
    let assumed_role_arn = one(&format!("{RESULT}/AssumedRoleUser/Arn"))?.map(|arn| clean(arn, 2048));
    Ok(Answer::Credentials(AwsCredentials {
        access_key_id: access_key_id.to_owned(),
        secret_access_key: secret_access_key.to_owned(),
        session_token: session_token.to_owned(),
        expiration,
        assumed_role_arn,
    }))
}

/// Every element without child elements, as (`Root/Child/Leaf`, its text), in document order.
fn leaves(body: &[u8]) -> Result<Vec<(String, String)>, &'static str> {
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8")?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut path: Vec<String> = Vec::new();
    let mut out = Vec::new();
    // The text of the innermost open element, and whether it has child elements.
    let mut current = String::new();
    let mut has_children = false;
    let mut elements = 0usize;
    let mut open = |path: &mut Vec<String>, name: &str| -> Result<(), &'static str> {
        elements += 1;
        if path.len() >= MAX_XML_DEPTH || elements > MAX_XML_ELEMENTS {
            return Err("too deep or too many elements");
        }
        path.push(name.to_owned());
        Ok(())
    };
    loop {
        match reader.read_event().map_err(|_| "not well-formed XML")? {
            Event::Start(e) => {
                open(&mut path, e.local_name().as_ref())?;
                current.clear();
                has_children = false;
            }
            Event::Empty(e) => {
                open(&mut path, e.local_name().as_ref())?;
                out.push((path.join("/"), String::new()));
                path.pop();
                has_children = true;
            }
            Event::End(_) => {
                if !has_children {
                    out.push((path.join("/"), std::mem::take(&mut current)));
                }
                path.pop().ok_or("an end tag without a start")?;
                // The parent of a closed element has children.
                has_children = true;
                current.clear();
            }
            Event::Text(e) => current.push_str(&e.xml10_content()),
            Event::CData(e) => current.push_str(&e),
            Event::GeneralRef(r) => match r.resolve_char_ref() {
                Ok(Some(c)) => current.push(c),
                Ok(None) => current.push_str(
                    quick_xml::escape::resolve_predefined_entity(&r).ok_or("an undeclared entity")?,
                ),
                Err(_) => return Err("a bad character reference"),
            },
            Event::DocType(_) => return Err("a DTD"),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
        if path.is_empty() && !out.is_empty() {
            // Nothing but whitespace, comments or processing instructions may follow the root.
            loop {
                match reader.read_event().map_err(|_| "not well-formed XML")? {
                    Event::Eof => return Ok(out),
                    Event::Text(e) if e.xml10_content().trim().is_empty() => {}
                    Event::Comment(_) | Event::PI(_) => {}
                    _ => return Err("content after the root element"),
                }
            }
        }
    }
    Err(if out.is_empty() { "no root element" } else { "an unclosed element" })
}

/// At most `max` characters, control characters removed (the text is shown and logged).
fn clean(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// An RFC 3339 time in UTC (`2026-12-07T05:06:54Z`, fractional seconds allowed and dropped; an
/// offset other than `Z` or `+00:00` is applied) as Unix seconds; `None` for anything else.
pub(crate) fn parse_timestamp(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = b.get(range)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let o = rest.as_bytes();
            if o.len() != 6 || !matches!(o[0], b'+' | b'-') || o[3] != b':' {
                return None;
            }
            let hours = i64::try_from(number(text.len() - 5..text.len() - 3)?).ok()?;
            let minutes = i64::try_from(number(text.len() - 2..text.len())?).ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let sign = if o[0] == b'+' { 1 } else { -1 };
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if year < 1970 || day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil), in a year that starts in March.
    let (y, m) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y / 400;
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = i64::try_from(era * 146_097 + day_of_era).ok()? - 719_468;
    // A leap second (":60") counts as the last second of its minute.
    let seconds = days * 86_400 + i64::try_from(hour * 3600 + minute * 60 + second.min(59)).ok()? - offset;
    u64::try_from(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_and_nothing_else() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("2014-10-24T23:00:23Z"), Some(1_414_191_623));
        assert_eq!(parse_timestamp("2026-12-07T05:06:54.699907Z"), Some(1_796_620_014));
        assert_eq!(parse_timestamp("2024-02-29T12:00:00+00:00"), Some(1_709_208_000));
        assert_eq!(parse_timestamp("2024-02-29T13:00:00+01:00"), Some(1_709_208_000));
        assert_eq!(parse_timestamp("2016-12-31T23:59:60Z"), parse_timestamp("2016-12-31T23:59:59Z"));
        for bad in [
            "",
            "2014-10-24 23:00:23Z",
            "2014-10-24T23:00:23",
            "2023-02-29T00:00:00Z",
            "2014-13-01T00:00:00Z",
            "2014-10-24T24:00:00Z",
            "2014-10-24T23:00:23.Z",
            "2014-10-24T23:00:23+0100",
            "1969-12-31T23:59:59Z",
            "+014-10-24T23:00:23Z",
            "2014-10-24T23:00:23Zjunk",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_form_encodes_everything_but_unreserved_bytes() {
        assert_eq!(
            form(&[("a", "b c+d/e=f&g~h.i_j-k"), ("é", "")]),
            "a=b%20c%2Bd%2Fe%3Df%26g~h.i_j-k&%C3%A9="
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_at_most_half_jitter() {
        let base = Duration::from_millis(200);
        for (attempt, full) in [(1, 200), (2, 400), (3, 800), (4, 1600), (5, 2000), (40, 2000)] {
            let pause = backoff(base, attempt);
            let full = Duration::from_millis(full);
            assert!(pause <= full && pause >= full / 2, "{attempt}: {pause:?}");
        }
    }

    #[test]
    fn configuration_is_bounded() {
        let arn = "arn:aws:iam::123456789012:role/ztgate";
        assert!(StsConfig::new("role", "s1").is_err());
        assert!(StsConfig::new(arn, "s").is_err());
        assert!(StsConfig::new(arn, "has space").is_err());
        assert!(StsConfig::new(arn, "a".repeat(65)).is_err());
        let config = StsConfig::new(arn, "ci.job-1@x").unwrap();
        assert!(config.clone().with_duration(Duration::from_secs(899)).is_err());
        assert!(config.clone().with_max_attempts(0).is_err());
        assert!(config.clone().with_max_attempts(11).is_err());
        assert!(config.clone().with_deadline(Duration::ZERO).is_err());
        assert!(config.clone().with_max_response_bytes(100).is_err());
        assert!(StsClient::new(config.clone().with_endpoint("http://127.0.0.1:9/")).is_err());
        assert!(StsClient::new(config.clone().with_endpoint("http://sts.example.com/")).is_err());
        let loopback =
            config.clone().with_endpoint("http://127.0.0.1:9/").dangerously_allow_http_on_loopback();
        assert!(StsClient::new(loopback).is_ok());
        let remote =
            config.clone().with_endpoint("http://sts.example.com/").dangerously_allow_http_on_loopback();
        assert!(StsClient::new(remote).is_err(), "the switch admits loopback only");
        assert!(StsClient::new(config.with_endpoint("https://sts.eu-west-1.amazonaws.com/")).is_ok());
    }
}
