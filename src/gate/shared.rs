//! The pipeline's use of shared state (see [`crate::identity::shared_state`]): the rate limit
//! before verification, the revocation list after it, and spending the failure budget after
//! a failed authentication. Every event names its layer and outcome; no attacker text starts a
//! log line (values are recorded with `?`).

use std::fmt::Write as _;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::Gate;
use crate::error::Rejection;
use crate::identity::shared_state::{RateLimit, Revocation, RevocationKind, Spends};
use crate::principal::{Principal, Proof};
use crate::request::RequestFacts;

/// The longest client IP text used in a key (an IPv6 address is at most 45).
const MAX_IP_CHARS: usize = 64;

/// The rate limit's keys for this request: the client IP (`CF-Connecting-IP`, one shared
/// bucket without it), and for failures the credential presented (a digest, never the value).
pub(crate) fn limit_keys(limit: &RateLimit, facts: &RequestFacts) -> Vec<String> {
    let scope = limit.scope();
    let ip = facts.client_ip().filter(|ip| ip.len() <= MAX_IP_CHARS).unwrap_or("unknown");
    let mut keys = vec![format!("{scope}:ip:{ip}")];
    if limit.spends() == Spends::Failures {
        let credential = facts.access_jwt().or_else(|| facts.api_key_header()).or_else(|| facts.bearer());
        if let Some(credential) = credential {
            let digest = Sha256::digest(credential.expose().as_bytes());
            let mut hex = String::with_capacity(32);
            for b in &digest[..16] {
                let _ = write!(hex, "{b:02x}");
            }
            keys.push(format!("{scope}:cred:{hex}"));
        }
    }
    keys
}

/// Before verification: `Err` when the budget is spent (429), or the limiter cannot answer
/// and the limit fails closed (503).
pub(crate) async fn before(limit: &RateLimit, keys: &[String]) -> Result<(), Rejection> {
    let answer = match limit.spends() {
        Spends::Failures => limit.limiter().check(keys).await,
        Spends::Requests => limit.limiter().spend(keys).await,
    };
    match answer {
        Ok(None) => Ok(()),
        Ok(Some(retry_after)) => {
            tracing::warn!(
                layer = "identity",
                outcome = "rate_limited",
                scope = limit.scope(),
                retry_after_secs = retry_after.as_secs()
            );
            Err(Rejection::TooManyRequests { retry_after: retry_after.max(Duration::from_secs(1)) })
        }
        Err(e) if limit.is_fail_closed() => {
            tracing::error!(layer = "identity", outcome = "state_unavailable", store = "rate limiter", error = ?e.to_string());
            Err(Rejection::StateUnavailable { what: "rate limiter" })
        }
        Err(e) => {
            tracing::warn!(layer = "identity", outcome = "rate_limiter_unavailable", error = ?e.to_string(), "request let through unlimited");
            Ok(())
        }
    }
}

/// After a refusal: a failed authentication (a credential was presented and refused) spends
/// the failure budget. A missing credential does not; nor does anything not a 401.
pub(crate) async fn after_refusal(limit: &RateLimit, keys: &[String], rejection: &Rejection) {
    let failed = rejection.status() == 401 && *rejection != Rejection::MissingCredential;
    if limit.spends() != Spends::Failures || !failed {
        return;
    }
    if let Err(e) = limit.limiter().spend(keys).await {
        tracing::warn!(layer = "identity", outcome = "rate_limiter_unavailable", error = ?e.to_string(), "failure not counted");
    }
}

/// The ids under which the credentials of a verified request can be revoked, and, at the same
/// index, the mechanism that proved each.
fn revocation_ids<C>(principal: &Principal<C>, proofs: &[Proof]) -> (Vec<Revocation>, Vec<&'static str>) {
    let (mut ids, mut by) = (Vec::new(), Vec::new());
    let mut push = |kind, id: &str, mechanism| {
        if let Ok(r) = Revocation::new(kind, id) {
            ids.push(r);
            by.push(mechanism);
        }
    };
    let first = proofs.first().map_or("", |p| p.mechanism);
    match principal {
        Principal::User(user) => {
            push(RevocationKind::AccessSub, &user.sub, first);
            if let Some(nonce) = &user.identity_nonce {
                push(RevocationKind::AccessSub, nonce, first);
            }
        }
        Principal::ApiKey(key) => push(RevocationKind::ApiKey, &key.name, first),
        Principal::ClientCert(cert) => push(RevocationKind::Cert, &cert.fingerprint_sha256, first),
        // A v2 token, by its own id (a v1 token has none: only its key can be withdrawn).
        Principal::SignedToken(token) => {
            if let Some(id) = &token.id {
                push(RevocationKind::HmacToken, id, first);
            }
        }
        _ => {}
    }
    // The other mechanisms of an all-of (an API key beside an Access user): their ids.
    for proof in proofs.iter().skip(1) {
        if let Some(name) = proof.principal_id.strip_prefix("api_key:") {
            push(RevocationKind::ApiKey, name, proof.mechanism);
        } else if let Some(fingerprint) = proof.principal_id.strip_prefix("cert:") {
            push(RevocationKind::Cert, fingerprint, proof.mechanism);
        }
    }
    (ids, by)
}

/// After verification: `Err` when a credential is revoked (401), or the list cannot answer
/// (503: a revoked key must not work because the store is down).
pub(crate) async fn check_revocations<C>(
    gate: &Gate<C>,
    principal: &Principal<C>,
    proofs: &[Proof],
) -> Result<(), Rejection> {
    let Some(list) = gate.revocations() else { return Ok(()) };
    let (candidates, by) = revocation_ids(principal, proofs);
    if candidates.is_empty() {
        return Ok(());
    }
    match list.any_revoked(&candidates).await {
        Ok(false) => Ok(()),
        Ok(true) => {
            // Which one, for the answer and the log (the rare path: one more look-up each).
            let mut mechanism = by[0];
            for (revocation, proved_by) in candidates.iter().zip(&by) {
                if list.any_revoked(std::slice::from_ref(revocation)).await.unwrap_or(false) {
                    mechanism = proved_by;
                    break;
                }
            }
            tracing::warn!(layer = "identity", outcome = "revoked", mechanism, principal = ?principal.id());
            Err(Rejection::Revoked { mechanism })
        }
        Err(e) if gate.revocations_fail_open() => {
            tracing::warn!(layer = "identity", outcome = "revocations_unchecked", error = ?e.to_string(), principal = ?principal.id(), "revocation list unavailable: let through unchecked");
            Ok(())
        }
        Err(e) => {
            tracing::error!(layer = "identity", outcome = "state_unavailable", store = "revocation list", error = ?e.to_string());
            Err(Rejection::StateUnavailable { what: "revocation list" })
        }
    }
}
