//! The verified-token store of the Workers runtime: a bounded map per isolate, with concurrent
//! misses of one token sharing one verification through a single-flight (the polling one in
//! Workers, where moka cannot run).
//!
//! Bounded by total weight (the token cache's byte bound, whose weight floor makes it an entry
//! bound too): inserting past it evicts the oldest entries first. An isolate lives minutes to
//! hours and serves one colo's users, so first-in-first-out is as good as LRU here and needs no
//! bookkeeping on reads. Entries are not expired by time here: the verifier checks each
//! entry's validity on use and removes it, and eviction reclaims the rest. Built for native
//! tests too.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::BoxFuture;
use crate::error::TokenError;
use crate::identity::ports::{SingleFlight, VerifiedTokens};
use crate::identity::token_cache::{CacheValue, TokenDigest};

struct Inner<V> {
    /// Each value with the sequence number of its insertion.
    map: HashMap<TokenDigest, (V, u64)>,
    /// Insertion order, for eviction. May hold entries removed or replaced since: an entry
    /// counts only while its sequence number is the one in `map`.
    order: VecDeque<(TokenDigest, u64)>,
    weight: u64,
    next_seq: u64,
}

impl<V: CacheValue> Inner<V> {
    fn remove(&mut self, key: &TokenDigest) {
        if let Some((old, _)) = self.map.remove(key) {
            self.weight -= u64::from(old.weight());
        }
    }
}

/// A bounded map with single-flight misses.
pub(crate) struct BoundedTokens<V> {
    inner: Mutex<Inner<V>>,
    max_weight: u64,
    flights: Arc<dyn SingleFlight<TokenDigest, Result<V, TokenError>>>,
}

impl<V> BoundedTokens<V> {
    pub(crate) fn new(
        max_weight: u64,
        flights: Arc<dyn SingleFlight<TokenDigest, Result<V, TokenError>>>,
    ) -> Self {
        let inner = Inner { map: HashMap::new(), order: VecDeque::new(), weight: 0, next_seq: 0 };
        Self { inner: Mutex::new(inner), max_weight, flights }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<V: CacheValue> BoundedTokens<V> {
    fn insert(&self, key: TokenDigest, value: V) {
        let weight = u64::from(value.weight());
        if weight > self.max_weight {
            return;
        }
        let mut inner = self.lock();
        inner.remove(&key);
        while inner.weight + weight > self.max_weight {
            let Some((oldest, seq)) = inner.order.pop_front() else { break };
            if inner.map.get(&oldest).is_some_and(|(_, s)| *s == seq) {
                inner.remove(&oldest);
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.weight += weight;
        inner.map.insert(key, (value, seq));
        inner.order.push_back((key, seq));
        // Entries removed or replaced linger in `order`; keep it from growing past the map.
        if inner.order.len() > 2 * inner.map.len() + 16 {
            let Inner { map, order, .. } = &mut *inner;
            order.retain(|(k, seq)| map.get(k).is_some_and(|(_, s)| s == seq));
        }
    }
}

impl<V> fmt::Debug for BoundedTokens<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedTokens").field("max_weight", &self.max_weight).finish_non_exhaustive()
    }
}

impl<V> VerifiedTokens<V> for BoundedTokens<V>
where
    V: CacheValue + Clone + Send + Sync + 'static,
{
    fn get_or_verify<'a>(
        &'a self,
        key: TokenDigest,
        verify: BoxFuture<'a, Result<V, TokenError>>,
    ) -> BoxFuture<'a, Result<V, TokenError>> {
        Box::pin(async move {
            if let Some((value, _)) = self.lock().map.get(&key) {
                return Ok(value.clone());
            }
            let work: BoxFuture<'a, Result<V, TokenError>> = Box::pin(async move {
                let value = verify.await?;
                self.insert(key, value.clone());
                Ok(value)
            });
            // A leader that never finished within the waiter's bound: verify alone is not
            // possible any more (`verify` went to the flight), so the waiter is told the keys
            // are unavailable, as for a JWKS fetch that never finished.
            self.flights.run(key, work).await.unwrap_or(Err(TokenError::KeysUnavailable {
                retry_after: std::time::Duration::from_secs(1),
            }))
        })
    }

    fn remove<'a>(&'a self, key: &'a TokenDigest) -> BoxFuture<'a, ()> {
        self.lock().remove(key);
        Box::pin(std::future::ready(()))
    }

    fn len(&self) -> u64 {
        self.lock().map.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::runtime::bounded::*;
    use crate::runtime::flight::{Patience, PollingFlight};

    #[derive(Clone, Debug, PartialEq)]
    struct Value(u32, u32);

    impl CacheValue for Value {
        fn weight(&self) -> u32 {
            self.1
        }
        fn time_to_live(&self) -> Duration {
            Duration::from_secs(60)
        }
    }

    fn store(max_weight: u64) -> BoundedTokens<Value> {
        let patience = Patience { sleep: || tokio::time::sleep(Duration::from_millis(1)), max_sleeps: 100 };
        BoundedTokens::new(max_weight, Arc::new(PollingFlight::new(patience)))
    }

    fn digest(i: u32) -> TokenDigest {
        TokenDigest::of(&i.to_string())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn holds_its_bound_evicting_the_oldest_and_never_stores_refusals() {
        let s = store(1000);
        for i in 0..50 {
            let v = s.get_or_verify(digest(i), Box::pin(async move { Ok(Value(i, 100)) })).await.unwrap();
            assert_eq!(v, Value(i, 100));
            assert!(s.lock().weight <= 1000);
        }
        assert_eq!(s.len(), 10);
        // The newest are kept, the oldest went.
        let hit = s.get_or_verify(digest(49), Box::pin(async { Ok(Value(0, 0)) })).await.unwrap();
        assert_eq!(hit, Value(49, 100));
        let refetched = s.get_or_verify(digest(0), Box::pin(async { Ok(Value(7, 100)) })).await.unwrap();
        assert_eq!(refetched, Value(7, 100));
        // A refusal is returned and not kept.
        let refused = s.get_or_verify(digest(99), Box::pin(async { Err(TokenError::Signature) })).await;
        assert_eq!(refused, Err(TokenError::Signature));
        let then = s.get_or_verify(digest(99), Box::pin(async { Ok(Value(99, 100)) })).await;
        assert_eq!(then, Ok(Value(99, 100)));
        s.remove(&digest(99)).await;
        let after = s.get_or_verify(digest(99), Box::pin(async { Ok(Value(5, 100)) })).await;
        assert_eq!(after, Ok(Value(5, 100)));
        // Removal churn does not grow the order queue without bound.
        for _ in 0..1000 {
            s.remove(&digest(99)).await;
            s.get_or_verify(digest(99), Box::pin(async { Ok(Value(5, 100)) })).await.unwrap();
        }
        let (order, len) = {
            let inner = s.lock();
            (inner.order.len(), inner.map.len())
        };
        assert!(order <= 2 * len + 16, "{order} queued for {len} entries");
        // A lingering queue entry of a removed token never evicts the token's newer entry.
        let s = store(300);
        for i in 0..3 {
            s.get_or_verify(digest(i), Box::pin(async move { Ok(Value(i, 100)) })).await.unwrap();
        }
        s.remove(&digest(0)).await;
        s.get_or_verify(digest(0), Box::pin(async { Ok(Value(10, 100)) })).await.unwrap();
        s.get_or_verify(digest(3), Box::pin(async { Ok(Value(3, 100)) })).await.unwrap();
        // Full at 300: adding 3 evicted the oldest live entry (1), not the re-inserted 0.
        let kept = s.get_or_verify(digest(0), Box::pin(async { Ok(Value(0, 0)) })).await.unwrap();
        assert_eq!(kept, Value(10, 100));
        let evicted = s.get_or_verify(digest(1), Box::pin(async { Ok(Value(11, 100)) })).await.unwrap();
        assert_eq!(evicted, Value(11, 100));
    }
}
