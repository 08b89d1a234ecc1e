use std::sync::Arc;

use meshgate_filter_common::store::testing::MemoryStore;
use proptest::prelude::*;

use super::*;

const SALT: Salt = [7; 16];

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

fn table(slots: u32) -> Table {
    Table::new("t|", slots, SALT)
}

/// Takes from `key`'s bucket of descriptor fingerprint 1.
fn take(table: &Table, store: &MemoryStore, key: &str, b: &Bucket, now: Millis) -> Take {
    table.take(store, table.owner(1, key), b, now)
}

#[test]
fn exact_under_concurrent_workers() {
    let store = Arc::new(MemoryStore::default());
    let table = table(100);
    let b = bucket(1000, 60_000);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (store, table) = (Arc::clone(&store), table.clone());
            std::thread::spawn(move || {
                (0..500)
                    .filter(|_| allowed(take(&table, &store, "k", &b, 1_000)))
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
    let table = table(8);
    let b = bucket(1, 60_000);
    assert!(allowed(take(&table, &store, "alice", &b, 0)));
    assert!(!allowed(take(&table, &store, "alice", &b, 1)));
    assert!(allowed(take(&table, &store, "bob", &b, 1)));
    for i in 0..1000 {
        let _ = take(&table, &store, &format!("k{i}"), &b, 2);
    }
    assert!(store.len() <= 8, "the table never grows past its slots");
}

#[test]
fn a_slot_costs_the_same_whatever_the_key_length() {
    let store = MemoryStore::default();
    let table = table(64);
    let b = bucket(5, 60_000);
    for i in 0..20 {
        let key = format!("{i}{}", "x".repeat(50_000));
        assert!(allowed(take(&table, &store, &key, &b, 0)));
    }
    let bytes = store.value_bytes();
    assert_eq!(
        bytes,
        20 * RECORD_LEN,
        "20 keys of 50 KB stored in {bytes} bytes"
    );
}

#[test]
fn no_fresh_bucket_by_eviction() {
    // The bypass of a small LRU: flood with new keys, then come back for a fresh bucket.
    let store = MemoryStore::default();
    let table = table(4);
    let b = bucket(1, 60_000);
    assert!(allowed(take(&table, &store, "victim", &b, 0)));
    for i in 0..100 {
        let result = take(&table, &store, &format!("attacker{i}"), &b, 10);
        assert!(matches!(result, Take::Taken(_) | Take::Overflow));
    }
    assert!(
        !allowed(take(&table, &store, "victim", &b, 20)),
        "still empty"
    );
    // Once its fill interval has passed, a bucket is full again and its slot may be reused.
    assert!(allowed(take(&table, &store, "newcomer", &b, 60_000)));
}

#[test]
fn overflow_when_all_probed_slots_hold_live_buckets() {
    let store = MemoryStore::default();
    // Two slots, so every key probes both: "a" and "b" take one each.
    let table = table(2);
    let b = bucket(5, 60_000);
    assert_eq!(
        take(&table, &store, "a", &b, 0),
        Take::Taken(Taken {
            allowed: true,
            remaining: 4,
            next_fill_ms: 60_000
        })
    );
    // Two tokens each: more than a slot may have given and still be reclaimed.
    assert!(allowed(take(&table, &store, "a", &b, 0)));
    assert!(allowed(take(&table, &store, "b", &b, 0)));
    assert!(allowed(take(&table, &store, "b", &b, 0)));
    for i in 0..10 {
        assert_eq!(
            take(&table, &store, &format!("x{i}"), &b, 1),
            Take::Overflow,
            "x{i} found a slot held by a live bucket"
        );
    }
    // The live buckets kept their slots and their counts.
    assert_eq!(
        take(&table, &store, "a", &b, 2),
        Take::Taken(Taken {
            allowed: true,
            remaining: 2,
            next_fill_ms: 59_998
        })
    );
    assert_eq!(store.len(), 2);
    // Refilled, "a" and "b" owe nothing: a newcomer may take a slot.
    assert!(allowed(take(&table, &store, "x0", &b, 60_000)));
}

/// The slot a key of descriptor fingerprint 1 probes first, in a table of `slots`.
fn home_slot(table: &Table, slots: u64, key: &str) -> u64 {
    let digest = table.owner(1, key).digest;
    let mut home = [0u8; 8];
    home.copy_from_slice(&digest[8..]);
    u64::from_le_bytes(home) % slots
}

/// Writes, at slot `index`, a record of another key whose bucket (1 token a second) was
/// emptied at `emptied`.
fn other_key_emptied_at(store: &MemoryStore, index: u64, emptied: Millis) {
    let other = Record {
        owner: table(1).owner(1, "other"),
        bucket: Bucket {
            max_tokens: 1,
            tokens_per_fill: 1,
            fill_interval_ms: 1_000,
        },
        state: State {
            tokens: 0,
            last_fill_ms: emptied,
        },
    };
    store
        .set(&format!("t|{index}"), &other.encode(), None)
        .unwrap();
}

/// Records in `store` that hold `owner`'s bucket.
fn records_of(store: &MemoryStore, slots: u64, owner: Owner) -> Vec<Record> {
    (0..slots)
        .filter_map(|i| store.get(&format!("t|{i}")))
        .filter_map(|(bytes, _)| Record::decode(&bytes))
        .filter(|r| r.owner == owner)
        .collect()
}

#[test]
fn a_key_keeps_its_record_when_an_earlier_probed_slot_refills() {
    let store = MemoryStore::default();
    let t = table(2);
    let b = bucket(3, 60_000);
    // Another key's live bucket holds "k"'s first probe, so "k" lands on its second.
    other_key_emptied_at(&store, home_slot(&t, 2, "k"), 0);
    let first: Vec<bool> = (0..4)
        .map(|_| allowed(take(&t, &store, "k", &b, 10)))
        .collect();
    assert_eq!(first, [true, true, true, false]);
    // The other bucket refills (its slot may now be taken over), but "k" has a record.
    for now in [1_000, 1_500, 30_000] {
        assert!(
            !allowed(take(&t, &store, "k", &b, now)),
            "k was handed a fresh bucket at {now}"
        );
    }
    assert_eq!(records_of(&store, 2, t.owner(1, "k")).len(), 1);
}

/// A store that runs `hook` (another worker) just before the first write it is asked for.
struct Interleaved {
    store: Arc<MemoryStore>,
    hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl SharedStore for Interleaved {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.store.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        if let Some(hook) = self.hook.lock().unwrap().take() {
            hook();
        }
        self.store.set(key, value, cas)
    }
}

#[test]
fn two_workers_claiming_two_slots_for_one_new_key_leave_one_bucket() {
    let store = Arc::new(MemoryStore::default());
    let t = table(2);
    let b = bucket(3, 60_000);
    let home = home_slot(&t, 2, "k");
    // Worker A (clock at 1 000) sees "k"'s first probe held by a live bucket and claims the
    // second. Between its read and its write, worker B (clock at 60 000) sees that bucket full
    // and claims the first probe for "k".
    other_key_emptied_at(&store, home, 900);
    let worker_b = {
        let (store, t) = (Arc::clone(&store), t.clone());
        move || {
            let taken = t.take(&*store, t.owner(1, "k"), &b, 60_000);
            assert!(allowed(taken), "worker B: {taken:?}");
        }
    };
    let worker_a = Interleaved {
        store: Arc::clone(&store),
        hook: std::sync::Mutex::new(Some(Box::new(worker_b))),
    };
    assert!(allowed(t.take(&worker_a, t.owner(1, "k"), &b, 1_000)));
    let live: Vec<Record> = records_of(&store, 2, t.owner(1, "k"))
        .into_iter()
        .filter(|r| !r.bucket.is_full(r.state, 60_000))
        .collect();
    assert_eq!(live.len(), 1, "one key, two live buckets: {live:?}");
    // Both tokens are counted in that bucket: one more, then refused.
    let rest: Vec<bool> = (0..3)
        .map(|_| allowed(take(&t, &store, "k", &b, 60_001)))
        .collect();
    assert_eq!(
        rest,
        [true, false, false],
        "3 per interval, 2 already given"
    );
}

#[test]
fn a_new_key_claimed_twice_at_a_refill_never_admits_more_than_its_bucket() {
    // The bucket in "k"'s first probe refills at 1 000. Worker A reads it at 999 (live and
    // empty: not claimable) and claims the second probe; before A writes, worker B reads it at
    // 1 000, full, and claims the first. Each takes "k"'s one token in its own slot; the merge
    // finds the kept bucket cannot pay for the other, and refuses its own request.
    let store = Arc::new(MemoryStore::default());
    let t = table(2);
    let b = bucket(1, 3_600_000);
    other_key_emptied_at(&store, home_slot(&t, 2, "k"), 0);
    let admitted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let worker_b = {
        let (store, t, admitted) = (Arc::clone(&store), t.clone(), Arc::clone(&admitted));
        move || {
            if allowed(t.take(&*store, t.owner(1, "k"), &b, 1_000)) {
                admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    };
    let worker_a = Interleaved {
        store: Arc::clone(&store),
        hook: std::sync::Mutex::new(Some(Box::new(worker_b))),
    };
    if allowed(t.take(&worker_a, t.owner(1, "k"), &b, 999)) {
        admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    let later = (0..5)
        .filter(|i| allowed(take(&t, &store, "k", &b, 1_001 + i)))
        .count();
    let total = admitted.load(std::sync::atomic::Ordering::SeqCst) + later;
    assert_eq!(total, 1, "a bucket of 1 admitted {total} in one interval");
}

#[test]
fn a_worker_that_merges_reports_the_bucket_the_key_kept() {
    // Worker A (clock 1 000) sees "k"'s first probe live and claims the second; before it
    // writes, worker B (clock 60 000) claims the first and takes a token. A then writes, takes
    // a token, and merges its record into B's: the key has 1 of 3 left, and A says so (its own
    // claimed bucket, now released, had 2).
    let store = Arc::new(MemoryStore::default());
    let t = table(2);
    let b = bucket(3, 3_600_000);
    other_key_emptied_at(&store, home_slot(&t, 2, "k"), 900);
    let worker_b = {
        let (store, t) = (Arc::clone(&store), t.clone());
        move || assert!(allowed(t.take(&*store, t.owner(1, "k"), &b, 60_000)))
    };
    let worker_a = Interleaved {
        store: Arc::clone(&store),
        hook: std::sync::Mutex::new(Some(Box::new(worker_b))),
    };
    match t.take(&worker_a, t.owner(1, "k"), &b, 1_000) {
        Take::Taken(taken) => {
            assert!(taken.allowed);
            assert_eq!(taken.remaining, 1, "{taken:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn workers_that_disagree_on_a_slot_still_count_a_new_key_once() {
    // Half the threads run with a clock at which the bucket in "k"'s first probe is live (so
    // they claim the second), half with one at which it is full (so they claim the first).
    for round in 0..20 {
        let store = Arc::new(MemoryStore::default());
        let t = table(2);
        other_key_emptied_at(&store, home_slot(&t, 2, "k"), 900);
        let b = bucket(400, 3_600_000);
        let threads: Vec<_> = [1_000, 2_000, 1_000, 2_000]
            .into_iter()
            .map(|now| {
                let (store, t) = (Arc::clone(&store), t.clone());
                std::thread::spawn(move || {
                    (0..200)
                        .filter(|_| allowed(take(&t, &store, "k", &b, now)))
                        .count()
                })
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(
            admitted, 400,
            "round {round}: 800 attempts on a bucket of 400"
        );
        let live = records_of(&store, 2, t.owner(1, "k"))
            .into_iter()
            .filter(|r| !r.bucket.is_full(r.state, 2_000))
            .count();
        assert_eq!(live, 1, "round {round}");
    }
}

#[test]
fn a_burst_of_one_request_keys_does_not_pin_the_table() {
    let store = MemoryStore::default();
    let t = table(8);
    let b = bucket(3, 60_000);
    let victim: Vec<bool> = (0..2)
        .map(|_| allowed(take(&t, &store, "victim", &b, 0)))
        .collect();
    assert_eq!(victim, [true, true]);
    // 100 keys, one request each: every slot but the victim's holds a bucket that gave one.
    for i in 0..100 {
        let _ = take(&t, &store, &format!("junk-{i}"), &b, 1);
    }
    // New keys still get buckets of their own, without waiting for the junk to refill.
    for i in 0..20 {
        let result = take(&t, &store, &format!("new-{i}"), &b, 2);
        assert!(
            matches!(
                result,
                Take::Taken(Taken {
                    allowed: true,
                    remaining: 2,
                    ..
                })
            ),
            "new-{i}: {result:?}"
        );
    }
    // The victim's bucket, which gave two, was never reclaimed: one token left, then none.
    let victim: Vec<bool> = (0..2)
        .map(|_| allowed(take(&t, &store, "victim", &b, 3)))
        .collect();
    assert_eq!(victim, [true, false]);
    // An empty bucket is never reclaimed, however small.
    let store = MemoryStore::default();
    let one = bucket(1, 60_000);
    for i in 0..8 {
        assert!(allowed(take(&t, &store, &format!("full-{i}"), &one, 0)));
    }
    assert_eq!(take(&t, &store, "late", &one, 1), Take::Overflow);
}

#[test]
fn records_round_trip_and_garbage_is_replaced() {
    let r = Record {
        owner: table(1).owner(3, "per_user|user=a b"),
        state: State {
            tokens: 3,
            last_fill_ms: 42,
        },
        bucket: bucket(5, 1000),
    };
    assert_eq!(Record::decode(&r.encode()), Some(r));
    let store = MemoryStore::default();
    store.set("t|0", b"garbage", None).unwrap();
    let table = table(1);
    assert!(allowed(take(&table, &store, "k", &bucket(1, 1000), 0)));
}

#[test]
fn records_that_do_not_parse_or_do_not_belong_are_never_trusted() {
    let t = table(1);
    let b = bucket(2, 60_000);
    let mine = t.owner(1, "k");
    let valid = Record {
        owner: mine,
        bucket: b,
        state: State {
            tokens: 0,
            last_fill_ms: 1_000,
        },
    };
    // What could hold a slot and refuse "k" forever, or hand it more than its capacity.
    let mut other_version = valid.encode();
    other_version[4] = RECORD_VERSION + 1;
    let mut overfull = valid.clone();
    overfull.state.tokens = 1_000;
    let mut zero_interval = valid.clone();
    zero_interval.bucket.fill_interval_ms = 0;
    let mut endless_interval = valid.clone();
    endless_interval.bucket.fill_interval_ms = u64::MAX;
    endless_interval.state.last_fill_ms = u64::MAX;
    let cases: [(&str, Vec<u8>); 5] = [
        ("other version", other_version.to_vec()),
        ("truncated", valid.encode()[..RECORD_LEN - 1].to_vec()),
        ("over capacity", overfull.encode().to_vec()),
        ("zero fill interval", zero_interval.encode().to_vec()),
        ("fill interval of ages", endless_interval.encode().to_vec()),
    ];
    for (what, bytes) in cases {
        let store = MemoryStore::default();
        store.set("t|0", &bytes, None).unwrap();
        assert_eq!(
            t.take(&store, mine, &b, 2_000),
            Take::Taken(Taken {
                allowed: true,
                remaining: 1,
                next_fill_ms: 60_000
            }),
            "{what}: treated as an empty slot"
        );
    }
    // The valid record is ours and empty: refused.
    let store = MemoryStore::default();
    store.set("t|0", &valid.encode(), None).unwrap();
    assert!(!allowed(t.take(&store, mine, &b, 2_000)));
    // Same key under another descriptor fingerprint or another salt: not ours.
    assert_ne!(t.owner(2, "k"), mine);
    assert_ne!(Table::new("t|", 1, [8; 16]).owner(1, "k"), mine);
}

#[test]
fn a_clock_that_steps_back_neither_refills_nor_pins_a_bucket() {
    let t = table(1);
    let b = bucket(2, 60_000);
    let mine = t.owner(1, "k");
    let store = MemoryStore::default();
    // Emptied at 10 minutes.
    let start = 600_000;
    assert!(allowed(t.take(&store, mine, &b, start)));
    assert!(allowed(t.take(&store, mine, &b, start)));
    assert!(!allowed(t.take(&store, mine, &b, start)));
    // The clock steps back five minutes, more than an interval: still empty, not a fresh bucket.
    let back = start - 300_000;
    assert!(!allowed(t.take(&store, mine, &b, back)));
    assert!(!allowed(t.take(&store, mine, &b, back + 59_999)));
    // One interval after the step it refills, as any bucket would.
    assert!(allowed(t.take(&store, mine, &b, back + 60_000)));
    // A worker whose clock reading is stale (held up for more than an interval, less than a
    // minute) leaves the fill time where it is: no interval is refilled twice.
    let fast = bucket(2, 1_000);
    let store = MemoryStore::default();
    let t0 = 3_600_000;
    assert!(allowed(t.take(&store, mine, &fast, t0)));
    assert!(allowed(t.take(&store, mine, &fast, t0)));
    assert!(allowed(t.take(&store, mine, &fast, t0 + 5_000)));
    assert!(
        allowed(t.take(&store, mine, &fast, t0 + 2_000)),
        "a stale worker takes the token left"
    );
    assert!(
        !allowed(t.take(&store, mine, &fast, t0 + 5_000)),
        "the fills up to t0 + 5 s were given already"
    );
    assert!(allowed(t.take(&store, mine, &fast, t0 + 6_000)));
    // A last fill far in the future (a forged or corrupt record) does not pin the slot either.
    let pinned = Record {
        owner: mine,
        bucket: b,
        state: State {
            tokens: 0,
            last_fill_ms: u64::MAX,
        },
    };
    let store = MemoryStore::default();
    store.set("t|0", &pinned.encode(), None).unwrap();
    assert!(!allowed(t.take(&store, mine, &b, 2_000)));
    assert!(allowed(t.take(&store, mine, &b, 62_000)));
}

#[test]
fn one_salt_for_every_worker() {
    let store = MemoryStore::default();
    let first = load_or_create_salt(&store, || [1; 16]);
    assert_eq!(first, Some([1; 16]));
    assert_eq!(load_or_create_salt(&store, || [2; 16]), Some([1; 16]));
    // Something else under the salt's key is replaced, not trusted.
    let store = MemoryStore::default();
    store.set(SALT_KEY, b"short", None).unwrap();
    assert_eq!(load_or_create_salt(&store, || [3; 16]), Some([3; 16]));
}

fn any_record() -> impl Strategy<Value = Record> {
    (
        any::<u64>(),
        any::<[u8; 16]>(),
        1..=u64::MAX,
        1..=u64::MAX,
        MIN_FILL_INTERVAL_MS..=MAX_FILL_INTERVAL_MS,
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(fp, digest, max, per_fill, interval, tokens, last)| Record {
                owner: Owner {
                    fingerprint: fp,
                    digest,
                },
                bucket: Bucket {
                    max_tokens: max,
                    tokens_per_fill: per_fill,
                    fill_interval_ms: interval,
                },
                state: State {
                    tokens: tokens % (max.saturating_add(1)).max(1),
                    last_fill_ms: last,
                },
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Whatever the store holds, reading it never panics and yields only a record this crate
    /// could have written.
    #[test]
    fn any_bytes_decode_to_nothing_or_a_sane_record(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        if let Some(r) = Record::decode(&bytes) {
            prop_assert_eq!(bytes.len(), RECORD_LEN);
            prop_assert!(r.state.tokens <= r.bucket.max_tokens);
            prop_assert!((MIN_FILL_INTERVAL_MS..=MAX_FILL_INTERVAL_MS).contains(&r.bucket.fill_interval_ms));
            prop_assert!(r.bucket.tokens_per_fill >= 1);
        }
    }

    /// A valid record with bytes flipped: never a panic; taking from it never panics and never
    /// leaves more tokens than the capacity.
    #[test]
    fn damaged_records_are_safe_to_take_from(
        record in any_record(),
        flips in proptest::collection::vec((0..RECORD_LEN, any::<u8>()), 0..4),
        now in any::<u64>(),
    ) {
        prop_assert_eq!(Record::decode(&record.encode()), Some(record.clone()));
        let mut bytes = record.encode();
        for (at, value) in flips {
            bytes[at] = value;
        }
        let store = MemoryStore::default();
        store.set("t|0", &bytes, None).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let t = table(1);
        let b = bucket(3, 1000);
        if let Take::Taken(taken) = t.take(&store, record.owner, &b, now) {
            prop_assert!(taken.remaining < b.max_tokens);
        }
        let stored = store.get("t|0").map(|(v, _)| v.len());
        prop_assert_eq!(stored, Some(RECORD_LEN));
    }

    /// Whatever is stored under the salt's key: no panic, and every worker ends with one salt
    /// (the stored one when it is a salt, else the first fresh one written).
    #[test]
    fn any_bytes_under_the_salt_key_give_one_salt(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        let store = MemoryStore::default();
        store.set(SALT_KEY, &bytes, None).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let first = load_or_create_salt(&store, || [1; 16]);
        prop_assert!(first.is_some());
        prop_assert_eq!(load_or_create_salt(&store, || [2; 16]), first);
        if bytes.len() != 20 || bytes[..4] != *b"MGRS" {
            prop_assert_eq!(first, Some([1; 16]));
        }
    }
}
