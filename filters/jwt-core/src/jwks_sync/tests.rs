//! Workers sharing remote JWKS, played natively: each worker is an [`Authenticator`] with its
//! [`JwksSync`], all on one in-memory store with the host's CAS semantics; the clock is a number
//! the test moves; fetches are recorded by a fake [`Fetcher`] and answered by hand.

use std::cell::Cell;

use meshgate_filter_common::store::testing::MemoryStore;
use meshgate_filter_common::store::{SetError, SharedStore};
use serde_json::{Value, json};

use super::*;

const T0: u64 = 1_700_000_000_000;
const URI: &str = "http://jwks.local/keys";
/// `cache_duration` of [`config`].
const CACHE_MS: u64 = 300_000;
/// `http_uri.timeout` of [`config`].
const TIMEOUT_MS: u64 = 1_000;

fn jwks(kid: &str) -> String {
    json!({"keys": [{"kty": "oct", "kid": kid, "k": "c2VjcmV0"}]}).to_string()
}

/// One remote provider; `remote` is merged into its `remote_jwks`.
fn config(remote: Value) -> Vec<u8> {
    let mut remote_jwks = json!({
        "http_uri": {"uri": URI, "cluster": "jwks", "timeout": "1s"},
        "cache_duration": "300s"
    });
    if let (Some(base), Some(extra)) = (remote_jwks.as_object_mut(), remote.as_object()) {
        base.extend(extra.clone());
    }
    json!({
        "providers": {"r": {"issuer": "iss", "remote_jwks": remote_jwks}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "r"}}]
    })
    .to_string()
    .into_bytes()
}

/// Records what it was asked to fetch; hands out tokens 1, 2, ... or refuses every call.
#[derive(Default)]
struct FakeFetcher {
    dispatched: Vec<(u32, String)>,
    refuse: bool,
}

impl Fetcher for FakeFetcher {
    fn dispatch(&mut self, remote: &RemoteJwks) -> Result<u32, String> {
        if self.refuse {
            return Err("BadArgument".into());
        }
        let token = u32::try_from(self.dispatched.len()).unwrap() + 1;
        self.dispatched.push((token, remote.uri.clone()));
        Ok(token)
    }
}

/// One Envoy worker: its own authenticator, sync state and fetcher.
struct Worker {
    auth: Authenticator,
    sync: JwksSync,
    wanted: BTreeSet<usize>,
    fetcher: FakeFetcher,
}

impl Worker {
    fn new(config: &[u8]) -> Self {
        Worker {
            auth: Authenticator::from_json(config).unwrap(),
            sync: JwksSync::default(),
            wanted: BTreeSet::new(),
            fetcher: FakeFetcher::default(),
        }
    }

    fn tick(&mut self, store: &dyn SharedStore, now: u64) -> Vec<Event> {
        self.sync.tick(
            &mut self.auth,
            &mut self.wanted,
            store,
            &mut self.fetcher,
            now,
        )
    }

    /// Ticks and returns the token of the one fetch it started, if any.
    fn tick_fetch(&mut self, store: &dyn SharedStore, now: u64) -> Option<u32> {
        let before = self.fetcher.dispatched.len();
        self.tick(store, now);
        match &self.fetcher.dispatched[before..] {
            [] => None,
            [(token, uri)] => {
                assert_eq!(uri, URI);
                Some(*token)
            }
            more => panic!("more than one fetch: {more:?}"),
        }
    }

    fn answer(
        &mut self,
        store: &dyn SharedStore,
        token: u32,
        status: &str,
        body: &str,
        now: u64,
    ) -> Option<Vec<Event>> {
        let response = Response {
            status,
            body_size: body.len(),
            body: body.as_bytes(),
        };
        self.sync
            .on_response(&mut self.auth, store, token, response, now)
    }

    /// The key ids and fetch time of the keys held.
    fn held(&mut self) -> Option<(Vec<String>, u64)> {
        let (_, remote) = self.auth.remote(0)?;
        let kids = remote
            .keys()?
            .keys()
            .iter()
            .filter_map(|k| k.kid.clone())
            .collect();
        Some((kids, remote.fetched_at_ms()?))
    }

    fn remote_config(&mut self) -> RemoteJwks {
        self.auth.remote(0).unwrap().0.clone()
    }
}

#[test]
fn the_lease_goes_to_one_worker_while_it_is_valid() {
    let store = MemoryStore::default();
    let mut a = Worker::new(&config(json!({"async_fetch": {}})));
    let mut b = Worker::new(&config(json!({"async_fetch": {}})));
    // async_fetch: both want the keys at start; the first to tick takes the lease and fetches.
    assert!(a.tick_fetch(&store, T0).is_some());
    for now in [T0, T0 + 1, T0 + TIMEOUT_MS + LEASE_MARGIN_MS - 1] {
        assert_eq!(b.tick_fetch(&store, now), None, "b fetched at {now}");
    }
    // A request waiting on b is not held up by a's lease: b fetches for it (at cold start, at
    // most one fetch per worker).
    b.wanted.insert(0);
    assert!(
        b.tick_fetch(&store, T0 + TIMEOUT_MS + LEASE_MARGIN_MS - 1)
            .is_some()
    );
    // The lease itself, directly: taken once, refused while it runs.
    let cfg = a.remote_config();
    let other = MemoryStore::default();
    assert!(acquire_lease(&other, &cfg, T0).is_some());
    assert!(acquire_lease(&other, &cfg, T0).is_none());
    assert!(acquire_lease(&other, &cfg, T0 + TIMEOUT_MS + LEASE_MARGIN_MS - 1).is_none());
    // A worker whose clock reading is a little older than the holder's sees the lease held too.
    assert!(acquire_lease(&other, &cfg, T0 - 20).is_none());
    assert!(acquire_lease(&other, &cfg, T0 - 1_000).is_none());
}

#[test]
fn an_expired_lease_lets_another_worker_fetch() {
    let store = MemoryStore::default();
    let mut a = Worker::new(&config(json!({"async_fetch": {}})));
    let mut b = Worker::new(&config(json!({"async_fetch": {}})));
    let lost = a.tick_fetch(&store, T0).unwrap();
    // a's fetch never answers (its VM went away): the lease runs out with the fetch's timeout.
    let until = T0 + TIMEOUT_MS + LEASE_MARGIN_MS;
    assert_eq!(b.tick_fetch(&store, until - 1), None);
    let token = b.tick_fetch(&store, until).unwrap();
    b.answer(&store, token, "200", &jwks("b"), until + 5)
        .unwrap();
    assert_eq!(b.held(), Some((vec!["b".to_string()], until + 5)));
    // a's answer, should it still come, is taken as a fetch of a's.
    assert!(
        a.answer(&store, lost, "200", &jwks("a"), until + 6)
            .is_some()
    );
}

#[test]
fn a_finished_fetch_releases_the_lease() {
    let store = MemoryStore::default();
    let mut a = Worker::new(&config(json!({"async_fetch": {}})));
    let cfg = a.remote_config();
    let token = a.tick_fetch(&store, T0).unwrap();
    a.answer(&store, token, "503", "", T0 + 10).unwrap();
    assert!(
        acquire_lease(&store, &cfg, T0 + 11).is_some(),
        "lease still held"
    );
}

#[test]
fn a_worker_installs_the_newer_jwks_another_fetched() {
    let store = MemoryStore::default();
    let mut a = Worker::new(&config(json!({})));
    let mut b = Worker::new(&config(json!({})));
    // A request on a waits for keys: a fetches without the lease.
    a.wanted.insert(0);
    let token = a.tick_fetch(&store, T0).unwrap();
    let events = a
        .answer(&store, token, "200", &jwks("one"), T0 + 20)
        .unwrap();
    assert_eq!(events, vec![Event::Fetched { uri: URI.into() }]);
    assert_eq!(b.held(), None);
    assert!(b.tick(&store, T0 + 500).is_empty());
    assert_eq!(b.held(), Some((vec!["one".to_string()], T0 + 20)));
    // b fetched later itself: an older document in shared data does not replace its keys...
    b.auth
        .install_keys(0, Arc::new(KeySet::parse(&jwks("mine")).unwrap()), T0 + 900);
    let cfg = b.remote_config();
    let older = shared::encode(&cfg, T0 + 800, &jwks("older"));
    store
        .set(&shared::key(&cfg), older.as_bytes(), None)
        .unwrap();
    b.tick(&store, T0 + 1_000);
    assert_eq!(b.held(), Some((vec!["mine".to_string()], T0 + 900)));
    // ...a newer one does.
    let newer = shared::encode(&cfg, T0 + 1_100, &jwks("newer"));
    store
        .set(&shared::key(&cfg), newer.as_bytes(), None)
        .unwrap();
    b.tick(&store, T0 + 1_500);
    assert_eq!(b.held(), Some((vec!["newer".to_string()], T0 + 1_100)));
}

#[test]
fn without_async_fetch_keys_are_fetched_on_first_use_and_refreshed_at_cache_duration() {
    let store = MemoryStore::default();
    let mut a = Worker::new(&config(json!({})));
    // Nobody asked: no fetch at start.
    assert_eq!(a.tick_fetch(&store, T0), None);
    a.wanted.insert(0);
    let token = a.tick_fetch(&store, T0 + 1).unwrap();
    assert!(a.wanted.is_empty(), "wanted is taken by the tick");
    // In flight: no second fetch.
    a.wanted.insert(0);
    assert_eq!(a.tick_fetch(&store, T0 + 2), None);
    a.answer(&store, token, "200", &jwks("k"), T0 + 10).unwrap();
    assert_eq!(a.tick_fetch(&store, T0 + 10 + CACHE_MS - 1), None);
    // Held keys are refreshed when cache_duration is up, with nobody waiting.
    let refresh = a.tick_fetch(&store, T0 + 10 + CACHE_MS).unwrap();
    assert_ne!(refresh, token);
}

#[test]
fn with_async_fetch_keys_are_fetched_at_start_and_retried_after_failed_refetch() {
    let store = MemoryStore::default();
    let mut a = Worker::new(&config(
        json!({"async_fetch": {"failed_refetch_duration": "3s"}}),
    ));
    let token = a.tick_fetch(&store, T0).unwrap();
    let events = a.answer(&store, token, "", "", T0 + TIMEOUT_MS).unwrap();
    assert_eq!(
        events,
        vec![Event::FetchFailed {
            uri: URI.into(),
            reason: "no response (timeout or connection failure)".into()
        }]
    );
    assert_eq!(events[0].fetch_succeeded(), Some(false));
    let retry_at = T0 + TIMEOUT_MS + 3_000;
    assert_eq!(a.tick_fetch(&store, retry_at - 1), None);
    let token = a.tick_fetch(&store, retry_at).unwrap();
    a.answer(&store, token, "200", &jwks("k"), retry_at + 1)
        .unwrap();
    assert_eq!(a.tick_fetch(&store, retry_at + 1 + CACHE_MS - 1), None);
    assert!(a.tick_fetch(&store, retry_at + 1 + CACHE_MS).is_some());
}

#[test]
fn a_refused_dispatch_is_a_failed_fetch_with_back_off() {
    let store = MemoryStore::default();
    let mut a = Worker::new(&config(
        json!({"async_fetch": {"failed_refetch_duration": "3s"}}),
    ));
    a.fetcher.refuse = true;
    let events = a.tick(&store, T0);
    assert_eq!(
        events,
        vec![Event::NotDispatched {
            uri: URI.into(),
            reason: "cannot call cluster \"jwks\": BadArgument".into()
        }]
    );
    assert_eq!(events[0].fetch_succeeded(), Some(false));
    a.fetcher.refuse = false;
    // The lease it took is still held (as when a dispatched fetch hangs): the retry waits for
    // both the back-off and the lease.
    assert_eq!(a.tick_fetch(&store, T0 + 2_999), None);
    assert!(a.tick_fetch(&store, T0 + 3_000).is_some());
}

/// A store where another worker writes `key` between our read and our first write to it.
struct Racing<'a> {
    store: &'a MemoryStore,
    key: String,
    theirs: &'a [u8],
    raced: Cell<bool>,
}

impl SharedStore for Racing<'_> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.store.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        if key == self.key && !self.raced.replace(true) {
            self.store.set(key, self.theirs, None)?;
        }
        self.store.set(key, value, cas)
    }
}

#[test]
fn a_lease_written_by_another_worker_meanwhile_is_not_overwritten() {
    let store = MemoryStore::default();
    let mut a = Worker::new(&config(json!({"async_fetch": {}})));
    let cfg = a.remote_config();
    // An expired lease is there; another worker renews it between a's read and a's write.
    store.set(&lease_key(&cfg), b"5", None).unwrap();
    let theirs = (T0 + 2_000).to_string();
    let racing = Racing {
        store: &store,
        key: lease_key(&cfg),
        theirs: theirs.as_bytes(),
        raced: Cell::new(false),
    };
    assert_eq!(a.tick_fetch(&racing, T0), None, "fetched without the lease");
    assert_eq!(store.get(&lease_key(&cfg)).unwrap().0, theirs.as_bytes());
    // The next tick after their lease ends takes it.
    assert!(a.tick_fetch(&store, T0 + 2_000).is_some());
}

#[test]
fn corrupt_foreign_and_stale_shared_documents_are_ignored() {
    let store = MemoryStore::default();
    let mut a = Worker::new(&config(json!({})));
    let cfg = a.remote_config();
    let key = shared::key(&cfg);
    let ignored = |events: Vec<Event>| -> Vec<SharedError> {
        events
            .into_iter()
            .map(|e| match e {
                Event::SharedIgnored { uri, error } => {
                    assert_eq!(uri, URI);
                    error
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    };

    store.set(&key, b"\x00garbage", None).unwrap();
    assert_eq!(ignored(a.tick(&store, T0)), vec![SharedError::Format]);
    // Looked at once: an unchanged entry is not decoded (nor reported) again.
    assert!(a.tick(&store, T0 + 500).is_empty());

    let mut elsewhere = cfg.clone();
    elsewhere.cluster = "attacker".into();
    store
        .set(
            &key,
            shared::encode(&elsewhere, T0, &jwks("x")).as_bytes(),
            None,
        )
        .unwrap();
    assert!(matches!(
        ignored(a.tick(&store, T0 + 1_000))[..],
        [SharedError::Foreign(_)]
    ));

    let pinned = shared::encode(&cfg, u64::MAX, &jwks("x"));
    store.set(&key, pinned.as_bytes(), None).unwrap();
    assert_eq!(
        ignored(a.tick(&store, T0 + 1_500)),
        vec![SharedError::Future(u64::MAX)]
    );

    let stale = shared::encode(&cfg, T0 - CACHE_MS, &jwks("x"));
    store.set(&key, stale.as_bytes(), None).unwrap();
    assert_eq!(
        ignored(a.tick(&store, T0 + 2_000)),
        vec![SharedError::Expired(T0 - CACHE_MS)]
    );
    assert_eq!(a.held(), None, "nothing installed");

    // A good document afterwards is installed.
    let good = shared::encode(&cfg, T0 + 2_100, &jwks("good"));
    store.set(&key, good.as_bytes(), None).unwrap();
    assert!(a.tick(&store, T0 + 2_500).is_empty());
    assert_eq!(a.held(), Some((vec!["good".to_string()], T0 + 2_100)));
}

#[test]
fn responses_that_are_not_a_jwks_fail_the_fetch_and_share_nothing() {
    let store = MemoryStore::default();
    let mut a = Worker::new(&config(json!({})));
    let cfg = a.remote_config();
    let fail = |a: &mut Worker, status: &str, body: &str, size: usize, now: u64| {
        a.wanted.insert(0);
        let token = a.tick_fetch(&store, now).unwrap();
        let response = Response {
            status,
            body_size: size,
            body: body.as_bytes(),
        };
        let events = a
            .sync
            .on_response(&mut a.auth, &store, token, response, now)
            .unwrap();
        match &events[..] {
            [Event::FetchFailed { reason, .. }] => reason.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(fail(&mut a, "503", "", 0, T0), "HTTP 503");
    // Back-off is 1 s (failed_refetch's default, no retries configured).
    let too_big = MAX_JWKS_BYTES + 1;
    assert_eq!(
        fail(&mut a, "200", "", too_big, T0 + 1_000),
        format!("JWKS of {too_big} bytes, more than the {MAX_JWKS_BYTES} allowed")
    );
    let reason = fail(&mut a, "200", "not json", 8, T0 + 2_000);
    assert!(!reason.is_empty());
    assert_eq!(store.get(&shared::key(&cfg)), None, "a failure was shared");
    assert_eq!(a.held(), None);
    // A token that is no fetch of this worker's changes nothing.
    assert_eq!(a.answer(&store, 999, "200", &jwks("k"), T0 + 3_000), None);
    assert_eq!(a.held(), None);
}

#[test]
fn a_fetched_jwks_reports_its_skipped_entries_and_is_shared() {
    let store = MemoryStore::default();
    let mut a = Worker::new(&config(json!({})));
    let cfg = a.remote_config();
    a.wanted.insert(0);
    let token = a.tick_fetch(&store, T0).unwrap();
    let body = json!({"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"},
                                {"kty": "oct", "kid": "enc", "use": "enc", "k": "c2VjcmV0"}]})
    .to_string();
    let events = a.answer(&store, token, "200", &body, T0 + 7).unwrap();
    assert!(matches!(
        &events[..],
        [Event::Skipped { .. }, Event::Fetched { .. }]
    ));
    assert_eq!(events[1].fetch_succeeded(), Some(true));
    let (bytes, _) = store.get(&shared::key(&cfg)).unwrap();
    let (keys, at) = shared::decode(&cfg, &bytes, T0 + 8).unwrap();
    assert_eq!((keys.keys().len(), at), (1, T0 + 7));
}

#[test]
fn a_lease_no_worker_could_have_written_counts_as_free() {
    let store = MemoryStore::default();
    let mut a = Worker::new(&config(json!({"async_fetch": {}})));
    let cfg = a.remote_config();
    // Another plugin of the vm_id writes a lease ending far in the future.
    store
        .set(&lease_key(&cfg), u64::MAX.to_string().as_bytes(), None)
        .unwrap();
    assert!(
        a.tick_fetch(&store, T0).is_some(),
        "the forged lease held fetches off"
    );
}

#[test]
fn a_worker_releases_only_the_lease_it_took() {
    let store = MemoryStore::default();
    let mut a = Worker::new(&config(json!({"async_fetch": {}})));
    let cfg = a.remote_config();
    let token = a.tick_fetch(&store, T0).unwrap();
    // a's lease ran out; b took it for its own fetch.
    let later = T0 + TIMEOUT_MS + LEASE_MARGIN_MS;
    let theirs = acquire_lease(&store, &cfg, later).unwrap();
    // a's late answer releases nothing of b's.
    a.answer(&store, token, "200", &jwks("a"), later + 1)
        .unwrap();
    assert_eq!(
        store.get(&lease_key(&cfg)).unwrap().0,
        theirs.to_string().as_bytes()
    );
}

#[test]
fn a_refresh_overdue_by_a_lease_goes_ahead_whoever_holds_the_lease() {
    let store = MemoryStore::default();
    let mut a = Worker::new(&config(json!({"async_fetch": {}})));
    let cfg = a.remote_config();
    let token = a.tick_fetch(&store, T0).unwrap();
    a.answer(&store, token, "200", &jwks("a"), T0).unwrap();
    // Another plugin keeps writing a plausible lease, so no worker ever holds it.
    let mut now = T0;
    let due = T0 + CACHE_MS;
    let mut refreshed = None;
    while now < due + 2 * (TIMEOUT_MS + LEASE_MARGIN_MS) {
        let pinned = now + TIMEOUT_MS + LEASE_MARGIN_MS;
        store
            .set(&lease_key(&cfg), pinned.to_string().as_bytes(), None)
            .unwrap();
        if a.tick_fetch(&store, now).is_some() {
            refreshed = Some(now);
            break;
        }
        now += 500;
    }
    let at = refreshed.expect("keys were never refreshed");
    assert!(
        at >= due + TIMEOUT_MS + LEASE_MARGIN_MS,
        "refreshed at {at}, before it was overdue"
    );
}
