//! No token, cookie or query string ever reaches a log line or a `Debug` output.
//!
//! Its own test binary: the subscriber is process-global, so no other test's callsites can
//! race with it.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;
use ztgate::dev::user_claims;

#[tokio::test]
async fn tokens_never_reach_logs_or_debug_output() {
    let logs = Captured::default();
    let logs_handle = logs.clone();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let gate = gate(&server.url(), clock());
    let good = key.sign(&user_claims(TEAM, AUD, "alice@acme.com", NOW, 60));
    let forbidden = key.sign(&user_claims(TEAM, AUD, "mallory@acme.com", NOW, 60));
    let expired = key.sign(&{
        let mut c = user_claims(TEAM, AUD, "alice@acme.com", NOW, 60);
        c["exp"] = json!(1);
        c
    });
    let tampered = format!("{}x", &good[..good.len() - 1]);
    let mut debug = String::new();
    for token in [&good, &forbidden, &expired, &tampered] {
        let req = http::Request::builder()
            .uri("/admin/notes?token=also-secret")
            .header("cf-access-jwt-assertion", token.as_str())
            .body(String::new())
            .unwrap();
        let result = gate.check(&req).await;
        debug.push_str(&format!("{result:?} {:?} {:?}", gate.extract(&req), gate));
    }
    let cookie_req = http::Request::builder()
        .header("cookie", format!("CF_Authorization={good}"))
        .body(String::new())
        .unwrap();
    debug.push_str(&format!("{:?}", gate.extract(&cookie_req)));

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("layer=\"identity\"") || logs.contains("layer=identity"),
        "logs name their layer: {logs}"
    );
    assert!(logs.contains("user:alice@acme.com"), "logs name the principal: {logs}");
    for token in [&good, &forbidden, &expired, &tampered] {
        for (i, segment) in token.split('.').enumerate() {
            assert!(!logs.contains(segment), "segment {i} of a token reached the logs");
            assert!(!debug.contains(segment), "segment {i} of a token reached Debug output");
        }
    }
    assert!(!logs.contains("also-secret") && !debug.contains("also-secret"), "query strings are not logged");
    // identity_nonce is redacted from Debug too.
    let principal = gate.check(&request_with_token(&good)).await.unwrap();
    assert!(!format!("{principal:?}").contains("dev-nonce"));

    // The other mechanisms: API keys (good, wrong, revoked), signed tokens (good, tampered,
    // wrong purpose), and trusted client-certificate headers.
    use std::time::Duration;
    use ztgate::identity::hmac_token::KeyRing;
    use ztgate::identity::hmac_token::{SignedTokenAuth, TokenSource};
    use ztgate::identity::{ApiKeyAuth, ApiKeys, ClientCertAuth, Requirement};
    use ztgate::{Gate, request::RequestLimits};
    const API_KEY: &str = "live-key-7f3a9c1e5b2d4f6a8c0e";
    const HMAC_SECRET: &str = "hmac-secret-5e7a9c1b3d5f7a9c1b3d5f7a9c1b3d5f";
    let keys = Arc::new(ApiKeys::parse(&format!("ops:{API_KEY}")).unwrap());
    let ring = Arc::new(KeyRing::parse(&format!("k1:{HMAC_SECRET}")).unwrap());
    let signed = ring.mint("unsubscribe", "bob@acme.com", NOW, Duration::from_secs(600)).unwrap();
    let wrong_purpose = ring.mint("login", "bob@acme.com", NOW, Duration::from_secs(600)).unwrap();
    let gate = Gate::with_limits(
        Requirement::any_of([
            Requirement::mechanism(ApiKeyAuth::new(keys.clone())),
            Requirement::mechanism(SignedTokenAuth::new(
                ring,
                "unsubscribe",
                TokenSource::Query("token".into()),
                clock(),
            )),
            Requirement::mechanism(ClientCertAuth::new()),
        ]),
        RequestLimits { trust_client_cert_headers: true, ..RequestLimits::default() },
    );
    let wrong_key = format!("{API_KEY}x");
    let tampered = format!("{}A", &signed[..signed.len() - 1]);
    let mut requests = vec![
        http::Request::builder().header("x-api-key", API_KEY),
        http::Request::builder().header("authorization", format!("Bearer {wrong_key}")),
        http::Request::builder().uri(format!("/api/unsubscribe?token={signed}")),
        http::Request::builder().uri(format!("/api/unsubscribe?token={tampered}")),
        http::Request::builder().uri(format!("/api/unsubscribe?token={wrong_purpose}")),
        http::Request::builder().header("cf-cert-presented", "1").header("cf-cert-verified", "SUCCESS"),
    ];
    for builder in requests.drain(..) {
        let req = builder.body(String::new()).unwrap();
        let result = gate.check(&req).await;
        debug.push_str(&format!("{result:?} {:?} {gate:?}", gate.extract(&req)));
    }
    keys.revoke("ops");
    let req = http::Request::builder().header("x-api-key", API_KEY).body(String::new()).unwrap();
    debug.push_str(&format!("{:?} {keys:?}", gate.check(&req).await));

    let logs = String::from_utf8(logs_handle.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("api_key:ops"), "the API key's name is logged: {logs}");
    for secret in
        [API_KEY, wrong_key.as_str(), HMAC_SECRET, signed.as_str(), tampered.as_str(), wrong_purpose.as_str()]
    {
        assert!(!logs.contains(secret), "a secret or token reached the logs");
        assert!(!debug.contains(secret), "a secret or token reached Debug output");
    }
    // The MAC part alone must not appear either.
    let mac = signed.rsplit('.').next().unwrap();
    assert!(!logs.contains(mac) && !debug.contains(mac));

    // A key ring read from a source: loaded, then an invalid new value (a secret too short to
    // be a key), then an unreadable one. The log names the key ids and the failures, never a
    // secret.
    use ztgate::identity::hmac_token::KeyRingSource;
    use ztgate::secrets::{Secret, SecretError, SecretFuture, SecretSource};
    #[derive(Debug)]
    struct Changing(Arc<Mutex<Option<String>>>);
    impl SecretSource for Changing {
        fn get(&self) -> SecretFuture<'_> {
            let value = self.0.lock().unwrap().clone();
            Box::pin(
                async move { value.map(Secret::from).ok_or(SecretError::Unavailable("store down".into())) },
            )
        }
    }
    const SHORT: &str = "too-short-secret-but-still-secret";
    let text = Arc::new(Mutex::new(Some(format!("rotated-kid:{HMAC_SECRET}"))));
    let clock = clock();
    let source =
        KeyRingSource::load(Changing(text.clone()), Duration::from_secs(60), clock.clone()).await.unwrap();
    *text.lock().unwrap() = Some(format!("k9:{}", &SHORT[..20]));
    clock.advance(Duration::from_secs(60));
    assert_eq!(source.ring().await.unwrap().kids().next(), Some("rotated-kid"));
    *text.lock().unwrap() = None;
    clock.advance(Duration::from_secs(60));
    assert!(source.ring().await.is_ok());
    debug.push_str(&format!("{source:?}"));
    let logs = String::from_utf8(logs_handle.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("hmac_keys_loaded") && logs.contains("rotated-kid"), "{logs}");
    assert_eq!(logs.matches("hmac_keys_reload_failed").count(), 2, "{logs}");
    for secret in [HMAC_SECRET, &SHORT[..20]] {
        assert!(!logs.contains(secret) && !debug.contains(secret), "a key ring secret was logged");
    }
}
