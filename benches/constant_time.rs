//! dudect-style timing test of ztgate's secret compares: does the time a refusal takes depend on
//! how much of the secret the candidate got right?
//!
//! Each function times one refused check per sample, the two classes randomly interleaved:
//! **Left**, a candidate equal to the secret except in its last byte (a long matching prefix:
//! an early-exit compare runs to the end); **Right**, equal to the secret except in its first
//! byte (an early-exit compare stops at once). Signatures sent as text (hex, base64) change one
//! character for another of the same kind, so the decoder takes the same branches for every
//! candidate. Welch's t-test then compares the two timing distributions, whole and cropped at
//! 100 percentiles; `max t` is the largest |t|. Below 5 is the usual "no evidence of a leak";
//! a leak shows as |t| growing with the sample count.
//!
//! Controls: `leaky_control` is a byte-by-byte early-exit compare over 4 KiB (it must show a
//! huge |t|: the harness can see a leak on this machine); `ct_control` is `subtle`'s `ct_eq` on
//! the same inputs. Calibrations: `null_*` send a webhook function's very candidates to a
//! verifier with another secret, where neither class matches anything, so whatever |t| they
//! show comes from the candidate bytes (public input), not from the secret.
//!
//! `cargo bench --bench constant_time` (about a minute); some functions only:
//! `cargo bench --bench constant_time -- --filter webhook`. Results: `docs/hardening.md`.

use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use dudect_bencher::ctbench::{BenchFn, BenchMetadata, BenchName, BenchOpts, run_benches_console};
use dudect_bencher::rand::RngExt;
use dudect_bencher::{BenchRng, Class, CtRunner};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, Method};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use ztgate::identity::hmac_token::KeyRing;
use ztgate::identity::webhook::WebhookVerifier;
use ztgate::identity::{ApiKeyAuth, ApiKeys};
use ztgate::identity::{Attempt, Mechanism};
use ztgate::request::{RequestFacts, RequestLimits};

/// Samples per function (both classes together).
const SAMPLES: usize = 1_000_000;
/// Distinct inputs per class, picked at random for each sample.
const POOL: usize = 4096;

const API_KEY: &str = "ct-bench-api-key-0123456789abcdef0123456789abcdef0123456789abcdef"; // pragma: allowlist secret
const HMAC_SPEC: &str = "ct:ct-bench-hmac-key-0123456789abcdef0123456789"; // pragma: allowlist secret
const SVIX_KEY: [u8; 32] = *b"ct-bench-svix-key-0123456789abcd"; // pragma: allowlist secret
const GITHUB_SECRET: &str = "ct-bench-github-secret-0123456789"; // pragma: allowlist secret
const STRIPE_SECRET: &str = "whsec_ctBenchStripeSecret0123456789"; // pragma: allowlist secret
const NOW: u64 = 1_800_000_000;

/// `secret` with its last byte changed (Left: an early-exit compare runs to the end) or its
/// first byte changed (Right: it stops at once). Both classes vary one byte and are otherwise
/// the same, so whatever parses the candidate (hex, base64) sees equally varied input.
fn candidate(secret: &[u8], class: Class, rng: &mut BenchRng) -> Vec<u8> {
    let mut c = secret.to_vec();
    let at = match class {
        Class::Left => c.len() - 1,
        Class::Right => 0,
    };
    c[at] ^= 1 + rng.random::<u8>() % 255;
    c
}

/// The same for a secret written in an alphabet: the changed character stays in it.
fn text_candidate(secret: &str, alphabet: &[u8], class: Class, rng: &mut BenchRng) -> String {
    let mut c = secret.as_bytes().to_vec();
    let at = match class {
        Class::Left => c.len() - 1,
        Class::Right => 0,
    };
    c[at] = loop {
        let pick = alphabet[usize::from(rng.random::<u8>()) % alphabet.len()];
        if pick != c[at] {
            break pick;
        }
    };
    String::from_utf8(c).expect("ASCII alphabet")
}

/// Characters that decode alike: the base64 ones whose last two bits are zero (so the last
/// character of a 32-byte value stays canonical), and hex digits kept within their kind.
const BASE64_SAME_KIND: &[u8] = b"AEIMQUYcgkosw048";

/// A MAC written as text (`encoded`, at `mac_at..` of `text`) with one character changed: the
/// last one that encodes the last MAC byte (Left) or the first one (Right), replaced by a
/// character of the same kind, so every candidate takes the decoder through the same branches
/// and only the position of the first wrong MAC byte tells the classes apart.
fn encoded_candidate(text: &str, mac_at: usize, last: usize, class: Class, rng: &mut BenchRng) -> String {
    let mut c = text.as_bytes().to_vec();
    let at = match class {
        Class::Left => last,
        Class::Right => mac_at,
    };
    let kind: &[u8] = match c[at] {
        b'0'..=b'9' if is_hex(&text[mac_at..=last]) => b"0123456789",
        b'a'..=b'f' if is_hex(&text[mac_at..=last]) => b"abcdef",
        _ => BASE64_SAME_KIND,
    };
    c[at] = loop {
        let pick = kind[usize::from(rng.random::<u8>()) % kind.len()];
        if pick != c[at] {
            break pick;
        }
    };
    String::from_utf8(c).expect("ASCII")
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Times `check(input)` for SAMPLES samples, the classes interleaved at random.
///
/// Each sample times a fresh clone of a pooled input, made just before: the allocator hands
/// both classes the same addresses, so where a pool happens to sit in memory (cache sets,
/// alignment) cannot tell the classes apart.
fn measure<T: Clone>(
    runner: &mut CtRunner,
    rng: &mut BenchRng,
    mut make: impl FnMut(Class, &mut BenchRng) -> T,
    check: impl Fn(&T) -> bool,
) {
    let mut left = Vec::with_capacity(POOL);
    let mut right = Vec::with_capacity(POOL);
    for _ in 0..POOL {
        left.push(make(Class::Left, rng));
        right.push(make(Class::Right, rng));
    }
    // Every candidate must be refused, or the classes measure something else.
    assert!(left.iter().chain(&right).all(|input| !check(input)), "a candidate was accepted");
    for _ in 0..SAMPLES {
        let class = if rng.random::<bool>() { Class::Left } else { Class::Right };
        let i = usize::from(rng.random::<u16>()) % POOL;
        let input = match class {
            Class::Left => left[i].clone(),
            Class::Right => right[i].clone(),
        };
        runner.run_one(class, || check(black_box(&input)));
    }
}

/// Polls a mechanism's future once: every mechanism timed here answers without waiting.
fn attempt_now(mechanism: &ApiKeyAuth, facts: &RequestFacts) -> bool {
    let mut future = pin!(Mechanism::<ztgate::NoClaims>::attempt(mechanism, facts));
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(attempt) => matches!(attempt, Attempt::Verified(_)),
        Poll::Pending => panic!("ApiKeyAuth waited"),
    }
}

/// `ApiKeyAuth` on a request carrying `X-Api-Key` (the key is hashed, then compared).
fn api_key(runner: &mut CtRunner, rng: &mut BenchRng) {
    let keys = Arc::new(ApiKeys::parse(&format!("deploy:{API_KEY}")).expect("key"));
    let auth = ApiKeyAuth::new(keys);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789-"; // pragma: allowlist secret
    let facts = |key: &str| {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_str(key).expect("header"));
        RequestFacts::from_parts(&Method::GET, "/admin", &headers, &RequestLimits::default()).expect("facts")
    };
    assert!(attempt_now(&auth, &facts(API_KEY)), "the real key must verify");
    measure(
        runner,
        rng,
        |class, rng| facts(&text_candidate(API_KEY, alphabet, class, rng)),
        |f| attempt_now(&auth, f),
    );
}

/// `KeyRing::verify` on a token whose MAC is right but for its last byte, or its first.
fn hmac_token(runner: &mut CtRunner, rng: &mut BenchRng) {
    let ring = KeyRing::parse(HMAC_SPEC).expect("ring");
    let token =
        ring.mint("unsubscribe", "alice@example.com", NOW, Duration::from_secs(86_400)).expect("mint");
    assert!(ring.verify(&token, "unsubscribe", NOW).is_ok());
    // The MAC is the last 43 characters (base64url, no padding).
    let (mac_at, last) = (token.len() - 43, token.len() - 1);
    measure(
        runner,
        rng,
        |class, rng| encoded_candidate(&token, mac_at, last, class, rng),
        |t| ring.verify(t, "unsubscribe", NOW).is_ok(),
    );
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const BODY: &[u8] =
    br#"{"type":"email.delivered","data":{"email_id":"4ef9a417-02e9-4d39-ad75-9611e0fcc33c"}}"#;

/// A webhook verifier and the header holding `good`, the signature value as sent.
fn webhook(
    runner: &mut CtRunner,
    rng: &mut BenchRng,
    verifier: WebhookVerifier,
    name: &'static str,
    good: String,
    (mac_at, last): (usize, usize),
    calibrate: Option<WebhookVerifier>,
) {
    let headers = |value: &str| {
        let mut h = base_headers();
        h.insert(name, HeaderValue::from_str(value).expect("header value"));
        h
    };
    // Calibration (`null_*`): the same candidates against a verifier with another secret, for
    // which neither class matches any prefix. What shows there comes from the candidate's
    // bytes alone (public input), not from how much of the secret it got right.
    let verifier = match calibrate {
        Some(other) => other,
        None => {
            assert!(verifier.verify_without_replay_guard(&headers(&good), BODY, NOW).is_ok());
            verifier
        }
    };
    measure(
        runner,
        rng,
        |class, rng| headers(&encoded_candidate(&good, mac_at, last, class, rng)),
        |h| verifier.verify_without_replay_guard(h, BODY, NOW).is_ok(),
    );
}

/// The Svix id and timestamp (ignored by the other schemes).
fn base_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("svix-id", HeaderValue::from_static("msg_ct"));
    h.insert("svix-timestamp", HeaderValue::from_str(&NOW.to_string()).expect("ts"));
    h
}

/// Svix: `svix-signature: v1,<base64>` (43 characters and `=`).
fn webhook_svix(runner: &mut CtRunner, rng: &mut BenchRng) {
    let verifier = WebhookVerifier::svix(format!("whsec_{}", STANDARD.encode(SVIX_KEY))).expect("verifier");
    let ts = NOW.to_string();
    let good =
        format!("v1,{}", STANDARD.encode(mac(&SVIX_KEY, &[b"msg_ct", b".", ts.as_bytes(), b".", BODY])));
    webhook(runner, rng, verifier, "svix-signature", good, (3, 3 + 42), None);
}

/// Calibration for `webhook_svix`: its candidates, another key.
fn null_svix(runner: &mut CtRunner, rng: &mut BenchRng) {
    let verifier = WebhookVerifier::svix(format!("whsec_{}", STANDARD.encode(SVIX_KEY))).expect("verifier");
    let other = WebhookVerifier::svix(format!("whsec_{}", STANDARD.encode([9u8; 32]))).expect("verifier");
    let ts = NOW.to_string();
    let good =
        format!("v1,{}", STANDARD.encode(mac(&SVIX_KEY, &[b"msg_ct", b".", ts.as_bytes(), b".", BODY])));
    webhook(runner, rng, verifier, "svix-signature", good, (3, 3 + 42), Some(other));
}

/// GitHub: `x-hub-signature-256: sha256=<hex>`.
fn webhook_github(runner: &mut CtRunner, rng: &mut BenchRng) {
    let verifier = WebhookVerifier::github(GITHUB_SECRET).expect("verifier");
    let good = format!("sha256={}", hex(&mac(GITHUB_SECRET.as_bytes(), &[BODY])));
    webhook(runner, rng, verifier, "x-hub-signature-256", good, (7, 7 + 63), None);
}

/// Calibration for `webhook_github`: its candidates, another secret.
fn null_github(runner: &mut CtRunner, rng: &mut BenchRng) {
    let verifier = WebhookVerifier::github(GITHUB_SECRET).expect("verifier");
    let other = WebhookVerifier::github("ct-bench-another-github-secret").expect("verifier"); // pragma: allowlist secret
    let good = format!("sha256={}", hex(&mac(GITHUB_SECRET.as_bytes(), &[BODY])));
    webhook(runner, rng, verifier, "x-hub-signature-256", good, (7, 7 + 63), Some(other));
}

/// Stripe: `stripe-signature: t=<ts>,v1=<hex>`.
fn webhook_stripe(runner: &mut CtRunner, rng: &mut BenchRng) {
    let verifier = WebhookVerifier::stripe(STRIPE_SECRET).expect("verifier");
    let ts = NOW.to_string();
    let good = format!("t={ts},v1={}", hex(&mac(STRIPE_SECRET.as_bytes(), &[ts.as_bytes(), b".", BODY])));
    let mac_at = good.len() - 64;
    webhook(runner, rng, verifier, "stripe-signature", good, (mac_at, mac_at + 63), None);
}

/// Calibration for `webhook_stripe`: its candidates, another secret.
fn null_stripe(runner: &mut CtRunner, rng: &mut BenchRng) {
    let verifier = WebhookVerifier::stripe(STRIPE_SECRET).expect("verifier");
    let other = WebhookVerifier::stripe("whsec_ctBenchAnotherSecret0123456789").expect("verifier"); // pragma: allowlist secret
    let ts = NOW.to_string();
    let good = format!("t={ts},v1={}", hex(&mac(STRIPE_SECRET.as_bytes(), &[ts.as_bytes(), b".", BODY])));
    let mac_at = good.len() - 64;
    webhook(runner, rng, verifier, "stripe-signature", good, (mac_at, mac_at + 63), Some(other));
}

/// A 4 KiB secret for the two controls.
fn control_secret() -> Vec<u8> {
    (0..4096u32).map(|i| (i * 131 + 7) as u8).collect()
}

/// Deliberately leaky: an early-exit, byte-by-byte compare. Its |t| must be far above 5.
fn leaky_control(runner: &mut CtRunner, rng: &mut BenchRng) {
    let secret = control_secret();
    let early_exit = |a: &[u8], b: &[u8]| {
        if a.len() != b.len() {
            return false;
        }
        for (x, y) in a.iter().zip(b) {
            if x != y {
                return false;
            }
        }
        true
    };
    measure(runner, rng, |class, rng| candidate(&secret, class, rng), |c| early_exit(black_box(&secret), c));
}

/// The same early-exit compare over 32 bytes, the size of every MAC here: the size of leak the
/// webhook and token rows would have to show.
fn leaky_control_32(runner: &mut CtRunner, rng: &mut BenchRng) {
    let secret: Vec<u8> = control_secret()[..32].to_vec();
    measure(
        runner,
        rng,
        |class, rng| candidate(&secret, class, rng),
        |c| black_box(&secret[..]).iter().zip(c).position(|(x, y)| x != y).is_none(),
    );
}

/// `subtle`'s `ct_eq` on the same inputs as the leaky control.
fn ct_control(runner: &mut CtRunner, rng: &mut BenchRng) {
    let secret = control_secret();
    measure(
        runner,
        rng,
        |class, rng| candidate(&secret, class, rng),
        |c| bool::from(black_box(&secret[..]).ct_eq(c)),
    );
}

/// `ctbench_main!` with an argument parser that tolerates the `--bench` flag `cargo bench`
/// passes (dudect-bencher's own refuses it). A bare argument or `--filter NAME` selects the
/// functions whose name contains it.
fn main() {
    let mut filter = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {}
            "--filter" => filter = args.next(),
            other if !other.starts_with('-') => filter = Some(other.to_owned()),
            other => panic!("unknown argument {other:?} (use --filter NAME)"),
        }
    }
    let benches: [(&'static str, BenchFn); 11] = [
        ("api_key", api_key),
        ("hmac_token", hmac_token),
        ("webhook_svix", webhook_svix),
        ("webhook_github", webhook_github),
        ("webhook_stripe", webhook_stripe),
        ("leaky_control", leaky_control),
        ("leaky_control_32", leaky_control_32),
        ("ct_control", ct_control),
        ("null_svix", null_svix),
        ("null_github", null_github),
        ("null_stripe", null_stripe),
    ];
    let benches = benches
        .into_iter()
        .map(|(name, benchfn)| BenchMetadata { name: BenchName(name), seed: None, benchfn })
        .collect();
    let opts = BenchOpts { filter, ..BenchOpts::default() };
    run_benches_console(opts, benches).expect("console output");
}
