//! An admin server with notes in SQLite, behind per-route ztgate policies.
//!
//! The three ztgate layers, as this server applies them:
//!
//! 1. **Request** — one [`RoutePolicies`] layer in front of the whole app reads the
//!    credentials each route may use (the `Cf-Access-Jwt-Assertion` header or
//!    `CF_Authorization` cookie, `X-Api-Key` / `Authorization: Bearer`, a `?token=` query
//!    parameter, Cloudflare's `cf-cert-*` headers when trusted) with size limits, and believes
//!    nothing yet.
//! 2. **Identity** — the same layer picks the route's requirement (first matching rule wins)
//!    and verifies it. A route nobody declared is refused with 403 `no_policy`: forgetting a
//!    policy closes a route instead of opening it. A refused request is answered with a JSON
//!    401/403/503 and never reaches a handler.
//! 3. **Storage** — handlers take a [`Verified<Principal>`] extractor, and the storage
//!    functions take an [`Actor`] made from it (or, for webhooks, the [`VerifiedWebhook`]):
//!    code that has no proof cannot even call them. Every note records its author, every
//!    deletion is logged with the principal and the mechanisms that proved it.
//!
//! | route | requirement |
//! |---|---|
//! | `GET /healthz` | public |
//! | `GET /cdn-cgi/access/certs` | public, dev mode only: the dev issuer's JWKS |
//! | `DELETE /admin/notes/{id}` | an Access admin **and** an API key (both, in one request) |
//! | `GET /admin/whoami`, `GET`/`POST /admin/notes`, `POST /admin/unsubscribe-links` | an Access admin |
//! | any other `/admin` path | an Access admin (so unknown admin paths are 401 before 404) |
//! | `GET /ops/stats` | an API key |
//! | `GET /mtls/whoami` | a client certificate Cloudflare verified and found unrevoked |
//! | `GET /api/unsubscribe?token=..` | an HMAC-signed token for purpose `unsubscribe` |
//! | `POST /webhooks/inbound` | public at the gate; the handler verifies the Svix signature (it needs the body) and refuses replays |
//! | anything else | nobody: 403 `no_policy` |
//!
//! Run it with no configuration for **dev mode**: it makes a signing key, serves its own
//! JWKS, verifies against it over HTTP exactly as in production, makes a random API key named
//! `dev`, and prints `curl` lines with a token for `dev@localhost` and with that key.
//!
//! ```text
//! cargo run --example admin_server
//! ```
//!
//! Production mode is configured by environment:
//!
//! | variable | meaning |
//! |---|---|
//! | `ZTGATE_LISTEN` | address to listen on (default `127.0.0.1:8080`) |
//! | `ZTGATE_TEAM_DOMAIN` | e.g. `https://acme.cloudflareaccess.com`, the exact `iss`; unset = dev mode |
//! | `ZTGATE_CERTS_URL` | JWKS URL (default `{team}/cdn-cgi/access/certs`) |
//! | `ZTGATE_AUD` | comma-separated Access AUD tags (required) |
//! | `ZTGATE_ADMIN_EMAILS` | comma-separated emails allowed in |
//! | `ZTGATE_SERVICE_TOKENS` | comma-separated service-token common names allowed in |
//! | `ZTGATE_DB` | SQLite file (default `ztgate-admin.sqlite`) |
//! | `ZTGATE_API_KEYS` | comma-separated `name:secret` API keys (secrets of 16+ bytes); unset = API-key routes refuse everyone (dev mode: one random key named `dev`) |
//! | `ZTGATE_HMAC_KEYS` | comma-separated `kid:secret` keys for unsubscribe links (secrets of 32+ bytes): the first signs, all verify; unset = a random key per start, so links die with the process |
//! | `ZTGATE_WEBHOOK_SECRET` | the Svix endpoint secret, `whsec_<base64>`; unset = `POST /webhooks/inbound` answers 503 `not_configured` | <!-- pragma: allowlist secret -->
//! | `ZTGATE_TRUST_CERT_HEADERS` | `1` = believe Cloudflare's `cf-cert-*` client-certificate headers (only when every request arrives through Cloudflare); `0` (default) = ignore them |
//!
//! To rotate HMAC keys, put the new key first and keep the old one second
//! (`new:<secret>,old:<secret>`) until the longest link it signed has expired.
//!
//! Invalid configuration exits with status 2 and names the variable, never repeating a
//! secret. Logs go to stderr (`RUST_LOG`, default `info`) and never contain a credential.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path as FsPath, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, HttpBody as _};
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use rusqlite::{Connection, TransactionBehavior};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tracing_subscriber::EnvFilter;
use ztgate::BoxFuture;
use ztgate::clock::{SystemClock, unix_now};
use ztgate::dev::{DevKey, jwks_json, user_claims};
use ztgate::identity::hmac_token::KeyRing;
use ztgate::identity::hmac_token::{SignedTokenAuth, TokenSource};
use ztgate::identity::webhook::{
    ReplayGuard, ReplayStoreError, VerifiedWebhook, WebhookVerifier, append_capped, check_content_length,
};
use ztgate::identity::{AccessJwt, ApiKeyAuth, ApiKeys, ClientCertAuth, Requirement};
use ztgate::request::RequestLimits;
use ztgate::storage::Actor;
use ztgate::{
    AccessConfig, ConfigError, Gate, Policy, Principal, Rejection, RoutePolicies, Secret, Verified,
};

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_DB: &str = "ztgate-admin.sqlite";
const CERTS_PATH: &str = "/cdn-cgi/access/certs";
const DEV_AUD: &str = "ztgate-dev";
const DEV_EMAIL: &str = "dev@localhost";
const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
const DEV_API_KEY_NAME: &str = "dev";
const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_NOTE_BYTES: usize = 4096;
/// The purpose unsubscribe links are minted and verified for: a token minted for anything
/// else (a magic link, a session) is refused here.
const UNSUBSCRIBE: &str = "unsubscribe";
const UNSUBSCRIBE_TOKEN_PARAM: &str = "token";
const MAX_EMAIL_BYTES: usize = 254;
const MAX_LINK_TTL_SECS: u64 = 30 * 86_400;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal::Config(e)) => {
            eprintln!("admin_server: invalid configuration: {e}");
            ExitCode::from(2)
        }
        Err(Fatal::Runtime(e)) => {
            eprintln!("admin_server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Fatal> {
    let settings = Settings::from_env()?;
    let store = Store::open(&settings.db)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| EnvError::new("ZTGATE_LISTEN", format!("cannot listen on {}: {e}", settings.listen)))?;
    let addr = listener.local_addr().map_err(|e| Fatal::Runtime(e.to_string()))?;

    // Dev mode needs the bound address: the issuer and the JWKS URL are this server itself.
    let (access, dev) = match settings.identity {
        Identity::Access(access) => (access, None),
        Identity::Dev => {
            let dev = DevIssuer::new(addr)?;
            (dev.access()?, Some(dev))
        }
    };

    let mut dev_api_key = None;
    let api_keys = match settings.api_keys {
        Some(keys) => keys,
        None if dev.is_some() => {
            let key = random_api_key()?;
            let keys = ApiKeys::new();
            keys.insert(DEV_API_KEY_NAME, Secret::from(key.as_str()))?;
            dev_api_key = Some(key);
            keys
        }
        None => {
            tracing::warn!("ZTGATE_API_KEYS is unset: API-key routes refuse every request");
            ApiKeys::new()
        }
    };
    let ring = match settings.hmac_keys {
        Some(ring) => ring,
        None => {
            tracing::warn!(
                "ZTGATE_HMAC_KEYS is unset: unsubscribe links are signed with a random key made at \
                 start-up and will not survive a restart"
            );
            KeyRing::random().map_err(|e| Fatal::Runtime(e.to_string()))?
        }
    };
    let webhooks = match settings.webhook {
        // The replay guard lives in the same SQLite file: a replay is refused across restarts.
        Some(verifier) => {
            Some(verifier.with_replay_guard(Arc::new(SqliteReplayGuard { db: store.db.clone() })))
        }
        None => {
            tracing::warn!("ZTGATE_WEBHOOK_SECRET is unset: POST /webhooks/inbound answers 503");
            None
        }
    };
    if settings.trust_cert_headers {
        tracing::warn!(
            "ZTGATE_TRUST_CERT_HEADERS=1: cf-cert-* headers are believed; every request must come \
             through Cloudflare"
        );
    }

    let ring = Arc::new(ring);
    let policies = route_policies(
        access.clone(),
        Arc::new(api_keys),
        ring.clone(),
        dev.is_some(),
        settings.trust_cert_headers,
    )
    .map_err(|e| Fatal::Runtime(format!("route policies: {e}")))?;
    let state = AppState { store, ring, webhooks };

    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/admin/whoami", get(whoami))
        .route("/admin/notes", get(list_notes).post(create_note))
        .route("/admin/notes/{id}", delete(delete_note))
        .route("/admin/unsubscribe-links", post(mint_unsubscribe_link))
        .route("/ops/stats", get(ops_stats))
        .route("/mtls/whoami", get(mtls_whoami))
        .route("/api/unsubscribe", get(unsubscribe))
        .route("/webhooks/inbound", post(inbound_webhook));
    if let Some(dev) = &dev {
        let jwks = jwks_json(&[&dev.key]);
        app = app.route(
            CERTS_PATH,
            get(move || {
                let jwks = jwks.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], jwks) }
            }),
        );
    }
    // The policies layer goes on last, over every route and both fallbacks: nothing is
    // reachable without a declared policy.
    let app = app
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(policies);

    if let Some(dev) = &dev {
        tracing::warn!(
            "dev mode: tokens are signed by a key made at start-up; set ZTGATE_TEAM_DOMAIN for production"
        );
        println!("dev mode: try\n  {}", dev.curl_line());
        if let Some(key) = &dev_api_key {
            println!("  curl -H 'X-Api-Key: {key}' {}/ops/stats", dev.origin);
        }
    }
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();

    // Warm the key cache once the server is up (in dev mode the JWKS is served by this very
    // listener). A failure is only logged: requests then get 503 until keys are reachable.
    tokio::spawn(async move {
        match access.verifier().keys().refresh().await {
            Ok(n) => tracing::info!(layer = "identity", outcome = "jwks_warm", keys = n),
            Err(e) => tracing::warn!(layer = "identity", outcome = "jwks_warm_failed", error = ?e),
        }
    });

    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await
        .map_err(|e| Fatal::Runtime(format!("server error: {e}")))
}

/// Every route's requirement, first match wins; whatever matches no rule is 403 `no_policy`.
fn route_policies(
    access: Arc<AccessJwt>,
    api_keys: Arc<ApiKeys>,
    ring: Arc<KeyRing>,
    dev: bool,
    trust_cert_headers: bool,
) -> Result<RoutePolicies, ConfigError> {
    let access = Requirement::mechanism(access);
    let api_key = Requirement::mechanism(ApiKeyAuth::new(api_keys));
    let unsubscribe_token = Requirement::mechanism(SignedTokenAuth::new(
        ring,
        UNSUBSCRIBE,
        TokenSource::Query(UNSUBSCRIBE_TOKEN_PARAM.to_owned()),
        Arc::new(SystemClock),
    ));
    let limits = RequestLimits { trust_client_cert_headers: trust_cert_headers, ..Default::default() };
    let mut policies = RoutePolicies::with_limits(limits)
        .route("GET", "/healthz", Requirement::public())?
        .route("HEAD", "/healthz", Requirement::public())?;
    if dev {
        policies = policies.route("GET", CERTS_PATH, Requirement::public())?;
    }
    policies
        // Before the broader /admin rules: the first match wins.
        .route("DELETE", "/admin/notes/{id}", Requirement::all_of([access.clone(), api_key.clone()]))?
        .route("GET", "/admin/whoami", access.clone())?
        .route("GET", "/admin/notes", access.clone())?
        .route("POST", "/admin/notes", access.clone())?
        .route("POST", "/admin/unsubscribe-links", access.clone())?
        // Every other admin path and method: identity first, then 404 or 405.
        .route("*", "/admin", access.clone())?
        .route("*", "/admin/{*rest}", access)?
        .route("GET", "/ops/stats", api_key)?
        .route("GET", "/mtls/whoami", Requirement::mechanism(ClientCertAuth::new()))?
        .route("GET", "/api/unsubscribe", unsubscribe_token)?
        // The signature covers the body, which a gate does not read: verified in the handler.
        .route("POST", "/webhooks/inbound", Requirement::public())
}

#[derive(Clone)]
struct AppState {
    store: Store,
    ring: Arc<KeyRing>,
    webhooks: Option<WebhookVerifier>,
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn whoami(who: Verified<Principal>) -> Json<Value> {
    Json(match who.principal() {
        Principal::User(user) => json!({ "kind": "user", "email": user.email }),
        Principal::Service(service) => json!({ "kind": "service", "common_name": service.common_name }),
        other => json!({ "kind": other.kind(), "id": other.id() }),
    })
}

#[derive(Deserialize)]
struct NewNote {
    text: Option<String>,
}

async fn create_note(
    State(app): State<AppState>,
    who: Verified<Principal>,
    body: Result<Json<NewNote>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(note) = body.map_err(|e| ApiError::Body(e, "invalid_note"))?;
    let text = validate_note(note.text)?;
    let id = app.store.create_note(&Actor::from(&who), text).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

async fn list_notes(
    State(app): State<AppState>,
    who: Verified<Principal>,
) -> Result<Json<Vec<Note>>, ApiError> {
    Ok(Json(app.store.list_notes(&Actor::from(&who)).await?))
}

fn validate_note(text: Option<String>) -> Result<String, ApiError> {
    let invalid = |why: &str| ApiError::invalid("invalid_note", why);
    match text {
        None => Err(invalid("`text` is required")),
        Some(t) if t.trim().is_empty() => Err(invalid("`text` must not be empty")),
        Some(t) if t.len() > MAX_NOTE_BYTES => Err(invalid("`text` is longer than 4096 bytes")),
        Some(t) => Ok(t),
    }
}

/// Two proofs in one request: an Access admin (who) and an API key (something they hold).
async fn delete_note(
    State(app): State<AppState>,
    who: Verified<Principal>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    // The route policy requires both; refuse rather than trust a wiring change silently.
    if !(who.proved_by("access_jwt") && who.proved_by("api_key")) {
        tracing::error!(layer = "storage", outcome = "refused", principal = %who.id(), "delete without both proofs");
        return Err(Rejection::Forbidden.into());
    }
    let Path(id) = id.map_err(|_| ApiError::invalid("invalid_id", "the note id must be an integer"))?;
    let proofs: Vec<String> =
        who.proofs().iter().map(|p| format!("{}={}", p.mechanism, p.principal_id)).collect();
    if app.store.delete_note(&Actor::from(&who), id, proofs).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("no such note"))
    }
}

#[derive(Deserialize)]
struct NewLink {
    email: Option<String>,
    ttl_secs: Option<u64>,
}

/// Mints an unsubscribe link token for `email`, valid for `ttl_secs` (1 s to 30 days).
async fn mint_unsubscribe_link(
    State(app): State<AppState>,
    who: Verified<Principal>,
    body: Result<Json<NewLink>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(link) = body.map_err(|e| ApiError::Body(e, "invalid_request"))?;
    let invalid = |why: &str| ApiError::invalid("invalid_request", why);
    let email = match link.email {
        None => return Err(invalid("`email` is required")),
        Some(e) if !e.contains('@') => return Err(invalid("`email` is not an email address")),
        Some(e) if e.len() > MAX_EMAIL_BYTES => return Err(invalid("`email` is longer than 254 bytes")),
        Some(e) => e,
    };
    let ttl = match link.ttl_secs {
        None => return Err(invalid("`ttl_secs` is required")),
        Some(t) if !(1..=MAX_LINK_TTL_SECS).contains(&t) => {
            return Err(invalid("`ttl_secs` must be between 1 and 2592000 (30 days)"));
        }
        Some(t) => t,
    };
    let now = unix_now();
    let token = app.ring.mint(UNSUBSCRIBE, &email, now, Duration::from_secs(ttl)).map_err(|e| {
        tracing::error!(layer = "identity", outcome = "mint_failed", principal = %who.id(), error = %e);
        ApiError::Internal
    })?;
    // The token is a credential: logged never, only who asked for it and until when.
    tracing::info!(layer = "identity", outcome = "unsubscribe_link_minted", principal = %who.id(), expires_at = now + ttl);
    Ok(Json(json!({ "token": token, "expires_at": now + ttl })))
}

/// Follows an unsubscribe link: the gate verified the token; record the unsubscribe (once).
async fn unsubscribe(State(app): State<AppState>, who: Verified<Principal>) -> Result<Json<Value>, ApiError> {
    let email = match who.principal() {
        Principal::SignedToken(t) if t.purpose == UNSUBSCRIBE => t.subject.clone(),
        _ => return Err(Rejection::Forbidden.into()),
    };
    app.store.unsubscribe(&Actor::from(&who), email.clone()).await?;
    Ok(Json(json!({ "email": email })))
}

async fn ops_stats(State(app): State<AppState>, who: Verified<Principal>) -> Result<Json<Value>, ApiError> {
    let Principal::ApiKey(key) = who.principal() else { return Err(Rejection::Forbidden.into()) };
    let stats = app.store.stats(&Actor::from(&who)).await?;
    Ok(Json(json!({
        "key": key.name,
        "notes": stats.notes,
        "unsubscribes": stats.unsubscribes,
        "webhooks": stats.webhooks,
    })))
}

async fn mtls_whoami(who: Verified<Principal>) -> Result<Json<Value>, ApiError> {
    let Principal::ClientCert(cert) = who.principal() else { return Err(Rejection::Forbidden.into()) };
    Ok(Json(json!({
        "fingerprint": cert.fingerprint_sha256,
        "subject_dn": cert.subject_dn,
        "issuer_dn": cert.issuer_dn,
    })))
}

/// A Svix delivery. The gate let it through (public); the signature, timestamp and replay
/// checks happen here, over the raw body, before anything is stored.
async fn inbound_webhook(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Some(verifier) = &app.webhooks else {
        return Err(Rejection::NotConfigured { what: "webhook secret" }.into());
    };
    let limit = verifier.max_body_bytes();
    check_content_length(&headers, limit)?;
    let body = read_capped(body, limit).await?;
    let message = verifier.verify(&headers, &body, unix_now()).await?;
    app.store.record_webhook(&message, body.len()).await?;
    Ok(Json(json!({ "id": message.id() })))
}

/// Reads a body chunk by chunk, refusing it (413) as soon as it passes `limit`, whatever its
/// declared length.
async fn read_capped(mut body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|_| ApiError::invalid("invalid_body", "the body could not be read"))?;
        if let Ok(data) = frame.into_data() {
            append_capped(&mut out, &data, limit)?;
        }
    }
    Ok(out)
}

/// Errors of the handlers, as JSON bodies with a stable `code` (like ztgate's rejections).
enum ApiError {
    /// 400 with this code.
    Invalid {
        code: &'static str,
        message: String,
    },
    /// A JSON body that did not parse; the code for a well-formed body of the wrong shape.
    Body(JsonRejection, &'static str),
    NotFound(&'static str),
    MethodNotAllowed,
    Rejected(Rejection),
    Storage,
    Internal,
}

impl ApiError {
    fn invalid(code: &'static str, message: &str) -> Self {
        Self::Invalid { code, message: message.to_owned() }
    }
}

impl From<Rejection> for ApiError {
    fn from(e: Rejection) -> Self {
        Self::Rejected(e)
    }
}

impl From<StorageError> for ApiError {
    fn from(_: StorageError) -> Self {
        Self::Storage
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            Self::Invalid { code, message } => (StatusCode::BAD_REQUEST, code, message),
            Self::Body(e, data_code) => {
                let code = match &e {
                    JsonRejection::JsonSyntaxError(_) => "malformed_json",
                    JsonRejection::JsonDataError(_) => data_code,
                    JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
                    _ if e.status() == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                    _ => "invalid_body",
                };
                // Syntax and data errors are client mistakes: answer 400 for both (axum would
                // say 422 for a well-formed body of the wrong shape).
                let status = match &e {
                    JsonRejection::JsonSyntaxError(_) | JsonRejection::JsonDataError(_) => {
                        StatusCode::BAD_REQUEST
                    }
                    _ => e.status(),
                };
                (status, code, e.body_text())
            }
            Self::NotFound(what) => (StatusCode::NOT_FOUND, "not_found", what.to_owned()),
            Self::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here".to_owned())
            }
            Self::Rejected(rejection) => return rejection.into_response(),
            // Already logged where it happened; the client learns nothing about the database.
            Self::Storage => {
                (StatusCode::INTERNAL_SERVER_ERROR, "storage_error", "the store failed".to_owned())
            }
            Self::Internal => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "internal error".to_owned())
            }
        };
        (status, Json(json!({ "code": code, "message": message }))).into_response()
    }
}

// ---------------------------------------------------------------------------------------------
// Storage: every function asks for proof: an `Actor` (which only a verified request can
// produce) or a `VerifiedWebhook` (which only a verified delivery can produce).

type Db = Arc<Mutex<Connection>>;

#[derive(Clone)]
struct Store {
    db: Db,
}

#[derive(serde::Serialize)]
struct Note {
    id: i64,
    text: String,
    author: String,
}

struct Stats {
    notes: i64,
    unsubscribes: i64,
    webhooks: i64,
}

/// A storage failure, already logged where it happened.
#[derive(Debug)]
struct StorageError;

fn lock(db: &Db) -> std::sync::MutexGuard<'_, Connection> {
    db.lock().unwrap_or_else(PoisonError::into_inner)
}

/// SQLite integers are signed; Unix seconds and sizes fit until long after anyone cares.
fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    fn open(path: &FsPath) -> Result<Self, EnvError> {
        let fail =
            |e: rusqlite::Error| EnvError::new("ZTGATE_DB", format!("cannot open {}: {e}", path.display()));
        let conn = Connection::open(path).map_err(fail)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(fail)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS notes (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                text TEXT NOT NULL,
                author TEXT NOT NULL,
                created_at INTEGER NOT NULL DEFAULT (unixepoch())
            );
            CREATE TABLE IF NOT EXISTS unsubscribes (
                email TEXT PRIMARY KEY,
                created_at INTEGER NOT NULL DEFAULT (unixepoch())
            );
            CREATE TABLE IF NOT EXISTS webhook_messages (
                id TEXT PRIMARY KEY,
                signed_at INTEGER,
                body_bytes INTEGER NOT NULL,
                received_at INTEGER NOT NULL DEFAULT (unixepoch())
            );
            CREATE TABLE IF NOT EXISTS webhook_replay (
                key TEXT PRIMARY KEY,
                expires_at INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS webhook_replay_expiry ON webhook_replay (expires_at);",
        )
        .map_err(fail)?;
        Ok(Self { db: Arc::new(Mutex::new(conn)) })
    }

    async fn create_note(&self, by: &Actor, text: String) -> Result<i64, StorageError> {
        let author = by.id().to_owned();
        let id = self
            .blocking(by.id(), move |db| {
                db.execute("INSERT INTO notes (text, author) VALUES (?1, ?2)", (&text, &author))?;
                Ok(db.last_insert_rowid())
            })
            .await?;
        tracing::info!(layer = "storage", outcome = "note_created", principal = %by.id(), id);
        Ok(id)
    }

    async fn list_notes(&self, by: &Actor) -> Result<Vec<Note>, StorageError> {
        self.blocking(by.id(), |db| {
            let mut stmt = db.prepare("SELECT id, text, author FROM notes ORDER BY id")?;
            let rows =
                stmt.query_map([], |r| Ok(Note { id: r.get(0)?, text: r.get(1)?, author: r.get(2)? }))?;
            rows.collect()
        })
        .await
    }

    /// Deletes note `id`; `false` when there is no such note. `proofs` (mechanism=principal)
    /// go into the audit log line.
    async fn delete_note(&self, by: &Actor, id: i64, proofs: Vec<String>) -> Result<bool, StorageError> {
        let deleted =
            self.blocking(by.id(), move |db| db.execute("DELETE FROM notes WHERE id = ?1", [id])).await? == 1;
        if deleted {
            tracing::info!(layer = "storage", outcome = "note_deleted", principal = %by.id(), proofs = ?proofs, id);
        }
        Ok(deleted)
    }

    /// Records that `email` unsubscribed; idempotent. `true` the first time.
    async fn unsubscribe(&self, by: &Actor, email: String) -> Result<bool, StorageError> {
        let first = self
            .blocking(by.id(), move |db| {
                db.execute(
                    "INSERT INTO unsubscribes (email) VALUES (?1) ON CONFLICT (email) DO NOTHING",
                    [&email],
                )
            })
            .await?
            == 1;
        tracing::info!(layer = "storage", outcome = "unsubscribed", principal = %by.id(), first);
        Ok(first)
    }

    async fn stats(&self, by: &Actor) -> Result<Stats, StorageError> {
        self.blocking(by.id(), |db| {
            let count =
                |table: &str| db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0));
            Ok(Stats {
                notes: count("notes")?,
                unsubscribes: count("unsubscribes")?,
                webhooks: count("webhook_messages")?,
            })
        })
        .await
    }

    /// Stores an accepted delivery: its id, signed timestamp and body size.
    async fn record_webhook(&self, message: &VerifiedWebhook, body_bytes: usize) -> Result<(), StorageError> {
        let principal = format!("webhook:{}", message.scheme());
        let id = message.id().unwrap_or(message.replay_key()).to_owned();
        let signed_at = message.timestamp().map(sql_int);
        let size = sql_int(body_bytes as u64);
        let stored_id = id.clone();
        self.blocking(&principal, move |db| {
            db.execute(
                "INSERT INTO webhook_messages (id, signed_at, body_bytes) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO NOTHING",
                (&stored_id, signed_at, size),
            )
        })
        .await?;
        tracing::info!(layer = "storage", outcome = "webhook_stored", principal, id, body_bytes);
        Ok(())
    }

    /// Runs `f` on the connection off the async runtime, logging failures with the caller.
    async fn blocking<T: Send + 'static>(
        &self,
        principal: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || f(&lock(&db)))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        result.map_err(|error| {
            tracing::error!(layer = "storage", outcome = "error", principal, %error);
            StorageError
        })
    }
}

/// The webhook replay guard, in SQLite: it survives restarts, and several processes sharing
/// the file share it. Check and record are one `INSERT ... ON CONFLICT DO NOTHING` (one row
/// inserted = first delivery) in an immediate transaction with the expiry cleanup. A database
/// error is the guard's error: the delivery is refused with 503 and retried by the sender.
struct SqliteReplayGuard {
    db: Db,
}

impl std::fmt::Debug for SqliteReplayGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteReplayGuard")
    }
}

impl ReplayGuard for SqliteReplayGuard {
    fn first_seen<'a>(
        &'a self,
        key: &'a str,
        now: u64,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<bool, ReplayStoreError>> {
        let db = self.db.clone();
        let key = key.to_owned();
        Box::pin(async move {
            let answer = tokio::task::spawn_blocking(move || -> rusqlite::Result<bool> {
                let mut conn = lock(&db);
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // Records stay live through `expires_at` inclusive.
                tx.execute("DELETE FROM webhook_replay WHERE expires_at < ?1", [sql_int(now)])?;
                let inserted = tx.execute(
                    "INSERT INTO webhook_replay (key, expires_at) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                    (&key, sql_int(expires_at)),
                )?;
                tx.commit()?;
                Ok(inserted == 1)
            })
            .await;
            match answer {
                Ok(Ok(first)) => Ok(first),
                Ok(Err(e)) => Err(ReplayStoreError::Unavailable(format!("sqlite: {e}"))),
                Err(e) => Err(ReplayStoreError::Unavailable(format!("task failed: {e}"))),
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration

enum Identity {
    /// Production: Access verification for the configured Cloudflare Access team.
    Access(Arc<AccessJwt>),
    /// No team domain: a local issuer, built once the listen address is known.
    Dev,
}

struct Settings {
    listen: SocketAddr,
    db: PathBuf,
    identity: Identity,
    /// `None`: unset (dev mode makes a key; production refuses every API key).
    api_keys: Option<ApiKeys>,
    /// `None`: unset (a random key per start).
    hmac_keys: Option<KeyRing>,
    /// `None`: unset (the webhook route answers 503).
    webhook: Option<WebhookVerifier>,
    trust_cert_headers: bool,
}

impl Settings {
    fn from_env() -> Result<Self, EnvError> {
        let listen = env("ZTGATE_LISTEN")?.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen.parse().map_err(|_| {
            EnvError::new("ZTGATE_LISTEN", format!("{listen:?} is not an address such as 127.0.0.1:8080"))
        })?;
        let db = PathBuf::from(env("ZTGATE_DB")?.unwrap_or_else(|| DEFAULT_DB.to_owned()));
        let identity = match env("ZTGATE_TEAM_DOMAIN")? {
            Some(team) => Identity::Access(production_access(&team)?),
            None => {
                // Half a production configuration without a team domain is a mistake, not a
                // request for dev mode: refuse rather than start with a local issuer.
                for var in ["ZTGATE_AUD", "ZTGATE_CERTS_URL", "ZTGATE_ADMIN_EMAILS", "ZTGATE_SERVICE_TOKENS"]
                {
                    if env(var)?.is_some() {
                        return Err(EnvError::new(
                            "ZTGATE_TEAM_DOMAIN",
                            format!("is required when {var} is set (unset both for dev mode)"),
                        ));
                    }
                }
                Identity::Dev
            }
        };
        // Secrets: parse errors name the variable and never repeat its value.
        let api_keys = match env("ZTGATE_API_KEYS")? {
            None => None,
            Some(spec) => {
                let keys = ApiKeys::parse(&spec)?;
                if keys.names().is_empty() {
                    return Err(EnvError::new("ZTGATE_API_KEYS", "is set but holds no name:secret entry"));
                }
                Some(keys)
            }
        };
        let hmac_keys = env("ZTGATE_HMAC_KEYS")?.map(|spec| KeyRing::parse(&spec)).transpose()?;
        let webhook = env("ZTGATE_WEBHOOK_SECRET")?.map(WebhookVerifier::svix).transpose()?;
        let trust_cert_headers = match env("ZTGATE_TRUST_CERT_HEADERS")?.as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(EnvError::new(
                    "ZTGATE_TRUST_CERT_HEADERS",
                    format!("{other:?} is neither 0 (ignore cf-cert-* headers) nor 1 (trust them)"),
                ));
            }
        };
        Ok(Self { listen, db, identity, api_keys, hmac_keys, webhook, trust_cert_headers })
    }
}

fn production_access(team: &str) -> Result<Arc<AccessJwt>, EnvError> {
    if !team.starts_with("https://") {
        return Err(EnvError::new(
            "ZTGATE_TEAM_DOMAIN",
            format!("{team:?} must start with https://, e.g. https://acme.cloudflareaccess.com"),
        ));
    }
    let audiences = list("ZTGATE_AUD")?;
    if audiences.is_empty() {
        return Err(EnvError::new("ZTGATE_AUD", "is required: the Access application's AUD tag(s)"));
    }
    let emails = list("ZTGATE_ADMIN_EMAILS")?;
    if let Some(bad) = emails.iter().find(|e| !e.contains('@')) {
        return Err(EnvError::new("ZTGATE_ADMIN_EMAILS", format!("{bad:?} is not an email address")));
    }
    let service_tokens = list("ZTGATE_SERVICE_TOKENS")?;
    if emails.is_empty() && service_tokens.is_empty() {
        return Err(EnvError::new(
            "ZTGATE_ADMIN_EMAILS",
            "nobody would be allowed in: set ZTGATE_ADMIN_EMAILS and/or ZTGATE_SERVICE_TOKENS",
        ));
    }
    let mut builder = Gate::builder(AccessConfig::new(team, audiences)?)
        .policy(Policy::new().allow_emails(emails).allow_service_tokens(service_tokens));
    if let Some(url) = env("ZTGATE_CERTS_URL")? {
        builder = builder.certs_url(url);
    }
    Ok(Arc::new(builder.build_mechanism()?))
}

/// A dev API key: 32 hex characters (128 bits) from the operating system's CSPRNG. ztgate
/// exposes that generator only through `KeyRing::random`, so: mint with a fresh random ring
/// (its MAC is keyed by 32 random bytes) and hash the token.
fn random_api_key() -> Result<String, Fatal> {
    let ring = KeyRing::random().map_err(|e| Fatal::Runtime(e.to_string()))?;
    let token = ring
        .mint("dev-api-key", DEV_API_KEY_NAME, unix_now(), Duration::from_secs(1))
        .map_err(|e| Fatal::Runtime(e.to_string()))?;
    let digest = Sha256::digest(token.as_bytes());
    Ok(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
}

/// Dev mode: this process is its own Access issuer, at `http://<listen address>`.
struct DevIssuer {
    key: DevKey,
    origin: String,
}

impl DevIssuer {
    fn new(addr: SocketAddr) -> Result<Self, Fatal> {
        // Reach our own listener through loopback, whatever address it is bound to. The
        // JWKS is fetched over plain http, which ztgate only allows for loopback hosts.
        let ip = match addr.ip() {
            ip if ip.is_loopback() => ip,
            IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
            _ => {
                return Err(EnvError::new(
                    "ZTGATE_LISTEN",
                    format!(
                        "dev mode serves its own JWKS over http and needs a loopback address, not {addr}"
                    ),
                )
                .into());
            }
        };
        let key = DevKey::generate("ztgate-dev").map_err(|e| Fatal::Runtime(e.to_string()))?;
        Ok(Self { key, origin: format!("http://{}", SocketAddr::new(ip, addr.port())) })
    }

    /// Real Access verification, fetching our JWKS over HTTP exactly as production fetches
    /// Cloudflare's.
    fn access(&self) -> Result<Arc<AccessJwt>, EnvError> {
        Ok(Arc::new(
            Gate::builder(AccessConfig::new(&self.origin, [DEV_AUD])?)
                .certs_url(format!("{}{CERTS_PATH}", self.origin))
                .policy(Policy::new().allow_emails([DEV_EMAIL]))
                .build_mechanism()?,
        ))
    }

    fn curl_line(&self) -> String {
        let now = unix_now();
        let token =
            self.key.sign(&user_claims(&self.origin, DEV_AUD, DEV_EMAIL, now, DEV_TOKEN_TTL.as_secs()));
        format!("curl -H 'Cf-Access-Jwt-Assertion: {token}' {}/admin/whoami", self.origin)
    }
}

/// The value of `name`: unset → `None`; set → trimmed (empty counts as set, so it can be
/// refused rather than silently ignored).
fn env(name: &'static str) -> Result<Option<String>, EnvError> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v.trim().to_owned())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(EnvError::new(name, "is not valid UTF-8")),
    }
}

/// A comma-separated list; empty items are dropped.
fn list(name: &'static str) -> Result<Vec<String>, EnvError> {
    Ok(env(name)?
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default())
}

/// A configuration error, naming the environment variable at fault.
#[derive(Debug)]
struct EnvError {
    var: &'static str,
    message: String,
}

impl EnvError {
    fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self { var, message: message.into() }
    }
}

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.var, self.message)
    }
}

/// ztgate names its own settings; say which environment variable set each one. (ztgate's
/// messages never repeat a secret, so they can be printed.)
impl From<ConfigError> for EnvError {
    fn from(e: ConfigError) -> Self {
        let var = match e.setting() {
            "team_domain" => "ZTGATE_TEAM_DOMAIN",
            "audiences" => "ZTGATE_AUD",
            "certs_url" => "ZTGATE_CERTS_URL",
            "policy" => "ZTGATE_ADMIN_EMAILS",
            "api_keys" => "ZTGATE_API_KEYS", // pragma: allowlist secret
            "hmac_keys" => "ZTGATE_HMAC_KEYS",
            "webhook_secret" => "ZTGATE_WEBHOOK_SECRET", // pragma: allowlist secret
            _ => "configuration",
        };
        Self::new(var, e.to_string())
    }
}

enum Fatal {
    Config(EnvError),
    Runtime(String),
}

impl From<EnvError> for Fatal {
    fn from(e: EnvError) -> Self {
        Self::Config(e)
    }
}

impl From<ConfigError> for Fatal {
    fn from(e: ConfigError) -> Self {
        Self::Config(e.into())
    }
}
