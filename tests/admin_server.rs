//! Black-box tests of `examples/admin_server/`: the compiled example runs as a child process
//! and is driven over real HTTP on 127.0.0.1, in dev mode and in production mode against a
//! loopback JWKS server (`common::JwksServer`).
//!
//! `cargo test` builds the example. When selecting this file alone, build it first:
//! `cargo build --example admin_server && cargo test --test admin_server`.

mod common;
mod example_harness;

use std::io::Read;

use example_harness::{Server, TempDb, run_to_exit};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{AUD, JwksServer, TEAM};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use ztgate::dev::{DevKey, service_claims, user_claims};
use ztgate::identity::hmac_token::KeyRing;

const ADMIN: &str = "alice@acme.com";
const SERVICE: &str = "ci.access";
/// The API keys production mode is given (`ZTGATE_API_KEYS`).
const OPS_KEY: &str = "ops-key-0123456789abcdef0123456789abcdef";
const BACKUP_KEY: &str = "backup-key-fedcba9876543210fedcba98765432";
/// HMAC keys for unsubscribe links (`ZTGATE_HMAC_KEYS`): k1 first, k2 for rotation.
const HMAC_K1: &str = "k1-secret-0123456789abcdef0123456789abcdef";
const HMAC_K2: &str = "k2-secret-fedcba9876543210fedcba9876543210";
/// The Svix endpoint key; `ZTGATE_WEBHOOK_SECRET` is `whsec_` + its base64.
const WEBHOOK_KEY: &[u8; 32] = b"svix-endpoint-key-for-the-tests!";
const MIB: usize = 1024 * 1024;
/// The RFC 8058 one-click body (`List-Unsubscribe-Post: List-Unsubscribe=One-Click`).
const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

// ---------------------------------------------------------------------------------------------
// Harness

fn assert_config_error(vars: &[(&str, String)], var: &str) {
    let (status, stderr) = run_to_exit(vars);
    assert_eq!(status.code(), Some(2), "exit status {status:?}; stderr:\n{stderr}");
    assert!(stderr.contains(var), "stderr does not name {var}:\n{stderr}");
    assert!(!stderr.contains("panicked"), "panicked instead of a clean error:\n{stderr}");
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

/// A production-mode server admitting ADMIN and SERVICE, with API keys, HMAC keys and a
/// webhook secret; its JWKS server, its database and its environment.
struct Production {
    server: Server,
    /// Kept alive (and the file removed) for as long as the server runs.
    _db: TempDb,
    _jwks: JwksServer,
    vars: Vec<(&'static str, String)>,
}

impl Production {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts with `changes` applied to the default production environment (`None` unsets).
    async fn start_with(changes: &[(&'static str, Option<&str>)]) -> Self {
        let jwks = JwksServer::start(&[key()]).await;
        let db = TempDb::new();
        let mut vars = production_vars(&jwks, &db);
        for (var, value) in changes {
            vars = with(vars, var, *value);
        }
        let server = Server::start(&vars);
        Self { server, _db: db, _jwks: jwks, vars }
    }

    /// Stops the server and starts a new one on the same database and environment.
    fn restart(&mut self) {
        // Kill and reap the old process before the new one opens the file.
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
        self.server = Server::start(&self.vars);
    }

    /// Restarts with `var` changed (`None` unsets it).
    fn restart_with(&mut self, var: &'static str, value: Option<&str>) {
        self.vars = with(std::mem::take(&mut self.vars), var, value);
        self.restart();
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = http().get(self.server.url(path));
        if let Some(token) = token {
            req = req.header("Cf-Access-Jwt-Assertion", token);
        }
        req.send().await.unwrap()
    }

    /// `method path` with `headers`, no body.
    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = http().request(method, self.server.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
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

    async fn create_note(&self, text: &str) -> i64 {
        let res = self.post_note(Some(&user_token(ADMIN)), &json!({ "text": text })).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        json_of(res).await["id"].as_i64().expect("numeric id")
    }

    async fn notes(&self) -> Vec<Value> {
        let res = self.get("/admin/notes", Some(&user_token(ADMIN))).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json::<Vec<Value>>().await.unwrap()
    }

    async fn post_link_request(&self, token: &str, body: &Value) -> reqwest::Response {
        let req = http().post(self.server.url("/admin/unsubscribe-links")).json(body);
        req.header("Cf-Access-Jwt-Assertion", token).send().await.unwrap()
    }

    /// Mints an unsubscribe link token as ADMIN.
    async fn mint_link(&self, email: &str, ttl_secs: u64) -> String {
        let body = json!({ "email": email, "ttl_secs": ttl_secs });
        let res = self.post_link_request(&user_token(ADMIN), &body).await;
        assert_eq!(res.status(), StatusCode::OK);
        json_of(res).await["token"].as_str().expect("a token").to_owned()
    }

    /// Unsubscribes through a link as a mail client does (RFC 8058 one-click POST).
    async fn follow_link(&self, token: &str) -> reqwest::Response {
        self.one_click(&format!("token={token}"), "application/x-www-form-urlencoded", ONE_CLICK).await
    }

    /// POSTs `body` as `content_type` to `/api/unsubscribe?{query}`.
    async fn one_click(&self, query: &str, content_type: &str, body: &str) -> reqwest::Response {
        http()
            .post(self.server.url(&format!("/api/unsubscribe?{query}")))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// Posts `body` as Svix delivery `id` signed at `timestamp`, with `signature` (default:
    /// the correct one).
    async fn post_webhook(
        &self,
        id: &str,
        timestamp: u64,
        body: &[u8],
        signature: Option<String>,
    ) -> reqwest::Response {
        let signature = signature.unwrap_or_else(|| svix_signature(WEBHOOK_KEY, id, timestamp, body));
        http()
            .post(self.server.url("/webhooks/inbound"))
            .header("content-type", "application/json")
            .header("svix-id", id)
            .header("svix-timestamp", timestamp.to_string())
            .header("svix-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn stats(&self) -> Value {
        let res = self.call("GET", "/ops/stats", &[("X-Api-Key", OPS_KEY)]).await;
        assert_eq!(res.status(), StatusCode::OK);
        json_of(res).await
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
        ("ZTGATE_API_KEYS", format!("ops:{OPS_KEY}, backup:{BACKUP_KEY}")),
        ("ZTGATE_HMAC_KEYS", format!("k1:{HMAC_K1}")),
        ("ZTGATE_WEBHOOK_SECRET", webhook_secret()),
    ]
}

fn webhook_secret() -> String {
    format!("whsec_{}", STANDARD.encode(WEBHOOK_KEY))
}

/// Svix's signature header value: `v1,` + base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}").
fn svix_signature(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// A fresh Svix message id, unique across tests and runs.
fn msg_id(label: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("msg_{label}_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// Headers Cloudflare's "Add TLS client auth headers" transform sets for a verified cert.
fn cert_headers(revoked: bool) -> Vec<(&'static str, &'static str)> {
    vec![
        ("cf-cert-presented", "true"),
        ("cf-cert-verified", "SUCCESS"),
        ("cf-cert-revoked", if revoked { "1" } else { "0" }),
        ("cf-cert-fingerprint-sha256", "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12"), // pragma: allowlist secret
        ("cf-cert-subject-dn", "CN=deploy-bot,O=Acme"),
        ("cf-cert-issuer-dn", "CN=Acme Client CA"),
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
    // Dev mode admits by group: the dev user's identity came from this server's get-identity.
    assert_eq!(
        json_of(res).await,
        json!({ "kind": "user", "email": "dev@localhost", "groups": ["ztgate-dev-admins"] })
    );

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
async fn the_token_cache_can_be_shortened_or_turned_off_and_tokens_still_verify() {
    for setting in ["off", "5s", "600s"] {
        let p = Production::start_with(&[("ZTGATE_TOKEN_CACHE_MAX_AGE", Some(setting))]).await;
        let token = user_token(ADMIN);
        for _ in 0..3 {
            let res = p.get("/admin/whoami", Some(&token)).await;
            assert_eq!(res.status(), StatusCode::OK, "{setting}");
        }
        let res = p.get("/admin/whoami", Some(&user_token("mallory@acme.com"))).await;
        assert_refused(res, StatusCode::FORBIDDEN, "forbidden").await;
    }
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
    // A method no admin route has: still identity first, then a JSON 405.
    let res = p.call("PUT", "/admin/notes", &[]).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
    let admin = user_token(ADMIN);
    let res = p.call("PUT", "/admin/notes", &[("Cf-Access-Jwt-Assertion", &admin)]).await;
    assert_refused(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_routes_are_403_no_policy_whatever_the_credentials() {
    let p = Production::start().await;
    let admin = user_token(ADMIN);
    for (method, path) in [
        ("GET", "/secret-debug"),
        ("GET", "/no-such-route"),
        ("POST", "/healthz"),
        ("GET", "/healthz/"),
        ("GET", "//admin/whoami"),
        ("GET", "/webhooks/inbound"),
        ("POST", "/ops/stats"),
        ("GET", "/cdn-cgi/access/certs"), // only declared in dev mode
    ] {
        for headers in [vec![], vec![("Cf-Access-Jwt-Assertion", admin.as_str()), ("X-Api-Key", OPS_KEY)]] {
            let res = p.call(method, path, &headers).await;
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{method} {path}");
            assert_eq!(json_of(res).await["code"], "no_policy", "{method} {path}");
        }
    }
    assert!(p.server.logs().contains("outcome=\"no_policy\""));
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
fn an_invalid_token_cache_max_age_exits_2_naming_it() {
    for bad in ["0", "601s", "500ms", "ten", "", "on"] {
        let db = TempDb::new();
        let vars = with(production_config(), "ZTGATE_DB", Some(&db.path()));
        assert_config_error(
            &with(vars, "ZTGATE_TOKEN_CACHE_MAX_AGE", Some(bad)),
            "ZTGATE_TOKEN_CACHE_MAX_AGE",
        );
    }
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

// ---------------------------------------------------------------------------------------------
// Dev mode: the API key

#[tokio::test]
async fn dev_mode_prints_an_api_key_curl_line_for_ops_stats() {
    let db = TempDb::new();
    let server = dev_server(&db);
    let curl = server.stdout.iter().find(|l| l.contains("X-Api-Key")).expect("an API-key curl line");
    let (_, rest) = curl.split_once("-H 'X-Api-Key: ").expect("the key header");
    let (dev_key, url) = rest.split_once("' ").unwrap();
    assert_eq!(url, server.url("/ops/stats"));
    assert_eq!(dev_key.len(), 32, "{dev_key}");
    assert!(dev_key.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{dev_key}");

    let res = http().get(url).header("X-Api-Key", dev_key).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await["key"], "dev");
    assert!(!server.logs().contains(dev_key), "the dev key was logged");

    // A new key per start.
    let again = dev_server(&db);
    assert!(!again.stdout.iter().any(|l| l.contains(dev_key)), "the same dev key twice");
}

// ---------------------------------------------------------------------------------------------
// DELETE /admin/notes/{id}: an Access admin AND an API key

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_access_and_api_key_is_204_and_the_note_is_gone() {
    let p = Production::start().await;
    let keep = p.create_note("keep me").await;
    let doomed = p.create_note("delete me").await;
    let admin = user_token(ADMIN);
    let path = format!("/admin/notes/{doomed}");
    let res = p.call("DELETE", &path, &[("Cf-Access-Jwt-Assertion", &admin), ("X-Api-Key", OPS_KEY)]).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let notes = p.notes().await;
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["id"], keep);

    // The deletion is recorded with the principal and both proofs.
    let logs = p.server.logs();
    let line = logs.lines().find(|l| l.contains("note_deleted")).expect("a deletion log line");
    assert!(line.contains("layer=\"storage\""), "{line}");
    assert!(line.contains(&format!("principal=\"user:{ADMIN}\"")), "{line}");
    assert!(line.contains("access_jwt=") && line.contains("api_key=api_key:ops"), "{line}");

    // `Authorization: Bearer` works as well as `X-Api-Key`; a second delete finds nothing.
    let bearer = format!("Bearer {BACKUP_KEY}");
    let res =
        p.call("DELETE", &path, &[("Cf-Access-Jwt-Assertion", &admin), ("Authorization", &bearer)]).await;
    assert_refused(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = p
        .call("DELETE", "/admin/notes/seven", &[("Cf-Access-Jwt-Assertion", &admin), ("X-Api-Key", OPS_KEY)])
        .await;
    assert_refused(res, StatusCode::BAD_REQUEST, "invalid_id").await;
}

/// Deletes note `id` with `headers` and checks the refusal and that the note is still there.
async fn assert_delete_refused(p: &Production, headers: &[(&str, &str)], status: StatusCode, code: &str) {
    let id = p.create_note("must survive").await;
    let res = p.call("DELETE", &format!("/admin/notes/{id}"), headers).await;
    assert_refused(res, status, code).await;
    assert!(p.notes().await.iter().any(|n| n["id"] == id), "note {id} was deleted");
    assert!(!p.server.logs().contains("note_deleted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_access_only_is_401_and_the_note_stays() {
    let p = Production::start().await;
    let admin = user_token(ADMIN);
    let headers = [("Cf-Access-Jwt-Assertion", admin.as_str())];
    assert_delete_refused(&p, &headers, StatusCode::UNAUTHORIZED, "missing_credential").await;
    // A service token is an admin too, and still needs the key.
    let service = service_token(SERVICE);
    let headers = [("Cf-Access-Jwt-Assertion", service.as_str())];
    assert_delete_refused(&p, &headers, StatusCode::UNAUTHORIZED, "missing_credential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_api_key_only_is_401_and_the_note_stays() {
    let p = Production::start().await;
    assert_delete_refused(&p, &[("X-Api-Key", OPS_KEY)], StatusCode::UNAUTHORIZED, "missing_credential")
        .await;
    let bearer = format!("Bearer {OPS_KEY}");
    let headers = [("Authorization", bearer.as_str())];
    assert_delete_refused(&p, &headers, StatusCode::UNAUTHORIZED, "missing_credential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_access_and_a_wrong_api_key_is_401_and_the_note_stays() {
    let p = Production::start().await;
    let admin = user_token(ADMIN);
    let wrong = format!("{OPS_KEY}x");
    let headers = [("Cf-Access-Jwt-Assertion", admin.as_str()), ("X-Api-Key", wrong.as_str())];
    assert_delete_refused(&p, &headers, StatusCode::UNAUTHORIZED, "invalid_credential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_by_a_forbidden_user_with_an_api_key_is_403_and_the_note_stays() {
    let p = Production::start().await;
    let mallory = user_token("mallory@acme.com");
    let headers = [("Cf-Access-Jwt-Assertion", mallory.as_str()), ("X-Api-Key", OPS_KEY)];
    assert_delete_refused(&p, &headers, StatusCode::FORBIDDEN, "forbidden").await;
}

// ---------------------------------------------------------------------------------------------
// Unsubscribe links

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_link_round_trip_is_recorded_once() {
    let p = Production::start().await;
    let token = p.mint_link("carol@example.com", 3600).await;
    assert!(token.starts_with("v2.k1."), "{token}");
    for _ in 0..2 {
        let res = p.follow_link(&token).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(json_of(res).await, json!({ "email": "carol@example.com", "unsubscribed": true }));
    }
    assert_eq!(p.stats().await["unsubscribes"], 1);
    // Percent-encoded, the token still works (query parameters are decoded).
    let encoded = token.replace('.', "%2E");
    assert_eq!(p.follow_link(&encoded).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_without_a_token_is_401_missing_credential() {
    let p = Production::start().await;
    for path in ["/api/unsubscribe", "/api/unsubscribe?other=1", "/api/unsubscribe?tokens=x"] {
        let res = p.call("GET", path, &[]).await;
        assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
    }
    // An Access admin is no unsubscribe token either.
    let admin = user_token(ADMIN);
    let res = p.call("GET", "/api/unsubscribe", &[("Cf-Access-Jwt-Assertion", &admin)]).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tampered_expired_or_misdirected_unsubscribe_tokens_are_401() {
    let p = Production::start().await;
    let good = p.mint_link("dave@example.com", 3600).await;
    let same_ring = KeyRing::parse(&format!("k1:{HMAC_K1}")).unwrap();
    let other_ring = KeyRing::parse(&format!("k1:{HMAC_K2}")).unwrap();
    let hour = Duration::from_secs(3600);

    let mut tampered = good.clone().into_bytes();
    let i = tampered.len() - 5;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    // The same subject with the expiry moved: the MAC no longer matches.
    let parts: Vec<&str> = good.split('.').collect();
    let later =
        format!("v2.k1.{}.{}.{}.{}", parts[2].parse::<u64>().unwrap() + 1, parts[3], parts[4], parts[5]);

    for (what, token) in [
        (
            "another key ring, same kid",
            other_ring.mint("unsubscribe", "dave@example.com", now(), hour).unwrap(),
        ),
        ("another purpose", same_ring.mint("magic-link", "dave@example.com", now(), hour).unwrap()),
        ("expired", same_ring.mint("unsubscribe", "dave@example.com", now() - 7200, hour).unwrap()),
        ("tampered MAC", tampered),
        ("moved expiry", later),
        ("garbage", "not-a-token".to_owned()),
    ] {
        let res = p.follow_link(&token).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert!(res.headers().contains_key("www-authenticate"), "{what}");
        assert_eq!(json_of(res).await["code"], "invalid_credential", "{what}");
    }
    // The genuine one still works, and nothing else was recorded.
    assert_eq!(p.follow_link(&good).await.status(), StatusCode::OK);
    assert_eq!(p.stats().await["unsubscribes"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minting_links_needs_an_admin_and_a_valid_email_and_ttl() {
    let p = Production::start().await;
    let admin = user_token(ADMIN);
    let long_email = format!("{}@example.com", "a".repeat(250));
    for body in [
        json!({ "ttl_secs": 60 }),
        json!({ "email": "no-at-sign", "ttl_secs": 60 }),
        json!({ "email": long_email, "ttl_secs": 60 }),
        json!({ "email": "erin@example.com" }),
        json!({ "email": "erin@example.com", "ttl_secs": 0 }),
        json!({ "email": "erin@example.com", "ttl_secs": 30 * 86_400 + 1 }),
        json!({ "email": "erin@example.com", "ttl_secs": -5 }),
        json!({ "email": 7, "ttl_secs": 60 }),
    ] {
        let res = p.post_link_request(&admin, &body).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(json_of(res).await["code"], "invalid_request", "{body}");
    }
    let max = json!({ "email": "erin@example.com", "ttl_secs": 30 * 86_400 });
    assert_eq!(p.post_link_request(&admin, &max).await.status(), StatusCode::OK);

    let res = p.post_link_request(&user_token("mallory@acme.com"), &max).await;
    assert_refused(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = http().post(p.server.url("/admin/unsubscribe-links")).json(&max).send().await.unwrap();
    assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
    let res = p.call("POST", "/admin/unsubscribe-links", &[("X-Api-Key", OPS_KEY)]).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_survive_a_restart_and_a_key_rotation_with_fixed_hmac_keys() {
    let mut p = Production::start().await;
    let old_link = p.mint_link("frank@example.com", 3600).await;

    p.restart();
    assert_eq!(p.follow_link(&old_link).await.status(), StatusCode::OK);

    // Rotation: the new key signs, the old one still verifies.
    p.restart_with("ZTGATE_HMAC_KEYS", Some(&format!("k2:{HMAC_K2}, k1:{HMAC_K1}")));
    assert_eq!(p.follow_link(&old_link).await.status(), StatusCode::OK);
    let new_link = p.mint_link("frank@example.com", 3600).await;
    assert!(new_link.starts_with("v2.k2."), "{new_link}");
    assert_eq!(p.follow_link(&new_link).await.status(), StatusCode::OK);

    // Once the old key is removed, its links die; the new ones live on.
    p.restart_with("ZTGATE_HMAC_KEYS", Some(&format!("k2:{HMAC_K2}")));
    let res = p.follow_link(&old_link).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "invalid_credential").await;
    assert_eq!(p.follow_link(&new_link).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hmac_keys_links_die_with_the_process_and_the_log_says_so() {
    let mut p = Production::start_with(&[("ZTGATE_HMAC_KEYS", None)]).await;
    let logs = p.server.logs();
    assert!(logs.contains("ZTGATE_HMAC_KEYS is unset") && logs.contains("restart"), "{logs}");
    let link = p.mint_link("gina@example.com", 3600).await;
    assert!(link.starts_with("v2.random."), "{link}");
    assert_eq!(p.follow_link(&link).await.status(), StatusCode::OK);

    p.restart();
    let res = p.follow_link(&link).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "invalid_credential").await;
}

// ---------------------------------------------------------------------------------------------
// Webhooks (Svix)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhook_is_200_and_stored() {
    let p = Production::start().await;
    let id = msg_id("ok");
    let res = p.post_webhook(&id, now(), br#"{"type":"email.delivered"}"#, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await, json!({ "id": id }));
    assert_eq!(p.stats().await["webhooks"], 1);
    assert!(p.server.logs().contains("webhook_stored"));

    // Svix sends several signatures while a secret rotates: one match is enough. A body of
    // exactly 1 MiB is within the cap.
    let body = vec![b' '; MIB];
    let (id, ts) = (msg_id("rotating"), now());
    let both = format!("v1,{} {}", STANDARD.encode([0u8; 32]), svix_signature(WEBHOOK_KEY, &id, ts, &body));
    assert_eq!(p.post_webhook(&id, ts, &body, Some(both)).await.status(), StatusCode::OK);
    assert_eq!(p.stats().await["webhooks"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_with_a_bad_signature_is_401_and_not_stored() {
    let p = Production::start().await;
    let body = br#"{"type":"email.bounced"}"#;
    let id = msg_id("bad");
    let ts = now();
    let other_key = svix_signature(b"another-endpoint-key-entirely!!!", &id, ts, body);
    let other_body = svix_signature(WEBHOOK_KEY, &id, ts, b"{}");
    let other_id = svix_signature(WEBHOOK_KEY, "msg_other", ts, body);
    for (what, signature) in [
        ("another key", other_key),
        ("another body", other_body),
        ("another id", other_id),
        ("no v1 entry", "v1a,AAAA".to_owned()),
        ("garbage", "nonsense".to_owned()),
    ] {
        let res = p.post_webhook(&id, ts, body, Some(signature)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert!(res.headers().contains_key("www-authenticate"), "{what}");
        assert_eq!(json_of(res).await["code"], "invalid_credential", "{what}");
    }
    // No headers at all.
    let res = http().post(p.server.url("/webhooks/inbound")).body("{}").send().await.unwrap();
    assert_refused(res, StatusCode::UNAUTHORIZED, "invalid_credential").await;
    // A forged delivery did not burn the id: the genuine one is still accepted.
    assert_eq!(p.post_webhook(&id, ts, body, None).await.status(), StatusCode::OK);
    assert_eq!(p.stats().await["webhooks"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_with_a_stale_or_future_timestamp_is_401() {
    let p = Production::start().await;
    for (what, ts) in [("stale", now() - 600), ("future", now() + 600)] {
        let res = p.post_webhook(&msg_id(what), ts, b"{}", None).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(json_of(res).await["code"], "invalid_credential", "{what}");
    }
    assert_eq!(p.stats().await["webhooks"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_webhook_is_409_also_after_a_restart() {
    let mut p = Production::start().await;
    let id = msg_id("replay");
    let ts = now();
    let body = br#"{"type":"email.opened"}"#;
    assert_eq!(p.post_webhook(&id, ts, body, None).await.status(), StatusCode::OK);
    let res = p.post_webhook(&id, ts, body, None).await;
    assert_refused(res, StatusCode::CONFLICT, "replayed").await;

    // The guard is in SQLite: a new process remembers.
    p.restart();
    let res = p.post_webhook(&id, ts, body, None).await;
    assert_refused(res, StatusCode::CONFLICT, "replayed").await;
    assert_eq!(p.stats().await["webhooks"], 1);
    // Another id is a new message.
    assert_eq!(p.post_webhook(&msg_id("fresh"), now(), body, None).await.status(), StatusCode::OK);
}

/// Sends a raw HTTP/1.1 request (so that a declared length can differ from what is sent, or
/// a body can be chunked) and reads the response while writing: the server may answer before
/// the body is sent. Returns the status and the JSON body.
fn raw_request(base: &str, head: &str, body_chunks: Vec<Vec<u8>>) -> (u16, Value) {
    use std::io::Write;
    let addr = base.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let head = head.to_owned();
    let sender = std::thread::spawn(move || {
        // Write errors are expected once the server has answered and closed.
        let _ = writer.write_all(head.as_bytes());
        for chunk in body_chunks {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if length.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    let _ = sender.join();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response: {text:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    (status, serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_webhook_is_413_declared_or_streamed() {
    let p = Production::start().await;
    let base = p.server.base.clone();
    let id = msg_id("big");
    let ts = now();
    let signature = svix_signature(WEBHOOK_KEY, &id, ts, b"");
    let svix = format!("svix-id: {id}\r\nsvix-timestamp: {ts}\r\nsvix-signature: {signature}\r\n");

    // Declared too large: refused before the body is read (only a little of it is sent).
    let head = format!(
        "POST /webhooks/inbound HTTP/1.1\r\nhost: {}\r\n{svix}content-length: {}\r\n\r\n",
        &base[7..],
        MIB + 1
    );
    let (b, h) = (base.clone(), head);
    let (status, body) =
        tokio::task::spawn_blocking(move || raw_request(&b, &h, vec![vec![b'x'; 1024]])).await.unwrap();
    assert_eq!((status, body["code"].as_str()), (413, Some("payload_too_large")));

    // Chunked, no declared length: refused once the cap is passed while reading.
    let head = format!(
        "POST /webhooks/inbound HTTP/1.1\r\nhost: {}\r\n{svix}transfer-encoding: chunked\r\n\r\n",
        &base[7..]
    );
    let mut chunks = Vec::new();
    for _ in 0..17 {
        let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
        chunk.extend(std::iter::repeat_n(b'x', 64 * 1024));
        chunk.extend_from_slice(b"\r\n");
        chunks.push(chunk);
    }
    chunks.push(b"0\r\n\r\n".to_vec());
    let (b, h) = (base.clone(), head);
    let (status, body) = tokio::task::spawn_blocking(move || raw_request(&b, &h, chunks)).await.unwrap();
    assert_eq!((status, body["code"].as_str()), (413, Some("payload_too_large")));

    // And with reqwest, 1 MiB + 1 with a valid signature.
    let big = vec![b' '; MIB + 1];
    let res = p.post_webhook(&msg_id("big"), now(), &big, None).await;
    assert_refused(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(p.stats().await["webhooks"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_without_a_secret_is_503_not_configured() {
    let p = Production::start_with(&[("ZTGATE_WEBHOOK_SECRET", None)]).await;
    let res = p.post_webhook(&msg_id("unconfigured"), now(), b"{}", None).await;
    assert_refused(res, StatusCode::SERVICE_UNAVAILABLE, "not_configured").await;
    assert_eq!(p.stats().await["webhooks"], 0);
}

// ---------------------------------------------------------------------------------------------
// /ops/stats: an API key

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_stats_with_an_api_key_is_200_and_names_the_key() {
    let p = Production::start().await;
    p.create_note("counted").await;
    let res = p.call("GET", "/ops/stats", &[("X-Api-Key", OPS_KEY)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let stats = json_of(res).await;
    assert_eq!((stats["key"].as_str(), stats["notes"].as_i64()), (Some("ops"), Some(1)));
    let bearer = format!("Bearer {BACKUP_KEY}");
    let res = p.call("GET", "/ops/stats", &[("Authorization", &bearer)]).await;
    assert_eq!(json_of(res).await["key"], "backup");
}

/// `/metrics` (API key): the Prometheus text of ztgate's series, which move with what the gate
/// decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_decisions_jwks_fetches_and_token_cache_lookups() {
    let p = Production::start().await;
    let scrape = || async {
        let res = p.call("GET", "/metrics", &[("X-Api-Key", OPS_KEY)]).await;
        assert_eq!(res.status(), StatusCode::OK);
        let content_type = res.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        res.text().await.unwrap()
    };
    let before = scrape().await;
    let missing = r#"outcome="missing_credential""#;
    let verified_access = [r#"mechanism="access_jwt""#, r#"outcome="verified""#];
    for _ in 0..3 {
        assert_refused(p.get("/admin/whoami", None).await, StatusCode::UNAUTHORIZED, "missing_credential")
            .await;
    }
    let token = user_token(ADMIN);
    for _ in 0..2 {
        assert_eq!(p.get("/admin/whoami", Some(&token)).await.status(), StatusCode::OK);
    }
    assert_refused(
        p.get("/admin/whoami", Some("e30.e30.e30")).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    let after = scrape().await;
    let delta = |labels: &[&str]| {
        series(&after, "ztgate_decisions_total", labels) - series(&before, "ztgate_decisions_total", labels)
    };
    assert_eq!(delta(&[missing, r#"mechanism="none""#]), 3.0, "{after}");
    assert_eq!(delta(&verified_access), 2.0, "{after}");
    assert_eq!(delta(&[r#"outcome="refused""#, r#"code="invalid_token""#, r#"mechanism="access_jwt""#]), 1.0);
    // The API-key scrape itself was counted as a decision of its mechanism.
    assert!(delta(&[r#"mechanism="api_key""#, r#"outcome="verified""#]) >= 1.0, "{after}");
    // The same token twice: one signature check, one hit.
    let hits = |text: &str| series(text, "ztgate_token_cache_lookups_total", &[r#"result="hit""#]);
    assert!(hits(&after) - hits(&before) >= 1.0, "{after}");
    assert!(series(&after, "ztgate_jwks_fetches_total", &[r#"outcome="ok""#]) >= 1.0, "{after}");
    assert!(series(&after, "ztgate_jwks_keys", &[]) >= 1.0, "{after}");
    assert!(series(&after, "ztgate_jwks_last_refresh_timestamp_seconds", &[]) > 1.7e9, "{after}");
    let count = |text: &str| series(text, "ztgate_decision_duration_seconds_count", &verified_access);
    assert_eq!(count(&after) - count(&before), 2.0, "{after}");
    // No label carries request text: the path, the email, the token never appear.
    assert!(!after.contains("whoami") && !after.contains(ADMIN) && !after.contains(&token));
}

/// The sum of the samples of `name` whose labels include every one of `labels` (0 if none).
fn series(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let (metric, rest) = key.split_once('{').unwrap_or((key, ""));
            (metric == name && labels.iter().all(|l| rest.contains(l))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_without_an_api_key_is_401_and_an_access_user_is_refused() {
    let p = Production::start().await;
    assert_refused(p.call("GET", "/metrics", &[]).await, StatusCode::UNAUTHORIZED, "missing_credential")
        .await;
    let res = p.get("/metrics", Some(&user_token(ADMIN))).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_stats_with_a_wrong_or_no_api_key_is_401() {
    let p = Production::start().await;
    let prefix = &OPS_KEY[..OPS_KEY.len() - 1];
    let longer = format!("{OPS_KEY}0");
    let unknown = "0123456789abcdef0123456789abcdef"; // pragma: allowlist secret
    for wrong in [prefix, longer.as_str(), unknown, HMAC_K1] {
        let res = p.call("GET", "/ops/stats", &[("X-Api-Key", wrong)]).await;
        assert_refused(res, StatusCode::UNAUTHORIZED, "invalid_credential").await;
    }
    let res = p.call("GET", "/ops/stats", &[]).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
    // An Access admin is not an API key.
    let admin = user_token(ADMIN);
    let res = p.call("GET", "/ops/stats", &[("Cf-Access-Jwt-Assertion", &admin)]).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
    // Two different keys in one request are ambiguous.
    let bearer = format!("Bearer {BACKUP_KEY}");
    let res = p.call("GET", "/ops/stats", &[("X-Api-Key", OPS_KEY), ("Authorization", &bearer)]).await;
    assert_refused(res, StatusCode::BAD_REQUEST, "ambiguous_credential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_without_api_keys_refuses_every_key() {
    let p = Production::start_with(&[("ZTGATE_API_KEYS", None)]).await;
    let res = p.call("GET", "/ops/stats", &[("X-Api-Key", OPS_KEY)]).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "invalid_credential").await;
    let res = p.call("GET", "/ops/stats", &[]).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
    assert!(!p.server.stdout.iter().any(|l| l.contains("X-Api-Key")), "no dev key in production");
}

// ---------------------------------------------------------------------------------------------
// /mtls/whoami: a client certificate, as Cloudflare reports it

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_whoami_with_trusted_headers_of_a_verified_cert_is_200() {
    let p = Production::start_with(&[("ZTGATE_TRUST_CERT_HEADERS", Some("1"))]).await;
    let res = p.call("GET", "/mtls/whoami", &cert_headers(false)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = json_of(res).await;
    assert_eq!(body["fingerprint"], "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12"); // pragma: allowlist secret
    assert_eq!(body["subject_dn"], "CN=deploy-bot,O=Acme");
    assert!(p.server.logs().contains("ZTGATE_TRUST_CERT_HEADERS=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_revoked_or_unverified_cert_is_401() {
    let p = Production::start_with(&[("ZTGATE_TRUST_CERT_HEADERS", Some("1"))]).await;
    let res = p.call("GET", "/mtls/whoami", &cert_headers(true)).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "invalid_credential").await;

    let mut failed = cert_headers(false);
    failed[1] = ("cf-cert-verified", "FAILED:self signed certificate");
    let res = p.call("GET", "/mtls/whoami", &failed).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "invalid_credential").await;

    let mut unknown = cert_headers(false);
    unknown.remove(2); // no cf-cert-revoked: revocation unknown
    let res = p.call("GET", "/mtls/whoami", &unknown).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "invalid_credential").await;

    let res = p.call("GET", "/mtls/whoami", &[]).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_cert_headers_are_ignored_unless_trusted() {
    for trust in [None, Some("0")] {
        let p = Production::start_with(&[("ZTGATE_TRUST_CERT_HEADERS", trust)]).await;
        let res = p.call("GET", "/mtls/whoami", &cert_headers(false)).await;
        assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets stay out of the logs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_keys_secrets_or_tokens() {
    let rotated = format!("k2:{HMAC_K2},k1:{HMAC_K1}");
    let p = Production::start_with(&[
        ("RUST_LOG", Some("trace")),
        ("ZTGATE_HMAC_KEYS", Some(&rotated)),
        ("ZTGATE_TRUST_CERT_HEADERS", Some("1")),
    ])
    .await;
    let admin = user_token(ADMIN);
    let mallory = user_token("mallory@acme.com");
    let wrong_key = "wrong-key-00000000000000000000000000000000";

    // Every route, accepted and refused.
    assert_eq!(p.get("/admin/whoami", Some(&admin)).await.status(), StatusCode::OK);
    assert_eq!(p.get("/admin/whoami", Some(&mallory)).await.status(), StatusCode::FORBIDDEN);
    let id = p.create_note("audit me").await;
    let path = format!("/admin/notes/{id}");
    let res = p.call("DELETE", &path, &[("Cf-Access-Jwt-Assertion", &mallory), ("X-Api-Key", OPS_KEY)]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = p.call("DELETE", &path, &[("Cf-Access-Jwt-Assertion", &admin), ("X-Api-Key", wrong_key)]).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = p.call("DELETE", &path, &[("Cf-Access-Jwt-Assertion", &admin), ("X-Api-Key", OPS_KEY)]).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let link = p.mint_link("henry@example.com", 600).await;
    assert_eq!(p.follow_link(&link).await.status(), StatusCode::OK);
    let bad_link = format!("{link}x");
    assert_eq!(p.follow_link(&bad_link).await.status(), StatusCode::UNAUTHORIZED);
    let (webhook_id, ts, body) = (msg_id("logs"), now(), br#"{"type":"email.sent"}"#);
    let signature = svix_signature(WEBHOOK_KEY, &webhook_id, ts, body);
    assert_eq!(p.post_webhook(&webhook_id, ts, body, None).await.status(), StatusCode::OK);
    assert_eq!(p.post_webhook(&webhook_id, ts, body, None).await.status(), StatusCode::CONFLICT);
    let forged = svix_signature(b"forged-key-forged-key-forged-key", &webhook_id, ts, body);
    assert_eq!(
        p.post_webhook(&webhook_id, ts, body, Some(forged.clone())).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(p.call("GET", "/ops/stats", &[("X-Api-Key", OPS_KEY)]).await.status(), StatusCode::OK);
    let bearer = format!("Bearer {wrong_key}");
    assert_eq!(
        p.call("GET", "/ops/stats", &[("Authorization", &bearer)]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(p.call("GET", "/mtls/whoami", &cert_headers(false)).await.status(), StatusCode::OK);
    assert_eq!(p.get("/secret-debug", Some(&admin)).await.status(), StatusCode::FORBIDDEN);

    let logs = p.server.logs();
    assert!(logs.contains("note_deleted") && logs.contains("webhook_stored"), "logging is on:\n{logs}");
    let webhook_secret = webhook_secret();
    let webhook_b64 = webhook_secret.strip_prefix("whsec_").unwrap();
    let signature_b64 = signature.strip_prefix("v1,").unwrap();
    let forged_b64 = forged.strip_prefix("v1,").unwrap();
    for (what, secret) in [
        ("API key", OPS_KEY),
        ("backup API key", BACKUP_KEY),
        ("wrong API key", wrong_key),
        ("HMAC secret k1", HMAC_K1),
        ("HMAC secret k2", HMAC_K2),
        ("webhook secret", webhook_secret.as_str()),
        ("webhook key (base64)", webhook_b64),
        ("webhook signature", signature_b64),
        ("forged webhook signature", forged_b64),
        ("admin token", admin.as_str()),
        ("forbidden user's token", mallory.as_str()),
        ("unsubscribe token", link.as_str()),
        ("bad unsubscribe token", bad_link.as_str()),
    ] {
        assert!(!logs.contains(secret), "the {what} was logged:\n{logs}");
    }
    // Nor any recognisable piece of a JWT or an unsubscribe token's MAC.
    let jwt_signature = admin.rsplit('.').next().unwrap();
    assert!(!logs.contains(jwt_signature), "a JWT signature was logged");
    let link_mac = link.rsplit('.').next().unwrap();
    assert!(!logs.contains(link_mac), "an unsubscribe token's MAC was logged");
}

// ---------------------------------------------------------------------------------------------
// Invalid configuration of the new variables: exit status 2, naming the variable, never
// repeating the secret

fn dev_config(db: &TempDb) -> Vec<(&'static str, String)> {
    vec![("ZTGATE_LISTEN", "127.0.0.1:0".into()), ("ZTGATE_DB", db.path())]
}

fn assert_secret_config_error(var: &'static str, value: &str, secret_part: &str) {
    let db = TempDb::new();
    let vars = with(dev_config(&db), var, Some(value));
    let (status, stderr) = run_to_exit(&vars);
    assert_eq!(status.code(), Some(2), "{var}={value:?}: exit status {status:?}; stderr:\n{stderr}");
    assert!(stderr.contains(var), "stderr does not name {var}:\n{stderr}");
    assert!(!stderr.contains("panicked"), "panicked instead of a clean error:\n{stderr}");
    if !secret_part.is_empty() {
        assert!(!stderr.contains(secret_part), "the secret was repeated:\n{stderr}");
    }
}

#[test]
fn invalid_api_keys_exit_2_naming_it() {
    for (value, secret) in [
        ("no-colon-but-a-long-secret-0123456789", "long-secret-0123456789"),
        ("ops:too-short", "too-short"),
        ("bad name:abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnop"),
        ("a:abcdefghijklmnopqrstuvwxyz,b:abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnop"),
        (" , ", ""),
        ("", ""),
    ] {
        assert_secret_config_error("ZTGATE_API_KEYS", value, secret);
    }
}

#[test]
fn invalid_hmac_keys_exit_2_naming_it() {
    for (value, secret) in [
        ("k1:short-secret", "short-secret"),
        ("k1-no-colon-0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789"), // pragma: allowlist secret
        ("bad kid:0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789"), // pragma: allowlist secret
        ("k1:0123456789abcdef0123456789abcdef,k1:fedcba9876543210fedcba9876543210", "0123456789abcdef01"), // pragma: allowlist secret
        ("k1:0123456789abcdef0123456789abcdef,,", "0123456789abcdef01"), // pragma: allowlist secret
        ("", ""),
    ] {
        assert_secret_config_error("ZTGATE_HMAC_KEYS", value, secret);
    }
}

#[test]
fn invalid_webhook_secret_exits_2_naming_it() {
    let short = format!("whsec_{}", STANDARD.encode([9u8; 8]));
    let unprefixed = STANDARD.encode(WEBHOOK_KEY);
    for (value, secret) in [
        (unprefixed.as_str(), unprefixed.as_str()),
        ("whsec_not*base64*at*all*0123456789", "not*base64"),
        (short.as_str(), &short[6..]),
        ("", ""),
    ] {
        assert_secret_config_error("ZTGATE_WEBHOOK_SECRET", value, secret);
    }
}

#[test]
fn invalid_trust_cert_headers_exits_2_naming_it() {
    for value in ["yes", "true", "2", "01", ""] {
        assert_secret_config_error("ZTGATE_TRUST_CERT_HEADERS", value, "");
    }
}

// ---------------------------------------------------------------------------------------------
// Hardening round 2: logs and identities (log forging, one id per person, caching, token
// lifetime)

/// The server's logs once they contain `needle` (stderr is read on a thread, so a line written
/// before the response may arrive a moment after it).
fn logs_with(server: &Server, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = server.logs();
        if logs.contains(needle) || Instant::now() > deadline {
            return logs;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An unsubscribe token for `subject`, signed by hand with `HMAC_K1` in the documented v1
/// format: what another minter (or an older server) could have issued. `KeyRing::mint` refuses
/// such subjects.
fn hand_signed_link(subject: &str, expires_at: u64) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HMAC_K1.as_bytes()).unwrap();
    mac.update(format!("ztgate-hmac-v1\0k1\0unsubscribe\0{expires_at}\0{subject}").as_bytes());
    let mac = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("v1.k1.{expires_at}.{}.{mac}", URL_SAFE_NO_PAD.encode(subject))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minting_a_link_for_an_email_with_a_line_break_is_400() {
    let p = Production::start().await;
    let admin = user_token(ADMIN);
    for email in [
        "x@example.com\n2026-01-01T00:00:00Z  INFO admin_server: outcome=\"unsubscribed\"",
        "x@example.com\r\nfake",
        "x@exa\u{0}mple.com",
        "x@example.com\t",
        "x@example.com\u{2028}fake",
    ] {
        let res = p.post_link_request(&admin, &json!({ "email": email, "ttl_secs": 60 })).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{email:?}");
        assert!(!res.headers().contains_key("www-authenticate"));
        let body = json_of(res).await;
        assert_eq!(body["code"], "invalid_request", "{email:?}");
        assert_eq!(body["message"], "`email` must not contain control characters or line breaks");
    }
    assert!(!p.server.logs().contains("unsubscribe_link_minted"), "nothing was minted");
    // An ordinary address still mints.
    assert!(p.mint_link("x@example.com", 60).await.starts_with("v2.k1."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_whose_subject_has_a_line_break_never_starts_a_log_line() {
    let p = Production::start().await;
    let marker = "FORGED-LINE";
    let subject = format!(
        "x@example.com\n{marker} INFO admin_server: layer=\"storage\" outcome=\"unsubscribed\" principal=\"user:root\"\r{marker}"
    );
    let res = p.follow_link(&hand_signed_link(&subject, now() + 600)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await["email"], subject.as_str(), "the subject itself is what was signed");

    let logs = logs_with(&p.server, "outcome=\"unsubscribed\"");
    // The pipeline's `verified` line and the store's `unsubscribed` line both name it, escaped.
    assert!(logs.matches(&format!("\\n{marker}")).count() >= 2, "{logs}");
    for line in logs.split(['\n', '\r']) {
        assert!(
            !line.trim_start().starts_with(marker),
            "a log line starts with attacker text: {line:?}\n{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_admin_in_any_ascii_case_writes_notes_as_one_author() {
    let p = Production::start().await;
    for (sent, text) in [("ALICE@ACME.COM", "upper"), (ADMIN, "lower"), ("Alice@Acme.com", "mixed")] {
        let res = p.post_note(Some(&user_token(sent)), &json!({ "text": text })).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{sent}");
        let res = p.get("/admin/whoami", Some(&user_token(sent))).await;
        assert_eq!(json_of(res).await, json!({ "kind": "user", "email": ADMIN }), "{sent}");
    }
    let authors: Vec<Value> = p.notes().await.iter().map(|n| n["author"].clone()).collect();
    assert_eq!(authors, vec![json!(format!("user:{ADMIN}")); 3]);
}

/// A proxy between the admin and the server must never store a response that carries a
/// credential (the minted link token) or one admin's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_bearing_and_admin_responses_are_never_stored_by_a_proxy() {
    let p = Production::start().await;
    let admin = user_token(ADMIN);
    let cache_control = |r: &reqwest::Response| {
        r.headers()
            .get_all("cache-control")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let minted = p.post_link_request(&admin, &json!({ "email": "ivy@example.com", "ttl_secs": 60 })).await;
    assert_eq!(minted.status(), StatusCode::OK);
    assert_eq!(cache_control(&minted), ["private, no-store"], "the response holds a link token");
    let token = json_of(minted).await["token"].as_str().unwrap().to_owned();
    for res in [
        p.get("/admin/whoami", Some(&admin)).await,
        p.get("/admin/notes", Some(&admin)).await,
        p.call("GET", "/ops/stats", &[("X-Api-Key", OPS_KEY)]).await,
        p.follow_link(&token).await,
    ] {
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(cache_control(&res), ["private, no-store"], "{}", res.url());
    }
    // Handler errors after identity (404 under /admin) and refusals alike.
    assert_eq!(cache_control(&p.get("/admin/no-such-route", Some(&admin)).await), ["private, no-store"]);
    assert_eq!(cache_control(&p.get("/admin/whoami", None).await), ["no-store"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_claiming_to_live_longer_than_31_days_is_401() {
    let p = Production::start().await;
    for exp in [now() + 32 * 86_400, u64::MAX] {
        let mut claims = user_claims(TEAM, AUD, ADMIN, now(), 3600);
        claims["exp"] = json!(exp);
        let res = p.get("/admin/whoami", Some(&key().sign(&claims))).await;
        assert_refused(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    }
    let month = key().sign(&user_claims(TEAM, AUD, ADMIN, now(), 31 * 86_400));
    assert_eq!(p.get("/admin/whoami", Some(&month)).await.status(), StatusCode::OK);
}

// Issue 10, inputs read as promised: RFC 8058 one-click unsubscribe (GET shows, POST does), a
// query token sent twice, client-certificate fingerprints over HTTP

const FORM: &str = "application/x-www-form-urlencoded";

/// The RFC 7578 body of a one-click form with one field `name` = `value`.
fn multipart(boundary: &str, name: &str, value: &str) -> String {
    format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n--{boundary}--\r\n"
    )
}

impl Production {
    async fn preview_link(&self, token: &str, accept: Option<&str>) -> reqwest::Response {
        let path = format!("/api/unsubscribe?token={token}");
        self.call("GET", &path, &accept.map(|a| ("Accept", a)).into_iter().collect::<Vec<_>>()).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_scanner_prefetching_the_link_does_not_unsubscribe() {
    let p = Production::start().await;
    let token = p.mint_link("ivy@example.com", 3600).await;
    // Scanners and link previews GET the link, with any Accept, as often as they like.
    for accept in [None, Some("*/*"), Some("text/html,application/xhtml+xml,*/*;q=0.8"), None] {
        let res = p.preview_link(&token, accept).await;
        assert_eq!(res.status(), StatusCode::OK, "{accept:?}");
        assert_eq!(res.headers()["cache-control"], "private, no-store", "{accept:?}");
    }
    let shown = json_of(p.preview_link(&token, None).await).await;
    assert_eq!(shown["email"], "ivy@example.com");
    assert_eq!(shown["unsubscribed"], false);
    assert_eq!(shown["confirm"]["method"], "POST");
    assert_eq!(shown["confirm"]["body"], ONE_CLICK);
    assert_eq!(p.stats().await["unsubscribes"], 0, "a GET unsubscribed someone");
    // The mail client's one-click POST does it.
    let res = p.follow_link(&token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await, json!({ "email": "ivy@example.com", "unsubscribed": true }));
    assert_eq!(p.stats().await["unsubscribes"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confirm_page_posts_the_one_click_form_back_to_the_link() {
    let p = Production::start().await;
    let token = p.mint_link("jo@example.com", 3600).await;
    let res = p.preview_link(&token, Some("text/html")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let headers = res.headers().clone();
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(headers["referrer-policy"], "no-referrer", "the URL holds the token");
    assert!(headers["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    let page = res.text().await.unwrap();
    assert!(page.contains("jo@example.com"), "{page}");
    // The form has no action (so it posts to this URL, token included) and sends the field.
    assert!(page.contains("<form method=\"post\">"), "{page}");
    assert!(page.contains("name=\"List-Unsubscribe\" value=\"One-Click\""), "{page}");
    assert!(!page.contains(&token), "the page repeats the token");
    assert_eq!(p.stats().await["unsubscribes"], 0);
    // What a browser submits for that form.
    let res = http()
        .post(p.server.url(&format!("/api/unsubscribe?token={token}")))
        .header("accept", "text/html")
        .header("content-type", FORM)
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("is unsubscribed"));
    assert_eq!(p.stats().await["unsubscribes"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_click_as_multipart_form_data_unsubscribes() {
    // RFC 8058 §3.2: mail receivers SHOULD send multipart/form-data.
    let p = Production::start().await;
    let token = p.mint_link("kim@example.com", 3600).await;
    let boundary = "----FormBoundaryjWmhtjORrn";
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let body = multipart(boundary, "List-Unsubscribe", "One-Click");
    let res = p.one_click(&format!("token={token}"), &content_type, &body).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(p.stats().await["unsubscribes"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_post_without_the_one_click_body_is_400_and_changes_nothing() {
    let p = Production::start().await;
    let token = p.mint_link("lee@example.com", 3600).await;
    let query = format!("token={token}");
    let b = "xYzZY";
    let multipart_type = format!("multipart/form-data; boundary={b}");
    let two_parts = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n{}",
        multipart(b, "x", "1")
    );
    for (content_type, body) in [
        (FORM, String::new()),
        (FORM, "List-Unsubscribe=Yes".to_owned()),
        (FORM, "List-Unsubscribe=".to_owned()),
        (FORM, "list-unsubscribe=one-click".to_owned()),
        (FORM, format!("{ONE_CLICK}&List-Unsubscribe=No")),
        (FORM, format!("{ONE_CLICK}&everything=1")),
        (FORM, "List-Unsubscribe=One-Click%ZZ".to_owned()),
        ("application/json", json!({ "List-Unsubscribe": "One-Click" }).to_string()),
        ("text/plain", ONE_CLICK.to_owned()),
        ("", ONE_CLICK.to_owned()),
        (multipart_type.as_str(), multipart(b, "List-Unsubscribe", "Yes")),
        (multipart_type.as_str(), multipart(b, "Unsubscribe", "One-Click")),
        (multipart_type.as_str(), multipart("other", "List-Unsubscribe", "One-Click")),
        (multipart_type.as_str(), two_parts),
        ("multipart/form-data", multipart(b, "List-Unsubscribe", "One-Click")),
    ] {
        let res = p.one_click(&query, content_type, &body).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{content_type} {body:?}");
        assert_eq!(json_of(res).await["code"], "one_click_required", "{content_type} {body:?}");
    }
    let big = format!("{ONE_CLICK}&{}", "a".repeat(2048));
    assert_eq!(p.one_click(&query, FORM, &big).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(p.stats().await["unsubscribes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_token_is_verified_on_the_one_click_post_too() {
    let p = Production::start().await;
    let ring = KeyRing::parse(&format!("k1:{HMAC_K1}")).unwrap();
    let hour = Duration::from_secs(3600);
    let res = p.one_click("", FORM, ONE_CLICK).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
    let forged =
        KeyRing::parse(&format!("k1:{HMAC_K2}")).unwrap().mint("unsubscribe", "m@example.com", now(), hour);
    let magic = ring.mint("magic-link", "m@example.com", now(), hour).unwrap();
    for token in [forged.unwrap(), magic, "garbage".to_owned()] {
        let res = p.one_click(&format!("token={token}"), FORM, ONE_CLICK).await;
        assert_refused(res, StatusCode::UNAUTHORIZED, "invalid_credential").await;
    }
    assert_eq!(p.stats().await["unsubscribes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_token_in_an_unsubscribe_link_is_400_not_the_first_one() {
    let p = Production::start().await;
    let mine = p.mint_link("max@example.com", 3600).await;
    let theirs = p.mint_link("nia@example.com", 3600).await;
    for query in [
        format!("token={mine}&token={theirs}"),
        format!("token={mine}&%74oken={theirs}"),
        format!("token={mine}&token="),
    ] {
        let res = p.one_click(&query, FORM, ONE_CLICK).await;
        assert_refused(res, StatusCode::BAD_REQUEST, "ambiguous_credential").await;
        let res = p.call("GET", &format!("/api/unsubscribe?{query}"), &[]).await;
        assert_refused(res, StatusCode::BAD_REQUEST, "ambiguous_credential").await;
    }
    assert_eq!(p.stats().await["unsubscribes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confirm_page_escapes_the_address_it_shows() {
    let p = Production::start().await;
    let token = p.mint_link("<img src=x onerror=alert(1)>\"'@example.com", 3600).await;
    let page = p.preview_link(&token, Some("text/html")).await.text().await.unwrap();
    assert!(!page.contains("<img"), "{page}");
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;&quot;&#39;@example.com"), "{page}");
}

async fn whoami_with(p: &Production, headers: Vec<(&str, String)>) -> reqwest::Response {
    let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    p.call("GET", "/mtls/whoami", &refs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_cert_fingerprint_over_http_is_401_and_a_colon_form_one_is_normalised() {
    let p = Production::start_with(&[("ZTGATE_TRUST_CERT_HEADERS", Some("1"))]).await;
    let with_fp = |fp: &str| {
        let mut headers: Vec<(&str, String)> =
            cert_headers(false).into_iter().map(|(name, value)| (name, value.to_owned())).collect();
        headers.retain(|(name, _)| *name != "cf-cert-fingerprint-sha256");
        headers.push(("cf-cert-fingerprint-sha256", fp.to_owned()));
        headers
    };
    for fp in ["not-a-fingerprint", "user:admin@acme.com", "<b>ab12</b>", &"ab".repeat(33)] {
        let res = whoami_with(&p, with_fp(fp)).await;
        assert_refused(res, StatusCode::UNAUTHORIZED, "invalid_credential").await;
    }
    let fp = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12"; // pragma: allowlist secret
    let colons: Vec<String> =
        fp.to_uppercase().as_bytes().chunks(2).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
    let res = whoami_with(&p, with_fp(&colons.join(":"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await["fingerprint"], fp);
}

// ---------------------------------------------------------------------------------------------
// Hardening round 2: HMAC key ring rotation without a restart (`ZTGATE_HMAC_KEYS_FILE`)

/// A key ring file in the temp dir, removed on drop; rewritten atomically (a new file renamed
/// over the old one), as the docs tell a deploy to.
struct KeysFile(PathBuf);

impl KeysFile {
    fn new(contents: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let file =
            Self(std::env::temp_dir().join(format!("ztgate-hmac-keys-{}-{n}-{nanos}", std::process::id())));
        file.write(contents);
        file
    }

    fn write(&self, contents: &str) {
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, &self.0).unwrap();
    }

    fn path(&self) -> String {
        self.0.to_str().unwrap().to_owned()
    }
}

impl Drop for KeysFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A production server whose key ring comes from `file`, re-read once a second.
async fn production_with_keys_file(file: &KeysFile) -> Production {
    Production::start_with(&[
        ("ZTGATE_HMAC_KEYS", None),
        ("ZTGATE_HMAC_KEYS_FILE", Some(&file.path())),
        ("ZTGATE_HMAC_KEYS_TTL", Some("1")),
    ])
    .await
}

/// Mints links until one starts with `prefix` (the rewritten file read once its TTL is past),
/// for at most 15 s.
async fn mint_link_until_signed_by(p: &Production, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let link = p.mint_link("hana@example.com", 3600).await;
        if link.starts_with(prefix) || Instant::now() > deadline {
            return link;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_hmac_keys_file_signs_with_the_new_key_and_old_links_keep_verifying() {
    let file = KeysFile::new(&format!("k1:{HMAC_K1}\n"));
    let p = production_with_keys_file(&file).await;
    let old_link = p.mint_link("hana@example.com", 3600).await;
    assert!(old_link.starts_with("v2.k1."), "{old_link}");
    assert_eq!(p.follow_link(&old_link).await.status(), StatusCode::OK);

    // Rotation without a restart: the new key first, the old one kept for its links.
    file.write(&format!("k2:{HMAC_K2},k1:{HMAC_K1}\n"));
    let new_link = mint_link_until_signed_by(&p, "v2.k2.").await;
    assert!(new_link.starts_with("v2.k2."), "still not signed by k2 after 15 s: {new_link}");
    assert_eq!(p.follow_link(&new_link).await.status(), StatusCode::OK);
    assert_eq!(p.follow_link(&old_link).await.status(), StatusCode::OK);
    let logs = logs_with(&p.server, "hmac_keys_loaded");
    assert!(!logs.contains(HMAC_K1) && !logs.contains(HMAC_K2), "a key was logged:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_hmac_keys_file_keeps_the_last_good_ring_and_is_logged_without_its_text() {
    let file = KeysFile::new(&format!("k2:{HMAC_K2},k1:{HMAC_K1}"));
    let p = production_with_keys_file(&file).await;
    let old_link = p.mint_link("hana@example.com", 3600).await;
    assert!(old_link.starts_with("v2.k2."), "{old_link}");

    // A half-written or mistyped file (a short secret, no colon): refused, the last good ring kept.
    let garbage = "k3:garbage-short-secret,not-a-key-entry";
    file.write(garbage);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !p.server.logs().contains("hmac_keys_reload_failed") && Instant::now() < deadline {
        // Each mint asks for the ring: once the TTL is past, one of them re-reads the file.
        let link = p.mint_link("hana@example.com", 3600).await;
        assert!(link.starts_with("v2.k2."), "{link}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = p.server.logs();
    assert!(logs.contains("hmac_keys_reload_failed"), "the bad file was never read:\n{logs}");
    assert!(!logs.contains("garbage-short-secret"), "the file's text was logged:\n{logs}");
    let link = p.mint_link("hana@example.com", 3600).await;
    assert!(link.starts_with("v2.k2."), "{link}");
    assert_eq!(p.follow_link(&link).await.status(), StatusCode::OK);
    assert_eq!(p.follow_link(&old_link).await.status(), StatusCode::OK);
}

#[test]
fn hmac_keys_together_with_hmac_keys_file_exits_2_naming_both() {
    let db = TempDb::new();
    let file = KeysFile::new(&format!("k1:{HMAC_K1}"));
    let vars = with(dev_config(&db), "ZTGATE_HMAC_KEYS", Some(&format!("k2:{HMAC_K2}")));
    let vars = with(vars, "ZTGATE_HMAC_KEYS_FILE", Some(&file.path()));
    let (status, stderr) = run_to_exit(&vars);
    assert_eq!(status.code(), Some(2), "exit status {status:?}; stderr:\n{stderr}");
    assert!(stderr.contains("ZTGATE_HMAC_KEYS_FILE"), "{stderr}");
    assert!(stderr.replace("ZTGATE_HMAC_KEYS_FILE", "").contains("ZTGATE_HMAC_KEYS"), "{stderr}");
    assert!(!stderr.contains(HMAC_K1) && !stderr.contains(HMAC_K2), "a secret was repeated:\n{stderr}");
}

#[test]
fn a_missing_or_invalid_hmac_keys_file_exits_2_naming_it_without_the_secret() {
    let missing = KeysFile::new("");
    std::fs::remove_file(&missing.0).unwrap();
    let empty = KeysFile::new("");
    let short = KeysFile::new("k1:short-file-secret");
    let duplicate = KeysFile::new(&format!("k1:{HMAC_K1},k1:{HMAC_K2}"));
    for (file, secret) in [(&missing, ""), (&empty, ""), (&short, "short-file-secret"), (&duplicate, HMAC_K1)]
    {
        assert_secret_config_error("ZTGATE_HMAC_KEYS_FILE", &file.path(), secret);
    }
    assert_secret_config_error("ZTGATE_HMAC_KEYS_FILE", "", "");
}

#[test]
fn an_invalid_hmac_keys_ttl_or_one_without_a_file_exits_2_naming_it() {
    let file = KeysFile::new(&format!("k1:{HMAC_K1}"));
    for ttl in ["0", "500ms", "3601s", "1m", "-1", "ten", ""] {
        let db = TempDb::new();
        let vars = with(dev_config(&db), "ZTGATE_HMAC_KEYS_FILE", Some(&file.path()));
        assert_config_error(&with(vars, "ZTGATE_HMAC_KEYS_TTL", Some(ttl)), "ZTGATE_HMAC_KEYS_TTL");
    }
    // Without a file the TTL would silently do nothing: refused.
    assert_secret_config_error("ZTGATE_HMAC_KEYS_TTL", "10s", "");
}

// ---------------------------------------------------------------------------------------------
// Configuration file (`ZTGATE_CONFIG`) and reload (SIGHUP, `POST /admin/reload`)

/// A configuration file in the temp dir, rewritten by rename (as an operator's deploy does) and
/// removed on drop.
struct ConfigOnDisk(PathBuf);

impl ConfigOnDisk {
    fn new(text: &str) -> Self {
        let file = Self(PathBuf::from(format!("{}.toml", TempDb::new().path())));
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        let tmp = self.0.with_extension("toml.new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.0).unwrap();
    }

    fn path(&self) -> String {
        self.0.to_str().unwrap().to_owned()
    }
}

impl Drop for ConfigOnDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `printf %s KEY | sha256sum`.
fn sha256_hex(key: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A production configuration file: `admins` admitted by Access, the API keys `keys` (name,
/// key) by digest, the HMAC ring from the variable `ZTGATE_TEST_HMAC`, and `extra` appended.
fn config_text(
    jwks: &JwksServer,
    db: &TempDb,
    admins: &[&str],
    keys: &[(&str, &str)],
    extra: &str,
) -> String {
    let admins: Vec<String> = admins.iter().map(|a| format!("{a:?}")).collect();
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndb = {db:?}\n\n[access]\nteam_domain = {TEAM:?}\naudiences = [{AUD:?}]\n\
         certs_url = {url:?}\nallow_emails = [{admins}]\n\n[hmac_keys]\nsecret = {{ env = \"ZTGATE_TEST_HMAC\" }}\n\n[api_keys]\n",
        db = db.path(),
        url = jwks.url(),
        admins = admins.join(", "),
    );
    for (name, key) in keys {
        text.push_str(&format!("{name} = {{ sha256 = \"{}\" }}\n", sha256_hex(key)));
    }
    text.push_str(extra);
    text
}

/// A server started from `file` alone (plus the HMAC ring's variable and `vars`).
fn start_from_file(file: &ConfigOnDisk, vars: &[(&'static str, String)]) -> Server {
    let mut all = vec![("ZTGATE_CONFIG", file.path()), ("ZTGATE_TEST_HMAC", format!("k1:{HMAC_K1}"))];
    all.extend(vars.iter().cloned());
    Server::start(&all)
}

async fn call(server: &Server, method: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http().request(method, server.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

async fn whoami_status(server: &Server, email: &str) -> StatusCode {
    call(server, "GET", "/admin/whoami", &[("Cf-Access-Jwt-Assertion", &user_token(email))]).await.status()
}

async fn stats_status(server: &Server, key: &str) -> StatusCode {
    call(server, "GET", "/ops/stats", &[("X-Api-Key", key)]).await.status()
}

/// Sends SIGHUP and waits until the server logs the `n`-th reload outcome `outcome`.
fn sighup_and_wait(server: &Server, outcome: &str, n: usize) {
    let status = Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.logs().matches(outcome).count() < n {
        assert!(Instant::now() < deadline, "no {outcome} #{n} logged:\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request on an open keep-alive connection: the status code.
fn healthz_on(stream: &mut std::net::TcpStream) -> u16 {
    use std::io::Write as _;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the connection was closed");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return head[9..12].parse().unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_alone_runs_production_and_a_set_variable_overrides_it() {
    let jwks = JwksServer::start(&[key()]).await;
    let db = TempDb::new();
    let file = ConfigOnDisk::new(&config_text(&jwks, &db, &[ADMIN], &[("ops", OPS_KEY)], ""));
    let server = start_from_file(&file, &[]);
    assert_eq!(whoami_status(&server, ADMIN).await, StatusCode::OK);
    assert_eq!(whoami_status(&server, "bob@acme.com").await, StatusCode::FORBIDDEN);
    // The key is in the file only as its digest.
    assert_eq!(stats_status(&server, OPS_KEY).await, StatusCode::OK);
    assert_eq!(stats_status(&server, BACKUP_KEY).await, StatusCode::UNAUTHORIZED);
    drop(server);

    // A variable that is set wins over the file, setting by setting.
    let server = start_from_file(&file, &[("ZTGATE_ADMIN_EMAILS", "bob@acme.com".into())]);
    assert_eq!(whoami_status(&server, "bob@acme.com").await, StatusCode::OK);
    assert_eq!(whoami_status(&server, ADMIN).await, StatusCode::FORBIDDEN);
    assert_eq!(stats_status(&server, OPS_KEY).await, StatusCode::OK, "the file's keys still apply");
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused_at_start_naming_the_key_and_its_line() {
    let db = TempDb::new();
    let file = ConfigOnDisk::new(&format!(
        "[server]\ndb = {:?}\n\n[access]\nteam_domain = {TEAM:?}\naudiences = [{AUD:?}]\nallow_email = [\"a@b.c\"]\n",
        db.path()
    ));
    let (status, stderr) = run_to_exit(&[("ZTGATE_CONFIG", file.path())]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    for needle in ["ZTGATE_CONFIG", "line 7", "allow_email"] {
        assert!(stderr.contains(needle), "stderr does not say {needle:?}:\n{stderr}");
    }
    // A value that fails the variable's check names the variable and the file's key.
    let file = ConfigOnDisk::new(&format!("[server]\ndb = {:?}\nheader_timeout = \"ten\"\n", db.path()));
    let (status, stderr) = run_to_exit(&[("ZTGATE_CONFIG", file.path())]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ZTGATE_HEADER_TIMEOUT") && stderr.contains("server.header_timeout"), "{stderr}");
}

#[test]
fn a_secret_written_into_the_config_file_works_with_a_warning_and_is_never_logged() {
    let db = TempDb::new();
    let file = ConfigOnDisk::new(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndb = {:?}\n\n[api_keys]\nops = {{ value = {OPS_KEY:?} }}\n", // pragma: allowlist secret
        db.path()
    ));
    let server = Server::start(&[("ZTGATE_CONFIG", file.path())]);
    let logs = server.logs();
    assert!(logs.contains("api_keys.ops: the key is written in the file"), "{logs}");
    assert!(!logs.contains(OPS_KEY), "the key was logged:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_admins_and_keys_atomically_keeping_connections_and_the_key_cache() {
    let jwks = JwksServer::start(&[key()]).await;
    let db = TempDb::new();
    let file = ConfigOnDisk::new(&config_text(&jwks, &db, &[ADMIN], &[("ops", OPS_KEY)], ""));
    let server = start_from_file(&file, &[]);
    let mut kept_alive = std::net::TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    kept_alive.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(healthz_on(&mut kept_alive), 200);
    assert_eq!(whoami_status(&server, ADMIN).await, StatusCode::OK);
    let fetches = jwks.fetches();

    file.write(&config_text(&jwks, &db, &["bob@acme.com"], &[("backup", BACKUP_KEY)], ""));
    sighup_and_wait(&server, "config_reloaded", 1);
    assert_eq!(whoami_status(&server, "bob@acme.com").await, StatusCode::OK);
    assert_eq!(whoami_status(&server, ADMIN).await, StatusCode::FORBIDDEN);
    assert_eq!(stats_status(&server, OPS_KEY).await, StatusCode::UNAUTHORIZED, "a removed key still works");
    assert_eq!(stats_status(&server, BACKUP_KEY).await, StatusCode::OK);
    assert_eq!(healthz_on(&mut kept_alive), 200, "the open connection was dropped");
    assert_eq!(jwks.fetches(), fetches, "the reload dropped the JWKS cache");

    // A file that fails validation is refused whole: the last good one keeps serving.
    file.write(&config_text(
        &jwks,
        &db,
        &[ADMIN],
        &[("ops", OPS_KEY)],
        "[request]\ntrust_cert_header = true\n",
    ));
    sighup_and_wait(&server, "config_reload_failed", 1);
    assert!(server.logs().contains("trust_cert_header"), "{}", server.logs());
    assert_eq!(whoami_status(&server, "bob@acme.com").await, StatusCode::OK);
    assert_eq!(whoami_status(&server, ADMIN).await, StatusCode::FORBIDDEN);
    assert_eq!(stats_status(&server, BACKUP_KEY).await, StatusCode::OK);
    assert_eq!(stats_status(&server, OPS_KEY).await, StatusCode::UNAUTHORIZED);

    // Both outcomes are counted.
    let metrics = call(&server, "GET", "/metrics", &[("X-Api-Key", BACKUP_KEY)]).await.text().await.unwrap();
    for line in [
        "ztgate_config_reloads_total{outcome=\"applied\"} 1",
        "ztgate_config_reloads_total{outcome=\"refused\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_admin_reload_takes_an_admin_and_an_api_key_and_answers_422_for_a_bad_file() {
    let jwks = JwksServer::start(&[key()]).await;
    let db = TempDb::new();
    let file = ConfigOnDisk::new(&config_text(&jwks, &db, &[ADMIN], &[("ops", OPS_KEY)], ""));
    let server = start_from_file(&file, &[]);
    let token = user_token(ADMIN);
    let res = call(&server, "POST", "/admin/reload", &[("Cf-Access-Jwt-Assertion", &token)]).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "an admin without an API key reloaded");
    let res = call(&server, "POST", "/admin/reload", &[("X-Api-Key", OPS_KEY)]).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "an API key without an admin reloaded");

    let both = [("Cf-Access-Jwt-Assertion", token.as_str()), ("X-Api-Key", OPS_KEY)];
    file.write(&config_text(&jwks, &db, &[ADMIN, "bob@acme.com"], &[("ops", OPS_KEY)], ""));
    let res = call(&server, "POST", "/admin/reload", &both).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = json_of(res).await;
    assert_eq!(body["reloaded"], true);
    assert_eq!(body["kept_key_cache"], true);
    assert_eq!(whoami_status(&server, "bob@acme.com").await, StatusCode::OK);

    file.write("[access]\nteam_domain = 7\n");
    let res = call(&server, "POST", "/admin/reload", &both).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json_of(res).await;
    assert_eq!(body["code"], "config_invalid");
    assert!(body["message"].as_str().unwrap().contains("line 2"), "{body}");
    assert_eq!(
        whoami_status(&server, "bob@acme.com").await,
        StatusCode::OK,
        "the old config stopped serving"
    );

    // A new team or audience is a new verifier, with caches of its own.
    let other = config_text(&jwks, &db, &[ADMIN], &[("ops", OPS_KEY)], "").replace(AUD, "aud-other");
    file.write(&other);
    let res = call(&server, "POST", "/admin/reload", &both).await;
    assert_eq!(json_of(res).await["kept_key_cache"], false);
    assert_eq!(
        whoami_status(&server, ADMIN).await,
        StatusCode::UNAUTHORIZED,
        "a token for the old AUD passed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_in_the_config_file_replace_the_built_in_table_and_deny_what_they_do_not_name() {
    let jwks = JwksServer::start(&[key()]).await;
    let db = TempDb::new();
    let routes = "\n[[routes]]\nmethod = \"GET\"\npath = \"/healthz\"\nrequire = \"public\"\n\n\
                  [[routes]]\nmethod = \"GET\"\npath = \"/admin/whoami\"\nrequire = { any_of = [\"access\", \"api_key\"] }\n";
    let file = ConfigOnDisk::new(&config_text(&jwks, &db, &[ADMIN], &[("ops", OPS_KEY)], routes));
    let server = start_from_file(&file, &[]);
    let res = call(&server, "GET", "/admin/whoami", &[("X-Api-Key", OPS_KEY)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await["kind"], "api_key");
    assert_eq!(whoami_status(&server, ADMIN).await, StatusCode::OK);
    let res = call(&server, "GET", "/admin/notes", &[("Cf-Access-Jwt-Assertion", &user_token(ADMIN))]).await;
    assert_refused(res, StatusCode::FORBIDDEN, "no_policy").await;

    // A route naming a mechanism the server does not have is refused at start.
    let bad = ConfigOnDisk::new(&config_text(
        &jwks,
        &db,
        &[ADMIN],
        &[],
        "\n[[routes]]\npath = \"/x\"\nrequire = \"acess\"\n",
    ));
    drop(server);
    let (status, stderr) =
        run_to_exit(&[("ZTGATE_CONFIG", bad.path()), ("ZTGATE_TEST_HMAC", format!("k1:{HMAC_K1}"))]);
    assert_ne!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("acess") && stderr.contains("routes[0]"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_file_starts_the_server_and_its_routes_hold() {
    let jwks = JwksServer::start(&[key()]).await;
    let db = TempDb::new();
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/admin_server/ztgate.example.toml");
    // The file's secrets are references: give them values; point it at the test team.
    let server = Server::start(&[
        ("ZTGATE_CONFIG", example.to_str().unwrap().to_owned()),
        ("ZTGATE_LISTEN", "127.0.0.1:0".into()),
        ("ZTGATE_DB", db.path()),
        ("ZTGATE_TEAM_DOMAIN", TEAM.into()),
        ("ZTGATE_AUD", AUD.into()),
        ("ZTGATE_CERTS_URL", jwks.url()),
        ("ZTGATE_ADMIN_EMAILS", ADMIN.into()),
        ("BACKUP_API_KEY", BACKUP_KEY.into()),
        ("UNSUBSCRIBE_KEYS", format!("k1:{HMAC_K1}")),
        ("SVIX_WEBHOOK_SECRET", webhook_secret()),
    ]);
    assert_eq!(call(&server, "GET", "/healthz", &[]).await.status(), StatusCode::OK);
    assert_eq!(whoami_status(&server, ADMIN).await, StatusCode::OK);
    let res = call(&server, "GET", "/ops/stats", &[("Cf-Access-Jwt-Assertion", &user_token(ADMIN))]).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "missing_credential").await;
    // The key given by reference to a variable.
    assert_eq!(stats_status(&server, BACKUP_KEY).await, StatusCode::OK);
    // Not in the file's table (the built-in one has it).
    let res = call(&server, "GET", "/mtls/whoami", &[]).await;
    assert_refused(res, StatusCode::FORBIDDEN, "no_policy").await;
}

// ---------------------------------------------------------------------------------------------
// Access in depth: groups, login method, session age (ZTGATE_ADMIN_GROUPS...)

/// A `get-identity` endpoint on loopback answering `identity` for every login.
async fn identity_server(identity: Value) -> JwksServer {
    JwksServer::start_with_body(identity.to_string()).await
}

fn identity_url(server: &JwksServer) -> String {
    server.url_for("/cdn-cgi/access/get-identity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_groups_alone_admit_members_and_refuse_the_rest() {
    let id = identity_server(ztgate::dev::identity_json("bob@acme.com", &["ops"], &["pwd"])).await;
    let url = identity_url(&id);
    let p = Production::start_with(&[
        ("ZTGATE_ADMIN_EMAILS", None),
        ("ZTGATE_SERVICE_TOKENS", None),
        ("ZTGATE_ADMIN_GROUPS", Some("ops, security")),
        ("ZTGATE_IDENTITY_URL", Some(&url)),
    ])
    .await;
    let res = p.get("/admin/whoami", Some(&user_token("bob@acme.com"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_of(res).await["groups"], json!(["ops"]));
    // Alice's identity lists no admin group.
    id.set_body(ztgate::dev::identity_json(ADMIN, &["staff"], &["pwd"]).to_string());
    assert_refused(
        p.get("/admin/whoami", Some(&user_token(ADMIN))).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // The identity endpoint down: a group decision cannot be made.
    id.set_mode(common::Mode::Status(502));
    let res = p.get("/admin/whoami", Some(&user_token("carol@acme.com"))).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(json_of(res).await["code"], "identity_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_auth_method_refuses_a_password_login() {
    let id = identity_server(ztgate::dev::identity_json(ADMIN, &[], &["pwd"])).await;
    let url = identity_url(&id);
    let p = Production::start_with(&[
        ("ZTGATE_REQUIRE_AUTH_METHOD", Some("hwk")),
        ("ZTGATE_IDENTITY_URL", Some(&url)),
    ])
    .await;
    assert_refused(
        p.get("/admin/whoami", Some(&user_token(ADMIN))).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    id.set_body(ztgate::dev::identity_json("bob@acme.com", &[], &["hwk", "mfa"]).to_string());
    assert_eq!(p.get("/admin/whoami", Some(&user_token("bob@acme.com"))).await.status(), StatusCode::OK);
    // A service token has no login to check: it is judged by its list alone.
    assert_eq!(p.get("/admin/whoami", Some(&service_token(SERVICE))).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_older_than_the_max_session_age_is_401_session_too_old() {
    let p = Production::start_with(&[("ZTGATE_MAX_SESSION_AGE", Some("3600"))]).await;
    let stale = key().sign(&user_claims(TEAM, AUD, ADMIN, now() - 2 * 3600, 3 * 3600));
    assert_refused(p.get("/admin/whoami", Some(&stale)).await, StatusCode::UNAUTHORIZED, "session_too_old")
        .await;
    assert_eq!(p.get("/admin/whoami", Some(&user_token(ADMIN))).await.status(), StatusCode::OK);
    let db = TempDb::new();
    let vars = with(production_config(), "ZTGATE_DB", Some(&db.path()));
    assert_config_error(&with(vars, "ZTGATE_MAX_SESSION_AGE", Some("soon")), "ZTGATE_MAX_SESSION_AGE");
}

// ---------------------------------------------------------------------------------------------
// Revocations and failed-authentication budgets (in memory: one instance)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_through_the_api_is_refused_from_the_next_request() {
    let p = Production::start().await;
    let admin = user_token(ADMIN);
    assert_eq!(p.call("GET", "/ops/stats", &[("X-Api-Key", BACKUP_KEY)]).await.status(), StatusCode::OK);
    // Revoking takes an Access admin and an API key.
    let body = r#"{"kind": "api_key", "id": "backup"}"#;
    let post = |headers: Vec<(&'static str, String)>| {
        let mut req =
            http().post(p.server.url("/admin/revocations")).header("content-type", "application/json");
        for (name, value) in headers {
            req = req.header(name, value);
        }
        req.body(body).send()
    };
    let res = post(vec![("Cf-Access-Jwt-Assertion", admin.clone())]).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "an admin alone revoked");
    let res =
        post(vec![("Cf-Access-Jwt-Assertion", admin.clone()), ("X-Api-Key", OPS_KEY.into())]).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(json_of(res).await, json!({ "revoked": { "kind": "api_key", "id": "backup" } }));
    let res = p.call("GET", "/ops/stats", &[("X-Api-Key", BACKUP_KEY)]).await;
    assert_refused(res, StatusCode::UNAUTHORIZED, "revoked").await;
    assert_eq!(p.call("GET", "/ops/stats", &[("X-Api-Key", OPS_KEY)]).await.status(), StatusCode::OK);
    let list = json_of(p.get("/admin/revocations", Some(&admin)).await).await;
    assert_eq!(list, json!({ "revocations": [{ "kind": "api_key", "id": "backup" }] }));
    // A revocation of an unknown kind is a 400, not a silent no-op.
    let res = http()
        .post(p.server.url("/admin/revocations"))
        .header("Cf-Access-Jwt-Assertion", &admin)
        .header("X-Api-Key", OPS_KEY)
        .json(&json!({ "kind": "password", "id": "x" }))
        .send()
        .await
        .unwrap();
    assert_refused(res, StatusCode::BAD_REQUEST, "invalid_revocation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_guessing_api_keys_gets_429_after_its_budget() {
    let p = Production::start_with(&[("ZTGATE_AUTH_FAILURES", Some("3/60s"))]).await;
    let guess = async |key: &str| {
        p.call("GET", "/ops/stats", &[("X-Api-Key", key), ("CF-Connecting-IP", "192.0.2.9")]).await
    };
    for _ in 0..3 {
        assert_eq!(guess("guess-0123456789abcdef0123456789").await.status(), StatusCode::UNAUTHORIZED);
    }
    let res = guess("guess-0123456789abcdef0123456789").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // 3 per 60 s: the next failure is allowed 20 s after the last (less the time the test took
    // on a busy machine).
    let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((15..=20).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(json_of(res).await["code"], "too_many_requests");
    // Blocked before any check: the right key from that client waits too.
    assert_eq!(guess(OPS_KEY).await.status(), StatusCode::TOO_MANY_REQUESTS);
    let other =
        p.call("GET", "/ops/stats", &[("X-Api-Key", OPS_KEY), ("CF-Connecting-IP", "192.0.2.10")]).await;
    assert_eq!(other.status(), StatusCode::OK);
    let db = TempDb::new();
    let vars = with(production_config(), "ZTGATE_DB", Some(&db.path()));
    assert_config_error(&with(vars, "ZTGATE_AUTH_FAILURES", Some("many")), "ZTGATE_AUTH_FAILURES");
}

// ---------------------------------------------------------------------------------------------
// Public form: POST /api/subscribe behind Turnstile, with its own request budget

/// `unix` as RFC 3339 UTC (`2026-12-07T02:30:00Z`), as siteverify writes `challenge_ts`.
fn rfc3339(unix: u64) -> String {
    let (days, secs) = ((unix / 86_400) as i64, unix % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_takes_a_human_and_a_budget_per_client() {
    let answer = |success: bool, hostname: &str| {
        json!({ "success": success, "challenge_ts": rfc3339(now()), "hostname": hostname, "action": "subscribe",
                "error-codes": [] })
        .to_string()
    };
    let siteverify = JwksServer::start_with_body(answer(true, "news.acme.com")).await;
    let url = siteverify.url_for("/turnstile/v0/siteverify");
    let p = Production::start_with(&[
        ("ZTGATE_TURNSTILE_SECRET", Some("0x4AAAAAAA-test-secret-key")), // pragma: allowlist secret
        ("ZTGATE_TURNSTILE_HOSTNAMES", Some("news.acme.com")),
        ("ZTGATE_TURNSTILE_URL", Some(&url)),
        ("ZTGATE_SUBSCRIBE_LIMIT", Some("3/60s")),
    ])
    .await;
    let subscribe = async |email: &str, ip: &str| {
        http()
            .post(p.server.url("/api/subscribe"))
            .header("CF-Connecting-IP", ip)
            .json(&json!({ "email": email, "turnstile": "XXXX.DUMMY.TOKEN" }))
            .send()
            .await
            .unwrap()
    };
    let res = subscribe("Carol@Example.com", "192.0.2.50").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body = json_of(res).await;
    assert_eq!(body["subscribed"], "carol@example.com");
    // The minted link unsubscribes exactly that address.
    let link = body["unsubscribe_token"].as_str().unwrap().to_owned();
    let ring = KeyRing::parse(&format!("k1:{HMAC_K1}")).unwrap();
    assert_eq!(ring.verify(&link, "unsubscribe", now()).unwrap().subject, "carol@example.com");
    assert!(siteverify.last_request_head().starts_with("POST "), "{}", siteverify.last_request_head());
    // Siteverify says no: nothing stored, 401.
    siteverify.set_body(answer(false, "news.acme.com"));
    assert_refused(
        subscribe("dave@example.com", "192.0.2.50").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credential",
    )
    .await;
    // A token solved on another site: 401.
    siteverify.set_body(answer(true, "evil.example"));
    assert_refused(
        subscribe("erin@example.com", "192.0.2.50").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credential",
    )
    .await;
    // The budget is spent by every request, before anything is verified.
    let res = subscribe("frank@example.com", "192.0.2.50").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    // Siteverify down: fail closed.
    siteverify.set_mode(common::Mode::Status(500));
    let res = subscribe("gina@example.com", "192.0.2.51").await;
    assert_refused(res, StatusCode::SERVICE_UNAVAILABLE, "state_unavailable").await;
    // Only the human was stored.
    assert_eq!(p.stats().await["subscribers"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_without_a_turnstile_secret_is_503_not_configured() {
    let p = Production::start().await;
    let res = http()
        .post(p.server.url("/api/subscribe"))
        .json(&json!({ "email": "a@example.com", "turnstile": "x" }))
        .send()
        .await
        .unwrap();
    assert_refused(res, StatusCode::SERVICE_UNAVAILABLE, "not_configured").await;
}
