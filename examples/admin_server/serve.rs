//! The accept loop and the life of each connection: HTTP/1.1 through hyper's connection
//! builder, with the deadlines and the connection cap that `axum::serve` does not have.
//!
//! Every connection is in one of four phases, and each phase has one deadline:
//!
//! | phase | deadline | setting |
//! |---|---|---|
//! | waiting for its first request | accept + header timeout (a silent connection) | `ZTGATE_HEADER_TIMEOUT` |
//! | reading a request head | first request: accept + header timeout; later ones: first byte + header timeout | `ZTGATE_HEADER_TIMEOUT` |
//! | waiting after an answer (keep-alive) | end of the answer + idle timeout | `ZTGATE_IDLE_TIMEOUT` |
//! | answering a request | none for the connection; the request body must be whole by the request's start + body timeout (408) | `ZTGATE_BODY_TIMEOUT` |
//!
//! A client that leaves its answers unread is waiting too: this server's answers are whole
//! bodies, which hyper takes at once (the answering phase ends then), and hyper reads no next
//! request while an answer is unwritten, so the idle timeout closes it (a test pipelines
//! requests without reading to check this). A streaming answer would need a deadline on write
//! progress as well. A watchdog beside each connection closes it at its deadline.
//!
//! Why not hyper's own timer: hyper's `header_read_timeout` is armed whenever hyper waits for a
//! head, so it is also the keep-alive timeout (idle = header), it does not bound a body, and the
//! cap below needs to know each connection's phase anyway. tower-http's body timeout is a
//! per-frame idle timeout: a client sending one byte a second never trips it. So the phases are
//! tracked here, from what hyper does with the socket (bytes read, the service called, the
//! answer's body dropped), and hyper only parses and writes HTTP/1.1.
//!
//! The cap (`ZTGATE_MAX_CONNECTIONS`): a connection accepted at the cap sheds the one that has
//! been waiting longest (silent, mid-head or idle; never one being answered), so a flood of
//! idle connections cannot keep a fresh client out: the flood's own connections are the oldest.
//! When every connection is being answered, the new one gets a 503 and is closed. When the
//! process runs out of file descriptors anyway (a cap above `ulimit -n`), the accept loop sheds
//! the same way and retries after a few milliseconds instead of sleeping a second, and warns
//! once per burst, not per error.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::{BoxError, Router};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

use crate::LOG_TARGET;

/// hyper's read buffer per connection (its default is ~400 KiB): bounds what a half-sent head
/// can make us hold. Large enough for ztgate's own header limits (32 KiB of cookies, 16 KiB
/// tokens, an 8 KiB path), which answer with their own 431 first.
const MAX_CONNECTION_BUFFER: usize = 128 * 1024;
/// How long the accept loop waits at most, out of descriptors, for the connection it shed to
/// close (it closes within microseconds).
const FD_BACKOFF: Duration = Duration::from_millis(10);
/// How long it waits after an accept error it cannot act on (nothing to shed, or unknown).
const ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// A repeated warning (descriptors exhausted, cap reached) is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// How long a shutdown waits for connections being answered.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// File descriptors the process needs besides connections (SQLite, the JWKS client, the
/// runtime): a cap closer than this to `ulimit -n` is warned about.
const FD_RESERVE: u64 = 64;
/// `EMFILE` and `ENFILE` (the same numbers on Linux, macOS and the BSDs).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// The connection limits, from `ZTGATE_HEADER_TIMEOUT`, `ZTGATE_BODY_TIMEOUT`,
/// `ZTGATE_IDLE_TIMEOUT` and `ZTGATE_MAX_CONNECTIONS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) header_timeout: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the connections being
/// answered finish (for up to [`SHUTDOWN_GRACE`]).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    warn_if_near_fd_limit(limits.max_connections);
    tracing::info!(
        target: LOG_TARGET,
        layer = "server",
        header_timeout_ms = limits.header_timeout.as_millis() as u64,
        body_timeout_ms = limits.body_timeout.as_millis() as u64,
        idle_timeout_ms = limits.idle_timeout.as_millis() as u64,
        max_connections = limits.max_connections,
        "connection limits"
    );
    let registry = Arc::new(Registry::default());
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only, through the builder that can hand a connection over to a WebSocket
    // (`GET /admin/ws`) and still drain it gracefully at shutdown.
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    // The deadlines are the watchdog's (see the module docs); hyper's own timer stays off.
    builder.http1().header_read_timeout(None).max_buf_size(MAX_CONNECTION_BUFFER);
    let builder = Arc::new(builder);
    let mut fd_warning = Throttle::default();
    let mut cap_warning = Throttle::default();
    let mut error_warning = Throttle::default();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) if is_out_of_descriptors(&e) => {
                let shed = registry.shed_oldest();
                let shed_any = shed.is_some();
                if let Some(suppressed) = fd_warning.hit() {
                    tracing::warn!(
                        target: LOG_TARGET,
                        layer = "server",
                        outcome = "out_of_descriptors",
                        shed = shed_any,
                        suppressed,
                        "accept failed for lack of file descriptors: shedding the longest-waiting \
                         connection (lower ZTGATE_MAX_CONNECTIONS or raise the open-file limit)"
                    );
                }
                match shed {
                    // Its descriptor is free once its task has dropped it.
                    Some(conn) => {
                        let _ = tokio::time::timeout(FD_BACKOFF, conn.closed.notified()).await;
                    }
                    None => tokio::time::sleep(ERROR_BACKOFF).await,
                }
                continue;
            }
            Err(e) => {
                if let Some(suppressed) = error_warning.hit() {
                    tracing::warn!(target: LOG_TARGET, layer = "server", outcome = "accept_failed", error = ?e.to_string(), suppressed);
                }
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        let conn = match registry.admit(limits.max_connections) {
            Admission::Admitted { conn, shed } => {
                if shed && let Some(suppressed) = cap_warning.hit() {
                    tracing::warn!(
                        target: LOG_TARGET,
                        layer = "server",
                        outcome = "connection_cap",
                        max_connections = limits.max_connections,
                        suppressed,
                        "at ZTGATE_MAX_CONNECTIONS: shedding the longest-waiting connection"
                    );
                }
                conn
            }
            Admission::Full => {
                if let Some(suppressed) = cap_warning.hit() {
                    tracing::warn!(
                        target: LOG_TARGET,
                        layer = "server",
                        outcome = "connection_refused",
                        max_connections = limits.max_connections,
                        suppressed,
                        "at ZTGATE_MAX_CONNECTIONS with every connection busy: refusing with 503"
                    );
                }
                refuse(stream);
                continue;
            }
        };
        let io = TokioIo::new(WatchedIo { inner: stream, conn: conn.clone() });
        let service = service(app.clone(), conn.clone(), limits.body_timeout);
        let (watcher, builder, registry) = (graceful.watcher(), builder.clone(), registry.clone());
        tokio::spawn(async move {
            // An upgraded connection (a WebSocket) leaves this task, the registry and the
            // connection cap here: `ZTGATE_MAX_WEBSOCKETS` bounds those.
            let connection = watcher.watch(builder.serve_connection_with_upgrades(io, service));
            let _leave = Leave { registry, conn: conn.clone() };
            tokio::select! {
                served = connection => {
                    if let Err(e) = served {
                        tracing::debug!(target: LOG_TARGET, layer = "server", outcome = "connection_error", error = ?e.to_string());
                    }
                }
                reason = watchdog(&conn, &limits) => {
                    tracing::debug!(target: LOG_TARGET, layer = "server", outcome = "connection_closed", reason = reason.as_str());
                }
            }
        });
    }

    drop(listener);
    tracing::info!(target: LOG_TARGET, layer = "server", "shutting down");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!(target: LOG_TARGET, layer = "server", "connections still open after the shutdown grace period");
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) || e.kind() == io::ErrorKind::OutOfMemory
}

/// Answers a connection accepted at the cap, when no connection can be shed, with a 503 it
/// may or may not read (one non-blocking write), and closes it.
fn refuse(stream: TcpStream) {
    const BODY: &str =
        r#"{"code":"overloaded","message":"the server is at its connection limit; retry later"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// Warns when the connection cap leaves fewer than [`FD_RESERVE`] descriptors below the
/// process's open-file limit (read from `/proc/self/limits` where there is one).
fn warn_if_near_fd_limit(max_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else { return };
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(soft) = soft
        && (max_connections as u64).saturating_add(FD_RESERVE) > soft
    {
        tracing::warn!(
            target: LOG_TARGET,
            layer = "server",
            max_connections,
            open_file_limit = soft,
            "ZTGATE_MAX_CONNECTIONS is close to or above the open-file limit: descriptors can run out \
             before the cap does (connections are then shed); raise the limit or lower the cap"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Connections and their phases

#[derive(Clone, Copy)]
enum Phase {
    /// No byte of the next request yet, since `since`: the accept (`served` false) or the end
    /// of the last answer.
    Waiting { since: Instant, served: bool },
    /// Part of a head has arrived; it must be whole by `since` + the header timeout.
    Head { since: Instant },
    /// A request is being answered.
    Answering,
}

/// Why the watchdog closed a connection.
#[derive(Clone, Copy)]
enum Reason {
    HeaderTimeout,
    IdleTimeout,
    Shed,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::Shed => "shed",
        }
    }
}

impl Phase {
    /// When and why the connection must close, if nothing changes.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Reason)> {
        match *self {
            Self::Waiting { since, served: false } | Self::Head { since } => {
                Some((since + limits.header_timeout, Reason::HeaderTimeout))
            }
            Self::Waiting { since, served: true } => Some((since + limits.idle_timeout, Reason::IdleTimeout)),
            Self::Answering => None,
        }
    }

    /// Since when the connection has been waiting for a request: `None` while answering (a
    /// connection being answered is never shed).
    fn waiting_since(&self) -> Option<Instant> {
        match *self {
            Self::Waiting { since, .. } | Self::Head { since } => Some(since),
            Self::Answering => None,
        }
    }
}

/// One connection, shared by its socket wrapper, its service, its watchdog and the registry.
struct Conn {
    id: u64,
    phase: Mutex<Phase>,
    /// Wakes the watchdog: a deadline got earlier, or the connection is shed.
    wake: Notify,
    shed: AtomicBool,
    /// Notified when the connection's task has ended (its socket is closed).
    closed: Notify,
}

impl Conn {
    fn new(id: u64) -> Self {
        Self {
            id,
            phase: Mutex::new(Phase::Waiting { since: Instant::now(), served: false }),
            wake: Notify::new(),
            shed: AtomicBool::new(false),
            closed: Notify::new(),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes arrived: while waiting, a head has begun.
    fn bytes_read(&self) {
        let mut phase = self.phase();
        if let Phase::Waiting { since, served } = *phase {
            // The first request's head is due by accept + header timeout; a later one's by its
            // first byte + header timeout (earlier than the idle deadline: wake the watchdog).
            *phase = Phase::Head { since: if served { Instant::now() } else { since } };
            if served {
                self.wake.notify_one();
            }
        }
    }

    fn answering(&self) {
        *self.phase() = Phase::Answering;
    }

    fn answered(&self) {
        *self.phase() = Phase::Waiting { since: Instant::now(), served: true };
        self.wake.notify_one();
    }

    fn shed(&self) {
        self.shed.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// Returns when the connection must close: a deadline passed, or it was shed.
async fn watchdog(conn: &Conn, limits: &Limits) -> Reason {
    loop {
        if conn.shed.load(Ordering::Acquire) {
            return Reason::Shed;
        }
        let deadline = conn.phase().deadline(limits);
        // `notify_one` keeps a permit when nobody waits: a wake between the line above and
        // the wait below is not lost.
        match deadline {
            Some((at, reason)) if at <= Instant::now() => return reason,
            Some((at, _)) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = conn.wake.notified() => {}
                }
            }
            None => conn.wake.notified().await,
        }
    }
}

/// The open connections, for the cap and for shedding.
#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

enum Admission {
    /// `shed`: another connection was shed to make room.
    Admitted { conn: Arc<Conn>, shed: bool },
    /// At the cap with every connection being answered.
    Full,
}

impl Registry {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit(&self, cap: usize) -> Admission {
        let mut conns = self.conns();
        let mut shed = false;
        if conns.len() >= cap {
            if Self::shed_oldest_of(&mut conns).is_none() {
                return Admission::Full;
            }
            shed = true;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(id));
        conns.insert(id, conn.clone());
        Admission::Admitted { conn, shed }
    }

    /// Sheds the connection that has waited longest for a request, and returns it; `None` if
    /// every one is being answered.
    fn shed_oldest(&self) -> Option<Arc<Conn>> {
        Self::shed_oldest_of(&mut self.conns())
    }

    fn shed_oldest_of(conns: &mut HashMap<u64, Arc<Conn>>) -> Option<Arc<Conn>> {
        let oldest = conns
            .values()
            .filter_map(|c| c.phase().waiting_since().map(|since| (since, c.id)))
            .min()
            .map(|(_, id)| id);
        // Removed now, so the cap counts it out and it is not picked twice; its task closes it.
        let conn = oldest.and_then(|id| conns.remove(&id))?;
        conn.shed();
        Some(conn)
    }
}

/// Removes its connection from the registry when the connection's task ends (after the
/// socket is dropped), and says so.
struct Leave {
    registry: Arc<Registry>,
    conn: Arc<Conn>,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.registry.conns().remove(&self.conn.id);
        self.conn.closed.notify_one();
    }
}

/// Logs a repeated warning once, then at most every [`WARN_EVERY`], with how many were
/// suppressed in between.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(suppressed)` when this occurrence is to be logged.
    fn hit(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < WARN_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What the phases are read from: the socket, the service, the bodies

/// The socket, telling its connection when bytes arrive.
struct WatchedIo {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.bytes_read();
        }
        poll
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The app as one connection's hyper service: marks the connection answering while a request
/// is in hand, and puts the body deadline on each request's body.
fn service(
    app: Router,
    conn: Arc<Conn>,
    body_timeout: Duration,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<AnswerBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<AnswerBody>, Infallible>> + Send,
> {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        conn.answering();
        let answered = Answered(Arc::clone(&conn));
        let timed_out = Arc::new(AtomicBool::new(false));
        let req = req.map(|inner| {
            Body::new(DeadlineBody {
                inner,
                deadline: Box::pin(tokio::time::sleep(body_timeout)),
                timed_out: timed_out.clone(),
                state: Reading::Open,
            })
        });
        let app = app.clone();
        async move {
            let res = app.oneshot(req).await.unwrap_or_else(|never| match never {});
            // The handler saw a body error; say what it was, and close (the body is unread).
            let res = if timed_out.load(Ordering::Acquire) {
                tracing::debug!(target: LOG_TARGET, layer = "server", outcome = "body_timeout");
                body_timeout_response()
            } else {
                res
            };
            Ok(res.map(|inner| AnswerBody { inner, _answered: answered }))
        }
    })
}

fn body_timeout_response() -> Response<Body> {
    const BODY: &str = r#"{"code":"body_timeout","message":"the request body did not arrive in time"}"#;
    let mut res = Response::new(Body::from(BODY));
    *res.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// Marks the connection waiting again when the answer's body is done with (hyper drops it once
/// written, or at once when it is empty).
struct Answered(Arc<Conn>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.answered();
    }
}

/// An answer's body, carrying the [`Answered`] marker.
struct AnswerBody {
    inner: Body,
    _answered: Answered,
}

impl HttpBody for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails once its whole-body deadline has passed, however steadily its
/// bytes trickle in (a per-chunk idle timeout would let one byte a second through forever).
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    timed_out: Arc<AtomicBool>,
    state: Reading,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    Open,
    /// The body ended in time: the deadline no longer matters.
    Ended,
    /// The deadline passed: every later poll fails too, so a handler can never mistake a cut
    /// body for a whole one.
    TimedOut,
}

#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimeout {}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match this.state {
            Reading::TimedOut => return Poll::Ready(Some(Err(BodyTimeout.into()))),
            Reading::Open if this.deadline.as_mut().poll(cx).is_ready() => {
                this.state = Reading::TimedOut;
                this.timed_out.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(BodyTimeout.into())));
            }
            Reading::Open | Reading::Ended => {}
        }
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if frame.is_none() {
            this.state = Reading::Ended;
        }
        Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.state != Reading::TimedOut && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
