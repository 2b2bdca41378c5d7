//! Webhook signature verification, as cases of the threat model: forged, tampered, stale,
//! replayed and oversized deliveries for Svix (Resend), GitHub and Stripe.
//!
//! Valid signatures are computed here with `hmac`/`sha2`, independently of the crate.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;
use ztgate::BoxFuture;
use ztgate::Rejection;
use ztgate::identity::webhook::{
    DEFAULT_MAX_BODY_BYTES, InMemoryReplayGuard, ReplayGuard, ReplayStoreError, VerifiedWebhook,
    WebhookError, WebhookScheme, WebhookVerifier, append_capped, check_content_length,
};

const NOW: u64 = 1_700_000_000;
/// Low-entropy test keys (a secret scanner must not mistake them for real ones).
const SVIX_KEY: &[u8; 24] = b"ztgate-svix-test-key-24b";
const GITHUB_SECRET: &str = "ztgate-github-test-secret";
const STRIPE_SECRET: &str = "whsec_ztgate-stripe-test-secret";
const BODY: &[u8] = br#"{"type":"email.delivered","data":{"to":"alice@example.com"}}"#;

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn svix_secret() -> String {
    format!("whsec_{}", STANDARD.encode(SVIX_KEY))
}

fn svix() -> WebhookVerifier {
    WebhookVerifier::svix(svix_secret()).unwrap()
}

fn svix_with_guard() -> (WebhookVerifier, Arc<InMemoryReplayGuard>) {
    let guard = Arc::new(InMemoryReplayGuard::default());
    (svix().with_replay_guard(guard.clone()), guard)
}

/// `v1,<base64 HMAC(key, "{id}.{ts}.{body}")>`.
fn svix_signature(key: &[u8], id: &str, ts: &str, body: &[u8]) -> String {
    format!("v1,{}", STANDARD.encode(mac(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body])))
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn svix_headers(id: &str, ts: &str, signature: &str) -> HeaderMap {
    headers(&[("svix-id", id), ("svix-timestamp", ts), ("svix-signature", signature)])
}

/// A correctly signed Svix delivery of `BODY` at `ts`.
fn signed_svix(id: &str, ts: u64) -> HeaderMap {
    let ts = ts.to_string();
    svix_headers(id, &ts, &svix_signature(SVIX_KEY, id, &ts, BODY))
}

fn github() -> WebhookVerifier {
    WebhookVerifier::github(GITHUB_SECRET).unwrap()
}

fn github_headers(value: &str) -> HeaderMap {
    headers(&[("x-hub-signature-256", value), ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")])
}

fn github_signature(body: &[u8]) -> String {
    format!("sha256={}", hex(&mac(GITHUB_SECRET.as_bytes(), &[body])))
}

fn stripe() -> WebhookVerifier {
    WebhookVerifier::stripe(STRIPE_SECRET).unwrap()
}

/// `hex(HMAC(secret, "{t}.{body}"))`, keyed with the whole `whsec_...` string.
fn stripe_v1(secret: &[u8], t: u64, body: &[u8]) -> String {
    hex(&mac(secret, &[t.to_string().as_bytes(), b".", body]))
}

fn stripe_headers(value: &str) -> HeaderMap {
    headers(&[("stripe-signature", value)])
}

fn invalid(e: WebhookError) -> Rejection {
    Rejection::from(e)
}

async fn accepted(verifier: &WebhookVerifier, headers: &HeaderMap, body: &[u8], now: u64) -> VerifiedWebhook {
    match verifier.verify(headers, body, now).await {
        Ok(message) => message,
        Err(e) => panic!("expected the delivery to verify, got {e:?}"),
    }
}

// ---- Svix / Resend ------------------------------------------------------------------------------

#[tokio::test]
async fn svix_valid_signature_is_accepted() {
    let message = accepted(&svix(), &signed_svix("msg_1", NOW), BODY, NOW).await;
    assert_eq!(message.scheme(), WebhookScheme::Svix);
    assert_eq!(message.id(), Some("msg_1"));
    assert_eq!(message.timestamp(), Some(NOW));
    assert_eq!(message.replay_key(), "svix:msg_1");
    assert_eq!(message.replay_until(), NOW + 300);
    assert!(!message.replay_checked());
}

#[tokio::test]
async fn standard_webhooks_header_names_are_accepted() {
    let ts = NOW.to_string();
    let sig = svix_signature(SVIX_KEY, "msg_1", &ts, BODY);
    let h = headers(&[("webhook-id", "msg_1"), ("webhook-timestamp", &ts), ("webhook-signature", &sig)]);
    assert_eq!(accepted(&svix(), &h, BODY, NOW).await.id(), Some("msg_1"));
}

#[tokio::test]
async fn svix_header_families_are_not_mixed() {
    // svix-id present: the svix- family is read, and its signature header is missing.
    let ts = NOW.to_string();
    let sig = svix_signature(SVIX_KEY, "msg_1", &ts, BODY);
    let h = headers(&[("svix-id", "msg_1"), ("svix-timestamp", &ts), ("webhook-signature", &sig)]);
    assert_eq!(
        svix().verify(&h, BODY, NOW).await,
        Err(invalid(WebhookError::MissingHeader { header: "svix-signature" }))
    );
}

#[tokio::test]
async fn svix_one_valid_among_several_signatures_is_accepted() {
    let ts = NOW.to_string();
    let good = svix_signature(SVIX_KEY, "msg_1", &ts, BODY);
    let old_key = svix_signature(b"the-previous-key-24bytes", "msg_1", &ts, BODY);
    for header in [format!("{old_key} {good}"), format!("{good} {old_key}"), format!("v1,garbage {good}")] {
        accepted(&svix(), &svix_headers("msg_1", &ts, &header), BODY, NOW).await;
    }
}

#[tokio::test]
async fn svix_only_invalid_signatures_are_refused() {
    let ts = NOW.to_string();
    let wrong = svix_signature(b"the-previous-key-24bytes", "msg_1", &ts, BODY);
    let zeros = format!("v1,{}", STANDARD.encode([0u8; 32]));
    for header in [wrong.clone(), format!("{wrong} {zeros}"), "v1,not-base64!".to_owned(), "v1,".to_owned()] {
        assert_eq!(
            svix().verify(&svix_headers("msg_1", &ts, &header), BODY, NOW).await,
            Err(invalid(WebhookError::SignatureMismatch)),
            "{header}"
        );
    }
}

#[tokio::test]
async fn svix_other_signature_versions_are_ignored() {
    let ts = NOW.to_string();
    let good = svix_signature(SVIX_KEY, "msg_1", &ts, BODY);
    // A correct MAC labelled v2 (or v1a) is not a v1 signature.
    let relabelled = good.replacen("v1,", "v2,", 1);
    for header in [relabelled.clone(), good.replacen("v1,", "v1a,", 1)] {
        assert_eq!(
            svix().verify(&svix_headers("msg_1", &ts, &header), BODY, NOW).await,
            Err(invalid(WebhookError::NoSupportedSignature))
        );
    }
    // Alongside a valid v1 entry, other versions change nothing.
    accepted(&svix(), &svix_headers("msg_1", &ts, &format!("{relabelled} {good}")), BODY, NOW).await;
}

#[tokio::test]
async fn svix_entry_without_a_version_is_malformed() {
    let ts = NOW.to_string();
    let good = svix_signature(SVIX_KEY, "msg_1", &ts, BODY);
    let bare = good.trim_start_matches("v1,").to_owned();
    assert_eq!(
        svix().verify(&svix_headers("msg_1", &ts, &format!("{bare} {good}")), BODY, NOW).await,
        Err(invalid(WebhookError::MalformedHeader { header: "svix-signature" }))
    );
}

#[tokio::test]
async fn svix_tampered_body_is_refused() {
    let h = signed_svix("msg_1", NOW);
    let tampered = br#"{"type":"email.delivered","data":{"to":"mallory@example.com"}}"#;
    assert_eq!(svix().verify(&h, tampered, NOW).await, Err(invalid(WebhookError::SignatureMismatch)));
    assert_eq!(svix().verify(&h, b"", NOW).await, Err(invalid(WebhookError::SignatureMismatch)));
}

#[tokio::test]
async fn svix_tampered_id_is_refused() {
    let ts = NOW.to_string();
    let sig = svix_signature(SVIX_KEY, "msg_1", &ts, BODY);
    assert_eq!(
        svix().verify(&svix_headers("msg_2", &ts, &sig), BODY, NOW).await,
        Err(invalid(WebhookError::SignatureMismatch))
    );
}

#[tokio::test]
async fn svix_tampered_timestamp_is_refused() {
    let sig = svix_signature(SVIX_KEY, "msg_1", &NOW.to_string(), BODY);
    let later = (NOW + 1).to_string();
    assert_eq!(
        svix().verify(&svix_headers("msg_1", &later, &sig), BODY, NOW).await,
        Err(invalid(WebhookError::SignatureMismatch))
    );
}

#[tokio::test]
async fn svix_moving_the_dot_between_id_and_timestamp_is_refused() {
    // "{id}.{ts}.{body}" would read the same with id "msg_1.1700000000": ids with a dot are refused.
    let ts = NOW.to_string();
    let sig = svix_signature(SVIX_KEY, "msg_1", &ts, BODY);
    let shifted_id = format!("msg_1.{ts}");
    assert_eq!(
        svix().verify(&svix_headers(&shifted_id, "1", &sig), BODY, 1).await,
        Err(invalid(WebhookError::MalformedId))
    );
    for bad_id in ["", "msg 1", "msg_\u{e9}"] {
        let mut h = signed_svix("msg_1", NOW);
        if let Ok(v) = HeaderValue::from_str(bad_id) {
            h.insert("svix-id", v);
            assert!(svix().verify(&h, BODY, NOW).await.is_err(), "{bad_id:?}");
        }
    }
}

#[tokio::test]
async fn svix_stale_timestamp_is_refused() {
    let h = signed_svix("msg_1", NOW - 301);
    assert_eq!(svix().verify(&h, BODY, NOW).await, Err(invalid(WebhookError::TimestampTooOld)));
    let h = signed_svix("msg_1", NOW - 86_400);
    assert_eq!(svix().verify(&h, BODY, NOW).await, Err(invalid(WebhookError::TimestampTooOld)));
}

#[tokio::test]
async fn svix_timestamp_exactly_at_the_tolerance_in_the_past_is_accepted() {
    accepted(&svix(), &signed_svix("msg_1", NOW - 300), BODY, NOW).await;
}

#[tokio::test]
async fn svix_future_timestamp_is_refused() {
    let h = signed_svix("msg_1", NOW + 301);
    assert_eq!(svix().verify(&h, BODY, NOW).await, Err(invalid(WebhookError::TimestampInFuture)));
}

#[tokio::test]
async fn svix_timestamp_exactly_at_the_tolerance_in_the_future_is_accepted() {
    accepted(&svix(), &signed_svix("msg_1", NOW + 300), BODY, NOW).await;
}

#[tokio::test]
async fn a_custom_tolerance_moves_both_edges() {
    let v = svix().with_tolerance(Duration::from_secs(60)).unwrap();
    accepted(&v, &signed_svix("msg_1", NOW - 60), BODY, NOW).await;
    accepted(&v, &signed_svix("msg_1", NOW + 60), BODY, NOW).await;
    assert_eq!(
        v.verify(&signed_svix("msg_1", NOW - 61), BODY, NOW).await,
        Err(invalid(WebhookError::TimestampTooOld))
    );
    assert_eq!(
        v.verify(&signed_svix("msg_1", NOW + 61), BODY, NOW).await,
        Err(invalid(WebhookError::TimestampInFuture))
    );
    for bad in [Duration::ZERO, Duration::from_millis(999), Duration::from_secs(3601)] {
        assert_eq!(svix().with_tolerance(bad).unwrap_err().setting(), "webhook_tolerance");
    }
}

#[tokio::test]
async fn svix_non_decimal_timestamp_is_refused() {
    let n = NOW.to_string();
    let cases = [
        format!("+{n}"),
        format!("-{n}"),
        format!("{n}.0"),
        format!("0{n}"),
        format!("{n} "),
        format!("\t{n}"),
        "1.7e9".to_owned(),
        "0x6553f100".to_owned(),
        "".to_owned(),
        "1234567890123".to_owned(),
        "99999999999999999999999".to_owned(),
        "abc".to_owned(),
    ];
    for ts in cases {
        // Signed exactly as sent: the format is refused, not the MAC.
        let sig = svix_signature(SVIX_KEY, "msg_1", &ts, BODY);
        assert_eq!(
            svix().verify(&svix_headers("msg_1", &ts, &sig), BODY, NOW).await,
            Err(invalid(WebhookError::MalformedTimestamp)),
            "{ts:?}"
        );
    }
}

#[tokio::test]
async fn svix_missing_headers_are_refused() {
    for missing in ["svix-id", "svix-timestamp", "svix-signature"] {
        let mut h = signed_svix("msg_1", NOW);
        h.remove(missing);
        assert_eq!(
            svix().verify(&h, BODY, NOW).await,
            Err(invalid(WebhookError::MissingHeader { header: missing })),
            "{missing}"
        );
    }
    // No webhook header at all: reported against the Standard Webhooks names.
    assert!(matches!(
        svix().verify(&HeaderMap::new(), BODY, NOW).await,
        Err(Rejection::InvalidCredential { mechanism: "webhook", .. })
    ));
}

#[tokio::test]
async fn svix_duplicated_headers_are_refused() {
    for name in ["svix-id", "svix-timestamp", "svix-signature"] {
        let mut h = signed_svix("msg_1", NOW);
        let copy = h.get(name).unwrap().clone();
        h.append(name, copy);
        assert_eq!(
            svix().verify(&h, BODY, NOW).await,
            Err(invalid(WebhookError::DuplicateHeader { header: name }))
        );
    }
}

#[tokio::test]
async fn svix_oversized_headers_are_refused() {
    // A 256-byte id is fine; 257 is not.
    let id = "m".repeat(256);
    accepted(&svix(), &signed_svix(&id, NOW), BODY, NOW).await;
    let id = "m".repeat(257);
    assert_eq!(
        svix().verify(&signed_svix(&id, NOW), BODY, NOW).await,
        Err(invalid(WebhookError::HeaderTooLarge { header: "svix-id" }))
    );

    let ts = NOW.to_string();
    let good = svix_signature(SVIX_KEY, "msg_1", &ts, BODY);
    let padded = format!("{}{good}", "v9,x ".repeat(8 * 1024 / 5));
    assert_eq!(
        svix().verify(&svix_headers("msg_1", &ts, &padded), BODY, NOW).await,
        Err(invalid(WebhookError::HeaderTooLarge { header: "svix-signature" }))
    );
}

#[tokio::test]
async fn svix_more_than_sixteen_signatures_are_refused() {
    let ts = NOW.to_string();
    let good = svix_signature(SVIX_KEY, "msg_1", &ts, BODY);
    let wrong = svix_signature(b"the-previous-key-24bytes", "msg_1", &ts, BODY);
    let sixteen = format!("{} {good}", vec![wrong.as_str(); 15].join(" "));
    accepted(&svix(), &svix_headers("msg_1", &ts, &sixteen), BODY, NOW).await;
    let seventeen = format!("{wrong} {sixteen}");
    assert_eq!(
        svix().verify(&svix_headers("msg_1", &ts, &seventeen), BODY, NOW).await,
        Err(invalid(WebhookError::TooManySignatures))
    );
}

#[tokio::test]
async fn svix_wrong_secret_is_refused() {
    let other =
        WebhookVerifier::svix(format!("whsec_{}", STANDARD.encode(b"another-key-of-24-bytes!"))).unwrap();
    assert_eq!(
        other.verify(&signed_svix("msg_1", NOW), BODY, NOW).await,
        Err(invalid(WebhookError::SignatureMismatch))
    );
}

#[test]
fn svix_secret_format_errors_are_config_errors() {
    let encoded = STANDARD.encode(SVIX_KEY);
    let cases = [
        encoded.clone(),                                 // no prefix
        format!("whsec{encoded}"),                       // prefix misspelt
        format!("WHSEC_{encoded}"),                      // prefix case
        format!("whsec_{}", &encoded[..31]),             // cut base64
        format!("whsec_{}!", &encoded[..31]),            // not base64
        format!("whsec_{}", STANDARD.encode([1u8; 23])), // 23 bytes
        "whsec_".to_owned(),                             // empty key
        format!("whsec_{encoded}\n"),                    // trailing newline
        format!(" whsec_{encoded}"),                     // leading space
    ];
    for secret in cases {
        let err = WebhookVerifier::svix(secret.clone()).unwrap_err();
        assert_eq!(err.setting(), "webhook_secret", "{secret:?}");
        // The message never repeats the secret.
        if encoded.len() > 8 {
            assert!(!err.to_string().contains(&encoded[..8]), "{err}");
        }
    }
    assert_eq!(WebhookVerifier::svix(vec![0xffu8, 0xfe]).unwrap_err().setting(), "webhook_secret");
    // Unpadded base64 of a 32-byte key is still accepted.
    let unpadded = STANDARD.encode([9u8; 32]).trim_end_matches('=').to_owned();
    assert!(WebhookVerifier::svix(format!("whsec_{unpadded}")).is_ok());
}

// ---- Replay -------------------------------------------------------------------------------------

#[tokio::test]
async fn svix_replayed_id_is_refused_with_409() {
    let (verifier, _) = svix_with_guard();
    let message = accepted(&verifier, &signed_svix("msg_1", NOW), BODY, NOW).await;
    assert!(message.replay_checked());
    let replay = verifier.verify(&signed_svix("msg_1", NOW), BODY, NOW + 10).await.unwrap_err();
    assert_eq!(replay, Rejection::Replayed);
    assert_eq!(replay.status(), http::StatusCode::CONFLICT);
    // A new signature over the same id (a retry) is still the same message within the window.
    assert_eq!(
        verifier.verify(&signed_svix("msg_1", NOW + 5), BODY, NOW + 10).await,
        Err(Rejection::Replayed)
    );
    // Other ids are unaffected.
    accepted(&verifier, &signed_svix("msg_2", NOW), BODY, NOW).await;
}

#[tokio::test]
async fn svix_replay_record_outlives_the_tolerance_of_the_original() {
    let (verifier, _) = svix_with_guard();
    accepted(&verifier, &signed_svix("msg_1", NOW), BODY, NOW).await;
    // At the last second the original still passes the window, the record still refuses it.
    assert_eq!(verifier.verify(&signed_svix("msg_1", NOW), BODY, NOW + 300).await, Err(Rejection::Replayed));
    // One second later the original is stale anyway.
    assert_eq!(
        verifier.verify(&signed_svix("msg_1", NOW), BODY, NOW + 301).await,
        Err(invalid(WebhookError::TimestampTooOld))
    );
    // A provider retry with a fresh timestamp, after the record expired, is accepted.
    accepted(&verifier, &signed_svix("msg_1", NOW + 301), BODY, NOW + 301).await;
}

#[tokio::test]
async fn bad_signature_does_not_burn_the_id() {
    let (verifier, guard) = svix_with_guard();
    let ts = NOW.to_string();
    let forged = svix_signature(b"attacker-guessed-key-24b", "msg_1", &ts, BODY);
    assert_eq!(
        verifier.verify(&svix_headers("msg_1", &ts, &forged), BODY, NOW).await,
        Err(invalid(WebhookError::SignatureMismatch))
    );
    // A stale but genuine delivery does not record it either.
    assert!(verifier.verify(&signed_svix("msg_1", NOW - 400), BODY, NOW).await.is_err());
    assert!(guard.is_empty());
    accepted(&verifier, &signed_svix("msg_1", NOW), BODY, NOW).await;
}

#[tokio::test]
async fn replay_keys_are_scoped_by_scheme() {
    let guard: Arc<dyn ReplayGuard> = Arc::new(InMemoryReplayGuard::default());
    let svix = svix().with_replay_guard(guard.clone());
    let stripe = stripe().with_replay_guard(guard.clone());
    let github = github().with_replay_guard(guard.clone());

    let s = accepted(&svix, &signed_svix("msg_1", NOW), BODY, NOW).await;
    let t = NOW.to_string();
    let v1 = stripe_v1(STRIPE_SECRET.as_bytes(), NOW, BODY);
    let st = accepted(&stripe, &stripe_headers(&format!("t={t},v1={v1}")), BODY, NOW).await;
    let gh = accepted(&github, &github_headers(&github_signature(BODY)), BODY, NOW).await;

    assert_eq!(s.replay_key(), "svix:msg_1");
    assert_eq!(st.replay_key(), format!("stripe:{v1}"));
    assert_eq!(gh.replay_key(), format!("github:{}", hex(&mac(GITHUB_SECRET.as_bytes(), &[BODY]))));
    // A Svix id spelled like another scheme's key lands in the svix: scope.
    let spoof = format!("stripe:{v1}");
    accepted(&svix, &signed_svix(&spoof, NOW), BODY, NOW).await;
}

#[tokio::test]
async fn replay_store_full_fails_closed() {
    let guard = Arc::new(InMemoryReplayGuard::with_capacity(2));
    let verifier = svix().with_replay_guard(guard.clone());
    accepted(&verifier, &signed_svix("msg_1", NOW), BODY, NOW).await;
    accepted(&verifier, &signed_svix("msg_2", NOW + 10), BODY, NOW + 10).await;

    // Full of live records: a new genuine message is refused (503), not let through unchecked,
    // and no record is forgotten.
    let full = verifier.verify(&signed_svix("msg_3", NOW + 20), BODY, NOW + 20).await.unwrap_err();
    assert_eq!(full, invalid(WebhookError::ReplayStore(ReplayStoreError::Full { capacity: 2 })));
    assert_eq!(full.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(verifier.verify(&signed_svix("msg_1", NOW), BODY, NOW + 20).await, Err(Rejection::Replayed));

    // Once msg_1's record expires, its slot is reused.
    accepted(&verifier, &signed_svix("msg_3", NOW + 301), BODY, NOW + 301).await;
    assert_eq!(guard.len(), 2);
    assert_eq!(
        verifier.verify(&signed_svix("msg_2", NOW + 10), BODY, NOW + 301).await,
        Err(Rejection::Replayed)
    );
}

#[derive(Debug)]
struct UnreachableStore;

impl ReplayGuard for UnreachableStore {
    fn first_seen<'a>(&'a self, _: &'a str, _: u64, _: u64) -> BoxFuture<'a, Result<bool, ReplayStoreError>> {
        Box::pin(async { Err(ReplayStoreError::Unavailable("connection refused".to_owned())) })
    }
}

#[tokio::test]
async fn replay_store_unreachable_fails_closed() {
    let verifier = svix().with_replay_guard(Arc::new(UnreachableStore));
    let err = verifier.verify(&signed_svix("msg_1", NOW), BODY, NOW).await.unwrap_err();
    assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err.code(), "state_unavailable");
    // Opting out of the guard explicitly still verifies the signature.
    let message = verifier.verify_without_replay_guard(&signed_svix("msg_1", NOW), BODY, NOW).unwrap();
    assert!(!message.replay_checked());
    assert_eq!(
        verifier.verify_without_replay_guard(&signed_svix("msg_1", NOW), b"tampered", NOW),
        Err(WebhookError::SignatureMismatch)
    );
}

#[tokio::test]
async fn an_operator_may_accept_unchecked_while_the_replay_store_is_down_but_never_a_bad_signature() {
    let verifier = svix()
        .with_replay_guard(Arc::new(UnreachableStore))
        .accept_unchecked_while_replay_store_unavailable();
    let message = verifier.verify(&signed_svix("msg_1", NOW), BODY, NOW).await.unwrap();
    assert!(!message.replay_checked(), "reported as checked");
    let err = verifier.verify(&signed_svix("msg_1", NOW), b"tampered", NOW).await.unwrap_err();
    assert_eq!(err.code(), "invalid_credential");
}

#[tokio::test]
async fn concurrent_deliveries_of_one_message_are_accepted_once() {
    let (verifier, _) = svix_with_guard();
    let verifier = Arc::new(verifier);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let verifier = verifier.clone();
        tasks.push(tokio::spawn(async move { verifier.verify(&signed_svix("msg_1", NOW), BODY, NOW).await }));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(e) => assert_eq!(e, Rejection::Replayed),
        }
    }
    assert_eq!(accepted, 1);
}

// ---- GitHub -------------------------------------------------------------------------------------

#[tokio::test]
async fn github_valid_signature_is_accepted() {
    let message = accepted(&github(), &github_headers(&github_signature(BODY)), BODY, NOW).await;
    assert_eq!(message.scheme(), WebhookScheme::GitHub);
    // Nothing but the body is signed: no id, no timestamp.
    assert_eq!(message.id(), None);
    assert_eq!(message.timestamp(), None);
}

#[tokio::test]
async fn github_uppercase_hex_is_refused() {
    let upper = format!("sha256={}", github_signature(BODY).trim_start_matches("sha256=").to_uppercase());
    assert_eq!(
        github().verify(&github_headers(&upper), BODY, NOW).await,
        Err(invalid(WebhookError::MalformedSignature))
    );
}

#[tokio::test]
async fn github_wrong_length_hex_is_refused() {
    let good = github_signature(BODY);
    for bad in
        [good[..good.len() - 1].to_owned(), format!("{good}0"), format!("{good}00"), "sha256=".to_owned()]
    {
        assert_eq!(
            github().verify(&github_headers(&bad), BODY, NOW).await,
            Err(invalid(WebhookError::MalformedSignature)),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn github_missing_sha256_prefix_is_refused() {
    let good = github_signature(BODY);
    let hex_only = good.trim_start_matches("sha256=");
    for bad in [hex_only.to_owned(), format!("sha1={hex_only}"), format!("SHA256={hex_only}")] {
        assert_eq!(
            github().verify(&github_headers(&bad), BODY, NOW).await,
            Err(invalid(WebhookError::NoSupportedSignature)),
            "{bad}"
        );
    }
    // The legacy SHA-1 header alone is not enough.
    let h = headers(&[("x-hub-signature", "sha1=0000000000000000000000000000000000000000")]);
    assert_eq!(
        github().verify(&h, BODY, NOW).await,
        Err(invalid(WebhookError::MissingHeader { header: "x-hub-signature-256" }))
    );
}

#[tokio::test]
async fn github_tampered_body_is_refused() {
    let h = github_headers(&github_signature(BODY));
    assert_eq!(github().verify(&h, b"{}", NOW).await, Err(invalid(WebhookError::SignatureMismatch)));
    let other = WebhookVerifier::github("a-different-github-secret").unwrap();
    assert_eq!(other.verify(&h, BODY, NOW).await, Err(invalid(WebhookError::SignatureMismatch)));
}

#[tokio::test]
async fn github_identical_body_is_refused_within_the_window_whatever_the_delivery_id() {
    let verifier = github().with_replay_guard(Arc::new(InMemoryReplayGuard::default()));
    let sig = github_signature(BODY);
    accepted(&verifier, &github_headers(&sig), BODY, NOW).await;
    // X-GitHub-Delivery is unsigned: changing it does not make a replay new.
    let h = headers(&[("x-hub-signature-256", &sig), ("x-github-delivery", "another-delivery-id")]);
    assert_eq!(verifier.verify(&h, BODY, NOW + 300).await, Err(Rejection::Replayed));
    // GitHub has no timestamp: after the window, the guard has forgotten it (documented limit).
    accepted(&verifier, &h, BODY, NOW + 301).await;
}

#[test]
fn github_secret_format_errors_are_config_errors() {
    for bad in ["", "short", "fifteen-bytes!!", "ztgate-github-test-secret\n"] {
        assert_eq!(WebhookVerifier::github(bad).unwrap_err().setting(), "webhook_secret", "{bad:?}");
    }
}

// ---- Stripe -------------------------------------------------------------------------------------

#[tokio::test]
async fn stripe_valid_signature_is_accepted() {
    let v1 = stripe_v1(STRIPE_SECRET.as_bytes(), NOW, BODY);
    let message = accepted(&stripe(), &stripe_headers(&format!("t={NOW},v1={v1}")), BODY, NOW).await;
    assert_eq!(message.scheme(), WebhookScheme::Stripe);
    assert_eq!(message.timestamp(), Some(NOW));
    assert_eq!(message.id(), None);
    // Order of the items does not matter; v0 alongside is ignored.
    let v0 = hex(&[0u8; 32]);
    accepted(&stripe(), &stripe_headers(&format!("v0={v0},v1={v1},t={NOW}")), BODY, NOW).await;
}

#[tokio::test]
async fn stripe_secret_is_used_as_is_not_base64_decoded() {
    // Keyed with the decoded bytes after `whsec_` (the Svix rule), a signature must fail.
    let svix_style = STANDARD.decode("ztgatestripetestsecret00").unwrap();
    let v1 = stripe_v1(&svix_style, NOW, BODY);
    let decoded_secret = WebhookVerifier::stripe("whsec_ztgatestripetestsecret00").unwrap();
    assert_eq!(
        decoded_secret.verify(&stripe_headers(&format!("t={NOW},v1={v1}")), BODY, NOW).await,
        Err(invalid(WebhookError::SignatureMismatch))
    );
    let v1 = stripe_v1(b"whsec_ztgatestripetestsecret00", NOW, BODY);
    accepted(&decoded_secret, &stripe_headers(&format!("t={NOW},v1={v1}")), BODY, NOW).await;
}

#[tokio::test]
async fn stripe_one_valid_among_multiple_v1_is_accepted() {
    let good = stripe_v1(STRIPE_SECRET.as_bytes(), NOW, BODY);
    let rolled = stripe_v1(b"whsec_the-previous-stripe-secret", NOW, BODY);
    accepted(&stripe(), &stripe_headers(&format!("t={NOW},v1={rolled},v1={good}")), BODY, NOW).await;
    accepted(&stripe(), &stripe_headers(&format!("t={NOW},v1=NOTHEX,v1={good}")), BODY, NOW).await;
    assert_eq!(
        stripe().verify(&stripe_headers(&format!("t={NOW},v1={rolled}")), BODY, NOW).await,
        Err(invalid(WebhookError::SignatureMismatch))
    );
    let uppercase = good.to_uppercase();
    assert_eq!(
        stripe().verify(&stripe_headers(&format!("t={NOW},v1={uppercase}")), BODY, NOW).await,
        Err(invalid(WebhookError::SignatureMismatch))
    );
}

#[tokio::test]
async fn stripe_stale_and_future_timestamps_are_refused() {
    let signed =
        |t: u64| stripe_headers(&format!("t={t},v1={}", stripe_v1(STRIPE_SECRET.as_bytes(), t, BODY)));
    accepted(&stripe(), &signed(NOW - 300), BODY, NOW).await;
    accepted(&stripe(), &signed(NOW + 300), BODY, NOW).await;
    assert_eq!(
        stripe().verify(&signed(NOW - 301), BODY, NOW).await,
        Err(invalid(WebhookError::TimestampTooOld))
    );
    assert_eq!(
        stripe().verify(&signed(NOW + 301), BODY, NOW).await,
        Err(invalid(WebhookError::TimestampInFuture))
    );
}

#[tokio::test]
async fn stripe_v0_only_is_refused() {
    // Even a "v0" that is a correct MAC is not accepted: only v1 is Stripe's live scheme.
    let mac = stripe_v1(STRIPE_SECRET.as_bytes(), NOW, BODY);
    assert_eq!(
        stripe().verify(&stripe_headers(&format!("t={NOW},v0={mac}")), BODY, NOW).await,
        Err(invalid(WebhookError::NoSupportedSignature))
    );
}

#[tokio::test]
async fn stripe_tampered_body_or_timestamp_is_refused() {
    let v1 = stripe_v1(STRIPE_SECRET.as_bytes(), NOW, BODY);
    assert_eq!(
        stripe().verify(&stripe_headers(&format!("t={NOW},v1={v1}")), b"{}", NOW).await,
        Err(invalid(WebhookError::SignatureMismatch))
    );
    let later = NOW + 1;
    assert_eq!(
        stripe().verify(&stripe_headers(&format!("t={later},v1={v1}")), BODY, NOW).await,
        Err(invalid(WebhookError::SignatureMismatch))
    );
}

#[tokio::test]
async fn stripe_malformed_headers_are_refused() {
    let v1 = stripe_v1(STRIPE_SECRET.as_bytes(), NOW, BODY);
    let malformed = invalid(WebhookError::MalformedHeader { header: "stripe-signature" });
    let cases = [
        (format!("t={NOW},t={},v1={v1}", NOW + 1), malformed.clone()), // two timestamps
        (format!("v1={v1}"), malformed.clone()),                       // none
        (format!("t={NOW},v1={v1},"), malformed.clone()),              // trailing comma
        (format!("t={NOW},{v1}"), malformed.clone()),                  // an item without `=`
        (format!("t={NOW};v1={v1}"), invalid(WebhookError::MalformedTimestamp)),
        (format!("t=+{NOW},v1={v1}"), invalid(WebhookError::MalformedTimestamp)),
        (format!("t= {NOW},v1={v1}"), invalid(WebhookError::MalformedTimestamp)),
        (format!("t={NOW}"), invalid(WebhookError::NoSupportedSignature)),
    ];
    for (value, expected) in cases {
        assert_eq!(stripe().verify(&stripe_headers(&value), BODY, NOW).await, Err(expected), "{value}");
    }
    let seventeen = format!("t={NOW}{}", format!(",v1={v1}").repeat(17));
    assert_eq!(
        stripe().verify(&stripe_headers(&seventeen), BODY, NOW).await,
        Err(invalid(WebhookError::TooManySignatures))
    );
    assert_eq!(
        stripe().verify(&HeaderMap::new(), BODY, NOW).await,
        Err(invalid(WebhookError::MissingHeader { header: "stripe-signature" }))
    );
}

#[tokio::test]
async fn stripe_replayed_delivery_is_refused() {
    let verifier = stripe().with_replay_guard(Arc::new(InMemoryReplayGuard::default()));
    let v1 = stripe_v1(STRIPE_SECRET.as_bytes(), NOW, BODY);
    accepted(&verifier, &stripe_headers(&format!("t={NOW},v1={v1}")), BODY, NOW).await;
    // Reordering or padding the header does not make a replay new.
    let junk = hex(&[1u8; 32]);
    let reshuffled = stripe_headers(&format!("v1={junk},v1={v1},t={NOW}"));
    assert_eq!(verifier.verify(&reshuffled, BODY, NOW + 1).await, Err(Rejection::Replayed));
}

#[test]
fn stripe_secret_format_errors_are_config_errors() {
    for bad in [
        "ztgate-stripe-test-secret", // no prefix
        "whsec_short",               // too short
        "whsec_has a space in the middle",
        "whsec_ztgate-stripe-test-secret\n",
        "sk_test_ztgate-stripe-test-key",
    ] {
        assert_eq!(WebhookVerifier::stripe(bad).unwrap_err().setting(), "webhook_secret", "{bad:?}");
    }
}

// ---- Body, bounds, secrecy ----------------------------------------------------------------------

#[tokio::test]
async fn body_over_cap_is_payload_too_large() {
    // Reading: the helpers refuse before the verifier sees anything.
    let mut body = Vec::new();
    let chunk = vec![b'x'; 64 * 1024];
    let mut refused = None;
    for _ in 0..17 {
        if let Err(e) = append_capped(&mut body, &chunk, DEFAULT_MAX_BODY_BYTES) {
            refused = Some(e);
            break;
        }
    }
    assert_eq!(refused, Some(Rejection::PayloadTooLarge { limit: DEFAULT_MAX_BODY_BYTES }));
    assert_eq!(body.len(), DEFAULT_MAX_BODY_BYTES);
    assert_eq!(refused.unwrap().status(), http::StatusCode::PAYLOAD_TOO_LARGE);

    let declared = headers(&[("content-length", "1048577")]);
    assert_eq!(
        check_content_length(&declared, DEFAULT_MAX_BODY_BYTES),
        Err(Rejection::PayloadTooLarge { limit: DEFAULT_MAX_BODY_BYTES })
    );
    assert_eq!(
        check_content_length(&headers(&[("content-length", "1048576")]), DEFAULT_MAX_BODY_BYTES),
        Ok(())
    );
    assert_eq!(check_content_length(&HeaderMap::new(), DEFAULT_MAX_BODY_BYTES), Ok(()));

    // Verifying: an oversized body is refused even when correctly signed.
    let verifier = svix().with_max_body_bytes(16);
    assert_eq!(verifier.max_body_bytes(), 16);
    assert_eq!(
        verifier.verify(&signed_svix("msg_1", NOW), BODY, NOW).await,
        Err(Rejection::PayloadTooLarge { limit: 16 })
    );
}

#[tokio::test]
async fn debug_output_never_contains_secrets() {
    let svix_b64 = STANDARD.encode(SVIX_KEY);
    let verifiers = [svix(), github(), stripe().with_replay_guard(Arc::new(InMemoryReplayGuard::default()))];
    for v in &verifiers {
        let debug = format!("{v:?}");
        assert!(debug.contains("redacted"), "{debug}");
        for secret in
            [svix_b64.as_str(), "ztgate-svix-test-key", GITHUB_SECRET, STRIPE_SECRET, "stripe-test-secret"]
        {
            assert!(!debug.contains(secret), "{debug}");
        }
    }
    // Errors from bad secrets, Display and Debug alike.
    let errors = [
        WebhookVerifier::svix(format!("whsec_{}!", &svix_b64[..31])).unwrap_err(),
        WebhookVerifier::svix(svix_b64.clone()).unwrap_err(),
        WebhookVerifier::stripe("whsec_ztgate stripe-test-secret").unwrap_err(),
    ];
    for e in &errors {
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(!text.contains(&svix_b64[..8]) && !text.contains("stripe-test-secret"), "{text}");
        }
    }
}

#[tokio::test]
async fn rejections_never_echo_header_values() {
    const MARK: &str = "INJECTED-MARKER";
    let long_id = format!("{MARK}{}", "m".repeat(300));
    let cases = [
        svix_headers(MARK, &NOW.to_string(), &format!("v1,{MARK}")),
        svix_headers("msg_1", MARK, "v1,x"),
        svix_headers(&long_id, &NOW.to_string(), "v1,x"),
        svix_headers("msg_1", &NOW.to_string(), MARK),
        svix_headers(&format!("{MARK}.x"), &NOW.to_string(), "v1,x"),
    ];
    for h in &cases {
        let e = svix().verify(h, BODY, NOW).await.unwrap_err();
        let detail = svix().verify_without_replay_guard(h, BODY, NOW).unwrap_err();
        for text in [e.to_string(), format!("{e:?}"), detail.to_string(), format!("{detail:?}")] {
            assert!(!text.contains(MARK), "{text}");
        }
        let response = e.to_response::<String>();
        assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);
        assert!(!response.body().contains(MARK));
    }
}

#[test]
fn verification_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let verifier = svix();
    let h = HeaderMap::new();
    let fut = verifier.verify(&h, BODY, NOW);
    assert_send(&fut);
}
