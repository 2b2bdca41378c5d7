//! Sending a browser to the Cloudflare Access login page instead of a 401 it cannot act on.
//! See [`LoginRedirect`].

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};

use crate::error::{ConfigError, Rejection};

/// The longest path and query a login redirect sends the browser back to; a longer one goes to
/// the application's root instead.
const MAX_TARGET_BYTES: usize = 2048;

/// Where a browser without a credential is sent to log in: the Cloudflare Access login page of
/// an application, which sends it back here once it has a session.
///
/// A person who follows a link to a gated page with no Access session (the route is not behind
/// an Access application, or Access bypasses it) would otherwise see a JSON 401. With a
/// `LoginRedirect` on the gate ([`Gate::with_login_redirect`](crate::Gate::with_login_redirect),
/// or per route with
/// [`RoutePolicies::route_with_login_redirect`](crate::RoutePolicies::route_with_login_redirect)),
/// the Tower layer answers such a request with `302 Found` to
///
/// ```text
/// {team_domain}/cdn-cgi/access/login/{app_host}?redirect_url={target, percent-encoded}
/// ```
///
/// with `Cache-Control: no-store`, where the target is `https://{app_host}{path}{?query}`.
/// Only when all of these hold; anything else keeps its JSON refusal:
///
/// - the refusal is [`Rejection::MissingCredential`]: no credential at all. An invalid or
///   expired credential stays 401 (a redirect would hide why, and could loop), a forbidden
///   caller stays 403;
/// - the method is `GET` or `HEAD` (a redirected `POST` would lose its body, or be replayed);
/// - `Accept` lists `text/html` with a non-zero `q`. `*/*` alone does not count, so API
///   clients (curl, fetch, SDKs) keep their 401.
///
/// **No open redirect, by construction.** The team domain and the application host are
/// configuration, never the request's `Host` or absolute URI. The target is built from the
/// request's path and query only, and only when the path starts with one `/` (not `//` or
/// `/\`, nor their percent-encoded forms), holds no backslash, control character or `://`,
/// and path and query together are at most 2 KiB; otherwise the target is
/// `https://{app_host}/`.
///
/// Put it on routes that accept an Access credential: after logging in, the browser comes back
/// with Access's cookie, which a route that only takes API keys ignores, so it would be sent to
/// log in again and again.
///
/// ```
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use ztgate::{AccessConfig, Gate, LoginRedirect, Policy};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let login = LoginRedirect::new("https://acme.cloudflareaccess.com", "admin.acme.com")?;
/// let gate = Gate::builder(AccessConfig::new("https://acme.cloudflareaccess.com", ["aud-tag"])?)
///     .policy(Policy::new().allow_emails(["alice@acme.com"]))
///     .build()?
///     .with_login_redirect(login);
/// let handler = service_fn(|_req: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("admin page")))
/// });
/// let app = ServiceBuilder::new().layer(gate).service(handler);
///
/// let browser = http::Request::get("/reports?week=12")
///     .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
///     .body(String::new())?;
/// let response = app.clone().oneshot(browser).await?;
/// assert_eq!(response.status(), 302);
/// assert_eq!(
///     response.headers()["location"],
///     "https://acme.cloudflareaccess.com/cdn-cgi/access/login/admin.acme.com\
///      ?redirect_url=https%3A%2F%2Fadmin.acme.com%2Freports%3Fweek%3D12"
/// );
///
/// let api_client = http::Request::get("/reports").header("accept", "*/*").body(String::new())?;
/// assert_eq!(app.oneshot(api_client).await?.status(), 401);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct LoginRedirect {
    inner: Arc<Inner>,
}

#[derive(PartialEq, Eq)]
struct Inner {
    app_host: String,
    /// `{team_domain}/cdn-cgi/access/login/{app_host}?redirect_url=`
    login_prefix: String,
}

impl fmt::Debug for LoginRedirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRedirect")
            .field("app_host", &self.inner.app_host)
            .field("login", &self.inner.login_prefix)
            .finish()
    }
}

impl LoginRedirect {
    /// `team_domain` is the Access team, e.g. `https://acme.cloudflareaccess.com` (a trailing
    /// `/` is removed); `app_host` is the application's public host name as Access knows it,
    /// e.g. `admin.acme.com` (optionally with a `:port`). Both are checked to be bare host
    /// names: an error here is a configuration mistake, caught at start-up.
    pub fn new(team_domain: &str, app_host: &str) -> Result<Self, ConfigError> {
        let team = team_domain.trim_end_matches('/');
        let team_host = team.strip_prefix("https://").filter(|h| is_host(h)).ok_or_else(|| {
            ConfigError::new(
                "login_redirect",
                format!("team domain {team_domain:?} must be a bare https:// origin such as https://acme.cloudflareaccess.com"),
            )
        })?;
        if !is_host(app_host) {
            return Err(ConfigError::new(
                "login_redirect",
                format!(
                    "application host {app_host:?} must be a host name such as admin.acme.com (no scheme, no path)"
                ),
            ));
        }
        let app_host = app_host.to_ascii_lowercase();
        let login_prefix = format!("https://{team_host}/cdn-cgi/access/login/{app_host}?redirect_url=");
        Ok(Self { inner: Arc::new(Inner { app_host, login_prefix }) })
    }

    /// The application host the browser is sent back to.
    pub fn app_host(&self) -> &str {
        &self.inner.app_host
    }

    /// The redirect for a refused request, when it is one a browser should follow (see the type's
    /// docs); `None` keeps the refusal.
    pub(crate) fn respond<B: From<String>>(
        &self,
        rejection: &Rejection,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Option<Response<B>> {
        let redirects = matches!(rejection, Rejection::MissingCredential)
            && (method == Method::GET || method == Method::HEAD)
            && accepts_html(headers);
        if !redirects {
            return None;
        }
        let location = self.location(uri.path(), uri.query());
        // Made of a checked host and percent-encoding: always a valid value, but never panic.
        let location = HeaderValue::try_from(location).ok()?;
        let mut response = Response::new(B::from(String::new()));
        *response.status_mut() = StatusCode::FOUND;
        response.headers_mut().insert(header::LOCATION, location);
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Some(response)
    }

    /// The login URL sending the browser back to `path` and `query` on the application host.
    fn location(&self, path: &str, query: Option<&str>) -> String {
        let Inner { app_host, login_prefix } = &*self.inner;
        let target = match query {
            Some(q) if safe_target(path, query) => format!("https://{app_host}{path}?{q}"),
            None if safe_target(path, None) => format!("https://{app_host}{path}"),
            _ => format!("https://{app_host}/"),
        };
        let mut out = String::with_capacity(login_prefix.len() + target.len() * 3);
        out.push_str(login_prefix);
        percent_encode_component(&target, &mut out);
        out
    }
}

/// A host name, optionally with a port: letters, digits, `-` and `.`, then `:digits`.
fn is_host(s: &str) -> bool {
    let (name, port) = match s.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (s, None),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['.', '-'])
        && !name.ends_with('-')
        && !name.contains("..")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    name_ok && port_ok
}

/// Whether `path` and `query` may be sent back to: a path on this host and nothing that a
/// browser or a later hop could read as another origin.
fn safe_target(path: &str, query: Option<&str>) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return false };
    let rest = rest.as_bytes();
    let starts_like_authority = rest.first().is_some_and(|&b| b == b'/' || b == b'\\')
        || (rest.len() >= 3
            && rest[0] == b'%'
            && (rest[1..3].eq_ignore_ascii_case(b"2f") || rest[1..3].eq_ignore_ascii_case(b"5c")));
    let clean = |s: &str| s.bytes().all(|b| !b.is_ascii_control() && b != b'\\');
    let query_len = query.map_or(0, |q| 1 + q.len());
    path.len() + query_len <= MAX_TARGET_BYTES
        && !starts_like_authority
        && !path.contains("://")
        && clean(path)
        && query.is_none_or(clean)
}

/// Whether some `Accept` header lists `text/html` with `q` above zero. Wildcards (`*/*`,
/// `text/*`) do not count: every HTTP client sends those.
fn accepts_html(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("text/html") && quality(parts) > 0.0
        },
    )
}

/// The `q` parameter among a media range's parameters (1 when absent, 0 when unreadable).
fn quality<'a>(params: impl Iterator<Item = &'a str>) -> f32 {
    for param in params {
        let Some((name, value)) = param.split_once('=') else { continue };
        if name.trim().eq_ignore_ascii_case("q") {
            let value = value.trim();
            // RFC 9110 qvalue: `0`, `1` or up to three decimals; anything else counts as 0.
            let well_formed = !value.is_empty()
                && value.len() <= 5
                && value.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            return if well_formed { value.parse::<f32>().unwrap_or(0.0).clamp(0.0, 1.0) } else { 0.0 };
        }
    }
    1.0
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a query value.
fn percent_encode_component(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> LoginRedirect {
        LoginRedirect::new("https://acme.cloudflareaccess.com/", "Admin.Acme.com").unwrap()
    }

    fn target_of(path: &str, query: Option<&str>) -> String {
        let location = login().location(path, query);
        let encoded = location.split_once("?redirect_url=").unwrap().1;
        // Decode the component back: only `%XX` escapes were added.
        let mut bytes = Vec::new();
        let mut it = encoded.bytes();
        while let Some(b) = it.next() {
            if b == b'%' {
                let hex = [it.next().unwrap(), it.next().unwrap()];
                bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
            } else {
                bytes.push(b);
            }
        }
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_target_is_always_on_the_application_host() {
        assert_eq!(target_of("/a/b", Some("x=1&y=%2F")), "https://admin.acme.com/a/b?x=1&y=%2F");
        assert_eq!(target_of("/", None), "https://admin.acme.com/");
        for hostile in [
            "//evil.com",
            "//evil.com/x",
            "/\\evil.com",
            "/%2F%2Fevil.com",
            "/%2fevil.com",
            "/%5Cevil.com",
            "/x\\y",
            "/x\ny",
            "/http://evil.com",
            "evil.com",
            "",
        ] {
            assert_eq!(target_of(hostile, None), "https://admin.acme.com/", "{hostile:?}");
        }
        assert_eq!(target_of("/x", Some("a=\r\n")), "https://admin.acme.com/");
        // 2 KiB of path and query at most.
        assert_eq!(target_of(&format!("/{}", "a".repeat(2048)), None), "https://admin.acme.com/");
        assert_eq!(target_of(&format!("/{}", "a".repeat(2044)), Some("b=1")), "https://admin.acme.com/");
        assert_eq!(
            target_of(&format!("/{}", "a".repeat(2047)), None).len(),
            "https://admin.acme.com/".len() + 2047
        );
    }

    #[test]
    fn only_text_html_with_a_positive_q_asks_for_a_page() {
        let accepts = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::ACCEPT, HeaderValue::from_str(v).unwrap());
            }
            accepts_html(&headers)
        };
        assert!(accepts(&["text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"]));
        assert!(accepts(&["application/json", "TEXT/HTML ; charset=utf-8"]));
        assert!(accepts(&["text/html;q=0.001"]));
        assert!(accepts(&["text/html; Q=1"]));
        assert!(!accepts(&[]));
        assert!(!accepts(&["*/*"]));
        assert!(!accepts(&["text/*"]));
        assert!(!accepts(&["application/json"]));
        assert!(!accepts(&["text/html;q=0"]));
        assert!(!accepts(&["text/html;q=0.000"]));
        assert!(!accepts(&["text/html;q=abc"]));
        assert!(!accepts(&["text/html;q=-1"]));
        assert!(!accepts(&["text/htmlx"]));
    }

    #[test]
    fn team_domain_and_host_are_bare_names() {
        assert!(LoginRedirect::new("https://acme.cloudflareaccess.com", "admin.acme.com:8443").is_ok());
        for (team, host) in [
            ("http://acme.cloudflareaccess.com", "admin.acme.com"),
            ("https://acme.cloudflareaccess.com/x", "admin.acme.com"),
            ("https://", "admin.acme.com"),
            ("https://acme.cloudflareaccess.com", "https://admin.acme.com"),
            ("https://acme.cloudflareaccess.com", "admin.acme.com/x"),
            ("https://acme.cloudflareaccess.com", "admin@acme.com"),
            ("https://acme.cloudflareaccess.com", ""),
            ("https://acme.cloudflareaccess.com", "admin.acme.com:"),
            ("https://acme.cloudflareaccess.com", "admin.acme.com\r\nx: y"),
        ] {
            assert!(LoginRedirect::new(team, host).is_err(), "{team:?} {host:?}");
        }
    }
}
