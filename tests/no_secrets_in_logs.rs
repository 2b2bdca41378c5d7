//! No token, cookie or query string ever reaches a log line or a `Debug` output.
//!
//! Its own test binary: the subscriber is process-global, so no other test's callsites can
//! race with it.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;
use ztgate::dev::user_claims;

/// A `MakeWriter` that keeps everything written, to search the logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn tokens_never_reach_logs_or_debug_output() {
    let logs = Captured::default();
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
}
