//! Who is calling, once proven: [`Principal`] and the proof wrapper [`Verified`].

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};

/// A proven caller.
///
/// Users and service tokens are different variants on purpose: a service token is never a
/// user, even if its JWT happens to carry an `email` claim, so an email allowlist can never
/// admit a machine credential by accident.
///
/// `C` is the type the caller chose for extra claims of user tokens (see [`NoClaims`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Principal<C = NoClaims> {
    /// A person who logged in through Cloudflare Access.
    User(AccessUser<C>),
    /// A Cloudflare Access service token (machine-to-machine).
    Service(ServiceToken),
    /// A named API key.
    ApiKey(ApiKeyPrincipal),
    /// The subject of an HMAC-signed token (unsubscribe link, magic link, session cookie).
    SignedToken(SignedTokenPrincipal),
    /// A client certificate that Cloudflare verified (mTLS).
    ClientCert(ClientCertPrincipal),
    /// Whoever a mechanism of your own proved (see [`Mechanism`](crate::identity::Mechanism)).
    Custom(CustomPrincipal),
    /// The platform itself, running a cron trigger: no credential and no HTTP request, the
    /// runtime's own event is the proof. Only ztgate hands one out inside a [`Verified`], from
    /// the event object the runtime passes to a scheduled handler
    /// (`ztgate::workers::scheduled` in a Worker); no request can be verified as one. Code
    /// outside ztgate cannot even build the principal (the variant is `#[non_exhaustive]`), so
    /// a test or a handler cannot pass one where a scheduled job's is expected:
    ///
    /// ```compile_fail
    /// let platform = ztgate::Principal::Scheduled { cron: "*/5 * * * *".into() };
    /// ```
    #[non_exhaustive]
    Scheduled {
        /// The cron expression of the trigger that fired, e.g. `*/5 * * * *` (at most
        /// [`Principal::MAX_CRON_LEN`] bytes of printable ASCII).
        cron: String,
    },
    /// Nobody: a route declared public.
    Anonymous,
}

impl<C> Principal<C> {
    /// A stable identifier for logs and audit trails: `user:<email>` (the email ASCII-lowercased,
    /// so one person has one id), `service:<common_name>` (exactly as sent),
    /// `api_key:<name>`, `signed:<purpose>:<subject>`, `cert:<sha256 fingerprint>`,
    /// `custom:<kind>:<id>`, `scheduled:<cron>`, `anonymous`.
    pub fn id(&self) -> String {
        match self {
            Self::User(u) => format!("user:{}", u.email),
            Self::Service(s) => format!("service:{}", s.common_name),
            Self::ApiKey(k) => format!("api_key:{}", k.name),
            Self::SignedToken(t) => format!("signed:{}:{}", t.purpose, t.subject),
            Self::ClientCert(c) => format!("cert:{}", c.fingerprint_sha256),
            Self::Custom(c) => format!("custom:{}:{}", c.kind, c.id),
            Self::Scheduled { cron } => format!("scheduled:{cron}"),
            Self::Anonymous => "anonymous".to_owned(),
        }
    }

    /// `"user"`, `"service"`, `"api_key"`, `"signed_token"`, `"client_cert"`, `"custom"`,
    /// `"scheduled"` or `"anonymous"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::User(_) => "user",
            Self::Service(_) => "service",
            Self::ApiKey(_) => "api_key",
            Self::SignedToken(_) => "signed_token",
            Self::ClientCert(_) => "client_cert",
            Self::Custom(_) => "custom",
            Self::Scheduled { .. } => "scheduled",
            Self::Anonymous => "anonymous",
        }
    }

    /// When the credential that proved this principal expires (Unix seconds): an Access
    /// user's or service token's `exp`, a signed token's expiry; `None` for credentials that do
    /// not expire by themselves (API keys, client certificates, custom principals, anonymous).
    /// A connection that outlives its request closes then (see [`Gate::recheck`](crate::Gate::recheck)).
    pub fn expires_at(&self) -> Option<u64> {
        match self {
            Self::User(u) => Some(u.expires_at),
            Self::Service(s) => Some(s.expires_at),
            Self::SignedToken(t) => Some(t.expires_at),
            Self::ApiKey(_)
            | Self::ClientCert(_)
            | Self::Custom(_)
            | Self::Scheduled { .. }
            | Self::Anonymous => None,
        }
    }

    /// The user, if this principal is one.
    pub fn as_user(&self) -> Option<&AccessUser<C>> {
        match self {
            Self::User(u) => Some(u),
            _ => None,
        }
    }

    /// The service token, if this principal is one.
    pub fn as_service(&self) -> Option<&ServiceToken> {
        match self {
            Self::Service(s) => Some(s),
            _ => None,
        }
    }

    /// The cron expression, if this principal is the platform running a cron trigger
    /// ([`Principal::Scheduled`]).
    pub fn as_scheduled(&self) -> Option<&str> {
        match self {
            Self::Scheduled { cron } => Some(cron),
            _ => None,
        }
    }
}

impl Principal {
    /// The longest cron expression a [`Principal::Scheduled`] carries, in bytes. Cloudflare's
    /// are five fields (`*/5 * * * *`, `0 3 * * MON-FRI`); anything longer is not one.
    pub const MAX_CRON_LEN: usize = 128;
}

/// A person authenticated by Cloudflare Access.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct AccessUser<C = NoClaims> {
    /// The `email` claim, ASCII-lowercased (`A`–`Z` to `a`–`z`, nothing else: no Unicode case
    /// folding), so the allowlist, [`Principal::id`] and storage see one form per person.
    pub email: String,
    /// The `sub` claim: the user's stable id at Access.
    pub sub: String,
    /// The `country` claim, if present.
    pub country: Option<String>,
    /// The `identity_nonce` claim, if present. Redacted from `Debug`.
    pub identity_nonce: Option<String>,
    /// The `iat` claim: when Access issued the token, which is when the user logged in (or
    /// last re-authenticated). See [`Policy::max_session_age`](crate::Policy::max_session_age).
    pub issued_at: Option<u64>,
    /// The `exp` claim.
    pub expires_at: u64,
    /// The user's Access identity (groups, login method, device posture), when it was fetched:
    /// a policy rule needed it, or the gate enriches every user
    /// ([`GateBuilder::enrich_identity`](crate::GateBuilder::enrich_identity)).
    pub identity: Option<Arc<AccessIdentity>>,
    /// Extra claims, deserialized from the whole claim set into the caller's type.
    pub custom: C,
}

impl<C> AccessUser<C> {
    /// Whether the fetched identity lists `group` (by id, name or email); `false` without one.
    pub fn in_group(&self, group: &str) -> bool {
        self.identity.as_ref().is_some_and(|i| i.in_group(group))
    }
}

/// What Cloudflare Access knows of a logged-in user beyond the application token: the identity
/// `{team}/cdn-cgi/access/get-identity` returns for that token. Only the fields ztgate's rules
/// read are kept; the others (IP, geography, device sessions...) are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct AccessIdentity {
    /// The identity's email (checked against the token's).
    #[serde(default)]
    pub email: Option<String>,
    /// Groups from the identity provider: strings for some providers, `{id, name, email}`
    /// objects for others, both kept as [`Group`].
    #[serde(default)]
    pub groups: Vec<Group>,
    /// How the user logged in (RFC 8176 values: `pwd`, `mfa`, `hwk`, `swk`, `otp`...).
    #[serde(default)]
    pub amr: Vec<String>,
    /// The identity provider that logged the user in.
    #[serde(default)]
    pub idp: Option<IdentityProvider>,
    /// Device posture results by rule id.
    #[serde(default, rename = "devicePosture")]
    pub device_posture: BTreeMap<String, PostureCheck>,
    /// The request came through the WARP client.
    #[serde(default)]
    pub is_warp: bool,
    /// WARP with Gateway, in the team's Zero Trust organisation.
    #[serde(default)]
    pub is_gateway: bool,
    /// The WARP device's id.
    #[serde(default)]
    pub device_id: Option<String>,
}

impl AccessIdentity {
    /// Whether one of the groups has `group` as its id, name or email.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g.is(group))
    }

    /// Whether the login used one of `methods` (`amr` values, exact).
    pub fn used_auth_method(&self, methods: &[String]) -> bool {
        self.amr.iter().any(|m| methods.contains(m))
    }

    /// Whether the device posture rule `rule_id` ran and passed.
    pub fn passes_posture(&self, rule_id: &str) -> bool {
        self.device_posture.get(rule_id).is_some_and(|c| c.success)
    }
}

/// An identity provider group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Group {
    /// The group's id at the provider (objects only).
    pub id: Option<String>,
    /// The group's name (a string entry is a name).
    pub name: Option<String>,
    /// The group's email (some providers).
    pub email: Option<String>,
}

impl Group {
    /// Whether `want` is this group's id, name or email (exact; ids are case-sensitive).
    pub fn is(&self, want: &str) -> bool {
        [&self.id, &self.name, &self.email].into_iter().any(|v| v.as_deref() == Some(want))
    }
}

impl<'de> Deserialize<'de> for Group {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Object {
            #[serde(default)]
            id: Option<String>,
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            email: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Name(String),
            Object(Object),
        }
        Ok(match Either::deserialize(d)? {
            Either::Name(name) => Group { id: None, name: Some(name), email: None },
            Either::Object(o) => Group { id: o.id, name: o.name, email: o.email },
        })
    }
}

/// The identity provider of a login.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdentityProvider {
    /// The provider's id in the Zero Trust organisation.
    pub id: Option<String>,
    /// Its kind (`okta`, `azureAD`, `onetimepin`...).
    pub kind: Option<String>,
}

impl<'de> Deserialize<'de> for IdentityProvider {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Object {
            #[serde(default)]
            id: Option<String>,
            #[serde(default, rename = "type")]
            kind: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Id(String),
            Object(Object),
        }
        Ok(match Either::deserialize(d)? {
            Either::Id(id) => IdentityProvider { id: Some(id), kind: None },
            Either::Object(o) => IdentityProvider { id: o.id, kind: o.kind },
        })
    }
}

/// One device posture rule's result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PostureCheck {
    /// Whether the device passed the rule.
    #[serde(default)]
    pub success: bool,
    /// The rule's name.
    #[serde(default)]
    pub rule_name: Option<String>,
    /// The rule's kind (`file`, `os_version`, `warp`...).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

impl<C: fmt::Debug> fmt::Debug for AccessUser<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessUser")
            .field("email", &self.email)
            .field("sub", &self.sub)
            .field("country", &self.country)
            .field("identity_nonce", &self.identity_nonce.as_ref().map(|_| "<redacted>"))
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("identity", &self.identity)
            .field("custom", &self.custom)
            .finish()
    }
}

/// A Cloudflare Access service token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceToken {
    /// The `common_name` claim: the token's Client ID, e.g. `abc123.access`.
    pub common_name: String,
    /// Unix seconds after which the token is refused (its `exp`).
    pub expires_at: u64,
}

/// A caller holding a configured API key. `Debug` shows the name only.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiKeyPrincipal {
    /// The key's configured name (never the key itself).
    pub name: String,
    /// The SHA-256 of the key that proved it: tells a replaced key from the one still
    /// configured under the same name ([`Gate::recheck`](crate::Gate::recheck)).
    pub(crate) digest: [u8; 32],
}

impl fmt::Debug for ApiKeyPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyPrincipal").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The holder of a valid HMAC-signed token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignedTokenPrincipal {
    /// What the token speaks for, e.g. an email address.
    pub subject: String,
    /// What the token was minted for, e.g. `unsubscribe`.
    pub purpose: String,
    /// Unix seconds after which the token is refused.
    pub expires_at: u64,
    /// The token's own id (22 characters of base64url), under which this one token can be
    /// revoked (`hmac_token` revocations); `None` for a v1 token, which has no id.
    pub id: Option<String>,
    /// The key that signed it: once its ring no longer holds that key, a connection it
    /// opened ends at its next [`Gate::recheck`](crate::Gate::recheck).
    pub kid: String,
}

/// A client that presented a certificate Cloudflare verified and did not find revoked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientCertPrincipal {
    /// SHA-256 fingerprint of the certificate, lowercase hex.
    pub fingerprint_sha256: String,
    /// Subject distinguished name, as Cloudflare reported it.
    pub subject_dn: String,
    /// Issuer distinguished name, as Cloudflare reported it.
    pub issuer_dn: String,
}

/// A principal proven by a mechanism of your own: a kind (`"device"`, `"partner"`) and an id.
///
/// Its [`Principal::id`] is `custom:<kind>:<id>`, so it can never be mistaken for a built-in
/// kind in logs and audit trails (a custom kind `"user"` still reads `custom:user:..`), and no
/// built-in rule ([`Policy`](crate::Policy) emails, service tokens) ever admits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomPrincipal {
    kind: &'static str,
    id: String,
}

impl CustomPrincipal {
    /// `kind` names what your mechanism proves; `id` says who, e.g. a device id.
    pub fn new(kind: &'static str, id: impl Into<String>) -> Self {
        Self { kind, id: id.into() }
    }

    /// The kind, as given.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The id, as given.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The default "no extra claims" type: accepts any claim set and keeps nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NoClaims;

impl<'de> Deserialize<'de> for NoClaims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| NoClaims)
    }
}

/// Proof that the identity layer verified `P`.
///
/// Only ztgate can build one: there is no public constructor, so a handler that takes
/// `Verified<Principal>` cannot run unless identity ran first. The Tower layer puts it in the
/// request extensions; with the `axum` feature it is an extractor that fails closed when the
/// layer is missing. Called directly, a gate hands one out after it checked the request:
///
/// ```no_run
/// use ztgate::{Gate, Principal, Rejection, Verified};
///
/// async fn proven(gate: &Gate, request: &http::Request<()>) -> Result<Verified<Principal>, Rejection> {
///     gate.check(request).await
/// }
/// ```
///
/// Nothing outside ztgate makes one. Each example below tries one way and fails to compile
/// (they are doc tests, so this stays true): the fields are private,
///
/// ```compile_fail
/// use ztgate::{Principal, Verified};
///
/// let forged: Verified<Principal> = Verified { principal: Principal::Anonymous, proofs: Vec::new() };
/// ```
///
/// the constructor is ztgate's own,
///
/// ```compile_fail
/// use ztgate::{Principal, Verified};
///
/// let forged: Verified<Principal> = Verified::new(Principal::Anonymous, Vec::new());
/// ```
///
/// a principal (which anyone can build) does not convert into one,
///
/// ```compile_fail
/// use ztgate::{Principal, Verified};
///
/// let forged: Verified<Principal> = Principal::Anonymous.into();
/// ```
///
/// and there is neither a default nor a way to deserialize one.
///
/// ```compile_fail
/// use ztgate::{Principal, Verified};
///
/// let forged: Verified<Principal> = Default::default();
/// ```
///
/// ```compile_fail
/// use ztgate::{Principal, Verified};
///
/// let forged: Verified<Principal> = serde_json::from_str(r#"{"principal":"Anonymous","proofs":[]}"#).unwrap();
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Verified<P> {
    principal: P,
    proofs: Vec<Proof>,
}

/// One mechanism's verdict inside a [`Verified`]: which mechanism proved whom.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Proof {
    /// The mechanism, e.g. `"access_jwt"`, `"api_key"`, `"public"`.
    pub mechanism: &'static str,
    /// The principal it proved, as [`Principal::id`].
    pub principal_id: String,
}

impl<P> Verified<P> {
    pub(crate) fn new(principal: P, proofs: Vec<Proof>) -> Self {
        Self { principal, proofs }
    }

    /// Every mechanism that took part, in order. With an all-of requirement (e.g. an Access
    /// user *and* an API key) the principal is the first one's and the others are listed here.
    pub fn proofs(&self) -> &[Proof] {
        &self.proofs
    }

    /// Whether `mechanism` took part in the proof.
    pub fn proved_by(&self, mechanism: &str) -> bool {
        self.proofs.iter().any(|p| p.mechanism == mechanism)
    }

    /// The verified principal.
    pub fn principal(&self) -> &P {
        &self.principal
    }

    /// Gives up the proof and keeps the value.
    pub fn into_inner(self) -> P {
        self.principal
    }
}

impl<P> Deref for Verified<P> {
    type Target = P;
    fn deref(&self) -> &P {
        &self.principal
    }
}
