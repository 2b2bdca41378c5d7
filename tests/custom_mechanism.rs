//! A mechanism written outside ztgate is a first-class citizen.
//!
//! This file is what a user of the crate would write: a `DeviceSignature` mechanism built only
//! from ztgate's public API (no `__private`, nothing `#[doc(hidden)]`). A device sends
//!
//! ```text
//! x-device-id:        <id>
//! x-device-signature: <lowercase hex HMAC-SHA256(device key, "METHOD\nPATH\nid")>
//! ```
//!
//! with a per-device key made at test time, and proves `Principal::Custom(device, id)`. The
//! tests run it through real parts: an axum `Router` with the gate as a Tower layer, served on
//! 127.0.0.1 by tokio and called with reqwest. They check that it composes with the built-in
//! mechanisms (`any_of`, `all_of`), that the request layer bounds and isolates the headers it
//! declared before it runs, and that hostile input never makes it panic.
//!
//! The HMAC, SHA-256 and constant-time compare come from `hmac`, `sha2` and `subtle`, and the
//! random keys from `aws-lc-rs`: crates a user would add to their own `Cargo.toml`. Here they are
//! reachable because Cargo gives integration tests the package's normal dependencies (and
//! `aws-lc-rs` is switched on by the `dev` feature the dev-dependency enables); ztgate re-exports
//! none of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use http::HeaderName;
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use ztgate::identity::{ApiKeyAuth, ApiKeys, Attempt, Mechanism, Requirement};
use ztgate::request::{RequestFacts, RequestLimits};
use ztgate::secrets::Secret;
use ztgate::{BoxFuture, CustomPrincipal, Gate, Principal, Rejection, Verified};

// ---------------------------------------------------------------------------------------------
// The mechanism, as a user would write it.
// ---------------------------------------------------------------------------------------------

type HmacSha256 = Hmac<Sha256>;

const DEVICE_ID: &str = "x-device-id";
const DEVICE_SIGNATURE: &str = "x-device-signature";
static DEVICE_HEADERS: [HeaderName; 2] =
    [HeaderName::from_static(DEVICE_ID), HeaderName::from_static(DEVICE_SIGNATURE)];
const NAME: &str = "device_signature";

/// Registered devices, each with its own HMAC key, proving `custom:device:<id>`.
#[derive(Debug)]
struct DeviceSignature {
    devices: HashMap<String, Secret>,
}

impl DeviceSignature {
    fn new(devices: impl IntoIterator<Item = (String, Secret)>) -> Self {
        Self { devices: devices.into_iter().collect() }
    }

    fn refuse(reason: &'static str) -> Attempt {
        Attempt::Refused(Rejection::InvalidCredential { mechanism: NAME, reason })
    }

    fn verify(&self, facts: &RequestFacts, id: &str, signature: &str) -> Attempt {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Self::refuse("malformed device id");
        }
        // The whole path (the request layer refuses one over `max_path_bytes` with 414): the
        // signature covers every byte of what it authorizes.
        let path = facts.path();
        let Some(given) = decode_hex_32(signature) else {
            return Self::refuse("signature is not 64 lowercase hex digits");
        };
        let Some(key) = self.devices.get(id) else {
            return Self::refuse("unknown device");
        };
        let expected = device_mac(key.expose(), facts.method().as_str(), path, id);
        if bool::from(expected.as_slice().ct_eq(&given)) {
            Attempt::Verified(Principal::Custom(CustomPrincipal::new("device", id)))
        } else {
            Self::refuse("bad signature")
        }
    }
}

impl Mechanism for DeviceSignature {
    fn name(&self) -> &'static str {
        NAME
    }

    fn headers(&self) -> &[HeaderName] {
        &DEVICE_HEADERS
    }

    fn attempt<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Attempt> {
        let outcome = match (facts.header(DEVICE_ID), facts.header(DEVICE_SIGNATURE)) {
            (None, None) => Attempt::NotPresent,
            // Half a device credential is a bad credential, not an absent one: it must not let
            // an `any_of` fall through to a weaker mechanism.
            (Some(_), None) | (None, Some(_)) => Self::refuse("incomplete device credential"),
            (Some(id), Some(sig)) => self.verify(facts, id.expose(), sig.expose()),
        };
        Box::pin(std::future::ready(outcome))
    }
}

/// `HMAC-SHA256(key, "METHOD\nPATH\nid")`: what the device signs and the server recomputes.
fn device_mac(key: &[u8], method: &str, path: &str, id: &str) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in [method, "\n", path, "\n", id] {
        mac.update(part.as_bytes());
    }
    mac.finalize().into_bytes().into()
}

/// Exactly 64 lowercase hex digits (one spelling per MAC), else `None`.
fn decode_hex_32(text: &str) -> Option<[u8; 32]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// A generic wrapper, also written outside the crate: counts attempts and records which headers
// the wrapped mechanism could see.
// ---------------------------------------------------------------------------------------------

/// Headers the spy looks up through `RequestFacts::header` on every attempt.
const PROBES: [&str; 6] =
    [DEVICE_ID, DEVICE_SIGNATURE, "x-device-debug", "x-api-key", "authorization", "cookie"];

#[derive(Debug, Default)]
struct SpyLog {
    attempts: AtomicUsize,
    /// The probes that were visible at the last attempt.
    visible: Mutex<Vec<&'static str>>,
}

impl SpyLog {
    fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct Spy<M> {
    inner: M,
    log: Arc<SpyLog>,
}

impl<M: Mechanism> Mechanism for Spy<M> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn headers(&self) -> &[HeaderName] {
        self.inner.headers()
    }

    fn attempt<'a>(&'a self, facts: &'a RequestFacts) -> BoxFuture<'a, Attempt> {
        self.log.attempts.fetch_add(1, Ordering::SeqCst);
        *self.log.visible.lock().unwrap() =
            PROBES.into_iter().filter(|name| facts.header(name).is_some()).collect();
        self.inner.attempt(facts)
    }
}

// ---------------------------------------------------------------------------------------------
// Test parts.
// ---------------------------------------------------------------------------------------------

const DEPLOY_KEY: &str = "deploy-0123456789abcdef0123456789";

struct Device {
    id: &'static str,
    key: Vec<u8>,
}

impl Device {
    /// A device with a fresh random 32-byte key from the OS CSPRNG.
    fn new(id: &'static str) -> Self {
        let mut key = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut key).expect("system random number generator");
        Self { id, key }
    }

    fn sign(&self, method: &str, path: &str) -> String {
        to_hex(&device_mac(&self.key, method, path, self.id))
    }
}

/// The devices the server knows: `dev-a` and `dev-b`. `rogue` is never registered.
struct Devices {
    a: Device,
    b: Device,
    rogue: Device,
}

impl Devices {
    fn new() -> Self {
        Self { a: Device::new("dev-a"), b: Device::new("dev-b"), rogue: Device::new("rogue") }
    }

    fn mechanism(&self, log: &Arc<SpyLog>) -> Spy<DeviceSignature> {
        let registered = [&self.a, &self.b].map(|d| (d.id.to_owned(), Secret::new(d.key.clone())));
        Spy { inner: DeviceSignature::new(registered), log: log.clone() }
    }
}

fn api_key() -> Requirement {
    let keys = ApiKeys::parse(&format!("deploy:{DEPLOY_KEY}")).unwrap();
    Requirement::mechanism(ApiKeyAuth::new(Arc::new(keys)))
}

/// What the handler saw, as JSON: proof that it ran with a `Verified<Principal>`.
async fn whoami(who: Verified<Principal>) -> Json<Value> {
    let custom = match who.principal() {
        Principal::Custom(c) => json!({ "kind": c.kind(), "id": c.id() }),
        _ => Value::Null,
    };
    let proofs: Vec<Value> = who
        .proofs()
        .iter()
        .map(|p| json!({ "mechanism": p.mechanism, "principal_id": p.principal_id }))
        .collect();
    Json(json!({ "id": who.id(), "kind": who.kind(), "custom": custom, "proofs": proofs }))
}

/// An axum app behind `gate`, served on an ephemeral loopback port; returns its base URL.
async fn serve(gate: Gate) -> String {
    let app = Router::new()
        .route("/admin/whoami", get(whoami).post(whoami))
        .route("/devices/{*rest}", get(whoami))
        .layer(gate);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

struct Server {
    base: String,
    client: reqwest::Client,
    devices: Devices,
    log: Arc<SpyLog>,
}

impl Server {
    /// A server whose requirement is built by `requirement` from the device mechanism.
    async fn start(limits: RequestLimits, requirement: impl FnOnce(Requirement) -> Requirement) -> Self {
        let devices = Devices::new();
        let log = Arc::new(SpyLog::default());
        let device = Requirement::mechanism(devices.mechanism(&log));
        let base = serve(Gate::with_limits(requirement(device), limits)).await;
        Self { base, client: reqwest::Client::new(), devices, log }
    }

    async fn device_only() -> Self {
        Self::start(RequestLimits::default(), |device| device).await
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.base))
    }

    /// GET `path` with `device`'s id and a signature over `signed_method`/`signed_path`.
    fn signed_get(
        &self,
        path: &str,
        device: &Device,
        signed_method: &str,
        signed_path: &str,
    ) -> reqwest::RequestBuilder {
        self.get(path)
            .header(DEVICE_ID, device.id)
            .header(DEVICE_SIGNATURE, device.sign(signed_method, signed_path))
    }
}

/// Sends `req`, asserts the status and (for refusals) the JSON `code`; returns the JSON body.
async fn expect(req: reqwest::RequestBuilder, status: u16, code: Option<&str>) -> Value {
    let response = req.send().await.expect("the server answers");
    assert_eq!(response.status(), status);
    let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(challenge.is_some(), status == 401, "{challenge:?}");
    let body: Value = response.json().await.expect("a JSON body");
    if let Some(code) = code {
        assert_eq!(body["code"], code, "{body}");
    }
    body
}

fn proof_names(body: &Value) -> Vec<&str> {
    body["proofs"].as_array().unwrap().iter().map(|p| p["mechanism"].as_str().unwrap()).collect()
}

// ---------------------------------------------------------------------------------------------
// The rules.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_device_signature_proves_a_custom_device_principal() {
    let server = Server::device_only().await;
    let dev = &server.devices.a;
    let body = expect(server.signed_get("/admin/whoami", dev, "GET", "/admin/whoami"), 200, None).await;
    assert_eq!(body["id"], "custom:device:dev-a");
    assert_eq!(body["kind"], "custom");
    assert_eq!(body["custom"], json!({ "kind": "device", "id": "dev-a" }));
    assert_eq!(
        body["proofs"],
        json!([{ "mechanism": "device_signature", "principal_id": "custom:device:dev-a" }])
    );
    // The other registered device proves itself, not dev-a.
    let other = server.devices.b.sign("GET", "/devices/7/status");
    let req = server.get("/devices/7/status").header(DEVICE_ID, "dev-b").header(DEVICE_SIGNATURE, other);
    assert_eq!(expect(req, 200, None).await["id"], "custom:device:dev-b");
    assert_eq!(server.log.attempts(), 2);
}

#[tokio::test]
async fn a_bad_signature_is_an_invalid_credential_naming_the_mechanism() {
    let server = Server::device_only().await;
    let (a, b, rogue) = (&server.devices.a, &server.devices.b, &server.devices.rogue);
    let path = "/admin/whoami";
    let mut flipped = a.sign("GET", path).into_bytes();
    flipped[63] = if flipped[63] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    let cases = [
        ("one hex digit changed", server.get(path).header(DEVICE_ID, a.id).header(DEVICE_SIGNATURE, flipped)),
        ("signed for another path", server.signed_get(path, a, "GET", "/devices/1/status")),
        ("signed for another method", server.signed_get(path, a, "POST", path)),
        (
            "another device's key",
            server.get(path).header(DEVICE_ID, a.id).header(DEVICE_SIGNATURE, b.sign("GET", path)),
        ),
        (
            "another device's signature under its id",
            server
                .get(path)
                .header(DEVICE_ID, b.id)
                .header(DEVICE_SIGNATURE, to_hex(&device_mac(&a.key, "GET", path, b.id))),
        ),
        ("an unregistered device", server.signed_get(path, rogue, "GET", path)),
    ];
    let count = cases.len();
    for (why, req) in cases {
        let body = expect(req, 401, Some("invalid_credential")).await;
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("device_signature"), "{why}: {message}");
    }
    assert_eq!(server.log.attempts(), count, "every case reached the mechanism");
}

#[tokio::test]
async fn without_device_headers_the_credential_is_missing_and_any_of_tries_the_api_key() {
    let alone = Server::device_only().await;
    expect(alone.get("/admin/whoami"), 401, Some("missing_credential")).await;
    assert_eq!(alone.log.attempts(), 1, "the mechanism ran and answered NotPresent");

    let server =
        Server::start(RequestLimits::default(), |device| Requirement::any_of([device, api_key()])).await;
    let by_key = expect(server.get("/admin/whoami").header("x-api-key", DEPLOY_KEY), 200, None).await;
    assert_eq!(by_key["id"], "api_key:deploy");
    assert_eq!(proof_names(&by_key), ["api_key"]);
    let by_device =
        expect(server.signed_get("/admin/whoami", &server.devices.a, "GET", "/admin/whoami"), 200, None)
            .await;
    assert_eq!(proof_names(&by_device), ["device_signature"]);
    // A present device credential decides, even next to a valid API key.
    let half = server.get("/admin/whoami").header(DEVICE_ID, "dev-a").header("x-api-key", DEPLOY_KEY);
    expect(half, 401, Some("invalid_credential")).await;
    let bad = server
        .signed_get("/admin/whoami", &server.devices.a, "GET", "/elsewhere")
        .header("x-api-key", DEPLOY_KEY);
    expect(bad, 401, Some("invalid_credential")).await;
    expect(server.get("/admin/whoami"), 401, Some("missing_credential")).await;
}

#[tokio::test]
async fn all_of_device_and_api_key_needs_both_and_lists_both_proofs() {
    let server =
        Server::start(RequestLimits::default(), |device| Requirement::all_of([device, api_key()])).await;
    let dev = &server.devices.a;
    let device_only = server.signed_get("/admin/whoami", dev, "GET", "/admin/whoami");
    expect(device_only, 401, Some("missing_credential")).await;
    expect(server.get("/admin/whoami").header("x-api-key", DEPLOY_KEY), 401, Some("missing_credential"))
        .await;
    let wrong_key = server.signed_get("/admin/whoami", dev, "GET", "/admin/whoami").header("x-api-key", "x");
    expect(wrong_key, 401, Some("invalid_credential")).await;
    let both =
        server.signed_get("/admin/whoami", dev, "GET", "/admin/whoami").header("x-api-key", DEPLOY_KEY);
    let body = expect(both, 200, None).await;
    assert_eq!(body["id"], "custom:device:dev-a", "the principal is the first mechanism's");
    assert_eq!(
        body["proofs"],
        json!([
            { "mechanism": "device_signature", "principal_id": "custom:device:dev-a" },
            { "mechanism": "api_key", "principal_id": "api_key:deploy" },
        ])
    );
}

#[tokio::test]
async fn a_declared_header_over_the_token_limit_is_refused_before_the_mechanism_runs() {
    let limits = RequestLimits { max_token_bytes: 100, ..RequestLimits::default() };
    let server = Server::start(limits, |device| device).await;
    let dev = &server.devices.a;
    let long_sig =
        server.get("/admin/whoami").header(DEVICE_ID, dev.id).header(DEVICE_SIGNATURE, "a".repeat(101));
    expect(long_sig, 431, Some("header_too_large")).await;
    let long_id = server
        .get("/admin/whoami")
        .header(DEVICE_ID, "d".repeat(101))
        .header(DEVICE_SIGNATURE, dev.sign("GET", "/admin/whoami"));
    expect(long_id, 431, Some("header_too_large")).await;
    assert_eq!(server.log.attempts(), 0, "the request layer refused both before identity");
    // At the limit the header is read, and the server still serves.
    let at_limit =
        server.get("/admin/whoami").header(DEVICE_ID, dev.id).header(DEVICE_SIGNATURE, "a".repeat(100));
    expect(at_limit, 401, Some("invalid_credential")).await;
    expect(server.signed_get("/admin/whoami", dev, "GET", "/admin/whoami"), 200, None).await;
    assert_eq!(server.log.attempts(), 2);
}

#[tokio::test]
async fn only_declared_headers_are_visible_to_the_mechanism() {
    let server = Server::device_only().await;
    let dev = &server.devices.a;
    let req = server
        .signed_get("/admin/whoami", dev, "GET", "/admin/whoami")
        .header("x-device-debug", "sent by the client")
        .header("x-api-key", DEPLOY_KEY)
        .header("authorization", "Bearer some-token")
        .header("cookie", "session=abc");
    expect(req, 200, None).await;
    assert_eq!(server.log.attempts(), 1);
    assert_eq!(*server.log.visible.lock().unwrap(), [DEVICE_ID, DEVICE_SIGNATURE]);
    // Undeclared headers alone: nothing is visible, so the device credential is not present.
    let undeclared =
        server.get("/admin/whoami").header("x-device-debug", "x").header("x-api-key", DEPLOY_KEY);
    expect(undeclared, 401, Some("missing_credential")).await;
    assert!(server.log.visible.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_declared_header_sent_twice_is_refused_as_ambiguous() {
    let server = Server::device_only().await;
    let dev = &server.devices.a;
    let good = dev.sign("GET", "/admin/whoami");
    let other = server.devices.b.sign("GET", "/admin/whoami");
    // reqwest appends repeated headers, so each of these sends two header lines.
    let same_sig_twice =
        server.signed_get("/admin/whoami", dev, "GET", "/admin/whoami").header(DEVICE_SIGNATURE, &good);
    let two_sigs =
        server.signed_get("/admin/whoami", dev, "GET", "/admin/whoami").header(DEVICE_SIGNATURE, other);
    let two_ids = server.signed_get("/admin/whoami", dev, "GET", "/admin/whoami").header(DEVICE_ID, "dev-b");
    for req in [same_sig_twice, two_sigs, two_ids] {
        expect(req, 400, Some("ambiguous_credential")).await;
    }
    assert_eq!(server.log.attempts(), 0, "refused by the request layer, never guessed");
    expect(server.signed_get("/admin/whoami", dev, "GET", "/admin/whoami"), 200, None).await;
}

#[tokio::test]
async fn hostile_device_headers_are_refused_without_a_panic() {
    let server = Server::device_only().await;
    let dev = &server.devices.a;
    let good = dev.sign("GET", "/admin/whoami");
    let hostile_signatures = [
        String::new(),
        "zz".repeat(32),
        good[..63].to_owned(),
        format!("{good}0"),
        good.repeat(2),
        good.to_uppercase(),
        format!("0x{}", &good[2..]),
        "dead\tbeef".repeat(7),
        "%00".repeat(21),
        "-".repeat(64),
    ];
    let hostile_ids = ["", "dev-a\tx", "../../etc/passwd", "dev_a", "DEV-A", "dev-a;dev-b", &"d".repeat(65)];
    let reached = hostile_signatures.len() + hostile_ids.len();
    for sig in &hostile_signatures {
        let req =
            server.get("/admin/whoami").header(DEVICE_ID, dev.id).header(DEVICE_SIGNATURE, sig.as_str());
        expect(req, 401, Some("invalid_credential")).await;
    }
    for id in hostile_ids {
        let sig = to_hex(&device_mac(&dev.key, "GET", "/admin/whoami", id));
        let req = server.get("/admin/whoami").header(DEVICE_ID, id).header(DEVICE_SIGNATURE, sig);
        expect(req, 401, Some("invalid_credential")).await;
    }
    assert_eq!(server.log.attempts(), reached, "each of these reached the mechanism");
    // Bytes that are not visible ASCII never reach it: the request layer answers 400.
    for raw in [&b"\xff\xfe\xfd"[..], "é".as_bytes(), b"abc\x80"] {
        let value = reqwest::header::HeaderValue::from_bytes(raw).unwrap();
        let req = server.get("/admin/whoami").header(DEVICE_ID, dev.id).header(DEVICE_SIGNATURE, value);
        expect(req, 400, Some("malformed_header")).await;
    }
    assert_eq!(server.log.attempts(), reached);
    // The server is still answering, and still admits the real device.
    expect(server.signed_get("/admin/whoami", dev, "GET", "/admin/whoami"), 200, None).await;
}

#[tokio::test]
async fn a_long_path_is_signed_and_checked_whole() {
    let limits = RequestLimits { max_path_bytes: 1024, ..RequestLimits::default() };
    let server = Server::start(limits, |device| device).await;
    let dev = &server.devices.a;
    // Two paths that agree on their first 600 bytes (far past the 256 bytes a log line keeps)
    // and differ after: a signature over one never authorizes the other.
    let prefix = format!("/devices/{}", "a".repeat(600));
    let (reboot, wipe) = (format!("{prefix}/reboot"), format!("{prefix}/wipe"));
    let body = expect(server.signed_get(&reboot, dev, "GET", &reboot), 200, None).await;
    assert_eq!(body["id"], "custom:device:dev-a");
    expect(server.signed_get(&wipe, dev, "GET", &reboot), 401, Some("invalid_credential")).await;
    expect(server.signed_get(&reboot, dev, "GET", &reboot[..256]), 401, Some("invalid_credential")).await;
    // Over the gate's path limit: 414 from the request layer; the mechanism never runs.
    let before = server.log.attempts();
    let too_long = format!("/devices/{}", "a".repeat(1024));
    expect(server.signed_get(&too_long, dev, "GET", &too_long), 414, Some("uri_too_long")).await;
    assert_eq!(server.log.attempts(), before, "a refused path never reaches the mechanism");
}
