#![allow(dead_code)] // Each bench uses the part it needs.

//! Ratios measured in one run: two paths timed in alternating rounds (so a noisy neighbour
//! slows both alike), the median per-operation time of each, and their quotient, printed
//! beside the target. Criterion's own figures are printed above these.

use std::time::Duration;

/// Whether the bench binary was started to run for real (not `--test`, `--list`, or a filter
/// that is not ours), so the slower ratio rounds run only then.
pub fn wanted() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    !args.iter().any(|a| a == "--test" || a == "--list" || a == "--exact")
}

/// The median time per operation of `run(n)` (which runs `n` operations and returns how long
/// they took, set-up excluded), over `rounds` rounds, alternating with the others given.
pub fn medians(rounds: usize, n: u64, runs: &mut [&mut dyn FnMut(u64) -> Duration]) -> Vec<Duration> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); runs.len()];
    for _ in 0..rounds {
        for (run, out) in runs.iter_mut().zip(samples.iter_mut()) {
            out.push(run(n) / u32::try_from(n).expect("n fits u32"));
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort();
            s[s.len() / 2]
        })
        .collect()
}

/// Prints `what`: `a` against `b`, their ratio, and whether it meets `target` (a ratio bound).
pub fn report_ratio(what: &str, a: (&str, Duration), b: (&str, Duration), target: Option<f64>) {
    let ratio = a.1.as_secs_f64() / b.1.as_secs_f64();
    let verdict = match target {
        Some(t) if ratio <= t => format!("target <= {t:.2}x: met"),
        Some(t) => format!("target <= {t:.2}x: NOT MET"),
        None => String::new(),
    };
    println!(
        "ratio  {what}: {} {:.2} us / {} {:.2} us = {ratio:.2}x  {verdict}",
        a.0,
        micros(a.1),
        b.0,
        micros(b.1),
    );
}

/// Prints an absolute figure against a bound in microseconds.
pub fn report_bound(what: &str, took: Duration, bound_us: f64) {
    let verdict = if micros(took) <= bound_us { "met" } else { "NOT MET" };
    println!("bound  {what}: {:.3} us  (target <= {bound_us} us: {verdict})", micros(took));
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
