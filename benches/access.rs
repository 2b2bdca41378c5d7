//! The cost of the whole layer per request against a bare jsonwebtoken decode + validate of
//! the same token. RSA verification dominates both; the ratio is what ztgate adds.
//!
//! `cargo bench --bench access`

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use ztgate::clock::{Clock, SystemClock};
use ztgate::dev::{DevKey, jwks_json, user_claims};
use ztgate::identity::StaticFetcher;
use ztgate::{AccessConfig, Gate, Policy, Principal, Verified};

const TEAM: &str = "https://acme.cloudflareaccess.com";
const AUD: &str = "bench-aud";

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Claims {
    email: String,
    sub: String,
    exp: u64,
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let key = DevKey::generate("k1").unwrap();
    let token = key.sign(&user_claims(TEAM, AUD, "alice@acme.com", SystemClock.now(), 24 * 3600));

    let jwk = key.public_jwk();
    let decoding = jsonwebtoken::DecodingKey::from_rsa_raw_components(
        &URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap(),
        &URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap(),
    );
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[TEAM]);
    validation.set_audience(&[AUD]);

    let gate = Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
        .fetcher(Arc::new(StaticFetcher::new(jwks_json(&[&key]))))
        .policy(Policy::new().allow_emails(["alice@acme.com"]))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new().layer(gate.clone()).service(service_fn(
        |req: http::Request<String>| async move {
            let ok = req.extensions().get::<Verified<Principal>>().is_some();
            Ok::<_, Infallible>(http::Response::new(if ok { String::new() } else { String::from("missing") }))
        },
    ));
    let request = || {
        http::Request::builder()
            .uri("/admin/whoami")
            .header("cf-access-jwt-assertion", token.as_str())
            .header("cookie", "theme=dark; lang=en")
            .header("cf-connecting-ip", "203.0.113.7")
            .body(String::new())
            .unwrap()
    };
    // Warm the key cache and check that both paths accept the token.
    rt.block_on(async {
        let response = svc.clone().oneshot(request()).await.unwrap();
        assert_eq!(response.body(), "", "the layer must admit the benchmark token");
    });
    jsonwebtoken::decode::<Claims>(&token, &decoding, &validation).expect("jsonwebtoken must accept it too");

    // Instruction-count mode for noisy machines: run one path N times inside `counted_loop` and
    // exit; callgrind counts only that function (key generation and set-up excluded):
    //   ZTGATE_BENCH_PATH=raw|gate|layer ZTGATE_BENCH_N=100 \
    //     valgrind --tool=callgrind --toggle-collect='*counted_loop*' <bench binary> --bench
    if let (Ok(path), Ok(n)) = (std::env::var("ZTGATE_BENCH_PATH"), std::env::var("ZTGATE_BENCH_N")) {
        let n: usize = n.parse().expect("ZTGATE_BENCH_N is a count");
        counted_loop(&rt, n, || async {
            match path.as_str() {
                "raw" => drop(black_box(jsonwebtoken::decode::<Claims>(&token, &decoding, &validation))),
                "gate" => drop(black_box(gate.check(&request()).await)),
                "layer" => drop(black_box(svc.clone().oneshot(request()).await)),
                other => panic!("unknown ZTGATE_BENCH_PATH {other}"),
            }
        });
        std::process::exit(0);
    }

    let mut group = c.benchmark_group("rs256_access_token");
    group.bench_function("jsonwebtoken_decode_validate", |b| {
        b.iter(|| jsonwebtoken::decode::<Claims>(black_box(&token), &decoding, &validation).unwrap())
    });
    group.bench_function("ztgate_gate_check", |b| {
        b.to_async(&rt).iter(|| async { gate.check(black_box(&request())).await.unwrap() })
    });
    group.bench_function("ztgate_layer_end_to_end", |b| {
        b.to_async(&rt).iter(|| async { svc.clone().oneshot(black_box(request())).await.unwrap() })
    });
    group.finish();
}

#[inline(never)]
fn counted_loop<F: std::future::Future<Output = ()>>(
    rt: &tokio::runtime::Runtime,
    n: usize,
    mut f: impl FnMut() -> F,
) {
    rt.block_on(async {
        for _ in 0..n {
            f().await;
        }
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
