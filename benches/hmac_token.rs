//! The cost of [`KeyRing::verify`] for a typical unsubscribe token, against a bare HMAC-SHA256
//! (the hmac crate) of the same MAC input bytes: once with the key set up per call, as a
//! straightforward verifier does, and once from a state with the key already absorbed, which
//! is what `KeyRing` keeps per key. The difference is what parsing, decoding and the checks add.
//!
//! `cargo bench --bench hmac_token`

use std::hint::black_box;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use ztgate::identity::hmac_token::{HmacKey, KeyRing};
use ztgate::secrets::Secret;

const CURRENT: &str = "bench-key-0123456789abcdef0123456789abcdef"; // pragma: allowlist secret
const PREVIOUS: &str = "bench-key-previous-0000000000000000000000"; // pragma: allowlist secret
const NOW: u64 = 1_767_222_000;
const TTL: u64 = 30 * 86_400;

fn bench(c: &mut Criterion) {
    let ring = KeyRing::new(vec![
        HmacKey::new("2025-06", Secret::from(CURRENT)).unwrap(),
        HmacKey::new("2025-01", Secret::from(PREVIOUS)).unwrap(),
    ])
    .unwrap();
    let token = ring.mint("unsubscribe", "alice@example.com", NOW, Duration::from_secs(TTL)).unwrap();
    let expiry = (NOW + TTL).to_string();
    let mac_input = ["ztgate-hmac-v1", "2025-06", "unsubscribe", &expiry, "alice@example.com"].join("\0");
    let keyed = Hmac::<Sha256>::new_from_slice(CURRENT.as_bytes()).unwrap();

    // The baselines must compute the token's MAC, or they measure something else.
    let mut check = keyed.clone();
    check.update(mac_input.as_bytes());
    let tag = check.finalize().into_bytes();
    assert!(token.ends_with(&URL_SAFE_NO_PAD.encode(tag)));

    let mut group = c.benchmark_group("hmac_token");
    group.bench_function("KeyRing::verify", |b| {
        b.iter(|| ring.verify(black_box(&token), black_box("unsubscribe"), black_box(NOW)).unwrap())
    });
    group.bench_function("bare HMAC-SHA256, key set up per call", |b| {
        b.iter(|| {
            let mut mac = Hmac::<Sha256>::new_from_slice(black_box(CURRENT.as_bytes())).unwrap();
            mac.update(black_box(mac_input.as_bytes()));
            mac.finalize().into_bytes()
        })
    });
    group.bench_function("bare HMAC-SHA256, key pre-absorbed", |b| {
        b.iter(|| {
            let mut mac = black_box(&keyed).clone();
            mac.update(black_box(mac_input.as_bytes()));
            mac.finalize().into_bytes()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
