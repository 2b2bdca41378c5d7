//! Black-box tests of `examples/admin_server.rs`: the compiled example runs as a child process
//! and is driven over real HTTP on 127.0.0.1, in dev mode and in production mode against a
//! loopback JWKS server (`common::JwksServer`).
//!
//! `cargo test` builds the example. When selecting this file alone, build it first:
//! `cargo build --example admin_server && cargo test --test admin_server`.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{AUD, JwksServer, TEAM};
use reqwest::StatusCode;
use serde_json::{Value, json};
use ztgate::dev::{DevKey, service_claims, user_claims};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const ADMIN: &str = "alice@acme.com";
const SERVICE: &str = "ci.access";
const VARS: [&str; 8] = [
    "ZTGATE_LISTEN",
    "ZTGATE_TEAM_DOMAIN",
    "ZTGATE_CERTS_URL",
    "ZTGATE_AUD",
    "ZTGATE_ADMIN_EMAILS",
    "ZTGATE_SERVICE_TOKENS",
    "ZTGATE_DB",
    "RUST_LOG",
];

// ---------------------------------------------------------------------------------------------
// Harness

/// `target/<profile>/examples/admin_server`, next to this test's `deps` directory.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir =
        exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("examples").join(format!("admin_server{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --example admin_server` (or plain `cargo test`, which builds examples)",
        bin.display()
    );
    let built = modified(&bin);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest = [manifest.join("examples/admin_server.rs"), manifest.join("src")]
        .iter()
        .map(|p| newest_mtime(p))
        .max()
        .unwrap();
    assert!(
        newest <= built,
        "{} is older than its sources: run `cargo build --example admin_server` (or plain `cargo test`)",
        bin.display()
    );
    bin
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(UNIX_EPOCH)
}

fn newest_mtime(path: &Path) -> SystemTime {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            entries.flatten().map(|e| newest_mtime(&e.path())).max().unwrap_or(UNIX_EPOCH).max(modified(path))
        }
        Err(_) => modified(path),
    }
}

/// The example with exactly `vars` set among the variables it reads.
fn command(vars: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(example_binary());
    for var in VARS {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Collects a child's stderr (its logs) on a thread, so the pipe never fills up.
fn collect(mut from: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (text, handle)
}

/// A running example server, killed when dropped.
struct Server {
    child: Child,
    base: String,
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(vars: &[(&str, String)]) -> Self {
        let mut child = command(vars).spawn().expect("spawn the admin_server example");
        let (stderr, stderr_thread) = collect(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line); // keep draining even when nobody listens any more
            }
        });
        let mut server = Self { child, base: String::new(), stdout: Vec::new(), stderr };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let base = line.strip_prefix("listening on ").map(str::to_owned);
                    server.stdout.push(line);
                    if let Some(base) = base {
                        server.base = base;
                        return server;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no `listening on` line within {START_TIMEOUT:?}; stderr:\n{}", server.logs())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait();
                    let _ = stderr_thread.join();
                    panic!("the server exited before listening ({status:?}); stderr:\n{}", server.logs());
                }
            }
        }
    }

    fn url(&self, path: &str) -> String {
        assert!(self.base.starts_with("http://127.0.0.1:"), "not on loopback: {}", self.base);
        format!("{}{path}", self.base)
    }

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// Runs the example expecting it to exit on its own (bad configuration): status and stderr.
fn run_to_exit(vars: &[(&str, String)]) -> (ExitStatus, String) {
    let mut child = command(vars).spawn().expect("spawn the admin_server example");
    let (stderr, stderr_thread) = collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {EXIT_TIMEOUT:?}; stderr:\n{}", stderr.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    stderr_thread.join().unwrap();
    let text = stderr.lock().unwrap().clone();
    (status, text)
}

fn assert_config_error(vars: &[(&str, String)], var: &str) {
    let (status, stderr) = run_to_exit(vars);
    assert_eq!(status.code(), Some(2), "exit status {status:?}; stderr:\n{stderr}");
    assert!(stderr.contains(var), "stderr does not name {var}:\n{stderr}");
    assert!(!stderr.contains("panicked"), "panicked instead of a clean error:\n{stderr}");
}

/// A SQLite file in the temp dir, removed on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!(
            "ztgate-admin-test-{}-{}-{nanos}.sqlite",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        Self(std::env::temp_dir().join(name))
    }

    fn path(&self) -> String {
        self.0.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The Access signing key, shared: RSA generation is slow in debug builds.
fn key() -> &'static DevKey {
    static KEY: OnceLock<DevKey> = OnceLock::new();
    KEY.get_or_init(|| common::key("k1"))
}

fn user_token(email: &str) -> String {
    key().sign(&user_claims(TEAM, AUD, email, now(), 3600))
}

fn service_token(common_name: &str) -> String {
    key().sign(&service_claims(TEAM, AUD, common_name, now(), 3600))
}

/// A production-mode server admitting ADMIN and SERVICE, its JWKS server and its database.
struct Production {
    server: Server,
    db: TempDb,
    jwks: JwksServer,
}

impl Production {
    async fn start() -> Self {
        let jwks = JwksServer::start(&[key()]).await;
        let db = TempDb::new();
        let server = Server::start(&production_vars(&jwks, &db));
        Self { server, db, jwks }
    }

    /// Stops the server and starts a new one on the same database.
    fn restart(&mut self) {
        // Kill and reap the old process before the new one opens the file.
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
        self.server = Server::start(&production_vars(&self.jwks, &self.db));
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = http().get(self.server.url(path));
        if let Some(token) = token {
            req = req.header("Cf-Access-Jwt-Assertion", token);
        }
        req.send().await.unwrap()
    }

    async fn post_note(&self, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut req = http().post(self.server.url("/admin/notes")).json(body);
        if let Some(token) = token {
            req = req.header("Cf-Access-Jwt-Assertion", token);
        }
        req.send().await.unwrap()
    }

    async fn notes(&self) -> Vec<Value> {
        let res = self.get("/admin/notes", Some(&user_token(ADMIN))).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json::<Vec<Value>>().await.unwrap()
    }
}

fn production_vars(jwks: &JwksServer, db: &TempDb) -> Vec<(&'static str, String)> {
    vec![
        ("ZTGATE_LISTEN", "127.0.0.1:0".into()),
        ("ZTGATE_TEAM_DOMAIN", TEAM.into()),
        ("ZTGATE_CERTS_URL", jwks.url()),
        ("ZTGATE_AUD", AUD.into()),
        ("ZTGATE_ADMIN_EMAILS", format!("{ADMIN}, bob@acme.com")),
        ("ZTGATE_SERVICE_TOKENS", SERVICE.into()),
        ("ZTGATE_DB", db.path()),
    ]
}

async fn json_of(res: reqwest::Response) -> Value {
    let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    res.json().await.unwrap()
}

async fn assert_refused(res: reqwest::Response, status: StatusCode, code: &str) {
    assert_eq!(res.status(), status);
    if status == StatusCode::UNAUTHORIZED {
        assert!(res.headers().contains_key("www-authenticate"), "401 without WWW-Authenticate");
    }
    assert_eq!(json_of(res).await["code"], code);
}

// ---------------------------------------------------------------------------------------------
// Dev mode

fn dev_server(db: &TempDb) -> Server {
    Server::start(&[("ZTGATE_LISTEN", "127.0.0.1:0".into()), ("ZTGATE_DB", db.path())])
}

#[tokio::test]
async fn dev_mode_prints_a_curl_line_whose_token_is_accepted_as_dev_user() {
    let db = TempDb::new();
    let server = dev_server(&db);
    let curl = server.stdout.iter().find(|l| l.trim_start().starts_with("curl ")).expect("a curl line");
    let (_, rest) = curl.split_once("-H 'Cf-Access-Jwt-Assertion: ").expect("the assertion header");
    let (token, url) = rest.split_once("' ").unwrap();
    assert_eq!(url, server.url("/admin/whoami"));

    let res = http().get(url).header("Cf-Access-Jwt-Assertion", token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await, json!({ "kind": "user", "email": "dev@localhost" }));

    // Verification went through the JWKS this server publishes, as in production.
    let jwks = json_of(http().get(server.url("/cdn-cgi/access/certs")).send().await.unwrap()).await;
    assert_eq!(jwks["keys"][0]["alg"], "RS256");
    assert!(!server.logs().contains(token), "a token was logged");
}

#[tokio::test]
async fn healthz_is_public() {
    let db = TempDb::new();
    let server = dev_server(&db);
    let res = http().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await, json!({ "status": "ok" }));
}

#[tokio::test]
async fn dev_mode_admin_without_token_is_401_missing_credential() {
    let db = TempDb::new();
    let server = dev_server(&db);
    for path in ["/admin/whoami", "/admin/notes"] {
        let res = http().get(server.url(path)).send().await.unwrap();
        assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
    }
}

// ---------------------------------------------------------------------------------------------
// Production mode: identity

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_user_is_verified_as_user() {
    let p = Production::start().await;
    let res = p.get("/admin/whoami", Some(&user_token(ADMIN))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await, json!({ "kind": "user", "email": ADMIN }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_service_token_is_verified_as_service() {
    let p = Production::start().await;
    let res = p.get("/admin/whoami", Some(&service_token(SERVICE))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await, json!({ "kind": "service", "common_name": SERVICE }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_not_in_admin_emails_is_403_forbidden() {
    let p = Production::start().await;
    let res = p.get("/admin/whoami", Some(&user_token("mallory@acme.com"))).await;
    assert_refused(res, StatusCode::FORBIDDEN, "forbidden").await;
    // Another service token is not allowed either.
    let res = p.get("/admin/whoami", Some(&service_token("other.access"))).await;
    assert_refused(res, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_for_another_audience_is_401() {
    let p = Production::start().await;
    let token = key().sign(&user_claims(TEAM, "some-other-app", ADMIN, now(), 3600));
    let res = p.get("/admin/whoami", Some(&token)).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_401_token_expired() {
    let p = Production::start().await;
    let token = key().sign(&user_claims(TEAM, AUD, ADMIN, now() - 7200, 3600));
    let res = p.get("/admin/whoami", Some(&token)).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "token_expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_admin_paths_need_identity_before_404() {
    let p = Production::start().await;
    let res = p.get("/admin/no-such-route", None).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
    let res = p.get("/admin/no-such-route", Some(&user_token(ADMIN))).await;
    assert_refused(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = p.get("/no-such-route", None).await;
    assert_refused(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_assertion_header_is_431_and_the_server_keeps_serving() {
    let p = Production::start().await;
    let huge = "a".repeat(64 * 1024);
    let res = p.get("/admin/whoami", Some(&huge)).await;
    assert!(res.status().is_client_error(), "status {}", res.status());
    assert_refused(res, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "header_too_large").await;

    assert_eq!(p.get("/healthz", None).await.status(), StatusCode::OK);
    assert_eq!(p.get("/admin/whoami", Some(&user_token(ADMIN))).await.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Production mode: storage

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_are_stored_with_their_verified_author() {
    let p = Production::start().await;
    let admin = user_token(ADMIN);
    let res = p.post_note(Some(&admin), &json!({ "text": "rotate the keys" })).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = json_of(res).await["id"].as_i64().expect("numeric id");
    let res = p.post_note(Some(&service_token(SERVICE)), &json!({ "text": "backup done" })).await;
    assert_eq!(res.status(), StatusCode::CREATED);

    let notes = p.notes().await;
    assert_eq!(
        notes,
        vec![
            json!({ "id": id, "text": "rotate the keys", "author": format!("user:{ADMIN}") }),
            json!({ "id": id + 1, "text": "backup done", "author": format!("service:{SERVICE}") }),
        ]
    );
    let logs = p.server.logs();
    assert!(logs.contains("note_created") && logs.contains("layer=\"storage\""), "no storage log:\n{logs}");
    assert!(!logs.contains(&admin), "a token was logged:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_posts_write_nothing() {
    let p = Production::start().await;
    let note = json!({ "text": "should never be stored" });
    let res = p.post_note(Some(&user_token("mallory@acme.com")), &note).await;
    assert_refused(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = p.post_note(None, &note).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
    let expired = key().sign(&user_claims(TEAM, AUD, ADMIN, now() - 7200, 3600));
    let res = p.post_note(Some(&expired), &note).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "token_expired").await;
    let other_app = key().sign(&user_claims(TEAM, "some-other-app", ADMIN, now(), 3600));
    let res = p.post_note(Some(&other_app), &note).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "invalid_token").await;

    assert_eq!(p.notes().await, Vec::<Value>::new());
    assert!(!p.server.logs().contains("note_created"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_note_bodies_are_400_with_a_json_code() {
    let p = Production::start().await;
    let admin = user_token(ADMIN);
    for body in [
        json!({}),
        json!({ "text": null }),
        json!({ "text": "" }),
        json!({ "text": "  \n " }),
        json!({ "text": 42 }),
        json!({ "text": "x".repeat(4097) }),
    ] {
        let res = p.post_note(Some(&admin), &body).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "body {body}");
        assert_eq!(json_of(res).await["code"], "invalid_note", "body {body}");
    }

    let malformed = http()
        .post(p.server.url("/admin/notes"))
        .header("Cf-Access-Jwt-Assertion", &admin)
        .header("content-type", "application/json")
        .body(r#"{"text": "unterminated"#)
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(malformed).await["code"], "malformed_json");

    let not_json =
        http().post(p.server.url("/admin/notes")).header("Cf-Access-Jwt-Assertion", &admin).body("text=hi");
    let res = not_json.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(json_of(res).await["code"], "unsupported_media_type");

    // The largest allowed note is accepted, and it is the only one stored.
    let res = p.post_note(Some(&admin), &json!({ "text": "é".repeat(2048) })).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(p.notes().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_64_kib_are_413_with_a_json_code() {
    let p = Production::start().await;
    let res = p.post_note(Some(&user_token(ADMIN)), &json!({ "text": "x".repeat(100 * 1024) })).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_of(res).await["code"], "body_too_large");
    assert_eq!(p.notes().await.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_persist_across_a_restart() {
    let mut p = Production::start().await;
    let res = p.post_note(Some(&user_token(ADMIN)), &json!({ "text": "survives restarts" })).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let before = p.server.base.clone();

    p.restart();
    assert_ne!(p.server.base, before, "a new process on a new port");
    let notes = p.notes().await;
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["text"], "survives restarts");
    assert_eq!(notes[0]["author"], format!("user:{ADMIN}"));
}

// ---------------------------------------------------------------------------------------------
// Invalid configuration: exit status 2, naming the variable

fn production_config() -> Vec<(&'static str, String)> {
    vec![
        ("ZTGATE_LISTEN", "127.0.0.1:0".into()),
        ("ZTGATE_TEAM_DOMAIN", TEAM.into()),
        ("ZTGATE_CERTS_URL", "http://127.0.0.1:9/cdn-cgi/access/certs".into()),
        ("ZTGATE_AUD", AUD.into()),
        ("ZTGATE_ADMIN_EMAILS", ADMIN.into()),
    ]
}

fn with(
    mut vars: Vec<(&'static str, String)>,
    var: &'static str,
    value: Option<&str>,
) -> Vec<(&'static str, String)> {
    vars.retain(|(k, _)| *k != var);
    if let Some(value) = value {
        vars.push((var, value.to_owned()));
    }
    vars
}

#[test]
fn team_domain_without_https_exits_2_naming_it() {
    let db = TempDb::new();
    let vars = with(production_config(), "ZTGATE_TEAM_DOMAIN", Some("acme.com"));
    assert_config_error(&with(vars, "ZTGATE_DB", Some(&db.path())), "ZTGATE_TEAM_DOMAIN");
}

#[test]
fn missing_or_empty_aud_in_production_exits_2_naming_it() {
    let db = TempDb::new();
    let vars = with(production_config(), "ZTGATE_DB", Some(&db.path()));
    assert_config_error(&with(vars.clone(), "ZTGATE_AUD", None), "ZTGATE_AUD");
    assert_config_error(&with(vars, "ZTGATE_AUD", Some(" , ")), "ZTGATE_AUD");
}

#[test]
fn unparseable_listen_address_exits_2_naming_it() {
    let db = TempDb::new();
    assert_config_error(&[("ZTGATE_LISTEN", "nonsense".into()), ("ZTGATE_DB", db.path())], "ZTGATE_LISTEN");
}

#[test]
fn plain_http_certs_url_off_loopback_exits_2_naming_it() {
    let db = TempDb::new();
    let vars = with(production_config(), "ZTGATE_CERTS_URL", Some("http://example.com/cdn-cgi/access/certs"));
    assert_config_error(&with(vars, "ZTGATE_DB", Some(&db.path())), "ZTGATE_CERTS_URL");
}

#[test]
fn production_without_admins_exits_2() {
    let db = TempDb::new();
    let vars = with(production_config(), "ZTGATE_ADMIN_EMAILS", None);
    assert_config_error(&with(vars, "ZTGATE_DB", Some(&db.path())), "ZTGATE_SERVICE_TOKENS");
}

#[test]
fn production_settings_without_team_domain_exit_2_instead_of_dev_mode() {
    let db = TempDb::new();
    let vars = with(production_config(), "ZTGATE_TEAM_DOMAIN", None);
    assert_config_error(&with(vars, "ZTGATE_DB", Some(&db.path())), "ZTGATE_TEAM_DOMAIN");
}

#[test]
fn unopenable_db_exits_2_naming_it() {
    let dir = TempDb::new().0.with_extension("missing-dir");
    let db = dir.join("notes.sqlite").to_str().unwrap().to_owned();
    assert_config_error(&[("ZTGATE_LISTEN", "127.0.0.1:0".into()), ("ZTGATE_DB", db)], "ZTGATE_DB");
}
