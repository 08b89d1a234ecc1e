//! A bounded single-flight cache: results by key that expire, where concurrent askers of a
//! missing key share one computation, and a computation every asker gave up on leaves nothing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// Results by key that expire, where concurrent askers of a missing key share one
/// computation. Bounded: at most `capacity` entries, and a computation every asker gave up on
/// (a timeout, a review past its deadline) leaves no entry behind.
pub(crate) struct Flights<K, V> {
    slots: Mutex<Slots<K, V>>,
    capacity: usize,
}

struct Slots<K, V> {
    map: HashMap<K, Flight<V>>,
    /// Inserts left before the next sweep; sweeping at most once per `capacity / 2` inserts
    /// keeps its cost amortised constant per insert.
    until_sweep: usize,
}

/// A value once computed, with when.
type Flight<V> = Arc<OnceCell<(V, Instant)>>;

/// Entries kept per cache.
const MAX_ENTRIES: usize = 10_000;

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Flights<K, V> {
    pub(crate) fn new() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }

    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(2);
        Self {
            slots: Mutex::new(Slots {
                map: HashMap::new(),
                until_sweep: capacity,
            }),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots<K, V>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub(crate) async fn get<F: Future<Output = V>>(
        &self,
        key: K,
        ttl: impl Fn(&V) -> Duration,
        compute: impl FnOnce() -> F,
    ) -> V {
        let fresh = |slot: &Flight<V>| match slot.get() {
            Some((value, at)) => at.elapsed() < ttl(value),
            None => true, // in flight: join it
        };
        let slot = {
            let mut slots = self.lock();
            match slots.map.get(&key).filter(|s| fresh(s)) {
                Some(slot) => slot.clone(),
                None => {
                    if slots.map.len() >= self.capacity || slots.until_sweep == 0 {
                        self.sweep(&mut slots, &fresh);
                    }
                    slots.until_sweep = slots.until_sweep.saturating_sub(1);
                    let slot = Arc::new(OnceCell::new());
                    slots.map.insert(key.clone(), slot.clone());
                    slot
                }
            }
        };
        // Every clone of a slot is made and dropped under the lock (here and in the guard), so
        // the guard can tell whether it held the last one.
        let guard = Asker {
            flights: self,
            key,
            slot: Some(slot),
        };
        let Some(slot) = guard.slot.as_ref() else {
            return compute().await; // unreachable: the guard was just given the slot
        };
        let (value, _) = slot
            .get_or_init(|| async { (compute().await, Instant::now()) })
            .await;
        value.clone()
    }

    /// Drops expired entries, then, if at least half the capacity is still used, computed ones
    /// (oldest first) until half is free. Entries being computed stay: their askers hold them,
    /// and the number of those is bounded by the checks running at once.
    fn sweep(&self, slots: &mut Slots<K, V>, fresh: &impl Fn(&Flight<V>) -> bool) {
        slots.map.retain(|_, s| fresh(s));
        let keep = self.capacity / 2;
        if slots.map.len() > keep {
            let mut done: Vec<(Instant, K)> = slots
                .map
                .iter()
                .filter_map(|(k, s)| s.get().map(|(_, at)| (*at, k.clone())))
                .collect();
            done.sort_unstable_by_key(|(at, _)| *at);
            let excess = slots.map.len() - keep;
            for (_, key) in done.into_iter().take(excess) {
                slots.map.remove(&key);
            }
        }
        slots.until_sweep = self.capacity / 2;
    }
}

/// One asker of a [`Flights`] slot. When the last asker goes away before the value was
/// computed (its future was dropped), the slot is removed, so that a cancelled computation
/// neither stays in the map nor is joined later by askers that would wait for nothing.
struct Asker<'a, K: std::hash::Hash + Eq + Clone, V: Clone> {
    flights: &'a Flights<K, V>,
    key: K,
    slot: Option<Flight<V>>,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Drop for Asker<'_, K, V> {
    fn drop(&mut self) {
        let mut slots = self.flights.lock();
        drop(self.slot.take());
        if let Some(slot) = slots.map.get(&self.key)
            && slot.get().is_none()
            && Arc::strong_count(slot) == 1
        {
            slots.map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_cancelled_computation_leaves_no_entry() {
        let flights: Flights<u32, u32> = Flights::new();
        for key in 0..100 {
            let pending = flights.get(key, |_| LONG, std::future::pending::<u32>);
            let timed_out = tokio::time::timeout(Duration::from_millis(1), pending).await;
            assert!(timed_out.is_err());
        }
        assert_eq!(flights.len(), 0);
        // A later asker computes afresh instead of waiting on the abandoned one.
        assert_eq!(flights.get(7, |_| LONG, || async { 70 }).await, 70);
        assert_eq!(flights.len(), 1);
    }

    #[tokio::test]
    async fn a_computation_outlives_a_cancelled_asker_while_another_waits() {
        let flights: Flights<u32, u32> = Flights::new();
        let runs = AtomicUsize::new(0);
        let compute = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            5
        };
        let first =
            tokio::time::timeout(Duration::from_millis(10), flights.get(1, |_| LONG, compute));
        let second = flights.get(1, |_| LONG, compute);
        let (first, second) = tokio::join!(first, second);
        assert!(first.is_err());
        assert_eq!(second, 5);
        assert_eq!(flights.len(), 1);
    }

    #[tokio::test]
    async fn concurrent_askers_share_one_computation() {
        let flights: Flights<u32, u32> = Flights::new();
        let runs = AtomicUsize::new(0);
        let ask = || {
            flights.get(
                1,
                |_| LONG,
                || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    9
                },
            )
        };
        let values = futures_util::future::join_all((0..8).map(|_| ask())).await;
        assert_eq!(values, vec![9; 8]);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn entries_stay_within_capacity() {
        let flights: Flights<u32, u32> = Flights::with_capacity(100);
        for key in 0..10_000 {
            flights.get(key, |_| LONG, || async move { key }).await;
            assert!(flights.len() <= 100, "{} entries", flights.len());
        }
        // The newest entries are the ones kept.
        let runs = AtomicUsize::new(0);
        let value = flights
            .get(
                9_999,
                |_| LONG,
                || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    0
                },
            )
            .await;
        assert_eq!((value, runs.load(Ordering::SeqCst)), (9_999, 0));
    }

    #[tokio::test]
    async fn expired_entries_are_computed_again() {
        let flights: Flights<u32, u32> = Flights::new();
        assert_eq!(flights.get(1, |_| Duration::ZERO, || async { 1 }).await, 1);
        assert_eq!(flights.get(1, |_| Duration::ZERO, || async { 2 }).await, 2);
        assert_eq!(flights.get(1, |_| LONG, || async { 3 }).await, 2);
    }
}
