use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use meshgate_filter_common::store::testing::MemoryStore;

use super::*;
use crate::Limiter;
use crate::descriptor::{Request, Unreadable};
use crate::table::{SetError, SharedStore};

fn bucket(max: u64, interval: u64) -> Bucket {
    Bucket {
        max_tokens: max,
        tokens_per_fill: max,
        fill_interval_ms: interval,
    }
}

/// A request with an `x-key` header.
struct Key(String);

impl Request for Key {
    fn header(&self, name: &str) -> Result<Option<String>, Unreadable> {
        Ok((name == "x-key").then(|| self.0.clone()))
    }
    fn source_address(&self) -> Result<Option<String>, Unreadable> {
        Ok(None)
    }
    fn jwt_payload(&self, _: &str) -> Result<Option<String>, Unreadable> {
        Ok(None)
    }
}

/// A default bucket and a bucket per `x-key`, both of `max` tokens per `interval`.
fn limiter(max: u64, interval: &str) -> Limiter {
    let json = format!(
        r#"{{"token_bucket":{{"max_tokens":{max},"tokens_per_fill":{max},"fill_interval":"{interval}"}},
            "descriptors":[{{"name":"k","entries":[{{"request_header":{{"header_name":"x-key","descriptor_key":"k"}}}}],
                             "token_bucket":{{"max_tokens":{max},"tokens_per_fill":{max},"fill_interval":"{interval}"}}}}]}}"#
    );
    Limiter::from_json(json.as_bytes(), "t", [3; 16]).unwrap()
}

/// Only a bucket per `x-key` of `max` tokens an hour.
fn per_key(max: u64) -> Limiter {
    let json = format!(
        r#"{{"descriptors":[{{"name":"k","entries":[{{"request_header":{{"header_name":"x-key","descriptor_key":"k"}}}}],
                             "token_bucket":{{"max_tokens":{max},"fill_interval":"3600s"}}}}]}}"#
    );
    Limiter::from_json(json.as_bytes(), "t", [3; 16]).unwrap()
}

/// Counts the store's reads and writes.
#[derive(Default)]
struct Counting {
    inner: MemoryStore,
    calls: AtomicUsize,
}

impl SharedStore for Counting {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.set(key, value, cas)
    }
}

#[test]
fn lease_size_is_one_unless_busy_and_plentiful() {
    let plenty = u64::MAX;
    assert_eq!(lease_size(1, 1_000, 32), 1, "near empty");
    assert_eq!(lease_size(2 * LEASE_SHARE - 1, 1_000, 32), 1);
    assert_eq!(lease_size(2 * LEASE_SHARE, 1_000, 32), 2);
    assert_eq!(
        lease_size(plenty, 2 * LEASE_RAMP - 1, 32),
        1,
        "not busy yet"
    );
    assert_eq!(lease_size(plenty, 2 * LEASE_RAMP, 32), 2);
    assert_eq!(lease_size(plenty, plenty, 32), LEASE_MAX);
    assert_eq!(lease_size(plenty, plenty, 1000), LEASE_MAX);
    assert_eq!(lease_size(plenty, plenty, 4), 4);
    assert_eq!(lease_size(plenty, plenty, 1), 1, "no room for a lease");
    assert_eq!(lease_size(plenty, plenty, 0), 1);
}

#[test]
fn a_busy_bucket_costs_few_store_calls() {
    let l = limiter(1_000_000, "1s");
    let req = Key("a".into());
    let leased = Counting::default();
    let mut leases = l.leases();
    for _ in 0..1000 {
        let d = l.check_with(&req, &leased, &mut leases, 10_000);
        assert!(d.limited_by().is_none());
    }
    let plain = Counting::default();
    for _ in 0..1000 {
        l.check(&req, &plain, 10_000);
    }
    let (leased, plain) = (
        leased.calls.load(Ordering::Relaxed),
        plain.calls.load(Ordering::Relaxed),
    );
    // Without leases: two buckets, a read and a write each, per request.
    assert!(plain >= 4000, "{plain}");
    assert!(leased < 400, "{leased} store calls for 1000 requests");
}

#[test]
fn one_worker_sees_what_it_would_without_leases() {
    // Admissions and the remaining counts reported are those of a limiter without leases,
    // through a bucket's whole life: plenty, near empty, empty.
    let l = limiter(300, "60s");
    let (leased_store, plain_store) = (MemoryStore::default(), MemoryStore::default());
    let mut leases = l.leases();
    for i in 0..400 {
        let req = Key(format!("k{}", i % 3));
        let a = l.check_with(&req, &leased_store, &mut leases, 1_000 + i);
        let b = l.check(&req, &plain_store, 1_000 + i);
        assert_eq!(a, b, "request {i}");
    }
    assert!(!leases.is_empty());
}

#[test]
fn never_over_admits_across_workers_and_intervals() {
    // 4 workers with their own leases share one store; the bucket refills every second. No
    // interval admits more than the bucket, and the tokens leases leave unused stay within
    // the documented bound.
    let l = Arc::new(limiter(1000, "1s"));
    let store = Arc::new(MemoryStore::default());
    // One clock for all: every worker finishes an interval before any starts the next.
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let (l, store, barrier) = (Arc::clone(&l), Arc::clone(&store), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut leases = l.leases();
                let req = Key("hot".into());
                let mut per_interval = [0u64; 3];
                for i in 0..3_000u64 {
                    // Intervals start at 10 s, 11 s and 12 s; the clock moves within each.
                    let interval = i / 1_000;
                    if i % 1_000 == 0 {
                        barrier.wait();
                    }
                    let now = 10_000 + interval * 1_000 + (i % 1_000) / 2 + w;
                    let d = l.check_with(&req, store.as_ref(), &mut leases, now);
                    if d.limited_by().is_none() {
                        per_interval[interval as usize] += 1;
                    }
                }
                per_interval
            })
        })
        .collect();
    let mut totals = [0u64; 3];
    for w in workers {
        for (t, n) in totals.iter_mut().zip(w.join().unwrap()) {
            *t += n;
        }
    }
    for t in totals {
        assert!(t <= 1000, "over-admission: {totals:?}");
        // Two buckets apply (default and per key), each may leave a lease unused per worker.
        assert!(
            t >= 1000 - 2 * 4 * (LEASE_MAX - 1),
            "under-admission beyond the bound: {totals:?}"
        );
    }
}

#[test]
fn small_buckets_are_exact_across_workers() {
    // Below 2 × LEASE_SHARE tokens every take is one token: exactly the bucket. (One bucket per
    // request: with two, a request refused by one after a store conflict may have spent the
    // other's token, as without leases.)
    let l = Arc::new(per_key(2 * LEASE_SHARE - 1));
    let store = Arc::new(MemoryStore::default());
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (l, store) = (Arc::clone(&l), Arc::clone(&store));
            std::thread::spawn(move || {
                let mut leases = l.leases();
                (0..LEASE_SHARE)
                    .filter(|_| {
                        l.check_with(&Key("x".into()), store.as_ref(), &mut leases, 5_000)
                            .limited_by()
                            .is_none()
                    })
                    .count()
            })
        })
        .collect();
    let admitted: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(admitted as u64, 2 * LEASE_SHARE - 1);
}

#[test]
fn a_lease_dies_at_the_fill_boundary() {
    let b = bucket(10_000, 1_000);
    let mut leases = Leases::new(10);
    assert_eq!(
        leases.take("k", &b, 1_500),
        Err(LEASE_MAX),
        "room for a lease"
    );
    let taken = Taken {
        allowed: true,
        remaining: 9_000,
        next_fill_ms: 500,
    };
    let reported = leases.record("k", &b, 1_500, 8, taken);
    assert_eq!(
        reported.remaining, 9_007,
        "leased tokens count as remaining"
    );
    for i in 0..7 {
        let t = leases.take("k", &b, 1_600 + i).unwrap();
        assert_eq!((t.remaining, t.next_fill_ms), (9_006 - i, 400 - i));
    }
    assert!(leases.take("k", &b, 1_700).is_err(), "spent");
    assert!(leases.is_empty(), "a spent lease is not kept");
    leases.record(
        "k",
        &b,
        1_700,
        3,
        Taken {
            next_fill_ms: 300,
            ..taken
        },
    );
    assert!(leases.take("k", &b, 1_999).is_ok());
    assert!(leases.take("k", &b, 2_000).is_err(), "void at the boundary");
    // Other parameters (a new configuration) never use an old lease.
    leases.record(
        "k",
        &b,
        2_000,
        4,
        Taken {
            next_fill_ms: 1_000,
            ..taken
        },
    );
    assert!(leases.take("k", &bucket(10_000, 2_000), 2_001).is_err());
}

#[test]
fn bounded_and_never_drops_a_lease_with_tokens() {
    let b = bucket(10_000, 60_000);
    let taken = Taken {
        allowed: true,
        remaining: 9_000,
        next_fill_ms: 60_000,
    };
    let mut leases = Leases::new(2);
    leases.record("a", &b, 0, 5, taken);
    leases.record("b", &b, 0, 5, taken);
    // Full of live leases: a new key may take one token only, and nothing is kept for it.
    assert_eq!(leases.take("c", &b, 0), Err(1));
    leases.record("c", &b, 0, 1, taken);
    assert_eq!(leases.len(), 2);
    assert!(leases.take("a", &b, 1).is_ok() && leases.take("b", &b, 1).is_ok());
    // Spent or void leases make room.
    let mut leases = Leases::new(2);
    leases.record("a", &b, 0, 2, taken);
    leases.record(
        "b",
        &b,
        0,
        2,
        Taken {
            next_fill_ms: 10,
            ..taken
        },
    );
    assert!(leases.take("a", &b, 1).is_ok(), "a spent");
    assert_eq!(leases.take("c", &b, 20), Err(LEASE_MAX), "b void");
    // A worker without leases never asks for more than one token.
    assert_eq!(Leases::new(0).take("a", &b, 0), Err(1));
    // Key bytes are bounded too.
    let mut leases = Leases::new(usize::MAX);
    let long = "x".repeat(MAX_LEASE_KEY_BYTES / 2 + 1);
    leases.record(&long, &b, 0, 3, taken);
    assert_eq!(leases.take(&format!("{long}y"), &b, 0), Err(1));
}

#[test]
fn many_keys_seen_rarely_take_one_token_and_keep_nothing() {
    // The "10k distinct keys" pattern: each key comes back twice per interval.
    let l = limiter(4_000_000_000, "1s");
    let mut leases = l.leases();
    let store = MemoryStore::default();
    for i in 0..20_000u64 {
        let d = l.check_with(
            &Key(format!("k{}", i % 10_000)),
            &store,
            &mut leases,
            10_000 + i / 20,
        );
        assert!(d.limited_by().is_none());
    }
    // Only the default bucket (busy) holds a lease.
    assert_eq!(leases.len(), 1);
}

#[test]
fn many_keys_cost_a_few_store_calls_each_once_known() {
    // `make bench`'s "10k distinct keys" row: each key comes back about twice an interval, too
    // rarely for a lease, so every request reads the key's probes up to its record and writes
    // it back. BENCHMARKS.md explains that row's cost with this count.
    let json = r#"{"max_keys":20000,"descriptors":[{"name":"per_key","entries":[{"request_header":{"header_name":"x-key","descriptor_key":"k"}}],
        "token_bucket":{"max_tokens":4000000000,"tokens_per_fill":4000000000,"fill_interval":"1s"}}]}"#;
    let l = Limiter::from_json(json.as_bytes(), "t", [3; 16]).unwrap();
    let store = Counting::default();
    let mut leases = l.leases();
    let mut per_request = Vec::new();
    for interval in 0..3u64 {
        let before = store.calls.load(Ordering::Relaxed);
        for i in 0..20_000u64 {
            let req = Key(format!("key-{}", i % 10_000));
            let d = l.check_with(&req, &store, &mut leases, 10_000 + interval * 1000 + i / 20);
            assert!(d.limited_by().is_none());
        }
        per_request.push((store.calls.load(Ordering::Relaxed) - before) as f64 / 20_000.0);
    }
    eprintln!("store calls per request, by interval: {per_request:?}");
    // The first interval claims a slot per key (every probe read, then the claim and the
    // merge's reads). Then a key's record is found in one read or two (linear probing with
    // the table a quarter full), and the write uses that read's CAS: no read again.
    assert!(per_request[0] > 10.0, "{per_request:?}");
    assert!(
        per_request[1] < 2.5 && per_request[2] < 2.5,
        "{per_request:?}"
    );
}
