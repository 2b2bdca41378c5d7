//! Memory probe: how much a [`Gate`] holds on to after verifying many distinct tokens (for a
//! verified-token cache, this is its footprint when full). One process: two threads mint
//! distinct valid Access tokens with a fresh RSA key and feed them through a bounded channel,
//! the main thread checks each with [`Gate::check`] and drops it. Every `--every` tokens it
//! prints the count, the resident set now (`VmRSS`) and at its peak (`VmHWM`) from
//! `/proc/self/status`, and the rate.
//!
//! ```text
//! cargo run --release --example cache_memory -- [--count 1000000] [--every 100000] [--threads 2]
//! cargo run --release --example cache_memory -- --quick      # 20,000 tokens, a smoke run
//! ```
//!
//! A probe, not a test: it asserts nothing about the figures. It exits non-zero if a single
//! token is refused, since figures from refused tokens would measure the refusal path. The
//! figures are Linux's (`/proc`); elsewhere they read `-`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use ztgate::clock::unix_now;
use ztgate::dev::{DevKey, jwks_json, user_claims};
use ztgate::identity::StaticFetcher;
use ztgate::{AccessConfig, Gate, Policy};

const ISS: &str = "https://ztgate-probe.invalid";
const AUD: &str = "ztgate-probe";
const EMAIL: &str = "probe@example.com";
const HEADER: &str = "Cf-Access-Jwt-Assertion";
/// Longer than the slowest full run takes to mint, so no token expires before it is checked.
const TTL_SECS: u64 = 6 * 3600;
/// Tokens signed on the main thread before the run, to time signing and print an ETA.
const TIMING_SAMPLE: usize = 200;
const MAX_COUNT: usize = 100_000_000;
const USAGE: &str = "usage: cache_memory [--count N] [--every N] [--threads N] [--quick]";

struct Args {
    count: usize,
    every: usize,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { count: 1_000_000, every: 100_000, threads: 2 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => return Err(USAGE.to_owned()),
            "--quick" => {
                args.count = 20_000;
                args.every = 5_000;
            }
            "--count" | "--every" | "--threads" => {
                let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
                let max = if flag == "--threads" { 64 } else { MAX_COUNT };
                let n = match value.replace('_', "").parse::<usize>() {
                    Ok(n) if (1..=max).contains(&n) => n,
                    _ => return Err(format!("{flag} {value:?} is not a whole number from 1 to {max}")),
                };
                match flag.as_str() {
                    "--count" => args.count = n,
                    "--every" => args.every = n,
                    _ => args.threads = n,
                }
            }
            _ => return Err(format!("unknown flag {flag:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`), if the platform has it.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))?;
    line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn token(key: &DevKey, i: usize) -> String {
    let mut claims = user_claims(ISS, AUD, EMAIL, unix_now(), TTL_SECS);
    claims["identity_nonce"] = format!("probe-{i}").into();
    claims["jti"] = format!("probe-{i}").into();
    key.sign(&claims)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("cache_memory: {message}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cache_memory: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let key = DevKey::generate("probe-1").map_err(|e| e.to_string())?;
    let gate = Gate::builder(AccessConfig::new(ISS, [AUD]).map_err(|e| e.to_string())?)
        .fetcher(Arc::new(StaticFetcher::new(jwks_json(&[&key]))))
        .policy(Policy::new().allow_emails([EMAIL]))
        .build()
        .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let check = |token: &str| -> Result<(), String> {
        let req = http::Request::builder()
            .uri("/admin/whoami")
            .header(HEADER, token)
            .body(())
            .map_err(|e| e.to_string())?;
        // The rejection's text never repeats the token.
        rt.block_on(gate.check(&req))
            .map(drop)
            .map_err(|r| format!("a token was refused: {} ({r})", r.code()))
    };

    // Signing dominates the run: time it first. The sample tokens are checked too (and are the
    // first to fill whatever the gate keeps), so the baseline below includes the fetched keys.
    let started = Instant::now();
    let sample: Vec<String> = (0..TIMING_SAMPLE.min(args.count)).map(|i| token(&key, i)).collect();
    let per_token = started.elapsed().as_secs_f64() / sample.len() as f64;
    for t in &sample {
        check(t)?;
    }
    let first = sample.len();
    drop(sample);
    let eta = per_token * (args.count - first) as f64 / args.threads as f64;
    println!(
        "signing: {:.2} ms per token on one thread; {} tokens on {} threads: about {:.0} s ({:.1} min)",
        per_token * 1e3,
        args.count,
        args.threads,
        eta,
        eta / 60.0
    );
    let (base_rss, base_hwm) = (status_kib("VmRSS"), status_kib("VmHWM"));
    println!("baseline after {first} tokens: rss {} MiB, peak {} MiB", mib(base_rss), mib(base_hwm));
    println!("{:>10}  {:>10}  {:>10}  {:>9}  {:>9}", "tokens", "rss MiB", "peak MiB", "tok/s", "tok/s now");

    let (tx, rx) = sync_channel::<String>(1024);
    let mut done = first;
    let mut last = (Instant::now(), first);
    let outcome = std::thread::scope(|s| {
        for w in 0..args.threads {
            let (tx, key) = (tx.clone(), &key);
            s.spawn(move || {
                for i in (first + w..args.count).step_by(args.threads) {
                    // The receiver is gone: the run stopped on a refusal.
                    if tx.send(token(key, i)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let run_start = Instant::now();
        for t in rx {
            check(&t)?;
            done += 1;
            if done.is_multiple_of(args.every) || done == args.count {
                let now = Instant::now();
                let overall = (done - first) as f64 / (now - run_start).as_secs_f64();
                let recent = (done - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, done);
                println!(
                    "{done:>10}  {:>10}  {:>10}  {overall:>9.0}  {recent:>9.0}",
                    mib(status_kib("VmRSS")),
                    mib(status_kib("VmHWM")),
                );
            }
        }
        Ok::<_, String>(())
    });
    // On a refusal `rx` was dropped with the loop, so the minting threads have stopped.
    outcome?;

    let rss = status_kib("VmRSS");
    let growth = rss.zip(base_rss).map(|(now, base)| now.saturating_sub(base) * 1024);
    let per =
        growth.map_or_else(|| "-".to_owned(), |g| format!("{:.0}", g as f64 / (done - first).max(1) as f64));
    println!(
        "done: {done} tokens verified in {:.0} s; rss {} MiB (baseline {} MiB), peak {} MiB; \
         growth {per} bytes per token after the baseline",
        started.elapsed().as_secs_f64(),
        mib(rss),
        mib(base_rss),
        mib(status_kib("VmHWM")),
    );
    Ok(())
}
