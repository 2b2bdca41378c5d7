//! The cost of the whole layer per request, each figure beside its raw primitive in the same
//! run, with the ratios printed at the end (`ratio` / `bound` lines):
//!
//! - (a) a fresh token (never seen, so verified and cached) through the layer, against a bare
//!   jsonwebtoken decode + validate of the same kind of token;
//! - (b) a repeated token through the layer (a verified-token cache hit);
//! - (c) a malformed token through the layer (refused before any key is looked up);
//! - (e) the key-set read and the cached-token path, from 1 and from 2 threads at once.
//!
//! (d), HMAC tokens against a bare HMAC-SHA256, is `benches/hmac_token.rs`.
//!
//! `cargo bench --bench access`

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use ztgate::clock::{Clock, SystemClock};
use ztgate::dev::{DevKey, jwks_json, user_claims};
use ztgate::identity::{AccessJwt, Requirement, StaticFetcher, TokenCacheConfig};
use ztgate::{AccessConfig, Gate, Policy, Principal, Verified};

#[path = "ratio/mod.rs"]
mod ratio;

const TEAM: &str = "https://acme.cloudflareaccess.com";
const AUD: &str = "bench-aud";
/// Distinct tokens signed up front for the fresh-token path.
const FRESH_POOL: usize = 500;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Claims {
    email: String,
    sub: String,
    exp: u64,
}

/// A gate over one Access mechanism with the key `key` and the token cache `cache`; the
/// mechanism too, to reach its key cache.
fn access_gate(key: &DevKey, cache: TokenCacheConfig) -> (Gate, Arc<AccessJwt>) {
    let access = Gate::builder(AccessConfig::new(TEAM, [AUD]).unwrap())
        .fetcher(Arc::new(StaticFetcher::new(jwks_json(&[key]))))
        .policy(Policy::new().allow_emails(["alice@acme.com"]))
        .token_cache(cache)
        .build_mechanism()
        .unwrap();
    let access = Arc::new(access);
    (Gate::new(Requirement::mechanism(access.clone())), access)
}

/// `gate` as a Tower layer over a service that answers "" when it was handed a principal.
fn layer(
    gate: Gate,
) -> impl Service<http::Request<String>, Response = http::Response<String>, Error = Infallible, Future: Send> + Clone
{
    ServiceBuilder::new().layer(gate).service(service_fn(|req: http::Request<String>| async move {
        let ok = req.extensions().get::<Verified<Principal>>().is_some();
        Ok::<_, Infallible>(http::Response::new(if ok { String::new() } else { String::from("missing") }))
    }))
}

fn request_for(token: &str) -> http::Request<String> {
    http::Request::builder()
        .uri("/admin/whoami")
        .header("cf-access-jwt-assertion", token)
        .header("cookie", "theme=dark; lang=en")
        .header("cf-connecting-ip", "203.0.113.7")
        .body(String::new())
        .unwrap()
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

    let (gate, access) = access_gate(&key, TokenCacheConfig::default());
    let svc = layer(gate.clone());
    let request = || request_for(&token);
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

    let now = SystemClock.now();
    // Distinct tokens (each its own `identity_nonce`), as many sessions would send.
    let fresh_tokens: Vec<String> = (0..FRESH_POOL)
        .map(|i| {
            let mut claims = user_claims(TEAM, AUD, "alice@acme.com", now, 24 * 3600);
            claims["identity_nonce"] = format!("bench-{i}").into();
            key.sign(&claims)
        })
        .collect();
    assert_eq!(fresh_tokens.iter().collect::<std::collections::HashSet<_>>().len(), FRESH_POOL);
    // `n` requests through a layer, each with a token its cache has never seen (new gates,
    // warmed, between pools; only the requests are timed).
    let mut fresh = |n: u64| -> Duration {
        let mut took = Duration::ZERO;
        let mut left = n as usize;
        while left > 0 {
            let (gate, _) = access_gate(&key, TokenCacheConfig::default());
            let svc = layer(gate);
            rt.block_on(svc.clone().oneshot(request())).unwrap();
            let batch: Vec<_> = fresh_tokens.iter().take(left).map(|t| request_for(t)).collect();
            left -= batch.len();
            took += rt.block_on(async {
                let start = Instant::now();
                for r in batch {
                    let response = svc.clone().oneshot(r).await.unwrap();
                    assert!(response.body().is_empty());
                }
                start.elapsed()
            });
        }
        took
    };

    let mut group = c.benchmark_group("rs256_access_token");
    group.bench_function("(a) jsonwebtoken decode+validate (raw)", |b| {
        b.iter(|| jsonwebtoken::decode::<Claims>(black_box(&token), &decoding, &validation).unwrap())
    });
    group.bench_function("(a) fresh token through the layer", |b| b.iter_custom(&mut fresh));
    group.bench_function("(b) repeated token through the layer", |b| {
        b.to_async(&rt).iter_batched(request, |r| svc.clone().oneshot(r), BatchSize::SmallInput)
    });
    group.bench_function("(b) repeated token, gate.check", |b| {
        let gate = &gate;
        b.to_async(&rt).iter_batched(
            request,
            |r| async move { gate.check(&r).await.unwrap() },
            BatchSize::SmallInput,
        )
    });
    let malformed = || request_for("eyJhbGciOiJSUzI1NiJ9.not-a-token");
    group.bench_function("(c) malformed token through the layer", |b| {
        b.to_async(&rt).iter_batched(malformed, |r| svc.clone().oneshot(r), BatchSize::SmallInput)
    });
    group.finish();

    let keys = access.verifier().keys().clone();
    let mut group = c.benchmark_group("read_path");
    group.bench_function("(e) key-set read, 1 thread", |b| {
        b.to_async(&rt).iter(|| async { keys.key(black_box("k1")).await.unwrap() })
    });
    group.bench_function("(e) key-set read, 2 threads at once (per op, each thread)", |b| {
        b.iter_custom(|n| {
            on_threads(2, n, || keys.clone(), |k| async move { drop(k.key("k1").await.unwrap()) })
        })
    });
    group.bench_function("(e) cached token, 1 thread", |b| {
        b.iter_custom(|n| {
            on_threads(
                1,
                n,
                || (gate.clone(), request()),
                |(g, r)| async move {
                    g.check(&r).await.unwrap();
                },
            )
        })
    });
    group.bench_function("(e) cached token, 2 threads at once (per op, each thread)", |b| {
        b.iter_custom(|n| {
            on_threads(
                2,
                n,
                || (gate.clone(), request()),
                |(g, r)| async move {
                    g.check(&r).await.unwrap();
                },
            )
        })
    });
    group.finish();

    if !ratio::wanted() {
        return;
    }
    let raw = &mut |n: u64| {
        let start = Instant::now();
        for _ in 0..n {
            black_box(jsonwebtoken::decode::<Claims>(black_box(&token), &decoding, &validation).unwrap());
        }
        start.elapsed()
    };
    let timed = |svc: &_, make: &dyn Fn() -> http::Request<String>, n: u64| -> Duration {
        let svc: &_ = svc;
        let batch: Vec<_> = (0..n).map(|_| make()).collect();
        rt.block_on(async {
            let start = Instant::now();
            for r in batch {
                black_box(ServiceExt::<http::Request<String>>::oneshot(Clone::clone(svc), r).await.unwrap());
            }
            start.elapsed()
        })
    };
    let [fresh_t, raw_t] = ratio::medians(11, 200, &mut [&mut fresh, raw])[..] else { unreachable!() };
    ratio::report_ratio(
        "(a) fresh token, layer / raw jsonwebtoken",
        ("layer", fresh_t),
        ("raw", raw_t),
        Some(1.10),
    );
    let [hit, bad] = ratio::medians(
        11,
        20_000,
        &mut [&mut |n| timed(&svc, &request, n), &mut |n| timed(&svc, &malformed, n)],
    )[..] else {
        unreachable!()
    };
    ratio::report_bound("(b) repeated token through the layer", hit, 2.0);
    ratio::report_bound("(c) malformed token through the layer", bad, 2.0);
    ratio::report_ratio("(b) repeated / (a) fresh token", ("hit", hit), ("fresh", fresh_t), None);
    let (keys, gate) = (&keys, &gate);
    let read = |threads| {
        move |n| on_threads(threads, n, || keys.clone(), |k| async move { drop(k.key("k1").await.unwrap()) })
    };
    let cached = |threads| {
        move |n| {
            on_threads(
                threads,
                n,
                || (gate.clone(), request()),
                |(g, r)| async move {
                    g.check(&r).await.unwrap();
                },
            )
        }
    };
    let [r1, r2, c1, c2] =
        ratio::medians(11, 20_000, &mut [&mut read(1), &mut read(2), &mut cached(1), &mut cached(2)])[..]
    else {
        unreachable!()
    };
    ratio::report_ratio(
        "(e) key-set read per op, 2 threads / 1 thread",
        ("2 threads", r2),
        ("1 thread", r1),
        Some(1.5),
    );
    ratio::report_ratio(
        "(e) cached token per op, 2 threads / 1 thread",
        ("2 threads", c2),
        ("1 thread", c1),
        Some(1.5),
    );
}

/// Runs `n` operations on each of `threads` threads at once (each its own current-thread
/// runtime, as one core of a server), and returns the wall time: with no contention it stays
/// the time of `n` operations on one thread.
fn on_threads<S: Clone + Send + 'static, F: std::future::Future<Output = ()>>(
    threads: usize,
    n: u64,
    state: impl Fn() -> S,
    op: impl Fn(S) -> F + Sync,
) -> Duration {
    let barrier = std::sync::Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let state = state();
                let (barrier, op) = (&barrier, &op);
                scope.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                    barrier.wait();
                    let start = Instant::now();
                    rt.block_on(async {
                        for _ in 0..n {
                            op(state.clone()).await;
                        }
                    });
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).max().unwrap()
    })
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
