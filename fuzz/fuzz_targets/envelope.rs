//! Signed queue envelopes (`identity::envelope`): `sign_envelope` and `EnvelopeVerifier::verify`
//! on arbitrary input.
//!
//! Modes (byte 0 % 3):
//! - 0, raw: a clock and delivery choice byte, then envelope text (lossy UTF-8) verified with the
//!   fixed ring of `HMAC_KEYS` for queue `fuzz`;
//! - 1, seal: `clock byte, ttl byte, body length (u16 BE), body bytes, mutation bytes`: seal the
//!   body, open it, then open changed copies of the envelope;
//! - 2, swap: two bodies split at the first 0x00: seal both, then open each token with the
//!   other's body.
//!
//! Invariants: no panic; an envelope opens only if its token is one the ring signed for
//! `queue:fuzz` over the SHA-256 of the body (recomputed here), it is at most
//! `MAX_ENVELOPE_BYTES`, and the clock is before its expiry; an opened envelope is claimed by
//! its delivery (the same delivery opens it again as a redelivery, another is refused as a
//! replay); every refusal before the claim leaves the claim store empty; a changed copy of a
//! sealed envelope either is refused or decodes to exactly the token and body that were sealed
//! (JSON has more than one spelling of a string); swapped bodies are refused as a body mismatch.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sha2::{Digest, Sha256};
use ztgate::Principal;
use ztgate::identity::envelope::{
    EnvelopeError, EnvelopeVerifier, InMemoryClaims, MAX_ENVELOPE_BYTES, OpenedEnvelope, SignEnvelopeError,
    sign_envelope,
};
use ztgate::identity::hmac_token::MAX_TTL;
use ztgate_fuzz::{NOW, hmac_ring, runtime};

const QUEUE: &str = "fuzz";
const DELIVERIES: [&str; 4] = ["msg-1", "0123456789abcdef0123456789abcdef", "", "bad id"]; // pragma: allowlist secret

fuzz_target!(init: seeds(), |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => raw(rest),
        1 => seal(rest),
        _ => swap(rest),
    }
});

/// Seeds of this target, written when `ZTGATE_FUZZ_SEEDS` names a directory (as
/// `ztgate_fuzz::seeds::write_if_asked` does for the others): sealed envelopes, raw and as
/// seal-mode inputs.
fn seeds() {
    let Some(dir) = std::env::var_os("ZTGATE_FUZZ_SEEDS") else { return };
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir).expect("seed directory");
    let body = r#"{"kind":"note","text":"hello"}"#;
    let sealed = sign_envelope(hmac_ring(), QUEUE, body, NOW, Duration::from_secs(600)).expect("seal");
    let mut seeds: Vec<(&str, Vec<u8>)> = vec![("raw-sealed", [&[0u8, 0][..], sealed.as_bytes()].concat())];
    let mut seal_input = vec![1u8, 0, 10];
    seal_input.extend_from_slice(&(body.len() as u16).to_be_bytes());
    seal_input.extend_from_slice(body.as_bytes());
    seal_input.extend_from_slice(&[0, 40, 7, 1, 2, 3]);
    seeds.push(("seal", seal_input));
    seeds.push(("swap", [&[2u8][..], b"first body", &[0], b"second body"].concat()));
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed file");
    }
    println!("{} seeds for envelope written to {}", seeds.len(), dir.display());
    std::process::exit(0);
}

fn clock(byte: u8) -> u64 {
    [NOW, NOW + 599, NOW + 600, NOW - 1, 0, u64::MAX][usize::from(byte % 6)]
}

fn fresh_verifier() -> (EnvelopeVerifier, Arc<InMemoryClaims>) {
    let claims = Arc::new(InMemoryClaims::with_capacity(8));
    let ring = Arc::new(hmac_ring().clone());
    (EnvelopeVerifier::new(ring, QUEUE, claims.clone()).expect("queue name"), claims)
}

fn open(
    verifier: &EnvelopeVerifier,
    envelope: &str,
    delivery: &str,
    now: u64,
) -> Result<OpenedEnvelope, EnvelopeError> {
    runtime().block_on(verifier.verify(envelope, delivery, now))
}

fn sha256_hex(body: &str) -> String {
    Sha256::digest(body.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The token and body an envelope's JSON holds, read leniently (serde_json's `Value`).
fn members(envelope: &str) -> Option<(String, String)> {
    let value: Value = serde_json::from_str(envelope).ok()?;
    Some((value.get("token")?.as_str()?.to_owned(), value.get("body")?.as_str()?.to_owned()))
}

/// What every opened envelope must be, and what a second delivery of it must get.
fn check_opened(
    verifier: &EnvelopeVerifier,
    envelope: &str,
    delivery: &str,
    now: u64,
    opened: &OpenedEnvelope,
) {
    assert!(envelope.len() <= MAX_ENVELOPE_BYTES);
    let (token, body) = members(envelope).expect("an opened envelope has a token and a body");
    assert_eq!(opened.body(), body);
    let proven = hmac_ring().verify(&token, "queue:fuzz", now).expect("its token verifies alone");
    assert_eq!(proven.subject, sha256_hex(&body), "the token signs the body's digest");
    assert_eq!(proven.id.as_deref(), Some(opened.id()));
    let Principal::SignedToken(signed) = opened.principal().principal() else { panic!("not a signed token") };
    assert_eq!((signed.purpose.as_str(), signed.subject.as_str()), ("queue:fuzz", proven.subject.as_str()));
    // Claimed by this delivery: again is a redelivery, another delivery is a replay.
    assert!(open(verifier, envelope, delivery, now).expect("the same delivery again").is_redelivery());
    let other = if delivery == "msg-1" { "msg-2" } else { "msg-1" };
    assert_eq!(open(verifier, envelope, other, now).unwrap_err(), EnvelopeError::Replayed);
}

fn raw(rest: &[u8]) {
    let Some((&choice, text)) = rest.split_first() else { return };
    let now = clock(choice);
    let delivery = DELIVERIES[usize::from(choice / 6) % DELIVERIES.len()];
    let envelope = String::from_utf8_lossy(text);
    let (verifier, claims) = fresh_verifier();
    match open(&verifier, &envelope, delivery, now) {
        Ok(opened) => check_opened(&verifier, &envelope, delivery, now, &opened),
        Err(e) => {
            assert!(e.is_permanent(), "an in-memory store with room answered {e:?}");
            assert!(claims.is_empty(), "a refused envelope was claimed: {e:?}");
            if envelope.len() > MAX_ENVELOPE_BYTES {
                assert_eq!(e, EnvelopeError::TooLarge { limit: MAX_ENVELOPE_BYTES });
            }
        }
    }
}

fn seal(rest: &[u8]) {
    let [clock_byte, ttl, hi, lo, rest @ ..] = rest else { return };
    let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
    let (body, mutation) = rest.split_at(len);
    let body = String::from_utf8_lossy(body);
    let ttl = Duration::from_secs(u64::from(*ttl));
    let sealed = match sign_envelope(hmac_ring(), QUEUE, &body, NOW, ttl) {
        Ok(sealed) => sealed,
        Err(SignEnvelopeError::Mint(_)) => return assert_eq!(ttl, Duration::ZERO),
        Err(e) => panic!("sealing {} bytes: {e:?}", body.len()),
    };
    let (verifier, _) = fresh_verifier();
    let now = clock(*clock_byte);
    let opened = open(&verifier, &sealed, "msg-1", now);
    // The token's own window: refused from its expiry on, and from further back than its
    // longest lifetime plus the skew.
    let expires_at = NOW + ttl.as_secs();
    let expected = if now >= expires_at {
        Err(EnvelopeError::Expired)
    } else if expires_at - now > MAX_TTL.as_secs() + 300 {
        Err(EnvelopeError::ExpiryTooFar)
    } else {
        Ok(())
    };
    match (opened, expected) {
        (Ok(opened), Ok(())) => {
            assert_eq!(opened.body(), body);
            check_opened(&verifier, &sealed, "msg-1", now, &opened);
        }
        (Err(got), Err(want)) => assert_eq!(got, want, "at {now}, sealed at {NOW} for {ttl:?}"),
        (got, want) => panic!("at {now}, sealed at {NOW} for {ttl:?}: {got:?}, expected {want:?}"),
    }
    // Changed copies, each on a fresh store and a fresh delivery.
    let original = members(&sealed).expect("sealed JSON");
    for (i, op) in mutation.chunks(3).enumerate() {
        let Some(changed) = change(&sealed, op) else { continue };
        let (verifier, _) = fresh_verifier();
        if let Ok(opened) = open(&verifier, &changed, &format!("copy-{i}"), NOW) {
            assert_eq!(members(&changed).as_ref(), Some(&original), "a changed envelope opened: {changed:?}");
            assert_eq!(opened.body(), original.1);
        }
    }
}

fn swap(rest: &[u8]) {
    let text = String::from_utf8_lossy(rest);
    let (first, second) = text.split_once('\0').unwrap_or((&text, ""));
    if first == second {
        return;
    }
    let seal = |body: &str| sign_envelope(hmac_ring(), QUEUE, body, NOW, Duration::from_secs(60));
    let (Ok(a), Ok(b)) = (seal(first), seal(second)) else { return };
    let ((token_a, body_a), (token_b, body_b)) = (members(&a).expect("JSON"), members(&b).expect("JSON"));
    let (verifier, claims) = fresh_verifier();
    for (token, body) in [(&token_a, &body_b), (&token_b, &body_a)] {
        let swapped = serde_json::json!({ "token": token, "body": body }).to_string();
        if swapped.len() <= MAX_ENVELOPE_BYTES {
            assert_eq!(open(&verifier, &swapped, "msg-1", NOW).unwrap_err(), EnvelopeError::BodyMismatch);
        }
    }
    assert!(claims.is_empty());
}

/// One byte replaced, the text cut, or a byte appended; `None` if that changes nothing.
fn change(text: &str, op: &[u8]) -> Option<String> {
    let pick = |i: usize| op.get(i).copied().unwrap_or(0);
    let bytes = text.as_bytes();
    let at = (usize::from(pick(0)) << 8 | usize::from(pick(1))) % bytes.len().max(1);
    let mut changed = bytes.to_vec();
    match pick(0) >> 6 {
        0 => changed.truncate(at),
        1 => changed.push(pick(2)),
        _ => changed[at] = pick(2),
    }
    let changed = String::from_utf8_lossy(&changed).into_owned();
    (changed != text).then_some(changed)
}
