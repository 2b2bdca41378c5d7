//! Mints the inputs of the load test (`scripts/loadtest.sh`): a fresh RSA key's JWKS in
//! `certs.json` and N distinct valid Cloudflare-Access-style user tokens in `tokens.txt`, one
//! per line, in an output directory.
//!
//! ```text
//! cargo run --release --example loadtest_tokens -- --out DIR [--count 3000]
//!     [--iss https://ztgate-loadtest.invalid] [--aud ztgate-loadtest]
//!     [--email loadtest@example.com] [--ttl 3600] [--threads 2]
//! ```
//!
//! Tokens differ by their `identity_nonce` and `jti` claims (so by signature too), and expire
//! `--ttl` seconds from now. The key lives only in this process: the tokens are worthless once
//! it exits, but they are still credentials for whatever trusts `certs.json`, so the directory
//! should be a private temporary one. Nothing here prints a token.

use std::fs;
use std::io::{BufWriter, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use ztgate::clock::unix_now;
use ztgate::dev::{DevKey, jwks_json, user_claims};

const USAGE: &str = "usage: loadtest_tokens --out DIR [--count N] [--iss URL] [--aud AUD] [--email EMAIL] \
                     [--ttl SECS] [--threads N]";
/// Far more than a load test needs, and a bound on what one run may write (about 1 KiB each).
const MAX_COUNT: usize = 10_000_000;

struct Args {
    out: PathBuf,
    count: usize,
    iss: String,
    aud: String,
    email: String,
    ttl: u64,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut out = None;
    let mut args = Args {
        out: PathBuf::new(),
        count: 3_000,
        iss: "https://ztgate-loadtest.invalid".to_owned(),
        aud: "ztgate-loadtest".to_owned(),
        email: "loadtest@example.com".to_owned(),
        ttl: 3_600,
        threads: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(value)),
            "--count" => args.count = number(&flag, &value, 1, MAX_COUNT)?,
            "--iss" => args.iss = value,
            "--aud" => args.aud = value,
            "--email" => args.email = value,
            "--ttl" => args.ttl = number(&flag, &value, 60, 31 * 24 * 3600)? as u64,
            "--threads" => args.threads = number(&flag, &value, 1, 64)?,
            _ => return Err(format!("unknown flag {flag:?}\n{USAGE}")),
        }
    }
    args.out = out.ok_or_else(|| format!("--out is required\n{USAGE}"))?;
    Ok(args)
}

fn number(flag: &str, value: &str, min: usize, max: usize) -> Result<usize, String> {
    match value.replace('_', "").parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{flag} {value:?} is not a whole number from {min} to {max}")),
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("loadtest_tokens: {message}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("loadtest_tokens: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let key = DevKey::generate("loadtest-1").map_err(|e| e.to_string())?;
    fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let certs = args.out.join("certs.json");
    fs::write(&certs, jwks_json(&[&key])).map_err(|e| format!("{}: {e}", certs.display()))?;

    let started = Instant::now();
    let now = unix_now();
    // Contiguous chunks, one per thread, written back in order.
    let chunk = args.count.div_ceil(args.threads);
    let chunks: Vec<Vec<String>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..args.threads)
            .map(|t| {
                let key = &key;
                s.spawn(move || {
                    let range = (t * chunk).min(args.count)..((t + 1) * chunk).min(args.count);
                    range
                        .map(|i| {
                            let mut claims = user_claims(&args.iss, &args.aud, &args.email, now, args.ttl);
                            claims["identity_nonce"] = format!("loadtest-{i}").into();
                            claims["jti"] = format!("loadtest-{i}").into();
                            key.sign(&claims)
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a signing thread panicked")).collect()
    });

    let tokens = args.out.join("tokens.txt");
    let file = fs::File::create(&tokens).map_err(|e| format!("{}: {e}", tokens.display()))?;
    let mut file = BufWriter::new(file);
    for token in chunks.iter().flatten() {
        writeln!(file, "{token}").map_err(|e| format!("{}: {e}", tokens.display()))?;
    }
    file.flush().map_err(|e| format!("{}: {e}", tokens.display()))?;

    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} tokens for {} (iss {}, aud {}) in {secs:.1} s ({:.0}/s on {} threads): {} and {}",
        args.count,
        args.email,
        args.iss,
        args.aud,
        args.count as f64 / secs,
        args.threads,
        certs.display(),
        tokens.display(),
    );
    Ok(())
}
