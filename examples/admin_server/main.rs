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
//! | `GET /admin/ws` (WebSocket) | an Access admin, refused (401/403 JSON) before any socket exists; each message is answered with the caller's id; the socket closes with 4401 when the token expires or the login is revoked (checked every `ZTGATE_WS_RECHECK` and before each answer), 4403 when a reload no longer admits the caller, 1001 (going away) at shutdown |
//! | any other `/admin` path | an Access admin (so unknown admin paths are 401 before 404) |
//! | `GET /ops/stats` | an API key |
//! | `GET /metrics` (Prometheus text: `ztgate_decisions_total`... see `ztgate::metrics`) | an API key |
//! | `POST /admin/reload` | an Access admin **and** an API key: reads the configuration again (as SIGHUP does) |
//! | `POST /admin/revocations` `{"kind": "api_key"\|"hmac_token"\|"access_sub"\|"cert", "id": ..}` | an Access admin **and** an API key: every gate refuses that credential from the next request on (401 `revoked`) |
//! | `GET /admin/revocations` | an Access admin: the list |
//! | `POST /api/subscribe` `{"email": .., "turnstile": ..}` | public, with its own request budget per client; the handler verifies the Turnstile token before storing the subscriber, and answers their unsubscribe link token |
//! | `GET /mtls/whoami` | a client certificate Cloudflare verified and found unrevoked |
//! | `GET`/`POST /api/unsubscribe?token=..` | an HMAC-signed token for purpose `unsubscribe`; GET only shows what would happen, the RFC 8058 one-click POST (`List-Unsubscribe=One-Click`) unsubscribes |
//! | `POST /webhooks/inbound` | public at the gate; the handler verifies the Svix signature (it needs the body) and refuses replays |
//! | anything else | nobody: 403 `no_policy` |
//!
//! Run it with no configuration for **dev mode**: it makes a signing key, serves its own
//! JWKS and `get-identity` endpoint, verifies against them over HTTP exactly as in production
//! (the dev user is admitted as a member of the group `ztgate-dev-admins`, so the group check
//! runs for real), makes a random API key named `dev`, and prints `curl` lines with a token for
//! `dev@localhost` and with that key.
//!
//! ```text
//! cargo run --example admin_server
//! ```
//!
//! Production mode is configured by environment, by a file, or both:
//!
//! | variable | meaning |
//! |---|---|
//! | `ZTGATE_CONFIG` | a TOML file (`ztgate.example.toml` beside this file shows every key): `[server]` holds the settings below by their lower-case names (`listen`, `db`, `header_timeout`...), `[access]`, `[api_keys]` (by SHA-256 digest or reference), `[hmac_keys]`, `[webhook]`, `[request]` and `[[routes]]` are `ztgate::config`'s. A variable that is set wins over the file, setting by setting |
//! | `ZTGATE_LISTEN` | address to listen on (default `127.0.0.1:8080`) |
//! | `ZTGATE_TEAM_DOMAIN` | e.g. `https://acme.cloudflareaccess.com`, the exact `iss`; unset = dev mode |
//! | `ZTGATE_CERTS_URL` | JWKS URL (default `{team}/cdn-cgi/access/certs`) |
//! | `ZTGATE_TOKEN_CACHE_MAX_AGE` | how long a verified Access token is answered without a new signature check, 1 s to 10 min in whole seconds, never past the token's `exp` (default `60s`); `off` checks every request's signature. The policy runs on every request either way |
//! | `ZTGATE_AUD` | comma-separated Access AUD tags (required) |
//! | `ZTGATE_ADMIN_EMAILS` | comma-separated emails allowed in |
//! | `ZTGATE_SERVICE_TOKENS` | comma-separated service-token common names allowed in |
//! | `ZTGATE_ADMIN_GROUPS` | comma-separated identity provider groups (id, name or email): a member of any is an admin, like a listed email. Groups alone are a valid configuration |
//! | `ZTGATE_REQUIRE_AUTH_METHOD` | comma-separated `amr` values: an admin's login must have used one (`hwk`: a hardware key) |
//! | `ZTGATE_MAX_SESSION_AGE` | a login older than this (seconds, `iat`) is 401 `session_too_old`, so the browser signs in again |
//! | `ZTGATE_IDENTITY_URL` | where users' Access identities (groups, `amr`) are fetched, when a rule needs one (default `{team}/cdn-cgi/access/get-identity`; `http://` on loopback) |
//! | `ZTGATE_DB` | SQLite file (default `ztgate-admin.sqlite`) |
//! | `ZTGATE_API_KEYS` | comma-separated `name:secret` API keys (secrets of 16+ bytes); unset = API-key routes refuse everyone (dev mode: one random key named `dev`) |
//! | `ZTGATE_HMAC_KEYS` | comma-separated `kid:secret` keys for unsubscribe links (secrets of 32+ bytes): the first signs, all verify; unset = a random key per start, so links die with the process |
//! | `ZTGATE_HMAC_KEYS_FILE` | a file holding the same `kid:secret,...` list, read at start and again once per `ZTGATE_HMAC_KEYS_TTL`, so keys rotate without a restart; not together with `ZTGATE_HMAC_KEYS`. Missing or invalid at start = exit 2; a later unreadable or invalid rewrite keeps the last good ring and logs `hmac_keys_reload_failed` |
//! | `ZTGATE_HMAC_KEYS_TTL` | how long the file's ring is used before the file is read again, from 1 s to 1 h in whole seconds (default `60s`; only with `ZTGATE_HMAC_KEYS_FILE`) |
//! | `ZTGATE_WEBHOOK_SECRET` | the Svix endpoint secret, `whsec_<base64>`; unset = `POST /webhooks/inbound` answers 503 `not_configured` | <!-- pragma: allowlist secret -->
//! | `ZTGATE_TRUST_CERT_HEADERS` | `1` = believe Cloudflare's `cf-cert-*` client-certificate headers (only when every request arrives through Cloudflare); `0` (default) = ignore them |
//! | `ZTGATE_HEADER_TIMEOUT` | a connection's request head must be whole this long after the accept (first request) or after its first byte (later ones); a silent connection is closed then (default `10s`) |
//! | `ZTGATE_BODY_TIMEOUT` | a request body must be whole this long after its head, however steadily it trickles: 408 `body_timeout` and the connection closes (default `30s`) |
//! | `ZTGATE_IDLE_TIMEOUT` | a kept-alive connection with no new request, or a client not reading its answer, is closed after this (default `60s`) |
//! | `ZTGATE_MAX_CONNECTIONS` | open connections at most (default `512`, below the usual 1,024 open files); one more sheds the connection waiting longest for a request, or gets 503 if every one is being answered |
//! | `ZTGATE_REDIS_URL` | `redis://host:port/db`: the webhook replay guard, the revocation list and the failed-authentication budgets are shared through this Redis by every instance pointed at it (a revocation reaches all within a second); unset = this process's memory (and the replay guard in SQLite). Redis unreachable: revocation and replay checks refuse (503 `state_unavailable`), budgets let requests through with a warning; each call bounded by 50 ms. The connection is made at start (up to 2 s of tries; then only a warning) |
//! | `ZTGATE_TURNSTILE_SECRET` | the Turnstile widget's secret key, read from the environment on every check: enables `POST /api/subscribe` (unset: it answers 503 `not_configured`) |
//! | `ZTGATE_TURNSTILE_HOSTNAMES` | comma list of the hostnames the widget is on (required with the secret) |
//! | `ZTGATE_TURNSTILE_ACTION` | the widget's `action` (default `subscribe`) |
//! | `ZTGATE_TURNSTILE_URL` | the siteverify URL (default Cloudflare's; `http://` on loopback for tests) |
//! | `ZTGATE_SUBSCRIBE_LIMIT` | `POST /api/subscribe` requests per client IP, `N/window` (default `5/3600s`); beyond, 429 |
//! | `ZTGATE_REVOCATIONS_WHEN_UNAVAILABLE` | `refuse` (default: 503 `state_unavailable` while the revocation list cannot answer) or `allow` (verified requests pass unchecked, logged `revocations_unchecked`) |
//! | `ZTGATE_REPLAYS_WHEN_UNAVAILABLE` | `refuse` (default: 503, the provider retries) or `accept` (signed webhooks accepted without the replay check, logged `replay_unchecked`) |
//! | `ZTGATE_RATE_LIMITS_WHEN_UNAVAILABLE` | `allow` (default: requests pass unlimited, logged `rate_limiter_unavailable`) or `refuse` (503) |
//! | `ZTGATE_AUTH_FAILURES` | failed authentications allowed per client IP (`CF-Connecting-IP`) and per credential, as `N/window` (default `20/300s`); beyond, 429 `too_many_requests` with `Retry-After`, before any signature is checked |
//! | `ZTGATE_MAX_WEBSOCKETS` | `GET /admin/ws` sockets open at once (default `256`); beyond, 503 `too_many_sockets` before the upgrade. Upgraded sockets leave the connection cap |
//! | `ZTGATE_WS_RECHECK` | how often an open socket's proof is checked again (default `10s`, 100 ms to 300 s); a socket also closes at its token's expiry |
//! | `ZTGATE_MAX_BODY_READS` | webhook bodies (unauthenticated, up to 1 MiB each) read at once (default `64`, at most `ZTGATE_MAX_CONNECTIONS`); beyond, 503 `overloaded` with `Retry-After` before reading |
//!
//! Timeouts are whole seconds (`10`, `10s`) or milliseconds (`1500ms`), from 100 ms to 1 h.
//! The accept loop and the connection deadlines are in `serve.rs`.
//!
//! To rotate HMAC keys, put the new key first and keep the old one second
//! (`new:<secret>,old:<secret>`) until the longest link it signed has expired. With
//! `ZTGATE_HMAC_KEYS` that takes a restart; with `ZTGATE_HMAC_KEYS_FILE`, rewrite the file
//! (write a new one, then rename it over the old) and the new key signs within the TTL.
//!
//! **Reload.** SIGHUP, or `POST /admin/reload`, reads the variables and the file again and
//! swaps the route table, API keys, HMAC ring and webhook secret at once (`reload.rs`);
//! connections stay open, and the JWKS and token caches stay when the Access application is
//! unchanged. A file that fails any check is refused whole and the running configuration keeps
//! serving: 422 `config_invalid`, the log line `config_reload_failed`, and the counter
//! `ztgate_config_reloads_total{outcome="refused"}` (`applied` for the others). The listen
//! address, database and connection limits take a restart.
//!
//! Invalid configuration exits with status 2 and names the variable (and, for a value from
//! the file, its key), never repeating a secret. Logs go to stderr (`RUST_LOG`, default `info`) and never contain a credential.

mod config;
mod dev;
mod handlers;
mod reload;
mod routes;
mod serve;
mod store;
mod ws;

use std::io::Write as _;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use crate::config::{EnvError, Fatal, Identity, Settings};
use crate::dev::DevIssuer;
use crate::reload::Reloader;
use crate::store::Store;

/// The target of every log line, whichever module logs it: the example's name.
const LOG_TARGET: &str = "admin_server";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => fatal.report(),
    }
}

async fn run() -> Result<(), Fatal> {
    let mut settings = Settings::load().await?;
    let store = Store::open(&settings.db)?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| EnvError::new("ZTGATE_LISTEN", format!("cannot listen on {}: {e}", settings.listen)))?;
    let addr = listener.local_addr().map_err(|e| Fatal::Runtime(e.to_string()))?;

    // Dev mode needs the bound address: the issuer and the JWKS URL are this server itself.
    let (access, dev) = match &settings.identity {
        Identity::Access(access) => (access.mechanism.clone(), None),
        Identity::Dev => {
            let dev = DevIssuer::new(addr)?;
            (dev.access()?, Some(dev))
        }
    };
    // Unset credentials get their defaults, with a warning (dev mode: a random API key).
    let credentials = std::mem::take(&mut settings.credentials);
    let (credentials, dev_api_key) = credentials.resolve(dev.is_some()).await?;
    // ztgate records through the `metrics` facade; this process exports Prometheus text.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| Fatal::Runtime(format!("metrics recorder: {e}")))?;
    let shared = match &settings.redis_url {
        Some(url) => reload::SharedState::redis(
            url,
            settings.auth_failures,
            settings.subscribe_limit,
            settings.when_unavailable,
        )?,
        None => reload::SharedState::in_memory(
            settings.auth_failures,
            settings.subscribe_limit,
            settings.when_unavailable,
        ),
    };
    shared.connect().await;
    let reloader = Reloader::start(&settings, access.clone(), credentials, store.clone(), shared)
        .map_err(|e| Fatal::Runtime(format!("route policies: {e}")))?;
    let turnstile = settings.turnstile.clone();
    let sockets = ws::Sockets::new(settings.sockets);
    let app = routes::app(
        reloader.clone(),
        turnstile,
        store,
        dev.as_ref(),
        settings.max_body_reads,
        sockets.clone(),
        metrics,
    );

    if let Some(dev) = &dev {
        dev.announce(dev_api_key.as_deref());
    }
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();

    // Warm the key cache once the server is up (in dev mode the JWKS is served by this very
    // listener). A failure is only logged: requests then get 503 until keys are reachable.
    reload::warm(access);
    reload_on_sighup(reloader)?;

    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        // Sockets left hyper at their upgrade: they are told here, beside its graceful shutdown.
        sockets.close_all();
    };
    serve::serve(listener, app, settings.limits, shutdown).await;
    if !sockets.drained(ws::CLOSE_GRACE).await {
        tracing::warn!(target: LOG_TARGET, layer = "server", "WebSockets still open after the shutdown grace period");
    }
    Ok(())
}

/// SIGHUP reloads the configuration (as `POST /admin/reload` does); the outcome is logged.
#[cfg(unix)]
fn reload_on_sighup(reloader: std::sync::Arc<Reloader>) -> Result<(), Fatal> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups =
        signal(SignalKind::hangup()).map_err(|e| Fatal::Runtime(format!("SIGHUP handler: {e}")))?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            // Logged and counted by `reload`; the server goes on with the old one on failure.
            let _ = reloader.reload("sighup").await;
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn reload_on_sighup(_: std::sync::Arc<Reloader>) -> Result<(), Fatal> {
    Ok(())
}
