//! `GET /admin/ws`: a WebSocket that carries its caller's proof for its whole life.
//!
//! - The upgrade is a request like any other: the policies layer answers 401/403 (the same
//!   JSON bodies) before this handler runs, so a refused caller never gets a socket.
//! - An accepted socket answers each text or binary message with
//!   `{"principal": <id>, "kind": <kind>, "bytes": <length>}`, after checking that the proof
//!   still holds ([`Gate::recheck`]).
//! - The proof is also checked every `ZTGATE_WS_RECHECK` (default 10 s) and at the token's
//!   expiry, so an idle socket ends on time: the token expired or a credential was revoked →
//!   close code 4401, the route no longer admits the caller (a reload removed it) → 4403, the
//!   revocation list cannot answer → 1013 (try again later); the close reason is the
//!   rejection's code.
//! - Bounded: at most `ZTGATE_MAX_WEBSOCKETS` sockets at once (beyond: 503 `too_many_sockets`
//!   before the upgrade), messages of at most 16 KiB (larger: the socket is closed with 1009).
//! - At shutdown every socket is closed with 1001 (going away), so clients reconnect to
//!   another instance instead of seeing the connection drop.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use ztgate::{Principal, Rejection, SelectGate, Verified};

use crate::routes::AppState;

/// The socket's path: its policy is looked up again for each check.
pub(crate) const WS_PATH: &str = "/admin/ws";
/// How long a shutdown waits for the sockets' close frames to go out.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// The largest message (and frame) a socket accepts.
const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// The sockets' limits (`ZTGATE_MAX_WEBSOCKETS`, `ZTGATE_WS_RECHECK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SocketLimits {
    /// Sockets open at once.
    pub(crate) max: usize,
    /// How often an open socket's proof is checked again.
    pub(crate) recheck: Duration,
}

/// What the handler shares: the permits, how often to check, and the shutdown signal.
#[derive(Clone)]
pub(crate) struct Sockets {
    permits: Arc<Semaphore>,
    max: usize,
    recheck: Duration,
    /// `true` once the server is shutting down.
    closing: Arc<watch::Sender<bool>>,
}

impl Sockets {
    pub(crate) fn new(limits: SocketLimits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max)),
            max: limits.max,
            recheck: limits.recheck,
            closing: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Closes every open socket with 1001, and any opened from now on.
    pub(crate) fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// Waits until every socket has ended (its permit returned), for at most `within`;
    /// whether they all did.
    pub(crate) async fn drained(&self, within: Duration) -> bool {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        matches!(tokio::time::timeout(within, self.permits.acquire_many(all)).await, Ok(Ok(_)))
    }
}

/// The upgrade: the caller is already proven (the layer ran); a socket is opened only with a
/// permit.
pub(crate) async fn admin_ws(
    State(state): State<AppState>,
    who: Verified<Principal>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Ok(permit) = state.sockets.permits.clone().try_acquire_owned() else {
        let body =
            json!({ "code": "too_many_sockets", "message": "too many WebSockets are open; retry later" });
        let mut res = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return res;
    };
    let recheck = state.sockets.recheck;
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| session(socket, state, who, recheck, permit))
}

/// Why a session ended.
enum End {
    /// The client closed it, or the connection dropped.
    Client,
    /// The proof no longer holds.
    Refused(Rejection),
    /// A message too large, or a protocol error.
    Broken(String),
    /// The server is shutting down.
    GoingAway,
}

async fn session(
    mut socket: WebSocket,
    state: AppState,
    who: Verified<Principal>,
    every: Duration,
    _permit: OwnedSemaphorePermit,
) {
    let id = who.principal().id();
    tracing::info!(target: crate::LOG_TARGET, layer = "storage", outcome = "socket_opened", principal = ?id);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let expiry = tokio::time::sleep(until(who.principal().expires_at()));
    tokio::pin!(expiry);
    let mut closing = state.sockets.closing.subscribe();
    let end = loop {
        tokio::select! {
            // Also true at once for a socket opened after the shutdown began.
            () = shutting_down(&mut closing) => break End::GoingAway,
            _ = ticks.tick() => {
                if let Err(rejection) = recheck(&state, &who).await {
                    break End::Refused(rejection);
                }
            }
            () = &mut expiry => {
                // The proof's end: the check below refuses (token_expired), unless the clock
                // disagrees by a hair, in which case the next tick does.
                if let Err(rejection) = recheck(&state, &who).await {
                    break End::Refused(rejection);
                }
                expiry.as_mut().reset(tokio::time::Instant::now() + every);
            }
            message = socket.recv() => match message {
                None | Some(Ok(Message::Close(_))) => break End::Client,
                Some(Err(e)) => break End::Broken(e.to_string()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(message)) => {
                    // Every message is acted on with a proof checked now.
                    if let Err(rejection) = recheck(&state, &who).await {
                        break End::Refused(rejection);
                    }
                    let bytes = match &message {
                        Message::Text(text) => text.len(),
                        Message::Binary(data) => data.len(),
                        _ => 0,
                    };
                    let reply = json!({ "principal": id, "kind": who.principal().kind(), "bytes": bytes });
                    if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                        break End::Client;
                    }
                }
            }
        }
    };
    match end {
        End::Client => {
            tracing::info!(target: crate::LOG_TARGET, layer = "storage", outcome = "socket_closed", by = "client", principal = ?id);
        }
        End::Refused(rejection) => {
            tracing::info!(target: crate::LOG_TARGET, layer = "identity", outcome = "socket_closed", code = rejection.code(), close_code = rejection.close_code(), principal = ?id);
            let frame = CloseFrame { code: rejection.close_code(), reason: rejection.code().into() };
            let _ = socket.send(Message::Close(Some(frame))).await;
        }
        End::GoingAway => {
            tracing::info!(target: crate::LOG_TARGET, layer = "storage", outcome = "socket_closed", by = "shutdown", principal = ?id);
            let frame = CloseFrame { code: 1001, reason: "going_away".into() };
            let _ = socket.send(Message::Close(Some(frame))).await;
        }
        End::Broken(error) => {
            tracing::info!(target: crate::LOG_TARGET, layer = "storage", outcome = "socket_closed", by = "error", error = ?error, principal = ?id);
            let frame = CloseFrame { code: 1009, reason: "message_too_large_or_malformed".into() };
            let _ = socket.send(Message::Close(Some(frame))).await;
        }
    }
}

/// Completes once the server is shutting down.
async fn shutting_down(closing: &mut watch::Receiver<bool>) {
    // The sender lives in the state this socket holds: an error cannot happen; if it did,
    // nothing would ever say "closing".
    if closing.wait_for(|closing| *closing).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The proof, checked against the gate the route has now (a reload may have replaced it).
async fn recheck(state: &AppState, who: &Verified<Principal>) -> Result<(), Rejection> {
    match state.reloader.policies().select(&Method::GET, WS_PATH) {
        Some(gate) => gate.recheck(who).await,
        None => Err(Rejection::NoPolicy),
    }
}

/// How long until `expires_at` (Unix seconds); a day when the credential does not expire (the
/// ticks check it meanwhile).
fn until(expires_at: Option<u64>) -> Duration {
    const FAR: Duration = Duration::from_secs(86_400);
    let Some(exp) = expires_at else { return FAR };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Duration::from_secs(exp).saturating_sub(now).min(FAR)
}
