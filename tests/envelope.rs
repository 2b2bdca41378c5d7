//! Signed queue envelopes (`identity::envelope`): one test per attack of the threat model (a
//! sender with write access to the queue, but not the key), the retry a queue makes after a
//! failed storage step, and the bounds. Keys are made here; the claim store is the in-memory
//! one, whose capacity stands in for a store that cannot answer.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use ztgate::Principal;
use ztgate::identity::envelope::{
    EnvelopeError, EnvelopeVerifier, InMemoryClaims, MAX_ENVELOPE_BYTES, SignEnvelopeError, sign_envelope,
};
use ztgate::identity::hmac_token::{KeyRing, MintError};
use ztgate::identity::webhook::ReplayStoreError;

const NOW: u64 = 1_767_222_000;
const HOUR: Duration = Duration::from_secs(3600);
const KEY: &str = "q-current:test-queue-key-0123456789abcdef0123"; // pragma: allowlist secret
const OLD_KEY: &str = "q-previous:test-queue-key-previous-00000000000"; // pragma: allowlist secret
const OTHER_KEY: &str = "q-current:test-queue-key-of-someone-else-0000"; // pragma: allowlist secret
const BODY: &str = r#"{"kind":"order.created","order":42}"#;

fn ring() -> Arc<KeyRing> {
    Arc::new(KeyRing::parse(&format!("{KEY},{OLD_KEY}")).unwrap())
}

fn seal(body: &str) -> String {
    sign_envelope(&ring(), "orders", body, NOW, HOUR).unwrap()
}

fn verifier_with(claims: Arc<InMemoryClaims>) -> EnvelopeVerifier {
    EnvelopeVerifier::new(ring(), "orders", claims).unwrap()
}

fn verifier() -> (EnvelopeVerifier, Arc<InMemoryClaims>) {
    let claims = Arc::new(InMemoryClaims::default());
    (verifier_with(claims.clone()), claims)
}

/// The envelope's two members.
fn parts(envelope: &str) -> (String, String) {
    let v: Value = serde_json::from_str(envelope).unwrap();
    (v["token"].as_str().unwrap().to_owned(), v["body"].as_str().unwrap().to_owned())
}

fn envelope_of(token: &str, body: &str) -> String {
    json!({ "token": token, "body": body }).to_string()
}

fn sha256_hex(body: &str) -> String {
    Sha256::digest(body.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_sealed_envelope_opens_to_its_body_and_a_signed_token_principal() {
    let (verifier, _) = verifier();
    let envelope = seal(BODY);
    let opened = verifier.verify(&envelope, "msg-1", NOW + 1).await.unwrap();
    assert_eq!(opened.body(), BODY);
    assert!(!opened.is_redelivery());
    assert_eq!(opened.kid(), "q-current");
    let Principal::SignedToken(signed) = opened.principal().principal() else {
        panic!("not a signed token: {:?}", opened.principal())
    };
    // The subject is the body's SHA-256, computed here independently; the id is the token's.
    assert_eq!(signed.subject, sha256_hex(BODY));
    assert_eq!(signed.purpose, "queue:orders");
    assert_eq!(signed.expires_at, NOW + 3600);
    assert_eq!(signed.id.as_deref(), Some(opened.id()));
    assert!(opened.principal().proved_by("signed_envelope"));
    // The token inside is an ordinary v2 HMAC token for purpose queue:orders.
    let (token, _) = parts(&envelope);
    let proven = ring().verify(&token, "queue:orders", NOW).unwrap();
    assert_eq!(proven.subject, sha256_hex(BODY));
    assert_eq!(verifier.purpose(), "queue:orders");
}

#[tokio::test]
async fn a_tampered_body_is_refused_and_never_reaches_the_claim_store() {
    let (verifier, claims) = verifier();
    let (token, body) = parts(&seal(BODY));
    let tampered = envelope_of(&token, &body.replace("42", "43"));
    let refused = verifier.verify(&tampered, "msg-1", NOW).await.unwrap_err();
    assert_eq!(refused, EnvelopeError::BodyMismatch);
    assert!(refused.is_permanent());
    assert_eq!(refused.code(), "body_mismatch");
    assert!(claims.is_empty(), "a refused envelope claimed its id");
    // Appending, or dropping the body, is the same.
    for body in [format!("{body} "), String::new()] {
        let refused = verifier.verify(&envelope_of(&token, &body), "msg-1", NOW).await;
        assert_eq!(refused.unwrap_err(), EnvelopeError::BodyMismatch);
    }
}

#[tokio::test]
async fn a_tampered_token_is_refused() {
    let (verifier, claims) = verifier();
    let (token, body) = parts(&seal(BODY));
    let mut segments: Vec<String> = token.split('.').map(str::to_owned).collect();
    // The expiry pushed a day later: the MAC no longer matches.
    segments[2] = (NOW + 3600 + 86_400).to_string();
    let later = envelope_of(&segments.join("."), &body);
    assert_eq!(verifier.verify(&later, "msg-1", NOW).await.unwrap_err(), EnvelopeError::BadSignature);
    // The subject replaced by the digest of another body, with that body.
    let (token, _) = parts(&seal(BODY));
    let mut segments: Vec<String> = token.split('.').map(str::to_owned).collect();
    segments[4] = URL_SAFE_NO_PAD.encode(sha256_hex("evil"));
    let swapped = envelope_of(&segments.join("."), "evil");
    assert_eq!(verifier.verify(&swapped, "msg-1", NOW).await.unwrap_err(), EnvelopeError::BadSignature);
    assert!(claims.is_empty());
}

#[tokio::test]
async fn an_envelope_signed_with_someone_elses_key_is_refused() {
    let (verifier, _) = verifier();
    let impostor = KeyRing::parse(OTHER_KEY).unwrap();
    let forged = sign_envelope(&impostor, "orders", BODY, NOW, HOUR).unwrap();
    assert_eq!(verifier.verify(&forged, "msg-1", NOW).await.unwrap_err(), EnvelopeError::BadSignature);
    let unknown = KeyRing::parse("q-unknown:test-queue-key-unknown-000000000000").unwrap(); // pragma: allowlist secret
    let forged = sign_envelope(&unknown, "orders", BODY, NOW, HOUR).unwrap();
    assert_eq!(verifier.verify(&forged, "msg-1", NOW).await.unwrap_err(), EnvelopeError::UnknownKey);
}

#[tokio::test]
async fn an_envelope_for_another_queue_is_refused_as_a_forgery() {
    let (verifier, claims) = verifier();
    let for_billing = sign_envelope(&ring(), "billing", BODY, NOW, HOUR).unwrap();
    assert_eq!(verifier.verify(&for_billing, "msg-1", NOW).await.unwrap_err(), EnvelopeError::BadSignature);
    // A plain HMAC token of the same ring for another purpose (an unsubscribe link, say),
    // even over the right digest, is no envelope either.
    let link = ring().mint("unsubscribe", &sha256_hex(BODY), NOW, HOUR).unwrap();
    let envelope = envelope_of(&link, BODY);
    assert_eq!(verifier.verify(&envelope, "msg-1", NOW).await.unwrap_err(), EnvelopeError::BadSignature);
    assert!(claims.is_empty());
}

#[tokio::test]
async fn an_expired_envelope_is_refused_from_its_expiry_on() {
    let (verifier, claims) = verifier();
    let envelope = sign_envelope(&ring(), "orders", BODY, NOW, Duration::from_secs(60)).unwrap();
    for at in [NOW + 60, NOW + 61, NOW + 86_400] {
        let refused = verifier.verify(&envelope, "msg-1", at).await.unwrap_err();
        assert_eq!(refused, EnvelopeError::Expired, "at {at}");
        assert!(refused.is_permanent());
    }
    assert!(claims.is_empty());
    assert!(verifier.verify(&envelope, "msg-1", NOW + 59).await.is_ok());
}

#[tokio::test]
async fn the_same_envelope_in_another_message_is_a_replay() {
    let (verifier, _) = verifier();
    let envelope = seal(BODY);
    verifier.verify(&envelope, "msg-1", NOW).await.unwrap();
    for copy in ["msg-2", "msg-3"] {
        let refused = verifier.verify(&envelope, copy, NOW + 5).await.unwrap_err();
        assert_eq!(refused, EnvelopeError::Replayed);
        assert!(refused.is_permanent());
        assert_eq!(refused.code(), "replayed");
    }
    // Its retries stay refused; the original's redeliveries are still accepted.
    assert_eq!(verifier.verify(&envelope, "msg-2", NOW + 6).await.unwrap_err(), EnvelopeError::Replayed);
    assert!(verifier.verify(&envelope, "msg-1", NOW + 7).await.unwrap().is_redelivery());
}

#[tokio::test]
async fn a_replay_sent_to_another_consumer_sharing_the_claims_is_refused() {
    let claims = Arc::new(InMemoryClaims::default());
    let (first, second) = (verifier_with(claims.clone()), verifier_with(claims));
    let envelope = seal(BODY);
    first.verify(&envelope, "msg-1", NOW).await.unwrap();
    assert_eq!(second.verify(&envelope, "msg-2", NOW).await.unwrap_err(), EnvelopeError::Replayed);
}

/// The queue retries a message whose storage step failed: the same delivery id, the same
/// envelope. That is accepted again (and says so), any number of times until it expires.
#[tokio::test]
async fn a_retried_message_is_accepted_again_as_a_redelivery() {
    let (verifier, _) = verifier();
    let envelope = seal(BODY);
    let first = verifier.verify(&envelope, "msg-1", NOW).await.unwrap();
    for attempt in 1..=3 {
        let again = verifier.verify(&envelope, "msg-1", NOW + attempt).await.unwrap();
        assert!(again.is_redelivery());
        assert_eq!((again.id(), again.body()), (first.id(), first.body()));
    }
    assert_eq!(verifier.verify(&envelope, "msg-1", NOW + 3600).await.unwrap_err(), EnvelopeError::Expired);
}

#[tokio::test]
async fn bodies_swapped_between_two_valid_envelopes_are_refused() {
    let (verifier, claims) = verifier();
    let (token_a, body_a) = parts(&seal(r#"{"order":1,"amount":"10.00"}"#));
    let (token_b, body_b) = parts(&seal(r#"{"order":2,"amount":"99999.00"}"#));
    for (token, body) in [(&token_a, &body_b), (&token_b, &body_a)] {
        let swapped = envelope_of(token, body);
        assert_eq!(verifier.verify(&swapped, "msg-1", NOW).await.unwrap_err(), EnvelopeError::BodyMismatch);
    }
    assert!(claims.is_empty());
    // Each as sealed still opens.
    assert!(verifier.verify(&envelope_of(&token_a, &body_a), "msg-a", NOW).await.is_ok());
    assert!(verifier.verify(&envelope_of(&token_b, &body_b), "msg-b", NOW).await.is_ok());
}

#[tokio::test]
async fn an_oversize_envelope_is_refused_before_it_is_parsed() {
    let (verifier, claims) = verifier();
    let limit = EnvelopeError::TooLarge { limit: MAX_ENVELOPE_BYTES };
    // Not even JSON: the size is checked first.
    let huge = "{".repeat(MAX_ENVELOPE_BYTES + 1);
    assert_eq!(verifier.verify(&huge, "msg-1", NOW).await.unwrap_err(), limit);
    // A genuine token with a body past the limit.
    let (token, _) = parts(&seal(BODY));
    let big = envelope_of(&token, &"x".repeat(MAX_ENVELOPE_BYTES));
    assert_eq!(verifier.verify(&big, "msg-1", NOW).await.unwrap_err(), limit);
    assert!(claims.is_empty());
    // The signer refuses to make one, whether the body or its escaping is too large.
    let refused = SignEnvelopeError::TooLarge { limit: MAX_ENVELOPE_BYTES };
    assert_eq!(
        sign_envelope(&ring(), "orders", &"x".repeat(MAX_ENVELOPE_BYTES + 1), NOW, HOUR),
        Err(refused)
    );
    let escaped = "\u{1}".repeat(MAX_ENVELOPE_BYTES / 2);
    assert_eq!(sign_envelope(&ring(), "orders", &escaped, NOW, HOUR), Err(refused));
    // Just under the limit is sealed and opens.
    let largest = "x".repeat(MAX_ENVELOPE_BYTES - 300);
    let sealed = sign_envelope(&ring(), "orders", &largest, NOW, HOUR).unwrap();
    assert!(sealed.len() <= MAX_ENVELOPE_BYTES);
    assert_eq!(verifier.verify(&sealed, "msg-1", NOW).await.unwrap().body(), largest);
}

#[tokio::test]
async fn malformed_envelopes_are_refused_and_claim_nothing() {
    let (verifier, claims) = verifier();
    let envelope = seal(BODY);
    let (token, body) = parts(&envelope);
    let cases = [
        ("empty", String::new()),
        ("not JSON", "token=x&body=y".to_owned()),
        ("a JSON string", json!(envelope).to_string()),
        ("an array", json!([token, body]).to_string()),
        ("no body", json!({ "token": token }).to_string()),
        ("no token", json!({ "body": body }).to_string()),
        ("a third member", json!({ "token": token, "body": body, "admin": true }).to_string()),
        ("the body as a JSON value", json!({ "token": token, "body": { "order": 42 } }).to_string()),
        ("the token as a number", json!({ "token": 7, "body": body }).to_string()),
        ("a duplicate body", format!(r#"{{"token":{},"body":{},"body":"evil"}}"#, json!(token), json!(body))),
        ("trailing text", format!("{envelope} x")),
        ("a token that is not one", envelope_of("v2.not-a-token", &body)),
        ("a token past its size limit", envelope_of(&"v".repeat(4096), &body)),
    ];
    for (name, text) in cases {
        let Err(refused) = verifier.verify(&text, "msg-1", NOW).await else { panic!("{name}: opened") };
        assert!(matches!(refused, EnvelopeError::Malformed(_)), "{name}: {refused:?}");
        assert!(refused.is_permanent());
        assert_eq!(refused.code(), "malformed");
    }
    assert!(claims.is_empty());
}

/// A v1 token (an older minter's) verifies as an HMAC token but has no id: nothing to claims
/// against replays with, so it is no envelope.
#[tokio::test]
async fn a_v1_token_without_an_id_is_refused() {
    let (verifier, claims) = verifier();
    let (kid, secret) = KEY.split_once(':').unwrap();
    let (purpose, subject, expires_at) = ("queue:orders", sha256_hex(BODY), NOW + 3600);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("ztgate-hmac-v1\0{kid}\0{purpose}\0{expires_at}\0{subject}").as_bytes());
    let mac = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    let v1 = format!("v1.{kid}.{expires_at}.{}.{mac}", URL_SAFE_NO_PAD.encode(&subject));
    assert!(ring().verify(&v1, purpose, NOW).is_ok(), "the hand-made v1 token is genuine");
    let refused = verifier.verify(&envelope_of(&v1, BODY), "msg-1", NOW).await.unwrap_err();
    assert!(matches!(refused, EnvelopeError::Malformed(_)), "{refused:?}");
    assert!(claims.is_empty());
}

#[tokio::test]
async fn an_envelope_signed_before_a_key_rotation_still_opens() {
    let (verifier, _) = verifier();
    let old = KeyRing::parse(OLD_KEY).unwrap();
    let envelope = sign_envelope(&old, "orders", BODY, NOW, HOUR).unwrap();
    assert_eq!(verifier.verify(&envelope, "msg-1", NOW).await.unwrap().kid(), "q-previous");
}

/// A claim store that cannot answer (here: full) refuses for now, not for good: the consumer
/// retries, and once the store answers the message opens.
#[tokio::test]
async fn a_claim_store_that_cannot_answer_refuses_for_now_not_for_good() {
    let envelope = seal(BODY);
    let down = verifier_with(Arc::new(InMemoryClaims::with_capacity(0)));
    let refused = down.verify(&envelope, "msg-1", NOW).await.unwrap_err();
    assert_eq!(refused, EnvelopeError::StoreUnavailable(ReplayStoreError::Full { capacity: 0 }));
    assert!(!refused.is_permanent());
    assert_eq!(refused.code(), "state_unavailable");
    let (up, _) = verifier();
    assert!(up.verify(&envelope, "msg-1", NOW + 1).await.is_ok());
}

/// A full store refuses new envelopes (for now) rather than forget a claim, and still answers
/// the claims it holds: the claimant's retry opens, a copy in another message is a replay.
#[tokio::test]
async fn a_full_claim_store_refuses_new_envelopes_but_still_answers_its_claims() {
    let claims = Arc::new(InMemoryClaims::with_capacity(1));
    let verifier = verifier_with(claims.clone());
    let first = seal(BODY);
    assert!(!verifier.verify(&first, "msg-1", NOW).await.unwrap().is_redelivery());
    let second = verifier.verify(&seal(BODY), "msg-2", NOW).await.unwrap_err();
    assert_eq!(second, EnvelopeError::StoreUnavailable(ReplayStoreError::Full { capacity: 1 }));
    assert!(verifier.verify(&first, "msg-1", NOW + 1).await.unwrap().is_redelivery());
    assert_eq!(verifier.verify(&first, "msg-3", NOW + 1).await.unwrap_err(), EnvelopeError::Replayed);
    assert_eq!(claims.len(), 1);
}

#[tokio::test]
async fn delivery_ids_and_queue_names_are_bounded() {
    let (verifier, claims) = verifier();
    let envelope = seal(BODY);
    for bad in [String::new(), "a b".to_owned(), "msg\n1".to_owned(), "x".repeat(129), "é".to_owned()] {
        let refused = verifier.verify(&envelope, &bad, NOW).await.unwrap_err();
        assert!(matches!(refused, EnvelopeError::Malformed(_)), "{bad:?}: {refused:?}");
    }
    assert!(claims.is_empty());
    assert!(verifier.verify(&envelope, &"x".repeat(128), NOW).await.is_ok());

    let claims = Arc::new(InMemoryClaims::default());
    for bad in ["", "a:b", "a b", "queue/x", &"q".repeat(59)] {
        assert!(EnvelopeVerifier::new(ring(), bad, claims.clone()).is_err(), "{bad:?}");
        assert_eq!(sign_envelope(&ring(), bad, BODY, NOW, HOUR), Err(SignEnvelopeError::InvalidQueueName));
    }
    assert_eq!(
        sign_envelope(&ring(), "orders", BODY, NOW, Duration::ZERO),
        Err(SignEnvelopeError::Mint(MintError::TtlOutOfRange))
    );
}

/// A refusal, an opened envelope and their `Debug` never repeat the message's text: consumers
/// log them.
#[tokio::test]
async fn neither_errors_nor_debug_show_the_body() {
    let (verifier, _) = verifier();
    let secret_body = r#"{"card":"4111111111111111"}"#;
    let (token, _) = parts(&seal(BODY));
    let refused = verifier.verify(&envelope_of(&token, secret_body), "msg-1", NOW).await.unwrap_err();
    for shown in [refused.to_string(), format!("{refused:?}")] {
        assert!(!shown.contains("4111"), "{shown}");
    }
    let opened = verifier.verify(&seal(secret_body), "msg-2", NOW).await.unwrap();
    let shown = format!("{opened:?}");
    assert!(!shown.contains("4111") && shown.contains("body_bytes"), "{shown}");
}
