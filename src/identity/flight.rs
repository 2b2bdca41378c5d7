//! A runtime-free single-flight: concurrent callers asking for the same key share one run of
//! one future.
//!
//! The JWKS cache uses moka's `try_get_with` for this on native targets; moka panics inside a
//! Workers isolate (it reads `Instant::now()` on its first insert), so the `workers` build uses
//! this instead. It needs no executor, no timer and no thread: a leader runs the future, the
//! others wait on wakers. If the leader is dropped before finishing (its request was
//! cancelled), the flight is abandoned and one of the waiters runs the future instead, so
//! nobody waits forever.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

enum State<T> {
    Running(Vec<Waker>),
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
        let previous = std::mem::replace(&mut *self.lock(), next);
        if let State::Running(wakers) = previous {
            wakers.into_iter().for_each(Waker::wake);
        }
    }
}

/// Flights by key. A key's flight is removed when it ends, so a later call runs anew.
pub(crate) struct Flights<T> {
    flights: Mutex<HashMap<u64, Arc<Flight<T>>>>,
}

impl<T> Flights<T> {
    fn remove(&self, key: u64, flight: &Arc<Flight<T>>) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights.get(&key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            flights.remove(&key);
        }
    }
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Self { flights: Mutex::new(HashMap::new()) }
    }
}

enum Role<T> {
    Leader(Arc<Flight<T>>),
    Follower(Arc<Flight<T>>),
}

/// Ends the leader's flight as abandoned unless it completed (cancellation safety).
struct LeaderGuard<'a, T> {
    flights: &'a Flights<T>,
    key: u64,
    flight: Arc<Flight<T>>,
    completed: bool,
}

impl<T> Drop for LeaderGuard<'_, T> {
    fn drop(&mut self) {
        self.flights.remove(self.key, &self.flight);
        if !self.completed {
            self.flight.finish(State::Abandoned);
        }
    }
}

impl<T: Clone> Flights<T> {
    /// Runs `make()` for `key`, or waits for the run already in flight and shares its result.
    /// `make` is only called by the caller that ends up running the future.
    pub(crate) async fn run<F, Fut>(&self, key: u64, make: F) -> T
    where
        F: Fn() -> Fut,
        Fut: Future<Output = T>,
    {
        loop {
            match self.join(key) {
                Role::Leader(flight) => {
                    let mut guard = LeaderGuard { flights: self, key, flight, completed: false };
                    let value = make().await;
                    guard.flight.finish(State::Done(value.clone()));
                    guard.completed = true;
                    return value;
                }
                Role::Follower(flight) => {
                    if let Some(value) = wait(&flight).await {
                        return value;
                    }
                    // The leader was dropped: try again (one waiter becomes the new leader).
                }
            }
        }
    }

    fn join(&self, key: u64) -> Role<T> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = flights.get(&key) {
            return Role::Follower(flight.clone());
        }
        let flight = Arc::new(Flight { state: Mutex::new(State::Running(Vec::new())) });
        flights.insert(key, flight.clone());
        Role::Leader(flight)
    }

    /// Flights currently running (for tests).
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.flights.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The leader's result, or `None` if it abandoned the flight.
async fn wait<T: Clone>(flight: &Flight<T>) -> Option<T> {
    std::future::poll_fn(|cx| {
        let mut state = flight.lock();
        match &mut *state {
            State::Done(value) => Poll::Ready(Some(value.clone())),
            State::Abandoned => Poll::Ready(None),
            State::Running(wakers) => {
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_thousand_concurrent_callers_share_one_run() {
        let flights = Arc::new(Flights::<Result<u32, ()>>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..1000 {
            let (flights, runs) = (flights.clone(), runs.clone());
            tasks.spawn(async move {
                flights
                    .run(7, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(42)
                    })
                    .await
            });
        }
        while let Some(result) = tasks.join_next().await {
            assert_eq!(result.unwrap(), Ok(42));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0, "a finished flight is removed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_are_shared_and_the_next_call_runs_again() {
        let flights = Arc::new(Flights::<Result<u32, ()>>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let call = |flights: Arc<Flights<Result<u32, ()>>>, runs: Arc<AtomicUsize>| async move {
            flights
                .run(1, || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err(())
                })
                .await
        };
        let (a, b) = tokio::join!(call(flights.clone(), runs.clone()), call(flights.clone(), runs.clone()));
        assert_eq!((a, b), (Err(()), Err(())));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(call(flights.clone(), runs.clone()).await, Err(()));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_leader_hands_the_flight_to_a_waiter() {
        let flights = Arc::new(Flights::<u32>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let slow = |flights: Arc<Flights<u32>>, runs: Arc<AtomicUsize>| async move {
            flights
                .run(3, || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    5
                })
                .await
        };
        let leader = tokio::spawn(slow(flights.clone(), runs.clone()));
        tokio::task::yield_now().await;
        let follower = tokio::spawn(slow(flights.clone(), runs.clone()));
        tokio::task::yield_now().await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        assert_eq!(follower.await.unwrap(), 5, "the waiter took over instead of hanging");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(flights.in_flight(), 0);
    }
}
