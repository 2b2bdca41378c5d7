//! Shared test parts: a real JWKS server on 127.0.0.1 that can rotate keys, fail, stall,
//! return garbage or a huge body, and counts its fetches; plus helpers to build gates.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use ztgate::clock::FixedClock;
use ztgate::dev::{DevKey, jwks_json};
use ztgate::identity::JwksConfig;
use ztgate::native::HttpFetcher;
use ztgate::{AccessConfig, Gate, Policy};

pub const TEAM: &str = "https://acme-test.cloudflareaccess.com";
pub const AUD: &str = "aud-4b8f1c";
pub const NOW: u64 = 1_800_000_000;
pub const CERTS_PATH: &str = "/cdn-cgi/access/certs";

/// How the JWKS server answers.
#[derive(Clone, Debug)]
pub enum Mode {
    /// 200, JSON, the current document.
    Serve,
    /// This status with a JSON error body.
    Status(u16),
    /// Accept, then say nothing for this long.
    Stall(Duration),
    /// 200 JSON content type, body not JSON.
    Garbage,
    /// 302 to this URL.
    Redirect(String),
    /// 200 with this Content-Type and the current document.
    ContentType(&'static str),
}

struct ServerState {
    body: Mutex<String>,
    mode: Mutex<Mode>,
    cache_control: Mutex<Option<String>>,
    fetches: AtomicUsize,
    last_head: Mutex<String>,
}

/// A JWKS server on an ephemeral loopback port. Dropping it stops serving new connections.
pub struct JwksServer {
    pub addr: std::net::SocketAddr,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    pub async fn start(keys: &[&DevKey]) -> Self {
        Self::start_with_body(jwks_json(keys)).await
    }

    pub async fn start_with_body(body: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ServerState {
            body: Mutex::new(body),
            mode: Mutex::new(Mode::Serve),
            cache_control: Mutex::new(None),
            fetches: AtomicUsize::new(0),
            last_head: Mutex::new(String::new()),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Self { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}{CERTS_PATH}", self.addr)
    }

    pub fn set_keys(&self, keys: &[&DevKey]) {
        *self.state.body.lock().unwrap() = jwks_json(keys);
    }

    pub fn set_body(&self, body: impl Into<String>) {
        *self.state.body.lock().unwrap() = body.into();
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        *self.state.cache_control.lock().unwrap() = value.map(str::to_owned);
    }

    /// Requests received so far (any path).
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// The head (request line and headers) of the last request received.
    pub fn last_request_head(&self) -> String {
        self.state.last_head.lock().unwrap().clone()
    }

    /// This server's address with `path`: the same document is served on every path (used as a
    /// `get-identity` endpoint too).
    pub fn url_for(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn serve(mut stream: TcpStream, state: Arc<ServerState>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    state.fetches.fetch_add(1, Ordering::SeqCst);
    *state.last_head.lock().unwrap() = String::from_utf8_lossy(&head).into_owned();
    let mode = state.mode.lock().unwrap().clone();
    let body = state.body.lock().unwrap().clone();
    let cache = state.cache_control.lock().unwrap().clone();
    let cache_line = cache.map(|c| format!("Cache-Control: {c}\r\n")).unwrap_or_default();
    let response: Vec<u8> = match mode {
        Mode::Serve => ok("application/json", &cache_line, body.as_bytes()),
        Mode::ContentType(ct) => ok(ct, &cache_line, body.as_bytes()),
        Mode::Status(code) => {
            format!("HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}")
                .into_bytes()
        }
        Mode::Stall(d) => {
            tokio::time::sleep(d).await;
            ok("application/json", "", body.as_bytes())
        }
        Mode::Garbage => ok("application/json", "", b"<html>not json</html>"),
        Mode::Redirect(to) => {
            format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
        }
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

fn ok(content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A key made at test time. RSA generation costs ~0.1 s, so tests share a few.
pub fn key(kid: &str) -> DevKey {
    DevKey::generate(kid).expect("RSA key generation")
}

/// A gate for TEAM/AUD, fetching from `url`, reading `clock`, admitting `policy`.
pub fn gate_with(url: &str, clock: Arc<FixedClock>, policy: Policy, jwks: JwksConfig) -> Gate {
    Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
        .fetcher(Arc::new(HttpFetcher::with_limits(url, Duration::from_secs(2), 1024 * 1024).unwrap()))
        .clock(clock)
        .jwks_config(jwks)
        .policy(policy)
        .build()
        .unwrap()
}

/// The usual test policy: alice@acme.com, anyone at ops.acme.com, the `ci.access` service token.
pub fn policy() -> Policy {
    Policy::new()
        .allow_emails(["alice@acme.com"])
        .allow_email_domains(["ops.acme.com"])
        .allow_service_tokens(["ci.access"])
}

pub fn gate(url: &str, clock: Arc<FixedClock>) -> Gate {
    gate_with(url, clock, policy(), JwksConfig::default())
}

pub fn clock() -> Arc<FixedClock> {
    Arc::new(FixedClock::at(NOW))
}

/// An http::Request carrying `token` in the assertion header.
pub fn request_with_token(token: &str) -> http::Request<String> {
    http::Request::builder()
        .uri("/admin/whoami")
        .header("cf-access-jwt-assertion", token)
        .body(String::new())
        .unwrap()
}

/// A log writer (a tracing-subscriber `MakeWriter` through `move || captured.clone()`) that
/// keeps everything written, so a test can search the logs.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
