//! Secret values: bytes that are never printed.
//!
//! [`Secret`] holds key material (HMAC keys, webhook secrets, API keys). Its `Debug` shows
//! only the length, it has no `Display`, and equality is constant-time.

use std::fmt;

use subtle::ConstantTimeEq;

/// Secret bytes. `Debug` prints `Secret([redacted; N bytes])`.
#[derive(Clone)]
pub struct Secret(Box<[u8]>);

impl Secret {
    /// Wraps key material.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into().into_boxed_slice())
    }

    /// The raw bytes. Hand them to a MAC or hash; never to a log.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty (never a usable key).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret([redacted; {} bytes])", self.0.len())
    }
}

impl PartialEq for Secret {
    /// Constant-time in the contents (the length is not secret).
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

impl From<Vec<u8>> for Secret {
    fn from(v: Vec<u8>) -> Self {
        Self::new(v)
    }
}

impl From<&[u8]> for Secret {
    fn from(v: &[u8]) -> Self {
        Self::new(v.to_vec())
    }
}

impl From<String> for Secret {
    fn from(v: String) -> Self {
        Self::new(v.into_bytes())
    }
}

impl From<&str> for Secret {
    fn from(v: &str) -> Self {
        Self::new(v.as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let s = Secret::from("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret([redacted; 19 bytes])");
        assert_eq!(s, Secret::from("hunter2-very-secret"));
        assert_ne!(s, Secret::from("hunter2-very-secreT"));
    }

    /// Counts reads; answers `Ok("s1")` once the gate opens, or `Unavailable` if `fail`.
    #[derive(Debug)]
    struct Gated {
        reads: std::sync::atomic::AtomicUsize,
        open: tokio::sync::watch::Receiver<bool>,
        fail: bool,
    }

    impl SecretSource for Gated {
        fn get(&self) -> SecretFuture<'_> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut open = self.open.clone();
            let fail = self.fail;
            Box::pin(async move {
                open.wait_for(|open| *open).await.expect("the gate outlives the read");
                if fail { Err(SecretError::Unavailable("store down".into())) } else { Ok(Secret::from("s1")) }
            })
        }
    }

    fn gated(fail: bool) -> (tokio::sync::watch::Sender<bool>, Gated) {
        let (gate, open) = tokio::sync::watch::channel(false);
        (gate, Gated { reads: Default::default(), open, fail })
    }

    fn reads(source: &Gated) -> usize {
        source.reads.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn an_abandoned_read_is_taken_over_by_a_waiting_call() {
        let (gate, source) = gated(false);
        let per_request = PerRequest::new(&source);
        // The first call starts the read, then is dropped (its timeout) while a second call
        // waits for it; the gate opens only after that.
        let abandoned = tokio::time::timeout(std::time::Duration::from_millis(50), per_request.get());
        let waiting = async {
            tokio::task::yield_now().await;
            per_request.get().await
        };
        let opener = async {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            gate.send(true).unwrap();
        };
        let all = async { tokio::join!(abandoned, waiting, opener) };
        let (abandoned, waiting, ()) = tokio::time::timeout(std::time::Duration::from_secs(30), all)
            .await
            .expect("the waiting call hung on a read nobody runs");
        assert!(abandoned.is_err(), "the first call was to be dropped mid-read");
        assert_eq!(waiting, Ok(Secret::from("s1")));
        assert_eq!(reads(&source), 2, "one abandoned read, one taken over");
        assert_eq!(per_request.get().await, Ok(Secret::from("s1")));
        assert_eq!(reads(&source), 2);
    }

    #[tokio::test]
    async fn concurrent_calls_in_one_task_share_one_read_and_its_error() {
        let (gate, source) = gated(true);
        let per_request = PerRequest::new(&source);
        assert!(format!("{per_request:?}").contains("read: false"));
        let opener = async {
            tokio::task::yield_now().await;
            gate.send(true).unwrap();
        };
        let (a, b, c, ()) = tokio::join!(per_request.get(), per_request.get(), per_request.get(), opener);
        let down = Err(SecretError::Unavailable("store down".into()));
        assert_eq!((&a, &b, &c), (&down, &down, &down));
        // The request keeps its answer: an error is not retried within the request.
        assert_eq!(per_request.get().await, down);
        assert_eq!(reads(&source), 1);
        assert!(format!("{per_request:?}").contains("read: true"));
    }
}

/// Why a secret could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretError {
    /// The source has no value (unset variable, missing binding).
    Missing(String),
    /// The source failed (store unreachable...).
    Unavailable(String),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(what) => write!(f, "secret {what} is not set"),
            Self::Unavailable(why) => write!(f, "secret store unavailable: {why}"),
        }
    }
}

impl std::error::Error for SecretError {}

/// A boxed, sendable future, as returned by [`SecretSource::get`].
pub type SecretFuture<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Secret, SecretError>> + Send + 'a>>;

/// Where a secret comes from: a static value, an environment variable, a Workers secret, a
/// Secrets-Store style `await get()`. Wrap slow sources in [`CachedSecret`], and read them at
/// most once per request with [`PerRequest`].
pub trait SecretSource: Send + Sync + fmt::Debug + 'static {
    /// Reads the current value.
    fn get(&self) -> SecretFuture<'_>;
}

impl<S: SecretSource> SecretSource for std::sync::Arc<S> {
    fn get(&self) -> SecretFuture<'_> {
        (**self).get()
    }
}

/// A fixed value.
#[derive(Clone, Debug)]
pub struct StaticSecret(Secret);

impl StaticSecret {
    /// Always returns `secret`.
    pub fn new(secret: impl Into<Secret>) -> Self {
        Self(secret.into())
    }
}

impl SecretSource for StaticSecret {
    fn get(&self) -> SecretFuture<'_> {
        let value = self.0.clone();
        Box::pin(async move { Ok(value) })
    }
}

/// An environment variable, read on every `get` (so a process that updates its environment,
/// or a test, sees the change). Empty counts as missing.
#[derive(Clone, Debug)]
pub struct EnvSecret {
    var: String,
}

impl EnvSecret {
    /// Reads `var`.
    pub fn new(var: impl Into<String>) -> Self {
        Self { var: var.into() }
    }
}

impl SecretSource for EnvSecret {
    fn get(&self) -> SecretFuture<'_> {
        let value = match std::env::var(&self.var) {
            Ok(v) if !v.is_empty() => Ok(Secret::from(v)),
            _ => Err(SecretError::Missing(self.var.clone())),
        };
        Box::pin(async move { value })
    }
}

/// A file (a mounted Kubernetes or Docker secret, a file a deploy script rewrites), read on
/// every `get`, so a rotated secret is seen without a restart; wrap it in [`CachedSecret`] or
/// give it to a source with a TTL (such as
/// [`KeyRingSource`](crate::identity::hmac_token::KeyRingSource)) to read it at most once per
/// TTL.
///
/// At most [`FileSecret::MAX_BYTES`] are read: a larger file is refused, never truncated. A
/// missing or empty file is [`SecretError::Missing`], any other failure
/// [`SecretError::Unavailable`]; errors name the path, never the contents. The read is a
/// synchronous read of a small local file. Replace the file atomically (write a new file, then
/// rename it over the old one) so a reader never sees half of it.
#[derive(Clone, Debug)]
pub struct FileSecret {
    path: std::path::PathBuf,
}

impl FileSecret {
    /// The largest file read (64 KiB).
    pub const MAX_BYTES: u64 = 64 * 1024;

    /// Reads `path`.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub(crate) fn read(&self) -> Result<Secret, SecretError> {
        use std::io::Read as _;
        let what = || self.path.display().to_string();
        let file = std::fs::File::open(&self.path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SecretError::Missing(what()),
            _ => SecretError::Unavailable(format!("{}: {}", what(), e.kind())),
        })?;
        let mut bytes = Vec::new();
        file.take(Self::MAX_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| SecretError::Unavailable(format!("{}: {}", what(), e.kind())))?;
        if bytes.len() as u64 > Self::MAX_BYTES {
            return Err(SecretError::Unavailable(format!(
                "{} is larger than {} bytes",
                what(),
                Self::MAX_BYTES
            )));
        }
        if bytes.is_empty() {
            return Err(SecretError::Missing(what()));
        }
        Ok(Secret::new(bytes))
    }
}

impl SecretSource for FileSecret {
    fn get(&self) -> SecretFuture<'_> {
        let value = self.read();
        Box::pin(async move { value })
    }
}

/// Caches another source for a short TTL, so a rotated secret takes effect without a
/// restart (after at most `ttl`) while the store is asked at most about once per `ttl`.
/// Failures are not cached.
pub struct CachedSecret {
    source: Box<dyn SecretSource>,
    ttl: std::time::Duration,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    cached: std::sync::Mutex<Option<(Secret, u64)>>,
}

impl fmt::Debug for CachedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedSecret").field("source", &self.source).field("ttl", &self.ttl).finish()
    }
}

impl CachedSecret {
    /// Caches `source` for `ttl` (e.g. 60 s), timed by `clock`.
    pub fn new(
        source: impl SecretSource,
        ttl: std::time::Duration,
        clock: std::sync::Arc<dyn crate::clock::Clock>,
    ) -> Self {
        Self { source: Box::new(source), ttl, clock, cached: std::sync::Mutex::new(None) }
    }
}

impl SecretSource for CachedSecret {
    fn get(&self) -> SecretFuture<'_> {
        Box::pin(async move {
            let now = self.clock.now();
            if let Some((secret, at)) = &*self.cached.lock().unwrap_or_else(|p| p.into_inner())
                && now < at.saturating_add(self.ttl.as_secs())
            {
                return Ok(secret.clone());
            }
            let fresh = self.source.get().await?;
            *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((fresh.clone(), now));
            Ok(fresh)
        })
    }
}

/// A secret read at most once for the lifetime of this value: make one per request, so every
/// mechanism in the request sees the same value and the store is asked once.
///
/// Single flight: when several calls wait for the first read at the same time (mechanisms of
/// one request run concurrently), one of them reads the source and the others wait for its
/// answer; none of them reads again. The answer, an error included, is kept for every later
/// call. A read that is abandoned (its caller's future dropped, or the source panicked)
/// hands over: one of the waiting calls reads instead, so no caller waits forever for a
/// read nobody is running.
///
/// Built on `std` only (a mutex and the waiters' wakers), so it behaves the same natively and
/// in a Worker; every waiter belongs to the same request, so no task is woken from another
/// request's context.
pub struct PerRequest<'a> {
    source: &'a dyn SecretSource,
    state: std::sync::Mutex<ReadState>,
}

/// Where the one read of a [`PerRequest`] stands.
enum ReadState {
    /// Nobody has read, or the read was abandoned.
    Unread,
    /// One call is reading; these calls wait for it.
    Reading(Vec<std::task::Waker>),
    /// The answer every call gets.
    Read(Result<Secret, SecretError>),
}

/// What a call to [`PerRequest::get`] is to do.
enum Role {
    /// Return this answer.
    Answer(Result<Secret, SecretError>),
    /// Read the source: this call holds the read.
    Read,
}

impl fmt::Debug for PerRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let read = matches!(*self.lock(), ReadState::Read(_));
        f.debug_struct("PerRequest").field("source", &self.source).field("read", &read).finish()
    }
}

impl<'a> PerRequest<'a> {
    /// Memoizes `source`.
    pub fn new(source: &'a dyn SecretSource) -> Self {
        Self { source, state: std::sync::Mutex::new(ReadState::Unread) }
    }

    /// The value, read on first use (once, however many calls wait for it).
    pub async fn get(&self) -> Result<Secret, SecretError> {
        match std::future::poll_fn(|cx| self.poll_role(cx)).await {
            Role::Answer(answer) => answer,
            Role::Read => {
                // If this future is dropped while the source is read, the guard hands the read
                // over to a waiting call.
                let mut guard = ReadGuard { cell: self, finished: false };
                let answer = self.source.get().await;
                guard.finish(answer.clone());
                answer
            }
        }
    }

    fn poll_role(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Role> {
        let mut state = self.lock();
        match &mut *state {
            ReadState::Read(answer) => std::task::Poll::Ready(Role::Answer(answer.clone())),
            ReadState::Unread => {
                *state = ReadState::Reading(Vec::new());
                std::task::Poll::Ready(Role::Read)
            }
            ReadState::Reading(waiters) => {
                // One entry per waiting task: a task polled again does not grow the list.
                if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                std::task::Poll::Pending
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReadState> {
        // The state is valid at every point a panic could leave it; poisoning adds nothing.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the state on and wakes every waiting call (outside the lock).
    fn settle(&self, next: ReadState) {
        let previous = std::mem::replace(&mut *self.lock(), next);
        if let ReadState::Reading(waiters) = previous {
            waiters.into_iter().for_each(std::task::Waker::wake);
        }
    }
}

/// Held by the call that reads: records its answer, or hands the read over if dropped first.
struct ReadGuard<'c, 'a> {
    cell: &'c PerRequest<'a>,
    finished: bool,
}

impl ReadGuard<'_, '_> {
    fn finish(&mut self, answer: Result<Secret, SecretError>) {
        self.finished = true;
        self.cell.settle(ReadState::Read(answer));
    }
}

impl Drop for ReadGuard<'_, '_> {
    fn drop(&mut self) {
        if !self.finished {
            self.cell.settle(ReadState::Unread);
        }
    }
}
