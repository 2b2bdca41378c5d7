//! Header hygiene and the login redirect, through real HTTP on loopback: an axum app whose
//! handler echoes every header it receives, behind the ztgate layer.
//!
//! The threat: a handler, or an upstream behind a reverse proxy, that reads identity from
//! headers (`Cf-Access-Authenticated-User-Email`, `cf-cert-*`, `X-Ztgate-*`) believes whoever
//! wrote them. The layer removes what a client could have forged, and sets ztgate's own only
//! from what it verified. A browser without a credential is sent to the Access login page of
//! the configured host, never one taken from the request.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::http::HeaderMap;
use common::*;
use http::HeaderName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ztgate::dev::{DevKey, service_claims, user_claims};
use ztgate::identity::{ApiKeyAuth, ApiKeys, Attempt, ClientCertAuth, Mechanism, Requirement};
use ztgate::native::HttpFetcher;
use ztgate::request::{RequestFacts, RequestLimits};
use ztgate::{
    AccessConfig, BoxFuture, CustomPrincipal, Gate, HeaderHygiene, LoginRedirect, Principal, RoutePolicies,
};

const API_KEY: &str = "0123456789abcdef0123456789"; // pragma: allowlist secret
const APP_HOST: &str = "admin.acme.com";
const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";
const LOGIN: &str =
    "https://acme-test.cloudflareaccess.com/cdn-cgi/access/login/admin.acme.com?redirect_url=";
const FINGERPRINT: &str = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12"; // pragma: allowlist secret

/// What the handler saw: every header name with all its values, in order.
type Seen = BTreeMap<String, Vec<String>>;

async fn echo(headers: HeaderMap) -> axum::Json<Seen> {
    let mut seen = Seen::new();
    for (name, value) in &headers {
        seen.entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into());
    }
    axum::Json(seen)
}

/// Serves the echo handler for every path (the fallback) behind `layer`, on 127.0.0.1:0.
macro_rules! serve {
    ($layer:expr) => {
        serve_app(Router::new().fallback(echo).layer($layer))
    };
}

async fn serve_app(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn seen(request: reqwest::RequestBuilder) -> Seen {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "the request was meant to be verified");
    response.json().await.unwrap()
}

/// The header's values as the handler saw them (empty: it never arrived).
fn values(seen: &Seen, name: &str) -> Vec<String> {
    seen.get(name).cloned().unwrap_or_default()
}

/// A signing key with its JWKS server, and a token for each caller.
struct Issuer {
    key: DevKey,
    jwks: JwksServer,
}

impl Issuer {
    async fn start() -> Self {
        let key = key("k1");
        let jwks = JwksServer::start(&[&key]).await;
        Self { key, jwks }
    }

    /// The usual test gate: TEAM/AUD, alice@acme.com and the `ci.access` service token.
    fn gate(&self) -> Gate {
        gate(&self.jwks.url(), clock())
    }

    fn access(&self) -> Requirement {
        let mechanism = Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
            .fetcher(Arc::new(HttpFetcher::new(&self.jwks.url()).unwrap()))
            .clock(clock())
            .policy(policy())
            .build_mechanism()
            .unwrap();
        Requirement::mechanism(mechanism)
    }

    fn alice(&self) -> String {
        self.key.sign(&user_claims(TEAM, AUD, "alice@acme.com", NOW, 60))
    }
}

fn api_key() -> Requirement {
    Requirement::mechanism(ApiKeyAuth::new(Arc::new(ApiKeys::parse(&format!("ops:{API_KEY}")).unwrap())))
}

/// Everything a client might send to pass for someone it is not.
fn forge(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request
        .header("Cf-Access-Authenticated-User-Email", "admin@acme.com")
        .header("X-Ztgate-Principal", "user:admin@acme.com")
        .header("X-Ztgate-Kind", "user")
        .header("X-Ztgate-Email", "admin@acme.com")
        .header("X-Ztgate-Via", r#"["access_jwt"]"#)
        .header("X-Ztgate-Anything-Else", "1")
        .header("cf-cert-presented", "true")
        .header("cf-cert-verified", "SUCCESS")
        .header("cf-cert-fingerprint-sha256", FINGERPRINT)
        .header("cf-cert-subject-dn", "CN=admin")
        .header("x-request-id", "kept: not an identity header")
}

const FORGEABLE: [&str; 10] = [
    "cf-access-authenticated-user-email",
    "cf-access-jwt-assertion",
    "x-ztgate-principal",
    "x-ztgate-kind",
    "x-ztgate-email",
    "x-ztgate-via",
    "x-ztgate-anything-else",
    "cf-cert-presented",
    "cf-cert-verified",
    "cf-cert-fingerprint-sha256",
];

fn assert_nothing_forged_arrived(seen: &Seen) {
    for name in FORGEABLE {
        assert_eq!(values(seen, name), Vec::<String>::new(), "{name} reached the handler: {seen:?}");
    }
    assert_eq!(values(seen, "cf-cert-subject-dn"), Vec::<String>::new());
    // The echo works: an ordinary header arrives.
    assert_eq!(values(seen, "x-request-id"), ["kept: not an identity header"]);
}

// ---------------------------------------------------------------------------------------------
// Header hygiene.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_handler() {
    let issuer = Issuer::start().await;
    let base = serve!(issuer.gate()).await;
    let request =
        client().get(format!("{base}/admin/whoami")).header("cf-access-jwt-assertion", issuer.alice());
    assert_nothing_forged_arrived(&seen(forge(request)).await);
}

/// A route proven by an API key never looks at the Access assertion: without hygiene, a forged
/// one (and a forged email) would reach a handler that trusts them.
#[tokio::test]
async fn spoofed_access_headers_on_an_api_key_route_never_reach_the_handler() {
    let base = serve!(Gate::new(api_key())).await;
    let request = client()
        .get(format!("{base}/ops/stats"))
        .header("x-api-key", API_KEY)
        .header("cf-access-jwt-assertion", "eyJhbGciOiJub25lIn0.eyJlbWFpbCI6ImFkbWluQGFjbWUuY29tIn0."); // pragma: allowlist secret
    assert_nothing_forged_arrived(&seen(forge(request)).await);
}

/// Public routes are verified too (as anonymous), so their handlers get the same hygiene; and a
/// route table applies it to every rule, whenever the rule was declared.
#[tokio::test]
async fn spoofed_identity_headers_never_reach_handlers_of_a_route_table() {
    let issuer = Issuer::start().await;
    let policies = RoutePolicies::new()
        .route("GET", "/healthz", Requirement::public())
        .unwrap()
        .route("GET", "/admin/{*rest}", issuer.access())
        .unwrap()
        .route("GET", "/ops/{*rest}", api_key())
        .unwrap()
        .with_header_hygiene(HeaderHygiene::new().strip_header(HeaderName::from_static("x-remote-user")))
        .route("GET", "/later/{*rest}", Requirement::public())
        .unwrap();
    let base = serve!(policies).await;
    let client = client();
    let requests = [
        client.get(format!("{base}/healthz")),
        client.get(format!("{base}/admin/whoami")).header("cf-access-jwt-assertion", issuer.alice()),
        client.get(format!("{base}/ops/stats")).header("x-api-key", API_KEY),
        client.get(format!("{base}/later/x")),
    ];
    for request in requests {
        let seen = seen(forge(request).header("x-remote-user", "admin")).await;
        assert_nothing_forged_arrived(&seen);
        assert_eq!(values(&seen, "x-remote-user"), Vec::<String>::new(), "{seen:?}");
    }
}

/// A reverse proxy in front of the app sets `X-Remote-User`; a client that reaches the layer
/// with its own must not be believed.
#[tokio::test]
async fn operator_named_identity_header_never_reaches_the_handler() {
    let named = HeaderHygiene::new().strip_header(HeaderName::from_static("x-remote-user"));
    assert_eq!(named.stripped_headers(), [HeaderName::from_static("x-remote-user")]);
    let stripping = serve!(Gate::public().with_header_hygiene(named)).await;
    let default = serve!(Gate::public()).await;
    let forged = |base: &str| client().get(format!("{base}/")).header("X-Remote-User", "admin");
    assert_eq!(values(&seen(forged(&stripping)).await, "x-remote-user"), Vec::<String>::new());
    // Not one of the built-in names: only the operator's setting removes it.
    assert_eq!(values(&seen(forged(&default)).await, "x-remote-user"), ["admin"]);
}

/// On a hop the operator trusts (`trust_client_cert_headers`), the `cf-cert-*` headers are
/// Cloudflare's and stay; on any other they are the client's and go. The Access identity
/// headers go either way.
#[tokio::test]
async fn client_cert_headers_are_kept_only_from_a_trusted_hop() {
    let trusted = RequestLimits { trust_client_cert_headers: true, ..RequestLimits::default() };
    let mtls = Requirement::mechanism(ClientCertAuth::new().pin_fingerprints([FINGERPRINT]));
    let trusted_base = serve!(Gate::with_limits(mtls, trusted)).await;
    let untrusted_base = serve!(Gate::public()).await;
    let with_cert = |base: &str| {
        forge(client().get(format!("{base}/mtls/whoami")))
            .header("cf-cert-revoked", "0")
            .header("cf-cert-issuer-dn", "CN=Acme Client CA")
    };

    let seen_trusted = seen(with_cert(&trusted_base)).await;
    assert_eq!(values(&seen_trusted, "cf-cert-verified"), ["SUCCESS"]);
    assert_eq!(values(&seen_trusted, "cf-cert-fingerprint-sha256"), [FINGERPRINT]);
    assert_eq!(values(&seen_trusted, "cf-cert-issuer-dn"), ["CN=Acme Client CA"]);
    assert_eq!(values(&seen_trusted, "cf-access-authenticated-user-email"), Vec::<String>::new());
    assert_eq!(values(&seen_trusted, "x-ztgate-principal"), Vec::<String>::new());

    let seen_untrusted = seen(with_cert(&untrusted_base)).await;
    for name in ["cf-cert-verified", "cf-cert-fingerprint-sha256", "cf-cert-issuer-dn", "cf-cert-revoked"] {
        assert_eq!(values(&seen_untrusted, name), Vec::<String>::new(), "{name}");
    }
}

/// With forwarding on, an upstream that reads `X-Ztgate-*` reads what was proven: one value
/// each, whatever the client sent under the same names.
#[tokio::test]
async fn forwarded_identity_headers_are_the_verified_ones_not_the_clients() {
    let issuer = Issuer::start().await;
    let forwarding = HeaderHygiene::new().forward_verified_identity();
    assert!(forwarding.forwards_verified_identity() && !HeaderHygiene::new().forwards_verified_identity());
    let base = serve!(issuer.gate().with_header_hygiene(forwarding.clone())).await;
    let alice =
        forge(client().get(format!("{base}/admin"))).header("cf-access-jwt-assertion", issuer.alice());
    let seen_alice = seen(alice).await;
    assert_eq!(values(&seen_alice, "x-ztgate-principal"), ["user:alice@acme.com"]);
    assert_eq!(values(&seen_alice, "x-ztgate-kind"), ["user"]);
    assert_eq!(values(&seen_alice, "x-ztgate-email"), ["alice@acme.com"]);
    assert_eq!(values(&seen_alice, "x-ztgate-via"), [r#"["access_jwt"]"#]);
    assert_eq!(values(&seen_alice, "x-ztgate-anything-else"), Vec::<String>::new());
    assert_eq!(values(&seen_alice, "cf-access-authenticated-user-email"), Vec::<String>::new());

    // A service token is not a user: no email header, even though the client sent one.
    let ci = issuer.key.sign(&service_claims(TEAM, AUD, "ci.access", NOW, 60));
    let service = forge(client().get(format!("{base}/admin"))).header("cf-access-jwt-assertion", ci);
    let seen_service = seen(service).await;
    assert_eq!(values(&seen_service, "x-ztgate-principal"), ["service:ci.access"]);
    assert_eq!(values(&seen_service, "x-ztgate-kind"), ["service"]);
    assert_eq!(values(&seen_service, "x-ztgate-email"), Vec::<String>::new());

    // Two mechanisms: the list, in order, as a JSON array.
    let both = Gate::new(Requirement::all_of([issuer.access(), api_key()])).with_header_hygiene(forwarding);
    let both_base = serve!(both).await;
    let request = forge(client().get(format!("{both_base}/admin")))
        .header("cf-access-jwt-assertion", issuer.alice())
        .header("x-api-key", API_KEY);
    let seen_both = seen(request).await;
    assert_eq!(values(&seen_both, "x-ztgate-via"), [r#"["access_jwt","api_key"]"#]);
    assert_eq!(values(&seen_both, "x-ztgate-principal"), ["user:alice@acme.com"]);
}

#[tokio::test]
async fn forwarded_groups_are_the_identity_endpoints_not_the_clients() {
    let issuer = Issuer::start().await;
    let identity = ztgate::dev::identity_json("alice@acme.com", &["ops", "staff"], &["hwk"]).to_string();
    let id = JwksServer::start_with_body(identity).await;
    let access = Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
        .fetcher(Arc::new(HttpFetcher::new(&issuer.jwks.url()).unwrap()))
        .identity_url(id.url_for("/cdn-cgi/access/get-identity"))
        .clock(clock())
        .policy(ztgate::Policy::new().allow_groups(["ops"]))
        .build()
        .unwrap();
    let base = serve!(access.with_header_hygiene(HeaderHygiene::new().forward_verified_identity())).await;
    let request = forge(client().get(format!("{base}/admin")))
        .header("x-ztgate-groups", r#"["admins"]"#)
        .header("cf-access-jwt-assertion", issuer.alice());
    let with_identity = seen(request).await;
    assert_eq!(values(&with_identity, "x-ztgate-groups"), [r#"["ops","staff"]"#]);
    // Without a fetched identity (a route that needed none), no groups header at all.
    let plain =
        serve!(issuer.gate().with_header_hygiene(HeaderHygiene::new().forward_verified_identity())).await;
    let request = forge(client().get(format!("{plain}/admin")))
        .header("x-ztgate-groups", r#"["admins"]"#)
        .header("cf-access-jwt-assertion", issuer.alice());
    assert_eq!(values(&seen(request).await, "x-ztgate-groups"), Vec::<String>::new());
}

/// A mechanism of your own proves an id with a line break in it. Set as is, it would split
/// the header (or panic building it); it arrives percent-encoded instead, one value.
#[derive(Debug)]
struct LineBreakDevice;

impl Mechanism for LineBreakDevice {
    fn name(&self) -> &'static str {
        "device"
    }
    fn attempt<'a>(&'a self, _facts: &'a RequestFacts) -> BoxFuture<'a, Attempt> {
        let principal = Principal::Custom(CustomPrincipal::new("device", "d1\r\nX-Ztgate-Kind: user"));
        Box::pin(std::future::ready(Attempt::Verified(principal)))
    }
}

#[tokio::test]
async fn verified_value_with_a_line_break_is_percent_encoded_never_a_split_header() {
    let gate = Gate::new(Requirement::mechanism(LineBreakDevice))
        .with_header_hygiene(HeaderHygiene::new().forward_verified_identity());
    let base = serve!(gate).await;
    let seen = seen(client().get(format!("{base}/"))).await;
    assert_eq!(values(&seen, "x-ztgate-principal"), ["custom:device:d1%0D%0AX-Ztgate-Kind:%20user"]);
    assert_eq!(values(&seen, "x-ztgate-kind"), ["custom"]);
    assert_eq!(values(&seen, "x-ztgate-via"), [r#"["device"]"#]);
}

/// An operator who opts out keeps the Access headers as sent (for an upstream that verifies
/// the assertion itself), but never the client's `X-Ztgate-*`.
#[tokio::test]
async fn opting_out_keeps_access_headers_but_never_forged_ztgate_headers() {
    let issuer = Issuer::start().await;
    let gate = issuer.gate().with_header_hygiene(HeaderHygiene::new().keep_unverified_identity_headers());
    let base = serve!(gate).await;
    let token = issuer.alice();
    let request = forge(client().get(format!("{base}/admin"))).header("cf-access-jwt-assertion", &token);
    let seen = seen(request).await;
    assert_eq!(values(&seen, "cf-access-jwt-assertion"), [token]);
    assert_eq!(values(&seen, "cf-access-authenticated-user-email"), ["admin@acme.com"]);
    assert_eq!(values(&seen, "cf-cert-verified"), ["SUCCESS"]);
    assert_eq!(values(&seen, "x-ztgate-principal"), Vec::<String>::new());
    assert_eq!(values(&seen, "x-ztgate-anything-else"), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Login redirect.
// ---------------------------------------------------------------------------------------------

fn login() -> LoginRedirect {
    LoginRedirect::new(TEAM, APP_HOST).unwrap()
}

/// Status, `Location` and `Cache-Control` of the answer.
async fn answer(request: reqwest::RequestBuilder) -> (u16, Option<String>, Option<String>) {
    let response = request.send().await.unwrap();
    let header =
        |name| response.headers().get(name).map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), header("location"), header("cache-control"))
}

fn redirected_to(target: &str) -> (u16, Option<String>, Option<String>) {
    (302, Some(format!("{LOGIN}{target}")), Some("no-store".to_owned()))
}

fn refused(status: u16) -> (u16, Option<String>, Option<String>) {
    (status, None, Some("no-store".to_owned()))
}

#[tokio::test]
async fn browser_without_a_credential_is_sent_to_the_access_login_for_the_same_page() {
    let issuer = Issuer::start().await;
    let base = serve!(issuer.gate().with_login_redirect(login())).await;
    let client = client();
    let page = format!("{base}/admin/reports?week=12&q=a%20b");
    let expected = "https%3A%2F%2Fadmin.acme.com%2Fadmin%2Freports%3Fweek%3D12%26q%3Da%2520b";
    assert_eq!(answer(client.get(&page).header("accept", BROWSER)).await, redirected_to(expected));
    assert_eq!(answer(client.head(&page).header("accept", BROWSER)).await, redirected_to(expected));
    // The request's Host names nothing: the login page and the way back are configuration.
    let evil_host = client.get(&page).header("accept", BROWSER).header("host", "evil.example");
    assert_eq!(answer(evil_host).await, redirected_to(expected));
}

#[tokio::test]
async fn protocol_relative_path_redirects_to_the_application_root_not_another_host() {
    let base = serve!(Gate::new(api_key()).with_login_redirect(login())).await;
    let root = "https%3A%2F%2Fadmin.acme.com%2F";
    for path in ["//evil.com", "//evil.com/x?y=1", "/%2F%2Fevil.com", "/%5Cevil.com"] {
        let request = client().get(format!("{base}{path}")).header("accept", BROWSER);
        assert_eq!(answer(request).await, redirected_to(root), "{path}");
    }
    // A backslash cannot be sent through a URL library (it reads it as `/`): send it raw.
    let raw = raw_get(&base, "/\\evil.com").await.to_ascii_lowercase();
    assert!(raw.starts_with("http/1.1 302 found\r\n"), "{raw}");
    assert!(raw.contains(&format!("\r\nlocation: {LOGIN}{root}\r\n").to_ascii_lowercase()), "{raw}");
    // A target too long to send back: the root.
    let long = client().get(format!("{base}/{}", "a".repeat(2100))).header("accept", BROWSER);
    assert_eq!(answer(long).await, redirected_to(root));
}

/// `GET {path}` with a browser's `Accept`, as raw HTTP/1.1 bytes; the response head.
async fn raw_get(base: &str, path: &str) -> String {
    let addr = base.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/html\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// `curl`, `fetch` and SDKs send `*/*` or ask for JSON: they get the 401 they can act on.
#[tokio::test]
async fn api_clients_without_a_credential_get_401_not_a_login_page() {
    let issuer = Issuer::start().await;
    let base = serve!(issuer.gate().with_login_redirect(login())).await;
    let client = client();
    let url = format!("{base}/admin/whoami");
    for accept in [Some("application/json"), Some("*/*"), Some("text/*"), Some("text/html;q=0"), None] {
        let mut request = client.get(&url);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        assert_eq!(answer(request).await, refused(401), "{accept:?}");
    }
}

/// A bad credential is not a missing one: the browser learns why (401), and a token that
/// will never verify cannot bounce between the app and the login page forever.
#[tokio::test]
async fn browser_with_an_invalid_or_expired_token_gets_401_not_a_redirect() {
    let issuer = Issuer::start().await;
    let base = serve!(issuer.gate().with_login_redirect(login())).await;
    let client = client();
    let expired = issuer.key.sign(&user_claims(TEAM, AUD, "alice@acme.com", NOW - 3600, 60));
    let other_key = key("k1").sign(&user_claims(TEAM, AUD, "alice@acme.com", NOW, 60));
    let mallory = issuer.key.sign(&user_claims(TEAM, AUD, "mallory@acme.com", NOW, 60));
    for (token, status) in [(expired, 401), (other_key, 401), ("not.a.jwt".to_owned(), 401), (mallory, 403)] {
        let request = client
            .get(format!("{base}/admin/whoami"))
            .header("accept", BROWSER)
            .header("cf-access-jwt-assertion", token);
        assert_eq!(answer(request).await, refused(status));
    }
    let cookie = client
        .get(format!("{base}/admin/whoami"))
        .header("accept", BROWSER)
        .header("cookie", "CF_Authorization=garbage");
    assert_eq!(answer(cookie).await, refused(401));
}

/// A redirected POST would lose its body or be replayed by the browser after login.
#[tokio::test]
async fn browser_post_without_a_credential_gets_401_not_a_redirect() {
    let issuer = Issuer::start().await;
    let base = serve!(issuer.gate().with_login_redirect(login())).await;
    let client = client();
    for request in [
        client.post(format!("{base}/admin/notes")),
        client.put(format!("{base}/admin/notes")),
        client.delete(format!("{base}/admin/notes/1")),
    ] {
        assert_eq!(answer(request.header("accept", BROWSER)).await, refused(401));
    }
}

/// Only the routes declared with a login redirect redirect; the default is the 401.
#[tokio::test]
async fn login_redirect_applies_only_where_declared() {
    let issuer = Issuer::start().await;
    let policies = RoutePolicies::new()
        .route_with_login_redirect("GET", "/admin/{*rest}", issuer.access(), login())
        .unwrap()
        .route("GET", "/api/{*rest}", issuer.access())
        .unwrap();
    let base = serve!(policies).await;
    let client = client();
    let browse = |path: &str| client.get(format!("{base}{path}")).header("accept", BROWSER);
    assert_eq!(answer(browse("/admin/x")).await, redirected_to("https%3A%2F%2Fadmin.acme.com%2Fadmin%2Fx"));
    assert_eq!(answer(browse("/api/x")).await, refused(401));
    assert_eq!(answer(browse("/undeclared")).await, refused(403));
    let gate_default = serve!(issuer.gate()).await;
    let request = client.get(format!("{gate_default}/admin/x")).header("accept", BROWSER);
    assert_eq!(answer(request).await, refused(401));
}
