//! The routes: every route's requirement (the policy table), the router, and the state the
//! handlers share.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::sync::Semaphore;
use ztgate::clock::SystemClock;
use ztgate::config::{Mechanisms, RouteSpec};
use ztgate::identity::hmac_token::{KeyRingSource, SignedTokenAuth, TokenSource};
use ztgate::identity::shared_state::RevocationList;
use ztgate::identity::turnstile::TurnstileVerifier;
use ztgate::identity::{AccessJwt, ApiKeyAuth, ApiKeys, ClientCertAuth, Requirement};
use ztgate::request::RequestLimits;
use ztgate::{ConfigError, RoutePolicies};

use crate::dev::{CERTS_PATH, DevIssuer, IDENTITY_PATH};
use crate::handlers::{
    create_note, delete_note, healthz, inbound_webhook, list_notes, list_revocations, method_not_allowed,
    metrics_text, mint_unsubscribe_link, mtls_whoami, not_found, ops_stats, reload_config, revoke, subscribe,
    unsubscribe, unsubscribe_preview, whoami,
};
use crate::reload::{Live, Reloader, SharedState};
use crate::store::Store;
use crate::ws::{Sockets, WS_PATH, admin_ws};

const MAX_BODY_BYTES: usize = 64 * 1024;
/// The purpose unsubscribe links are minted and verified for: a token minted for anything
/// else (a magic link, a session) is refused here.
pub(crate) const UNSUBSCRIBE: &str = "unsubscribe";
const UNSUBSCRIBE_TOKEN_PARAM: &str = "token";

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    /// The HMAC key ring and the webhook verifier in force (a reload swaps them).
    pub(crate) live: Live,
    /// Renders what the process's `metrics` recorder holds, as Prometheus text.
    pub(crate) metrics: PrometheusHandle,
    pub(crate) reloader: Arc<Reloader>,
    /// Revoked credentials, checked by every gate.
    pub(crate) revocations: Arc<dyn RevocationList>,
    /// `POST /api/subscribe`'s human check; `None`: not configured (503).
    pub(crate) turnstile: Option<Arc<TurnstileVerifier>>,
    /// `GET /admin/ws`: the open sockets' permits, and how often their proofs are checked.
    pub(crate) sockets: Sockets,
}

/// The whole app: every route (the dev JWKS too when `dev` is given) and both fallbacks, under
/// the reloader's policies layer. At most `max_body_reads` webhook bodies are read at once.
pub(crate) fn app(
    reloader: Arc<Reloader>,
    turnstile: Option<Arc<TurnstileVerifier>>,
    store: Store,
    dev: Option<&DevIssuer>,
    max_body_reads: usize,
    sockets: Sockets,
    metrics: PrometheusHandle,
) -> Router {
    let policies = reloader.policies();
    let revocations = reloader.revocations();
    let state = AppState { store, live: reloader.live(), metrics, revocations, turnstile, reloader, sockets };

    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/admin/whoami", get(whoami))
        .route(WS_PATH, get(admin_ws))
        .route("/admin/notes", get(list_notes).post(create_note))
        .route("/admin/notes/{id}", delete(delete_note))
        .route("/admin/unsubscribe-links", post(mint_unsubscribe_link))
        .route("/admin/reload", post(reload_config))
        .route("/admin/revocations", get(list_revocations).post(revoke))
        .route("/ops/stats", get(ops_stats))
        .route("/metrics", get(metrics_text))
        .route("/mtls/whoami", get(mtls_whoami))
        .route("/api/unsubscribe", get(unsubscribe_preview).post(unsubscribe))
        .route("/api/subscribe", post(subscribe))
        .route(
            "/webhooks/inbound",
            post(inbound_webhook).route_layer(middleware::from_fn_with_state(
                Arc::new(Semaphore::new(max_body_reads)),
                limit_body_reads,
            )),
        );
    if let Some(dev) = dev {
        let jwks = dev.jwks();
        app = app.route(
            CERTS_PATH,
            get(move || {
                let jwks = jwks.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], jwks) }
            }),
        );
        app = app.route(IDENTITY_PATH, get(dev_identity));
    }
    // The policies layer goes on last, over every route and both fallbacks: nothing is
    // reachable without a declared policy.
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(policies)
}

/// Dev mode's `get-identity`: the identity of the login in the `CF_Authorization` cookie.
async fn dev_identity(headers: axum::http::HeaderMap) -> Response {
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()).unwrap_or("");
    match DevIssuer::identity(cookies) {
        Some(identity) => ([(header::CONTENT_TYPE, "application/json")], identity).into_response(),
        None => {
            (StatusCode::UNAUTHORIZED, Json(json!({ "err": "no CF_Authorization cookie" }))).into_response()
        }
    }
}

/// The webhook body is read before anything proves who sent it (the signature covers it), up
/// to 1 MiB each: at most as many are read at once as there are permits. Beyond, 503 with
/// `Retry-After` before a byte of the body is read (the connection then closes).
async fn limit_body_reads(State(permits): State<Arc<Semaphore>>, req: Request, next: Next) -> Response {
    let Ok(_permit) = permits.try_acquire_owned() else {
        let body = json!({
            "code": "overloaded",
            "message": "too many webhook deliveries are being read; retry later",
        });
        let mut res = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return res;
    };
    next.run(req).await
}

/// Every route's requirement, first match wins; whatever matches no rule is 403 `no_policy`.
/// `file_routes`, when not empty, replace the built-in table (below); they name the
/// mechanisms `access`, `api_key`, `client_cert`, `unsubscribe_token` and `public`. Dev mode's
/// JWKS route is declared public first either way.
pub(crate) fn route_policies(
    access: Arc<AccessJwt>,
    api_keys: Arc<ApiKeys>,
    ring: Arc<KeyRingSource>,
    dev: bool,
    trust_cert_headers: bool,
    file_routes: &[RouteSpec],
    shared: &SharedState,
) -> Result<RoutePolicies, ConfigError> {
    let access = Requirement::mechanism(access);
    let api_key = Requirement::mechanism(ApiKeyAuth::new(api_keys));
    let client_cert = Requirement::mechanism(ClientCertAuth::new());
    let unsubscribe_token = Requirement::mechanism(SignedTokenAuth::from_source(
        ring,
        UNSUBSCRIBE,
        TokenSource::Query(UNSUBSCRIBE_TOKEN_PARAM.to_owned()),
        Arc::new(SystemClock),
    ));
    let limits = RequestLimits { trust_client_cert_headers: trust_cert_headers, ..Default::default() };
    // Every gate checks the revocations and spends the failed-authentication budget.
    let mut policies = RoutePolicies::with_limits(limits)
        .with_revocations(shared.revocations.clone())
        .with_rate_limit(shared.auth_limit.clone());
    if shared.when_unavailable.allow_unchecked_revocations {
        policies = policies.allow_unchecked_while_revocations_unavailable();
    }
    if dev {
        policies = policies.route("GET", CERTS_PATH, Requirement::public())?.route(
            "GET",
            IDENTITY_PATH,
            Requirement::public(),
        )?;
    }
    if !file_routes.is_empty() {
        let mechanisms = Mechanisms::new()
            .with("access", access)
            .with("api_key", api_key)
            .with("client_cert", client_cert)
            .with("unsubscribe_token", unsubscribe_token);
        for (i, route) in file_routes.iter().enumerate() {
            let at = format!("routes[{i}] ({} {})", route.method, route.path);
            policies =
                policies.route(&route.method, &route.path, mechanisms.resolve(&route.require, &at)?)?;
        }
        return Ok(policies);
    }
    policies
        .route("GET", "/healthz", Requirement::public())?
        .route("HEAD", "/healthz", Requirement::public())?
        // Before the broader /admin rules: the first match wins.
        .route("DELETE", "/admin/notes/{id}", Requirement::all_of([access.clone(), api_key.clone()]))?
        // A reload changes who gets in: an admin with an API key, as for deletions.
        .route("POST", "/admin/reload", Requirement::all_of([access.clone(), api_key.clone()]))?
        // So does a revocation.
        .route("POST", "/admin/revocations", Requirement::all_of([access.clone(), api_key.clone()]))?
        .route("GET", "/admin/whoami", access.clone())?
        // The WebSocket upgrade: refused before any socket exists; the socket then checks the
        // same proof on a timer and on each message.
        .route("GET", WS_PATH, access.clone())?
        .route("GET", "/admin/notes", access.clone())?
        .route("POST", "/admin/notes", access.clone())?
        .route("POST", "/admin/unsubscribe-links", access.clone())?
        // Every other admin path and method: identity first, then 404 or 405.
        .route("*", "/admin", access.clone())?
        .route("*", "/admin/{*rest}", access)?
        .route("GET", "/ops/stats", api_key.clone())?
        .route("GET", "/metrics", api_key)?
        .route("GET", "/mtls/whoami", client_cert)?
        // RFC 8058: GET only shows what would happen; the one-click POST unsubscribes. The
        // link's token is verified on both.
        .route("GET", "/api/unsubscribe", unsubscribe_token.clone())?
        .route("POST", "/api/unsubscribe", unsubscribe_token)?
        // The Turnstile token is in the body: verified in the handler. Every request spends the
        // form's own budget, per client.
        .route_with_rate_limit(
            "POST",
            "/api/subscribe",
            Requirement::public(),
            shared.subscribe_limit.clone(),
        )?
        // The signature covers the body, which a gate does not read: verified in the handler.
        .route("POST", "/webhooks/inbound", Requirement::public())
}
