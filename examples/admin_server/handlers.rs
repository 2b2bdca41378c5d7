//! The handlers: each takes its caller's proof (a [`Verified<Principal>`] the policies layer
//! made, or for the webhook the raw delivery it verifies itself) and answers JSON, errors
//! included ([`ApiError`]).

use std::pin::Pin;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, HttpBody as _};
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use ztgate::clock::unix_now;
use ztgate::identity::hmac_token::MintError;
use ztgate::identity::shared_state::{Revocation, RevocationKind};
use ztgate::identity::webhook::{append_capped, check_content_length};
use ztgate::storage::Actor;
use ztgate::{Principal, Rejection, Verified};

use crate::LOG_TARGET;
use crate::routes::{AppState, UNSUBSCRIBE};
use crate::store::{Note, StorageError};

const MAX_NOTE_BYTES: usize = 4096;
const MAX_EMAIL_BYTES: usize = 254;
const MAX_LINK_TTL_SECS: u64 = 30 * 86_400;

pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such route")
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

pub(crate) async fn whoami(who: Verified<Principal>) -> Json<Value> {
    Json(match who.principal() {
        // Groups when the gate fetched the user's Access identity (a group rule needed it).
        Principal::User(user) => match &user.identity {
            Some(identity) => {
                let groups: Vec<&str> =
                    identity.groups.iter().filter_map(|g| g.name.as_deref().or(g.id.as_deref())).collect();
                json!({ "kind": "user", "email": user.email, "groups": groups })
            }
            None => json!({ "kind": "user", "email": user.email }),
        },
        Principal::Service(service) => json!({ "kind": "service", "common_name": service.common_name }),
        other => json!({ "kind": other.kind(), "id": other.id() }),
    })
}

#[derive(Deserialize)]
pub(crate) struct NewNote {
    text: Option<String>,
}

pub(crate) async fn create_note(
    State(app): State<AppState>,
    who: Verified<Principal>,
    body: Result<Json<NewNote>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(note) = body.map_err(|e| ApiError::Body(e, "invalid_note"))?;
    let text = validate_note(note.text)?;
    let id = app.store.create_note(&Actor::from(&who), text).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

pub(crate) async fn list_notes(
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
pub(crate) async fn delete_note(
    State(app): State<AppState>,
    who: Verified<Principal>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    // The route policy requires both; refuse rather than trust a wiring change silently.
    if !(who.proved_by("access_jwt") && who.proved_by("api_key")) {
        tracing::error!(target: LOG_TARGET, layer = "storage", outcome = "refused", principal = ?who.id(), "delete without both proofs");
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
pub(crate) struct NewLink {
    email: Option<String>,
    ttl_secs: Option<u64>,
}

/// Mints an unsubscribe link token for `email`, valid for `ttl_secs` (1 s to 30 days).
pub(crate) async fn mint_unsubscribe_link(
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
    // The current ring (re-read once per TTL when it comes from a file); logged by the source.
    let ring =
        app.live.get().ring.ring().await.map_err(|_| Rejection::NotConfigured { what: "HMAC key ring" })?;
    let now = unix_now();
    let token = ring.mint(UNSUBSCRIBE, &email, now, Duration::from_secs(ttl)).map_err(|e| match e {
        // The subject is the client's: a line break in it is refused, never signed.
        MintError::ControlCharacterInSubject => {
            invalid("`email` must not contain control characters or line breaks")
        }
        other => {
            tracing::error!(target: LOG_TARGET, layer = "identity", outcome = "mint_failed", principal = ?who.id(), error = ?other.to_string());
            ApiError::Internal
        }
    })?;
    // The token is a credential: logged never, only who asked for it and until when.
    tracing::info!(target: LOG_TARGET, layer = "identity", outcome = "unsubscribe_link_minted", principal = ?who.id(), expires_at = now + ttl);
    Ok(Json(json!({ "token": token, "expires_at": now + ttl })))
}

/// The form field and value of an RFC 8058 one-click unsubscribe (the `List-Unsubscribe-Post`
/// header of the mail says to send exactly this).
const ONE_CLICK_FIELD: &str = "List-Unsubscribe";
const ONE_CLICK_VALUE: &str = "One-Click";
/// Largest one-click body read: the real one is 26 bytes urlencoded, ~150 as multipart.
const MAX_ONE_CLICK_BODY: usize = 1024;
/// Longest multipart boundary (RFC 2046 §5.1.1).
const MAX_BOUNDARY: usize = 70;

/// The subscriber an unsubscribe link names: the gate verified its token, for this purpose.
fn link_subscriber(who: &Verified<Principal>) -> Result<String, ApiError> {
    match who.principal() {
        Principal::SignedToken(t) if t.purpose == UNSUBSCRIBE => Ok(t.subject.clone()),
        _ => Err(Rejection::Forbidden.into()),
    }
}

/// `GET` of an unsubscribe link: says what a POST would do and changes nothing, so a mail
/// scanner or link preview that fetches the link unsubscribes nobody (RFC 8058 §1). A browser
/// (`Accept: text/html`) gets a page whose form sends the one-click POST; anything else JSON.
pub(crate) async fn unsubscribe_preview(
    who: Verified<Principal>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let email = link_subscriber(&who)?;
    if wants_html(&headers) {
        // `<form method="post">` without an action posts to this very URL, token included, so
        // the page never repeats the token.
        let page = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head>\n\
             <body><p>Unsubscribe <strong>{}</strong> from these emails?</p>\n\
             <form method=\"post\"><input type=\"hidden\" name=\"{ONE_CLICK_FIELD}\" value=\"{ONE_CLICK_VALUE}\">\
             <button type=\"submit\">Unsubscribe</button></form></body></html>\n",
            escape_html(&email)
        );
        return Ok(html(page));
    }
    Ok(no_store(Json(json!({
        "email": email,
        "unsubscribed": false,
        "confirm": {
            "method": "POST",
            "content_type": "application/x-www-form-urlencoded",
            "body": format!("{ONE_CLICK_FIELD}={ONE_CLICK_VALUE}"),
        },
    }))))
}

/// `POST` of an unsubscribe link with the RFC 8058 one-click body (`List-Unsubscribe=One-Click`,
/// as `application/x-www-form-urlencoded` or `multipart/form-data`; the confirm page's form
/// sends the same): records the unsubscribe (once). Any other body is 400 and changes nothing.
pub(crate) async fn unsubscribe(
    State(app): State<AppState>,
    who: Verified<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let email = link_subscriber(&who)?;
    check_content_length(&headers, MAX_ONE_CLICK_BODY)?;
    let body = read_capped(body, MAX_ONE_CLICK_BODY).await?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if !is_one_click(content_type, &body) {
        return Err(ApiError::invalid(
            "one_click_required",
            "POST the form body List-Unsubscribe=One-Click (RFC 8058) to unsubscribe",
        ));
    }
    app.store.unsubscribe(&Actor::from(&who), email.clone()).await?;
    if wants_html(&headers) {
        return Ok(html(format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Unsubscribed</title></head>\n\
             <body><p><strong>{}</strong> is unsubscribed.</p></body></html>\n",
            escape_html(&email)
        )));
    }
    Ok(no_store(Json(json!({ "email": email, "unsubscribed": true }))))
}

/// Whether the client asked for a page (a browser following the link by hand).
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| range.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("text/html")))
}

/// A page that names a subscriber: never cached, never sent on as a referrer (the URL holds the
/// token), runs no script, posts only back here.
fn html(page: String) -> Response {
    let mut response = no_store(page);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; form-action 'self'; frame-ancestors 'none'"),
    );
    response
}

fn no_store(body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    response
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether `body` is exactly the one-click form: the single field `List-Unsubscribe` with value
/// `One-Click`, urlencoded or as one multipart part. Nothing else is read as consent.
fn is_one_click(content_type: Option<&str>, body: &[u8]) -> bool {
    let Some(content_type) = content_type else { return false };
    let mut params = content_type.split(';').map(str::trim);
    let essence = params.next().unwrap_or_default();
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return std::str::from_utf8(body).is_ok_and(|text| urlencoded_one_click(text.trim_ascii_end()));
    }
    if essence.eq_ignore_ascii_case("multipart/form-data") {
        let boundary = params.find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim().eq_ignore_ascii_case("boundary").then(|| unquote(value.trim()))
        });
        return boundary.is_some_and(|b| multipart_one_click(body, b));
    }
    false
}

/// `List-Unsubscribe=One-Click`, possibly percent-encoded, and no other pair.
fn urlencoded_one_click(text: &str) -> bool {
    let mut pairs = text.split('&').filter(|p| !p.is_empty()).peekable();
    pairs.peek().is_some()
        && pairs.all(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            form_decode(name).as_deref() == Some(ONE_CLICK_FIELD)
                && form_decode(value).as_deref() == Some(ONE_CLICK_VALUE)
        })
}

/// One part, `Content-Disposition: form-data; name="List-Unsubscribe"`, body `One-Click`
/// (RFC 7578), between the opening and the closing delimiter.
fn multipart_one_click(body: &[u8], boundary: &str) -> bool {
    if boundary.is_empty() || boundary.len() > MAX_BOUNDARY {
        return false;
    }
    let Ok(text) = std::str::from_utf8(body) else { return false };
    let delimiter = format!("--{boundary}");
    let Some(rest) = text.strip_prefix(delimiter.as_str()).and_then(|r| r.strip_prefix("\r\n")) else {
        return false;
    };
    let Some((part, epilogue)) = rest.split_once(&format!("\r\n{delimiter}--")) else { return false };
    if !epilogue.trim_ascii().is_empty() || part.contains(delimiter.as_str()) {
        return false;
    }
    let Some((head, value)) = part.split_once("\r\n\r\n") else { return false };
    let mut dispositions = 0;
    for line in head.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else { return false };
        if name.trim().eq_ignore_ascii_case("content-disposition") {
            let mut params = value.split(';').map(str::trim);
            let form_data = params.next().is_some_and(|d| d.eq_ignore_ascii_case("form-data"));
            let names: Vec<&str> = params
                .filter_map(|p| p.split_once('=').filter(|(k, _)| k.trim().eq_ignore_ascii_case("name")))
                .map(|(_, v)| unquote(v.trim()))
                .collect();
            if !form_data || names != [ONE_CLICK_FIELD] {
                return false;
            }
            dispositions += 1;
        }
    }
    dispositions == 1 && value == ONE_CLICK_VALUE
}

fn unquote(value: &str) -> &str {
    value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value)
}

/// `application/x-www-form-urlencoded` decoding of one name or value; `None` when an escape is
/// broken or the bytes are not UTF-8 (then it is not the one-click form).
fn form_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

pub(crate) async fn ops_stats(
    State(app): State<AppState>,
    who: Verified<Principal>,
) -> Result<Json<Value>, ApiError> {
    let Principal::ApiKey(key) = who.principal() else { return Err(Rejection::Forbidden.into()) };
    let stats = app.store.stats(&Actor::from(&who)).await?;
    Ok(Json(json!({
        "key": key.name,
        "notes": stats.notes,
        "unsubscribes": stats.unsubscribes,
        "subscribers": stats.subscribers,
        "webhooks": stats.webhooks,
    })))
}

/// `GET /metrics`: the Prometheus text exposition of every series the process records (ztgate's
/// are listed in `ztgate::metrics`). Behind an API key: the counts by code tell an attacker
/// which refusals they are causing.
pub(crate) async fn metrics_text(
    State(app): State<AppState>,
    who: Verified<Principal>,
) -> Result<Response, ApiError> {
    let Principal::ApiKey(_) = who.principal() else { return Err(Rejection::Forbidden.into()) };
    let body = app.metrics.render();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response())
}

pub(crate) async fn mtls_whoami(who: Verified<Principal>) -> Result<Json<Value>, ApiError> {
    let Principal::ClientCert(cert) = who.principal() else { return Err(Rejection::Forbidden.into()) };
    Ok(Json(json!({
        "fingerprint": cert.fingerprint_sha256,
        "subject_dn": cert.subject_dn,
        "issuer_dn": cert.issuer_dn,
    })))
}

/// A Svix delivery. The gate let it through (public); the signature, timestamp and replay
/// checks happen here, over the raw body, before anything is stored.
pub(crate) async fn inbound_webhook(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let live = app.live.get();
    let Some(verifier) = &live.webhooks else {
        return Err(Rejection::NotConfigured { what: "webhook secret" }.into());
    };
    let limit = verifier.max_body_bytes();
    check_content_length(&headers, limit)?;
    let body = read_capped(body, limit).await?;
    let message = verifier.verify(&headers, &body, unix_now()).await?;
    app.store.record_webhook(&message, body.len()).await?;
    Ok(Json(json!({ "id": message.id() })))
}

/// Reads the configuration again and swaps it in (see `reload.rs`): 200 with what changed, or
/// 422 `config_invalid` with why, the running configuration untouched.
pub(crate) async fn reload_config(
    State(app): State<AppState>,
    who: Verified<Principal>,
) -> Result<Json<Value>, ApiError> {
    tracing::info!(target: LOG_TARGET, layer = "storage", outcome = "reload_requested", principal = ?who.id());
    match app.reloader.reload("http").await {
        Ok(done) => Ok(Json(json!({
            "reloaded": true,
            "routes": done.routes,
            "kept_key_cache": done.kept_key_cache,
            "needs_restart": done.needs_restart,
        }))),
        Err(why) => Err(ApiError::ConfigInvalid(why)),
    }
}

#[derive(Deserialize)]
pub(crate) struct NewSubscriber {
    email: Option<String>,
    turnstile: Option<String>,
}

/// How long the unsubscribe link minted for a new subscriber lives (a year: it goes into
/// every newsletter).
const SUBSCRIBER_LINK_TTL: Duration = Duration::from_secs(365 * 86_400);

/// `POST /api/subscribe` `{"email": .., "turnstile": ..}`: a public form behind a human check.
/// The Turnstile token is verified with Cloudflare before anything is stored (401 when it is
/// not a human's, 503 when siteverify cannot say), the subscriber is stored, and their
/// unsubscribe link token is minted (201).
pub(crate) async fn subscribe(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<NewSubscriber>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(turnstile) = &app.turnstile else {
        return Err(Rejection::NotConfigured { what: "Turnstile secret key" }.into());
    };
    let Json(new) = body.map_err(|e| ApiError::Body(e, "invalid_request"))?;
    let invalid = |why: &str| ApiError::invalid("invalid_request", why);
    let email = match new.email {
        None => return Err(invalid("`email` is required")),
        Some(e) if !e.contains('@') || e.bytes().any(|b| b.is_ascii_control()) => {
            return Err(invalid("`email` is not an email address"));
        }
        Some(e) if e.len() > MAX_EMAIL_BYTES => return Err(invalid("`email` is longer than 254 bytes")),
        Some(e) => e.to_ascii_lowercase(),
    };
    let token = new.turnstile.unwrap_or_default();
    // Cloudflare's view of the client's address, when the request came through it.
    let remote_ip =
        headers.get("cf-connecting-ip").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let human = turnstile.verify(&token, remote_ip).await.map_err(Rejection::from)?;
    let first = app.store.add_subscriber(&human, email.clone()).await?;
    let ring =
        app.live.get().ring.ring().await.map_err(|_| Rejection::NotConfigured { what: "HMAC key ring" })?;
    let link = ring.mint(UNSUBSCRIBE, &email, unix_now(), SUBSCRIBER_LINK_TTL).map_err(|e| {
        tracing::error!(target: LOG_TARGET, layer = "identity", outcome = "mint_failed", error = ?e.to_string());
        ApiError::Internal
    })?;
    let status = if first { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({ "subscribed": email, "unsubscribe_token": link }))))
}

#[derive(Deserialize)]
pub(crate) struct NewRevocation {
    kind: Option<String>,
    id: Option<String>,
}

/// `POST /admin/revocations` `{"kind": "api_key"|"hmac_token"|"access_sub"|"cert", "id": ..}`: the
/// credential is refused by every gate from the next request on (201), on every instance that
/// shares the list.
pub(crate) async fn revoke(
    State(app): State<AppState>,
    who: Verified<Principal>,
    body: Result<Json<NewRevocation>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(new) = body.map_err(|e| ApiError::Body(e, "invalid_revocation"))?;
    let invalid = |why: &str| ApiError::invalid("invalid_revocation", why);
    let kind = new.kind.as_deref().ok_or_else(|| invalid("`kind` is required"))?;
    let kind = RevocationKind::from_name(kind)
        .ok_or_else(|| invalid("`kind` is one of api_key, hmac_token, access_sub, cert"))?;
    let id = new.id.ok_or_else(|| invalid("`id` is required"))?;
    let revocation = Revocation::new(kind, id).map_err(|e| invalid(&e.to_string()))?;
    app.revocations.revoke(&revocation).await.map_err(|e| {
        tracing::error!(target: LOG_TARGET, layer = "storage", outcome = "revoke_failed", error = ?e.to_string());
        ApiError::Rejected(Rejection::StateUnavailable { what: "revocation list" })
    })?;
    tracing::warn!(target: LOG_TARGET, layer = "storage", outcome = "revoked", principal = ?who.id(), kind = kind.name(), id = ?revocation.id());
    let body = json!({ "revoked": { "kind": kind.name(), "id": revocation.id() } });
    Ok((StatusCode::CREATED, Json(body)))
}

/// `GET /admin/revocations`: every revocation, sorted.
pub(crate) async fn list_revocations(
    State(app): State<AppState>,
    _who: Verified<Principal>,
) -> Result<Json<Value>, ApiError> {
    let all = app.revocations.list().await.map_err(|e| {
        tracing::error!(target: LOG_TARGET, layer = "storage", outcome = "revocations_unavailable", error = ?e.to_string());
        ApiError::Rejected(Rejection::StateUnavailable { what: "revocation list" })
    })?;
    let list: Vec<Value> = all.iter().map(|r| json!({ "kind": r.kind().name(), "id": r.id() })).collect();
    Ok(Json(json!({ "revocations": list })))
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
pub(crate) enum ApiError {
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
    /// A reload refused: the configuration's error (never a secret).
    ConfigInvalid(String),
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
            Self::ConfigInvalid(why) => (StatusCode::UNPROCESSABLE_ENTITY, "config_invalid", why),
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
