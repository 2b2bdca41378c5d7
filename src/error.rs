//! Errors: configuration mistakes ([`ConfigError`]), why an Access token was refused
//! ([`TokenError`]), and rejections that become HTTP responses ([`Rejection`]).
//!
//! Each rejection is declared once, in the `rejections!` block below: its fields, its status,
//! its stable `code`, its extra headers, its message and its row of the documentation table.
//! A rejection that wraps a finer error ([`RequestError`], [`TokenError`]) takes all of these
//! from that error's own declaration. There is no other mapping to keep in step.

use std::fmt;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

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

    /// The setting at fault, e.g. `team_domain`, `audiences`, `leeway`, `max_lifetime`,
    /// `certs_url`, `policy`, `fetcher`, `api_keys`, `hmac_keys`, `webhook_secret`,
    /// `webhook_tolerance`, `routes`, `rate_limit`, `redis_url`; prefixed by their part for the
    /// token cache (`token_cache.*`), the outbound fetcher (`outbound.*`), the workload issuer
    /// (`workload.*`) and the STS client (`sts.*`). These names are stable, so a program can map them to its own
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

/// How a refusal is answered: status, stable code, and the headers that go with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    status: u16,
    code: &'static str,
    challenge: Option<&'static str>,
    retry_after: Option<Duration>,
}

/// When to retry after the identity endpoint failed (its fetch is bounded by seconds).
const IDENTITY_RETRY_AFTER: Duration = Duration::from_secs(5);

const CHALLENGE: &str = "Bearer realm=\"ztgate\"";
const INVALID_TOKEN_CHALLENGE: &str = "Bearer realm=\"ztgate\", error=\"invalid_token\"";

impl Spec {
    const fn new(status: u16, code: &'static str) -> Self {
        Self { status, code, challenge: None, retry_after: None }
    }

    /// `WWW-Authenticate: Bearer realm="ztgate"`: no credential was sent (RFC 6750 §3).
    const fn www_authenticate(mut self) -> Self {
        self.challenge = Some(CHALLENGE);
        self
    }

    /// `WWW-Authenticate` with `error="invalid_token"`: a credential was sent and refused.
    const fn invalid_token(mut self) -> Self {
        self.challenge = Some(INVALID_TOKEN_CHALLENGE);
        self
    }

    /// `Retry-After` in whole seconds (at least 1).
    const fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    fn status(&self) -> StatusCode {
        // Every status in the declarations is a valid literal (see the tests).
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// Why an Access token was refused. `Display` is for people; no variant carries token bytes.
///
/// As a [`Rejection::InvalidToken`], every variant answers 401 `invalid_token` with
/// `WWW-Authenticate: Bearer ..., error="invalid_token"`, except [`Expired`](Self::Expired)
/// (401 `token_expired`) and [`KeysUnavailable`](Self::KeysUnavailable) (503
/// `keys_unavailable` with `Retry-After`, the same as [`Rejection::KeysUnavailable`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Not three strict base64url segments, too long, or not JSON where JSON belongs.
    Malformed(&'static str),
    /// `alg` other than RS256 (including `none` in any casing and HMAC algorithms).
    Algorithm,
    /// The header lists `crit` extensions; ztgate understands none.
    CriticalHeader,
    /// The header has no `kid`, or no key has it.
    UnknownKey,
    /// The signature does not verify.
    Signature,
    /// `iss` missing or not the team domain.
    Issuer,
    /// `aud` missing or without a configured tag.
    Audience,
    /// `exp` missing.
    MissingExpiry,
    /// `exp` is in the past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    IssuedInFuture,
    /// The token lives longer than the configured maximum lifetime
    /// ([`AccessConfig::with_max_lifetime`](crate::AccessConfig::with_max_lifetime), at most 31
    /// days): `exp − iat`, or `exp − now` beyond the leeway.
    LifetimeTooLong,
    /// A claim of the wrong type, a duplicate claim, or neither `email` nor `common_name`.
    Claims(String),
    /// A `type` claim other than `app`: an organization token (`org`, Cloudflare's own login
    /// session) or another kind, never valid for an application.
    TokenType,
    /// The user's Access identity, which a policy rule needs, could not be had (why, for the
    /// log; never a token): 503 `identity_unavailable`, like
    /// [`Rejection::IdentityUnavailable`].
    IdentityUnavailable(String),
    /// No keys could be obtained (the 503 case).
    KeysUnavailable {
        /// When a retry makes sense.
        retry_after: Duration,
    },
}

impl TokenError {
    fn spec(&self) -> Spec {
        let invalid = Spec::new(401, "invalid_token").invalid_token();
        match self {
            Self::Expired => Spec::new(401, "token_expired").invalid_token(),
            Self::IdentityUnavailable(_) => {
                Spec::new(503, "identity_unavailable").retry_after(IDENTITY_RETRY_AFTER)
            }
            Self::KeysUnavailable { retry_after } => {
                Spec::new(503, "keys_unavailable").retry_after(*retry_after)
            }
            Self::Malformed(_)
            | Self::Algorithm
            | Self::CriticalHeader
            | Self::UnknownKey
            | Self::Signature
            | Self::Issuer
            | Self::Audience
            | Self::MissingExpiry
            | Self::NotYetValid
            | Self::IssuedInFuture
            | Self::LifetimeTooLong
            | Self::TokenType
            | Self::Claims(_) => invalid,
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(what) => write!(f, "malformed token: {what}"),
            Self::Algorithm => f.write_str("token algorithm is not RS256"),
            Self::CriticalHeader => f.write_str("token header has unsupported critical extensions"),
            Self::UnknownKey => f.write_str("token is signed with an unknown key"),
            Self::Signature => f.write_str("token signature is invalid"),
            Self::Issuer => f.write_str("token issuer is not the configured team domain"),
            Self::Audience => f.write_str("token audience does not match this application"),
            Self::MissingExpiry => f.write_str("token has no expiry"),
            Self::Expired => f.write_str("token has expired"),
            Self::NotYetValid => f.write_str("token is not valid yet"),
            Self::IssuedInFuture => f.write_str("token was issued in the future"),
            Self::LifetimeTooLong => f.write_str("token lifetime exceeds the maximum accepted"),
            Self::Claims(e) => write!(f, "token claims are invalid: {e}"),
            Self::TokenType => f.write_str("token is not an application token (type is not app)"),
            Self::KeysUnavailable { .. } => f.write_str("signing keys are unavailable"),
            Self::IdentityUnavailable(why) => write!(f, "the Access identity is unavailable: {why}"),
        }
    }
}

impl std::error::Error for TokenError {}

impl RequestError {
    fn spec(&self) -> Spec {
        match self {
            Self::HeaderTooLarge { .. } => Spec::new(431, "header_too_large"),
            Self::NotText { .. } => Spec::new(400, "malformed_header"),
            Self::AmbiguousCredential { .. } => Spec::new(400, "ambiguous_credential"),
            Self::UriTooLong { .. } | Self::TooManyQueryParams { .. } => Spec::new(414, "uri_too_long"),
        }
    }
}

/// Declares [`Rejection`]: composite variants (which answer as the error they wrap) and simple
/// ones (status, code, headers and message given here), with the documentation table generated
/// from the same tokens.
macro_rules! rejections {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            composite {
                $( $(#[doc = $cdoc:literal])+ $cvariant:ident($inner:ty), )+
            }
            simple {
                $(
                    $(#[doc = $doc:literal])+
                    $variant:ident $({ $( $(#[doc = $fdoc:literal])+ $field:ident: $fty:ty ),+ $(,)? })?
                        => $status:literal, $code:literal $(, $header:ident $(($harg:ident))?)*;
                        $message:literal;
                )+
            }
        }
    ) => {
        $(#[$meta])*
        ///
        /// | variant | status | `code` | extra headers |
        /// |---|---|---|---|
        $( #[doc = concat!("| `", stringify!($cvariant), "(", stringify!($inner), ")` | see [`", stringify!($inner), "`] | | |")] )+
        $( #[doc = concat!("| `", stringify!($variant), "` | ", stringify!($status), " | `", $code, "` | ", $(stringify!($header), " ",)* "|")] )+
        ///
        /// `www_authenticate` is `WWW-Authenticate: Bearer realm="ztgate"`; `invalid_token` adds
        /// `error="invalid_token"` to it; `retry_after` is `Retry-After` in whole seconds. Every
        /// response also has `Content-Type: application/json` and `Cache-Control: no-store`.
        /// Bodies are JSON: `{"code": .., "message": ..}`; the `code` values are stable, the
        /// messages are for people and never contain a credential.
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[doc = $cdoc])+ $cvariant($inner), )+
            $(
                $(#[doc = $doc])+
                $variant $({ $( $(#[doc = $fdoc])+ $field: $fty ),+ })?,
            )+
        }

        impl $name {
            pub(crate) fn spec(&self) -> Spec {
                match self {
                    $( Self::$cvariant(inner) => inner.spec(), )+
                    $(
                        #[allow(unused_variables)]
                        Self::$variant { $($($field),+)? } => {
                            Spec::new($status, $code) $( .$header($(*$harg)?) )*
                        }
                    )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $( Self::$cvariant(inner) => inner.fmt(f), )+
                    $(
                        #[allow(unused_variables)]
                        Self::$variant { $($($field),+)? } => write!(f, $message),
                    )+
                }
            }
        }
    };
}

rejections! {
    /// Why a request was refused, and the response that says so.
    pub enum Rejection {
        composite {
            /// The request layer refused the request's shape (400, 414 or 431, see [`RequestError`]).
            Request(RequestError),
            /// An Access token was present but did not verify (401, or 503 when no keys could be
            /// had; see [`TokenError`]).
            InvalidToken(TokenError),
        }
        simple {
            /// No credential of an accepted kind.
            MissingCredential => 401, "missing_credential", www_authenticate;
                "no credential: this endpoint requires authentication";
            /// A non-JWT credential (signed token, API key, client certificate, webhook signature,
            /// or a mechanism of your own) was present but did not verify.
            InvalidCredential {
                /// Which mechanism refused it: its [`Mechanism::name`](crate::identity::Mechanism::name),
                /// e.g. `"api_key"`.
                mechanism: &'static str,
                /// Why, for people (never contains the credential).
                reason: &'static str,
            } => 401, "invalid_credential", invalid_token;
                "invalid {mechanism} credential: {reason}";
            /// The caller is proven but the policy does not admit them.
            Forbidden => 403, "forbidden";
                "authenticated, but not allowed here";
            /// No policy is declared for this method and path ([`RoutePolicies`](crate::RoutePolicies)
            /// denies by default).
            NoPolicy => 403, "no_policy";
                "no access policy is declared for this route";
            /// A credential that verified but was revoked (an API key, an Access login, a client
            /// certificate), on this instance or another of the fleet.
            Revoked {
                /// Which mechanism proved it, e.g. `"api_key"`.
                mechanism: &'static str,
            } => 401, "revoked", invalid_token;
                "this {mechanism} credential was revoked";
            /// Too many failed attempts (or requests, on a public route) from this client or
            /// for this credential: refused before any verification work.
            TooManyRequests {
                /// Sent as `Retry-After`.
                retry_after: Duration,
            } => 429, "too_many_requests", retry_after(retry_after);
                "too many attempts; try again later";
            /// A message that was already accepted once (webhook replay).
            Replayed => 409, "replayed";
                "this message was already accepted once";
            /// The request body exceeds the limit a mechanism reads.
            PayloadTooLarge {
                /// The limit, in bytes.
                limit: usize,
            } => 413, "payload_too_large";
                "the body is larger than {limit} bytes";
            /// No signing keys could be obtained; nothing can be verified right now.
            KeysUnavailable {
                /// Sent as `Retry-After`.
                retry_after: Duration,
            } => 503, "keys_unavailable", retry_after(retry_after);
                "signing keys are unavailable; try again shortly";
            /// The mechanism this route needs has no secret or key configured.
            NotConfigured {
                /// What is missing, e.g. `"webhook secret"`.
                what: &'static str,
            } => 503, "not_configured";
                "this endpoint is not configured: no {what}";
            /// A shared-state store (replay guard, and later revocations) could not answer, so the
            /// request is refused rather than accepted unchecked.
            StateUnavailable {
                /// Which store, e.g. `"replay store"`.
                what: &'static str,
            } => 503, "state_unavailable";
                "the {what} is unavailable; try again shortly";
            /// The Access identity (groups, login method, device posture) a rule needs could not be
            /// had from the team's `get-identity` endpoint: refused rather than decided without
            /// it. Rules that do not need it still pass.
            IdentityUnavailable {
                /// Sent as `Retry-After`.
                retry_after: Duration,
            } => 503, "identity_unavailable", retry_after(retry_after);
                "the caller's Access identity is unavailable; try again shortly";
            /// The login behind a valid token is older than the route allows
            /// ([`Policy::max_session_age`](crate::Policy::max_session_age)): 401, so a browser
            /// goes back through the Access login.
            SessionTooOld => 401, "session_too_old", invalid_token;
                "the login is older than this endpoint allows: sign in again";
            /// A handler asked for a `Verified` principal but the identity layer did not run:
            /// a wiring bug, refused rather than served.
            LayerMissing => 500, "identity_layer_missing";
                "the identity layer is not installed for this route";
        }
    }
}

impl From<TokenError> for Rejection {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::KeysUnavailable { retry_after } => Self::KeysUnavailable { retry_after },
            TokenError::IdentityUnavailable(_) => {
                Self::IdentityUnavailable { retry_after: IDENTITY_RETRY_AFTER }
            }
            other => Self::InvalidToken(other),
        }
    }
}

impl From<RequestError> for Rejection {
    fn from(e: RequestError) -> Self {
        Self::Request(e)
    }
}

impl std::error::Error for Rejection {}

impl Rejection {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.spec().status()
    }

    /// The stable machine-readable code of the JSON body.
    pub fn code(&self) -> &'static str {
        self.spec().code
    }

    /// The WebSocket close code for a connection ended by this rejection (RFC 6455 §7.4): 4401
    /// for a 401 (the credential expired or was revoked: authenticate again), 4403 for a 403
    /// (no longer allowed), 1013 "try again later" for a 503 (the revocation list could not
    /// answer) and 1008 "policy violation" for anything else. The 4xxx codes mirror the HTTP
    /// status, as many WebSocket APIs do, so a client can tell re-login from retry.
    pub fn close_code(&self) -> u16 {
        match self.status().as_u16() {
            401 => 4401,
            403 => 4403,
            503 => 1013,
            _ => 1008,
        }
    }

    /// The full response, for any body type that can be made from a `String`.
    pub fn to_response<B: From<String>>(&self) -> Response<B> {
        let spec = self.spec();
        let body = serde_json::json!({ "code": spec.code, "message": self.to_string() }).to_string();
        let mut response = Response::new(B::from(body));
        *response.status_mut() = spec.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(challenge) = spec.challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(after) = spec.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each variant (and of each inner error), to check the declarations.
    fn every_rejection() -> Vec<Rejection> {
        let after = Duration::from_secs(7);
        vec![
            Rejection::Request(RequestError::HeaderTooLarge { header: "Cookie", limit: 1 }),
            Rejection::Request(RequestError::NotText { header: "X-Api-Key" }),
            Rejection::Request(RequestError::AmbiguousCredential { name: "Cookie" }),
            Rejection::InvalidToken(TokenError::Expired),
            Rejection::InvalidToken(TokenError::Signature),
            Rejection::InvalidToken(TokenError::LifetimeTooLong),
            Rejection::InvalidToken(TokenError::KeysUnavailable { retry_after: after }),
            Rejection::MissingCredential,
            Rejection::InvalidCredential { mechanism: "api_key", reason: "unknown key" },
            Rejection::Forbidden,
            Rejection::NoPolicy,
            Rejection::Revoked { mechanism: "api_key" },
            Rejection::TooManyRequests { retry_after: after },
            Rejection::Replayed,
            Rejection::PayloadTooLarge { limit: 9 },
            Rejection::KeysUnavailable { retry_after: after },
            Rejection::NotConfigured { what: "webhook secret" },
            Rejection::StateUnavailable { what: "replay store" },
            Rejection::IdentityUnavailable { retry_after: after },
            Rejection::SessionTooOld,
            Rejection::LayerMissing,
        ]
    }

    #[test]
    fn every_declared_status_is_a_real_status_and_codes_are_distinct_per_meaning() {
        for r in every_rejection() {
            assert_eq!(r.spec().status().as_u16(), r.spec().status, "{r:?}");
            assert!(r.code().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{r:?}");
        }
        let codes: Vec<&str> = every_rejection().iter().map(Rejection::code).collect();
        assert_eq!(
            codes,
            [
                "header_too_large",
                "malformed_header",
                "ambiguous_credential",
                "token_expired",
                "invalid_token",
                "invalid_token",
                "keys_unavailable",
                "missing_credential",
                "invalid_credential",
                "forbidden",
                "no_policy",
                "revoked",
                "too_many_requests",
                "replayed",
                "payload_too_large",
                "keys_unavailable",
                "not_configured",
                "state_unavailable",
                "identity_unavailable",
                "session_too_old",
                "identity_layer_missing",
            ]
        );
    }

    #[test]
    fn every_401_challenges_and_every_keys_unavailable_says_when_to_retry() {
        for r in every_rejection() {
            let response: Response<String> = r.to_response();
            let challenged = response.headers().contains_key(header::WWW_AUTHENTICATE);
            assert_eq!(challenged, response.status() == StatusCode::UNAUTHORIZED, "{r:?}");
            let retry = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
            let retries = ["keys_unavailable", "identity_unavailable", "too_many_requests"];
            assert_eq!(retry.is_some(), retries.contains(&r.code()), "{r:?}");
            if let Some(retry) = retry {
                assert_eq!(retry, "7");
            }
            let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
            assert_eq!(body["code"], r.code());
            assert_eq!(body["message"], r.to_string());
        }
    }

    #[test]
    fn a_wrapped_keys_unavailable_answers_like_the_flat_one() {
        let after = Duration::from_secs(3);
        let flat: Response<String> = Rejection::KeysUnavailable { retry_after: after }.to_response();
        let wrapped: Response<String> =
            Rejection::InvalidToken(TokenError::KeysUnavailable { retry_after: after }).to_response();
        assert_eq!(flat.status(), wrapped.status());
        assert_eq!(flat.headers().get(header::RETRY_AFTER), wrapped.headers().get(header::RETRY_AFTER));
        assert_eq!(Rejection::from(TokenError::KeysUnavailable { retry_after: after }), {
            Rejection::KeysUnavailable { retry_after: after }
        });
    }
}
