//! The cost of [`KeyRing::verify`] for a typical unsubscribe token, against a bare HMAC-SHA256
//! (the hmac crate) of the same MAC input bytes: once with the key set up per call, as a
//! straightforward verifier does, and once from a state with the key already absorbed, which
//! is what `KeyRing` keeps per key. The difference is what parsing, decoding and the checks add.
//!
//! Also the whole gate (`Gate::check` of a request with the token in its query), and the
//! ratios against the bare HMAC printed at the end: issue target (d), at most 2x.
//!
//! `cargo bench --bench hmac_token`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use ztgate::Gate;
use ztgate::clock::FixedClock;
use ztgate::identity::Requirement;
use ztgate::identity::hmac_token::{HmacKey, KeyRing, SignedTokenAuth, TokenId, TokenSource};
use ztgate::secrets::Secret;

#[path = "ratio/mod.rs"]
mod ratio;

const CURRENT: &str = "bench-key-0123456789abcdef0123456789abcdef"; // pragma: allowlist secret
const PREVIOUS: &str = "bench-key-previous-0000000000000000000000"; // pragma: allowlist secret
const NOW: u64 = 1_767_222_000;
const TTL: u64 = 30 * 86_400;

fn bench(c: &mut Criterion) {
    let ring = Arc::new(
        KeyRing::new(vec![
            HmacKey::new("2025-06", Secret::from(CURRENT)).unwrap(),
            HmacKey::new("2025-01", Secret::from(PREVIOUS)).unwrap(),
        ])
        .unwrap(),
    );
    let id = TokenId::from_bytes([7; TokenId::LEN]);
    let token =
        ring.mint_with_id("unsubscribe", "alice@example.com", NOW, Duration::from_secs(TTL), id).unwrap();
    let expiry = (NOW + TTL).to_string();
    let id_text = id.to_string();
    let mac_input =
        ["ztgate-hmac-v2", "2025-06", "unsubscribe", &expiry, &id_text, "alice@example.com"].join("\0");
    let keyed = Hmac::<Sha256>::new_from_slice(CURRENT.as_bytes()).unwrap();

    // The baselines must compute the token's MAC, or they measure something else.
    let mut check = keyed.clone();
    check.update(mac_input.as_bytes());
    let tag = check.finalize().into_bytes();
    assert!(token.ends_with(&URL_SAFE_NO_PAD.encode(tag)));

    // A v1 token (the format minted before token ids; still verified), made by hand: what
    // the id costs is the difference.
    let v1_input = ["ztgate-hmac-v1", "2025-06", "unsubscribe", &expiry, "alice@example.com"].join("\0");
    let mut v1_mac = keyed.clone();
    v1_mac.update(v1_input.as_bytes());
    let v1 = format!(
        "v1.2025-06.{expiry}.{}.{}",
        URL_SAFE_NO_PAD.encode("alice@example.com"),
        URL_SAFE_NO_PAD.encode(v1_mac.finalize().into_bytes())
    );
    assert!(ring.verify(&v1, "unsubscribe", NOW).is_ok());

    let mut group = c.benchmark_group("hmac_token");
    group.bench_function("KeyRing::verify", |b| {
        b.iter(|| ring.verify(black_box(&token), black_box("unsubscribe"), black_box(NOW)).unwrap())
    });
    group.bench_function("KeyRing::verify, v1 token", |b| {
        b.iter(|| ring.verify(black_box(&v1), black_box("unsubscribe"), black_box(NOW)).unwrap())
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
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let auth = SignedTokenAuth::new(
        ring.clone(),
        "unsubscribe",
        TokenSource::Query("token".into()),
        Arc::new(FixedClock::at(NOW)),
    );
    let gate = Gate::new(Requirement::mechanism(auth));
    let uri = format!("/api/unsubscribe?token={token}");
    let request = || http::Request::builder().uri(uri.as_str()).body(String::new()).unwrap();
    assert!(rt.block_on(gate.check(&request())).is_ok(), "the gate must admit the benchmark token");
    group.bench_function("Gate::check, token in the query", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |r| {
                let gate = &gate;
                async move { gate.check(&r).await.unwrap() }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();

    if !ratio::wanted() {
        return;
    }
    fn timed(f: &dyn Fn()) -> impl FnMut(u64) -> Duration + '_ {
        move |n: u64| {
            let start = Instant::now();
            for _ in 0..n {
                f();
            }
            start.elapsed()
        }
    }
    let verify = || drop(black_box(ring.verify(black_box(&token), "unsubscribe", NOW).unwrap()));
    let bare = || {
        let mut mac = Hmac::<Sha256>::new_from_slice(black_box(CURRENT.as_bytes())).unwrap();
        mac.update(black_box(mac_input.as_bytes()));
        black_box(mac.finalize().into_bytes());
    };
    let absorbed = || {
        let mut mac = black_box(&keyed).clone();
        mac.update(black_box(mac_input.as_bytes()));
        black_box(mac.finalize().into_bytes());
    };
    let through_gate = |n: u64| {
        let batch: Vec<_> = (0..n).map(|_| request()).collect();
        rt.block_on(async {
            let start = Instant::now();
            for r in batch {
                black_box(gate.check(&r).await.unwrap());
            }
            start.elapsed()
        })
    };
    let [v, g, b, a] = ratio::medians(
        11,
        20_000,
        &mut [&mut timed(&verify), &mut { through_gate }, &mut timed(&bare), &mut timed(&absorbed)],
    )[..] else {
        unreachable!()
    };
    ratio::report_ratio("(d) KeyRing::verify / bare HMAC-SHA256", ("verify", v), ("bare", b), Some(2.0));
    ratio::report_ratio("(d) Gate::check / bare HMAC-SHA256", ("gate", g), ("bare", b), Some(2.0));
    ratio::report_ratio(
        "(d) KeyRing::verify / HMAC-SHA256, key pre-absorbed",
        ("verify", v),
        ("absorbed", a),
        None,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
