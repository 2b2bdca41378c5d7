//! Turnstile verification against a real siteverify server on 127.0.0.1: each test is an
//! attack (a forged, replayed, stolen or stale token; a siteverify that is down, slow or
//! lying) and the answer ztgate must give.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Captured;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use ztgate::Rejection;
use ztgate::clock::FixedClock;
use ztgate::identity::FetchError;
use ztgate::identity::turnstile::{
    MAX_TOKEN_BYTES, TurnstileConfig, TurnstileError, TurnstileVerifier, VerifiedHuman,
};
use ztgate::native::HttpSiteverify;
use ztgate::secrets::{EnvSecret, Secret, SecretError, SecretFuture, SecretSource, StaticSecret};

/// 2027-01-15T08:00:00Z.
const NOW: u64 = 1_800_000_000;
const CHALLENGE_TS: &str = "2027-01-15T08:00:00.123Z";
const HOST: &str = "blog.example.com";
const ACTION: &str = "subscribe";
/// Characters that must be percent-encoded, so a wrong encoding changes what is posted.
const SECRET: &str = "0x4AAAAAAAsecretKEY+/=&%sp ace";
const SECRET_ENCODED: &str = "0x4AAAAAAAsecretKEY%2B%2F%3D%26%25sp+ace";
const TOKEN: &str = "0.tokenVALUEfromTheWidget-_+/=&x";
const TOKEN_ENCODED: &str = "0.tokenVALUEfromTheWidget-_%2B%2F%3D%26x";
const CLIENT_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));

/// How the siteverify server answers.
#[derive(Clone, Debug)]
enum Reply {
    /// This status, `Content-Type: application/json`, this body.
    Json(u16, String),
    /// 200 with this `Content-Type` and body.
    Typed(&'static str, String),
    /// Wait this long, then answer 200 with the body.
    Slow(Duration, String),
    /// 200 JSON, no `Content-Length`: the body runs until the connection closes.
    Unframed(String),
    /// 302 to this URL.
    Redirect(String),
    /// 200 JSON declaring this `Content-Length`, then the body, then silence for 10 s.
    Declared(usize, String),
}

/// What the server received for one request.
#[derive(Clone, Debug)]
struct Received {
    head: String,
    body: String,
}

struct ServerState {
    reply: Mutex<Reply>,
    received: Mutex<Vec<Received>>,
    calls: AtomicUsize,
}

/// A siteverify endpoint on an ephemeral loopback port that records every form posted to it.
struct Siteverify {
    addr: SocketAddr,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Siteverify {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Siteverify {
    async fn start(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ServerState {
            reply: Mutex::new(reply),
            received: Mutex::default(),
            calls: AtomicUsize::new(0),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Self { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}/turnstile/v0/siteverify", self.addr)
    }

    fn reply(&self, reply: Reply) {
        *self.state.reply.lock().unwrap() = reply;
    }

    fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

async fn serve(mut stream: TcpStream, state: Arc<ServerState>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
        if data.len() > 64 * 1024 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    let body = String::from_utf8_lossy(&data[head_end..head_end + length]).into_owned();
    state.calls.fetch_add(1, Ordering::SeqCst);
    state.received.lock().unwrap().push(Received { head, body });
    let reply = state.reply.lock().unwrap().clone();
    let response = match reply {
        Reply::Json(status, body) => framed(status, "application/json", &body),
        Reply::Typed(content_type, body) => framed(200, content_type, &body),
        Reply::Slow(delay, body) => {
            tokio::time::sleep(delay).await;
            framed(200, "application/json", &body)
        }
        Reply::Unframed(body) => {
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{body}")
        }
        Reply::Declared(length, body) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
            );
            let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(10)).await;
            return;
        }
        Reply::Redirect(to) => {
            format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn framed(status: u16, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A siteverify success for `hostname`, `action`, `challenge_ts`.
fn success(hostname: &str, action: &str, challenge_ts: &str) -> String {
    serde_json::json!({
        "success": true,
        "challenge_ts": challenge_ts,
        "hostname": hostname,
        "error-codes": [],
        "action": action,
        "cdata": "session-42",
        "metadata": {"ephemeral_id": "x:1"},
    })
    .to_string()
}

fn genuine() -> String {
    success(HOST, ACTION, CHALLENGE_TS)
}

fn failure(codes: &[&str]) -> String {
    serde_json::json!({"success": false, "error-codes": codes, "messages": []}).to_string()
}

fn config(url: &str) -> TurnstileConfig {
    TurnstileConfig::new([HOST])
        .unwrap()
        .with_action(ACTION)
        .unwrap()
        .with_siteverify_url(url)
        .with_timeout(Duration::from_millis(500))
        .unwrap()
}

fn clock_at(now: u64) -> Arc<FixedClock> {
    Arc::new(FixedClock::at(now))
}

fn verifier_at(server: &Siteverify, now: u64) -> TurnstileVerifier {
    TurnstileVerifier::new(config(&server.url()), StaticSecret::new(SECRET), clock_at(now)).unwrap()
}

async fn verify_at(server: &Siteverify, now: u64) -> Result<VerifiedHuman, TurnstileError> {
    verifier_at(server, now).verify(TOKEN, Some(CLIENT_IP)).await
}

/// The answer a route gives for `e`: its status and code.
fn answered(e: TurnstileError) -> (StatusCode, &'static str) {
    let rejection = Rejection::from(e);
    (rejection.status(), rejection.code())
}

fn assert_unavailable(result: Result<VerifiedHuman, TurnstileError>, case: &str) {
    match result {
        Err(e @ TurnstileError::Unavailable(_)) => {
            assert_eq!(answered(e), (StatusCode::SERVICE_UNAVAILABLE, "state_unavailable"), "{case}");
        }
        other => panic!("{case}: expected to fail closed as unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_genuine_token_is_verified_with_its_hostname_and_action() {
    let server = Siteverify::start(Reply::Json(200, genuine())).await;
    let human = verify_at(&server, NOW + 10).await.unwrap();
    assert_eq!(human.hostname(), HOST);
    assert_eq!(human.action(), Some(ACTION));
    assert_eq!(human.cdata(), Some("session-42"));
    assert_eq!(human.challenge_ts(), NOW);
    assert_eq!(server.calls(), 1);
    // The edges: exactly max-age old, and exactly the allowed skew ahead, still pass.
    assert!(verify_at(&server, NOW + 300).await.is_ok());
    assert!(verify_at(&server, NOW - 60).await.is_ok());
}

#[tokio::test]
async fn the_secret_token_and_client_ip_are_posted_form_encoded() {
    let server = Siteverify::start(Reply::Json(200, genuine())).await;
    verify_at(&server, NOW + 10).await.unwrap();
    let sent = &server.received()[0];
    assert!(sent.head.starts_with("POST /turnstile/v0/siteverify HTTP/1.1\r\n"), "{}", sent.head);
    let head = sent.head.to_ascii_lowercase();
    assert!(head.contains("\r\ncontent-type: application/x-www-form-urlencoded\r\n"), "{head}");
    assert_eq!(sent.body, format!("secret={SECRET_ENCODED}&response={TOKEN_ENCODED}&remoteip=203.0.113.7"));
    // Decoded the way a form parser reads it, the values come back byte for byte.
    let url = reqwest::Url::parse(&format!("http://x/?{}", sent.body)).unwrap();
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let expected = [("secret", SECRET), ("response", TOKEN), ("remoteip", "203.0.113.7")];
    assert_eq!(pairs, expected.map(|(k, v)| (k.to_owned(), v.to_owned())));

    // Without a client address, no `remoteip` field at all.
    verifier_at(&server, NOW + 10).verify(TOKEN, None).await.unwrap();
    assert_eq!(server.received()[1].body, format!("secret={SECRET_ENCODED}&response={TOKEN_ENCODED}"));
}

#[tokio::test]
async fn a_failed_challenge_is_refused() {
    let server = Siteverify::start(Reply::Json(200, failure(&["invalid-input-response"]))).await;
    let err = verify_at(&server, NOW + 10).await.unwrap_err();
    assert_eq!(err, TurnstileError::Failed { error_codes: vec!["invalid-input-response".to_owned()] });
    assert_eq!(answered(err), (StatusCode::UNAUTHORIZED, "invalid_credential"));
    // `success: false` alone is a refusal, whatever else the answer says.
    let mut lying: serde_json::Value = serde_json::from_str(&genuine()).unwrap();
    lying["success"] = false.into();
    server.reply(Reply::Json(200, lying.to_string()));
    assert_eq!(verify_at(&server, NOW + 10).await, Err(TurnstileError::Failed { error_codes: vec![] }));
}

#[tokio::test]
async fn a_token_solved_on_another_hostname_is_refused() {
    let server = Siteverify::start(Reply::Json(200, success("evil.example.net", ACTION, CHALLENGE_TS))).await;
    let err = verify_at(&server, NOW + 10).await.unwrap_err();
    assert_eq!(err, TurnstileError::HostnameMismatch { hostname: "evil.example.net".to_owned() });
    assert_eq!(answered(err), (StatusCode::UNAUTHORIZED, "invalid_credential"));
    // A suffix or a parent domain is another hostname too.
    for other in ["blog.example.com.evil.net", "example.com", "xblog.example.com"] {
        server.reply(Reply::Json(200, success(other, ACTION, CHALLENGE_TS)));
        let err = verify_at(&server, NOW + 10).await.unwrap_err();
        assert!(matches!(err, TurnstileError::HostnameMismatch { .. }), "{other}: {err:?}");
    }
}

#[tokio::test]
async fn a_token_solved_for_another_action_is_refused() {
    let server = Siteverify::start(Reply::Json(200, success(HOST, "login", CHALLENGE_TS))).await;
    let err = verify_at(&server, NOW + 10).await.unwrap_err();
    assert_eq!(err, TurnstileError::ActionMismatch { action: Some("login".to_owned()) });
    assert_eq!(answered(err), (StatusCode::UNAUTHORIZED, "invalid_credential"));
    // A widget without an action does not satisfy a required one.
    server.reply(Reply::Json(200, success(HOST, "", CHALLENGE_TS)));
    assert_eq!(verify_at(&server, NOW + 10).await, Err(TurnstileError::ActionMismatch { action: None }));
}

#[tokio::test]
async fn a_stale_challenge_is_refused() {
    let server = Siteverify::start(Reply::Json(200, genuine())).await;
    let err = verify_at(&server, NOW + 301).await.unwrap_err();
    assert_eq!(err, TurnstileError::ChallengeTooOld);
    assert_eq!(answered(err), (StatusCode::UNAUTHORIZED, "invalid_credential"));
    // A configured max age is the bound, not Cloudflare's 300 s.
    let config = config(&server.url()).with_max_age(Duration::from_secs(60)).unwrap();
    let strict = TurnstileVerifier::new(config, StaticSecret::new(SECRET), clock_at(NOW + 61)).unwrap();
    assert_eq!(strict.verify(TOKEN, None).await, Err(TurnstileError::ChallengeTooOld));
}

#[tokio::test]
async fn a_challenge_dated_in_the_future_is_refused() {
    let server = Siteverify::start(Reply::Json(200, genuine())).await;
    let err = verify_at(&server, NOW - 61).await.unwrap_err();
    assert_eq!(err, TurnstileError::ChallengeInFuture);
    assert_eq!(answered(err), (StatusCode::UNAUTHORIZED, "invalid_credential"));
}

#[tokio::test]
async fn a_replayed_token_is_refused_as_reuse_and_nothing_is_cached() {
    let server = Siteverify::start(Reply::Json(200, genuine())).await;
    let verifier = verifier_at(&server, NOW + 10);
    verifier.verify(TOKEN, Some(CLIENT_IP)).await.unwrap();
    // Cloudflare answers a second siteverify of the same token with `timeout-or-duplicate`.
    server.reply(Reply::Json(200, failure(&["timeout-or-duplicate"])));
    let err = verifier.verify(TOKEN, Some(CLIENT_IP)).await.unwrap_err();
    assert_eq!(err, TurnstileError::Reused);
    assert_eq!(server.calls(), 2, "the second verification must ask siteverify again, not a cache");
    let rejection = Rejection::from(err);
    assert_eq!((rejection.status(), rejection.code()), (StatusCode::UNAUTHORIZED, "invalid_credential"));
    assert!(rejection.to_string().contains("already used"), "{rejection}");
}

#[tokio::test]
async fn siteverify_down_fails_closed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}/siteverify");
    let verifier = TurnstileVerifier::new(config(&url), StaticSecret::new(SECRET), clock_at(NOW)).unwrap();
    assert_unavailable(verifier.verify(TOKEN, Some(CLIENT_IP)).await, "connection refused");
}

#[tokio::test]
async fn a_slow_siteverify_fails_closed_within_the_timeout() {
    let server = Siteverify::start(Reply::Slow(Duration::from_secs(10), genuine())).await;
    let started = Instant::now();
    let result = verify_at(&server, NOW + 10).await;
    let waited = started.elapsed();
    assert_eq!(result, Err(TurnstileError::Unavailable(FetchError::Timeout)));
    assert_unavailable(result, "slow");
    assert!(waited < Duration::from_secs(3), "the 500 ms timeout held the request {waited:?}");
}

#[tokio::test]
async fn a_siteverify_error_status_fails_closed() {
    for status in [500, 503, 429, 404] {
        let server = Siteverify::start(Reply::Json(status, genuine())).await;
        let result = verify_at(&server, NOW + 10).await;
        assert_eq!(result, Err(TurnstileError::Unavailable(FetchError::Status(status))));
        assert_unavailable(result, &format!("HTTP {status}"));
    }
    // Cloudflare's own failure, reported in a 200.
    let server = Siteverify::start(Reply::Json(200, failure(&["internal-error"]))).await;
    assert_unavailable(verify_at(&server, NOW + 10).await, "internal-error");
}

#[tokio::test]
async fn a_garbage_answer_fails_closed() {
    let mut wrong_type: serde_json::Value = serde_json::from_str(&genuine()).unwrap();
    wrong_type["success"] = "true".into();
    let mut no_hostname: serde_json::Value = serde_json::from_str(&genuine()).unwrap();
    no_hostname.as_object_mut().unwrap().remove("hostname");
    let mut no_time: serde_json::Value = serde_json::from_str(&genuine()).unwrap();
    no_time.as_object_mut().unwrap().remove("challenge_ts");
    let twice = genuine().replacen('{', "{\"success\":false,", 1);
    let cases = [
        ("not JSON", Reply::Json(200, "<html>hello</html>".to_owned())),
        ("empty", Reply::Json(200, String::new())),
        ("success as a string", Reply::Json(200, wrong_type.to_string())),
        ("success twice", Reply::Json(200, twice)),
        ("no hostname", Reply::Json(200, no_hostname.to_string())),
        ("no challenge_ts", Reply::Json(200, no_time.to_string())),
        ("challenge_ts not RFC 3339", Reply::Json(200, success(HOST, ACTION, "1800000000"))),
        ("an HTML page", Reply::Typed("text/html", genuine())),
    ];
    let server = Siteverify::start(Reply::Json(200, genuine())).await;
    for (case, reply) in cases {
        server.reply(reply);
        assert_unavailable(verify_at(&server, NOW + 10).await, case);
    }
}

#[tokio::test]
async fn a_huge_answer_fails_closed() {
    let mut padded: serde_json::Value = serde_json::from_str(&genuine()).unwrap();
    padded["messages"] = "x".repeat(20 * 1024).into();
    let padded = padded.to_string();
    let server = Siteverify::start(Reply::Json(200, padded.clone())).await;
    let declared = verify_at(&server, NOW + 10).await;
    assert_eq!(declared, Err(TurnstileError::Unavailable(FetchError::TooLarge { limit: 16 * 1024 })));
    // A declared length over the cap is refused before reading (not waited for).
    server.reply(Reply::Declared(1024 * 1024, genuine()));
    let started = Instant::now();
    let lying = verify_at(&server, NOW + 10).await;
    assert_eq!(lying, Err(TurnstileError::Unavailable(FetchError::TooLarge { limit: 16 * 1024 })));
    assert!(started.elapsed() < Duration::from_millis(400), "waited {:?}", started.elapsed());
    // No Content-Length: the cap holds while streaming.
    server.reply(Reply::Unframed(padded));
    let streamed = verify_at(&server, NOW + 10).await;
    assert_eq!(streamed, Err(TurnstileError::Unavailable(FetchError::TooLarge { limit: 16 * 1024 })));
    // The same answer within the cap passes: the size is the reason.
    server.reply(Reply::Unframed(genuine()));
    assert!(verify_at(&server, NOW + 10).await.is_ok());
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_fails_closed() {
    let elsewhere = Siteverify::start(Reply::Json(200, genuine())).await;
    let server = Siteverify::start(Reply::Redirect(elsewhere.url())).await;
    let result = verify_at(&server, NOW + 10).await;
    assert_eq!(result, Err(TurnstileError::Unavailable(FetchError::Status(302))));
    assert_eq!(elsewhere.calls(), 0, "the form (and its secret) went to the redirect target");
}

#[tokio::test]
async fn an_empty_or_oversized_token_makes_no_call() {
    let server = Siteverify::start(Reply::Json(200, genuine())).await;
    let verifier = verifier_at(&server, NOW + 10);
    let err = verifier.verify("", Some(CLIENT_IP)).await.unwrap_err();
    assert_eq!(err, TurnstileError::MissingToken);
    assert_eq!(answered(err), (StatusCode::UNAUTHORIZED, "invalid_credential"));
    let oversized = "a".repeat(MAX_TOKEN_BYTES + 1);
    let err = verifier.verify(&oversized, Some(CLIENT_IP)).await.unwrap_err();
    assert_eq!(err, TurnstileError::TokenTooLong);
    assert_eq!(answered(err), (StatusCode::UNAUTHORIZED, "invalid_credential"));
    let megabyte = "a".repeat(1024 * 1024);
    assert_eq!(verifier.verify(&megabyte, None).await, Err(TurnstileError::TokenTooLong));
    assert_eq!(server.calls(), 0, "a refused token was posted");
    // The longest token Cloudflare issues is posted.
    verifier.verify(&"a".repeat(MAX_TOKEN_BYTES), None).await.unwrap();
    assert_eq!(server.calls(), 1);
}

#[tokio::test]
async fn a_rejected_secret_key_is_the_operators_error_not_the_visitors() {
    for code in ["invalid-input-secret", "missing-input-secret"] {
        let server = Siteverify::start(Reply::Json(200, failure(&[code]))).await;
        let err = verify_at(&server, NOW + 10).await.unwrap_err();
        assert_eq!(err, TurnstileError::SecretRejected, "{code}");
        assert_eq!(answered(err), (StatusCode::SERVICE_UNAVAILABLE, "not_configured"), "{code}");
    }
}

#[tokio::test]
async fn a_missing_secret_key_fails_closed_without_a_call() {
    let server = Siteverify::start(Reply::Json(200, genuine())).await;
    let unset = EnvSecret::new("ZTGATE_TEST_TURNSTILE_SECRET_THAT_IS_NEVER_SET");
    let verifier = TurnstileVerifier::new(config(&server.url()), unset, clock_at(NOW + 10)).unwrap();
    let err = verifier.verify(TOKEN, Some(CLIENT_IP)).await.unwrap_err();
    assert!(matches!(err, TurnstileError::Secret(SecretError::Missing(_))), "{err:?}");
    assert_eq!(answered(err), (StatusCode::SERVICE_UNAVAILABLE, "not_configured"));
    assert_eq!(server.calls(), 0);
    // A store that cannot answer is a 503 too.
    let down = TurnstileVerifier::new(config(&server.url()), Rotating::down(), clock_at(NOW + 10)).unwrap();
    let err = down.verify(TOKEN, None).await.unwrap_err();
    assert_eq!(answered(err), (StatusCode::SERVICE_UNAVAILABLE, "state_unavailable"));
    assert_eq!(server.calls(), 0);
}

/// Answers `key-1`, `key-2`, ... on successive reads, or fails every read.
#[derive(Debug, Default)]
struct Rotating {
    reads: AtomicUsize,
    down: bool,
}

impl Rotating {
    fn down() -> Self {
        Self { reads: AtomicUsize::new(0), down: true }
    }
}

impl SecretSource for Rotating {
    fn get(&self) -> SecretFuture<'_> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        let down = self.down;
        Box::pin(async move {
            if down {
                Err(SecretError::Unavailable("store unreachable".to_owned()))
            } else {
                Ok(Secret::from(format!("key-{n}")))
            }
        })
    }
}

#[tokio::test]
async fn the_secret_key_is_read_on_every_verification() {
    let server = Siteverify::start(Reply::Json(200, genuine())).await;
    let verifier =
        TurnstileVerifier::new(config(&server.url()), Rotating::default(), clock_at(NOW + 10)).unwrap();
    verifier.verify(TOKEN, None).await.unwrap();
    verifier.verify(TOKEN, None).await.unwrap();
    let bodies: Vec<String> = server.received().into_iter().map(|r| r.body).collect();
    assert_eq!(
        bodies,
        [format!("secret=key-1&response={TOKEN_ENCODED}"), format!("secret=key-2&response={TOKEN_ENCODED}")]
    );
}

#[tokio::test]
async fn neither_the_secret_nor_the_token_reaches_logs_errors_or_debug() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = Siteverify::start(Reply::Json(200, genuine())).await;
    let verifier = verifier_at(&server, NOW + 10);
    let mut printed = format!("{verifier:?}");
    let replies = [
        Reply::Json(200, genuine()),
        Reply::Json(200, failure(&["invalid-input-response"])),
        Reply::Json(200, failure(&["timeout-or-duplicate"])),
        Reply::Json(200, failure(&["invalid-input-secret"])),
        Reply::Json(200, success("evil.example.net", "login", CHALLENGE_TS)),
        Reply::Json(500, genuine()),
        Reply::Json(200, "<html>".to_owned()),
        Reply::Redirect(format!("{}?{TOKEN}", server.url())),
    ];
    for reply in replies {
        server.reply(reply);
        // Other tests of this binary run on threads without a subscriber: a callsite one of
        // them reached first may have cached "nobody listens". Recompute, so every event is seen.
        tracing::callsite::rebuild_interest_cache();
        let result = verifier.verify(TOKEN, Some(CLIENT_IP)).await;
        printed.push_str(&format!("{result:?}"));
        if let Err(e) = result {
            let rejection = Rejection::from(e.clone());
            let response: http::Response<String> = rejection.to_response();
            printed.push_str(&format!("{e} {rejection} {} {:?}", response.body(), response.headers()));
        }
    }
    printed.push_str(&format!("{:?}", HttpSiteverify::new(&server.url()).unwrap()));
    let request = ztgate::identity::turnstile::SiteverifyRequest::new(&Secret::from(SECRET), TOKEN, None);
    printed.push_str(&format!("{request:?}"));
    assert_eq!(server.calls(), 8);

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for outcome in ["verified", "refused", "siteverify_unavailable", "secret_rejected"] {
        assert!(logs.contains(outcome), "no {outcome} event: {logs}");
    }
    assert!(logs.contains("mechanism=\"turnstile\""), "{logs}");
    for (what, needle) in [
        ("secret", SECRET),
        ("encoded secret", SECRET_ENCODED),
        ("secret's key part", "secretKEY"),
        ("token", TOKEN),
        ("encoded token", TOKEN_ENCODED),
        ("token's value part", "tokenVALUE"),
    ] {
        assert!(!logs.contains(needle), "the {what} reached the logs: {logs}");
        assert!(!printed.contains(needle), "the {what} reached an error or Debug output: {printed}");
    }
}

#[tokio::test]
async fn plain_http_siteverify_is_refused_outside_loopback() {
    let config = config("http://challenges.example.com/turnstile/v0/siteverify");
    let err = TurnstileVerifier::new(config, StaticSecret::new(SECRET), clock_at(NOW)).unwrap_err();
    assert_eq!(err.setting(), "siteverify_url");
    assert!(HttpSiteverify::new("https://challenges.cloudflare.com/turnstile/v0/siteverify").is_ok());
    assert!(HttpSiteverify::new("file:///etc/passwd").is_err());
    assert!(HttpSiteverify::new("http://127.0.0.1.evil.example/siteverify").is_err());
}

#[test]
fn each_refusal_answers_with_its_stable_code() {
    let unauthorized = (StatusCode::UNAUTHORIZED, "invalid_credential");
    let unavailable = (StatusCode::SERVICE_UNAVAILABLE, "state_unavailable");
    let not_configured = (StatusCode::SERVICE_UNAVAILABLE, "not_configured");
    let cases = [
        (TurnstileError::MissingToken, unauthorized),
        (TurnstileError::TokenTooLong, unauthorized),
        (TurnstileError::Failed { error_codes: vec![] }, unauthorized),
        (TurnstileError::Reused, unauthorized),
        (TurnstileError::HostnameMismatch { hostname: "x".into() }, unauthorized),
        (TurnstileError::ActionMismatch { action: None }, unauthorized),
        (TurnstileError::ChallengeTooOld, unauthorized),
        (TurnstileError::ChallengeInFuture, unauthorized),
        (TurnstileError::Unavailable(FetchError::Timeout), unavailable),
        (TurnstileError::Secret(SecretError::Unavailable("down".into())), unavailable),
        (TurnstileError::Secret(SecretError::Missing("TURNSTILE_SECRET".into())), not_configured),
        (TurnstileError::SecretRejected, not_configured),
    ];
    let mut reasons = std::collections::HashSet::new();
    for (error, expected) in cases {
        let rejection = Rejection::from(error.clone());
        assert_eq!((rejection.status(), rejection.code()), expected, "{error:?}");
        if expected == unauthorized {
            assert!(reasons.insert(error.reason()), "two refusals share a reason: {error:?}");
            assert_eq!(
                rejection,
                Rejection::InvalidCredential { mechanism: "turnstile", reason: error.reason() }
            );
        }
    }
}
