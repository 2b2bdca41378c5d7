//! `GET /admin/ws` of `examples/admin_server/`: the upgrade is refused before any socket
//! exists, an open socket answers with its caller's id, and it is closed when the token
//! expires or a credential is revoked while it is open. The example runs as a child process,
//! driven by a real WebSocket client on 127.0.0.1 with tokens signed at test time.
//!
//! `cargo test` builds the example. When selecting this file alone, build it first:
//! `cargo build --example admin_server && cargo test --test admin_websocket`.

mod common;
mod example_harness;

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{AUD, JwksServer, TEAM};
use example_harness::{Server, TempDb, run_to_exit};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use ztgate::dev::{DevKey, user_claims};

const ADMIN: &str = "alice@acme.com";
const OPS_KEY: &str = "ops-key-0123456789abcdef0123456789abcdef"; // pragma: allowlist secret
/// How long a test waits for something the server must do within a second or two.
const PATIENCE: Duration = Duration::from_secs(15);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn key() -> &'static DevKey {
    static KEY: OnceLock<DevKey> = OnceLock::new();
    KEY.get_or_init(|| common::key("k1"))
}

/// An Access token for `email`, valid for `ttl_secs`, with its own `sub` (what a revocation
/// names).
fn token(email: &str, sub: &str, ttl_secs: u64) -> String {
    let mut claims = user_claims(TEAM, AUD, email, now(), ttl_secs);
    claims["sub"] = json!(sub);
    key().sign(&claims)
}

struct Admin {
    server: Server,
    _jwks: JwksServer,
    _db: TempDb,
}

impl Admin {
    /// The server, with `extra` variables; the admins are `ZTGATE_ADMIN_EMAILS`' unless
    /// `ZTGATE_CONFIG` is among them (its file names them).
    async fn start(extra: &[(&'static str, &str)]) -> Self {
        let jwks = JwksServer::start(&[key()]).await;
        let db = TempDb::new();
        let mut vars = vec![
            ("ZTGATE_LISTEN", "127.0.0.1:0".to_owned()),
            ("ZTGATE_TEAM_DOMAIN", TEAM.into()),
            ("ZTGATE_CERTS_URL", jwks.url()),
            ("ZTGATE_AUD", AUD.into()),
            ("ZTGATE_DB", db.path()),
            ("ZTGATE_API_KEYS", format!("ops:{OPS_KEY}")),
        ];
        if !extra.iter().any(|(k, _)| *k == "ZTGATE_CONFIG") {
            vars.push(("ZTGATE_ADMIN_EMAILS", ADMIN.into()));
        }
        vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        Self { server: Server::start(&vars), _jwks: jwks, _db: db }
    }

    fn ws_url(&self) -> String {
        self.server.url("/admin/ws").replacen("http://", "ws://", 1)
    }

    async fn connect(&self, token: Option<&str>) -> Result<Socket, WsError> {
        let mut req = self.ws_url().into_client_request().unwrap();
        if let Some(token) = token {
            req.headers_mut().insert("Cf-Access-Jwt-Assertion", token.parse().unwrap());
        }
        tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect timed out")
            .map(|(s, _)| s)
    }

    /// Revokes Access logins with this `sub` through the admin API.
    async fn revoke_sub(&self, sub: &str) {
        let res = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(self.server.url("/admin/revocations"))
            .header("Cf-Access-Jwt-Assertion", token(ADMIN, "sub-admin", 600))
            .header("X-Api-Key", OPS_KEY)
            .json(&json!({ "kind": "access_sub", "id": sub }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
}

/// The HTTP refusal of an upgrade: its status and the JSON body's code.
fn refusal(result: Result<Socket, WsError>) -> (u16, String) {
    match result {
        Err(WsError::Http(res)) => {
            let body: Value = serde_json::from_slice(res.body().as_deref().unwrap_or_default()).unwrap();
            (res.status().as_u16(), body["code"].as_str().unwrap_or_default().to_owned())
        }
        Err(other) => panic!("refused without an HTTP answer: {other}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

/// The next message that is not a ping or pong.
async fn next(socket: &mut Socket) -> Message {
    loop {
        match tokio::time::timeout(PATIENCE, socket.next()).await.expect("nothing within the patience") {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return message,
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    }
}

async fn ask(socket: &mut Socket, text: &str) -> Message {
    socket.send(Message::Text(text.into())).await.unwrap();
    next(socket).await
}

fn close_of(message: Message) -> (u16, String) {
    match message {
        Message::Close(Some(CloseFrame { code, reason })) => (code.into(), reason.to_string()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_without_a_credential_is_401_and_opens_no_socket() {
    let admin = Admin::start(&[]).await;
    assert_eq!(refusal(admin.connect(None).await), (401, "missing_credential".to_owned()));
    assert_eq!(refusal(admin.connect(Some("not-a-jwt")).await).0, 401);
    let expired = {
        let mut claims = user_claims(TEAM, AUD, ADMIN, now() - 7200, 3600);
        claims["sub"] = json!("sub-expired");
        key().sign(&claims)
    };
    assert_eq!(refusal(admin.connect(Some(&expired)).await), (401, "token_expired".to_owned()));
    // No socket was opened for any of them.
    assert!(!admin.server.logs().contains("socket_opened"), "{}", admin.server.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_by_a_user_not_on_the_list_is_403() {
    let admin = Admin::start(&[]).await;
    let mallory = token("mallory@acme.com", "sub-mallory", 600);
    assert_eq!(refusal(admin.connect(Some(&mallory)).await), (403, "forbidden".to_owned()));
    assert!(!admin.server.logs().contains("socket_opened"), "{}", admin.server.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_socket_answers_each_message_with_the_callers_id() {
    let admin = Admin::start(&[]).await;
    let mut socket = admin.connect(Some(&token(ADMIN, "sub-alice", 600))).await.unwrap();
    for text in ["hello", "a longer second message"] {
        let Message::Text(reply) = ask(&mut socket, text).await else { panic!("not text") };
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply, json!({ "principal": "user:alice@acme.com", "kind": "user", "bytes": text.len() }));
    }
    socket.close(None).await.unwrap();
    // What the refusal tests look for is logged for an opened socket.
    assert!(admin.server.logs().contains("socket_opened"), "{}", admin.server.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_is_closed_when_its_token_expires() {
    // Checks every 5 minutes: only the expiry timer can close it on time.
    let admin = Admin::start(&[("ZTGATE_WS_RECHECK", "300s")]).await;
    let mut socket = admin.connect(Some(&token(ADMIN, "sub-short", 3))).await.unwrap();
    let Message::Text(_) = ask(&mut socket, "still valid").await else { panic!("no answer") };
    // Idle until the server closes it.
    assert_eq!(close_of(next(&mut socket).await), (4401, "token_expired".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_is_closed_on_the_timer_when_its_login_is_revoked() {
    let admin = Admin::start(&[("ZTGATE_WS_RECHECK", "200ms")]).await;
    let mut socket = admin.connect(Some(&token(ADMIN, "sub-to-revoke", 600))).await.unwrap();
    let Message::Text(_) = ask(&mut socket, "before").await else { panic!("no answer") };
    admin.revoke_sub("sub-to-revoke").await;
    // The client says nothing: the periodic check closes it.
    assert_eq!(close_of(next(&mut socket).await), (4401, "revoked".to_owned()));
    // And the same token cannot open a new one.
    assert_eq!(
        refusal(admin.connect(Some(&token(ADMIN, "sub-to-revoke", 600))).await),
        (401, "revoked".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_after_a_revocation_is_not_answered() {
    // The timer is far off: only the check before each message can catch it.
    let admin = Admin::start(&[("ZTGATE_WS_RECHECK", "300s")]).await;
    let mut socket = admin.connect(Some(&token(ADMIN, "sub-chatty", 600))).await.unwrap();
    let other = admin.connect(Some(&token(ADMIN, "sub-unrelated", 600))).await.unwrap();
    let Message::Text(_) = ask(&mut socket, "before").await else { panic!("no answer") };
    admin.revoke_sub("sub-chatty").await;
    assert_eq!(close_of(ask(&mut socket, "after").await), (4401, "revoked".to_owned()));
    // Another login's socket is untouched.
    let mut other = other;
    let Message::Text(reply) = ask(&mut other, "still here").await else { panic!("no answer") };
    assert!(reply.contains("user:alice@acme.com"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_is_closed_when_a_reload_no_longer_admits_its_caller() {
    // The admins come from a configuration file; the rest from the variables.
    let file = TempDb::new().path() + ".toml";
    let admins = |list: &str| {
        format!("[access]\nteam_domain = {TEAM:?}\naudiences = [{AUD:?}]\nallow_emails = [{list}]\n")
    };
    std::fs::write(&file, admins(r#""alice@acme.com", "carol@acme.com""#)).unwrap();
    let admin = Admin::start(&[("ZTGATE_CONFIG", &file), ("ZTGATE_WS_RECHECK", "200ms")]).await;
    let mut alice = admin.connect(Some(&token(ADMIN, "sub-reloaded", 600))).await.unwrap();
    let mut carol = admin.connect(Some(&token("carol@acme.com", "sub-carol", 600))).await.unwrap();
    let Message::Text(_) = ask(&mut alice, "before").await else { panic!("no answer") };

    std::fs::write(&file, admins(r#""carol@acme.com""#)).unwrap();
    let hup =
        std::process::Command::new("kill").args(["-HUP", &admin.server.child.id().to_string()]).status();
    assert!(hup.unwrap().success());
    // Alice says nothing: the periodic check, against the reloaded policy, closes her socket.
    assert_eq!(close_of(next(&mut alice).await), (4403, "forbidden".to_owned()));
    assert!(admin.server.logs().contains("config_reloaded"), "{}", admin.server.logs());
    // Carol, still listed, keeps hers.
    let Message::Text(reply) = ask(&mut carol, "still here").await else { panic!("no answer") };
    assert!(reply.contains("user:carol@acme.com"), "{reply}");
    // And alice cannot open a new one.
    assert_eq!(
        refusal(admin.connect(Some(&token(ADMIN, "sub-reloaded", 600))).await),
        (403, "forbidden".to_owned())
    );
    let _ = std::fs::remove_file(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_closes_open_sockets_with_going_away() {
    let mut admin = Admin::start(&[]).await;
    let mut socket = admin.connect(Some(&token(ADMIN, "sub-shutdown", 600))).await.unwrap();
    let Message::Text(_) = ask(&mut socket, "before").await else { panic!("no answer") };
    let int =
        std::process::Command::new("kill").args(["-INT", &admin.server.child.id().to_string()]).status();
    assert!(int.unwrap().success());
    assert_eq!(close_of(next(&mut socket).await), (1001, "going_away".to_owned()));
    // The server then exits cleanly, the socket's end logged.
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = admin.server.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not exit:\n{}", admin.server.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}\n{}", admin.server.logs());
    assert!(admin.server.logs().contains(r#"by="shutdown""#), "{}", admin.server.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_are_bounded_and_a_closed_one_frees_its_place() {
    let admin = Admin::start(&[("ZTGATE_MAX_WEBSOCKETS", "1")]).await;
    let alice = token(ADMIN, "sub-bounded", 600);
    let mut first = admin.connect(Some(&alice)).await.unwrap();
    let Message::Text(_) = ask(&mut first, "hi").await else { panic!("no answer") };
    assert_eq!(refusal(admin.connect(Some(&alice)).await), (503, "too_many_sockets".to_owned()));
    first.close(None).await.unwrap();
    // The close completes and the permit returns: a new socket opens (within the patience).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match admin.connect(Some(&alice)).await {
            Ok(_) => break,
            Err(WsError::Http(res)) if res.status() == 503 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("{other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_the_socket() {
    let admin = Admin::start(&[]).await;
    let mut socket = admin.connect(Some(&token(ADMIN, "sub-big", 600))).await.unwrap();
    let big = "x".repeat(17 * 1024);
    let _ = socket.send(Message::Text(big.into())).await;
    match tokio::time::timeout(PATIENCE, socket.next()).await.expect("no answer to an oversized message") {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1009),
        // The server may drop the connection instead of a close frame; it never answers.
        Some(Ok(Message::Text(text))) => panic!("an oversized message was answered: {text}"),
        _ => {}
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !admin.server.logs().contains(r#"by="error""#) {
        assert!(tokio::time::Instant::now() < deadline, "not closed as broken:\n{}", admin.server.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_bad_recheck_interval_or_socket_cap_stops_the_server_naming_the_variable() {
    for (var, value) in
        [("ZTGATE_WS_RECHECK", "0s"), ("ZTGATE_WS_RECHECK", "soon"), ("ZTGATE_MAX_WEBSOCKETS", "0")]
    {
        let (status, stderr) =
            run_to_exit(&[("ZTGATE_LISTEN", "127.0.0.1:0".to_owned()), (var, value.to_owned())]);
        assert_eq!(status.code(), Some(2), "{var}={value}: {status:?}\n{stderr}");
        assert!(stderr.contains(var), "{var}={value} not named:\n{stderr}");
    }
}
