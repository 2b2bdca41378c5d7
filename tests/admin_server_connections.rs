//! The admin server under hostile connections: the compiled example runs as a child process
//! on 127.0.0.1 (dev mode, with small timeouts set by environment) and is driven over raw
//! sockets that send half a request, nothing, a trickle of a body, or sit idle, in bounded
//! numbers. Each closure is asserted as an upper bound (the timeout + a generous margin), never
//! as a wall time to meet.
//!
//! `cargo test` builds the example. When selecting this file alone, build it first:
//! `cargo build --example admin_server && cargo test --test admin_server_connections`.

mod example_harness;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use example_harness::{START_TIMEOUT, TempDb, collect, command_for, example_binary};

/// How much later than its timeout a connection may be closed before the test fails: an upper
/// bound on the close, generous for a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(3);
/// A Svix endpoint secret (`whsec_` + base64 of 32 bytes), so the webhook route reads bodies.
const WEBHOOK_SECRET: &str = "whsec_c3ZpeC1lbmRwb2ludC1rZXktZm9yLXRoZS10ZXN0cyE="; // pragma: allowlist secret
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Harness (what both example tests share is in tests/example_harness)

/// A running example server in dev mode on 127.0.0.1, killed when dropped.
struct Server {
    child: Child,
    /// `127.0.0.1:<port>`.
    addr: String,
    stderr: Arc<Mutex<String>>,
    _db: TempDb,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Dev mode with `vars` added.
    fn start(vars: &[(&str, &str)]) -> Self {
        Self::start_with(Command::new(example_binary()), vars)
    }

    /// Dev mode with `vars` added, run by `cmd` (the example, or a shell that execs it).
    fn start_with(cmd: Command, vars: &[(&str, &str)]) -> Self {
        let db = TempDb::new();
        let mut all = vec![("ZTGATE_LISTEN", "127.0.0.1:0".to_owned()), ("ZTGATE_DB", db.path())];
        all.extend(vars.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let mut child = command_for(cmd, &all).spawn().expect("spawn the admin_server example");
        let (stderr, stderr_thread) = collect(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = Self { child, addr: String::new(), stderr, _db: db };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("listening on http://") {
                        assert!(addr.starts_with("127.0.0.1:"), "not on loopback: {addr}");
                        server.addr = addr.to_owned();
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

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (boundedly) for `needle` in the logs: they arrive through a pipe and a thread.
    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.logs().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in the logs:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.addr).expect("connect to the server")
    }

    /// Waits until the server's own JWKS fetch (dev mode verifies over HTTP against itself) is
    /// done and its kept-alive connection closed by the idle timeout, so that only the test's
    /// connections count towards the cap.
    fn settle(&self, idle_timeout: Duration) {
        self.wait_for_log("jwks_warm");
        std::thread::sleep(idle_timeout + Duration::from_millis(500));
    }

    /// The server's resident memory, from `/proc/<pid>/status`, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/PID/status");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

/// Runs the example expecting it to exit on its own (bad configuration), on a throw-away
/// database: status and stderr.
fn run_to_exit(vars: &[(&str, &str)]) -> (ExitStatus, String) {
    let db = TempDb::new();
    let mut all = vec![("ZTGATE_LISTEN", "127.0.0.1:0".to_owned()), ("ZTGATE_DB", db.path())];
    all.extend(vars.iter().map(|(k, v)| (*k, (*v).to_owned())));
    example_harness::run_to_exit(&all)
}

// ---------------------------------------------------------------------------------------------
// Socket helpers

/// Reads until the server closes `stream` (EOF or reset), for at most `within`. Returns what
/// was read and how long the close took, or `None` if the connection is still open then.
fn wait_closed(stream: &mut TcpStream, within: Duration) -> Option<(Vec<u8>, Duration)> {
    let start = Instant::now();
    let mut read = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = within.checked_sub(start.elapsed())?;
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some((read, start.elapsed())),
            Ok(n) => read.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if start.elapsed() >= within {
                    return None;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some((read, start.elapsed())), // reset: closed too
        }
    }
}

/// The connection is open: no EOF, no reset, nothing to read within a moment.
fn still_open(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = [0u8; 1];
    matches!(stream.read(&mut buf), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

/// Reads one HTTP/1.1 response (head and a Content-Length body) within `within`.
fn read_response(stream: &mut TcpStream, within: Duration) -> Option<Response> {
    let start = Instant::now();
    let mut read = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(res) = Response::parse(&read) {
            return Some(res);
        }
        let left = within.checked_sub(start.elapsed())?;
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => read.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    /// A whole response in `bytes`, if there is one yet.
    fn parse(bytes: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let length = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if body.len() < length {
            return None;
        }
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some(Self { status, head: head.to_ascii_lowercase(), body: body[..length].to_owned() })
    }

    fn code(&self) -> String {
        let json: serde_json::Value = serde_json::from_str(&self.body).unwrap_or_default();
        json["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// `GET /healthz` on a fresh connection, answered within `within`: its status and how long the
/// answer took, or `None`.
fn healthz(server: &Server, within: Duration) -> Option<(u16, Duration)> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&server.addr.parse().unwrap(), within).ok()?;
    stream.set_write_timeout(Some(within)).unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n", server.addr);
    stream.write_all(request.as_bytes()).ok()?;
    let res = read_response(&mut stream, within.checked_sub(start.elapsed())?)?;
    Some((res.status, start.elapsed()))
}

/// The head of a webhook delivery promising `length` body bytes. The signature is checked
/// only once the body is whole, so any well-formed headers make the server read the body.
fn webhook_head(server: &Server, length: usize) -> String {
    format!(
        "POST /webhooks/inbound HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         svix-id: msg_trickle\r\nsvix-timestamp: 1800000000\r\nsvix-signature: v1,AAAA\r\n\
         content-length: {length}\r\n\r\n",
        server.addr
    )
}

/// Writes `bytes` one at a time, `every` apart, for at most `for_at_most`, on a thread; stops
/// at the first write error (the server closed).
fn trickle(
    stream: &TcpStream,
    bytes: &'static [u8],
    every: Duration,
    for_at_most: Duration,
) -> JoinHandle<()> {
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let start = Instant::now();
        for byte in bytes.iter().cycle() {
            if start.elapsed() > for_at_most || writer.write_all(std::slice::from_ref(byte)).is_err() {
                return;
            }
            std::thread::sleep(every);
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Timeouts

#[test]
fn silent_connection_is_closed_after_the_header_timeout() {
    let server = Server::start(&[("ZTGATE_HEADER_TIMEOUT", "1s"), ("ZTGATE_IDLE_TIMEOUT", "30s")]);
    let mut silent = server.connect();
    let (read, took) = wait_closed(&mut silent, Duration::from_secs(1) + MARGIN)
        .expect("a connection that sends nothing is still open after the header timeout + 3 s");
    assert!(read.is_empty(), "a silent connection got an answer: {:?}", String::from_utf8_lossy(&read));
    assert!(took >= Duration::from_millis(900), "closed after {took:?}, before its header timeout");
    assert_eq!(healthz(&server, Duration::from_secs(10)).map(|(s, _)| s), Some(200));
}

#[test]
fn slowloris_head_trickled_a_byte_at_a_time_is_closed_after_the_header_timeout() {
    let server = Server::start(&[("ZTGATE_HEADER_TIMEOUT", "1s"), ("ZTGATE_IDLE_TIMEOUT", "30s")]);
    let mut slow = server.connect();
    // Bytes keep arriving (every 100 ms), so no per-read idle timeout would ever fire: only a
    // deadline on the whole head does.
    let writer = trickle(
        &slow,
        b"GET /healthz HTTP/1.1\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    let closed = wait_closed(&mut slow, Duration::from_secs(1) + MARGIN);
    assert!(
        closed.is_some(),
        "a head trickled a byte every 100 ms is still open after the header timeout + 3 s"
    );
    let _ = writer.join();
}

#[test]
fn slow_second_head_on_a_kept_alive_connection_is_closed_after_the_header_timeout() {
    let server = Server::start(&[("ZTGATE_HEADER_TIMEOUT", "1s"), ("ZTGATE_IDLE_TIMEOUT", "30s")]);
    let mut conn = server.connect();
    let request = format!("GET /healthz HTTP/1.1\r\nhost: {}\r\n\r\n", server.addr);
    conn.write_all(request.as_bytes()).unwrap();
    assert_eq!(read_response(&mut conn, Duration::from_secs(10)).map(|r| r.status), Some(200));
    // The idle timeout (30 s) covers the wait for the next request; once its first byte is in,
    // the head is due within the header timeout.
    let writer = trickle(
        &conn,
        b"GET /healthz HTTP/1.1\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        Duration::from_millis(100),
        Duration::from_secs(10),
    );
    let closed = wait_closed(&mut conn, Duration::from_secs(1) + MARGIN);
    assert!(
        closed.is_some(),
        "a second head trickled after an answer is still open after the header timeout + 3 s"
    );
    let _ = writer.join();
}

#[test]
fn slow_body_8_bytes_of_a_promised_4_kib_is_408_and_closed_after_the_body_timeout() {
    let server = Server::start(&[
        ("ZTGATE_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("ZTGATE_BODY_TIMEOUT", "1s"),
        ("ZTGATE_HEADER_TIMEOUT", "30s"),
        ("ZTGATE_IDLE_TIMEOUT", "30s"),
    ]);
    let mut conn = server.connect();
    conn.write_all(webhook_head(&server, 4096).as_bytes()).unwrap();
    conn.write_all(b"{\"type\":").unwrap();
    let (read, _) = wait_closed(&mut conn, Duration::from_secs(1) + MARGIN)
        .expect("8 bytes of a 4 KiB body: still open after the body timeout + 3 s");
    let res =
        Response::parse(&read).unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&read)));
    assert_eq!((res.status, res.code().as_str()), (408, "body_timeout"), "{res:?}");
    assert!(res.head.contains("connection: close"), "{res:?}");
}

#[test]
fn body_trickled_a_byte_at_a_time_is_cut_at_the_whole_body_deadline() {
    let server = Server::start(&[
        ("ZTGATE_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("ZTGATE_BODY_TIMEOUT", "1s"),
        ("ZTGATE_HEADER_TIMEOUT", "30s"),
        ("ZTGATE_IDLE_TIMEOUT", "30s"),
    ]);
    let mut conn = server.connect();
    conn.write_all(webhook_head(&server, 4096).as_bytes()).unwrap();
    // A byte every 100 ms: a per-chunk idle timeout of 1 s would never fire.
    let writer =
        trickle(&conn, b"{\"type\":\"email.sent\"}", Duration::from_millis(100), Duration::from_secs(10));
    let (read, _) = wait_closed(&mut conn, Duration::from_secs(1) + MARGIN)
        .expect("a body trickled a byte every 100 ms: still open after the body timeout + 3 s");
    let res =
        Response::parse(&read).unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&read)));
    assert_eq!((res.status, res.code().as_str()), (408, "body_timeout"), "{res:?}");
    let _ = writer.join();
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let server = Server::start(&[("ZTGATE_HEADER_TIMEOUT", "1s"), ("ZTGATE_IDLE_TIMEOUT", "4s")]);
    let mut conn = server.connect();
    let request = format!("GET /healthz HTTP/1.1\r\nhost: {}\r\n\r\n", server.addr);
    conn.write_all(request.as_bytes()).unwrap();
    assert_eq!(read_response(&mut conn, Duration::from_secs(10)).map(|r| r.status), Some(200));
    let answered = Instant::now();
    // Past the header timeout, kept alive: waiting for a next request is the idle timeout's.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(still_open(&mut conn), "an idle keep-alive connection was closed at the header timeout");
    let closed = wait_closed(&mut conn, (Duration::from_secs(4) + MARGIN).saturating_sub(answered.elapsed()));
    assert!(closed.is_some(), "an idle keep-alive connection is still open after the idle timeout + 3 s");
}

#[test]
fn client_that_never_reads_its_answers_is_closed_after_the_idle_timeout() {
    let server = Server::start(&[
        ("ZTGATE_HEADER_TIMEOUT", "30s"),
        ("ZTGATE_IDLE_TIMEOUT", "1s"),
        ("RUST_LOG", "admin_server=debug,warn"),
    ]);
    let mut conn = server.connect();
    // Pipelined requests, never reading an answer: the answers fill both sockets' buffers, the
    // server's writes block, and (the server no longer reading) so do ours.
    let request = format!("GET /healthz HTTP/1.1\r\nhost: {}\r\n\r\n", server.addr);
    let batch = request.repeat(1000).into_bytes();
    conn.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let (mut pos, mut sent, mut blocked_at) = (0, 0usize, None::<Instant>);
    let closed = loop {
        match conn.write(&batch[pos..]) {
            Ok(n) => {
                (pos, sent) = ((pos + n) % batch.len(), sent + n);
                blocked_at = None;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let since = *blocked_at.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) + MARGIN {
                    break false;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break true, // reset: the server closed with our requests unread
        }
        assert!(sent < 64 * MIB, "sent {sent} bytes of requests without the server's writes blocking");
    };
    assert!(closed, "a client not reading its answers for the idle timeout + 3 s is still connected");
    std::thread::sleep(Duration::from_millis(300));
    eprintln!(
        "{}",
        server.logs().lines().filter(|l| l.contains("connection_closed")).collect::<Vec<_>>().join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The connection cap and descriptor exhaustion

#[test]
fn connection_flood_beyond_the_cap_sheds_the_longest_waiting_and_healthz_still_answers() {
    const CAP: usize = 16;
    const FLOOD: usize = 40;
    let server = Server::start(&[
        ("ZTGATE_MAX_CONNECTIONS", "16"),
        ("ZTGATE_HEADER_TIMEOUT", "30s"),
        ("ZTGATE_IDLE_TIMEOUT", "1s"),
    ]);
    server.settle(Duration::from_secs(1));
    // Silent connections, one after the other: the server accepts them in this order.
    let mut flood: Vec<TcpStream> = (0..FLOOD).map(|_| server.connect()).collect();
    let shed = FLOOD - CAP;
    for (i, conn) in flood.iter_mut().enumerate().take(shed) {
        assert!(
            wait_closed(conn, MARGIN).is_some(),
            "flood connection {i} (of the {shed} oldest) is still open beyond the cap of {CAP}"
        );
    }
    for (i, conn) in flood.iter_mut().enumerate().skip(shed) {
        assert!(still_open(conn), "flood connection {i} (of the {CAP} newest) was closed");
    }

    // A fresh client is admitted (the oldest waiting connection makes room) and answered.
    let (status, took) =
        healthz(&server, Duration::from_secs(10)).expect("no /healthz answer beyond the cap");
    assert_eq!(status, 200);
    eprintln!("/healthz answered in {took:?} with {CAP} silent connections at the cap");
    assert!(wait_closed(&mut flood[shed], MARGIN).is_some(), "the oldest remaining connection was not shed");
    for (i, conn) in flood.iter_mut().enumerate().skip(shed + 1) {
        assert!(still_open(conn), "flood connection {i} was closed, not the oldest");
    }
    server.wait_for_log("outcome=\"connection_cap\"");
}

#[test]
fn at_the_cap_with_every_connection_busy_a_new_one_gets_503_and_the_busy_ones_stay() {
    let server = Server::start(&[
        ("ZTGATE_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("ZTGATE_MAX_CONNECTIONS", "4"),
        ("ZTGATE_BODY_TIMEOUT", "30s"),
        ("ZTGATE_HEADER_TIMEOUT", "30s"),
        ("ZTGATE_IDLE_TIMEOUT", "1s"),
    ]);
    server.settle(Duration::from_secs(1));
    // Four deliveries being read (a head and 8 bytes of 4 KiB each): none of them waiting.
    let mut busy: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut conn = server.connect();
            conn.write_all(webhook_head(&server, 4096).as_bytes()).unwrap();
            conn.write_all(b"{\"type\":").unwrap();
            conn
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut extra = server.connect();
    let res = read_response(&mut extra, MARGIN).expect("no 503 for a connection beyond a busy cap");
    assert_eq!((res.status, res.code().as_str()), (503, "overloaded"), "{res:?}");
    assert!(res.head.contains("retry-after: 1"), "{res:?}");
    assert!(wait_closed(&mut extra, MARGIN).is_some(), "the refused connection stays open");
    for (i, conn) in busy.iter_mut().enumerate() {
        assert!(still_open(conn), "busy connection {i} was shed");
    }
}

/// `ulimit -n 128`, and a cap above it: the descriptors run out before the cap does.
#[cfg(target_os = "linux")]
#[test]
fn descriptor_exhaustion_sheds_waiting_connections_and_healthz_answers_a_fresh_client() {
    const FLOOD: usize = 200;
    let mut sh = Command::new("sh");
    sh.arg("-c").arg("ulimit -n 128 && exec \"$0\"").arg(example_binary());
    let server = Server::start_with(
        sh,
        &[
            ("ZTGATE_MAX_CONNECTIONS", "512"),
            ("ZTGATE_HEADER_TIMEOUT", "30s"),
            ("ZTGATE_IDLE_TIMEOUT", "30s"),
        ],
    );
    server.wait_for_log("open-file limit");
    // More silent connections than the server has descriptors: the kernel queues the rest.
    let flood: Vec<TcpStream> = (0..FLOOD).map(|_| server.connect()).collect();
    // Without shedding, accept keeps failing until a header timeout (30 s) frees a descriptor.
    let (status, took) = healthz(&server, Duration::from_secs(10))
        .expect("no /healthz answer within 10 s with the descriptors exhausted");
    assert_eq!(status, 200);
    eprintln!("/healthz answered in {took:?} after {FLOOD} silent connections against `ulimit -n 128`");
    let logs = server.logs();
    let warnings = logs.matches("outcome=\"out_of_descriptors\"").count();
    assert!(warnings >= 1, "no out_of_descriptors warning:\n{logs}");
    // Dozens of failed accepts, one warning per burst (10 s), not one per error.
    assert!(warnings <= 2, "{warnings} out_of_descriptors warnings: not rate-limited:\n{logs}");
    drop(flood);
}

// ---------------------------------------------------------------------------------------------
// Unauthenticated body reads

#[test]
fn trickled_webhook_bodies_keep_memory_bounded_and_beyond_the_read_cap_get_503() {
    const CLIENTS: usize = 100;
    const READS: usize = 16;
    const SENT: usize = 900 * 1024;
    let server = Server::start(&[
        ("ZTGATE_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("ZTGATE_MAX_BODY_READS", "16"),
        ("ZTGATE_MAX_CONNECTIONS", "256"),
        ("ZTGATE_BODY_TIMEOUT", "30s"),
        ("ZTGATE_HEADER_TIMEOUT", "30s"),
    ]);
    assert_eq!(healthz(&server, Duration::from_secs(10)).map(|(s, _)| s), Some(200));
    let before = server.rss_kib();

    // Each client promises 1 MiB, sends 900 KiB at once, then a byte every 500 ms.
    let start = Instant::now();
    let head = webhook_head(&server, MIB);
    let (tx, rx) = mpsc::channel();
    let bulk_done = Arc::new(AtomicUsize::new(0));
    for _ in 0..CLIENTS {
        let mut conn = server.connect();
        let mut writer = conn.try_clone().unwrap();
        let head = head.clone();
        let bulk_done = bulk_done.clone();
        std::thread::spawn(move || {
            let sent =
                writer.write_all(head.as_bytes()).is_ok() && writer.write_all(&vec![b' '; SENT]).is_ok();
            bulk_done.fetch_add(1, Ordering::SeqCst);
            if !sent {
                return;
            }
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(500));
                if writer.write_all(b" ").is_err() {
                    return;
                }
            }
        });
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_response(&mut conn, Duration::from_secs(10)).map(|r| (r, start.elapsed())));
        });
    }
    drop(tx);

    // The clients beyond the cap are answered 503 promptly, before their bodies are read.
    for refused in 0..CLIENTS - READS {
        let answer = rx.recv_timeout(Duration::from_secs(15)).ok().flatten();
        let (res, took) = answer.unwrap_or_else(|| {
            panic!("only {refused} of {} clients beyond the read cap were answered", CLIENTS - READS)
        });
        assert_eq!((res.status, res.code().as_str()), (503, "overloaded"), "{res:?}");
        assert!(res.head.contains("retry-after: 1"), "{res:?}");
        assert!(took < Duration::from_secs(10), "a 503 took {took:?}");
    }
    // Once every client has sent its 900 KiB (or been cut off), the 16 being read have theirs
    // in the server: sample its memory while they trickle.
    let deadline = Instant::now() + Duration::from_secs(15);
    while bulk_done.load(Ordering::SeqCst) < CLIENTS {
        assert!(Instant::now() < deadline, "the clients could not send their bodies");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut peak = 0;
    for _ in 0..20 {
        peak = peak.max(server.rss_kib());
        std::thread::sleep(Duration::from_millis(100));
    }
    let grown_mib = peak.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "RSS {:.1} MiB before, {:.1} MiB peak with {CLIENTS} clients trickling 1 MiB bodies ({READS} read at once): +{grown_mib:.1} MiB",
        before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    // 16 bodies of at most 1 MiB (a Vec may hold twice what it grew to) and room for buffers:
    // far below the 100 MiB that reading every body at once would take.
    assert!(grown_mib < 48.0, "RSS grew by {grown_mib:.1} MiB with {READS} body reads allowed");
    if let Ok(Some((res, took))) = rx.try_recv() {
        panic!("a client being read was answered after {took:?}, before its body deadline: {res:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[test]
fn invalid_connection_settings_exit_2_naming_the_variable() {
    let cases: &[(&str, &[&str])] = &[
        (
            "ZTGATE_HEADER_TIMEOUT",
            &["0", "", "10x", "-1", "1.5s", "50ms", "3601", "99999999999s", "s", " ms"],
        ),
        ("ZTGATE_BODY_TIMEOUT", &["0s", "1h", "ten"]),
        ("ZTGATE_IDLE_TIMEOUT", &["0ms", "+5"]),
        ("ZTGATE_MAX_CONNECTIONS", &["0", "-1", "1e3", "65537", "", "+16"]),
        ("ZTGATE_MAX_BODY_READS", &["0", "many"]),
    ];
    for (var, values) in cases {
        for value in *values {
            let (status, stderr) = run_to_exit(&[(var, value)]);
            assert_eq!(status.code(), Some(2), "{var}={value:?}: exit status {status:?}; stderr:\n{stderr}");
            assert!(stderr.contains(var), "{var}={value:?}: stderr does not name it:\n{stderr}");
            assert!(!stderr.contains("panicked"), "{var}={value:?}: panicked:\n{stderr}");
        }
    }
    // More body reads than connections could never all happen: refused too.
    let (status, stderr) = run_to_exit(&[("ZTGATE_MAX_CONNECTIONS", "8"), ("ZTGATE_MAX_BODY_READS", "9")]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ZTGATE_MAX_BODY_READS"), "{stderr}");
}

#[test]
fn valid_connection_settings_start_and_are_logged() {
    let server = Server::start(&[
        ("ZTGATE_HEADER_TIMEOUT", "1500ms"),
        ("ZTGATE_BODY_TIMEOUT", "20"),
        ("ZTGATE_IDLE_TIMEOUT", "45s"),
        ("ZTGATE_MAX_CONNECTIONS", "100"),
        ("ZTGATE_MAX_BODY_READS", "10"),
    ]);
    assert_eq!(healthz(&server, Duration::from_secs(10)).map(|(s, _)| s), Some(200));
    server.wait_for_log("connection limits");
    let logs = server.logs();
    for field in
        ["header_timeout_ms=1500", "body_timeout_ms=20000", "idle_timeout_ms=45000", "max_connections=100"]
    {
        assert!(logs.contains(field), "{field} not in the start-up log:\n{logs}");
    }
}
