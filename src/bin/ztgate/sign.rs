//! `ztgate mint-link` and `ztgate sign-webhook`: what a sender produces, to test receivers.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use ztgate::clock::SystemClock;
use ztgate::identity::hmac_token::{KeyRing, TokenId};

use crate::{Failure, Report, Scheme, check, input};

/// Where `mint-link` reads the key ring.
pub(crate) enum Keys<'a> {
    /// This environment variable.
    Env(&'a str),
    /// This configuration file's `[hmac_keys].secret` reference.
    Config(&'a Path),
}

pub(crate) fn mint_link(
    purpose: &str,
    subject: &str,
    ttl: std::time::Duration,
    keys: Keys<'_>,
) -> Result<Report, Failure> {
    let ring = match keys {
        Keys::Env(var) => {
            Arc::new(KeyRing::parse(&input::env(var)?).map_err(|e| Failure(format!("{var}: {e}")))?)
        }
        Keys::Config(path) => {
            let file = check::load(path)?;
            let section = file
                .hmac_keys
                .ok_or_else(|| Failure(format!("{}: no [hmac_keys] section", path.display())))?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime
                .block_on(async { section.key_ring(Arc::new(SystemClock)).await?.ring().await })
                .map_err(|e| Failure(format!("{}: {e}", path.display())))?
        }
    };
    let now = ztgate::clock::unix_now();
    // The id made first, so the report can give it: what `hmac_token` revocations name.
    let id = TokenId::random()?;
    let token = ring.mint_with_id(purpose, subject, now, ttl, id)?;
    let expires = now + ttl.as_secs();
    Ok(Report {
        text: format!("{token}\n"),
        json: json!({
            "token": token,
            "id": id.to_string(),
            "purpose": purpose,
            "subject": subject,
            "expires": expires,
        }),
        ok: true,
    })
}

pub(crate) fn sign_webhook(
    scheme: Scheme,
    secret_env: &str,
    id: Option<String>,
    timestamp: Option<u64>,
    body: &str,
) -> Result<Report, Failure> {
    let secret = input::env(secret_env)?;
    let body = if body == "-" { input::stdin(input::MAX_DOCUMENT_BYTES, "body")? } else { body.to_owned() };
    let ts = timestamp.unwrap_or_else(ztgate::clock::unix_now);
    let headers: Vec<(&str, String)> = match scheme {
        Scheme::Github => {
            let mac = hmac_sha256(secret.as_bytes(), &[body.as_bytes()]);
            vec![("X-Hub-Signature-256", format!("sha256={}", hex(&mac)))]
        }
        Scheme::Stripe => {
            let ts_text = ts.to_string();
            let mac = hmac_sha256(secret.as_bytes(), &[ts_text.as_bytes(), b".", body.as_bytes()]);
            vec![("Stripe-Signature", format!("t={ts},v1={}", hex(&mac)))]
        }
        Scheme::Svix => {
            let encoded = secret.trim().strip_prefix("whsec_").ok_or_else(|| {
                Failure(format!("{secret_env}: a Svix secret starts with whsec_ (then base64)"))
            })?;
            let key = base64::engine::general_purpose::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            )
            .decode(encoded)
            .map_err(|_| Failure(format!("{secret_env}: the part after whsec_ is not base64")))?;
            let id = id.unwrap_or_else(random_id);
            let ts_text = ts.to_string();
            let signed = [id.as_bytes(), b".", ts_text.as_bytes(), b".", body.as_bytes()];
            let mac = hmac_sha256(&key, &signed);
            vec![
                ("svix-id", id.clone()),
                ("svix-timestamp", ts.to_string()),
                ("svix-signature", format!("v1,{}", STANDARD.encode(mac))),
            ]
        }
    };
    let text: String = headers.iter().map(|(name, value)| format!("{name}: {value}\n")).collect();
    let json = json!({"headers": headers.iter().map(|(n, v)| (n.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()});
    Ok(Report { text, json, ok: true })
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A message id for Svix: it only has to be unique per message (it is not a secret), so the
/// clock's nanoseconds and the process id do.
fn random_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("msg_{nanos:x}{:x}", std::process::id())
}
