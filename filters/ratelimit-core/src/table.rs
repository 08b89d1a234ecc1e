//! Buckets in the host's shared store: a fixed table of slots, compare-and-swap updates.
//!
//! Every Envoy worker runs its own VM, so a bucket must live in proxy-wasm shared data and be
//! updated with compare-and-swap: read (value, cas), compute, write back only if nobody wrote
//! in between, else retry. That makes a bucket of N admit exactly N across all workers.
//!
//! Shared data cannot be deleted, so keys are not stored under their own names (a per-client key
//! space would grow without end): a key hashes into a fixed table of slots and probes [`PROBES`]
//! of them. The limiter sizes the table at twice `max_keys`, so `max_keys` live keys fit with
//! the table half full (a key then finds no slot with probability about 2^-16). A slot holds one key's bucket. **Eviction rule**: a slot may be taken over
//! only when its bucket has refilled to full — a full bucket owes nothing, so handing its key a
//! fresh full bucket later gives nobody extra tokens. When every probed slot holds a bucket that
//! is not full, the key gets the configured overflow behaviour instead of a fresh bucket, so
//! flooding the table with new keys cannot reset anybody's limit.

use crate::Millis;
use crate::bucket::{Bucket, State, Taken};

/// Slots probed per key.
pub const PROBES: u64 = 16;
/// Compare-and-swap attempts per slot before giving up.
pub const CAS_ATTEMPTS: u32 = 64;
/// The CAS a write of a new slot claims; the host compares it with the CAS of an existing entry,
/// so the write succeeds only if nobody created the slot first (CAS values count up from 1 and
/// never reach this one in practice).
pub const CREATE_CAS: u32 = u32::MAX;

/// Why a write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// Another writer got there first.
    CasMismatch,
    /// The store refused for another reason.
    Failed,
}

/// The host's shared key-value store (proxy-wasm shared data), with Envoy's semantics: `cas`
/// `None` writes unconditionally; `Some(c)` writes only if the entry's CAS is `c` — or if there
/// is no entry at all.
pub trait SharedStore {
    /// The value and its CAS, if the key exists.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes `value`.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
}

/// What taking from a key's bucket came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The key's bucket answered.
    Taken(Taken),
    /// Every probed slot holds another key's bucket that is not full.
    Overflow,
    /// The key found no slot and took from the shared overflow bucket instead.
    OverflowTaken(Taken),
    /// The store kept refusing.
    StoreError,
}

impl Take {
    /// Marks a take from the overflow bucket as such.
    pub fn into_overflow(self) -> Take {
        match self {
            Take::Taken(t) => Take::OverflowTaken(t),
            other => other,
        }
    }
}

/// A table of slots under one prefix in the shared store.
#[derive(Debug, Clone)]
pub struct Table {
    prefix: String,
    slots: u64,
}

/// A slot's record: the bucket state, the parameters it was made with, and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    state: State,
    bucket: Bucket,
    key: String,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        format!(
            "{} {} {} {} {} {}",
            self.state.tokens,
            self.state.last_fill_ms,
            self.bucket.max_tokens,
            self.bucket.tokens_per_fill,
            self.bucket.fill_interval_ms,
            self.key
        )
        .into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(6, ' ');
        let mut number = || parts.next()?.parse::<u64>().ok();
        let (tokens, last_fill_ms, max_tokens, tokens_per_fill, fill_interval_ms) =
            (number()?, number()?, number()?, number()?, number()?);
        if fill_interval_ms == 0 {
            return None;
        }
        Some(Record {
            state: State {
                tokens,
                last_fill_ms,
            },
            bucket: Bucket {
                max_tokens,
                tokens_per_fill,
                fill_interval_ms,
            },
            key: parts.next()?.to_string(),
        })
    }
}

/// FNV-1a: a hash every worker computes the same way (std's hasher is seeded per process).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Table {
    /// A table of `slots` slots whose shared-data keys start with `prefix`.
    pub fn new(prefix: impl Into<String>, slots: u32) -> Table {
        Table {
            prefix: prefix.into(),
            slots: u64::from(slots.max(1)),
        }
    }

    fn slot_key(&self, index: u64) -> String {
        format!("{}{}", self.prefix, index % self.slots)
    }

    /// Takes a token from `key`'s bucket (created full on first use).
    pub fn take(&self, store: &dyn SharedStore, key: &str, bucket: &Bucket, now: Millis) -> Take {
        let home = fnv1a(key);
        for probe in 0..PROBES.min(self.slots) {
            let slot = self.slot_key(home.wrapping_add(probe));
            match self.take_in_slot(store, &slot, key, bucket, now) {
                SlotResult::Taken(t) => return Take::Taken(t),
                SlotResult::Occupied => continue,
                SlotResult::Failed => return Take::StoreError,
            }
        }
        Take::Overflow
    }

    /// Takes a token from `key`'s bucket in the fixed slot `slot` (outside the table: for
    /// buckets with a key of their own, such as the default and overflow buckets).
    pub fn take_in(
        &self,
        store: &dyn SharedStore,
        slot: &str,
        key: &str,
        bucket: &Bucket,
        now: Millis,
    ) -> Take {
        match self.take_in_slot(store, slot, key, bucket, now) {
            SlotResult::Taken(t) => Take::Taken(t),
            // A fixed slot is only ever this key's.
            SlotResult::Occupied => Take::Overflow,
            SlotResult::Failed => Take::StoreError,
        }
    }

    fn take_in_slot(
        &self,
        store: &dyn SharedStore,
        slot: &str,
        key: &str,
        bucket: &Bucket,
        now: Millis,
    ) -> SlotResult {
        for _ in 0..CAS_ATTEMPTS {
            let (current, cas) = match store.get(slot) {
                None => (None, CREATE_CAS),
                Some((bytes, cas)) => (Record::decode(&bytes), cas),
            };
            let state = match current {
                // Our key: its bucket, refilled.
                Some(r) if r.key == key => {
                    if r.bucket == *bucket {
                        r.state
                    } else {
                        // The configuration changed: keep what was used, within the new capacity.
                        State {
                            tokens: r.state.tokens.min(bucket.max_tokens),
                            last_fill_ms: r.state.last_fill_ms,
                        }
                    }
                }
                // Another key whose bucket is not full: this slot is taken.
                Some(r) if !r.bucket.is_full(r.state, now) => return SlotResult::Occupied,
                // Free, full (evictable) or unreadable: a fresh bucket for our key.
                _ => bucket.fresh(now),
            };
            let (next, taken) = bucket.take(state, now);
            let record = Record {
                state: next,
                bucket: *bucket,
                key: key.to_string(),
            };
            match store.set(slot, &record.encode(), Some(cas)) {
                Ok(()) => return SlotResult::Taken(taken),
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Failed) => return SlotResult::Failed,
            }
        }
        SlotResult::Failed
    }
}

enum SlotResult {
    Taken(Taken),
    Occupied,
    Failed,
}

/// Entries (value, CAS) and the last CAS handed out.
type Entries = (std::collections::HashMap<String, (Vec<u8>, u32)>, u32);

/// An in-process store with the host's semantics, for tests and tools.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: std::sync::Mutex<Entries>,
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (map, next) = &mut *guard;
        *next += 1;
        let new_cas = *next;
        match map.get_mut(key) {
            Some((_, current)) if cas.is_some_and(|c| c != 0 && c != *current) => {
                Err(SetError::CasMismatch)
            }
            Some(entry) => {
                *entry = (value.to_vec(), new_cas);
                Ok(())
            }
            None => {
                map.insert(key.to_string(), (value.to_vec(), new_cas));
                Ok(())
            }
        }
    }
}

impl MemoryStore {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn bucket(max: u64, interval: u64) -> Bucket {
        Bucket {
            max_tokens: max,
            tokens_per_fill: max,
            fill_interval_ms: interval,
        }
    }

    fn allowed(t: Take) -> bool {
        matches!(t, Take::Taken(Taken { allowed: true, .. }))
    }

    #[test]
    fn exact_under_concurrent_workers() {
        let store = Arc::new(MemoryStore::default());
        let table = Table::new("t|", 100);
        let b = bucket(1000, 60_000);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (store, table) = (Arc::clone(&store), table.clone());
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|_| allowed(table.take(store.as_ref(), "k", &b, 1_000)))
                        .count()
                })
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 1000, "4000 attempts on a bucket of 1000");
    }

    #[test]
    fn keys_are_isolated_and_bounded() {
        let store = MemoryStore::default();
        let table = Table::new("t|", 8);
        let b = bucket(1, 60_000);
        assert!(allowed(table.take(&store, "alice", &b, 0)));
        assert!(!allowed(table.take(&store, "alice", &b, 1)));
        assert!(allowed(table.take(&store, "bob", &b, 1)));
        for i in 0..1000 {
            let _ = table.take(&store, &format!("k{i}"), &b, 2);
        }
        assert!(store.len() <= 8, "the table never grows past its slots");
    }

    #[test]
    fn no_fresh_bucket_by_eviction() {
        // The bypass of a small LRU: flood with new keys, then come back for a fresh bucket.
        let store = MemoryStore::default();
        let table = Table::new("t|", 4);
        let b = bucket(1, 60_000);
        assert!(allowed(table.take(&store, "victim", &b, 0)));
        for i in 0..100 {
            let result = table.take(&store, &format!("attacker{i}"), &b, 10);
            assert!(matches!(result, Take::Taken(_) | Take::Overflow));
        }
        assert!(
            !allowed(table.take(&store, "victim", &b, 20)),
            "still empty"
        );
        // Once its fill interval has passed, a bucket is full again and its slot may be reused.
        assert!(allowed(table.take(&store, "newcomer", &b, 60_000)));
    }

    #[test]
    fn overflow_when_all_probed_slots_hold_live_buckets() {
        let store = MemoryStore::default();
        let table = Table::new("t|", 2);
        let b = bucket(5, 60_000);
        assert!(allowed(table.take(&store, "a", &b, 0)));
        assert!(
            allowed(table.take(&store, "b", &b, 0))
                || table.take(&store, "b", &b, 0) == Take::Overflow
        );
        let results: Vec<Take> = (0..10)
            .map(|i| table.take(&store, &format!("x{i}"), &b, 0))
            .collect();
        assert!(results.contains(&Take::Overflow));
    }

    #[test]
    fn records_round_trip_and_garbage_is_replaced() {
        let r = Record {
            state: State {
                tokens: 3,
                last_fill_ms: 42,
            },
            bucket: bucket(5, 1000),
            key: "per_user|user=a b".into(),
        };
        assert_eq!(Record::decode(&r.encode()), Some(r));
        let store = MemoryStore::default();
        store.set("t|0", b"garbage", None).unwrap();
        let table = Table::new("t|", 1);
        assert!(allowed(table.take(&store, "k", &bucket(1, 1000), 0)));
    }
}
