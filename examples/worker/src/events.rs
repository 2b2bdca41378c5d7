//! The event sources without a browser behind them, each with its own identity:
//!
//! - **RPC** (`record_note`, a method of the Worker's entrypoint, callable only through a
//!   service binding): the caller passes a credential, proven by the same route table and
//!   pipeline as HTTP ([`ztgate::workers::check_rpc`], route `RPC /rpc/record_note`) before
//!   storage is asked;
//! - **cron** (`#[event(scheduled)]`): the platform itself, [`Principal::Scheduled`], proven by
//!   the runtime's event object ([`ztgate::workers::scheduled`]);
//! - **queue** (`#[event(queue)]`): each message is a signed envelope
//!   ([`ztgate::identity::envelope`]) opened before its body reaches storage. A message that
//!   fails is acknowledged (it can never verify: retrying it would only repeat the refusal),
//!   logged with the reason's code and counted; a verified message whose storage step fails is
//!   retried.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};
use wasm_bindgen::prelude::wasm_bindgen;
use worker::js_sys;
use worker::{Context, Env, MessageBatch, MessageExt, Request, ScheduleContext, ScheduledEvent, event};
use ztgate::clock::{Clock, SystemClock};
use ztgate::identity::envelope::{EnvelopeVerifier, MAX_ENVELOPE_BYTES, sign_envelope};
use ztgate::identity::hmac_token::KeyRing;
use ztgate::workers::{DurableState, RpcCredential};
use ztgate::{Principal, Rejection, Verified};

use crate::store::{self, QueueMessage, Store, StoreError};
use crate::{STATE_BINDING, json_response, read_capped, setting};

/// The key ring queue envelopes are signed with (`kid:secret,...`, the signing key first).
const QUEUE_KEYS: &str = "ZTGATE_QUEUE_KEYS";
/// The queue producer binding (`wrangler.toml`).
const QUEUE_BINDING: &str = "ZTGATE_QUEUE";
/// The name of the queue `ZTGATE_QUEUE` sends to (`ZTGATE_QUEUE_NAME`, default this).
const DEFAULT_QUEUE_NAME: &str = "ztgate-events";
/// How long a signed message stays valid: longer than the queue's retries take.
const MESSAGE_TTL: Duration = Duration::from_secs(3600);
/// The longest RPC credential read, in UTF-16 units, before it is copied out of JS (the gate's
/// own limits then apply to it).
const MAX_RPC_CREDENTIAL_UNITS: u32 = 16 * 1024;

// --- RPC ------------------------------------------------------------------------------------

/// An RPC method's answer before it becomes a JS object: the HTTP status it stands for, and
/// the JSON members beside it.
type Answer = (StatusCode, Value);

#[wasm_bindgen(module = "cloudflare:workers")]
extern "C" {
    /// The Worker's bindings, as `import { env } from "cloudflare:workers"`: an RPC method is
    /// called without the `env` a handler receives.
    #[wasm_bindgen(thread_local_v2, js_name = env)]
    static WORKER_ENV: Env;
}

/// RPC method `record_note(credential, note)`, called by another Worker through a service
/// binding (`env.ZTGATE.record_note({ signed_token }, "text")`); HTTP has no route to it.
///
/// `credential` is `{ signed_token: "<HMAC token, purpose rpc:record_note>" }` or
/// `{ access_jwt: "<Access service token JWT>" }`. Answers an object, never throws:
/// `{ status: 201, notes, by }`, or `{ status, code, message }` with the HTTP routes' codes
/// (401 `missing_credential` / `invalid_credential` / `invalid_token`, 403 `forbidden` when
/// storage does not take this principal, 503 when it cannot answer).
#[wasm_bindgen]
pub async fn record_note(
    credential: wasm_bindgen::JsValue,
    note: wasm_bindgen::JsValue,
) -> wasm_bindgen::JsValue {
    let env = WORKER_ENV.with(Env::clone);
    crate::init_logging(&env);
    let (status, body) = rpc_record_note(&env, &credential, &note).await;
    let mut answer = json!({ "status": status.as_u16() });
    if let (Value::Object(answer), Value::Object(body)) = (&mut answer, body) {
        answer.extend(body);
    }
    js_sys::JSON::parse(&answer.to_string()).unwrap_or(wasm_bindgen::JsValue::NULL)
}

async fn rpc_record_note(
    env: &Env,
    credential: &wasm_bindgen::JsValue,
    note: &wasm_bindgen::JsValue,
) -> Answer {
    let app = match crate::app_for(env) {
        Ok(app) => app,
        Err(misconfigured) => return misconfigured,
    };
    let credential = match rpc_credential(credential) {
        Ok(credential) => credential,
        Err(answer) => return answer,
    };
    let credential = credential.as_ref().map(|(kind, value)| match kind {
        CredentialKind::SignedToken => RpcCredential::SignedToken(value),
        CredentialKind::AccessJwt => RpcCredential::AccessJwt(value),
    });
    // Identity first: the note is not even read before the caller is proven.
    let who = match ztgate::workers::check_rpc(&app.policies, "record_note", credential).await {
        Ok(who) => who,
        Err(rejection) => return rejected(&rejection),
    };
    let Some(note) = bounded_string(note, store::MAX_TEXT_BYTES as u32) else {
        return (
            StatusCode::BAD_REQUEST,
            json!({ "code": "invalid_note", "message": "a note is a string of at most 1024 bytes" }),
        );
    };
    let stored = match Store::new(env) {
        Ok(store) => store::record_note(&store, &who, &note).await,
        Err(e) => Err(e),
    };
    match stored {
        Ok(notes) => {
            tracing::info!(layer = "storage", outcome = "note_recorded", principal = ?who.id());
            (StatusCode::CREATED, json!({ "notes": notes, "by": who.id() }))
        }
        Err(e) => store_refused(&who, e),
    }
}

enum CredentialKind {
    SignedToken,
    AccessJwt,
}

/// `{ signed_token }` or `{ access_jwt }`: exactly one, a string of bounded length. Neither is
/// "no credential" (the gate answers 401 `missing_credential`); both is refused, never guessed.
fn rpc_credential(value: &wasm_bindgen::JsValue) -> Result<Option<(CredentialKind, String)>, Answer> {
    if !value.is_object() {
        return Ok(None);
    }
    let field = |name: &str| js_sys::Reflect::get(value, &name.into()).ok().filter(|v| !v.is_undefined());
    let invalid = |message: &'static str| {
        // Refused before the pipeline, so logged here (the argument's shape only).
        tracing::info!(layer = "request", outcome = "refused", via = "rpc", reason = message);
        (StatusCode::UNAUTHORIZED, json!({ "code": "invalid_credential", "message": message }))
    };
    match (field("signed_token"), field("access_jwt")) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(invalid("one credential: signed_token or access_jwt, not both")),
        (Some(token), None) => bounded_string(&token, MAX_RPC_CREDENTIAL_UNITS)
            .map(|t| Some((CredentialKind::SignedToken, t)))
            .ok_or_else(|| invalid("signed_token is not a string of bounded length")),
        (None, Some(jwt)) => bounded_string(&jwt, MAX_RPC_CREDENTIAL_UNITS)
            .map(|t| Some((CredentialKind::AccessJwt, t)))
            .ok_or_else(|| invalid("access_jwt is not a string of bounded length")),
    }
}

/// A JS string of at most `max` UTF-16 units (so at least as many UTF-8 bytes), measured
/// before it is copied into Rust; `max` bytes of UTF-8 after.
fn bounded_string(value: &wasm_bindgen::JsValue, max: u32) -> Option<String> {
    let text = wasm_bindgen::JsCast::dyn_ref::<js_sys::JsString>(value)?;
    if text.length() > max {
        return None;
    }
    let text = String::from(text);
    (text.len() <= max as usize).then_some(text)
}

fn rejected(rejection: &Rejection) -> Answer {
    (rejection.status(), json!({ "code": rejection.code(), "message": rejection.to_string() }))
}

fn store_refused(who: &Verified<Principal>, e: StoreError) -> Answer {
    match e {
        StoreError::Refused(why) => {
            tracing::warn!(layer = "storage", outcome = "refused", principal = ?who.id(), reason = why);
            (StatusCode::FORBIDDEN, json!({ "code": "forbidden", "message": why }))
        }
        StoreError::Unavailable(why) => {
            tracing::error!(layer = "storage", outcome = "unavailable", error = ?why);
            rejected(&Rejection::StateUnavailable { what: "store" })
        }
    }
}

// --- cron -------------------------------------------------------------------------------------

/// A cron trigger: the platform is the caller. Its `Verified` comes from the event alone, and
/// is the only one [`store::record_maintenance`] accepts.
#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    crate::init_logging(&env);
    // Refused (and logged) when the cron string is not one.
    let Ok(platform) = ztgate::workers::scheduled(&event) else { return };
    let recorded = match Store::new(&env) {
        Ok(store) => store::record_maintenance(&store, &platform).await,
        Err(e) => Err(e),
    };
    match recorded {
        Ok(runs) => {
            tracing::info!(layer = "storage", outcome = "maintenance_recorded", principal = ?platform.id(), runs)
        }
        Err(e) => {
            tracing::error!(layer = "storage", outcome = "maintenance_failed", error = ?format!("{e:?}"))
        }
    }
}

/// `POST /admin/maintenance`: an admin asks to record a maintenance run over HTTP. Storage
/// refuses (403): only the cron trigger's principal may, and no request is ever one.
pub async fn maintenance_over_http(env: &Env, who: &Verified<Principal>) -> http::Response<String> {
    let recorded = match Store::new(env) {
        Ok(store) => store::record_maintenance(&store, who).await,
        Err(e) => Err(e),
    };
    match recorded {
        Ok(runs) => json_response(StatusCode::CREATED, json!({ "runs": runs })),
        Err(e) => {
            let (status, body) = store_refused(who, e);
            json_response(status, body)
        }
    }
}

/// `GET /admin/events`: what the three event sources stored, and the queue's refusals.
pub async fn events_summary(env: &Env, who: &Verified<Principal>) -> http::Response<String> {
    let summary = match Store::new(env) {
        Ok(store) => store::summary(&store, who).await,
        Err(e) => Err(e),
    };
    match summary {
        Ok(summary) => json_response(StatusCode::OK, summary),
        Err(e) => {
            let (status, body) = store_refused(who, e);
            json_response(status, body)
        }
    }
}

// --- queue ------------------------------------------------------------------------------------

fn queue_ring(env: &Env) -> Result<Arc<KeyRing>, String> {
    let spec = setting(env, QUEUE_KEYS).ok_or_else(|| format!("{QUEUE_KEYS} is not set"))?;
    KeyRing::parse(&spec).map(Arc::new).map_err(|e| e.to_string())
}

/// `POST /admin/queue/send` (admins): signs the request body (the message, e.g.
/// `{"kind":"note","text":"..."}`) into an envelope for the queue and sends it (202).
/// `POST /admin/queue/send-raw` (admins): sends the request body as it is, signed or not: what
/// a sender with write access to the queue, but not the key, can do, for tests.
pub async fn send(
    req: &mut Request,
    env: &Env,
    who: &Verified<Principal>,
    raw: bool,
) -> http::Response<String> {
    let body = match read_capped(req, MAX_ENVELOPE_BYTES).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(body) = String::from_utf8(body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({ "code": "invalid_body", "message": "the body is not UTF-8" }),
        );
    };
    let message = if raw {
        body
    } else {
        let ring = match queue_ring(env) {
            Ok(ring) => ring,
            Err(_) => return Rejection::NotConfigured { what: "queue key ring" }.to_response(),
        };
        let queue = setting(env, "ZTGATE_QUEUE_NAME").unwrap_or_else(|| DEFAULT_QUEUE_NAME.to_owned());
        match sign_envelope(&ring, &queue, &body, SystemClock.now(), MESSAGE_TTL) {
            Ok(envelope) => envelope,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({ "code": "not_signed", "message": e.to_string() }),
                );
            }
        }
    };
    let sent = match env.queue(QUEUE_BINDING) {
        Ok(queue) => {
            let text = worker::RawMessageBuilder::new(wasm_bindgen::JsValue::from_str(&message))
                .build_with_content_type(worker::QueueContentType::Text);
            queue.send_raw(text).await
        }
        Err(e) => Err(e),
    };
    match sent {
        Ok(()) => {
            tracing::info!(layer = "storage", outcome = "queued", principal = ?who.id(), signed_here = !raw, bytes = message.len());
            json_response(StatusCode::ACCEPTED, json!({ "queued": true }))
        }
        Err(e) => {
            tracing::error!(layer = "storage", outcome = "queue_send_failed", error = ?e.to_string());
            Rejection::StateUnavailable { what: "queue" }.to_response()
        }
    }
}

/// Each message: open the envelope, then store. Nothing here returns an error (that would
/// retry the whole batch, refused messages included): every message is acknowledged or
/// retried on its own.
#[event(queue)]
async fn queue(batch: MessageBatch<Value>, env: Env, _ctx: Context) -> worker::Result<()> {
    crate::init_logging(&env);
    let queue = batch.queue();
    let setup = (|| {
        let ring = queue_ring(&env)?;
        let state = DurableState::new(&env, STATE_BINDING).map_err(|e| e.to_string())?;
        let verifier = EnvelopeVerifier::new(ring, &queue, Arc::new(state.envelope_claims()))
            .map_err(|e| e.to_string())?;
        let store = Store::new(&env).map_err(|e| format!("{e:?}"))?;
        Ok::<_, String>((verifier, store))
    })();
    let (verifier, store) = match setup {
        Ok(setup) => setup,
        Err(why) => {
            // Not the messages' fault: they wait in the queue until the Worker is configured.
            tracing::error!(layer = "identity", outcome = "not_configured", queue = ?queue, error = ?why);
            batch.retry_all();
            return Ok(());
        }
    };
    for message in batch.raw_iter() {
        consume(&verifier, &store, &queue, &message).await;
    }
    Ok(())
}

async fn consume(verifier: &EnvelopeVerifier, store: &Store, queue: &str, message: &worker::RawMessage) {
    let delivery = message.id();
    // Measured before it is copied out of JS: UTF-8 is never shorter than UTF-16 units.
    let envelope = match wasm_bindgen::JsCast::dyn_ref::<js_sys::JsString>(&message.body()) {
        Some(text) if text.length() as usize > MAX_ENVELOPE_BYTES => Err("too_large"),
        Some(text) => Ok(String::from(text)),
        None => Err("malformed"),
    };
    let opened = match envelope {
        Ok(text) => verifier
            .verify(&text, &delivery, SystemClock.now())
            .await
            .map_err(|e| (e.code(), e.is_permanent())),
        Err(code) => Err((code, true)),
    };
    let opened = match opened {
        Ok(opened) => opened,
        Err((code, true)) => return reject(store, message, &delivery, code).await,
        Err((code, false)) => {
            tracing::warn!(layer = "identity", outcome = "retry", via = "queue", queue = ?queue, delivery = ?delivery, code);
            return message.retry();
        }
    };
    let Some(parsed) = QueueMessage::parse(opened.body()) else {
        return reject(store, message, &delivery, "invalid_payload").await;
    };
    match store::record_message(store, opened.principal(), queue, opened.id(), &parsed).await {
        Ok(stored) => {
            tracing::info!(
                layer = "storage",
                outcome = if stored { "stored" } else { "already_stored" },
                principal = ?opened.principal().id(),
                delivery = ?delivery,
            );
            message.ack();
        }
        Err(e) => {
            // Verified, and the failure is storage's: the same message again later.
            tracing::warn!(layer = "storage", outcome = "retry", delivery = ?delivery, error = ?format!("{e:?}"));
            message.retry();
        }
    }
}

/// A message that can never be stored: acknowledged (never retried), logged with its code and
/// the queue's id for it (never its text), and counted.
async fn reject(store: &Store, message: &worker::RawMessage, delivery: &str, code: &'static str) {
    message.ack();
    tracing::warn!(layer = "identity", outcome = "rejected", via = "queue", delivery = ?delivery, code);
    if let Err(e) = store::count_rejected(store, code).await {
        tracing::error!(layer = "storage", outcome = "count_failed", code, error = ?format!("{e:?}"));
    }
}
