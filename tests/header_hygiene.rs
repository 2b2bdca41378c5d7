//! Header hygiene, through real HTTP on loopback: an axum app whose
//! handler echoes every header it receives, behind the ztgate layer.
//!
//! The threat: a handler, or an upstream behind a reverse proxy, that reads identity from
//! headers (`Cf-Access-Authenticated-User-Email`, `cf-cert-*`, `X-Ztgate-*`) believes whoever
//! wrote them. The layer removes what a client could have forged, and sets ztgate's own only
//! from what it verified.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::http::HeaderMap;
use common::*;
use http::HeaderName;
use ztgate::dev::{DevKey, service_claims, user_claims};
use ztgate::identity::{ApiKeyAuth, ApiKeys, Attempt, ClientCertAuth, Mechanism, Requirement};
use ztgate::native::HttpFetcher;
use ztgate::request::{RequestFacts, RequestLimits};
use ztgate::{AccessConfig, BoxFuture, CustomPrincipal, Gate, HeaderHygiene, Principal, RoutePolicies};

const API_KEY: &str = "0123456789abcdef0123456789"; // pragma: allowlist secret
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

/// A client (redirects shown, not followed).
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
        .header("cf-access-jwt-assertion", "eyJhbGciOiJub25lIn0.eyJlbWFpbCI6ImFkbWluQGFjbWUuY29tIn0.");
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
