//! Header hygiene: what the Tower layer removes from a verified request before the inner
//! service sees it, and the verified identity headers it may set in their place.
//!
//! A handler, or an upstream behind a reverse proxy, that reads `Cf-Access-Authenticated-User-Email`
//! trusts whoever wrote it. Behind Cloudflare that is Cloudflare; on a direct path to the
//! origin, a hop that forgets to drop them, or a route whose gate proved someone else (an API
//! key), it is the client. ztgate's proof is the [`Verified`] in the request extensions, so the
//! layer removes the headers that only look like proof. See [`HeaderHygiene`].

use std::fmt::Write as _;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::principal::{Principal, Verified};
use crate::request::ACCESS_JWT_HEADER;

/// The email Cloudflare Access adds for a logged-in user: proof only on a hop that came
/// through Access, so never passed on.
const ACCESS_EMAIL_HEADER: &str = "cf-access-authenticated-user-email";
/// Cloudflare's client-certificate headers ("Add TLS client auth headers").
const CLIENT_CERT_PREFIX: &str = "cf-cert-";
/// ztgate's own headers: only the layer writes them.
const ZTGATE_PREFIX: &str = "x-ztgate-";

/// The verified principal's [`Principal::id`].
const PRINCIPAL_HEADER: HeaderName = HeaderName::from_static("x-ztgate-principal");
/// The verified principal's [`Principal::kind`].
const KIND_HEADER: HeaderName = HeaderName::from_static("x-ztgate-kind");
/// The verified user's email (users only; absent for every other kind).
const EMAIL_HEADER: HeaderName = HeaderName::from_static("x-ztgate-email");
/// The mechanisms that proved the principal, in order, as a JSON array of strings.
const VIA_HEADER: HeaderName = HeaderName::from_static("x-ztgate-via");
/// The user's identity provider groups, when the gate fetched the identity.
const GROUPS_HEADER: HeaderName = HeaderName::from_static("x-ztgate-groups");

/// What the Tower layer does to the headers of a request it verified, before the inner service
/// runs. Set it on a [`Gate`](crate::Gate) with
/// [`Gate::with_header_hygiene`](crate::Gate::with_header_hygiene), or on a whole table with
/// [`RoutePolicies::with_header_hygiene`](crate::RoutePolicies::with_header_hygiene).
///
/// **Removed by default**, because a client can send them and a handler might believe them:
///
/// - `Cf-Access-Authenticated-User-Email` and `Cf-Access-Jwt-Assertion`: identity claims that
///   are only proof once verified, and the [`Verified`] in the request extensions is the
///   verified form. On a route proven by an API key, a forged assertion would otherwise reach
///   the handler untouched.
/// - every `cf-cert-*` header, unless the gate's
///   [`RequestLimits::trust_client_cert_headers`](crate::request::RequestLimits::trust_client_cert_headers)
///   says the hop that sets them is Cloudflare's; then they are Cloudflare's facts and stay.
/// - every `X-Ztgate-*` header, always (even with [`keep_unverified_identity_headers`](Self::keep_unverified_identity_headers)):
///   only the layer sets them, so an upstream that reads them reads ztgate, never the client.
/// - any header named with [`strip_header`](Self::strip_header): your own proxy's identity
///   headers (`X-Forwarded-User`, `X-Remote-User`...).
///
/// The request layer reads the credentials first: headers are removed only after the request
/// was verified, just before the inner service is called. A refused request never reaches it.
/// Only the Tower layer (and so axum) applies this: [`Gate::check`](crate::Gate::check) and the
/// Workers adapter hand you the [`Verified`] and leave the request as it came.
///
/// **Set, on request** ([`forward_verified_identity`](Self::forward_verified_identity), off
/// by default): for an upstream that cannot link ztgate (the layer in a reverse proxy),
/// the verified identity as headers, one value each:
///
/// | header | value |
/// |---|---|
/// | `X-Ztgate-Principal` | [`Principal::id`], e.g. `user:alice@acme.com` |
/// | `X-Ztgate-Kind` | [`Principal::kind`], e.g. `user` |
/// | `X-Ztgate-Email` | the user's email; absent for every other kind |
/// | `X-Ztgate-Via` | the mechanisms that proved it, a JSON array: `["access_jwt","api_key"]` |
/// | `X-Ztgate-Groups` | a user's identity provider groups (name, else id), a JSON array, when the gate fetched the Access identity (a group rule, or [`GateBuilder::enrich_identity`](crate::GateBuilder::enrich_identity)); absent otherwise |
///
/// Each value is sent as is when it is printable ASCII without spaces or `%`; otherwise each
/// byte outside `!`..=`~`, and each `%`, is written `%XX` (uppercase hex, UTF-8 bytes), so a
/// value with a line break or a non-ASCII email never breaks the header and always decodes
/// to what was proven. A value with control characters is also logged (in `Debug` form).
///
/// ```
/// use http::HeaderName;
/// use tower::{ServiceBuilder, service_fn};
/// use ztgate::{Gate, HeaderHygiene};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tower::ServiceExt;
/// let hygiene = HeaderHygiene::new()
///     .strip_header(HeaderName::from_static("x-remote-user"))
///     .forward_verified_identity();
/// let gate = Gate::public().with_header_hygiene(hygiene);
/// let upstream = service_fn(|req: http::Request<String>| async move {
///     let seen = |name: &str| req.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
///     assert_eq!(seen("x-remote-user"), None); // the client's claim: removed
///     assert_eq!(seen("cf-access-authenticated-user-email"), None); // removed by default
///     assert_eq!(seen("x-ztgate-principal").as_deref(), Some("anonymous")); // ztgate's, verified
///     assert_eq!(seen("x-ztgate-via").as_deref(), Some(r#"["public"]"#));
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
/// });
/// let forged = http::Request::builder()
///     .uri("/")
///     .header("x-remote-user", "admin")
///     .header("cf-access-authenticated-user-email", "admin@acme.com")
///     .header("x-ztgate-principal", "user:admin@acme.com")
///     .body(String::new())
///     .unwrap();
/// let response = ServiceBuilder::new().layer(gate).service(upstream).oneshot(forged).await.unwrap();
/// assert_eq!(response.status(), 200);
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderHygiene {
    strip_identity: bool,
    extra: Arc<[HeaderName]>,
    forward: bool,
}

impl Default for HeaderHygiene {
    /// [`HeaderHygiene::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderHygiene {
    /// The default: client-sent identity headers removed, nothing set.
    pub fn new() -> Self {
        Self { strip_identity: true, extra: Arc::from([]), forward: false }
    }

    /// Also removes `name` from every verified request: a header your own infrastructure sets
    /// to say who is calling, which a client could send too.
    pub fn strip_header(mut self, name: HeaderName) -> Self {
        if !self.extra.contains(&name) {
            let mut names = self.extra.to_vec();
            names.push(name);
            self.extra = names.into();
        }
        self
    }

    /// Sets `X-Ztgate-Principal`, `X-Ztgate-Kind`, `X-Ztgate-Email` (users) and `X-Ztgate-Via`
    /// on every verified request, for an upstream that reads identity from headers. Only safe
    /// when that upstream is reachable through this layer alone: anyone who can reach it
    /// directly can send the same headers.
    pub fn forward_verified_identity(mut self) -> Self {
        self.forward = true;
        self
    }

    /// Keeps `Cf-Access-Authenticated-User-Email`, `Cf-Access-Jwt-Assertion` and `cf-cert-*` as
    /// the client sent them, e.g. for an upstream that verifies the assertion again itself.
    /// Whatever reads them must verify them: the layer does not vouch for them (on a route
    /// proven by an API key, the assertion was never even looked at). `X-Ztgate-*` and the
    /// headers named with [`strip_header`](Self::strip_header) are still removed.
    pub fn keep_unverified_identity_headers(mut self) -> Self {
        self.strip_identity = false;
        self
    }

    /// Whether the verified identity headers are set.
    pub fn forwards_verified_identity(&self) -> bool {
        self.forward
    }

    /// The headers named with [`strip_header`](Self::strip_header).
    pub fn stripped_headers(&self) -> &[HeaderName] {
        &self.extra
    }

    /// Removes what a client could forge, then sets the verified headers if asked to.
    /// `trust_client_cert_headers` is the selected gate's
    /// [`RequestLimits::trust_client_cert_headers`](crate::request::RequestLimits::trust_client_cert_headers).
    pub(crate) fn apply<C>(
        &self,
        headers: &mut HeaderMap,
        trust_client_cert_headers: bool,
        verified: &Verified<Principal<C>>,
    ) {
        if self.strip_identity {
            headers.remove(ACCESS_EMAIL_HEADER);
            headers.remove(ACCESS_JWT_HEADER);
            if !trust_client_cert_headers {
                remove_prefixed(headers, CLIENT_CERT_PREFIX);
            }
        }
        remove_prefixed(headers, ZTGATE_PREFIX);
        for name in self.extra.iter() {
            headers.remove(name);
        }
        if self.forward {
            forward(headers, verified);
        }
    }
}

/// Removes every header whose (lowercase) name starts with `prefix`. Allocates only when one
/// is present.
fn remove_prefixed(headers: &mut HeaderMap, prefix: &str) {
    let matches = |name: &HeaderName| name.as_str().starts_with(prefix);
    if !headers.keys().any(matches) {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| matches(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
}

fn forward<C>(headers: &mut HeaderMap, verified: &Verified<Principal<C>>) {
    let principal = verified.principal();
    set(headers, PRINCIPAL_HEADER, &principal.id());
    set(headers, KIND_HEADER, principal.kind());
    if let Some(user) = principal.as_user() {
        set(headers, EMAIL_HEADER, &user.email);
        if let Some(identity) = &user.identity {
            let groups: Vec<&str> =
                identity.groups.iter().filter_map(|g| g.name.as_deref().or(g.id.as_deref())).collect();
            set_json(headers, GROUPS_HEADER, &groups);
        }
    }
    let via: Vec<&str> = verified.proofs().iter().map(|p| p.mechanism).collect();
    set_json(headers, VIA_HEADER, &via);
}

/// Sets `name` to the compact JSON array of `items` (one predictable form: `["a","b"]`).
fn set_json(headers: &mut HeaderMap, name: HeaderName, items: &[&str]) {
    match serde_json::to_string(items) {
        Ok(json) => set(headers, name, &json),
        Err(e) => {
            tracing::warn!(layer = "identity", outcome = "header_not_set", header = ?name.as_str(), reason = ?e.to_string())
        }
    }
}

/// Sets `name` to `text`, percent-encoded where it must be (see [`HeaderHygiene`]). Never
/// panics: a value the encoding cannot make valid (none can) is not set, and logged.
fn set(headers: &mut HeaderMap, name: HeaderName, text: &str) {
    if text.bytes().any(|b| b.is_ascii_control()) {
        tracing::warn!(layer = "identity", outcome = "header_encoded", header = ?name.as_str(), value = ?text, "a verified value holds control characters: percent-encoded");
    }
    match HeaderValue::try_from(encode(text)) {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(_) => {
            tracing::warn!(layer = "identity", outcome = "header_not_set", header = ?name.as_str(), value = ?text);
        }
    }
}

/// Every byte outside `!`..=`~`, and `%`, as `%XX`; the rest as is.
fn encode(text: &str) -> String {
    let plain = |b: u8| (b'!'..=b'~').contains(&b) && b != b'%';
    if text.bytes().all(plain) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for b in text.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_sent_as_is_or_percent_encoded_never_broken() {
        assert_eq!(encode("user:alice@acme.com"), "user:alice@acme.com");
        assert_eq!(encode(r#"["access_jwt","api_key"]"#), r#"["access_jwt","api_key"]"#);
        assert_eq!(encode("user:a\r\nX-Ztgate-Kind: service"), "user:a%0D%0AX-Ztgate-Kind:%20service");
        assert_eq!(encode("user:josé@acme.com"), "user:jos%C3%A9@acme.com");
        assert_eq!(encode("50%"), "50%25");
        assert_eq!(encode("\u{7f}\0\t"), "%7F%00%09");
    }

    #[test]
    fn prefixed_headers_are_removed_whatever_their_case_on_the_wire() {
        let mut headers = HeaderMap::new();
        headers.insert("X-Ztgate-Principal", HeaderValue::from_static("user:mallory"));
        headers.append("x-ztgate-principal", HeaderValue::from_static("user:mallory2"));
        headers.insert("X-ZTGATE-VIA", HeaderValue::from_static("[]"));
        headers.insert("x-ztgatex", HeaderValue::from_static("kept: no dash"));
        remove_prefixed(&mut headers, ZTGATE_PREFIX);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-ztgatex"));
    }
}
