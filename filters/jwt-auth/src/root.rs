//! The root context: configuration, remote JWKS fetching, and sharing keys between workers.
//!
//! Each Envoy worker runs its own VM. Fetched JWKS are written to proxy-wasm shared data, so a
//! fetch by one worker serves all: every worker installs a newer document on its next tick.
//! Background refreshes are coordinated by a lease in shared data (one worker refreshes); a
//! request that finds its worker with no keys at all triggers that worker's own fetch, so at cold
//! start at most one fetch per worker and provider happens.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use meshgate_jwt::Authenticator;
use meshgate_jwt::jwks::{KeySet, MAX_JWKS_BYTES};
use meshgate_jwt::provider::{Keys, RemoteJwks};
use meshgate_jwt::shared;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};

use crate::crypto::EnvoyVerifier;
use crate::host;
use crate::http::Http;
use crate::metrics::Metrics;
use crate::respond::{self, IDLE_TICK, Shared, State};

/// The root context of one worker.
pub struct Root {
    id: u32,
    state: Option<Shared>,
    /// Shared-data version (CAS) of the JWKS installed per provider.
    installed: HashMap<usize, u32>,
}

/// The refresh lease of one remote JWKS: per cluster and URI, as its shared document is.
fn lease_key(cfg: &RemoteJwks) -> String {
    format!("meshgate.jwt_auth.lease|{}|{}", cfg.cluster, cfg.uri)
}

impl Root {
    /// A root context with id `id`.
    pub fn new(id: u32) -> Self {
        Root {
            id,
            state: None,
            installed: HashMap::new(),
        }
    }

    /// Installs JWKS documents other workers fetched since the last look, after checking them
    /// as a fetch is checked (see [`shared::decode`]): shared data is writable by any plugin of
    /// the same `vm_id`.
    fn sync_shared(&mut self, state: &mut State, now_ms: u64) {
        for p in 0..state.auth.providers().len() {
            let Keys::Remote(cfg) = &state.auth.providers()[p].keys else {
                continue;
            };
            let Ok((Some(bytes), Some(cas))) = hostcalls::get_shared_data(&shared::key(cfg)) else {
                continue;
            };
            if self.installed.get(&p) == Some(&cas) {
                continue;
            }
            self.installed.insert(p, cas);
            let (keys, fetched_at) = match shared::decode(cfg, &bytes, now_ms) {
                Ok(found) => found,
                Err(e) => {
                    host::log(
                        LogLevel::Warn,
                        &format!("jwt-auth: shared JWKS for {} ignored: {e}", cfg.uri),
                    );
                    continue;
                }
            };
            let newer = state
                .auth
                .remote(p)
                .is_none_or(|(_, s)| s.fetched_at_ms().is_none_or(|at| fetched_at > at));
            if newer {
                state.auth.install_keys(p, Arc::new(keys), fetched_at);
            }
        }
    }

    /// Starts the fetches that are due.
    fn fetch_due(&mut self, state: &mut State, now_ms: u64) {
        let wanted = std::mem::take(&mut state.wanted);
        let mut started = Vec::new();
        for p in 0..state.auth.providers().len() {
            let Some((cfg, remote)) = state.auth.remote(p) else {
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
            // fetches for all, the others install its result from shared data.
            if !waited_for && !acquire_lease(cfg, now_ms) {
                continue;
            }
            let headers = vec![
                (":method", "GET"),
                (":path", cfg.path.as_str()),
                (":authority", cfg.authority.as_str()),
                ("accept", "application/json"),
            ];
            match self.dispatch_http_call(&cfg.cluster, headers, None, vec![], cfg.timeout) {
                Ok(token) => {
                    host::log(
                        LogLevel::Debug,
                        &format!("jwt-auth: fetching JWKS {} (call {token})", cfg.uri),
                    );
                    remote.fetch_started();
                    started.push((token, p));
                }
                Err(status) => {
                    let cfg = cfg.clone();
                    let reason = format!("cannot call cluster {:?}: {status:?}", cfg.cluster);
                    host::log(
                        LogLevel::Warn,
                        &format!("jwt-auth: JWKS {}: {reason}", cfg.uri),
                    );
                    remote.fetch_failed(&cfg, reason, now_ms);
                    state.metrics.fetch(false);
                }
            }
        }
        state.calls.extend(started);
    }

    fn schedule_tick(state: &State) {
        let period = if state.waiting.is_empty() && state.wanted.is_empty() {
            IDLE_TICK
        } else {
            respond::URGENT_TICK
        };
        let _ = hostcalls::set_tick_period(period);
    }
}

/// Takes the refresh lease for `cfg` until the fetch would have timed out.
fn acquire_lease(cfg: &RemoteJwks, now_ms: u64) -> bool {
    let timeout_ms = cfg.timeout.as_millis();
    let key = lease_key(cfg);
    let (current, cas) = hostcalls::get_shared_data(&key).unwrap_or((None, None));
    let held_until = current
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    if held_until > now_ms {
        return false;
    }
    let until = now_ms + u64::try_from(timeout_ms).unwrap_or(0) + 1_000;
    hostcalls::set_shared_data(&key, Some(until.to_string().as_bytes()), cas).is_ok()
}

fn release_lease(cfg: &RemoteJwks) {
    let _ = hostcalls::set_shared_data(&lease_key(cfg), Some(b"0"), None);
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        let Some(shared) = self.state.clone() else {
            return;
        };
        let Ok(mut state) = shared.try_borrow_mut() else {
            host::log(
                LogLevel::Error,
                "jwt-auth: JWKS response while state is busy",
            );
            return;
        };
        let now_ms = host::now_ms();
        let Some(p) = state.calls.remove(&token) else {
            return;
        };
        let status = meshgate_wasm_host::call_response_header(":status").unwrap_or_default();
        // A body beyond the bound is not even copied into the VM.
        let body = if body_size > MAX_JWKS_BYTES {
            Vec::new()
        } else {
            meshgate_wasm_host::buffer(BufferType::HttpCallResponseBody, body_size)
                .unwrap_or_default()
        };
        let body = String::from_utf8_lossy(&body).into_owned();
        let parsed = match status.as_str() {
            "200" if body_size > MAX_JWKS_BYTES => Err(format!(
                "JWKS of {body_size} bytes, more than the {MAX_JWKS_BYTES} allowed"
            )),
            "200" => KeySet::parse(&body).map_err(|e| e.to_string()),
            "" => Err("no response (timeout or connection failure)".to_string()),
            other => Err(format!("HTTP {other}")),
        };
        let Some((cfg, _)) = state.auth.remote(p) else {
            return;
        };
        let cfg = cfg.clone();
        release_lease(&cfg);
        match parsed {
            Ok(keys) => {
                for skipped in keys.skipped() {
                    host::log(
                        LogLevel::Warn,
                        &format!("jwt-auth: JWKS {}: skipped {skipped}", cfg.uri),
                    );
                }
                state.auth.install_keys(p, Arc::new(keys), now_ms);
                let document = shared::encode(&cfg, now_ms, &body);
                let key = shared::key(&cfg);
                let _ = hostcalls::set_shared_data(&key, Some(document.as_bytes()), None);
                if let Ok((_, Some(cas))) = hostcalls::get_shared_data(&key) {
                    self.installed.insert(p, cas);
                }
                state.metrics.fetch(true);
                host::log(
                    LogLevel::Info,
                    &format!("jwt-auth: JWKS {} fetched", cfg.uri),
                );
            }
            Err(reason) => {
                host::log(
                    LogLevel::Warn,
                    &format!("jwt-auth: JWKS {} fetch failed: {reason}", cfg.uri),
                );
                if let Some((cfg, remote)) = state.auth.remote(p) {
                    let cfg = cfg.clone();
                    remote.fetch_failed(&cfg, reason, now_ms);
                }
                state.metrics.fetch(false);
            }
        }
        respond::resume_waiters(&mut state, now_ms);
        Self::schedule_tick(&state);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = meshgate_wasm_host::buffer(BufferType::PluginConfiguration, usize::MAX)
            .unwrap_or_default();
        let mut auth = match Authenticator::from_json(&config) {
            Ok(auth) => auth,
            Err(e) => {
                // Envoy refuses the plugin when this returns false; this line says why.
                host::log(LogLevel::Critical, &format!("jwt-auth: {e}"));
                return false;
            }
        };
        for warning in auth.warnings() {
            host::log(LogLevel::Warn, &format!("jwt-auth: {warning}"));
        }
        auth.set_signature_host(Box::new(EnvoyVerifier::default()));
        let metrics = Metrics::define(auth.stat_prefix());
        let has_remote = auth
            .providers()
            .iter()
            .any(|p| matches!(p.keys, Keys::Remote(_)));
        let fetch_at_start = auth
            .providers()
            .iter()
            .any(|p| matches!(&p.keys, Keys::Remote(r) if r.fetch_at_start));
        self.state = Some(Rc::new(RefCell::new(State {
            auth,
            metrics,
            waiting: BTreeMap::new(),
            wanted: BTreeSet::new(),
            calls: HashMap::new(),
            root_id: self.id,
        })));
        self.installed.clear();
        // The tick also flushes counters, so it runs even without remote keys.
        let period = if has_remote && fetch_at_start {
            respond::URGENT_TICK
        } else {
            IDLE_TICK
        };
        let _ = hostcalls::set_tick_period(period);
        true
    }

    fn on_tick(&mut self) {
        let Some(shared) = self.state.clone() else {
            return;
        };
        let Ok(mut state) = shared.try_borrow_mut() else {
            return;
        };
        state.metrics.flush();
        let has_remote = state
            .auth
            .providers()
            .iter()
            .any(|p| matches!(p.keys, Keys::Remote(_)));
        if has_remote {
            let now_ms = host::now_ms();
            self.sync_shared(&mut state, now_ms);
            self.fetch_due(&mut state, now_ms);
            if !state.waiting.is_empty() {
                respond::resume_waiters(&mut state, now_ms);
            }
        }
        Self::schedule_tick(&state);
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let state = self.state.clone()?;
        Some(Box::new(Http::new(context_id, state)))
    }
}
