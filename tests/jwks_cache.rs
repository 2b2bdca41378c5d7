//! JWKS cache behaviour against a real HTTP server on 127.0.0.1 that counts its fetches,
//! with a fixed clock moved by hand.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use ztgate::__private::KeySet;
use ztgate::clock::FixedClock;
use ztgate::dev::{DevKey, jwks_json, user_claims};
use ztgate::identity::{FetchError, JwksCache, JwksConfig, Requirement, TokenError};
use ztgate::native::HttpFetcher;
use ztgate::{AccessConfig, Gate, Rejection};

fn alice_at(now: u64) -> serde_json::Value {
    user_claims(TEAM, AUD, "alice@acme.com", now, 48 * 3600)
}

async fn ok(gate: &Gate, token: &str) {
    if let Err(e) = gate.check(&request_with_token(token)).await {
        panic!("expected success, got {e:?}");
    }
}

async fn err(gate: &Gate, token: &str) -> Rejection {
    gate.check(&request_with_token(token)).await.expect_err("expected a rejection")
}

/// A gate over one Access mechanism, and that mechanism's key cache: a read of a stale key set
/// is served at once and refreshes in the background, so a test waits for that refresh to land
/// before it counts fetches.
fn gate_and_keys(url: &str, clock: Arc<FixedClock>, jwks: JwksConfig) -> (Gate, JwksCache) {
    let access = Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
        .fetcher(Arc::new(HttpFetcher::with_limits(url, Duration::from_secs(2), 1024 * 1024).unwrap()))
        .clock(clock)
        .jwks_config(jwks)
        .policy(policy())
        .build_mechanism()
        .unwrap();
    let keys = access.verifier().keys().clone();
    (Gate::new(Requirement::mechanism(access)), keys)
}

/// Waits until no refresh of `keys` is running (the stale read that started one has returned).
async fn settled(keys: &JwksCache) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while keys.is_refreshing() {
        assert!(tokio::time::Instant::now() < deadline, "the background refresh never finished");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_with_1000_concurrent_requests_fetches_once() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    // Slow the first answer a little so the requests really overlap the fetch.
    server.set_mode(Mode::Stall(Duration::from_millis(300)));
    let gate = gate(&server.url(), clock());
    let token = key.sign(&alice_at(NOW));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let gate = gate.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move { gate.check(&request_with_token(&token)).await.is_ok() }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn unknown_kid_flood_fetches_once_per_cooldown() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let clock = clock();
    let gate = gate(&server.url(), clock.clone());
    ok(&gate, &key.sign(&alice_at(NOW))).await;
    assert_eq!(server.fetches(), 1);
    // Forged kids (the signature is irrelevant: the key lookup happens first).
    for i in 0..200 {
        let forged =
            key.sign_with_header(&json!({"alg": "RS256", "kid": format!("forged-{i}")}), &alice_at(NOW));
        assert_eq!(err(&gate, &forged).await, Rejection::InvalidToken(TokenError::UnknownKey));
    }
    assert_eq!(server.fetches(), 2, "one refetch for the whole flood");
    clock.advance(Duration::from_secs(29));
    let forged = key.sign_with_header(&json!({"alg": "RS256", "kid": "late"}), &alice_at(NOW));
    err(&gate, &forged).await;
    assert_eq!(server.fetches(), 2, "still inside the 30 s cooldown");
    clock.advance(Duration::from_secs(1));
    err(&gate, &forged).await;
    assert_eq!(server.fetches(), 3, "cooldown over: one more refetch");
    // The known key kept working throughout.
    ok(&gate, &key.sign(&alice_at(NOW))).await;
    assert_eq!(server.fetches(), 3);
}

#[tokio::test]
async fn rotated_key_is_picked_up_through_its_unknown_kid() {
    let (old, new) = (key("old"), key("new"));
    let server = JwksServer::start(&[&old]).await;
    let gate = gate(&server.url(), clock());
    ok(&gate, &old.sign(&alice_at(NOW))).await;
    server.set_keys(&[&old, &new]);
    ok(&gate, &new.sign(&alice_at(NOW))).await;
    assert_eq!(server.fetches(), 2);
    ok(&gate, &old.sign(&alice_at(NOW))).await;
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn removed_key_stops_working_after_refresh() {
    let (old, new) = (key("old"), key("new"));
    let server = JwksServer::start(&[&old, &new]).await;
    let clock = clock();
    let (gate, keys) = gate_and_keys(&server.url(), clock.clone(), JwksConfig::default());
    let now = NOW + 601;
    let old_token = old.sign(&alice_at(now));
    ok(&gate, &old.sign(&alice_at(NOW))).await;
    server.set_keys(&[&new]);
    clock.advance(Duration::from_secs(601));
    // The stale set still holds the old key: this read is served from it and starts the refresh
    // (stale-while-revalidate), and the verification is now in the token cache.
    ok(&gate, &old_token).await;
    assert!(keys.is_refreshing(), "a stale read starts a background refresh");
    settled(&keys).await;
    assert_eq!(server.fetches(), 2);
    // Once the refresh has landed the key is gone: the cached verification no longer counts.
    assert_eq!(err(&gate, &old_token).await, Rejection::InvalidToken(TokenError::UnknownKey));
    ok(&gate, &new.sign(&alice_at(now))).await;
}

#[tokio::test]
async fn keys_are_refreshed_after_the_default_max_age() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let clock = clock();
    let (gate, keys) = gate_and_keys(&server.url(), clock.clone(), JwksConfig::default());
    ok(&gate, &key.sign(&alice_at(NOW))).await;
    clock.advance(Duration::from_secs(599));
    ok(&gate, &key.sign(&alice_at(NOW))).await;
    assert!(!keys.is_refreshing());
    assert_eq!(server.fetches(), 1, "fresh for 10 minutes");
    clock.advance(Duration::from_secs(1));
    ok(&gate, &key.sign(&alice_at(NOW))).await;
    settled(&keys).await;
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn cache_control_max_age_is_honoured_and_clamped() {
    let key = key("k1");
    let token = key.sign(&alice_at(NOW));
    for (header, fresh_for) in
        [("public, max-age=120", 120), ("max-age=5", 60), ("no-store", 60), ("max-age=999999", 3600)]
    {
        let server = JwksServer::start(&[&key]).await;
        server.set_cache_control(Some(header));
        let clock = clock();
        let (gate, keys) = gate_and_keys(&server.url(), clock.clone(), JwksConfig::default());
        ok(&gate, &token).await;
        clock.advance(Duration::from_secs(fresh_for - 1));
        ok(&gate, &token).await;
        assert!(!keys.is_refreshing(), "{header}: still fresh");
        assert_eq!(server.fetches(), 1, "{header}: still fresh");
        clock.advance(Duration::from_secs(1));
        ok(&gate, &token).await;
        settled(&keys).await;
        assert_eq!(server.fetches(), 2, "{header}: stale after {fresh_for}s");
    }
}

#[tokio::test]
async fn keys_outlive_a_failed_refresh_within_the_grace() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let clock = clock();
    let (gate, keys) = gate_and_keys(&server.url(), clock.clone(), JwksConfig::default());
    ok(&gate, &key.sign(&alice_at(NOW))).await;
    server.set_mode(Mode::Status(500));
    clock.advance(Duration::from_secs(601));
    ok(&gate, &key.sign(&alice_at(NOW))).await;
    settled(&keys).await;
    assert_eq!(server.fetches(), 2, "the refresh was attempted");
    // Failed refreshes are retried no sooner than the cooldown.
    ok(&gate, &key.sign(&alice_at(NOW))).await;
    assert!(!keys.is_refreshing(), "inside the cooldown no refresh starts");
    assert_eq!(server.fetches(), 2);
    clock.advance(Duration::from_secs(30));
    ok(&gate, &key.sign(&alice_at(NOW))).await;
    settled(&keys).await;
    assert_eq!(server.fetches(), 3);
    // Recovery: the next due refresh succeeds and the keys are fresh again.
    server.set_mode(Mode::Serve);
    clock.advance(Duration::from_secs(30));
    ok(&gate, &key.sign(&alice_at(NOW))).await;
    settled(&keys).await;
    assert_eq!(server.fetches(), 4);
    clock.advance(Duration::from_secs(599));
    ok(&gate, &key.sign(&alice_at(NOW))).await;
    assert!(!keys.is_refreshing());
    assert_eq!(server.fetches(), 4);
}

#[tokio::test]
async fn keys_expire_after_the_grace_and_give_503_with_retry_after() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let clock = clock();
    let (gate, keys) = gate_and_keys(&server.url(), clock.clone(), JwksConfig::default());
    ok(&gate, &key.sign(&alice_at(NOW))).await;
    server.set_mode(Mode::Status(503));
    clock.advance(Duration::from_secs(600 + 24 * 3600 - 1));
    let token = key.sign(&alice_at(clock_now(&clock)));
    ok(&gate, &token).await;
    settled(&keys).await;
    clock.advance(Duration::from_secs(1));
    let rejection = err(&gate, &token).await;
    assert!(matches!(rejection, Rejection::KeysUnavailable { .. }), "{rejection:?}");
    let response = rejection.to_response::<String>();
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
}

fn clock_now(clock: &Arc<FixedClock>) -> u64 {
    use ztgate::clock::Clock;
    clock.now()
}

#[tokio::test]
async fn jwks_down_at_cold_start_is_503_then_recovers_after_the_cooldown() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    server.set_mode(Mode::Status(500));
    let clock = clock();
    let gate = gate(&server.url(), clock.clone());
    let token = key.sign(&alice_at(NOW));
    for _ in 0..10 {
        assert!(matches!(err(&gate, &token).await, Rejection::KeysUnavailable { .. }));
    }
    assert_eq!(server.fetches(), 1, "a down JWKS endpoint is not hammered");
    server.set_mode(Mode::Serve);
    clock.advance(Duration::from_secs(30));
    ok(&gate, &token).await;
    assert_eq!(server.fetches(), 2);
}

async fn cold_fetch_fails_with(mode: Mode) -> usize {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    server.set_mode(mode.clone());
    let gate = Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
        .fetcher(Arc::new(
            HttpFetcher::with_limits(&server.url(), Duration::from_millis(500), 64 * 1024).unwrap(),
        ))
        .clock(clock())
        .policy(policy())
        .build()
        .unwrap();
    let rejection = err(&gate, &key.sign(&alice_at(NOW))).await;
    assert!(matches!(rejection, Rejection::KeysUnavailable { .. }), "{mode:?}: {rejection:?}");
    server.fetches()
}

#[tokio::test]
async fn stalled_jwks_endpoint_times_out() {
    let started = std::time::Instant::now();
    cold_fetch_fails_with(Mode::Stall(Duration::from_secs(10))).await;
    assert!(started.elapsed() < Duration::from_secs(5), "the fetch timeout bounds the wait");
}

/// How [`serve_jwks_once`] frames its body.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    /// `Content-Length`, body sent at once.
    Declared,
    /// `Content-Length`, body held back until the client has had 3 s to give up on the header
    /// alone: a client that refuses up front closes before any body byte is written.
    DeclaredHeld,
    /// `Transfer-Encoding: chunked`, 16 KiB chunks, no length announced.
    Chunked,
}

/// What the server saw on its one connection.
#[derive(Debug)]
struct Served {
    /// Body bytes the kernel accepted before the connection failed (or all of them).
    body_bytes_written: usize,
    /// Whether the client closed before the server sent any body byte.
    closed_before_body: bool,
}

/// Serves one JWKS response of `len` bytes: `prefix`, then spaces, then `suffix` (so a valid
/// document stays valid JSON whatever its length), on one connection. Its socket send buffer is
/// small (64 KiB), so writes stop soon after the client stops reading.
async fn serve_jwks_once(
    prefix: &'static [u8],
    suffix: &'static [u8],
    len: usize,
    framing: Framing,
) -> (String, tokio::task::JoinHandle<Served>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(64 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(8).unwrap();
    let url = format!("http://{}/cdn-cgi/access/certs", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => panic!("the client closed before sending its request"),
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let length = match framing {
            Framing::Chunked => "Transfer-Encoding: chunked".to_owned(),
            Framing::Declared | Framing::DeclaredHeld => format!("Content-Length: {len}"),
        };
        let response_head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(response_head.as_bytes()).await.unwrap();
        if framing == Framing::DeclaredHeld {
            let closed = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await;
            if matches!(closed, Ok(Ok(0) | Err(_))) {
                return Served { body_bytes_written: 0, closed_before_body: true };
            }
        }
        // The body, generated piece by piece: prefix, spaces, suffix.
        let spaces = vec![b' '; 16 * 1024];
        let mut written = 0;
        while written < len {
            let piece: &[u8] = if written < prefix.len() {
                &prefix[written..]
            } else if written < len - suffix.len() {
                &spaces[..spaces.len().min(len - suffix.len() - written)]
            } else {
                &suffix[written - (len - suffix.len())..]
            };
            let sent = match framing {
                Framing::Chunked => {
                    let mut frame = format!("{:x}\r\n", piece.len()).into_bytes();
                    frame.extend_from_slice(piece);
                    frame.extend_from_slice(b"\r\n");
                    stream.write_all(&frame).await
                }
                Framing::Declared | Framing::DeclaredHeld => stream.write_all(piece).await,
            };
            if sent.is_err() {
                return Served { body_bytes_written: written, closed_before_body: false };
            }
            written += piece.len();
        }
        if framing == Framing::Chunked {
            let _ = stream.write_all(b"0\r\n\r\n").await;
        }
        let _ = stream.shutdown().await;
        Served { body_bytes_written: written, closed_before_body: false }
    });
    (url, task)
}

/// A real JWKS (`{"keys":[<key>]}`) split so that whitespace can go before its last `}`.
fn jwks_parts(key: &DevKey) -> (&'static [u8], &'static [u8]) {
    let doc = jwks_json(&[key]);
    let (prefix, suffix) = doc.split_at(doc.len() - 1);
    (Box::leak(prefix.as_bytes().into()), Box::leak(suffix.as_bytes().into()))
}

/// The document [`serve_jwks_once`] sends for `parts` and `len`.
fn padded(parts: (&[u8], &[u8]), len: usize) -> Vec<u8> {
    let mut doc = parts.0.to_vec();
    doc.resize(len - parts.1.len(), b' ');
    doc.extend_from_slice(parts.1);
    doc
}

async fn fetch_once(url: &str, limit: usize) -> Result<ztgate::identity::FetchedJwks, FetchError> {
    use ztgate::identity::KeyFetcher;
    HttpFetcher::with_limits(url, Duration::from_secs(20), limit).unwrap().fetch().await
}

async fn served(task: tokio::task::JoinHandle<Served>) -> Served {
    // A generous bound on the server's connection ending: the client must close it.
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the client kept the connection open")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_valid_jwks_is_refused_as_too_large_and_not_read_past_the_cap() {
    const LIMIT: usize = 64 * 1024;
    let key = key("k1");
    let parts = jwks_parts(&key);

    // The cap is exact, whatever the framing: a valid document of LIMIT bytes is fetched and
    // parsed; one byte more is refused as too large, though it is the same valid JWKS.
    for framing in [Framing::Declared, Framing::Chunked] {
        let exact = padded(parts, LIMIT);
        assert_eq!(KeySet::parse(&exact, 8).unwrap().len(), 1, "the padded document is a valid JWKS");
        let (url, task) = serve_jwks_once(parts.0, parts.1, LIMIT, framing).await;
        assert_eq!(fetch_once(&url, LIMIT).await.unwrap().body, exact, "{framing:?}");
        served(task).await;

        assert_eq!(KeySet::parse(&padded(parts, LIMIT + 1), 8).unwrap().len(), 1);
        let (url, task) = serve_jwks_once(parts.0, parts.1, LIMIT + 1, framing).await;
        assert_eq!(
            fetch_once(&url, LIMIT).await.unwrap_err(),
            FetchError::TooLarge { limit: LIMIT },
            "{framing:?}"
        );
        served(task).await;
    }

    // Announced as 64 MiB: refused from the header, before any body byte is sent.
    let huge = 64 * 1024 * 1024;
    let (url, task) = serve_jwks_once(parts.0, parts.1, huge, Framing::DeclaredHeld).await;
    assert_eq!(fetch_once(&url, LIMIT).await.unwrap_err(), FetchError::TooLarge { limit: LIMIT });
    let seen = served(task).await;
    assert!(seen.closed_before_body && seen.body_bytes_written == 0, "{seen:?}");

    // 64 MiB chunked, no length announced: the client stops reading at the cap, so the server
    // can write little more than the cap plus what the sockets buffer (64 KiB send buffer here,
    // the client's receive window) before the connection breaks.
    let (url, task) = serve_jwks_once(parts.0, parts.1, huge, Framing::Chunked).await;
    assert_eq!(fetch_once(&url, LIMIT).await.unwrap_err(), FetchError::TooLarge { limit: LIMIT });
    let seen = served(task).await;
    eprintln!("chunked 64 MiB, cap {LIMIT}: the server wrote {} body bytes", seen.body_bytes_written);
    let allowance = 4 * 1024 * 1024;
    assert!(seen.body_bytes_written > LIMIT, "{seen:?}");
    assert!(seen.body_bytes_written <= LIMIT + allowance, "the client read on past the cap: {seen:?}");

    // Through a gate: no keys, so 503.
    for framing in [Framing::Declared, Framing::Chunked] {
        let (url, task) = serve_jwks_once(parts.0, parts.1, LIMIT + 1, framing).await;
        let gate = Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
            .fetcher(Arc::new(HttpFetcher::with_limits(&url, Duration::from_secs(20), LIMIT).unwrap()))
            .clock(clock())
            .policy(policy())
            .build()
            .unwrap();
        let rejection = err(&gate, &key.sign(&alice_at(NOW))).await;
        assert!(matches!(rejection, Rejection::KeysUnavailable { .. }), "{framing:?}: {rejection:?}");
        served(task).await;
    }
}

#[tokio::test]
async fn jwks_garbage_and_wrong_content_type_are_refused() {
    cold_fetch_fails_with(Mode::Garbage).await;
    cold_fetch_fails_with(Mode::ContentType("text/html")).await;
    cold_fetch_fails_with(Mode::Status(404)).await;
}

#[tokio::test]
async fn jwks_redirects_are_not_followed() {
    let key = key("k1");
    let elsewhere = JwksServer::start(&[&key]).await;
    assert_eq!(cold_fetch_fails_with(Mode::Redirect(elsewhere.url())).await, 1);
    assert_eq!(elsewhere.fetches(), 0);
}

fn raw_jwk(kid: &str, n_bits: usize, e: &[u8]) -> serde_json::Value {
    use base64::Engine;
    let mut n = vec![0xc5u8; n_bits / 8];
    let last = n.len() - 1;
    n[last] |= 1;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    json!({"kty": "RSA", "kid": kid, "n": b64.encode(&n), "e": b64.encode(e)})
}

#[test]
fn key_filter_keeps_only_strong_rs256_signature_keys() {
    let good = key("good");
    let mut enc = good.public_jwk();
    enc["kid"] = json!("enc");
    enc["use"] = json!("enc");
    let mut rs512 = good.public_jwk();
    rs512["kid"] = json!("rs512");
    rs512["alg"] = json!("RS512");
    let mut hs = good.public_jwk();
    hs["kid"] = json!("hs");
    hs["alg"] = json!("HS256");
    let mut no_verify = good.public_jwk();
    no_verify["kid"] = json!("ops");
    no_verify["key_ops"] = json!(["encrypt"]);
    let mut no_use_no_alg = good.public_jwk();
    no_use_no_alg["kid"] = json!("bare");
    no_use_no_alg.as_object_mut().unwrap().remove("use");
    no_use_no_alg.as_object_mut().unwrap().remove("alg");
    let doc = json!({
        "keys": [
            good.public_jwk(), enc, rs512, hs, no_verify, no_use_no_alg,
            raw_jwk("weak-1024", 1024, &[1, 0, 1]),
            raw_jwk("e-is-1", 2048, &[1]),
            raw_jwk("e-even", 2048, &[2]),
            raw_jwk("huge-16384", 16384, &[1, 0, 1]),
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "oct", "kid": "oct", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": 7, "n": "AA", "e": "AQAB"},
            "not an object",
        ],
        "public_cert": {"kid": "good", "cert": "-----BEGIN CERTIFICATE-----"},
        "public_certs": [{"kid": "good", "cert": "-----BEGIN CERTIFICATE-----"}],
    });
    let set = KeySet::parse(doc.to_string().as_bytes(), 64).unwrap();
    assert_eq!(set.len(), 2, "{set:?}");
    assert!(set.get("good").is_some() && set.get("bare").is_some());
}

#[test]
fn duplicate_kids_are_dropped_rather_than_guessed() {
    let (a, b, c) = (key("dup"), key("dup"), key("other"));
    let set = KeySet::parse(jwks_json(&[&a, &b, &c]).as_bytes(), 64).unwrap();
    assert!(set.get("dup").is_none());
    assert!(set.get("other").is_some());
    assert_eq!(KeySet::parse(jwks_json(&[&a, &b]).as_bytes(), 64).unwrap_err(), FetchError::NoUsableKeys);
}

#[test]
fn key_count_is_capped() {
    let keys: Vec<DevKey> = (0..5).map(|i| key(&format!("k{i}"))).collect();
    let refs: Vec<&DevKey> = keys.iter().collect();
    assert_eq!(KeySet::parse(jwks_json(&refs).as_bytes(), 3).unwrap().len(), 3);
}

#[tokio::test]
async fn a_document_with_only_weak_keys_is_a_failed_fetch_not_an_empty_key_set() {
    let key = key("k1");
    let server = JwksServer::start(&[&key]).await;
    let clock = clock();
    let (gate, keys) = gate_and_keys(&server.url(), clock.clone(), JwksConfig::default());
    ok(&gate, &key.sign(&alice_at(NOW))).await;
    // The endpoint now serves only a weak key: the good keys already cached must survive.
    server.set_body(json!({"keys": [raw_jwk("k1", 1024, &[1, 0, 1])]}).to_string());
    clock.advance(Duration::from_secs(601));
    ok(&gate, &key.sign(&alice_at(NOW))).await;
    settled(&keys).await;
    assert_eq!(server.fetches(), 2);
    // After the failed refresh the good key still verifies a token it has never seen.
    ok(&gate, &key.sign(&alice_at(NOW + 601))).await;
}

/// The first answer is an older copy "from a shared cache" (as a Workers isolate's first fetch
/// may be answered from the Cache API); every later one comes from the origin, the real server.
#[derive(Debug)]
struct SharedCacheFirst {
    copy: String,
    origin: HttpFetcher,
    copy_served: std::sync::atomic::AtomicBool,
}

impl ztgate::identity::KeyFetcher for SharedCacheFirst {
    fn fetch(&self) -> ztgate::BoxFuture<'_, Result<ztgate::identity::FetchedJwks, FetchError>> {
        if self.copy_served.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return self.origin.fetch();
        }
        let body = self.copy.clone().into_bytes();
        Box::pin(
            async move { Ok(ztgate::identity::FetchedJwks { body, max_age: None, from_shared_cache: true }) },
        )
    }
}

#[tokio::test]
async fn a_kid_missing_from_a_shared_cache_copy_is_fetched_from_the_origin_at_once() {
    let (old, new) = (key("old"), key("new"));
    let server = JwksServer::start(&[&old, &new]).await;
    let fetcher = SharedCacheFirst {
        copy: jwks_json(&[&old]),
        origin: HttpFetcher::with_limits(&server.url(), Duration::from_secs(2), 1024 * 1024).unwrap(),
        copy_served: Default::default(),
    };
    let gate = Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
        .fetcher(Arc::new(fetcher))
        .clock(clock())
        .policy(policy())
        .build()
        .unwrap();
    // The copy predates `new`: the first request does not take the copy's word for it.
    ok(&gate, &new.sign(&alice_at(NOW))).await;
    assert_eq!(server.fetches(), 1, "one fetch from the origin");
    ok(&gate, &old.sign(&alice_at(NOW))).await;
    assert_eq!(server.fetches(), 1);
}
