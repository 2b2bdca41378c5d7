//! A fleet of two admin servers sharing one real `redis-server` on 127.0.0.1
//! (`ZTGATE_REDIS_URL`): a webhook replayed to the other instance is 409, a key revoked through
//! one is refused by the other within a second, failed-authentication budgets hold across
//! both, and with Redis killed the documented answers come within the timeout — revocations and
//! replays refused (503), budgets let through — and after Redis restarts everything works again
//! with no revocation lost. Queue consumers on two connections share envelope claims: a
//! redelivery opens again on either, a copy in another message is a replay on both, and with
//! Redis down the claim fails closed (retry later).
//!
//! Needs `redis-server` on PATH (Debian package `redis-server`; CI installs it), so it runs
//! only with the `redis-tests` feature:
//! `cargo build --example admin_server && cargo test --features redis-tests --test redis_fleet`.

mod common;
mod example_harness;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{AUD, JwksServer, TEAM};
use example_harness::{Server, TempDb};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use ztgate::dev::{DevKey, user_claims};

const ADMIN: &str = "alice@acme.com";
const OPS_KEY: &str = "ops-key-0123456789abcdef0123456789abcdef"; // pragma: allowlist secret
const BACKUP_KEY: &str = "backup-key-fedcba9876543210fedcba98765432"; // pragma: allowlist secret
const WEBHOOK_KEY: &[u8; 32] = b"svix-endpoint-key-for-the-tests!";

fn key() -> &'static DevKey {
    static KEY: OnceLock<DevKey> = OnceLock::new();
    KEY.get_or_init(|| common::key("k1"))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
}

/// A `redis-server` on a loopback port, its data in a temp dir that outlives restarts (AOF,
/// fsync on every write: a kill loses nothing that was acknowledged).
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = PathBuf::from(format!("{}.redis", TempDb::new().path()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self { child: None, port, dir };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) and waits until it answers.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir", self.dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (Debian package redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A production admin server on `redis`, with the budget `failures`.
fn instance(jwks: &JwksServer, db: &TempDb, redis: &Redis, failures: &str) -> Server {
    instance_with(jwks, db, redis, failures, &[])
}

/// [`instance`] with `extra` variables.
fn instance_with(
    jwks: &JwksServer,
    db: &TempDb,
    redis: &Redis,
    failures: &str,
    extra: &[(&'static str, &str)],
) -> Server {
    let mut vars = vec![
        ("ZTGATE_LISTEN", "127.0.0.1:0".into()),
        ("ZTGATE_TEAM_DOMAIN", TEAM.into()),
        ("ZTGATE_CERTS_URL", jwks.url()),
        ("ZTGATE_AUD", AUD.into()),
        ("ZTGATE_ADMIN_EMAILS", ADMIN.into()),
        ("ZTGATE_DB", db.path()),
        ("ZTGATE_API_KEYS", format!("ops:{OPS_KEY}, backup:{BACKUP_KEY}")),
        ("ZTGATE_WEBHOOK_SECRET", format!("whsec_{}", STANDARD.encode(WEBHOOK_KEY))),
        ("ZTGATE_REDIS_URL", redis.url()),
        ("ZTGATE_AUTH_FAILURES", failures.into()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    Server::start(&vars)
}

async fn stats(server: &Server, key: &str, ip: &str) -> reqwest::Response {
    let req = http().get(server.url("/ops/stats")).header("X-Api-Key", key).header("CF-Connecting-IP", ip);
    req.send().await.unwrap()
}

async fn code_of(res: reqwest::Response) -> (StatusCode, String) {
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or("").to_owned())
}

async fn post_webhook(server: &Server, id: &str, body: &[u8]) -> StatusCode {
    let timestamp = now();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_KEY).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let signature = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let req = http()
        .post(server.url("/webhooks/inbound"))
        .header("content-type", "application/json")
        .header("svix-id", id)
        .header("svix-timestamp", timestamp.to_string())
        .header("svix-signature", signature)
        .body(body.to_vec());
    req.send().await.unwrap().status()
}

async fn revoke(server: &Server, kind: &str, id: &str) {
    let res = http()
        .post(server.url("/admin/revocations"))
        .header("Cf-Access-Jwt-Assertion", key().sign(&user_claims(TEAM, AUD, ADMIN, now(), 600)))
        .header("X-Api-Key", OPS_KEY)
        .json(&json!({ "kind": kind, "id": id }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

fn unique(label: &str) -> String {
    format!(
        "msg_{label}_{}_{}",
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_replays_revocations_and_budgets() {
    let redis = Redis::start();
    let jwks = JwksServer::start(&[key()]).await;
    let (db_a, db_b) = (TempDb::new(), TempDb::new());
    let a = instance(&jwks, &db_a, &redis, "4/60s");
    let b = instance(&jwks, &db_b, &redis, "4/60s");
    // Each connected before it took requests.
    for server in [&a, &b] {
        assert!(server.logs().contains("redis_connected"), "{}", server.logs());
    }

    // A webhook accepted by one instance is a replay at the other.
    let id = unique("fleet");
    assert_eq!(post_webhook(&a, &id, br#"{"type":"ping"}"#).await, StatusCode::OK);
    assert_eq!(post_webhook(&b, &id, br#"{"type":"ping"}"#).await, StatusCode::CONFLICT);

    // A key revoked through one instance is refused by the other within a second.
    assert_eq!(stats(&b, BACKUP_KEY, "192.0.2.1").await.status(), StatusCode::OK);
    revoke(&a, "api_key", "backup").await;
    let revoked_at = Instant::now();
    loop {
        let (status, code) = code_of(stats(&b, BACKUP_KEY, "192.0.2.1").await).await;
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(code, "revoked");
            break;
        }
        assert!(revoked_at.elapsed() < Duration::from_secs(1), "still accepted after a second");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(stats(&a, BACKUP_KEY, "192.0.2.1").await.status(), StatusCode::UNAUTHORIZED);

    // Four failures spread over both instances spend one budget: both answer 429 then.
    let guess = "guess-0123456789abcdef0123456789";
    for server in [&a, &b, &a, &b] {
        assert_eq!(stats(server, guess, "198.51.100.7").await.status(), StatusCode::UNAUTHORIZED);
    }
    for server in [&a, &b] {
        let res = stats(server, OPS_KEY, "198.51.100.7").await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(res.headers().contains_key("retry-after"));
    }
    assert_eq!(
        stats(&b, OPS_KEY, "198.51.100.8").await.status(),
        StatusCode::OK,
        "another client is not limited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_revocations_and_replays_fail_closed_budgets_open_and_all_recovers() {
    let mut redis = Redis::start();
    let jwks = JwksServer::start(&[key()]).await;
    let db = TempDb::new();
    let a = instance(&jwks, &db, &redis, "2/60s");
    // The operator's other choices: revocations and replays unchecked, budgets refused.
    let (db_b, db_c) = (TempDb::new(), TempDb::new());
    let open =
        [("ZTGATE_REVOCATIONS_WHEN_UNAVAILABLE", "allow"), ("ZTGATE_REPLAYS_WHEN_UNAVAILABLE", "accept")];
    let b = instance_with(&jwks, &db_b, &redis, "2/60s", &open);
    let c =
        instance_with(&jwks, &db_c, &redis, "2/60s", &[("ZTGATE_RATE_LIMITS_WHEN_UNAVAILABLE", "refuse")]);
    revoke(&a, "api_key", "backup").await;
    assert_eq!(stats(&a, OPS_KEY, "192.0.2.1").await.status(), StatusCode::OK);

    redis.kill();
    // The local view of the revocations goes stale within half a second: then, refused.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let started = Instant::now();
    let (status, code) = code_of(stats(&a, OPS_KEY, "192.0.2.1").await).await;
    assert_eq!((status, code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "state_unavailable"));
    assert!(started.elapsed() < Duration::from_secs(2), "not bounded: {:?}", started.elapsed());
    assert_eq!(post_webhook(&a, &unique("down"), b"{}").await, StatusCode::SERVICE_UNAVAILABLE);
    // Budgets fail open: wrong keys are still just wrong (401), never 429 or 503.
    for _ in 0..4 {
        let (status, code) = code_of(stats(&a, "guess-0123456789abcdef0123456789", "192.0.2.2").await).await;
        assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "invalid_credential"), "{}", a.logs());
    }
    assert!(a.logs().contains("rate_limiter_unavailable"), "{}", a.logs());
    // Where the operator chose so: verified requests and signed webhooks pass unchecked (and
    // say so), and a budget that cannot be checked refuses.
    assert_eq!(stats(&b, OPS_KEY, "192.0.2.1").await.status(), StatusCode::OK);
    assert_eq!(post_webhook(&b, &unique("open"), b"{}").await, StatusCode::OK);
    assert!(
        b.logs().contains("revocations_unchecked") && b.logs().contains("replay_unchecked"),
        "{}",
        b.logs()
    );
    let (status, code) = code_of(stats(&c, OPS_KEY, "192.0.2.1").await).await;
    assert_eq!((status, code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "state_unavailable"));

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while stats(&a, OPS_KEY, "192.0.2.1").await.status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "did not recover after Redis restarted:\n{}", a.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No revocation was lost with the restart.
    let (status, code) = code_of(stats(&a, BACKUP_KEY, "192.0.2.1").await).await;
    assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "revoked"));
    assert_eq!(post_webhook(&a, &unique("back"), b"{}").await, StatusCode::OK);
}

/// Two queue consumers (two connections, as two instances would have) verify envelopes against
/// one Redis: the first delivery opens, the same delivery redelivered to the other consumer
/// opens again, a copy in another message is refused on both; with Redis killed the claim is
/// unavailable (the message is retried later, never accepted unchecked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_claims_are_shared_by_the_fleet_and_fail_closed_when_redis_is_down() {
    use std::sync::Arc;
    use ztgate::identity::envelope::{EnvelopeError, EnvelopeVerifier, sign_envelope};
    use ztgate::identity::hmac_token::KeyRing;
    use ztgate::redis::RedisStore;

    let mut redis = Redis::start();
    let ring = Arc::new(KeyRing::parse("q1:queue-key-for-the-redis-fleet-test-0123").unwrap()); // pragma: allowlist secret
    let store =
        || RedisStore::connect(&redis.url()).unwrap().with_timeout(Duration::from_millis(200)).unwrap();
    let (store_a, store_b) = (store(), store());
    // Connected first, as a consumer's start would (a busy machine can take longer than one
    // call's bound to make a connection).
    for store in [&store_a, &store_b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = store.ping().await {
            assert!(Instant::now() < deadline, "Redis did not answer a PING: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let consumer = |store: &RedisStore| {
        EnvelopeVerifier::new(ring.clone(), "orders", Arc::new(store.envelope_claims())).unwrap()
    };
    let (a, b) = (consumer(&store_a), consumer(&store_b));
    let t = now();
    let envelope = sign_envelope(&ring, "orders", r#"{"order":1}"#, t, Duration::from_secs(600)).unwrap();

    let first = a.verify(&envelope, "delivery-1", t).await.unwrap();
    assert!(!first.is_redelivery());
    let again = b.verify(&envelope, "delivery-1", t + 1).await.unwrap();
    assert!(again.is_redelivery(), "the same delivery on the other consumer opens again");
    for consumer in [&a, &b] {
        let copy = consumer.verify(&envelope, "delivery-2", t + 2).await;
        assert!(matches!(copy, Err(EnvelopeError::Replayed)), "{copy:?}");
    }
    // Another envelope is independent.
    let other = sign_envelope(&ring, "orders", r#"{"order":2}"#, t, Duration::from_secs(600)).unwrap();
    assert!(!b.verify(&other, "delivery-3", t).await.unwrap().is_redelivery());

    redis.kill();
    let third = sign_envelope(&ring, "orders", r#"{"order":3}"#, t, Duration::from_secs(600)).unwrap();
    let started = Instant::now();
    let down = a.verify(&third, "delivery-4", t).await;
    assert!(matches!(down, Err(EnvelopeError::StoreUnavailable(_))), "{down:?}");
    assert!(!down.unwrap_err().is_permanent(), "a store outage is retried, not dropped");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded: {:?}", started.elapsed());

    // After a restart (append-only file) the claims are still there.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let replay = loop {
        match a.verify(&envelope, "delivery-5", t + 3).await {
            Err(EnvelopeError::StoreUnavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other,
        }
    };
    assert!(matches!(replay, Err(EnvelopeError::Replayed)), "{replay:?}");
}
