//! An admin server with notes in SQLite, behind Cloudflare Access.
//!
//! The three ztgate layers, as this server applies them:
//!
//! 1. **Request** — the [`Gate`] layer on the `/admin` router reads the
//!    `Cf-Access-Jwt-Assertion` header (or the `CF_Authorization` cookie) with size limits and
//!    believes nothing yet. `/healthz` (and, in dev mode, the JWKS) are public: declared
//!    outside the gated router, on purpose.
//! 2. **Identity** — the same layer verifies the token against the team's JWKS and admits only
//!    the emails in `ZTGATE_ADMIN_EMAILS` and the service tokens in `ZTGATE_SERVICE_TOKENS`.
//!    A refused request is answered with a JSON 401/403/503 and never reaches a handler.
//! 3. **Storage** — handlers take a [`Verified<Principal>`] extractor, and the storage
//!    functions take an [`Actor`] made from it: code that has no proof of identity cannot
//!    even call them. Every note records its author.
//!
//! Run it with no configuration for **dev mode**: it makes a signing key, serves its own
//! JWKS, verifies against it over HTTP exactly as in production, and prints a `curl` line
//! with a token for `dev@localhost`.
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
//!
//! Invalid configuration exits with status 2 and names the variable. Logs go to stderr
//! (`RUST_LOG`, default `info`).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rusqlite::Connection;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing_subscriber::EnvFilter;
use ztgate::dev::{DevKey, jwks_json, user_claims};
use ztgate::identity::{AccessJwt, Requirement};
use ztgate::storage::Actor;
use ztgate::{AccessConfig, ConfigError, Gate, Policy, Principal, Verified};

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_DB: &str = "ztgate-admin.sqlite";
const CERTS_PATH: &str = "/cdn-cgi/access/certs";
const DEV_AUD: &str = "ztgate-dev";
const DEV_EMAIL: &str = "dev@localhost";
const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_NOTE_BYTES: usize = 4096;

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
    let notes = Notes::open(&settings.db)?;
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
    let gate = Gate::new(Requirement::One(access.clone()));

    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .merge(admin_routes(gate.clone(), notes))
        .fallback(not_found);
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

    if let Some(dev) = &dev {
        tracing::warn!(
            "dev mode: tokens are signed by a key made at start-up; set ZTGATE_TEAM_DOMAIN for production"
        );
        println!("dev mode: try\n  {}", dev.curl_line());
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

/// Everything under `/admin`, behind the gate: every handler here has a proven caller, and
/// even a path that does not exist answers 401 before 404.
fn admin_routes(gate: Gate, notes: Notes) -> Router {
    Router::new()
        .route("/admin/whoami", get(whoami))
        .route("/admin/notes", get(list_notes).post(create_note))
        .route("/admin/{*rest}", axum::routing::any(not_found))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(gate)
        .with_state(notes)
}

// ---------------------------------------------------------------------------------------------
// Handlers

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn not_found() -> (StatusCode, Json<Value>) {
    (StatusCode::NOT_FOUND, Json(json!({ "code": "not_found", "message": "no such route" })))
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
    State(notes): State<Notes>,
    who: Verified<Principal>,
    body: Result<Json<NewNote>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(note) = body?;
    let text = validate_note(note.text)?;
    let id = notes.create(&Actor::from(&who), text).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

async fn list_notes(
    State(notes): State<Notes>,
    who: Verified<Principal>,
) -> Result<Json<Vec<Note>>, ApiError> {
    Ok(Json(notes.list(&Actor::from(&who)).await?))
}

fn validate_note(text: Option<String>) -> Result<String, ApiError> {
    match text {
        None => Err(ApiError::InvalidNote("`text` is required")),
        Some(t) if t.trim().is_empty() => Err(ApiError::InvalidNote("`text` must not be empty")),
        Some(t) if t.len() > MAX_NOTE_BYTES => Err(ApiError::InvalidNote("`text` is longer than 4096 bytes")),
        Some(t) => Ok(t),
    }
}

/// Errors of the handlers, as JSON bodies with a stable `code` (like ztgate's rejections).
enum ApiError {
    InvalidNote(&'static str),
    Body(JsonRejection),
    Storage,
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self::Body(e)
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
            Self::InvalidNote(why) => (StatusCode::BAD_REQUEST, "invalid_note", why.to_owned()),
            Self::Body(e) => {
                let code = match &e {
                    JsonRejection::JsonSyntaxError(_) => "malformed_json",
                    JsonRejection::JsonDataError(_) => "invalid_note",
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
            // Already logged where it happened; the client learns nothing about the database.
            Self::Storage => {
                (StatusCode::INTERNAL_SERVER_ERROR, "storage_error", "the note store failed".to_owned())
            }
        };
        (status, Json(json!({ "code": code, "message": message }))).into_response()
    }
}

// ---------------------------------------------------------------------------------------------
// Storage: every function asks for an `Actor`, which only a verified request can produce.

#[derive(Clone)]
struct Notes {
    db: Arc<Mutex<Connection>>,
}

#[derive(serde::Serialize)]
struct Note {
    id: i64,
    text: String,
    author: String,
}

/// A storage failure, already logged where it happened.
#[derive(Debug)]
struct StorageError;

impl Notes {
    fn open(path: &Path) -> Result<Self, EnvError> {
        let fail =
            |e: rusqlite::Error| EnvError::new("ZTGATE_DB", format!("cannot open {}: {e}", path.display()));
        let conn = Connection::open(path).map_err(fail)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS notes (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                text TEXT NOT NULL,
                author TEXT NOT NULL,
                created_at INTEGER NOT NULL DEFAULT (unixepoch())
            )",
        )
        .map_err(fail)?;
        Ok(Self { db: Arc::new(Mutex::new(conn)) })
    }

    async fn create(&self, by: &Actor, text: String) -> Result<i64, StorageError> {
        let author = by.id().to_owned();
        let id = self
            .blocking(by, move |db| {
                db.execute("INSERT INTO notes (text, author) VALUES (?1, ?2)", (&text, &author))?;
                Ok(db.last_insert_rowid())
            })
            .await?;
        tracing::info!(layer = "storage", outcome = "note_created", principal = %by.id(), id);
        Ok(id)
    }

    async fn list(&self, by: &Actor) -> Result<Vec<Note>, StorageError> {
        self.blocking(by, |db| {
            let mut stmt = db.prepare("SELECT id, text, author FROM notes ORDER BY id")?;
            let rows =
                stmt.query_map([], |r| Ok(Note { id: r.get(0)?, text: r.get(1)?, author: r.get(2)? }))?;
            rows.collect()
        })
        .await
    }

    /// Runs `f` on the connection off the async runtime, logging failures with the caller.
    async fn blocking<T: Send + 'static>(
        &self,
        by: &Actor,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StorageError> {
        let db = self.db.clone();
        let result =
            tokio::task::spawn_blocking(move || f(&db.lock().unwrap_or_else(PoisonError::into_inner)))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
        result.map_err(|error| {
            tracing::error!(layer = "storage", outcome = "error", principal = %by.id(), %error);
            StorageError
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
        Ok(Self { listen, db, identity })
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
        let now = ztgate::clock::unix_now();
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

/// ztgate names its own settings; say which environment variable set each one.
impl From<ConfigError> for EnvError {
    fn from(e: ConfigError) -> Self {
        let var = match e.setting() {
            "team_domain" => "ZTGATE_TEAM_DOMAIN",
            "audiences" => "ZTGATE_AUD",
            "certs_url" => "ZTGATE_CERTS_URL",
            "policy" => "ZTGATE_ADMIN_EMAILS",
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
