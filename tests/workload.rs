//! Outbound workload identity (`ztgate::workload`) through real parts: keys made at test time
//! (aws-lc generates them, jwt-simple signs with them), the discovery document and JWKS served
//! over HTTP on 127.0.0.1 by axum and by plain hyper, tokens verified by ztgate's own JWKS
//! cache and RS256 check and, independently, by jsonwebtoken; and a fake STS on 127.0.0.1 that
//! counts its requests and answers, fails, stalls or misbehaves as each case needs.
//!
//! The round trip against a real STS implementation (moto's server) is `tests/workload_sts.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use ztgate::clock::FixedClock;
use ztgate::identity::{JwksCache, JwksConfig};
use ztgate::native::HttpFetcher;
use ztgate::secrets::{EnvSecret, Secret, SecretError, SecretFuture, SecretSource, StaticSecret};
use ztgate::workload::{
    Algorithm, AwsCredentials, IssueError, IssuerConfig, PreviousKey, StsClient, StsConfig, StsError,
    WebIdentityCredentials, WorkloadIssuer,
};

/// 2030-01-01T00:00:00Z.
const NOW: u64 = 1_893_456_000;
const SUBJECT: &str = "system:serviceaccount:billing:exporter";
const AWS_AUDIENCE: &str = "sts.amazonaws.com";
const ROLE: &str = "arn:aws:iam::123456789012:role/billing-exporter";
const SESSION: &str = "billing-exporter";

// ---------------------------------------------------------------------------------------------
// Keys, made at test time by aws-lc (a different library from the one that signs).

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

fn rsa_pem() -> String {
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der = key.as_der().unwrap();
    pem("PRIVATE KEY", der.as_ref())
}

fn ec_pem() -> String {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    pem("PRIVATE KEY", doc.as_ref())
}

fn clock() -> Arc<FixedClock> {
    Arc::new(FixedClock::at(NOW))
}

fn config(issuer: &str) -> IssuerConfig {
    IssuerConfig::new(issuer, SUBJECT, [AWS_AUDIENCE]).unwrap()
}

fn issuer_with(issuer: &str, algorithm: Algorithm, key: String, clock: Arc<FixedClock>) -> WorkloadIssuer {
    WorkloadIssuer::new(config(issuer), algorithm, StaticSecret::new(key), clock)
}

/// A secret source whose value the test changes, counting its reads.
#[derive(Debug, Default)]
struct Swappable {
    value: Mutex<String>,
    reads: AtomicUsize,
}

impl Swappable {
    fn new(value: String) -> Arc<Self> {
        Arc::new(Self { value: Mutex::new(value), reads: AtomicUsize::new(0) })
    }
    fn set(&self, value: String) {
        *self.value.lock().unwrap() = value;
    }
    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

impl SecretSource for Swappable {
    fn get(&self) -> SecretFuture<'_> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let value = self.value.lock().unwrap().clone();
        Box::pin(async move { Ok(Secret::from(value)) })
    }
}

fn segments(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let decode = |s: &str| serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
    (decode(parts[0]), decode(parts[1]))
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
fn thumbprint(jwk: &Value) -> String {
    let canonical = match jwk["kty"].as_str().unwrap() {
        "RSA" => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            jwk["e"].as_str().unwrap(),
            jwk["n"].as_str().unwrap()
        ),
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["crv"].as_str().unwrap(),
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        ),
        other => panic!("unexpected kty {other}"),
    };
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// The documents over HTTP on loopback.

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
}

/// Binds first, so the issuer URL can name the port.
async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn serve_axum(listener: TcpListener, app: axum::Router) {
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

/// The service alone behind hyper's HTTP/1.1 connection builder: no router.
fn serve_hyper(listener: TcpListener, service: ztgate::workload::DiscoveryService) {
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        tower::ServiceExt::oneshot(service.clone(), request)
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
}

/// Fetches `{issuer}/.well-known/openid-configuration`, checks it, and returns it.
async fn discover(issuer: &str) -> Value {
    let response = http().get(format!("{issuer}/.well-known/openid-configuration")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "public, max-age=3600");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["issuer"], issuer);
    assert_eq!(document["jwks_uri"], format!("{issuer}/.well-known/jwks.json"));
    assert_eq!(document["response_types_supported"], serde_json::json!(["id_token"]));
    assert_eq!(document["subject_types_supported"], serde_json::json!(["public"]));
    for claim in ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"] {
        assert!(document["claims_supported"].as_array().unwrap().iter().any(|c| c == claim), "{claim}");
    }
    document
}

async fn jwks(jwks_uri: &str) -> Value {
    let response = http().get(jwks_uri).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    response.json().await.unwrap()
}

/// Verifies an RS256 token with ztgate's own parts: the JWKS fetched by the native fetcher,
/// kept by the key filter of `JwksCache`, and the RS256 check of the compiled-in backend.
async fn ztgate_verifies(jwks_uri: &str, token: &str) -> bool {
    let fetcher = HttpFetcher::new(jwks_uri).unwrap();
    let cache =
        JwksCache::new(Arc::new(fetcher), Arc::new(ztgate::clock::SystemClock), JwksConfig::default());
    let (header, _) = segments(token);
    assert_eq!(header["alg"], "RS256");
    let Ok(key) = cache.key(header["kid"].as_str().unwrap()).await else { return false };
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    key.verify(signing_input.as_bytes(), signature)
}

/// Verifies a token with jsonwebtoken against the served JWK (exp checked against the test's clock).
fn jsonwebtoken_verifies(
    jwk: &Value,
    token: &str,
    issuer: &str,
) -> Result<Value, jsonwebtoken::errors::Error> {
    let (algorithm, key) = match jwk["kty"].as_str().unwrap() {
        "RSA" => (
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::DecodingKey::from_rsa_components(
                jwk["n"].as_str().unwrap(),
                jwk["e"].as_str().unwrap(),
            )?,
        ),
        _ => (
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::DecodingKey::from_ec_components(
                jwk["x"].as_str().unwrap(),
                jwk["y"].as_str().unwrap(),
            )?,
        ),
    };
    let mut validation = jsonwebtoken::Validation::new(algorithm);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[AWS_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation)?;
    let exp = data.claims["exp"].as_u64().unwrap();
    assert!(exp > NOW, "expired by the test's clock");
    Ok(data.claims)
}

fn key_for<'a>(jwks: &'a Value, kid: &str) -> &'a Value {
    jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid).expect("the kid is published")
}

#[tokio::test]
async fn an_rs256_token_verifies_with_ztgate_own_jwks_cache_against_the_served_documents() {
    let (listener, addr) = bind().await;
    let issuer_url = format!("http://{addr}");
    let issuer = issuer_with(&issuer_url, Algorithm::Rs256, rsa_pem(), clock());
    let service = issuer.discovery_service();
    let app = axum::Router::new()
        .route_service("/.well-known/openid-configuration", service.clone())
        .route_service("/.well-known/jwks.json", service);
    serve_axum(listener, app);

    let token = issuer.sign().await.unwrap();
    let document = discover(&issuer_url).await;
    assert_eq!(document["id_token_signing_alg_values_supported"], serde_json::json!(["RS256"]));
    let jwks_uri = document["jwks_uri"].as_str().unwrap();
    let keys = jwks(jwks_uri).await;
    let jwk = key_for(&keys, token.key_id());
    assert_eq!((&jwk["kty"], &jwk["alg"], &jwk["use"]), (&"RSA".into(), &"RS256".into(), &"sig".into()));
    assert!(jwk.get("d").is_none() && jwk.get("p").is_none(), "no private member is published");
    assert_eq!(token.key_id(), thumbprint(jwk), "the kid is the RFC 7638 thumbprint");

    assert!(ztgate_verifies(jwks_uri, token.expose()).await, "ztgate's verifier refused the token");
    let claims = jsonwebtoken_verifies(jwk, token.expose(), &issuer_url).unwrap();
    assert_eq!(claims["sub"], SUBJECT);

    // A token with one flipped signature byte, or signed by another key, is refused.
    let (input, signature) = token.expose().rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[10] ^= 1;
    let tampered = format!("{input}.{}", URL_SAFE_NO_PAD.encode(bytes));
    assert!(!ztgate_verifies(jwks_uri, &tampered).await);
    let stranger = issuer_with(&issuer_url, Algorithm::Rs256, rsa_pem(), clock()).sign().await.unwrap();
    assert!(!ztgate_verifies(jwks_uri, stranger.expose()).await, "a key the JWKS does not publish");
}

#[tokio::test]
async fn an_es256_token_verifies_independently_with_jsonwebtoken_under_an_issuer_path_on_plain_hyper() {
    // Plain hyper sees the whole path: the issuer's `/workload` prefix included.
    let (listener, addr) = bind().await;
    let issuer_url = format!("http://{addr}/workload");
    let issuer = issuer_with(&issuer_url, Algorithm::Es256, ec_pem(), clock());
    serve_hyper(listener, issuer.discovery_service());

    let token = issuer.sign().await.unwrap();
    let document = discover(&issuer_url).await;
    assert_eq!(document["id_token_signing_alg_values_supported"], serde_json::json!(["ES256"]));
    let keys = jwks(document["jwks_uri"].as_str().unwrap()).await;
    let jwk = key_for(&keys, token.key_id());
    assert_eq!((&jwk["kty"], &jwk["crv"], &jwk["alg"]), (&"EC".into(), &"P-256".into(), &"ES256".into()));
    assert!(jwk.get("d").is_none(), "no private member is published");
    assert_eq!(token.key_id(), thumbprint(jwk));
    let claims = jsonwebtoken_verifies(jwk, token.expose(), &issuer_url).unwrap();
    assert_eq!(claims["iss"], issuer_url);

    // The same service nested by axum, which strips the issuer's path before it.
    let (listener, addr) = bind().await;
    let nested_url = format!("http://{addr}/workload");
    let nested = issuer_with(&nested_url, Algorithm::Es256, ec_pem(), clock());
    serve_axum(listener, axum::Router::new().nest_service("/workload", nested.discovery_service()));
    let document = discover(&nested_url).await;
    let keys = jwks(document["jwks_uri"].as_str().unwrap()).await;
    let token = nested.sign().await.unwrap();
    jsonwebtoken_verifies(key_for(&keys, token.key_id()), token.expose(), &nested_url).unwrap();
    // A token verified against the wrong issuer is refused (the check is live).
    assert!(jsonwebtoken_verifies(key_for(&keys, token.key_id()), token.expose(), &issuer_url).is_err());
}

#[tokio::test]
async fn other_paths_are_404_and_other_methods_405() {
    let (listener, addr) = bind().await;
    let issuer_url = format!("http://{addr}");
    let issuer = issuer_with(&issuer_url, Algorithm::Es256, ec_pem(), clock());
    serve_hyper(listener, issuer.discovery_service());
    let client = http();
    for path in ["/", "/.well-known/", "/.well-known/jwks", "/.well-known/openid-configuration/x", "/admin"] {
        let response = client.get(format!("{issuer_url}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
    for method in [http::Method::POST, http::Method::PUT, http::Method::DELETE, http::Method::HEAD] {
        for path in ["/.well-known/openid-configuration", "/.well-known/jwks.json"] {
            let response =
                client.request(method.clone(), format!("{issuer_url}{path}")).send().await.unwrap();
            assert_eq!(response.status(), 405, "{method} {path}");
            assert_eq!(response.headers()["allow"], "GET");
        }
    }
}

#[tokio::test]
async fn the_jwks_is_503_while_the_signing_key_cannot_be_read_and_discovery_still_answers() {
    let (listener, addr) = bind().await;
    let issuer_url = format!("http://{addr}");
    let unset = EnvSecret::new("ZTGATE_TEST_WORKLOAD_KEY_THAT_IS_NEVER_SET");
    let issuer = WorkloadIssuer::new(config(&issuer_url), Algorithm::Es256, unset, clock());
    serve_hyper(listener, issuer.discovery_service());
    let response = http().get(format!("{issuer_url}/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.text().await.unwrap(), r#"{"code":"keys_unavailable"}"#);
    discover(&issuer_url).await;
    assert!(matches!(issuer.sign().await, Err(IssueError::Secret(SecretError::Missing(_)))));

    // A key store that never answers: 503 after a bound, not a request held open for ever.
    #[derive(Debug)]
    struct Silent;
    impl SecretSource for Silent {
        fn get(&self) -> SecretFuture<'_> {
            Box::pin(std::future::pending())
        }
    }
    let (listener, addr) = bind().await;
    let silent = WorkloadIssuer::new(config(&format!("http://{addr}")), Algorithm::Es256, Silent, clock());
    serve_hyper(listener, silent.discovery_service());
    let response = http().get(format!("http://{addr}/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn tokens_carry_the_configured_claims_a_bounded_lifetime_and_a_fresh_jti() {
    let clock = clock();
    let config = IssuerConfig::new("https://id.example.com/", SUBJECT, ["sts.amazonaws.com", "other"])
        .unwrap()
        .with_ttl(Duration::from_secs(600))
        .unwrap();
    let issuer = WorkloadIssuer::new(config, Algorithm::Es256, StaticSecret::new(ec_pem()), clock.clone());
    let first = issuer.sign().await.unwrap();
    let (header, claims) = segments(first.expose());
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], first.key_id());
    assert_eq!(claims["iss"], "https://id.example.com", "the trailing slash is not part of iss");
    assert_eq!(claims["sub"], SUBJECT);
    let mut audiences: Vec<&str> =
        claims["aud"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    audiences.sort_unstable();
    assert_eq!(audiences, ["other", "sts.amazonaws.com"]);
    assert_eq!((claims["iat"].as_u64(), claims["nbf"].as_u64()), (Some(NOW), Some(NOW)));
    assert_eq!(claims["exp"].as_u64(), Some(NOW + 600));
    assert_eq!((first.issued_at(), first.expires_at()), (NOW, NOW + 600));
    assert_eq!(URL_SAFE_NO_PAD.decode(claims["jti"].as_str().unwrap()).unwrap().len(), 16);
    assert_eq!(claims["jti"], first.jwt_id());
    clock.advance(Duration::from_secs(30));
    let second = issuer.sign().await.unwrap();
    assert_ne!(second.jwt_id(), first.jwt_id(), "every token has its own jti");
    assert_eq!(segments(second.expose()).1["iat"].as_u64(), Some(NOW + 30), "time comes from the clock");
    // One audience is a string (AWS compares `aud` as a string).
    let single = issuer_with("https://id.example.com", Algorithm::Es256, ec_pem(), clock.clone());
    assert_eq!(segments(single.sign().await.unwrap().expose()).1["aud"], AWS_AUDIENCE);
    // More than an hour is refused.
    assert!(
        IssuerConfig::new("https://id.example.com", SUBJECT, [AWS_AUDIENCE])
            .unwrap()
            .with_ttl(Duration::from_secs(3601))
            .is_err()
    );
}

#[tokio::test]
async fn a_rotation_publishes_the_previous_key_so_tokens_of_both_verify() {
    let (listener, addr) = bind().await;
    let issuer_url = format!("http://{addr}");
    let (old_pem, new_pem) = (rsa_pem(), rsa_pem());
    let old_token =
        issuer_with(&issuer_url, Algorithm::Rs256, old_pem.clone(), clock()).sign().await.unwrap();

    let previous = vec![PreviousKey::new(Algorithm::Rs256, StaticSecret::new(old_pem))];
    let rotated = WorkloadIssuer::with_previous_keys(
        config(&issuer_url),
        Algorithm::Rs256,
        StaticSecret::new(new_pem),
        previous,
        clock(),
    )
    .unwrap();
    serve_hyper(listener, rotated.discovery_service());
    let new_token = rotated.sign().await.unwrap();
    assert_ne!(new_token.key_id(), old_token.key_id());
    let jwks_uri = format!("{issuer_url}/.well-known/jwks.json");
    let keys = jwks(&jwks_uri).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    assert_eq!(keys["keys"][0]["kid"], new_token.key_id(), "the signing key comes first");
    assert!(ztgate_verifies(&jwks_uri, new_token.expose()).await);
    assert!(ztgate_verifies(&jwks_uri, old_token.expose()).await, "the previous key's tokens still verify");

    // Without the previous key, its tokens are refused.
    let (listener, addr) = bind().await;
    let bare_url = format!("http://{addr}");
    serve_hyper(listener, issuer_with(&bare_url, Algorithm::Rs256, rsa_pem(), clock()).discovery_service());
    assert!(!ztgate_verifies(&format!("{bare_url}/.well-known/jwks.json"), old_token.expose()).await);

    // A previous key may be given as the public JWK the old JWKS published (an RSA key beside
    // an ES256 signing key here), under a fixed kid; a public PEM, or a JWK that is not a key
    // for the algorithm, is left out; more than four previous keys are refused.
    let old = issuer_with("https://id.example.com", Algorithm::Rs256, rsa_pem(), clock());
    let old_jwks: Value = serde_json::from_str(&old.jwks_document().await.unwrap()).unwrap();
    let old_jwk = old_jwks["keys"][0].to_string();
    let public_pem = {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der = aws_lc_rs::signature::KeyPair::public_key(&pair).as_der().unwrap();
        pem("PUBLIC KEY", der.as_ref())
    };
    let weak_jwk = old_jwk.replace(old_jwks["keys"][0]["n"].as_str().unwrap(), "AQAB");
    let with_public = WorkloadIssuer::with_previous_keys(
        config("https://id.example.com"),
        Algorithm::Es256,
        StaticSecret::new(ec_pem()),
        vec![
            PreviousKey::new(Algorithm::Rs256, StaticSecret::new(old_jwk.clone()))
                .with_key_id("old-2029")
                .unwrap(),
            PreviousKey::new(Algorithm::Rs256, StaticSecret::new(public_pem)),
            PreviousKey::new(Algorithm::Es256, StaticSecret::new(old_jwk)),
            PreviousKey::new(Algorithm::Rs256, StaticSecret::new(weak_jwk)),
        ],
        clock(),
    )
    .unwrap();
    let document: Value = serde_json::from_str(&with_public.jwks_document().await.unwrap()).unwrap();
    assert_eq!(document["keys"].as_array().unwrap().len(), 2, "{document}");
    assert_eq!(document["keys"][1]["kid"], "old-2029");
    assert_eq!(document["keys"][1]["n"], old_jwks["keys"][0]["n"]);
    assert_eq!((&document["keys"][1]["kty"], &document["keys"][1]["alg"]), (&"RSA".into(), &"RS256".into()));
    let discovery: Value = serde_json::from_str(with_public.discovery_document()).unwrap();
    assert_eq!(discovery["id_token_signing_alg_values_supported"], serde_json::json!(["ES256", "RS256"]));
    let five = (0..5).map(|_| PreviousKey::new(Algorithm::Es256, StaticSecret::new(ec_pem()))).collect();
    let too_many = WorkloadIssuer::with_previous_keys(
        config("https://id.example.com"),
        Algorithm::Es256,
        StaticSecret::new(ec_pem()),
        five,
        clock(),
    );
    assert_eq!(too_many.unwrap_err().setting(), "workload.previous_keys");
}

#[tokio::test]
async fn a_new_signing_key_is_published_before_its_first_token_and_the_jwks_is_rebuilt_once_a_minute() {
    let clock = clock();
    let source = Swappable::new(ec_pem());
    let issuer = WorkloadIssuer::new(
        config("https://id.example.com"),
        Algorithm::Es256,
        source.clone(),
        clock.clone(),
    );
    let kids = |document: &str| -> Vec<String> {
        let document: Value = serde_json::from_str(document).unwrap();
        document["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
    };
    let first = issuer.sign().await.unwrap();
    assert_eq!(kids(&issuer.jwks_document().await.unwrap()), [first.key_id()]);
    // A public endpoint hammered for a minute reads the key store once.
    let reads = source.reads();
    for _ in 0..50 {
        issuer.jwks_document().await.unwrap();
    }
    assert_eq!(source.reads(), reads, "served from the built document");
    clock.advance(Duration::from_secs(60));
    issuer.jwks_document().await.unwrap();
    assert_eq!(source.reads(), reads + 1, "rebuilt after a minute");

    // The key is rotated in the store: the next token uses it, and the JWKS shows it at once.
    source.set(ec_pem());
    let second = issuer.sign().await.unwrap();
    assert_ne!(second.key_id(), first.key_id());
    assert_eq!(kids(&issuer.jwks_document().await.unwrap()), [second.key_id()]);
    // The same key is not parsed again: its kid and thumbprint stay.
    assert_eq!(issuer.sign().await.unwrap().key_id(), second.key_id());
}

#[tokio::test]
async fn unusable_keys_are_refused_without_quoting_them() {
    let rsa = rsa_pem();
    let cases: Vec<(Algorithm, String)> = vec![
        (Algorithm::Rs256, "not a key".into()),
        (Algorithm::Rs256, ec_pem()),
        (Algorithm::Es256, rsa.clone()),
        (Algorithm::Es256, rsa.replace("PRIVATE KEY", "PUBLIC KEY")),
        (Algorithm::Es256, String::from_utf8_lossy(&[0xff, 0xfe, 0x00]).into_owned()),
    ];
    for (algorithm, key) in cases {
        let issuer = WorkloadIssuer::new(
            config("https://id.example.com"),
            algorithm,
            StaticSecret::new(key.clone()),
            clock(),
        );
        let error = issuer.sign().await.unwrap_err();
        assert!(matches!(error, IssueError::Key { .. }), "{error:?}");
        let shown = format!("{error} {error:?} {issuer:?}");
        let body = key.lines().nth(1).unwrap_or(&key);
        assert!(!body.is_empty() && !shown.contains(body), "the key shows in {shown}");
        assert!(issuer.jwks_document().await.is_err());
    }
    // A configured key id is used as is.
    let config = config("https://id.example.com").with_key_id("billing-2030-01").unwrap();
    let issuer = WorkloadIssuer::new(config, Algorithm::Rs256, StaticSecret::new(rsa.clone()), clock());
    let token = issuer.sign().await.unwrap();
    assert_eq!(token.key_id(), "billing-2030-01");
    assert_eq!(segments(token.expose()).0["kid"], "billing-2030-01");
    let shown = format!("{token:?} {issuer:?}");
    assert!(!shown.contains(token.expose()) && !shown.contains(rsa.lines().nth(1).unwrap()), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// A fake STS on 127.0.0.1: one HTTP/1.1 request per connection, answered as the test says.

/// What the fake STS does with a request.
enum Reply {
    /// 200 with these credentials, expiring at this Unix time.
    Credentials { key: String, expiration: u64 },
    /// This status and body (XML content type).
    Xml(u16, String),
    /// 200, `Content-Length` says this many bytes, then nothing.
    Declared(usize),
    /// 200 with a body of this many bytes and no `Content-Length` (until close).
    Endless(usize),
    /// Accepts, reads the request, never answers.
    Stall,
}

type Route = dyn Fn(usize, &HashMap<String, String>) -> (Duration, Reply) + Send + Sync;

/// The requests received, as form fields.
struct FakeSts {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

impl FakeSts {
    /// `route(n, form)` answers the `n`th request (from 0), after the pause it returns.
    async fn start(
        route: impl Fn(usize, &HashMap<String, String>) -> (Duration, Reply) + Send + Sync + 'static,
    ) -> Self {
        let (listener, addr) = bind().await;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let route: Arc<Route> = Arc::new(route);
        let seen = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (route, seen) = (route.clone(), seen.clone());
                tokio::spawn(async move {
                    let _ = answer(stream, &*route, &seen).await;
                });
            }
        });
        Self { addr, requests }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn hits(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn request(&self, n: usize) -> HashMap<String, String> {
        self.requests.lock().unwrap()[n].clone()
    }

    /// An STS client for this server: 3 attempts, short pauses, a 5 s deadline.
    fn client(&self) -> StsClient {
        StsClient::new(self.config()).unwrap()
    }

    fn config(&self) -> StsConfig {
        StsConfig::new(ROLE, SESSION)
            .unwrap()
            .with_endpoint(self.endpoint())
            .dangerously_allow_http_on_loopback()
            .with_backoff(Duration::from_millis(10))
            .unwrap()
            .with_deadline(Duration::from_secs(5))
            .unwrap()
    }
}

fn form_decode(body: &str) -> HashMap<String, String> {
    let decode = |s: &str| -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).unwrap()
    };
    body.split('&').filter_map(|pair| pair.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

async fn answer(
    mut stream: TcpStream,
    route: &Route,
    seen: &Mutex<Vec<HashMap<String, String>>>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let form = form_decode(std::str::from_utf8(&buffer[head_end..head_end + length]).unwrap());
    let n = {
        let mut seen = seen.lock().unwrap();
        seen.push(form.clone());
        seen.len() - 1
    };
    let (pause, reply) = route(n, &form);
    tokio::time::sleep(pause).await;
    let xml = |status: u16, body: String| {
        format!(
            "HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    match reply {
        Reply::Credentials { key, expiration } => {
            stream.write_all(xml(200, credentials_xml(&key, &rfc3339(expiration))).as_bytes()).await?
        }
        Reply::Xml(status, body) => stream.write_all(xml(status, body).as_bytes()).await?,
        Reply::Declared(n) => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {n}\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
            std::future::pending::<()>().await;
        }
        Reply::Endless(n) => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nConnection: close\r\n\r\n")
                .await?;
            let block = vec![b'x'; 4096];
            for _ in 0..n / block.len() {
                stream.write_all(&block).await?;
            }
        }
        Reply::Stall => std::future::pending::<()>().await,
    }
    stream.shutdown().await
}

fn credentials_xml(key: &str, expiration: &str) -> String {
    format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>{SUBJECT}</SubjectFromWebIdentityToken>
    <Audience>{AWS_AUDIENCE}</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/billing-exporter/{SESSION}</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:{SESSION}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>FwoGZXIvYXdzE&amp;example+session/token==</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCY{key}</SecretAccessKey>
      <Expiration>{expiration}</Expiration>
      <AccessKeyId>ASIA{key}</AccessKeyId>
    </Credentials>
    <Provider>{AWS_AUDIENCE}</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#
    )
}

fn error_xml(code: &str, message: &str) -> String {
    format!(
        r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>
  <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
</ErrorResponse>"#
    )
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SS.123Z` (civil_from_days).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rem = secs % 86_400;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.123Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Key ids the fake STS hands out: `KEY0000000000000`, `KEY0000000000001`, ...
fn key_id(n: usize) -> String {
    format!("KEY{n:013}")
}

fn credentials_for(
    sts: &FakeSts,
    clock: Arc<FixedClock>,
    algorithm: Algorithm,
    key: String,
) -> WebIdentityCredentials {
    let issuer = issuer_with("https://id.example.com", algorithm, key, clock.clone());
    WebIdentityCredentials::new(issuer, sts.client(), clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_calls_make_one_exchange_and_later_calls_none() {
    let clock = clock();
    let valid_until = NOW + 3600;
    let sts = FakeSts::start(move |n, _| {
        (Duration::from_millis(200), Reply::Credentials { key: key_id(n), expiration: valid_until })
    })
    .await;
    let key = ec_pem();
    let aws = credentials_for(&sts, clock.clone(), Algorithm::Es256, key.clone());
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let aws = aws.clone();
        calls.spawn(async move { aws.credentials().await });
    }
    let mut keys = Vec::new();
    while let Some(result) = calls.join_next().await {
        keys.push(result.unwrap().unwrap().access_key_id().to_owned());
    }
    assert_eq!(sts.hits(), 1, "100 concurrent calls, one exchange");
    assert!(keys.iter().all(|k| *k == format!("ASIA{}", key_id(0))));
    for _ in 0..100 {
        aws.credentials().await.unwrap();
    }
    assert_eq!((sts.hits(), aws.exchanges()), (1, 1), "cached until shortly before expiry");

    // What STS received: the documented form, and a token that verifies with the issuer's key.
    let form = sts.request(0);
    assert_eq!(form["Action"], "AssumeRoleWithWebIdentity");
    assert_eq!(form["Version"], "2011-06-15");
    assert_eq!(form["RoleArn"], ROLE);
    assert_eq!(form["RoleSessionName"], SESSION);
    assert_eq!(form["DurationSeconds"], "3600");
    let issuer = issuer_with("https://id.example.com", Algorithm::Es256, key, clock.clone());
    let jwks: Value = serde_json::from_str(&issuer.jwks_document().await.unwrap()).unwrap();
    let claims =
        jsonwebtoken_verifies(&jwks["keys"][0], &form["WebIdentityToken"], "https://id.example.com").unwrap();
    assert_eq!((&claims["sub"], &claims["aud"]), (&SUBJECT.into(), &AWS_AUDIENCE.into()));

    // The credentials as STS sent them (entities decoded), and redacted in Debug.
    let credentials = aws.credentials().await.unwrap();
    assert_eq!(credentials.session_token(), "FwoGZXIvYXdzE&example+session/token==");
    assert_eq!(credentials.secret_access_key(), format!("wJalrXUtnFEMI/K7MDENG/bPxRfiCY{}", key_id(0)));
    assert_eq!(credentials.expiration(), valid_until);
    assert_eq!(
        credentials.assumed_role_arn(),
        Some("arn:aws:sts::123456789012:assumed-role/billing-exporter/billing-exporter")
    );
    let shown = format!("{credentials:?} {aws:?}");
    assert!(shown.contains(credentials.access_key_id()));
    assert!(!shown.contains("wJalrXUtnFEMI") && !shown.contains("FwoGZXIvYXdzE"), "{shown}");
}

#[tokio::test]
async fn credentials_are_renewed_before_they_expire_by_the_injected_clock() {
    let clock = clock();
    let lifetime = Arc::new(Mutex::new(3600u64));
    let now = clock.clone();
    let life = lifetime.clone();
    let sts = FakeSts::start(move |n, _| {
        let expiration = ztgate::clock::Clock::now(&*now) + *life.lock().unwrap();
        (Duration::ZERO, Reply::Credentials { key: key_id(n), expiration })
    })
    .await;
    let aws = credentials_for(&sts, clock.clone(), Algorithm::Es256, ec_pem());
    assert_eq!(aws.credentials().await.unwrap().access_key_id(), format!("ASIA{}", key_id(0)));
    // The default margin is 5 min: used until expiry − 300 s, then renewed.
    clock.advance(Duration::from_secs(3600 - 300 - 1));
    assert_eq!(aws.credentials().await.unwrap().access_key_id(), format!("ASIA{}", key_id(0)));
    assert_eq!(sts.hits(), 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(aws.credentials().await.unwrap().access_key_id(), format!("ASIA{}", key_id(1)));
    assert_eq!(sts.hits(), 2, "renewed 5 min before expiry, not at expiry");

    // Credentials shorter-lived than twice the margin are renewed at half their lifetime.
    *lifetime.lock().unwrap() = 400;
    clock.advance(Duration::from_secs(3600));
    aws.credentials().await.unwrap();
    assert_eq!(sts.hits(), 3);
    clock.advance(Duration::from_secs(199));
    aws.credentials().await.unwrap();
    assert_eq!(sts.hits(), 3);
    clock.advance(Duration::from_secs(1));
    aws.credentials().await.unwrap();
    assert_eq!(sts.hits(), 4);

    // Credentials that are already expired by the clock are refused, and not cached.
    *lifetime.lock().unwrap() = 0;
    clock.advance(Duration::from_secs(400));
    assert!(matches!(aws.credentials().await, Err(StsError::Malformed(_))));
    assert!(matches!(aws.credentials().await, Err(StsError::Malformed(_))));
    assert_eq!(sts.hits(), 6);

    // A refused credential can be dropped by hand.
    *lifetime.lock().unwrap() = 3600;
    aws.credentials().await.unwrap();
    aws.invalidate();
    aws.credentials().await.unwrap();
    assert_eq!(sts.hits(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_the_refresh_margin_valid_credentials_outlive_a_slow_or_failed_renewal() {
    let clock = clock();
    let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (now, state) = (clock.clone(), up.clone());
    let sts = FakeSts::start(move |n, _| {
        if state.load(Ordering::SeqCst) {
            let expiration = ztgate::clock::Clock::now(&*now) + 3600;
            (Duration::from_millis(300), Reply::Credentials { key: key_id(n), expiration })
        } else {
            (Duration::ZERO, Reply::Xml(503, String::new()))
        }
    })
    .await;
    let aws = credentials_for(&sts, clock.clone(), Algorithm::Es256, ec_pem());
    let first = format!("ASIA{}", key_id(0));
    assert_eq!(aws.credentials().await.unwrap().access_key_id(), first);

    // Due for renewal: one caller renews (slowly); the others get the still-valid ones at once.
    clock.advance(Duration::from_secs(3300));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let aws = aws.clone();
        calls.spawn(async move { aws.credentials().await.unwrap().access_key_id().to_owned() });
    }
    let keys = bounded(calls.join_all()).await;
    let second = format!("ASIA{}", key_id(1));
    assert!(keys.iter().all(|k| *k == first || *k == second), "{keys:?}");
    assert!(keys.contains(&second) && keys.contains(&first), "{keys:?}");
    assert_eq!((aws.exchanges(), sts.hits()), (2, 2), "one renewal");

    // STS goes down at the next renewal: the valid credentials are still handed out...
    up.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(3300));
    assert_eq!(bounded(aws.credentials()).await.unwrap().access_key_id(), second);
    assert_eq!(sts.hits(), 2 + 3, "the renewal was tried, three attempts");
    clock.set(NOW + 3300 + 3600 - 31);
    assert_eq!(bounded(aws.credentials()).await.unwrap().access_key_id(), second);
    // ...until 30 s before they expire; then the failure reaches the caller.
    clock.advance(Duration::from_secs(1));
    assert_eq!(bounded(aws.credentials()).await.unwrap_err(), StsError::Status(503));
}

/// Runs `call` under a generous outer bound: a hang fails the test instead of stalling it.
async fn bounded<T>(call: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), call).await.expect("the call hung")
}

#[tokio::test]
async fn sts_refusing_connections_is_a_bounded_error_after_the_attempts() {
    let closed = {
        let (listener, addr) = bind().await;
        drop(listener);
        addr
    };
    let config = StsConfig::new(ROLE, SESSION)
        .unwrap()
        .with_endpoint(format!("http://{closed}/"))
        .dangerously_allow_http_on_loopback()
        .with_backoff(Duration::from_millis(10))
        .unwrap();
    let issuer = issuer_with("https://id.example.com", Algorithm::Es256, ec_pem(), clock());
    let aws = WebIdentityCredentials::new(issuer, StsClient::new(config).unwrap(), clock());
    let error = bounded(aws.credentials()).await.unwrap_err();
    assert!(matches!(error, StsError::Network(_)), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sts_that_never_answers_ends_every_waiting_call_at_the_deadline() {
    let sts = FakeSts::start(|_, _| (Duration::ZERO, Reply::Stall)).await;
    let config = sts
        .config()
        .with_attempt_timeout(Duration::from_millis(300))
        .unwrap()
        .with_max_attempts(10)
        .unwrap()
        .with_deadline(Duration::from_secs(1))
        .unwrap();
    let issuer = issuer_with("https://id.example.com", Algorithm::Es256, ec_pem(), clock());
    let aws = WebIdentityCredentials::new(issuer, StsClient::new(config).unwrap(), clock());
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let aws = aws.clone();
        calls.spawn(async move { aws.credentials().await });
    }
    let results = bounded(calls.join_all()).await;
    let mut shared = 0;
    for result in results {
        match result.unwrap_err() {
            // The exchange's own error, which the callers that waited for it share.
            StsError::DeadlineExceeded { deadline, attempts: 2.., last } => {
                assert_eq!(deadline, Duration::from_secs(1));
                assert_eq!(last.as_deref(), Some(&StsError::Timeout));
                shared += 1;
            }
            // A caller whose own deadline (taken an instant before the exchange's) came first.
            StsError::DeadlineExceeded { attempts: 0, last: None, .. } => {}
            other => panic!("not the deadline: {other:?}"),
        }
    }
    assert!(shared >= 1, "the exchange's error reached no caller");
    assert_eq!(aws.exchanges(), 1, "the waiting calls shared the one exchange's failure");
    assert!(sts.hits() < 10);
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let sts = FakeSts::start(|_, _| (Duration::ZERO, Reply::Xml(503, "<html>busy</html>".into()))).await;
    let client = StsClient::new(sts.config().with_max_attempts(4).unwrap()).unwrap();
    let error = bounded(client.assume_role_with_web_identity("token")).await.unwrap_err();
    assert_eq!(error, StsError::Status(503));
    assert_eq!(sts.hits(), 4, "the first attempt and three retries");

    // A 500 with an AWS error document, then success: two requests.
    let sts = FakeSts::start(|n, _| match n {
        0 => (Duration::ZERO, Reply::Xml(500, error_xml("InternalFailure", "try again"))),
        n => (Duration::ZERO, Reply::Credentials { key: key_id(n), expiration: NOW + 3600 }),
    })
    .await;
    let credentials = bounded(sts.client().assume_role_with_web_identity("token")).await.unwrap();
    assert_eq!(credentials.access_key_id(), format!("ASIA{}", key_id(1)));
    assert_eq!(sts.hits(), 2);

    // STS could not reach the issuer's JWKS: AWS documents it as worth a retry.
    let sts = FakeSts::start(|_, _| {
        (Duration::ZERO, Reply::Xml(400, error_xml("IDPCommunicationError", "could not reach the IdP")))
    })
    .await;
    let error = bounded(sts.client().assume_role_with_web_identity("token")).await.unwrap_err();
    assert!(matches!(&error, StsError::Aws { code, .. } if code == "IDPCommunicationError"));
    assert_eq!(sts.hits(), 3);
}

#[tokio::test]
async fn refusals_such_as_access_denied_are_not_retried() {
    for (status, code) in
        [(403, "AccessDenied"), (400, "InvalidIdentityToken"), (400, "ExpiredTokenException")]
    {
        let message = "Not authorized to perform sts:AssumeRoleWithWebIdentity\u{1b}[31m";
        let sts =
            FakeSts::start(move |_, _| (Duration::ZERO, Reply::Xml(status, error_xml(code, message)))).await;
        let issuer = issuer_with("https://id.example.com", Algorithm::Es256, ec_pem(), clock());
        let aws = WebIdentityCredentials::new(issuer, sts.client(), clock());
        let error = bounded(aws.credentials()).await.unwrap_err();
        match &error {
            StsError::Aws { status: s, code: c, message: m } => {
                assert_eq!((*s, c.as_str()), (status, code));
                assert_eq!(
                    m, "Not authorized to perform sts:AssumeRoleWithWebIdentity[31m",
                    "control characters removed"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!error.is_retryable());
        assert_eq!(sts.hits(), 1, "{code} was retried");
        // The next call tries again: a refusal is not cached.
        bounded(aws.credentials()).await.unwrap_err();
        assert_eq!(sts.hits(), 2);
    }
}

#[tokio::test]
async fn concurrent_callers_share_a_failure_and_the_next_call_tries_again() {
    let sts = FakeSts::start(|_, _| (Duration::from_millis(200), Reply::Xml(503, String::new()))).await;
    let client = StsClient::new(sts.config().with_max_attempts(1).unwrap()).unwrap();
    let issuer = issuer_with("https://id.example.com", Algorithm::Es256, ec_pem(), clock());
    let aws = WebIdentityCredentials::new(issuer, client, clock());
    let calls: Vec<_> = (0..20).map(|_| aws.credentials()).collect();
    for result in bounded(futures_join_all(calls)).await {
        assert_eq!(result.unwrap_err(), StsError::Status(503));
    }
    assert_eq!(sts.hits(), 1);
    bounded(aws.credentials()).await.unwrap_err();
    assert_eq!(sts.hits(), 2);
}

/// Drives the futures concurrently on this task.
async fn futures_join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn a_caller_dropped_mid_exchange_hands_it_to_a_waiting_caller() {
    let sts = FakeSts::start(|n, _| {
        (Duration::from_millis(300), Reply::Credentials { key: key_id(n), expiration: NOW + 3600 })
    })
    .await;
    let aws = credentials_for(&sts, clock(), Algorithm::Es256, ec_pem());
    let leader = {
        let aws = aws.clone();
        tokio::spawn(async move { aws.credentials().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiter = {
        let aws = aws.clone();
        tokio::spawn(async move { aws.credentials().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    leader.abort();
    let credentials = bounded(waiter).await.unwrap().unwrap();
    assert_eq!(aws.exchanges(), 2, "the waiter ran its own exchange");
    assert_eq!(credentials.access_key_id(), format!("ASIA{}", key_id(1)));
}

#[tokio::test]
async fn a_huge_answer_is_refused_whether_declared_or_streamed() {
    let sts = FakeSts::start(|_, _| (Duration::ZERO, Reply::Declared(10 << 20))).await;
    let error = bounded(sts.client().assume_role_with_web_identity("token")).await.unwrap_err();
    assert_eq!(error, StsError::TooLarge { limit: StsConfig::DEFAULT_MAX_RESPONSE_BYTES });
    assert_eq!(sts.hits(), 1, "not retried");
    let sts = FakeSts::start(|_, _| (Duration::ZERO, Reply::Endless(1 << 20))).await;
    let error = bounded(sts.client().assume_role_with_web_identity("token")).await.unwrap_err();
    assert_eq!(error, StsError::TooLarge { limit: StsConfig::DEFAULT_MAX_RESPONSE_BYTES });
}

#[tokio::test]
async fn malformed_answers_are_refused_and_not_retried() {
    let good = credentials_xml("AAAABBBBCCCCDDDD", "2030-01-01T01:00:00Z");
    let laughs =
        r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>"#;
    let cases: Vec<(&str, String)> = vec![
        ("not XML", "{\"Credentials\": {}}".into()),
        ("a DTD with entities", format!("{laughs}{}", good.replace("FwoGZXIvYXdzE", "&lol2;"))),
        ("an undeclared entity", good.replace("&amp;", "&nbsp;")),
        ("another action's answer", good.replace("AssumeRoleWithWebIdentity", "AssumeRole")),
        (
            "no session token",
            good.replace("<SessionToken>FwoGZXIvYXdzE&amp;example+session/token==</SessionToken>", ""),
        ),
        ("an empty secret", good.replace("wJalrXUtnFEMI/K7MDENG/bPxRfiCYAAAABBBBCCCCDDDD", "")), // pragma: allowlist secret
        (
            "two access keys",
            good.replace("<AccessKeyId>", "<AccessKeyId>ASIAXXXXXXXXXXXXXXXX</AccessKeyId><AccessKeyId>"), // pragma: allowlist secret
        ),
        ("a bad access key", good.replace("<AccessKeyId>ASIA", "<AccessKeyId>ASIA/../")),
        ("a local expiration", good.replace("2030-01-01T01:00:00Z", "2030-01-01 01:00:00")),
        ("a truncated document", good[..good.len() / 2].to_owned()),
        ("two roots", format!("{good}{good}")),
        ("a nesting bomb", format!("{}{}", "<a>".repeat(100), "</a>".repeat(100))),
        ("not UTF-8", String::from_utf8_lossy(b"\xff\xfe<a/>").into_owned().replace('\u{fffd}', "\u{0}")),
    ];
    for (case, body) in cases {
        let sts = FakeSts::start(move |_, _| (Duration::ZERO, Reply::Xml(200, body.clone()))).await;
        let error = bounded(sts.client().assume_role_with_web_identity("token")).await.unwrap_err();
        assert!(matches!(error, StsError::Malformed(_)), "{case}: {error:?}");
        assert_eq!(sts.hits(), 1, "{case}: retried");
    }
    // The well-formed answer itself passes, namespace prefixes and comments included.
    let prefixed = good
        .replace(
            "<AssumeRoleWithWebIdentityResponse xmlns=",
            "<!-- hi --><sts:AssumeRoleWithWebIdentityResponse xmlns:sts=",
        )
        .replace("</AssumeRoleWithWebIdentityResponse>", "</sts:AssumeRoleWithWebIdentityResponse>");
    for body in [good, prefixed] {
        let sts = FakeSts::start(move |_, _| (Duration::ZERO, Reply::Xml(200, body.clone()))).await;
        let credentials: AwsCredentials =
            bounded(sts.client().assume_role_with_web_identity("token")).await.unwrap();
        assert_eq!(credentials.expiration(), NOW + 3600);
    }
}

#[tokio::test]
async fn plain_http_needs_the_loopback_opt_in_and_never_reaches_other_hosts() {
    let base = StsConfig::new(ROLE, SESSION).unwrap();
    let refused = StsClient::new(base.clone().with_endpoint("http://127.0.0.1:9/")).unwrap_err();
    assert_eq!(refused.setting(), "sts.endpoint");
    let remote = base
        .clone()
        .with_endpoint("http://sts.us-east-1.amazonaws.com/")
        .dangerously_allow_http_on_loopback();
    assert_eq!(StsClient::new(remote).unwrap_err().setting(), "sts.endpoint");
    let credentials = base.with_endpoint("https://user:pw@sts.amazonaws.com/"); // pragma: allowlist secret
    assert_eq!(StsClient::new(credentials).unwrap_err().setting(), "sts.endpoint");
}
