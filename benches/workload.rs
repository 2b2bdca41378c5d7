//! The cost of signing one workload token (`WorkloadIssuer::sign`): RS256 (2048-bit RSA,
//! pure-Rust through jwt-simple) against ES256 (P-256). Each includes reading the key from its
//! source and recognising it as the one already parsed (a SHA-256 of the PEM), building the
//! claims and a random `jti`, and encoding the token: what one exchange pays before STS.
//!
//! `cargo bench --features workload --bench workload`

use std::hint::black_box;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, criterion_group, criterion_main};
use ztgate::clock::FixedClock;
use ztgate::secrets::StaticSecret;
use ztgate::workload::{Algorithm, IssuerConfig, WorkloadIssuer};

fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n")) // pragma: allowlist secret
}

fn bench(c: &mut Criterion) {
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let rsa = pem(rsa.as_der().unwrap().as_ref());
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let ec = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    let ec = pem(ec.as_ref());
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let config = IssuerConfig::new("https://id.example.com", "system:bench", ["sts.amazonaws.com"]).unwrap();
    let clock = Arc::new(FixedClock::at(1_893_456_000));
    let mut group = c.benchmark_group("workload_sign");
    for (name, algorithm, key) in [("rs256", Algorithm::Rs256, rsa), ("es256", Algorithm::Es256, ec)] {
        let issuer = WorkloadIssuer::new(config.clone(), algorithm, StaticSecret::new(key), clock.clone());
        // The first call parses the key; the benchmark measures the calls after it.
        runtime.block_on(issuer.sign()).unwrap();
        group.bench_function(name, |b| b.iter(|| black_box(runtime.block_on(issuer.sign()).unwrap())));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
