//! Errors: configuration mistakes, and rejections that become HTTP responses.

use std::fmt;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::identity::TokenError;
use crate::request::RequestError;

/// A configuration value ztgate refuses, naming the setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    setting: &'static str,
    message: String,
}

impl ConfigError {
    pub(crate) fn new(setting: &'static str, message: impl Into<String>) -> Self {
        Self { setting, message: message.into() }
    }

    /// The setting at fault: one of `team_domain`, `audiences`, `leeway`, `certs_url`,
    /// `policy`, `fetcher`, `api_keys`, `hmac_keys`, `webhook_secret`, `webhook_tolerance`,
    /// `routes`. These names are stable, so a program can map them to its own
    /// configuration keys (the admin server maps `team_domain` to `ZTGATE_TEAM_DOMAIN`).
    pub fn setting(&self) -> &'static str {
        self.setting
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.setting, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Why a request was refused, and the response that says so.
///
/// | variant | status | `code` |
/// |---|---|---|
/// | `Request(HeaderTooLarge)` | 431 | `header_too_large` |
/// | `Request(AmbiguousCredential)` | 400 | `ambiguous_credential` |
/// | `Request(NotText)` | 400 | `malformed_header` |
/// | `MissingCredential` | 401 | `missing_credential` |
/// | `InvalidToken(Expired)` | 401 | `token_expired` |
/// | `InvalidToken(_)` | 401 | `invalid_token` |
/// | `InvalidCredential` | 401 | `invalid_credential` |
/// | `Forbidden` | 403 | `forbidden` |
/// | `Replayed` | 409 | `replayed` |
/// | `PayloadTooLarge` | 413 | `payload_too_large` |
/// | `KeysUnavailable` | 503 + `Retry-After` | `keys_unavailable` |
/// | `NotConfigured` | 503 | `not_configured` |
/// | `NoPolicy` | 403 | `no_policy` |
/// | `LayerMissing` | 500 | `identity_layer_missing` |
///
/// Every 401 carries `WWW-Authenticate`. Bodies are JSON: `{"code": .., "message": ..}`; the
/// `code` values are stable, the messages are for people.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The request layer refused the request's shape.
    Request(RequestError),
    /// No credential of an accepted kind.
    MissingCredential,
    /// A credential was present but did not verify.
    InvalidToken(TokenError),
    /// A non-JWT credential (signed token, webhook signature, API key, client certificate)
    /// was present but did not verify.
    InvalidCredential {
        /// Which mechanism refused it, e.g. `"api_key"`.
        mechanism: &'static str,
        /// Why, for people (never contains the credential).
        reason: &'static str,
    },
    /// The caller is proven but the policy does not admit them.
    Forbidden,
    /// A message that was already accepted once (webhook replay).
    Replayed,
    /// The request body exceeds the limit a mechanism reads.
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The mechanism this route needs has no secret or key configured.
    NotConfigured {
        /// What is missing, e.g. `"webhook secret"`.
        what: &'static str,
    },
    /// No signing keys could be obtained; nothing can be verified right now.
    KeysUnavailable {
        /// Sent as `Retry-After`.
        retry_after: Duration,
    },
    /// No policy is declared for this method and path ([`RoutePolicies`](crate::RoutePolicies)
    /// denies by default).
    NoPolicy,
    /// A handler asked for a `Verified` principal but the identity layer did not run:
    /// a wiring bug, refused rather than served.
    LayerMissing,
}

impl From<TokenError> for Rejection {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::KeysUnavailable { retry_after } => Self::KeysUnavailable { retry_after },
            other => Self::InvalidToken(other),
        }
    }
}

impl From<RequestError> for Rejection {
    fn from(e: RequestError) -> Self {
        Self::Request(e)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Request(e) => e.fmt(f),
            Self::MissingCredential => f.write_str("no credential: this endpoint requires authentication"),
            Self::InvalidToken(e) => e.fmt(f),
            Self::InvalidCredential { mechanism, reason } => {
                write!(f, "invalid {mechanism} credential: {reason}")
            }
            Self::Forbidden => f.write_str("authenticated, but not allowed here"),
            Self::Replayed => f.write_str("this message was already accepted once"),
            Self::PayloadTooLarge { limit } => write!(f, "the body is larger than {limit} bytes"),
            Self::NotConfigured { what } => write!(f, "this endpoint is not configured: no {what}"),
            Self::KeysUnavailable { .. } => f.write_str("signing keys are unavailable; try again shortly"),
            Self::NoPolicy => f.write_str("no access policy is declared for this route"),
            Self::LayerMissing => f.write_str("the identity layer is not installed for this route"),
        }
    }
}

impl std::error::Error for Rejection {}

impl Rejection {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Request(RequestError::HeaderTooLarge { .. }) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Request(_) => StatusCode::BAD_REQUEST,
            Self::MissingCredential | Self::InvalidToken(_) | Self::InvalidCredential { .. } => {
                StatusCode::UNAUTHORIZED
            }
            Self::Forbidden | Self::NoPolicy => StatusCode::FORBIDDEN,
            Self::Replayed => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::KeysUnavailable { .. } | Self::NotConfigured { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::LayerMissing => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Request(RequestError::HeaderTooLarge { .. }) => "header_too_large",
            Self::Request(RequestError::NotText { .. }) => "malformed_header",
            Self::Request(_) => "ambiguous_credential",
            Self::MissingCredential => "missing_credential",
            Self::InvalidToken(TokenError::Expired) => "token_expired",
            Self::InvalidToken(_) => "invalid_token",
            Self::InvalidCredential { .. } => "invalid_credential",
            Self::Forbidden => "forbidden",
            Self::Replayed => "replayed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::KeysUnavailable { .. } => "keys_unavailable",
            Self::NotConfigured { .. } => "not_configured",
            Self::NoPolicy => "no_policy",
            Self::LayerMissing => "identity_layer_missing",
        }
    }

    /// The full response, for any body type that can be made from a `String`.
    pub fn to_response<B: From<String>>(&self) -> Response<B> {
        let body = serde_json::json!({ "code": self.code(), "message": self.to_string() }).to_string();
        let mut response = Response::new(B::from(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Self::MissingCredential => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"ztgate\""));
            }
            Self::InvalidToken(_) | Self::InvalidCredential { .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"ztgate\", error=\"invalid_token\""),
                );
            }
            Self::KeysUnavailable { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
            }
            _ => {}
        }
        response
    }
}
