//! `GET /admin/ws`: the admin server's WebSocket, at the edge.
//!
//! The upgrade request goes through the gate like any other request (the route table admits
//! Access admins), so a refused caller gets the 401/403 JSON answer and no socket. An accepted
//! socket keeps the caller's [`Verified<Principal>`] for its life: each text message is
//! answered with `{"principal": <id>, "kind": <kind>, "bytes": <length>}` after the proof is
//! checked again ([`Gate::recheck`](ztgate::Gate::recheck)), and the proof is also checked every
//! `ZTGATE_WS_RECHECK` seconds (default 10) and at the token's expiry. Expired or revoked →
//! close code 4401, the route gone → 4403, the revocation list unreachable → 1013; the close
//! reason is the rejection's code. Messages over 16 KiB close the socket with 1009. At most
//! `ZTGATE_MAX_WEBSOCKETS` sockets per isolate (default 256); beyond, 503 `too_many_sockets`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::future::{Either, select};
use http::{Method, StatusCode};
use serde_json::json;
use worker::{Date, Delay, Env, Request, WebSocket, WebSocketPair, WebsocketEvent};
use ztgate::{Principal, Rejection, RoutePolicies, SelectGate as _, Verified};

use crate::{json_response, setting};

/// The socket's route: its gate is selected again for each check.
pub(crate) const WS_PATH: &str = "/admin/ws";
const MAX_MESSAGE_BYTES: usize = 16 * 1024;
const DEFAULT_MAX_SOCKETS: usize = 256;
const DEFAULT_RECHECK_SECS: u64 = 10;

/// Sockets open in this isolate.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// A place among the isolate's sockets, given back when the session ends.
struct Place;

impl Place {
    fn take(max: usize) -> Option<Self> {
        OPEN.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Self)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The upgrade, for a caller the gate already admitted.
pub(crate) fn upgrade(
    req: &Request,
    env: &Env,
    policies: &'static RoutePolicies,
    who: Verified<Principal>,
) -> http::Response<String> {
    let wants_socket =
        req.headers().get("upgrade").ok().flatten().is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !wants_socket {
        let body = json!({ "code": "upgrade_required", "message": "GET /admin/ws is a WebSocket" });
        let mut res = json_response(StatusCode::UPGRADE_REQUIRED, body);
        res.headers_mut().insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
        return res;
    }
    let max = number(env, "ZTGATE_MAX_WEBSOCKETS", DEFAULT_MAX_SOCKETS as u64, 1..=65_536) as usize;
    let every = Duration::from_secs(number(env, "ZTGATE_WS_RECHECK", DEFAULT_RECHECK_SECS, 1..=300));
    let Some(place) = Place::take(max) else {
        let body =
            json!({ "code": "too_many_sockets", "message": "too many WebSockets are open; retry later" });
        let mut res = json_response(StatusCode::SERVICE_UNAVAILABLE, body);
        res.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("5"));
        return res;
    };
    let pair = match WebSocketPair::new() {
        Ok(pair) => pair,
        Err(_) => return Rejection::NotConfigured { what: "WebSocket" }.to_response(),
    };
    if pair.server.accept().is_err() {
        return Rejection::NotConfigured { what: "WebSocket" }.to_response();
    }
    let server = pair.server;
    wasm_bindgen_futures::spawn_local(async move {
        let _place = place;
        session(&server, policies, &who, every).await;
    });
    let mut res = http::Response::new(String::new());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    res.extensions_mut().insert(pair.client);
    res
}

/// A whole-seconds or plain number setting within `range`; unset or invalid: the default (with
/// a warning for an invalid one).
fn number(env: &Env, var: &'static str, default: u64, range: std::ops::RangeInclusive<u64>) -> u64 {
    let Some(text) = setting(env, var) else { return default };
    match text.trim_end_matches('s').parse::<u64>() {
        Ok(n) if range.contains(&n) => n,
        _ => {
            tracing::warn!(outcome = "not_configured", variable = var, "out of range: the default is used");
            default
        }
    }
}

async fn session(socket: &WebSocket, policies: &RoutePolicies, who: &Verified<Principal>, every: Duration) {
    let id = who.principal().id();
    tracing::info!(layer = "storage", outcome = "socket_opened", principal = ?id);
    let Ok(mut events) = socket.events() else {
        let _ = socket.close(Some(1011), Some("events_unavailable"));
        return;
    };
    let expires_ms = who.principal().expires_at().map(|s| s.saturating_mul(1000));
    let mut next_tick = Date::now().as_millis() + every.as_millis() as u64;
    let end = loop {
        let now = Date::now().as_millis();
        let due = expires_ms.map_or(next_tick, |exp| exp.min(next_tick));
        let wait = Delay::from(Duration::from_millis(due.saturating_sub(now)));
        match select(events.next(), wait).await {
            Either::Right(((), _)) => {
                if Date::now().as_millis() >= next_tick {
                    next_tick = Date::now().as_millis() + every.as_millis() as u64;
                }
                if let Err(rejection) = recheck(policies, who).await {
                    break Some(rejection);
                }
            }
            Either::Left((None | Some(Err(_)) | Some(Ok(WebsocketEvent::Close(_))), _)) => break None,
            Either::Left((Some(Ok(WebsocketEvent::Message(message))), _)) => {
                let bytes = match (message.text(), message.bytes()) {
                    (Some(text), _) => text.len(),
                    (None, Some(data)) => data.len(),
                    (None, None) => 0,
                };
                if bytes > MAX_MESSAGE_BYTES {
                    tracing::info!(layer = "storage", outcome = "socket_closed", by = "error", principal = ?id);
                    let _ = socket.close(Some(1009), Some("message_too_large"));
                    return;
                }
                // Every message is acted on with a proof checked now.
                if let Err(rejection) = recheck(policies, who).await {
                    break Some(rejection);
                }
                let reply = json!({ "principal": id, "kind": who.principal().kind(), "bytes": bytes });
                if socket.send_with_str(reply.to_string()).is_err() {
                    break None;
                }
            }
        }
    };
    match end {
        None => tracing::info!(layer = "storage", outcome = "socket_closed", by = "client", principal = ?id),
        Some(rejection) => {
            tracing::info!(layer = "identity", outcome = "socket_closed", code = rejection.code(), close_code = rejection.close_code(), principal = ?id);
            let _ = socket.close(Some(rejection.close_code()), Some(rejection.code()));
        }
    }
}

/// The proof, against the gate the route has now.
async fn recheck(policies: &RoutePolicies, who: &Verified<Principal>) -> Result<(), Rejection> {
    match policies.select(&Method::GET, WS_PATH) {
        Some(gate) => gate.recheck(who).await,
        None => Err(Rejection::NoPolicy),
    }
}
