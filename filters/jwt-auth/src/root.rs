//! The root context: configuration, the tick, and the hostcalls of the JWKS sync.
//!
//! When, what and by whom remote JWKS are fetched, and how workers share them, is decided by
//! [`JwksSync`] in jwt-core (tested natively there); this module only hands it the host's
//! shared data ([`HostStore`]), clock and HTTP calls (`HostFetcher`), and logs and counts the
//! [`Event`]s it reports.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use meshgate_jwt::Authenticator;
use meshgate_jwt::jwks::MAX_JWKS_BYTES;
use meshgate_jwt::jwks_sync::{Event, Fetcher, JwksSync, Response};
use meshgate_jwt::provider::{Keys, RemoteJwks};
use meshgate_wasm_host::HostStore;
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
    /// Fetches in flight and the shared documents looked at; new with each configuration.
    sync: JwksSync,
}

/// JWKS fetches as `dispatch_http_call`s. They start on the root context's tick, so the host
/// answers the root context ([`Root::on_http_call_response`]).
struct HostFetcher;

impl Fetcher for HostFetcher {
    fn dispatch(&mut self, remote: &RemoteJwks) -> Result<u32, String> {
        let headers = vec![
            (":method", "GET"),
            (":path", remote.path.as_str()),
            (":authority", remote.authority.as_str()),
            ("accept", "application/json"),
        ];
        hostcalls::dispatch_http_call(&remote.cluster, headers, None, vec![], remote.timeout)
            .map_err(|status| format!("{status:?}"))
    }
}

impl Root {
    /// A root context with id `id`.
    pub fn new(id: u32) -> Self {
        Root {
            id,
            state: None,
            sync: JwksSync::default(),
        }
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

/// Logs what the JWKS sync did and counts the fetches that ended.
fn report(state: &State, events: Vec<Event>) {
    for event in events {
        let level = match event {
            Event::FetchStarted { .. } => LogLevel::Debug,
            Event::Fetched { .. } => LogLevel::Info,
            Event::SharedIgnored { .. }
            | Event::NotDispatched { .. }
            | Event::Skipped { .. }
            | Event::FetchFailed { .. } => LogLevel::Warn,
        };
        host::log(level, &format!("jwt-auth: {event}"));
        if let Some(ok) = event.fetch_succeeded() {
            state.metrics.fetch(ok);
        }
    }
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
        let status = meshgate_wasm_host::call_response_header(":status").unwrap_or_default();
        // A body beyond the bound is not even copied into the VM.
        let body = if body_size > MAX_JWKS_BYTES {
            Vec::new()
        } else {
            meshgate_wasm_host::buffer(BufferType::HttpCallResponseBody, body_size)
                .unwrap_or_default()
        };
        let response = Response {
            status: &status,
            body_size,
            body: &body,
        };
        let state = &mut *state;
        let Some(events) =
            self.sync
                .on_response(&mut state.auth, &HostStore, token, response, now_ms)
        else {
            return;
        };
        report(state, events);
        respond::resume_waiters(state, now_ms);
        Self::schedule_tick(state);
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
            root_id: self.id,
        })));
        self.sync = JwksSync::default();
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
            let state = &mut *state;
            let events = self.sync.tick(
                &mut state.auth,
                &mut state.wanted,
                &HostStore,
                &mut HostFetcher,
                now_ms,
            );
            report(state, events);
            if !state.waiting.is_empty() {
                respond::resume_waiters(state, now_ms);
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
