//! ztgate in a Cloudflare Worker: the admin server's identity routes, with the same policy
//! type, configuration names, JSON bodies and status codes.
//!
//! | route | who may call it |
//! |---|---|
//! | `GET /healthz` | public |
//! | `GET /admin/whoami` (and every other `/admin/...` path) | an Access user on `ZTGATE_ADMIN_EMAILS`, or a service token on `ZTGATE_SERVICE_TOKENS` |
//! | `GET /mtls/whoami` | a client certificate Cloudflare verified and found unrevoked (`request.cf.tlsClientAuth`) |
//! | `POST /admin/revocations` `{"kind": "api_key"\|"access_sub"\|"cert", "id": ..}` | an admin, as above: the credential is refused by every isolate within a second (201) |
//! | `GET /admin/revocations` | an admin: every revocation |
//! | `POST /webhooks/inbound` | a Svix-signed delivery (secret `ZTGATE_WEBHOOK_SECRET`, or the Secrets Store binding `ZTGATE_WEBHOOK_SECRET_STORE`) |
//! | `GET /admin/ws` (WebSocket) | an admin, as above, refused (401/403 JSON) before any socket exists; each message is answered with the caller's id; closed with 4401 when the token expires or the login is revoked (checked every `ZTGATE_WS_RECHECK` seconds, default 10, and before each answer); at most `ZTGATE_MAX_WEBSOCKETS` (default 256) per isolate |
//! | `GET /admin/events` | an admin: what the cron trigger, the queue consumer and RPC stored, and the consumer's refusals counted by code |
//! | `POST /admin/queue/send` (body: the message, e.g. `{"kind":"note","text":".."}`) | an admin: signed into an envelope with `ZTGATE_QUEUE_KEYS` and sent to the queue (202) |
//! | `POST /admin/queue/send-raw` (body: sent as is) | an admin: what a sender with write access to the queue but not the key can send, for tests (202) |
//! | `POST /admin/maintenance` | nobody, in effect: an admin passes the gate, but storage records maintenance for the cron trigger only (403 `forbidden`) |
//! | anything else | nobody: 403 `no_policy` |
//!
//! Three more event sources, each with its identity (`src/events.rs`, `docs/workers.md`):
//!
//! | event | who is calling | stored by |
//! |---|---|---|
//! | cron trigger `*/30 * * * *` (`#[event(scheduled)]`) | the platform: `scheduled:<cron>`, from the runtime's event | `store::record_maintenance` (that principal only) |
//! | queue `ztgate-events` (`#[event(queue)]`, producer `ZTGATE_QUEUE`) | the holder of `ZTGATE_QUEUE_KEYS`: each message a signed envelope (purpose `queue:ztgate-events`), opened before storage; refused ones are acknowledged, logged and counted, never retried; a storage failure is retried | `store::record_message`, idempotent by envelope id |
//! | RPC `record_note({ signed_token } \| { access_jwt }, note)` through a service binding | a token signed with `ZTGATE_RPC_KEYS` for `rpc:record_note`, or an Access JWT, checked at the route `RPC /rpc/record_note` | `store::record_note` (machines only: a signed token or a service token) |
//!
//! Application data lives in a second Durable Object, `ZTGATE_STORE` (class [`AppStore`]).
//!
//! Shared state lives in the Durable Object bound as `ZTGATE_STATE` (class [`ZtgateState`],
//! SQLite-backed; `wrangler.toml` binds it), so every isolate sees the same: webhook replays
//! (409 `replayed`, also after a restart), revocations (checked on every verified request) and
//! the failed-authentication budget `ZTGATE_AUTH_FAILURES` per client IP (`CF-Connecting-IP`)
//! and per credential, as `N/window` (default `20/300s`, `off` for none): beyond it, 429
//! `too_many_requests` with `Retry-After` before any signature is checked. An object that cannot
//! answer within a second refuses replays and revocation checks (503 `state_unavailable`) and
//! lets the budget through with a warning (`docs/fleet-state.md`). `ZTGATE_STATE_BOUNDS`
//! (`replays/rate_keys/revocations`, default `1000000/1000000/100000`) bounds the object.
//!
//! Configuration (each name a Worker var or secret) — `ZTGATE_TEAM_DOMAIN` (the exact `iss`, e.g.
//! `https://acme.cloudflareaccess.com`), `ZTGATE_AUD` (comma-separated AUD tags),
//! `ZTGATE_ADMIN_EMAILS`, `ZTGATE_SERVICE_TOKENS` (comma-separated), `ZTGATE_CERTS_URL` (JWKS,
//! default `{team}/cdn-cgi/access/certs`), `ZTGATE_AUTH_FAILURES` (above), `ZTGATE_QUEUE_KEYS`
//! and `ZTGATE_RPC_KEYS` (HMAC key rings, `kid:secret,...`; without the first the consumer retries
//! every batch, without the second RPC takes Access JWTs only), `ZTGATE_QUEUE_NAME` (the queue
//! `ZTGATE_QUEUE` sends to, default `ztgate-events`). A missing or bad
//! setting, or no `ZTGATE_STATE` binding, makes every request answer 500 `not_configured`,
//! naming it. `ZTGATE_LOG` (`error`, `warn`, `info` — the default, one JSON line per decision on the
//! console, for `wrangler tail` — or `debug`). `ZTGATE_RS256=pure-rust` verifies signatures
//! without WebCrypto (to compare the two; both give the same answers); `ZTGATE_BENCH=1` adds
//! `GET /bench/identity?n=N` (admins only), which repeats the identity check N times.
//!
//! Run it locally with `examples/worker/run-local.sh`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

mod events;
mod store;
mod ws;

pub use store::AppStore;

use http::StatusCode;
use serde_json::{Value, json};
use worker::{Context, DurableObject, Env, Request, State, durable_object, event};
use ztgate::clock::{Clock, SystemClock};
use ztgate::identity::hmac_token::{KeyRing, SignedTokenAuth, TokenSource};
use ztgate::identity::shared_state::{Budget, RateLimit, Revocation, RevocationKind, RevocationList};
use ztgate::identity::webhook::WebhookVerifier;
use ztgate::identity::webhook::{append_capped, check_content_length};
use ztgate::identity::{ClientCertAuth, Requirement, TokenCacheConfig};
use ztgate::secrets::{PerRequest, SecretSource};
use ztgate::workers::{DurableRevocations, DurableState, StateObject, WorkersFetcher};
use ztgate::workers::{SecretStoreSecret, WorkerSecret};
use ztgate::{AccessConfig, Gate, Policy, Principal, Rejection, RoutePolicies, Verified};

/// Built once per isolate, so the JWKS cache lives as long as the isolate does.
/// The console logger is installed once per isolate, at the level `ZTGATE_LOG` names.
static LOGGING: std::sync::Once = std::sync::Once::new();

/// `ZTGATE_LOG`: `error`, `warn`, `info` (the default: every decision) or `debug`.
fn log_level(env: &Env) -> tracing::Level {
    match setting(env, "ZTGATE_LOG").as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("error") => tracing::Level::ERROR,
        Some("warn") => tracing::Level::WARN,
        Some("debug") => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    }
}

/// The Durable Object binding that holds the fleet's shared state (`wrangler.toml`).
const STATE_BINDING: &str = "ZTGATE_STATE";

/// The shared-state Durable Object: the class workerd instantiates, delegating to ztgate's
/// [`StateObject`] (replay records, GCRA budgets, revocations in the object's SQLite).
#[durable_object(alarm)]
pub struct ZtgateState {
    inner: StateObject,
}

impl DurableObject for ZtgateState {
    fn new(state: State, env: Env) -> Self {
        let inner = StateObject::new(state);
        let inner = match state_bounds(&env) {
            Some((replays, rate_keys, revocations)) => inner.with_bounds(replays, rate_keys, revocations),
            None => inner,
        };
        Self { inner }
    }

    async fn fetch(&self, req: Request) -> worker::Result<worker::Response> {
        self.inner.fetch(req).await
    }

    async fn alarm(&self) -> worker::Result<worker::Response> {
        self.inner.alarm().await
    }
}

/// `ZTGATE_STATE_BOUNDS`: `replays/rate_keys/revocations`, the object's bounds (default
/// `1000000/1000000/100000`); small ones let a test fill the object.
fn state_bounds(env: &Env) -> Option<(u64, u64, u64)> {
    let value = setting(env, "ZTGATE_STATE_BOUNDS")?;
    let mut parts = value.split('/').map(|n| n.trim().parse::<u64>().ok().filter(|&n| n > 0));
    match (parts.next().flatten(), parts.next().flatten(), parts.next().flatten(), parts.next()) {
        (Some(replays), Some(rate_keys), Some(revocations), None) => Some((replays, rate_keys, revocations)),
        _ => {
            tracing::warn!(
                outcome = "not_configured",
                variable = "ZTGATE_STATE_BOUNDS",
                "not N/N/N: default bounds"
            );
            None
        }
    }
}

static APP: OnceLock<Result<App, Misconfigured>> = OnceLock::new();

/// What an isolate builds once: the route table, and the revocation list its gates check.
struct App {
    policies: RoutePolicies,
    revocations: Arc<DurableRevocations>,
}

struct Misconfigured {
    variable: &'static str,
    message: String,
}

impl Misconfigured {
    fn new(variable: &'static str, message: impl ToString) -> Self {
        Self { variable, message: message.to_string() }
    }
}

/// Installs the console logger, once per isolate, whichever event comes first.
fn init_logging(env: &Env) {
    LOGGING.call_once(|| {
        ztgate::workers::ConsoleLog::install(log_level(env));
    });
}

/// The isolate's [`App`], built by the first event that needs it; misconfigured: 500
/// `not_configured`, naming the setting.
fn app_for(env: &Env) -> Result<&'static App, (StatusCode, Value)> {
    APP.get_or_init(|| app(env)).as_ref().map_err(|e| {
        let message = format!("{}: {}", e.variable, e.message);
        (StatusCode::INTERNAL_SERVER_ERROR, json!({ "code": "not_configured", "message": message }))
    })
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> worker::Result<http::Response<String>> {
    init_logging(&env);
    let (policies, revocations) = match app_for(&env) {
        Ok(app) => (&app.policies, &app.revocations),
        Err((status, body)) => return Ok(json_response(status, body)),
    };
    // Identity first: no handler runs, and no route is revealed, before the gate says yes.
    let who = match ztgate::workers::check(policies, &req).await {
        Ok(who) => who,
        Err(rejection) => return Ok(rejection.to_response()),
    };
    let path = req.path();
    if req.method() == worker::Method::Post && path == "/webhooks/inbound" {
        return Ok(inbound_webhook(&mut req, &env).await);
    }
    if path == "/bench/identity" {
        return Ok(bench_identity(policies, &req).await);
    }
    if path == "/admin/revocations" {
        return Ok(match req.method() {
            worker::Method::Post => revoke(&mut req, revocations.as_ref(), &who).await,
            worker::Method::Get => list_revocations(revocations.as_ref()).await,
            _ => json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({ "code": "method_not_allowed", "message": "GET or POST" }),
            ),
        });
    }
    match (req.method(), path.as_str()) {
        (worker::Method::Get, ws::WS_PATH) => return Ok(ws::upgrade(&req, &env, policies, who)),
        (worker::Method::Get, "/admin/events") => return Ok(events::events_summary(&env, &who).await),
        (worker::Method::Post, "/admin/maintenance") => {
            return Ok(events::maintenance_over_http(&env, &who).await);
        }
        (worker::Method::Post, "/admin/queue/send") => {
            return Ok(events::send(&mut req, &env, &who, false).await);
        }
        (worker::Method::Post, "/admin/queue/send-raw") => {
            return Ok(events::send(&mut req, &env, &who, true).await);
        }
        _ => {}
    }
    Ok(match (req.method(), path.as_str()) {
        (worker::Method::Get | worker::Method::Head, "/healthz") => {
            json_response(StatusCode::OK, json!({ "status": "ok" }))
        }
        (worker::Method::Get, "/admin/whoami") => json_response(StatusCode::OK, whoami(&who)),
        (worker::Method::Get, "/mtls/whoami") => match who.principal() {
            Principal::ClientCert(cert) => json_response(
                StatusCode::OK,
                json!({
                    "fingerprint": cert.fingerprint_sha256,
                    "subject_dn": cert.subject_dn,
                    "issuer_dn": cert.issuer_dn,
                }),
            ),
            _ => ztgate::Rejection::Forbidden.to_response(),
        },
        _ => json_response(StatusCode::NOT_FOUND, json!({ "code": "not_found", "message": "no such route" })),
    })
}

/// `POST /webhooks/inbound`: a Svix-signed delivery. The secret (`whsec_...`) is read through
/// a `SecretSource` once for this request: from the Secrets Store binding
/// `ZTGATE_WEBHOOK_SECRET_STORE` if there is one, else the Worker secret
/// `ZTGATE_WEBHOOK_SECRET`. Unset: 503 `not_configured`, as in the admin server. Deliveries
/// are recorded in the shared-state Durable Object, so a replay to any isolate, or after a
/// restart, is 409 `replayed`.
async fn inbound_webhook(req: &mut Request, env: &Env) -> http::Response<String> {
    let source: Box<dyn SecretSource> = if env.secret_store("ZTGATE_WEBHOOK_SECRET_STORE").is_ok() {
        Box::new(SecretStoreSecret::new(env, "ZTGATE_WEBHOOK_SECRET_STORE"))
    } else {
        Box::new(WorkerSecret::new(env, "ZTGATE_WEBHOOK_SECRET"))
    };
    let secret = PerRequest::new(source.as_ref());
    let verifier = match secret.get().await.map(WebhookVerifier::svix) {
        Ok(Ok(verifier)) => verifier,
        Ok(Err(_)) | Err(_) => return Rejection::NotConfigured { what: "webhook secret" }.to_response(),
    };
    let replays = match DurableState::new(env, STATE_BINDING) {
        Ok(state) => state.replay_guard(),
        Err(_) => return Rejection::NotConfigured { what: "shared state" }.to_response(),
    };
    let verifier = verifier.with_replay_guard(Arc::new(replays));
    let limit = verifier.max_body_bytes();
    // The same bounded copy the gate reads (more than 256 headers is 431, not truncated).
    let headers = match ztgate::workers::headers(req) {
        Ok(headers) => headers,
        Err(rejection) => return rejection.to_response(),
    };
    if let Err(rejection) = check_content_length(&headers, limit) {
        return rejection.to_response();
    }
    let body = match read_capped(req, limit).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    match verifier.verify(&headers, &body, SystemClock.now()).await {
        Ok(message) => json_response(StatusCode::OK, json!({ "id": message.id() })),
        Err(rejection) => rejection.to_response(),
    }
}

/// The body, refused (413) as soon as it passes `limit`, whatever its declared length.
async fn read_capped(req: &mut Request, limit: usize) -> Result<Vec<u8>, http::Response<String>> {
    let invalid = || {
        json_response(
            StatusCode::BAD_REQUEST,
            json!({ "code": "invalid_body", "message": "the body could not be read" }),
        )
    };
    let mut stream = match req.stream() {
        Ok(stream) => stream,
        Err(_) => return Ok(Vec::new()),
    };
    let mut body = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(|_| invalid())?;
        append_capped(&mut body, &chunk, limit).map_err(|r| r.to_response())?;
    }
    Ok(body)
}

/// `GET /bench/identity?n=N` (only with `ZTGATE_BENCH=1`, behind the admin policy): runs the
/// whole identity check of this request N more times (at most 1000), so that the time of one
/// check can be measured from outside as a difference between two values of N (a Worker's own
/// clock does not move while it computes).
async fn bench_identity(policies: &RoutePolicies, req: &Request) -> http::Response<String> {
    let n: u32 = req
        .url()
        .ok()
        .and_then(|u| u.query_pairs().find(|(k, _)| k == "n").and_then(|(_, v)| v.parse().ok()))
        .unwrap_or(0)
        .min(1000);
    for _ in 0..n {
        if let Err(rejection) = ztgate::workers::check(policies, req).await {
            return rejection.to_response();
        }
    }
    json_response(StatusCode::OK, json!({ "checks": n }))
}

/// `POST /admin/revocations` `{"kind": .., "id": ..}`: stored in the Durable Object, refused by
/// this isolate at once and by every other within a second (201).
async fn revoke(
    req: &mut Request,
    list: &DurableRevocations,
    who: &Verified<Principal>,
) -> http::Response<String> {
    let invalid = |message: &str| {
        json_response(StatusCode::BAD_REQUEST, json!({ "code": "invalid_revocation", "message": message }))
    };
    let body = match read_capped(req, 4096).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return invalid("the body is not JSON");
    };
    let Some(kind) = body.get("kind").and_then(Value::as_str).and_then(RevocationKind::from_name) else {
        return invalid("`kind` is a revocation kind such as api_key, access_sub or cert");
    };
    let Some(id) = body.get("id").and_then(Value::as_str) else {
        return invalid("`id` is required");
    };
    let revocation = match Revocation::new(kind, id) {
        Ok(revocation) => revocation,
        Err(e) => return invalid(&e.to_string()),
    };
    if let Err(e) = list.revoke(&revocation).await {
        tracing::error!(layer = "storage", outcome = "revoke_failed", error = ?e.to_string());
        return Rejection::StateUnavailable { what: "revocation list" }.to_response();
    }
    tracing::warn!(layer = "storage", outcome = "revoked", principal = ?who.id(), kind = kind.name(), id = ?revocation.id());
    json_response(StatusCode::CREATED, json!({ "revoked": { "kind": kind.name(), "id": revocation.id() } }))
}

/// `GET /admin/revocations`: every revocation, sorted.
async fn list_revocations(list: &DurableRevocations) -> http::Response<String> {
    match list.list().await {
        Ok(all) => {
            let all: Vec<Value> =
                all.iter().map(|r| json!({ "kind": r.kind().name(), "id": r.id() })).collect();
            json_response(StatusCode::OK, json!({ "revocations": all }))
        }
        Err(e) => {
            tracing::error!(layer = "storage", outcome = "revocations_unavailable", error = ?e.to_string());
            Rejection::StateUnavailable { what: "revocation list" }.to_response()
        }
    }
}

fn whoami(who: &Verified<Principal>) -> Value {
    match who.principal() {
        Principal::User(user) => json!({ "kind": "user", "email": user.email }),
        Principal::Service(service) => json!({ "kind": "service", "common_name": service.common_name }),
        other => json!({ "kind": other.kind(), "id": other.id() }),
    }
}

fn json_response(status: StatusCode, body: Value) -> http::Response<String> {
    let mut response = http::Response::new(body.to_string());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    response
}

/// A Worker var or secret; unset and empty are the same.
fn setting(env: &Env, name: &str) -> Option<String> {
    let value = env.secret(name).or_else(|_| env.var(name)).ok()?.to_string();
    let value = value.trim().to_owned();
    (!value.is_empty()).then_some(value)
}

fn list(env: &Env, name: &str) -> Vec<String> {
    setting(env, name)
        .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// `ZTGATE_AUTH_FAILURES`: `N/window` (`20/300s`, `20/300`), `off` for no limit; unset is
/// `20/300s`, as in the admin server.
fn auth_failures(env: &Env) -> Result<Option<Budget>, Misconfigured> {
    const NAME: &str = "ZTGATE_AUTH_FAILURES";
    let value = setting(env, NAME).unwrap_or_else(|| "20/300s".to_owned());
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let bad = || Misconfigured::new(NAME, format!("{value:?} is not a budget such as 20/300s, or off"));
    let (n, window) = value.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let window = window.trim();
    let secs: u64 = window.strip_suffix('s').unwrap_or(window).parse().map_err(|_| bad())?;
    Budget::new(n, Duration::from_secs(secs)).map(Some).map_err(|e| Misconfigured::new(NAME, e))
}

fn app(env: &Env) -> Result<App, Misconfigured> {
    let state = DurableState::new(env, STATE_BINDING).map_err(|e| Misconfigured::new(STATE_BINDING, e))?;
    let revocations = Arc::new(state.revocations());
    let policies = policies(env)?.with_revocations(revocations.clone());
    let policies = match auth_failures(env)? {
        Some(budget) => policies.with_rate_limit(RateLimit::failures(Arc::new(state.rate_limiter(budget)))),
        None => policies,
    };
    Ok(App { policies, revocations })
}

fn policies(env: &Env) -> Result<RoutePolicies, Misconfigured> {
    if setting(env, "ZTGATE_RS256").as_deref() == Some("pure-rust") {
        ztgate::workers::set_webcrypto(false);
    }
    let team = setting(env, "ZTGATE_TEAM_DOMAIN").ok_or_else(|| {
        Misconfigured::new("ZTGATE_TEAM_DOMAIN", "is required, e.g. https://acme.cloudflareaccess.com")
    })?;
    if !team.starts_with("https://") {
        return Err(Misconfigured::new("ZTGATE_TEAM_DOMAIN", format!("{team:?} must start with https://")));
    }
    let audiences = list(env, "ZTGATE_AUD");
    if audiences.is_empty() {
        return Err(Misconfigured::new("ZTGATE_AUD", "is required: the Access application's AUD tag(s)"));
    }
    let emails = list(env, "ZTGATE_ADMIN_EMAILS");
    if let Some(bad) = emails.iter().find(|e| !e.contains('@')) {
        return Err(Misconfigured::new("ZTGATE_ADMIN_EMAILS", format!("{bad:?} is not an email address")));
    }
    let service_tokens = list(env, "ZTGATE_SERVICE_TOKENS");
    if emails.is_empty() && service_tokens.is_empty() {
        return Err(Misconfigured::new(
            "ZTGATE_ADMIN_EMAILS",
            "nobody would be allowed in: set ZTGATE_ADMIN_EMAILS and/or ZTGATE_SERVICE_TOKENS",
        ));
    }
    let config =
        AccessConfig::new(team.as_str(), audiences).map_err(|e| Misconfigured::new("ZTGATE_AUD", e))?;
    let certs_url = setting(env, "ZTGATE_CERTS_URL").unwrap_or_else(|| config.default_certs_url());
    let fetcher = WorkersFetcher::new(&certs_url).map_err(|e| Misconfigured::new("ZTGATE_CERTS_URL", e))?;
    let bench = setting(env, "ZTGATE_BENCH").as_deref() == Some("1");
    let builder = Gate::builder(config)
        .policy(Policy::new().allow_emails(emails).allow_service_tokens(service_tokens))
        .fetcher(Arc::new(fetcher));
    // The benchmark repeats one token: with the verified-token cache on it would time cache
    // hits, not RS256, so a benchmark deployment checks every signature.
    let builder = if bench { builder.token_cache(TokenCacheConfig::disabled()) } else { builder };
    let access = builder.build_mechanism().map_err(|e| Misconfigured::new("ZTGATE_TEAM_DOMAIN", e))?;
    let access = Requirement::mechanism(access);
    let route = |p: Result<RoutePolicies, ztgate::ConfigError>| {
        p.map_err(|e| Misconfigured::new("ZTGATE_TEAM_DOMAIN", e))
    };
    let policies = route(RoutePolicies::new().route("GET", "/healthz", Requirement::public()))?;
    let policies = route(policies.route("HEAD", "/healthz", Requirement::public()))?;
    let policies = route(policies.route("GET", "/admin/whoami", access.clone()))?;
    let policies = route(policies.route("GET", ws::WS_PATH, access.clone()))?;
    let policies =
        if bench { route(policies.route("GET", "/bench/identity", access.clone()))? } else { policies };
    let policies = route(policies.route("*", "/admin", access.clone()))?;
    let access_for_rpc = access.clone();
    let policies = route(policies.route("*", "/admin/{*rest}", access))?;
    let policies =
        route(policies.route("GET", "/mtls/whoami", Requirement::mechanism(ClientCertAuth::new())))?;
    // The signature covers the body, which a gate does not read: verified in the handler.
    let policies = route(policies.route("POST", "/webhooks/inbound", Requirement::public()))?;
    // RPC (the `record_note` entrypoint method, through a service binding): a token signed
    // with ZTGATE_RPC_KEYS for this one method, or an Access JWT. Which principals may then
    // store a note is storage's decision (store::record_note: machines only).
    let mut rpc = Vec::new();
    if let Some(spec) = setting(env, "ZTGATE_RPC_KEYS") {
        let ring = KeyRing::parse(&spec).map_err(|e| Misconfigured::new("ZTGATE_RPC_KEYS", e))?;
        let query = TokenSource::Query(ztgate::workers::RPC_TOKEN_PARAM.into());
        let signed =
            SignedTokenAuth::new(Arc::new(ring), store::RPC_NOTE_PURPOSE, query, Arc::new(SystemClock));
        rpc.push(Requirement::mechanism(signed));
    }
    rpc.push(access_for_rpc);
    route(policies.route(ztgate::workers::RPC_METHOD, "/rpc/record_note", Requirement::any_of(rpc)))
}
