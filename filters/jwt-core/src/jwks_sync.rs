//! Remote JWKS across one Envoy's workers: when to fetch, who fetches, and sharing the result.
//!
//! Each Envoy worker runs its own VM with its own [`Authenticator`]. A fetched JWKS is written to
//! the host's [`SharedStore`] (proxy-wasm shared data, as a [`shared`] document), so a fetch by
//! one worker serves all: every worker installs a newer document on its next tick. Fetches that
//! no request waits for (start-up with `async_fetch`, refreshes) are coordinated by a lease in
//! the store, so one worker refreshes for all; a request that finds its worker with no keys at
//! all triggers that worker's own fetch, so at cold start at most one fetch per worker and
//! provider happens.
//!
//! The host does the fetching and the clock: [`JwksSync`] is driven by the filter's tick
//! ([`JwksSync::tick`]) and by fetch responses ([`JwksSync::on_response`]), is handed the time
//! in milliseconds, starts fetches through a [`Fetcher`], and says what happened as [`Event`]s
//! for the filter to log and count. Tests drive it with a fake store, fetcher and clock.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use meshgate_filter_common::store::SharedStore;

use crate::Authenticator;
use crate::jwks::{KeySet, MAX_JWKS_BYTES};
use crate::provider::{Keys, RemoteJwks};
use crate::shared::{self, SharedError};

/// Margin added to a fetch's timeout for the lease: the lease outlives the fetch it covers.
pub const LEASE_MARGIN_MS: u64 = 1_000;

/// Starts JWKS fetches (in Envoy: `dispatch_http_call` to the provider's cluster).
pub trait Fetcher {
    /// Starts a `GET` of `remote`'s JWKS (`:path`, `:authority`, `timeout` from it); the call's
    /// token, by which [`JwksSync::on_response`] is told its answer, or why it could not start.
    fn dispatch(&mut self, remote: &RemoteJwks) -> Result<u32, String>;
}

/// The answer to a fetch, as the host hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    /// The `:status` header; empty when no response came (timeout, connection failure).
    pub status: &'a str,
    /// The body's size as the host reports it.
    pub body_size: usize,
    /// The body; the host need not copy it into the VM when `body_size` exceeds
    /// [`MAX_JWKS_BYTES`] (it is refused on its size alone).
    pub body: &'a [u8],
}

/// What happened, for the filter to log and count.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A document in shared data was not installed (it failed a check of [`shared::decode`]).
    SharedIgnored {
        /// The provider's JWKS URI.
        uri: String,
        /// Which check it failed.
        error: SharedError,
    },
    /// A fetch was started.
    FetchStarted {
        /// The provider's JWKS URI.
        uri: String,
        /// The host's token for the call.
        token: u32,
    },
    /// The host would not start a fetch (a failed fetch: counted, retried after back-off).
    NotDispatched {
        /// The provider's JWKS URI.
        uri: String,
        /// Why.
        reason: String,
    },
    /// A fetched JWKS had an entry that is not a usable key.
    Skipped {
        /// The provider's JWKS URI.
        uri: String,
        /// Which entry and why.
        what: String,
    },
    /// A fetch succeeded; its keys are installed here and written to shared data.
    Fetched {
        /// The provider's JWKS URI.
        uri: String,
    },
    /// A fetch failed (status, size, parse or no response); retried after back-off.
    FetchFailed {
        /// The provider's JWKS URI.
        uri: String,
        /// Why.
        reason: String,
    },
}

impl Event {
    /// For the fetch counters: `Some(true)` a fetch succeeded, `Some(false)` one failed, `None`
    /// no fetch ended.
    pub fn fetch_succeeded(&self) -> Option<bool> {
        match self {
            Event::Fetched { .. } => Some(true),
            Event::NotDispatched { .. } | Event::FetchFailed { .. } => Some(false),
            Event::SharedIgnored { .. } | Event::FetchStarted { .. } | Event::Skipped { .. } => {
                None
            }
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::SharedIgnored { uri, error } => {
                write!(f, "shared JWKS for {uri} ignored: {error}")
            }
            Event::FetchStarted { uri, token } => write!(f, "fetching JWKS {uri} (call {token})"),
            Event::NotDispatched { uri, reason } => write!(f, "JWKS {uri}: {reason}"),
            Event::Skipped { uri, what } => write!(f, "JWKS {uri}: skipped {what}"),
            Event::Fetched { uri } => write!(f, "JWKS {uri} fetched"),
            Event::FetchFailed { uri, reason } => write!(f, "JWKS {uri} fetch failed: {reason}"),
        }
    }
}

/// One worker's side of the JWKS sharing: what it installed from shared data and which of its
/// fetches are in flight. A new configuration starts a new one.
#[derive(Debug, Default)]
pub struct JwksSync {
    /// Shared-data CAS of the document last looked at, per provider, so an unchanged document
    /// is not decoded again on every tick.
    installed: HashMap<usize, u32>,
    /// Fetches in flight: call token → provider.
    calls: HashMap<u32, usize>,
    /// Leases this worker holds: provider → the value it wrote (released only if still there).
    leases: HashMap<usize, u64>,
}

impl JwksSync {
    /// The tick's work: installs what other workers fetched, then starts the fetches that are
    /// due. `wanted` holds the providers paused requests wait for; it is emptied (a request
    /// still waiting asks again when it is re-run).
    pub fn tick(
        &mut self,
        auth: &mut Authenticator,
        wanted: &mut BTreeSet<usize>,
        store: &dyn SharedStore,
        fetcher: &mut dyn Fetcher,
        now_ms: u64,
    ) -> Vec<Event> {
        let mut events = self.sync_shared(auth, store, now_ms);
        events.extend(self.fetch_due(auth, std::mem::take(wanted), store, fetcher, now_ms));
        events
    }

    /// Installs JWKS documents other workers fetched since the last look, after checking them
    /// as a fetch is checked (see [`shared::decode`]): shared data is writable by any plugin of
    /// the same `vm_id`. Keys are installed only when fetched later than the ones held.
    pub fn sync_shared(
        &mut self,
        auth: &mut Authenticator,
        store: &dyn SharedStore,
        now_ms: u64,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        for p in 0..auth.providers().len() {
            let Keys::Remote(cfg) = &auth.providers()[p].keys else {
                continue;
            };
            let Some((bytes, cas)) = store.get(&shared::key(cfg)) else {
                continue;
            };
            if self.installed.get(&p) == Some(&cas) {
                continue;
            }
            self.installed.insert(p, cas);
            let (keys, fetched_at) = match shared::decode(cfg, &bytes, now_ms) {
                Ok(found) => found,
                Err(error) => {
                    events.push(Event::SharedIgnored {
                        uri: cfg.uri.clone(),
                        error,
                    });
                    continue;
                }
            };
            let newer = auth
                .remote(p)
                .is_none_or(|(_, s)| s.fetched_at_ms().is_none_or(|at| fetched_at > at));
            if newer {
                auth.install_keys(p, Arc::new(keys), fetched_at);
            }
        }
        events
    }

    /// Starts the fetches that are due: a provider's keys are missing or stale and its back-off
    /// is over, and either a paused request waits for them (`wanted`), or they are fetched at
    /// start (`async_fetch`), or they are held and due for refresh. Fetches nobody here waits
    /// for need the lease.
    pub fn fetch_due(
        &mut self,
        auth: &mut Authenticator,
        wanted: BTreeSet<usize>,
        store: &dyn SharedStore,
        fetcher: &mut dyn Fetcher,
        now_ms: u64,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        for p in 0..auth.providers().len() {
            let Some((cfg, remote)) = auth.remote(p) else {
                continue;
            };
            if !remote.should_fetch(cfg, now_ms) {
                continue;
            }
            let waited_for = wanted.contains(&p);
            if !(waited_for || cfg.fetch_at_start || remote.keys().is_some()) {
                continue; // fetched on first use, as Envoy does without async_fetch
            }
            // Fetches nobody here waits for (start-up, refresh) need the lease: one worker
            // fetches for all, the others install its result from shared data. A refresh
            // overdue by more than a lease's length goes ahead without it: the lease is in
            // shared data, which another plugin of the vm_id could keep writing.
            let lease_ms = lease_length_ms(cfg);
            let overdue = remote.fetched_at_ms().is_some_and(|at| {
                let due = at.saturating_add(millis(cfg.cache_duration));
                now_ms >= due.saturating_add(lease_ms)
            });
            if !waited_for {
                match acquire_lease(store, cfg, now_ms) {
                    Some(until) => {
                        self.leases.insert(p, until);
                    }
                    None if overdue => {}
                    None => continue,
                }
            }
            match fetcher.dispatch(cfg) {
                Ok(token) => {
                    remote.fetch_started();
                    self.calls.insert(token, p);
                    events.push(Event::FetchStarted {
                        uri: cfg.uri.clone(),
                        token,
                    });
                }
                Err(status) => {
                    let cfg = cfg.clone();
                    let reason = format!("cannot call cluster {:?}: {status}", cfg.cluster);
                    remote.fetch_failed(&cfg, reason.clone(), now_ms);
                    events.push(Event::NotDispatched {
                        uri: cfg.uri,
                        reason,
                    });
                }
            }
        }
        events
    }

    /// Takes the answer to fetch `token`: installs the keys and shares them, or records the
    /// failure; either way the lease is released. `None` when `token` is no fetch of this
    /// worker's (nothing changed).
    pub fn on_response(
        &mut self,
        auth: &mut Authenticator,
        store: &dyn SharedStore,
        token: u32,
        response: Response<'_>,
        now_ms: u64,
    ) -> Option<Vec<Event>> {
        let p = self.calls.remove(&token)?;
        let body = String::from_utf8_lossy(response.body).into_owned();
        let size = response.body_size;
        let parsed = match response.status {
            "200" if size > MAX_JWKS_BYTES => Err(format!(
                "JWKS of {size} bytes, more than the {MAX_JWKS_BYTES} allowed"
            )),
            "200" => KeySet::parse(&body).map_err(|e| e.to_string()),
            "" => Err("no response (timeout or connection failure)".to_string()),
            other => Err(format!("HTTP {other}")),
        };
        let (cfg, remote) = auth.remote(p)?;
        let cfg = cfg.clone();
        if let Some(ours) = self.leases.remove(&p) {
            release_lease(store, &cfg, ours);
        }
        let mut events = Vec::new();
        match parsed {
            Ok(keys) => {
                events.extend(keys.skipped().iter().map(|what| Event::Skipped {
                    uri: cfg.uri.clone(),
                    what: what.clone(),
                }));
                auth.install_keys(p, Arc::new(keys), now_ms);
                let key = shared::key(&cfg);
                let document = shared::encode(&cfg, now_ms, &body);
                let _ = store.set(&key, document.as_bytes(), None);
                // Our own document needs no install on the next tick.
                if let Some((_, cas)) = store.get(&key) {
                    self.installed.insert(p, cas);
                }
                events.push(Event::Fetched { uri: cfg.uri });
            }
            Err(reason) => {
                remote.fetch_failed(&cfg, reason.clone(), now_ms);
                events.push(Event::FetchFailed {
                    uri: cfg.uri,
                    reason,
                });
            }
        }
        Some(events)
    }
}

/// The store key of the refresh lease of one remote JWKS: per cluster and URI, as its shared
/// document is.
pub fn lease_key(remote: &RemoteJwks) -> String {
    format!("meshgate.jwt_auth.lease|{}|{}", remote.cluster, remote.uri)
}

/// How long a lease lasts: the fetch's timeout plus [`LEASE_MARGIN_MS`].
fn lease_length_ms(remote: &RemoteJwks) -> u64 {
    millis(remote.timeout).saturating_add(LEASE_MARGIN_MS)
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Takes the refresh lease for `remote` until its fetch would have timed out (plus
/// [`LEASE_MARGIN_MS`]), unless another worker holds it; returns the value written, by which
/// [`release_lease`] knows its own. The write is a compare-and-swap on the value read, so of
/// two workers that saw the lease free only one takes it. A value that is not a lease counts
/// as free, and so does one ending more than a lease's length later than this worker could set
/// (a lease written to hold refreshes off for good). Not merely later: a worker's clock reading
/// may be older than the one of the worker that took the lease, by up to a tick.
pub fn acquire_lease(store: &dyn SharedStore, remote: &RemoteJwks, now_ms: u64) -> Option<u64> {
    let key = lease_key(remote);
    let (current, cas) = store
        .get(&key)
        .map_or((None, None), |(value, cas)| (Some(value), Some(cas)));
    let held_until = current
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let until = now_ms.saturating_add(lease_length_ms(remote));
    if held_until > now_ms && held_until <= until.saturating_add(lease_length_ms(remote)) {
        return None;
    }
    store
        .set(&key, until.to_string().as_bytes(), cas)
        .is_ok()
        .then_some(until)
}

/// Gives the lease for `remote` up (its fetch ended) if it is still the one this worker took
/// (`ours`): a lease another worker took since, after ours ran out, stays.
pub fn release_lease(store: &dyn SharedStore, remote: &RemoteJwks, ours: u64) {
    let key = lease_key(remote);
    if let Some((value, cas)) = store.get(&key)
        && value == ours.to_string().as_bytes()
    {
        let _ = store.set(&key, b"0", Some(cas));
    }
}

#[cfg(test)]
mod tests;
