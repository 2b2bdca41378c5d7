//! A polling single-flight: concurrent callers asking for the same key share one run of one
//! future, and waiters look for the result after sleeps of their own.
//!
//! The native runtime uses moka for this; moka panics inside a Workers isolate (it reads
//! `Instant::now()` on its first insert), so the Workers runtime uses this instead, with the
//! Workers timer as its sleep. It is built for native tests too. A leader runs the future; the
//! others wait for its result.
//!
//! Waiters do **not** register wakers with the leader: in Workers, each request has its own
//! I/O context, and a promise resolved from another request's context is cancelled by the
//! runtime ("A promise was resolved or rejected from a different request context"), which
//! would leave every waiter hanging (seen in workerd). So waiters poll the shared state after
//! short sleeps of their own (a timer in their own context), up to a bound. If the leader is
//! dropped before finishing (its request was cancelled), the flight is abandoned and one of the
//! waiters runs the future instead; if the leader never finishes nor drops (its context was
//! torn down), waiters give up after the bound instead of waiting forever.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::BoxFuture;
use crate::identity::ports::SingleFlight;

enum State<T> {
    Running,
    Done(T),
    Abandoned,
}

struct Flight<T> {
    state: Mutex<State<T>>,
}

impl<T> Flight<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finish(&self, next: State<T>) {
        *self.lock() = next;
    }
}

/// Flights by key. A key's flight is removed when it ends, so a later call runs anew.
pub(crate) struct Flights<K, T> {
    flights: Mutex<HashMap<K, Arc<Flight<T>>>>,
}

impl<K: Hash + Eq + Clone, T> Flights<K, T> {
    fn remove(&self, key: &K, flight: &Arc<Flight<T>>) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            flights.remove(key);
        }
    }
}

impl<K, T> Default for Flights<K, T> {
    fn default() -> Self {
        Self { flights: Mutex::new(HashMap::new()) }
    }
}

enum Role<T> {
    Leader(Arc<Flight<T>>),
    Follower(Arc<Flight<T>>),
}

/// Ends the leader's flight as abandoned unless it completed (cancellation safety).
struct LeaderGuard<'a, K: Hash + Eq + Clone, T> {
    flights: &'a Flights<K, T>,
    key: K,
    flight: Arc<Flight<T>>,
    completed: bool,
}

impl<K: Hash + Eq + Clone, T> Drop for LeaderGuard<'_, K, T> {
    fn drop(&mut self) {
        self.flights.remove(&self.key, &self.flight);
        if !self.completed {
            self.flight.finish(State::Abandoned);
        }
    }
}

/// How waiters wait: `sleep()` between looks at the leader's state, at most `max_sleeps` times.
pub(crate) struct Patience<S> {
    pub(crate) sleep: S,
    pub(crate) max_sleeps: u32,
}

impl<K: Hash + Eq + Clone, T: Clone> Flights<K, T> {
    /// Runs `make()` for `key`, or waits for the run already in flight and shares its result.
    /// `make` is only called by the caller that ends up running the future. `None` when the
    /// run in flight neither finished nor was abandoned within the waiter's patience.
    pub(crate) async fn run<F, Fut, S, SFut>(&self, key: K, make: F, patience: &Patience<S>) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = T>,
        S: Fn() -> SFut,
        SFut: Future<Output = ()>,
    {
        let mut make = make;
        let mut sleeps = 0u32;
        loop {
            match self.join(&key) {
                Role::Leader(flight) => {
                    let mut guard = LeaderGuard { flights: self, key: key.clone(), flight, completed: false };
                    let value = make().await;
                    guard.flight.finish(State::Done(value.clone()));
                    guard.completed = true;
                    return Some(value);
                }
                Role::Follower(flight) => loop {
                    match &*flight.lock() {
                        State::Done(value) => return Some(value.clone()),
                        // The leader was dropped: join again (one waiter becomes the leader).
                        State::Abandoned => break,
                        State::Running => {}
                    }
                    if sleeps >= patience.max_sleeps {
                        return None;
                    }
                    sleeps += 1;
                    (patience.sleep)().await;
                },
            }
        }
    }

    fn join(&self, key: &K) -> Role<T> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = flights.get(key) {
            return Role::Follower(flight.clone());
        }
        let flight = Arc::new(Flight { state: Mutex::new(State::Running) });
        flights.insert(key.clone(), flight.clone());
        Role::Leader(flight)
    }

    /// Flights currently running (for tests).
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.flights.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// [`Flights`] as the single-flight port: each caller's own `work` is run if it leads.
pub(crate) struct PollingFlight<K, V, S> {
    /// `None` only if a caller led twice, which cannot happen (a leader returns).
    flights: Flights<K, Option<V>>,
    patience: Patience<S>,
}

impl<K, V, S> PollingFlight<K, V, S> {
    pub(crate) fn new(patience: Patience<S>) -> Self {
        Self { flights: Flights { flights: Mutex::new(HashMap::new()) }, patience }
    }
}

impl<K, V, S> fmt::Debug for PollingFlight<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollingFlight").field("max_sleeps", &self.patience.max_sleeps).finish()
    }
}

impl<K, V, S, SFut> SingleFlight<K, V> for PollingFlight<K, V, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: Fn() -> SFut + Send + Sync + 'static,
    SFut: Future<Output = ()> + Send,
{
    fn run<'a>(&'a self, key: K, work: BoxFuture<'a, V>) -> BoxFuture<'a, Option<V>> {
        Box::pin(async move {
            // A caller leads at most once (a leader returns), so its one `work` is enough.
            let mut work = Some(work);
            let make = || {
                let work = work.take();
                async move {
                    match work {
                        Some(work) => Some(work.await),
                        None => None,
                    }
                }
            };
            self.flights.run(key, make, &self.patience).await.flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use std::sync::Arc;

    use crate::BoxFuture;
    use crate::identity::ports::SingleFlight;
    use crate::runtime::flight::{Flights, Patience, PollingFlight};

    fn patience() -> Patience<impl Fn() -> tokio::time::Sleep> {
        Patience { sleep: || tokio::time::sleep(Duration::from_millis(1)), max_sleeps: 1000 }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_thousand_concurrent_callers_share_one_run() {
        let flights = Arc::new(Flights::<u64, Result<u32, ()>>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..1000 {
            let (flights, runs) = (flights.clone(), runs.clone());
            tasks.spawn(async move {
                flights
                    .run(
                        7,
                        || async {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok(42)
                        },
                        &patience(),
                    )
                    .await
            });
        }
        while let Some(result) = tasks.join_next().await {
            assert_eq!(result.unwrap(), Some(Ok(42)));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0, "a finished flight is removed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_are_shared_and_the_next_call_runs_again() {
        let flights = Arc::new(Flights::<u64, Result<u32, ()>>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let call = |flights: Arc<Flights<u64, Result<u32, ()>>>, runs: Arc<AtomicUsize>| async move {
            flights
                .run(
                    1,
                    || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Err(())
                    },
                    &patience(),
                )
                .await
        };
        let (a, b) = tokio::join!(call(flights.clone(), runs.clone()), call(flights.clone(), runs.clone()));
        assert_eq!((a, b), (Some(Err(())), Some(Err(()))));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(call(flights.clone(), runs.clone()).await, Some(Err(())));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_leader_hands_the_flight_to_a_waiter() {
        let flights = Arc::new(Flights::<u64, u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let slow = |flights: Arc<Flights<u64, u32>>, runs: Arc<AtomicUsize>| async move {
            flights
                .run(
                    3,
                    || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        5
                    },
                    &patience(),
                )
                .await
        };
        let leader = tokio::spawn(slow(flights.clone(), runs.clone()));
        tokio::task::yield_now().await;
        let follower = tokio::spawn(slow(flights.clone(), runs.clone()));
        tokio::task::yield_now().await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        assert_eq!(follower.await.unwrap(), Some(5), "the waiter took over instead of hanging");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_leader_that_never_finishes_does_not_hold_waiters_forever() {
        let flights = Arc::new(Flights::<u64, u32>::default());
        let stuck = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run(9, std::future::pending::<u32>, &patience()).await })
        };
        tokio::task::yield_now().await;
        let impatient = Patience { sleep: || tokio::time::sleep(Duration::from_millis(1)), max_sleeps: 5 };
        let waited = flights.run(9, || async { 1 }, &impatient).await;
        assert_eq!(waited, None, "gave up after its patience instead of running a second fetch");
        stuck.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn as_the_port_each_caller_brings_its_work_and_only_the_leader_runs_it() {
        let flight: Arc<dyn SingleFlight<u64, u32>> = Arc::new(PollingFlight::new(patience()));
        let runs = Arc::new(AtomicUsize::new(0));
        let call = |n: u32| {
            let (flight, runs) = (flight.clone(), runs.clone());
            async move {
                let work: BoxFuture<'static, u32> = Box::pin(async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    n
                });
                flight.run(4, work).await
            }
        };
        let (a, b, c) = tokio::join!(call(1), call(2), call(3));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!((a, b, c), (Some(1), Some(1), Some(1)), "every caller got the leader's value");
    }
}
