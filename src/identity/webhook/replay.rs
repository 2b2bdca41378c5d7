//! The replay guard: which signed messages were already accepted.
//!
//! A webhook signature proves who sent a message, not that it is the first time it arrives: a
//! captured request verifies again until its timestamp leaves the tolerance window. The guard
//! remembers each accepted message until then, so a second delivery is refused with
//! [`Rejection::Replayed`](crate::Rejection::Replayed) (409).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use crate::BoxFuture;

/// A store of accepted message keys, shared by every instance that serves one endpoint.
///
/// One operation, atomic check-and-record: two deliveries of the same message racing on two
/// instances must not both see "first". In memory that is a mutex ([`InMemoryReplayGuard`]);
/// in Redis `SET <key> 1 NX EXAT <expires_at>` (answer `OK`: first; nil: replay); at the
/// edge a Durable Object. Cloudflare KV is eventually consistent and therefore not a replay
/// guard.
///
/// **Fail-safe behaviour.** A store that cannot answer (unreachable, timed out, full) returns
/// an error, never `Ok(true)`: the verifier then refuses the message with a 503, and the
/// provider retries it later. Accepting it unchecked would let a replay through exactly while
/// the store is down, which is when an attacker would try.
///
/// Keys arrive already scoped by the verifier (`svix:<id>`, `stripe:<mac>`, `github:<mac>`),
/// so one store can serve several endpoints and providers without collisions.
pub trait ReplayGuard: Send + Sync + fmt::Debug {
    /// Records `key` until `expires_at` (Unix seconds, inclusive) if it is not recorded yet,
    /// or its record expired before `now`.
    ///
    /// Answers `Ok(true)` when the key was recorded by this call (first delivery), `Ok(false)`
    /// when a live record already existed (replay). Implementations must make the check and
    /// the record one atomic step.
    fn first_seen<'a>(
        &'a self,
        key: &'a str,
        now: u64,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<bool, ReplayStoreError>>;
}

/// Why a replay guard could not answer. The verifier refuses the message (503) either way.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayStoreError {
    /// The store could not be reached or answered with an error. The message is for
    /// operators: implementations must not put connection strings or credentials in it.
    Unavailable(String),
    /// Every slot holds a record that is still live. Forgetting one would let that message be
    /// replayed, so new messages are refused until records expire.
    Full {
        /// The store's capacity, in records.
        capacity: usize,
    },
}

impl fmt::Display for ReplayStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(why) => write!(f, "replay store unavailable: {why}"),
            Self::Full { capacity } => write!(f, "replay store full: {capacity} records still live"),
        }
    }
}

impl std::error::Error for ReplayStoreError {}

/// A replay guard in this process's memory: right for a single instance, and for tests.
///
/// A fleet of instances needs a shared store (see [`ReplayGuard`]); with one guard per
/// instance, a replay sent to another instance is accepted.
///
/// Capacity is bounded. When full, records past their expiry are dropped first; when every
/// record is still live the guard **fails closed**: [`first_seen`](ReplayGuard::first_seen)
/// answers [`ReplayStoreError::Full`] (a 503) rather than forgetting a message that could then
/// be replayed. Only messages whose signature verified reach the guard, so filling it takes
/// the provider's own traffic (or its secret); size it for the peak rate times the tolerance
/// window (twice the window for timestamps up to the tolerance in the future).
pub struct InMemoryReplayGuard {
    capacity: usize,
    state: Mutex<State>,
}

struct State {
    /// Key → last second (inclusive) the record is live.
    live_until: HashMap<String, u64>,
    /// A lower bound on the values of `live_until` (`u64::MAX` when empty): while `now` is
    /// not past it, nothing can be expired and a full guard skips the scan.
    earliest: u64,
}

impl InMemoryReplayGuard {
    /// Capacity of [`InMemoryReplayGuard::default`]: 10 000 records (a few MB at most).
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// A guard holding at most `capacity` records. A capacity of 0 refuses every message.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { capacity, state: Mutex::new(State { live_until: HashMap::new(), earliest: u64::MAX }) }
    }

    /// The capacity, in records.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records held now, expired ones included until they are evicted.
    pub fn len(&self) -> usize {
        self.lock().live_until.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The map is consistent after any panic (no invariant spans two operations), so a
        // poisoned lock is still safe to use; refusing forever would be a self-inflicted outage.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_and_record(&self, key: &str, now: u64, expires_at: u64) -> Result<bool, ReplayStoreError> {
        let mut state = self.lock();
        match state.live_until.get(key) {
            Some(&until) if until >= now => return Ok(false),
            // An expired record of the same key: overwritten below, no new slot needed.
            Some(_) => {}
            None if state.live_until.len() >= self.capacity => {
                state.evict_expired(now);
                if state.live_until.len() >= self.capacity {
                    return Err(ReplayStoreError::Full { capacity: self.capacity });
                }
            }
            None => {}
        }
        state.live_until.insert(key.to_owned(), expires_at);
        state.earliest = state.earliest.min(expires_at);
        Ok(true)
    }
}

impl State {
    fn evict_expired(&mut self, now: u64) {
        if self.earliest >= now {
            return;
        }
        self.live_until.retain(|_, until| *until >= now);
        self.earliest = self.live_until.values().copied().min().unwrap_or(u64::MAX);
    }
}

impl Default for InMemoryReplayGuard {
    fn default() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }
}

impl fmt::Debug for InMemoryReplayGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryReplayGuard")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl ReplayGuard for InMemoryReplayGuard {
    fn first_seen<'a>(
        &'a self,
        key: &'a str,
        now: u64,
        expires_at: u64,
    ) -> BoxFuture<'a, Result<bool, ReplayStoreError>> {
        // Decided before the future is returned: the lock is never held across an await.
        let answer = self.check_and_record(key, now, expires_at);
        Box::pin(std::future::ready(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_record_is_a_replay_and_an_expired_one_is_not() {
        let guard = InMemoryReplayGuard::with_capacity(4);
        assert_eq!(guard.check_and_record("svix:a", 100, 200), Ok(true));
        assert_eq!(guard.check_and_record("svix:a", 200, 300), Ok(false));
        assert_eq!(guard.check_and_record("svix:a", 201, 300), Ok(true));
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn a_full_guard_evicts_expired_records_and_otherwise_fails_closed() {
        let guard = InMemoryReplayGuard::with_capacity(2);
        assert_eq!(guard.check_and_record("k1", 100, 150), Ok(true));
        assert_eq!(guard.check_and_record("k2", 100, 400), Ok(true));
        assert_eq!(guard.check_and_record("k3", 150, 450), Err(ReplayStoreError::Full { capacity: 2 }));
        // Still full, but the records it holds are still answered.
        assert_eq!(guard.check_and_record("k1", 150, 450), Ok(false));
        assert_eq!(guard.check_and_record("k3", 151, 451), Ok(true));
        assert_eq!(guard.check_and_record("k2", 151, 451), Ok(false));
        assert_eq!(guard.len(), 2);
    }

    #[test]
    fn capacity_zero_refuses_everything() {
        let guard = InMemoryReplayGuard::with_capacity(0);
        assert_eq!(guard.check_and_record("k", 1, 2), Err(ReplayStoreError::Full { capacity: 0 }));
    }
}
