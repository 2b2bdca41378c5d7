//! What the black-box tests of `examples/admin_server` share: the compiled example, a clean
//! environment for it, its logs collected without blocking, and a throw-away SQLite file.
//! Used by `tests/admin_server.rs` and `tests/admin_server_connections.rs`.

#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a server may take to say where it listens.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server given a bad configuration may take to exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Every variable the example reads, unset before each start.
pub const VARS: &[&str] = &[
    "ZTGATE_CONFIG",
    "ZTGATE_LISTEN",
    "ZTGATE_TEAM_DOMAIN",
    "ZTGATE_CERTS_URL",
    "ZTGATE_TOKEN_CACHE_MAX_AGE",
    "ZTGATE_AUD",
    "ZTGATE_ADMIN_EMAILS",
    "ZTGATE_SERVICE_TOKENS",
    "ZTGATE_ADMIN_GROUPS",
    "ZTGATE_REQUIRE_AUTH_METHOD",
    "ZTGATE_MAX_SESSION_AGE",
    "ZTGATE_IDENTITY_URL",
    "ZTGATE_DB",
    "ZTGATE_API_KEYS",
    "ZTGATE_HMAC_KEYS",
    "ZTGATE_HMAC_KEYS_FILE",
    "ZTGATE_HMAC_KEYS_TTL",
    "ZTGATE_WEBHOOK_SECRET",
    "ZTGATE_TRUST_CERT_HEADERS",
    "ZTGATE_HEADER_TIMEOUT",
    "ZTGATE_BODY_TIMEOUT",
    "ZTGATE_IDLE_TIMEOUT",
    "ZTGATE_MAX_CONNECTIONS",
    "ZTGATE_MAX_BODY_READS",
    "ZTGATE_MAX_WEBSOCKETS",
    "ZTGATE_WS_RECHECK",
    "ZTGATE_AUTH_FAILURES",
    "ZTGATE_REDIS_URL",
    "ZTGATE_TURNSTILE_SECRET",
    "ZTGATE_TURNSTILE_HOSTNAMES",
    "ZTGATE_TURNSTILE_ACTION",
    "ZTGATE_TURNSTILE_URL",
    "ZTGATE_SUBSCRIBE_LIMIT",
    "ZTGATE_REVOCATIONS_WHEN_UNAVAILABLE",
    "ZTGATE_REPLAYS_WHEN_UNAVAILABLE",
    "ZTGATE_RATE_LIMITS_WHEN_UNAVAILABLE",
    "RUST_LOG",
];

/// `target/<profile>/examples/admin_server`, next to this test's `deps` directory.
pub fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir =
        exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("examples").join(format!("admin_server{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --example admin_server` (or plain `cargo test`, which builds examples)",
        bin.display()
    );
    let built = modified(&bin);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    // `newest_mtime` walks directories: a change to any file of the example makes the binary stale.
    let newest = [manifest.join("examples/admin_server"), manifest.join("src")]
        .iter()
        .map(|p| newest_mtime(p))
        .max()
        .unwrap();
    assert!(
        newest <= built,
        "{} is older than its sources: run `cargo build --example admin_server` (or plain `cargo test`)",
        bin.display()
    );
    bin
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(UNIX_EPOCH)
}

fn newest_mtime(path: &Path) -> SystemTime {
    // The CLI's sources are not an input of the example.
    if path.ends_with("src/bin") {
        return UNIX_EPOCH;
    }
    match std::fs::read_dir(path) {
        Ok(entries) => entries.flatten().map(|e| newest_mtime(&e.path())).max().unwrap_or(UNIX_EPOCH),
        // Only Rust sources rebuild the binary (the example's TOML file does not).
        Err(_) if path.extension().is_some_and(|e| e == "rs") => modified(path),
        Err(_) => UNIX_EPOCH,
    }
}

/// `cmd` (the example, or a shell that execs it) with exactly `vars` set among the variables the
/// example reads, and its output piped.
pub fn command_for(mut cmd: Command, vars: &[(&str, String)]) -> Command {
    for var in VARS {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Collects a child's stderr (its logs) on a thread, so the pipe never fills up.
pub fn collect(mut from: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (text, handle)
}

/// A SQLite file in the temp dir, removed on drop.
pub struct TempDb(pub PathBuf);

impl TempDb {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!(
            "ztgate-example-test-{}-{}-{nanos}.sqlite",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        Self(std::env::temp_dir().join(name))
    }

    pub fn path(&self) -> String {
        self.0.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

/// The example with exactly `vars` set among the variables it reads.
pub fn command(vars: &[(&str, String)]) -> Command {
    command_for(Command::new(example_binary()), vars)
}

/// A running example server, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub stdout: Vec<String>,
    pub stderr: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(vars: &[(&str, String)]) -> Self {
        let mut child = command(vars).spawn().expect("spawn the admin_server example");
        let (stderr, stderr_thread) = collect(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line); // keep draining even when nobody listens any more
            }
        });
        let mut server = Self { child, base: String::new(), stdout: Vec::new(), stderr };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let base = line.strip_prefix("listening on ").map(str::to_owned);
                    server.stdout.push(line);
                    if let Some(base) = base {
                        server.base = base;
                        return server;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no `listening on` line within {START_TIMEOUT:?}; stderr:\n{}", server.logs())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait();
                    let _ = stderr_thread.join();
                    panic!("the server exited before listening ({status:?}); stderr:\n{}", server.logs());
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        assert!(self.base.starts_with("http://127.0.0.1:"), "not on loopback: {}", self.base);
        format!("{}{path}", self.base)
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// Runs the example expecting it to exit on its own (bad configuration): status and stderr.
pub fn run_to_exit(vars: &[(&str, String)]) -> (ExitStatus, String) {
    let mut child = command(vars).spawn().expect("spawn the admin_server example");
    let (stderr, stderr_thread) = collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {EXIT_TIMEOUT:?}; stderr:\n{}", stderr.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    stderr_thread.join().unwrap();
    let text = stderr.lock().unwrap().clone();
    (status, text)
}
