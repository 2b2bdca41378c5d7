//! Layer 1 — Request: what arrived, before anything is believed.
//!
//! [`RequestFacts::extract`] reads the credentials and context of an incoming request
//! without verifying anything. It is pure, bounded and total: every header it reads has a
//! size limit, malformed or ambiguous input is a [`RequestError`], and nothing panics.
//!
//! Request code never verifies: a token found here is only a candidate for the identity layer.
//!
//! ```
//! use ztgate::request::{CredentialSource, RequestFacts, RequestLimits};
//!
//! let req = http::Request::builder()
//!     .uri("/admin/whoami")
//!     .header("cf-access-jwt-assertion", "eyJhbGciOi.e30.c2ln")
//!     .header("cookie", "CF_Authorization=ignored-because-the-header-wins")
//!     .body(())
//!     .unwrap();
//! let facts = RequestFacts::extract(&req, &RequestLimits::default()).unwrap();
//! let jwt = facts.access_jwt().unwrap();
//! assert_eq!(jwt.source(), CredentialSource::Header);
//! // Debug output never shows the token itself.
//! assert!(!format!("{facts:?}").contains("eyJhbGciOi"));
//! ```

use std::fmt;

use http::{HeaderMap, HeaderName, Method, Request};

mod client_cert;

pub use client_cert::{CertVerification, ClientCertFacts};

/// Header Cloudflare Access sets on every request it lets through to the origin.
pub const ACCESS_JWT_HEADER: &str = "cf-access-jwt-assertion";
/// Cookie Cloudflare Access sets in the browser after login.
pub const ACCESS_JWT_COOKIE: &str = "CF_Authorization";

/// Size limits for everything the request layer reads, and which forwarded facts to believe.
///
/// The defaults are generous for real Access tokens (1–4 KB) and far below what lets one
/// request pin memory or CPU.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    /// Read Cloudflare's `cf-cert-*` client-certificate headers ("Add TLS client auth headers"
    /// managed transform). Only set this when every request reaches you through Cloudflare
    /// (e.g. a Cloudflare Tunnel or authenticated origin pulls): anyone who can reach the origin
    /// directly can send these headers. Default `false`: the headers are ignored.
    pub trust_client_cert_headers: bool,
    /// Largest accepted query string (kept for mechanisms that read a token parameter); a
    /// longer one is refused with 414.
    pub max_query_bytes: usize,
    /// Most parameters (non-empty `&`-separated pairs) a query string may hold; more is
    /// refused with 414, so reading a parameter never walks an unbounded list.
    pub max_query_params: usize,
    /// Largest accepted credential: the assertion header, or the token inside the cookie.
    pub max_token_bytes: usize,
    /// Largest accepted `Cookie` header (all `Cookie` fields together).
    pub max_cookie_bytes: usize,
    /// Largest accepted path; a longer one is refused with 414. The path is kept whole for
    /// mechanisms (a signature over it must cover all of it); logs cut it to 256 bytes.
    pub max_path_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            trust_client_cert_headers: false,
            max_query_bytes: 4 * 1024,
            max_query_params: 64,
            max_token_bytes: 16 * 1024,
            max_cookie_bytes: 32 * 1024,
            max_path_bytes: 8 * 1024,
        }
    }
}

/// Why the request layer refused a request before identity was attempted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// A credential-bearing header exceeded its size limit.
    HeaderTooLarge {
        /// Which header.
        header: &'static str,
        /// Its limit in bytes.
        limit: usize,
    },
    /// A credential header holds bytes that are not visible ASCII.
    NotText {
        /// Which header.
        header: &'static str,
    },
    /// The same credential arrived more than once with different values: refusing beats
    /// guessing which one the client meant (cookie tossing, header smuggling).
    AmbiguousCredential {
        /// Which header or cookie.
        name: &'static str,
    },
    /// The path or the query string exceeded its size limit (414 URI Too Long).
    UriTooLong {
        /// `"path"` or `"query string"`.
        part: &'static str,
        /// Its limit in bytes.
        limit: usize,
    },
    /// The query string holds more parameters than [`RequestLimits::max_query_params`] (414
    /// URI Too Long).
    TooManyQueryParams {
        /// The limit, in parameters.
        limit: usize,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeaderTooLarge { header, limit } => {
                write!(f, "the {header} header is larger than {limit} bytes")
            }
            Self::NotText { header } => write!(f, "the {header} header is not visible ASCII text"),
            Self::AmbiguousCredential { name } => {
                write!(f, "{name} was sent more than once with different values")
            }
            Self::UriTooLong { part, limit } => write!(f, "the {part} is longer than {limit} bytes"),
            Self::TooManyQueryParams { limit } => {
                write!(f, "the query string has more than {limit} parameters")
            }
        }
    }
}

impl std::error::Error for RequestError {}

/// Where a credential was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// A request header (for Access: `Cf-Access-Jwt-Assertion`).
    Header,
    /// A cookie (for Access: `CF_Authorization`).
    Cookie,
    /// The query string.
    Query,
}

/// A credential as it arrived: unverified bytes that must never be logged.
///
/// `Debug` prints only its length. Read it with [`Credential::expose`], which says at the
/// call site that a secret is being handled.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    value: String,
    source: CredentialSource,
}

impl Credential {
    /// The raw credential. Pass it to a verifier; never to a log.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where it was found.
    pub fn source(&self) -> CredentialSource {
        self.source
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({:?}, {} bytes, redacted)", self.source, self.value.len())
    }
}

/// What a request claims about itself. Nothing here is proof.
#[derive(Clone, Debug)]
pub struct RequestFacts {
    access_jwt: Option<Credential>,
    bearer: Option<Credential>,
    api_key: Option<Credential>,
    client_cert: Option<ClientCertFacts>,
    query: Option<Credential>,
    cookies: Option<RawCookies>,
    method: Method,
    path: String,
    client_ip: Option<String>,
    country: Option<String>,
    /// Headers mechanisms declared ([`Mechanism::headers`](crate::identity::Mechanism::headers)).
    declared: Vec<(HeaderName, Credential)>,
}

impl RequestFacts {
    /// Reads the facts of a request (body untouched).
    pub fn extract<B>(req: &Request<B>, limits: &RequestLimits) -> Result<Self, RequestError> {
        Self::from_parts_with_query(req.method(), req.uri().path(), req.uri().query(), req.headers(), limits)
    }

    /// Reads the facts from already separated request parts.
    pub fn from_parts(
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        limits: &RequestLimits,
    ) -> Result<Self, RequestError> {
        Self::from_parts_with_query(method, path, None, headers, limits)
    }

    /// Like [`RequestFacts::from_parts`], with the raw query string (without `?`).
    pub fn from_parts_with_query(
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        limits: &RequestLimits,
    ) -> Result<Self, RequestError> {
        Self::read(method, path, query, headers, limits, &[])
    }

    /// Like [`RequestFacts::from_parts_with_query`], also copying the `declared` headers (the
    /// ones the gate's mechanisms read), each bounded like a credential.
    pub(crate) fn read(
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        limits: &RequestLimits,
        declared: &[HeaderName],
    ) -> Result<Self, RequestError> {
        let query = match query {
            Some(q) if q.len() > limits.max_query_bytes => {
                return Err(RequestError::UriTooLong { part: "query string", limit: limits.max_query_bytes });
            }
            Some(q) if query_pairs(q).nth(limits.max_query_params).is_some() => {
                return Err(RequestError::TooManyQueryParams { limit: limits.max_query_params });
            }
            Some(q) => Some(Credential { value: q.to_owned(), source: CredentialSource::Query }),
            None => None,
        };
        if path.len() > limits.max_path_bytes {
            return Err(RequestError::UriTooLong { part: "path", limit: limits.max_path_bytes });
        }
        let client_cert =
            if limits.trust_client_cert_headers { ClientCertFacts::from_cf_headers(headers) } else { None };
        // The `Cookie` fields are joined once: the Access JWT and any cookie a mechanism asks for
        // later are read from the same bytes. Their error, if any, is raised where it always was:
        // after the assertion header's, the bearer's and the API key's (only a JWT that has to
        // come from the cookie needs them earlier).
        let cookies = cookie_header(headers, limits);
        Ok(Self {
            access_jwt: access_jwt(headers, cookies.as_ref().map(Option::as_ref), limits)?,
            bearer: bearer(headers, limits)?,
            api_key: single_header(headers, "x-api-key", "X-Api-Key", limits)?
                .map(|value| Credential { value, source: CredentialSource::Header }),
            client_cert,
            query,
            cookies: cookies?,
            method: method.clone(),
            path: path.to_owned(),
            client_ip: short_header(headers, "cf-connecting-ip", 64),
            country: short_header(headers, "cf-ipcountry", 8),
            declared: declared_headers(headers, declared, limits)?,
        })
    }

    /// A header one of the gate's mechanisms declared it reads, if the request has it. `None`
    /// for every header no mechanism of the gate declared; each value is sent once,
    /// visible ASCII, within [`RequestLimits::max_token_bytes`]. Names are case-insensitive.
    pub fn header(&self, name: &str) -> Option<&Credential> {
        self.declared.iter().find(|(n, _)| n.as_str().eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// The Cloudflare Access JWT, if the request carries one.
    pub fn access_jwt(&self) -> Option<&Credential> {
        self.access_jwt.as_ref()
    }

    /// `Authorization: Bearer <credential>`, if present (the scheme is case-insensitive).
    pub fn bearer(&self) -> Option<&Credential> {
        self.bearer.as_ref()
    }

    /// `X-Api-Key`, if present.
    pub fn api_key_header(&self) -> Option<&Credential> {
        self.api_key.as_ref()
    }

    /// Client-certificate facts: from Cloudflare's `cf-cert-*` headers when the hop is trusted
    /// ([`RequestLimits::trust_client_cert_headers`]), or set by a Workers adapter from
    /// `request.cf.tlsClientAuth`.
    pub fn client_cert(&self) -> Option<&ClientCertFacts> {
        self.client_cert.as_ref()
    }

    /// Replaces the client-certificate facts (for adapters that read them from elsewhere,
    /// such as `request.cf.tlsClientAuth` in Workers).
    pub fn with_client_cert(mut self, facts: Option<ClientCertFacts>) -> Self {
        self.client_cert = facts;
        self
    }

    /// The value of query parameter `name`, if sent exactly once (or always with the same
    /// value). Query strings can carry tokens (unsubscribe links), so this returns a
    /// [`Credential`], read like a cookie: a parameter sent twice with different values is
    /// [`RequestError::AmbiguousCredential`], never "the first one wins".
    ///
    /// Names and values are read as an HTML form reads them (`application/x-www-form-urlencoded`):
    /// pairs split on `&`, `+` is a space, `%XX` is a byte (a `%` not followed by two hex digits
    /// stays as it is). Names are compared *after* decoding, so `%74oken` is `token`; values are
    /// compared as decoded bytes, and a value that is not UTF-8 reaches the mechanism as an
    /// invalid credential rather than as no credential. `name=` and a bare `name` are the empty
    /// value, which differs from any other.
    pub fn query_param(&self, name: &str) -> Result<Option<Credential>, RequestError> {
        let Some(query) = &self.query else { return Ok(None) };
        let mut found: Option<Vec<u8>> = None;
        // At most `max_query_params` pairs: `read` refused a query with more.
        for (k, v) in query_pairs(query.expose()) {
            if form_decode(k) != name.as_bytes() {
                continue;
            }
            let value = form_decode(v);
            match &found {
                Some(first) if *first != value => {
                    return Err(RequestError::AmbiguousCredential { name: "a query parameter" });
                }
                _ => found = Some(value),
            }
        }
        Ok(found.map(|v| Credential {
            value: String::from_utf8_lossy(&v).into_owned(),
            source: CredentialSource::Query,
        }))
    }

    /// The value of cookie `name`, if sent exactly once (or always with the same value).
    pub fn cookie(&self, name: &str) -> Result<Option<Credential>, RequestError> {
        let Some(cookies) = &self.cookies else { return Ok(None) };
        find_cookie(&cookies.0, name).map(|found| {
            found.map(|v| Credential {
                value: String::from_utf8_lossy(v).into_owned(),
                source: CredentialSource::Cookie,
            })
        })
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request path, whole (at most [`RequestLimits::max_path_bytes`]), without the query
    /// string. Untrusted text: a log should cut and escape it (the gate's own events do).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `CF-Connecting-IP` as sent. Only Cloudflare's edge makes it meaningful: log it, never
    /// authorize on it.
    pub fn client_ip(&self) -> Option<&str> {
        self.client_ip.as_deref()
    }

    /// `CF-IPCountry` as sent. Same caveat as [`RequestFacts::client_ip`].
    pub fn country(&self) -> Option<&str> {
        self.country.as_deref()
    }
}

/// The declared headers present in the request, each checked like a credential header.
fn declared_headers(
    headers: &HeaderMap,
    declared: &[HeaderName],
    limits: &RequestLimits,
) -> Result<Vec<(HeaderName, Credential)>, RequestError> {
    let mut out = Vec::new();
    for name in declared {
        if let Some(value) = single_header(headers, name.as_str(), "a mechanism's header", limits)? {
            out.push((name.clone(), Credential { value, source: CredentialSource::Header }));
        }
    }
    Ok(out)
}

/// The Access JWT: the assertion header if present (even if empty or broken: a bad header
/// never falls through to the cookie), else the `CF_Authorization` cookie.
fn access_jwt(
    headers: &HeaderMap,
    cookies: Result<Option<&RawCookies>, &RequestError>,
    limits: &RequestLimits,
) -> Result<Option<Credential>, RequestError> {
    let mut values = headers.get_all(ACCESS_JWT_HEADER).iter();
    if let Some(first) = values.next() {
        if values.next().is_some() {
            return Err(RequestError::AmbiguousCredential { name: "Cf-Access-Jwt-Assertion" });
        }
        if first.len() > limits.max_token_bytes {
            return Err(RequestError::HeaderTooLarge {
                header: "Cf-Access-Jwt-Assertion",
                limit: limits.max_token_bytes,
            });
        }
        // Non-ASCII bytes cannot form a JWT; keep them as an (invalid) credential so identity
        // rejects it with 401 rather than treating the request as anonymous.
        // (A token is visible ASCII: `to_str` is the fast check, the lossy copy the rare path.)
        let value = match first.to_str() {
            Ok(text) => text.to_owned(),
            Err(_) => String::from_utf8_lossy(first.as_bytes()).into_owned(),
        };
        return Ok(Some(Credential { value, source: CredentialSource::Header }));
    }
    let Some(cookies) = cookies.map_err(Clone::clone)? else { return Ok(None) };
    match find_cookie(&cookies.0, ACCESS_JWT_COOKIE)? {
        None => Ok(None),
        Some(value) => {
            // Measured after the text conversion: an invalid byte becomes a 3-byte U+FFFD, and
            // the credential kept must stay within the limit.
            let value = String::from_utf8_lossy(value);
            if value.len() > limits.max_token_bytes {
                return Err(RequestError::HeaderTooLarge { header: "Cookie", limit: limits.max_token_bytes });
            }
            Ok(Some(Credential { value: value.into_owned(), source: CredentialSource::Cookie }))
        }
    }
}

/// The raw bytes of every `Cookie` field. Kept as bytes: converting to text first would merge
/// different invalid byte sequences into the same replacement character, and two different
/// cookies would then compare equal. `Debug` shows only the length.
#[derive(Clone)]
struct RawCookies(Vec<u8>);

impl fmt::Debug for RawCookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawCookies({} bytes, redacted)", self.0.len())
    }
}

/// Every `Cookie` field joined with `; ` (HTTP/2 splits them), bounded.
fn cookie_header(headers: &HeaderMap, limits: &RequestLimits) -> Result<Option<RawCookies>, RequestError> {
    let fields = headers.get_all(http::header::COOKIE);
    let total: usize = fields.iter().map(|v| v.len() + 2).sum();
    if total > limits.max_cookie_bytes {
        return Err(RequestError::HeaderTooLarge { header: "Cookie", limit: limits.max_cookie_bytes });
    }
    let mut joined = Vec::new();
    for field in fields {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(field.as_bytes());
    }
    Ok((!joined.is_empty()).then_some(RawCookies(joined)))
}

/// Finds one cookie by exact name; conflicting duplicates are ambiguous.
fn find_cookie<'a>(cookies: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, RequestError> {
    let mut found: Option<&[u8]> = None;
    for pair in cookies.split(|b| *b == b';') {
        let pair = pair.trim_ascii();
        let Some(eq) = pair.iter().position(|b| *b == b'=') else { continue };
        if &pair[..eq] != name.as_bytes() {
            continue;
        }
        let mut value = pair[eq + 1..].trim_ascii();
        if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
            value = &value[1..value.len() - 1];
        }
        match found {
            Some(previous) if previous != value => {
                return Err(RequestError::AmbiguousCredential { name: cookie_label(name) });
            }
            _ => found = Some(value),
        }
    }
    Ok(found)
}

fn cookie_label(name: &str) -> &'static str {
    if name == ACCESS_JWT_COOKIE { ACCESS_JWT_COOKIE } else { "a cookie" }
}

/// One header that must appear at most once, bounded.
fn single_header(
    headers: &HeaderMap,
    name: &str,
    label: &'static str,
    limits: &RequestLimits,
) -> Result<Option<String>, RequestError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(RequestError::AmbiguousCredential { name: label });
    }
    if first.len() > limits.max_token_bytes {
        return Err(RequestError::HeaderTooLarge { header: label, limit: limits.max_token_bytes });
    }
    // A credential that is not text is refused rather than converted: a lossy conversion could
    // make different bytes compare equal.
    match first.to_str() {
        Ok(text) => Ok(Some(text.to_owned())),
        Err(_) => Err(RequestError::NotText { header: label }),
    }
}

/// `Authorization: Bearer x`. Other schemes are not a bearer credential.
fn bearer(headers: &HeaderMap, limits: &RequestLimits) -> Result<Option<Credential>, RequestError> {
    let Some(value) = single_header(headers, "authorization", "Authorization", limits)? else {
        return Ok(None);
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((&value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    Ok(Some(Credential { value: rest.trim_matches(' ').to_owned(), source: CredentialSource::Header }))
}

/// The non-empty `&`-separated pairs of a query string, each split at its first `=` (a pair
/// without one is a name with the empty value).
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query.split('&').filter(|pair| !pair.is_empty()).map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// `application/x-www-form-urlencoded` decoding of one name or value, to bytes: `+` is a space,
/// `%XX` (two hex digits) is that byte, anything else (a lone `%` too) is itself.
fn form_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex_digit(*hi).zip(hex_digit(*lo)).map(|(hi, lo)| hi << 4 | lo),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn short_header(headers: &HeaderMap, name: &'static str, max: usize) -> Option<String> {
    let value = headers.get(HeaderName::from_static(name))?;
    let text = value.to_str().ok()?;
    (text.len() <= max).then(|| text.to_owned())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary (for
/// logging attacker-chosen text with a bound).
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(headers: &[(&str, &str)]) -> Result<RequestFacts, RequestError> {
        let mut b = Request::builder().uri("/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        RequestFacts::extract(&b.body(()).unwrap(), &RequestLimits::default())
    }

    #[test]
    fn header_wins_over_cookie() {
        let f = facts(&[(ACCESS_JWT_HEADER, "h.h.h"), ("cookie", "CF_Authorization=c.c.c")]).unwrap();
        assert_eq!(f.access_jwt().unwrap().expose(), "h.h.h");
    }

    #[test]
    fn empty_header_does_not_fall_through_to_cookie() {
        let f = facts(&[(ACCESS_JWT_HEADER, ""), ("cookie", "CF_Authorization=c.c.c")]).unwrap();
        let jwt = f.access_jwt().unwrap();
        assert_eq!((jwt.expose(), jwt.source()), ("", CredentialSource::Header));
    }

    #[test]
    fn cookie_is_found_among_others_and_across_fields() {
        let f =
            facts(&[("cookie", "a=1; b=2"), ("cookie", "theme=dark; CF_Authorization=\"c.c.c\"")]).unwrap();
        assert_eq!(f.access_jwt().unwrap().expose(), "c.c.c");
        assert_eq!(f.access_jwt().unwrap().source(), CredentialSource::Cookie);
    }

    #[test]
    fn cookie_name_match_is_exact() {
        let f =
            facts(&[("cookie", "cf_authorization=x; CF_Authorization_old=y; XCF_Authorization=z")]).unwrap();
        assert!(f.access_jwt().is_none());
    }

    #[test]
    fn cookies_differing_only_in_invalid_bytes_are_still_different() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            http::HeaderValue::from_bytes(b"CF_Authorization=a\xff; CF_Authorization=a\xfe").unwrap(),
        );
        let err =
            RequestFacts::from_parts(&Method::GET, "/", &headers, &RequestLimits::default()).unwrap_err();
        assert_eq!(err, RequestError::AmbiguousCredential { name: ACCESS_JWT_COOKIE });
    }

    #[test]
    fn non_text_api_key_or_bearer_is_refused_not_converted() {
        for name in [http::header::AUTHORIZATION, HeaderName::from_static("x-api-key")] {
            let mut headers = HeaderMap::new();
            headers.insert(name, http::HeaderValue::from_bytes(b"Bearer key\xff\xfe").unwrap());
            let err =
                RequestFacts::from_parts(&Method::GET, "/", &headers, &RequestLimits::default()).unwrap_err();
            assert!(matches!(err, RequestError::NotText { .. }), "{err:?}");
        }
    }

    #[test]
    fn a_cookie_credential_stays_within_the_limit_after_text_conversion() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            http::HeaderValue::from_bytes(b"CF_Authorization=\xff\xff\xff").unwrap(),
        );
        let limits = RequestLimits { max_token_bytes: 8, ..RequestLimits::default() };
        let err = RequestFacts::from_parts(&Method::GET, "/", &headers, &limits).unwrap_err();
        assert!(matches!(err, RequestError::HeaderTooLarge { .. }), "{err:?}");
    }

    #[test]
    fn conflicting_cookies_are_ambiguous() {
        let err = facts(&[("cookie", "CF_Authorization=a; CF_Authorization=b")]).unwrap_err();
        assert_eq!(err, RequestError::AmbiguousCredential { name: ACCESS_JWT_COOKIE });
        // The same value twice is harmless (a browser with two matching paths).
        assert!(facts(&[("cookie", "CF_Authorization=a; CF_Authorization=a")]).is_ok());
    }

    #[test]
    fn repeated_assertion_header_is_ambiguous() {
        let err = facts(&[(ACCESS_JWT_HEADER, "a.b.c"), (ACCESS_JWT_HEADER, "a.b.c")]).unwrap_err();
        assert!(matches!(err, RequestError::AmbiguousCredential { .. }));
    }

    #[test]
    fn oversized_header_and_cookie_are_refused() {
        let big = "a".repeat(64 * 1024);
        assert!(matches!(facts(&[(ACCESS_JWT_HEADER, &big)]), Err(RequestError::HeaderTooLarge { .. })));
        let cookie = format!("CF_Authorization={big}");
        assert!(matches!(facts(&[("cookie", &cookie)]), Err(RequestError::HeaderTooLarge { .. })));
        let token = format!("CF_Authorization={}", "a".repeat(20 * 1024));
        assert!(matches!(facts(&[("cookie", &token)]), Err(RequestError::HeaderTooLarge { .. })));
    }

    #[test]
    fn only_declared_headers_are_read_and_each_is_bounded_like_a_credential() {
        let declared = [HeaderName::from_static("x-device-sig")];
        let read = |pairs: &[(&str, &str)]| {
            let mut headers = HeaderMap::new();
            for (k, v) in pairs {
                headers.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            let limits = RequestLimits { max_token_bytes: 16, ..RequestLimits::default() };
            RequestFacts::read(&Method::GET, "/", None, &headers, &limits, &declared)
        };
        let f = read(&[("x-device-sig", "abc"), ("x-other", "secret")]).unwrap();
        assert_eq!(f.header("X-Device-Sig").map(Credential::expose), Some("abc"));
        assert!(f.header("x-other").is_none(), "an undeclared header is never exposed");
        assert!(!format!("{f:?}").contains("abc"), "Debug never shows a declared header's value");
        let twice = read(&[("x-device-sig", "a"), ("x-device-sig", "b")]).unwrap_err();
        assert!(matches!(twice, RequestError::AmbiguousCredential { .. }), "{twice:?}");
        let long = read(&[("x-device-sig", &"a".repeat(17))]).unwrap_err();
        assert!(matches!(long, RequestError::HeaderTooLarge { .. }), "{long:?}");
        let undeclared =
            RequestFacts::read(&Method::GET, "/", None, &HeaderMap::new(), &RequestLimits::default(), &[]);
        assert!(undeclared.unwrap().header("x-device-sig").is_none());
    }

    #[test]
    fn the_path_is_kept_whole_up_to_its_limit_and_refused_beyond() {
        let limits = RequestLimits { max_path_bytes: 601, ..RequestLimits::default() };
        let path = format!("/{}", "é".repeat(300));
        let req = Request::builder().uri(path.as_str()).body(()).unwrap();
        let f = RequestFacts::extract(&req, &limits).unwrap();
        assert_eq!(f.path(), req.uri().path(), "a mechanism sees the whole path, not a logging cut");
        let longer = Request::builder().uri(format!("{path}x").as_str()).body(()).unwrap();
        let refused = RequestFacts::extract(&longer, &limits).unwrap_err();
        assert_eq!(refused, RequestError::UriTooLong { part: "path", limit: 601 });
    }

    #[test]
    fn an_oversized_query_is_414_uri_too_long_not_a_header_error() {
        let limits = RequestLimits { max_query_bytes: 8, ..RequestLimits::default() };
        let req = Request::builder().uri("/a?token=123456789").body(()).unwrap();
        let refused = RequestFacts::extract(&req, &limits).unwrap_err();
        assert_eq!(refused, RequestError::UriTooLong { part: "query string", limit: 8 });
        assert_eq!(refused.to_string(), "the query string is longer than 8 bytes");
    }

    fn token_in(query: &str) -> Result<Option<String>, RequestError> {
        let req = Request::builder().uri(format!("/api/unsubscribe?{query}")).body(()).unwrap();
        let f = RequestFacts::extract(&req, &RequestLimits::default())?;
        Ok(f.query_param("token")?.map(|c| {
            assert_eq!(c.source(), CredentialSource::Query);
            c.expose().to_owned()
        }))
    }

    #[test]
    fn query_token_sent_twice_with_different_values_is_refused() {
        let ambiguous = RequestError::AmbiguousCredential { name: "a query parameter" };
        for query in
            ["token=A&token=B", "token=A&token=", "token=A&token", "token=&token=A", "token=A&x=1&token=B"]
        {
            assert_eq!(token_in(query), Err(ambiguous.clone()), "{query}");
        }
        // The same value twice is harmless, also when spelled differently.
        assert_eq!(token_in("token=A.B&token=A.B"), Ok(Some("A.B".into())));
        assert_eq!(token_in("token=A.B&token=A%2EB"), Ok(Some("A.B".into())));
        // Other parameters may repeat: only the one read as a credential must be unambiguous.
        assert_eq!(token_in("tag=a&tag=b&token=A"), Ok(Some("A".into())));
        assert_eq!(token_in("tokens=x&xtoken=y&Token=z"), Ok(None), "names match exactly");
    }

    #[test]
    fn percent_encoded_parameter_name_cannot_smuggle_a_second_token() {
        let ambiguous = Err(RequestError::AmbiguousCredential { name: "a query parameter" });
        for query in [
            "token=A&%74oken=B",
            "%74%6F%6B%65%6E=A&token=B",
            "token=A&%74%6f%6b%65%6e=",
            "tok%65n=A&token=B",
        ] {
            assert_eq!(token_in(query), ambiguous, "{query}");
        }
        // Decoded names are names: an encoded one alone is the credential.
        assert_eq!(token_in("%74oken=A"), Ok(Some("A".into())));
        // `+` is a space in a name, so `token+` is another parameter.
        assert_eq!(token_in("token=A&token+=B"), Ok(Some("A".into())));
    }

    #[test]
    fn an_undecodable_query_token_is_an_invalid_credential_not_a_missing_one() {
        // A value that is not UTF-8 still arrives (lossy), so the mechanism refuses it (401)
        // instead of treating the request as anonymous.
        assert_eq!(token_in("token=%FF%FE"), Ok(Some("\u{fffd}\u{fffd}".into())));
        // Different invalid bytes are different values, though both read as U+FFFD.
        let ambiguous = Err(RequestError::AmbiguousCredential { name: "a query parameter" });
        assert_eq!(token_in("token=%FF&token=%FE"), ambiguous);
        // A `%` without two hex digits is itself, as an HTML form reads it.
        assert_eq!(token_in("token=%ZZ%4"), Ok(Some("%ZZ%4".into())));
        assert_eq!(token_in("token=a+b%20c"), Ok(Some("a b c".into())));
    }

    #[test]
    fn a_query_with_more_parameters_than_the_limit_is_414() {
        let limits = RequestLimits { max_query_params: 3, ..RequestLimits::default() };
        let read = |query: &str| {
            let req = Request::builder().uri(format!("/a?{query}")).body(()).unwrap();
            RequestFacts::extract(&req, &limits).map(|f| f.query_param("token"))
        };
        assert_eq!(
            read("a=1&b=2&token=t"),
            Ok(Ok(Some(Credential { value: "t".into(), source: CredentialSource::Query })))
        );
        // Empty pairs are no parameters.
        assert!(read("a=1&&b=2&&token=t&").is_ok());
        let refused = read("a=1&b=2&c=3&token=t").unwrap_err();
        assert_eq!(refused, RequestError::TooManyQueryParams { limit: 3 });
        assert_eq!(refused.to_string(), "the query string has more than 3 parameters");
    }
}
