//! The per-request cost of shared state on the success path: the revocation check and the
//! failed-authentication budget check, in memory and against a local Redis, as p50/p99 of
//! single calls, and the Redis round trips per request (from Redis's own command counters).
//!
//! The Redis half starts its own `redis-server` on a loopback port when one is on PATH, and
//! says so and skips it otherwise. Figures are for comparison within one run (this machine is
//! shared and noisy), never thresholds.
//!
//! `cargo bench --features redis --bench shared_state`

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ztgate::clock::SystemClock;
use ztgate::identity::shared_state::{
    Budget, InMemoryRateLimiter, InMemoryRevocations, RateLimiter, Revocation, RevocationKind, RevocationList,
};
use ztgate::redis::RedisStore;

const REQUESTS: usize = 20_000;
const REVOKED: usize = 1_000;

/// p50 and p99 of `samples`, in microseconds.
fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at =
        |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

/// Times `REQUESTS` calls of `call`, each alone.
async fn time<F: AsyncFnMut(usize)>(mut call: F) -> (f64, f64) {
    let mut samples = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let started = Instant::now();
        call(i).await;
        samples.push(started.elapsed());
    }
    percentiles(&mut samples)
}

fn candidates(i: usize) -> Vec<Revocation> {
    vec![
        Revocation::new(RevocationKind::AccessSub, format!("sub-user-{}", i % 500)).unwrap(),
        Revocation::new(RevocationKind::AccessSub, format!("nonce-{i}")).unwrap(),
    ]
}

fn keys(i: usize) -> Vec<String> {
    vec![format!("auth:ip:198.51.100.{}", i % 200), format!("auth:cred:{:032x}", i % 500)]
}

async fn fill(list: &dyn RevocationList) {
    for n in 0..REVOKED {
        list.revoke(&Revocation::new(RevocationKind::ApiKey, format!("revoked-{n}")).unwrap()).await.unwrap();
    }
}

fn report(what: &str, (p50, p99): (f64, f64)) {
    println!("{what:<48} p50 {p50:>8.2} µs   p99 {p99:>8.2} µs");
}

struct RedisServer(Child, u16, std::path::PathBuf);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.2);
    }
}

fn start_redis() -> Option<RedisServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let dir = std::env::temp_dir().join(format!("ztgate-bench-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = RedisServer(child, port, dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(server)
}

/// Commands clients have sent Redis so far: the calls of each command in `INFO
/// commandstats`, minus those a script ran (`TIME`, and the `GET`/`SET`s of the GCRA script,
/// counted there too), so one `EVALSHA` counts as one round trip.
fn redis_round_trips(port: u16, scripted_per_call: u64) -> u64 {
    let out = Command::new("redis-cli").args(["-p", &port.to_string(), "INFO", "commandstats"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let calls = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let evalsha = calls("evalsha") + calls("eval");
    let all: u64 = ["get", "smembers", "set", "time", "sadd", "incr", "multi", "exec", "script"]
        .iter()
        .map(|c| calls(c))
        .sum::<u64>()
        + evalsha;
    all - evalsha * scripted_per_call
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let budget = Budget::new(1_000_000, Duration::from_secs(60)).unwrap();
        println!("shared state, one call at a time, {REQUESTS} calls each ({REVOKED} revocations stored)");

        let memory = InMemoryRevocations::default();
        fill(&memory).await;
        let revocation_memory = time(async |i| assert!(!memory.any_revoked(&candidates(i)).await.unwrap())).await;
        report("revocation check, in memory", revocation_memory);
        let limiter = InMemoryRateLimiter::new(budget, Arc::new(SystemClock));
        let limit_memory = time(async |i| assert!(limiter.check(&keys(i)).await.unwrap().is_none())).await;
        report("failure budget check, in memory", limit_memory);

        let Some(server) = start_redis() else {
            println!("redis-server is not on PATH: the Redis half is skipped");
            return;
        };
        let store = RedisStore::connect(&format!("redis://127.0.0.1:{}/0", server.1))
            .unwrap()
            .with_timeout(Duration::from_secs(1))
            .unwrap();
        let revocations = store.revocations();
        fill(&revocations).await;
        let limiter = store.rate_limiter(budget);
        // Warm the connection and the script cache.
        let _ = limiter.check(&keys(0)).await.unwrap();
        let _ = revocations.any_revoked(&candidates(0)).await.unwrap();

        let before = redis_round_trips(server.1, 0);
        let started = Instant::now();
        let revocation_redis = time(async |i| {
            assert!(!revocations.any_revoked(&candidates(i)).await.unwrap());
            // Spread the checks over about 2 s, so the local view has to be confirmed again.
            if i % 2_000 == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        let revocation_commands = redis_round_trips(server.1, 0) - before;
        report("revocation check, Redis (local view, 500 ms)", revocation_redis);
        println!(
            "  Redis round trips for {REQUESTS} revocation checks over {:.1} s: {revocation_commands} (a version check per 500 ms)",
            started.elapsed().as_secs_f64()
        );
        // The GCRA script runs TIME and one GET per key (two keys) on a check.
        let before = redis_round_trips(server.1, 3);
        let limit_redis = time(async |i| assert!(limiter.check(&keys(i)).await.unwrap().is_none())).await;
        let limit_commands = redis_round_trips(server.1, 3) - before;
        report("failure budget check, Redis (one EVALSHA)", limit_redis);
        println!(
            "  Redis round trips per request on the success path: {:.3} (budget) + {:.4} (revocations)",
            limit_commands as f64 / REQUESTS as f64,
            revocation_commands as f64 / REQUESTS as f64
        );
        println!(
            "ratios in this run: budget Redis/memory p50 {:.1}x; revocations Redis/memory p50 {:.1}x",
            limit_redis.0 / limit_memory.0,
            revocation_redis.0 / revocation_memory.0
        );
    });
}
