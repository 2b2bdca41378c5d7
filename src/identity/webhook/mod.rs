//! Webhook signatures: prove a request came from Svix (Resend, Clerk, any Standard Webhooks
//! sender), GitHub or Stripe, and that it is not a replay.
//!
//! A [`WebhookVerifier`] holds one endpoint's signing secret and checks a request's headers
//! and raw body: the HMAC-SHA256 signature (constant-time), the signed timestamp against a
//! tolerance window, and optionally a [`ReplayGuard`] that refuses a message accepted before.
//!
//! ```
//! use std::sync::Arc;
//!
//! use base64::Engine as _;
//! use base64::engine::general_purpose::STANDARD;
//! use hmac::{Hmac, Mac};
//! use ztgate::Rejection;
//! use ztgate::identity::webhook::{InMemoryReplayGuard, WebhookScheme, WebhookVerifier};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The endpoint's signing secret as the dashboard shows it: `whsec_` + base64.
//! // In production: `std::env::var("WEBHOOK_SECRET")?`.
//! let key = [7u8; 24];
//! let secret = format!("whsec_{}", STANDARD.encode(key));
//! let verifier = WebhookVerifier::svix(secret)?.with_replay_guard(Arc::new(InMemoryReplayGuard::default()));
//!
//! // A delivery, signed here the way Svix signs it.
//! let body = br#"{"type":"email.delivered"}"#;
//! let (id, timestamp) = ("msg_example_1", "1700000000");
//! let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
//! mac.update(format!("{id}.{timestamp}.").as_bytes());
//! mac.update(body);
//! let signature = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
//! let mut headers = http::HeaderMap::new();
//! headers.insert("svix-id", id.parse()?);
//! headers.insert("svix-timestamp", timestamp.parse()?);
//! headers.insert("svix-signature", signature.parse()?);
//!
//! let now = 1_700_000_042; // `ztgate::clock::unix_now()`, or an injected `Clock`
//! let message = verifier.verify(&headers, body, now).await?;
//! assert_eq!(message.scheme(), WebhookScheme::Svix);
//! assert_eq!(message.id(), Some(id));
//!
//! // The same delivery again is a replay (409); a stale one is refused (401).
//! assert_eq!(verifier.verify(&headers, body, now).await, Err(Rejection::Replayed));
//! assert!(verifier.verify(&headers, body, now + 301).await.is_err());
//! # Ok(())
//! # }
//! ```
//!
//! ## The schemes
//!
//! | constructor | headers | MAC = HMAC-SHA256(key, ..) | key | encoding |
//! |---|---|---|---|---|
//! | [`svix`](WebhookVerifier::svix) | `svix-id`, `svix-timestamp`, `svix-signature` (or `webhook-id`, `webhook-timestamp`, `webhook-signature`) | `{id}.{timestamp}.{body}` | base64-decoded part after `whsec_` | `v1,<base64>`, space-separated |
//! | [`github`](WebhookVerifier::github) | `X-Hub-Signature-256` | `{body}` | the secret's bytes | `sha256=<hex>` |
//! | [`stripe`](WebhookVerifier::stripe) | `Stripe-Signature` | `{t}.{body}` | the whole `whsec_...` string's bytes | `t=<unix>,v1=<hex>[,v1=..]` |
//!
//! - **Svix** sends several `v1` entries while a secret rotates: the message is accepted if
//!   any matches. Entries of other versions (`v1a` asymmetric signatures) are ignored; a
//!   header with no `v1` entry is refused. The `svix-` names are used if any of them is
//!   present, else the Standard Webhooks `webhook-` names.
//! - **Stripe's secret is not decoded.** It looks like Svix's (`whsec_...`) but Stripe's
//!   libraries key the HMAC with the UTF-8 bytes of the whole string, prefix included; base64-
//!   decoding it (the Svix rule) would make every signature fail. `v0` entries (test-mode
//!   events) are ignored, so a header with only `v0` is refused.
//! - **GitHub signs the body only**: no timestamp, so no tolerance window, and its
//!   `X-GitHub-Delivery` id is *not* signed (anyone replaying a captured request can change
//!   it). With a replay guard, the key is the body's MAC, remembered for one tolerance
//!   window: an identical body is refused within it, not after it. Where a replayed event
//!   would do harm, also dedupe on an id inside the signed body in storage.
//!
//! ## The checks, in order
//!
//! 1. the body is at most [`max_body_bytes`](WebhookVerifier::max_body_bytes) (413);
//! 2. each header is present exactly once, within its cap ([`MAX_ID_BYTES`],
//!    [`MAX_SIGNATURE_HEADER_BYTES`], at most [`MAX_SIGNATURES`] signatures of the supported
//!    version) and strictly formed: the Svix id is visible ASCII without `.` (so
//!    `{id}.{timestamp}.{body}` has one reading), timestamps are plain decimal (no sign,
//!    whitespace or leading zero, at most [`MAX_TIMESTAMP_DIGITS`] digits), hex is exactly 64
//!    lowercase digits;
//! 3. the MAC, compared in constant time against every candidate in full;
//! 4. the timestamp (Svix, Stripe): accepted when
//!    `now - tolerance <= timestamp <= now + tolerance`, both edges included (default
//!    [`DEFAULT_TOLERANCE`], 5 minutes): older is stale, newer is from a clock too far ahead
//!    or a pre-signed message;
//! 5. the replay guard, if any: only now, so a forged request cannot burn a genuine id.
//!
//! Steps 2–4 fail as [`Rejection::InvalidCredential`] (401) with a fixed reason that never
//! contains a header value or the secret. A forged request stops at step 3 and learns nothing
//! about its timestamp.
//!
//! ## Replays
//!
//! The guard records a key per accepted message, scoped by scheme so providers never collide:
//! `svix:<id>`, `stripe:<hex MAC of t.body>`, `github:<hex MAC of body>`. The record lives as
//! long as a replay could pass step 4 (`timestamp + tolerance`; GitHub: `now + tolerance`).
//! A second delivery within that time is [`Rejection::Replayed`] (409). A store that cannot
//! answer, or an [`InMemoryReplayGuard`] full of live records, refuses the message with a 503
//! ([`Rejection::StateUnavailable`], code `state_unavailable`): never accepted unchecked.
//!
//! The record is made when the signature verifies, before your handler runs. If handling then
//! fails, the provider's retry carries the same Svix id and is refused until the record
//! expires; Svix retries for days, so the message still arrives, but later. Handle
//! deliveries so that they cannot fail after verification (enqueue durably, then answer 2xx),
//! or dedupe yourself with [`verify_without_replay_guard`](WebhookVerifier::verify_without_replay_guard)
//! and [`VerifiedWebhook::replay_key`] in the same transaction as the effect.
//!
//! ## The body
//!
//! Verification needs the raw body bytes, read by the caller. Read it with a cap, never
//! unbounded: [`check_content_length`] refuses a declared length over the cap before reading,
//! and [`append_capped`] enforces it while reading chunks (with axum,
//! `axum::body::to_bytes(body, limit)` does the same). Both answer
//! [`Rejection::PayloadTooLarge`] (413). The default cap is [`DEFAULT_MAX_BODY_BYTES`].

mod replay;
mod schemes;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::{HeaderMap, header};

pub use replay::{InMemoryReplayGuard, ReplayGuard, ReplayStoreError};

use crate::error::{ConfigError, Rejection};
use crate::secrets::Secret;

/// Default timestamp tolerance: 5 minutes either way, as Svix and Stripe use.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// Longest tolerance [`WebhookVerifier::with_tolerance`] accepts (1 hour).
pub const MAX_TOLERANCE: Duration = Duration::from_secs(60 * 60);
/// Default body cap: 1 MiB. Svix, GitHub and Stripe payloads are far smaller.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest Svix message id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest signature header accepted, in bytes.
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 8 * 1024;
/// Most signatures of the supported version one header may carry (secret rotation needs 2).
pub const MAX_SIGNATURES: usize = 16;
/// Most digits in a timestamp (Unix seconds have 10 until the year 2286).
pub const MAX_TIMESTAMP_DIGITS: usize = 12;
/// Shortest Svix key, in decoded bytes: Svix issues 24, the Standard Webhooks spec asks for
/// 24 to 64.
pub const MIN_SVIX_KEY_BYTES: usize = 24;
/// Shortest GitHub secret, and shortest Stripe secret after `whsec_`, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// The setting [`ConfigError`]s about a webhook secret name.
const SECRET_SETTING: &str = "webhook_secret";
/// Padding optional: a secret pasted without its trailing `=` is still unambiguous.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Which provider format a verifier checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WebhookScheme {
    /// Svix, Resend, Clerk and other Standard Webhooks senders.
    Svix,
    /// GitHub (`X-Hub-Signature-256`).
    GitHub,
    /// Stripe (`Stripe-Signature`).
    Stripe,
}

impl WebhookScheme {
    /// A stable lowercase name (`svix`, `github`, `stripe`): the prefix of replay keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Svix => "svix",
            Self::GitHub => "github",
            Self::Stripe => "stripe",
        }
    }
}

impl fmt::Display for WebhookScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The key material per scheme. `Secret`'s `Debug` keeps it out of every printout.
#[derive(Clone, Debug)]
enum Key {
    Svix(Secret),
    GitHub(Secret),
    Stripe(Secret),
}

/// Verifies one endpoint's webhook deliveries. See the [module docs](self) for the schemes,
/// the checks and the replay semantics.
///
/// Cheap to clone (the replay guard is shared). `Debug` never shows the secret.
#[derive(Clone, Debug)]
pub struct WebhookVerifier {
    key: Key,
    tolerance: Duration,
    max_body_bytes: usize,
    replay: Option<Arc<dyn ReplayGuard>>,
    /// Accept (unchecked, logged) when the replay store cannot answer, instead of 503.
    replay_fail_open: bool,
}

impl WebhookVerifier {
    /// A Svix / Resend / Standard Webhooks verifier. `secret` is the endpoint's signing secret
    /// as shown by the provider: `whsec_` followed by standard base64 of at least
    /// [`MIN_SVIX_KEY_BYTES`] bytes.
    ///
    /// Fails with a [`ConfigError`] for setting `webhook_secret` when the prefix is missing,
    /// the rest is not base64, or the key is too short. The message never repeats the secret.
    pub fn svix(secret: impl Into<Secret>) -> Result<Self, ConfigError> {
        let secret = secret.into();
        let text = secret_text(&secret)?;
        let encoded = text
            .strip_prefix("whsec_")
            .ok_or_else(|| ConfigError::new(SECRET_SETTING, "a Svix signing secret starts with `whsec_`"))?;
        let key = SECRET_BASE64.decode(encoded).map_err(|_| {
            ConfigError::new(SECRET_SETTING, "the part after `whsec_` is not standard base64")
        })?;
        if key.len() < MIN_SVIX_KEY_BYTES {
            return Err(ConfigError::new(
                SECRET_SETTING,
                format!("the key decodes to {} bytes; at least {MIN_SVIX_KEY_BYTES} expected", key.len()),
            ));
        }
        Ok(Self::with_key(Key::Svix(Secret::new(key))))
    }

    /// A GitHub verifier. `secret` is the webhook's secret, used as given (its bytes key the
    /// HMAC); at least [`MIN_SECRET_BYTES`] bytes.
    ///
    /// GitHub signs no timestamp: see the [module docs](self) for what the replay guard can
    /// and cannot do here.
    pub fn github(secret: impl Into<Secret>) -> Result<Self, ConfigError> {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::new(
                SECRET_SETTING,
                format!(
                    "the GitHub webhook secret is {} bytes; at least {MIN_SECRET_BYTES} expected",
                    secret.len()
                ),
            ));
        }
        if has_outer_whitespace(secret.expose()) {
            return Err(whitespace_error());
        }
        Ok(Self::with_key(Key::GitHub(secret)))
    }

    /// A Stripe verifier. `secret` is the endpoint's signing secret, `whsec_...`, used as-is:
    /// Stripe keys the HMAC with the bytes of the whole string, prefix included, and does
    /// **not** base64-decode it as Svix does.
    ///
    /// Fails for setting `webhook_secret` without the `whsec_` prefix, with fewer than
    /// [`MIN_SECRET_BYTES`] characters after it, or with whitespace or non-ASCII in it.
    pub fn stripe(secret: impl Into<Secret>) -> Result<Self, ConfigError> {
        let secret = secret.into();
        let text = secret_text(&secret)?;
        let rest = text.strip_prefix("whsec_").ok_or_else(|| {
            ConfigError::new(SECRET_SETTING, "a Stripe signing secret starts with `whsec_`")
        })?;
        if !rest.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                SECRET_SETTING,
                "a Stripe signing secret is printable ASCII without whitespace",
            ));
        }
        if rest.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::new(
                SECRET_SETTING,
                format!("{} characters after `whsec_`; at least {MIN_SECRET_BYTES} expected", rest.len()),
            ));
        }
        Ok(Self::with_key(Key::Stripe(secret)))
    }

    fn with_key(key: Key) -> Self {
        Self {
            key,
            tolerance: DEFAULT_TOLERANCE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            replay: None,
            replay_fail_open: false,
        }
    }

    /// Sets the timestamp tolerance (whole seconds, 1 s to [`MAX_TOLERANCE`]; default
    /// [`DEFAULT_TOLERANCE`]). It bounds how old or how far ahead a timestamp may be, and how
    /// long the replay guard remembers a message. Fails for setting `webhook_tolerance`.
    pub fn with_tolerance(mut self, tolerance: Duration) -> Result<Self, ConfigError> {
        if tolerance < Duration::from_secs(1) || tolerance > MAX_TOLERANCE {
            return Err(ConfigError::new(
                "webhook_tolerance",
                format!("must be between 1 s and {} s", MAX_TOLERANCE.as_secs()),
            ));
        }
        self.tolerance = Duration::from_secs(tolerance.as_secs());
        Ok(self)
    }

    /// Sets the body cap [`verify`](Self::verify) enforces (default
    /// [`DEFAULT_MAX_BODY_BYTES`]). Read the body with the same cap: see
    /// [`max_body_bytes`](Self::max_body_bytes).
    pub fn with_max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// Refuses messages accepted before, with `guard` as the memory. Share one guard (and,
    /// across instances, one store) between every verifier of an endpoint.
    pub fn with_replay_guard(mut self, guard: Arc<dyn ReplayGuard>) -> Self {
        self.replay = Some(guard);
        self
    }

    /// When the replay store cannot answer, accept a correctly signed message without the
    /// replay check (logged as `replay_unchecked`) instead of refusing it with a 503. The
    /// default refuses: the provider retries later, and a replay sent during the outage is
    /// caught then. Choose this only for deliveries whose repetition is harmless.
    pub fn accept_unchecked_while_replay_store_unavailable(mut self) -> Self {
        self.replay_fail_open = true;
        self
    }

    /// The scheme this verifier checks.
    pub fn scheme(&self) -> WebhookScheme {
        match self.key {
            Key::Svix(_) => WebhookScheme::Svix,
            Key::GitHub(_) => WebhookScheme::GitHub,
            Key::Stripe(_) => WebhookScheme::Stripe,
        }
    }

    /// The timestamp tolerance.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// The body cap: pass it to [`check_content_length`] and [`append_capped`] (or your
    /// framework's limit) when reading the body.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Verifies a delivery: its signature, timestamp and, with a guard, that it is the first.
    ///
    /// `body` is the raw body exactly as received (not re-serialized JSON); `now` is Unix
    /// seconds from a [`Clock`](crate::clock::Clock). Errors: [`Rejection::InvalidCredential`]
    /// (401, mechanism `"webhook"`), [`Rejection::Replayed`] (409),
    /// [`Rejection::PayloadTooLarge`] (413), [`Rejection::StateUnavailable`] (503: the replay
    /// store could not answer). [`WebhookError`] converts into these, and tells them apart
    /// more finely.
    pub async fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<VerifiedWebhook, Rejection> {
        let result = self.verify_and_record(headers, body, now).await;
        self.log(&result);
        result.map_err(Rejection::from)
    }

    /// Verifies signature, timestamp and bounds, but does **not** consult the replay guard,
    /// even if one is set.
    ///
    /// For callers that dedupe themselves, e.g. a unique constraint on
    /// [`VerifiedWebhook::replay_key`] in the same transaction as the effect (keep the key at
    /// least until [`VerifiedWebhook::replay_until`]). Without such a dedupe, a captured
    /// request is accepted again until its timestamp goes stale (forever, for GitHub).
    pub fn verify_without_replay_guard(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<VerifiedWebhook, WebhookError> {
        let result = self.check(headers, body, now);
        self.log(&result);
        result
    }

    async fn verify_and_record(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<VerifiedWebhook, WebhookError> {
        let mut message = self.check(headers, body, now)?;
        if let Some(guard) = &self.replay {
            match guard.first_seen(&message.replay_key, now, message.replay_until).await {
                Ok(true) => message.replay_checked = true,
                Ok(false) => return Err(WebhookError::Replayed),
                Err(e) if self.replay_fail_open => {
                    tracing::warn!(layer = "identity", outcome = "replay_unchecked", error = ?e.to_string(), "replay store unavailable: accepted without the replay check");
                }
                Err(e) => return Err(WebhookError::ReplayStore(e)),
            }
        }
        Ok(message)
    }

    fn check(&self, headers: &HeaderMap, body: &[u8], now: u64) -> Result<VerifiedWebhook, WebhookError> {
        if body.len() > self.max_body_bytes {
            return Err(WebhookError::BodyTooLarge { limit: self.max_body_bytes });
        }
        let tolerance = self.tolerance.as_secs();
        let checked = match &self.key {
            Key::Svix(key) => schemes::svix(key, headers, body, now, tolerance),
            Key::GitHub(key) => schemes::github(key, headers, body, now, tolerance),
            Key::Stripe(key) => schemes::stripe(key, headers, body, now, tolerance),
        }?;
        Ok(VerifiedWebhook {
            scheme: self.scheme(),
            id: checked.id,
            timestamp: checked.timestamp,
            replay_key: checked.replay_key,
            replay_until: checked.replay_until,
            replay_checked: false,
        })
    }

    fn log(&self, result: &Result<VerifiedWebhook, WebhookError>) {
        let scheme = self.scheme().name();
        match result {
            Ok(message) => tracing::debug!(
                layer = "identity",
                mechanism = "webhook",
                scheme,
                outcome = "verified",
                replay_checked = message.replay_checked
            ),
            Err(WebhookError::ReplayStore(e)) => tracing::warn!(
                layer = "identity",
                mechanism = "webhook",
                scheme,
                outcome = "replay_store_failed",
                error = ?e.to_string()
            ),
            Err(WebhookError::Replayed) => {
                tracing::warn!(layer = "identity", mechanism = "webhook", scheme, outcome = "replayed")
            }
            Err(e) => {
                tracing::info!(layer = "identity", mechanism = "webhook", scheme, outcome = "refused", reason = ?e.to_string())
            }
        }
    }
}

/// The secret as UTF-8 without surrounding whitespace (a newline from a secret file).
fn secret_text(secret: &Secret) -> Result<&str, ConfigError> {
    let text = std::str::from_utf8(secret.expose())
        .map_err(|_| ConfigError::new(SECRET_SETTING, "the signing secret is not UTF-8"))?;
    if has_outer_whitespace(text.as_bytes()) {
        return Err(whitespace_error());
    }
    Ok(text)
}

fn has_outer_whitespace(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(b) if b.is_ascii_whitespace())
        || matches!(bytes.last(), Some(b) if b.is_ascii_whitespace())
}

fn whitespace_error() -> ConfigError {
    ConfigError::new(
        SECRET_SETTING,
        "the secret starts or ends with whitespace (a trailing newline from a file?)",
    )
}

/// A delivery that verified. Nothing in it is secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedWebhook {
    scheme: WebhookScheme,
    id: Option<String>,
    timestamp: Option<u64>,
    replay_key: String,
    replay_until: u64,
    replay_checked: bool,
}

impl VerifiedWebhook {
    /// The scheme that verified it.
    pub fn scheme(&self) -> WebhookScheme {
        self.scheme
    }

    /// The signed message id: Svix's `svix-id`. `None` for Stripe (the event id is in the
    /// signed body) and GitHub (`X-GitHub-Delivery` is not signed).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The signed timestamp (Unix seconds): Svix and Stripe. `None` for GitHub.
    pub fn timestamp(&self) -> Option<u64> {
        self.timestamp
    }

    /// The key that names this delivery for replay checks, scoped by scheme: `svix:<id>`,
    /// `stripe:<hex MAC>`, `github:<hex MAC>`.
    pub fn replay_key(&self) -> &str {
        &self.replay_key
    }

    /// The last second (Unix, inclusive) at which a replay of this delivery would still pass
    /// the signature and timestamp checks: how long a dedupe must remember
    /// [`replay_key`](Self::replay_key).
    pub fn replay_until(&self) -> u64 {
        self.replay_until
    }

    /// Whether a replay guard recorded this delivery as its first.
    pub fn replay_checked(&self) -> bool {
        self.replay_checked
    }
}

/// Why a delivery was refused, finely. Converts into the [`Rejection`] a route answers with:
/// [`BodyTooLarge`](Self::BodyTooLarge) → 413, [`Replayed`](Self::Replayed) → 409,
/// [`ReplayStore`](Self::ReplayStore) → 503, everything else → 401 `invalid_credential`
/// with [`reason`](Self::reason) as its fixed reason.
///
/// No variant carries a header value or a secret; `Display` names at most a header.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookError {
    /// A header the scheme needs is absent.
    MissingHeader {
        /// Its name.
        header: &'static str,
    },
    /// A header was sent more than once: which one was signed is not guessed.
    DuplicateHeader {
        /// Its name.
        header: &'static str,
    },
    /// A header is longer than its cap.
    HeaderTooLarge {
        /// Its name.
        header: &'static str,
    },
    /// A header is not visible ASCII, or its structure is wrong (an entry without its
    /// separator, a missing or repeated Stripe `t=`).
    MalformedHeader {
        /// Its name.
        header: &'static str,
    },
    /// The Svix message id is empty, or contains whitespace, `.` or non-ASCII.
    MalformedId,
    /// The timestamp is not plain decimal digits, or is too long.
    MalformedTimestamp,
    /// The timestamp is older than the tolerance.
    TimestampTooOld,
    /// The timestamp is further ahead than the tolerance.
    TimestampInFuture,
    /// No signature of the supported version (`v1`, `sha256=`).
    NoSupportedSignature,
    /// More than [`MAX_SIGNATURES`] signatures of the supported version.
    TooManySignatures,
    /// The GitHub signature is not 64 lowercase hex digits.
    MalformedSignature,
    /// No signature matches: a wrong secret, or a tampered body, id or timestamp.
    SignatureMismatch,
    /// The body exceeds the cap.
    BodyTooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// This delivery was accepted before.
    Replayed,
    /// The replay guard could not answer, so the delivery is refused (fail closed).
    ReplayStore(ReplayStoreError),
}

impl WebhookError {
    /// The fixed reason shown to the caller in the 401 body.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingHeader { .. } => "a signature header is missing",
            Self::DuplicateHeader { .. } => "a signature header was sent more than once",
            Self::HeaderTooLarge { .. } => "a signature header is too long",
            Self::MalformedHeader { .. } => "a signature header is malformed",
            Self::MalformedId => "the message id is malformed",
            Self::MalformedTimestamp => "the timestamp is not a plain decimal number",
            Self::TimestampTooOld => "the timestamp is too old",
            Self::TimestampInFuture => "the timestamp is too far in the future",
            Self::NoSupportedSignature => "no signature of a supported version",
            Self::TooManySignatures => "too many signatures",
            Self::MalformedSignature => "the signature is malformed",
            Self::SignatureMismatch => "the signature does not match",
            Self::BodyTooLarge { .. } => "the body is too large",
            Self::Replayed => "the message was already accepted",
            Self::ReplayStore(_) => "the replay store is unavailable",
        }
    }
}

impl fmt::Display for WebhookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingHeader { header } => write!(f, "the {header} header is missing"),
            Self::DuplicateHeader { header } => write!(f, "the {header} header was sent more than once"),
            Self::HeaderTooLarge { header } => write!(f, "the {header} header is too long"),
            Self::MalformedHeader { header } => write!(f, "the {header} header is malformed"),
            Self::BodyTooLarge { limit } => write!(f, "the body is larger than {limit} bytes"),
            Self::ReplayStore(e) => e.fmt(f),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for WebhookError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ReplayStore(e) => Some(e),
            _ => None,
        }
    }
}

impl From<WebhookError> for Rejection {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::BodyTooLarge { limit } => Self::PayloadTooLarge { limit },
            WebhookError::Replayed => Self::Replayed,
            // 503: the provider retries later, when the store may answer again.
            WebhookError::ReplayStore(_) => Self::StateUnavailable { what: "replay store" },
            other => Self::InvalidCredential { mechanism: "webhook", reason: other.reason() },
        }
    }
}

/// Refuses a request whose declared `Content-Length` exceeds `limit`, before its body is read.
///
/// A fast path only: a request may declare no length (chunked) or lie, so enforce the cap
/// while reading too ([`append_capped`]). Absent or unparsable values pass here (the HTTP
/// server refuses malformed ones).
pub fn check_content_length(headers: &HeaderMap, limit: usize) -> Result<(), Rejection> {
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let declared = value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX)) {
            return Err(Rejection::PayloadTooLarge { limit });
        }
    }
    Ok(())
}

/// Appends `chunk` to `body`, refusing (and leaving `body` unchanged) once the total would
/// exceed `limit`. Call it for every chunk read from the request.
///
/// ```
/// use ztgate::Rejection;
/// use ztgate::identity::webhook::append_capped;
///
/// let mut body = Vec::new();
/// append_capped(&mut body, b"{\"type\":", 16)?;
/// append_capped(&mut body, b"\"ping\"}", 16)?;
/// assert_eq!(append_capped(&mut body, b"more", 16), Err(Rejection::PayloadTooLarge { limit: 16 }));
/// # Ok::<(), Rejection>(())
/// ```
pub fn append_capped(body: &mut Vec<u8>, chunk: &[u8], limit: usize) -> Result<(), Rejection> {
    if body.len().saturating_add(chunk.len()) > limit {
        return Err(Rejection::PayloadTooLarge { limit });
    }
    body.extend_from_slice(chunk);
    Ok(())
}
