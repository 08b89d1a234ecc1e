//! Runs the authenticator on the effective context's request and applies what it decided:
//! header changes and continue, a local reply, or a pause until keys arrive.
//!
//! Everything here goes through hostcalls on the *effective* context, so the same code serves a
//! request on its own callback and a paused request resumed later from the root context.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use meshgate_jwt::output::Mutations;
use meshgate_jwt::{Authenticator, Denial, Outcome, Status};
use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

use crate::host;
use crate::metrics::Metrics;

/// Tick period while requests wait for keys: short, since it bounds their added latency.
pub const URGENT_TICK: Duration = Duration::from_millis(5);
/// Tick period otherwise: how often workers pick up keys other workers fetched.
pub const IDLE_TICK: Duration = Duration::from_millis(500);
/// Prefix of the filter-state key under which `payload_in_metadata` documents are published;
/// Envoy prepends `wasm.`, so `%FILTER_STATE(wasm.meshgate.jwt_payload.<name>:PLAIN)%` reads it.
pub const PUBLISH_PREFIX: &str = "meshgate.jwt_payload.";

/// A paused request.
#[derive(Debug, Clone, Copy)]
pub struct Waiter {
    /// After this, the request is answered whatever the state of the fetch.
    pub deadline_ms: u64,
}

/// Per-worker state shared by the root context and the request contexts.
pub struct State {
    /// The compiled configuration and its caches.
    pub auth: Authenticator,
    /// Counters.
    pub metrics: Metrics,
    /// Paused requests by context id.
    pub waiting: BTreeMap<u32, Waiter>,
    /// Providers whose keys a paused request is waiting for.
    pub wanted: BTreeSet<usize>,
    /// The root context's id, to return to after acting on other contexts.
    pub root_id: u32,
}

/// The state as both kinds of context hold it (one VM is one thread).
pub type Shared = Rc<RefCell<State>>;

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Headers adjusted; let it continue.
    Continue,
    /// A local reply was sent.
    Replied,
    /// Waiting for keys.
    Paused,
}

/// Authenticates the effective context's request (`context_id`) and applies the outcome.
///
/// Fails closed: when the host will not hand over the headers (an empty list would match no
/// rule and let the request through unchecked) or will not make a header change (a token or a
/// forged identity header could stay), the request is answered 500 and counted as `host_error`.
pub fn run(state: &mut State, context_id: u32, now_ms: u64) -> Applied {
    let Some(headers) = host::request_headers() else {
        return host_failure(state, "cannot read the request headers");
    };
    let outcome = state.auth.authenticate(&headers, now_ms);
    state.metrics.tally(state.auth.take_tally());
    match outcome {
        Outcome::Allow(mutations) => {
            if let Err(what) = apply(&mutations) {
                return host_failure(state, &what);
            }
            state.metrics.allowed();
            Applied::Continue
        }
        Outcome::Unreadable => host_failure(state, "the request headers came back empty"),
        Outcome::Deny(denial) => {
            reply(&denial);
            state.metrics.denied(denial.status);
            Applied::Replied
        }
        Outcome::NeedKeys(providers) => {
            let timeout = providers
                .iter()
                .filter_map(|p| state.auth.remote(*p).map(|(cfg, _)| cfg.timeout))
                .max()
                .unwrap_or(Duration::from_secs(1));
            // The fetch's own timeout ends it; the margin covers retries being scheduled.
            let deadline_ms = now_ms + u64::try_from(timeout.as_millis()).unwrap_or(0) + 2_000;
            state.waiting.insert(context_id, Waiter { deadline_ms });
            host::log(
                LogLevel::Debug,
                &format!(
                    "jwt-auth: request {context_id} waits for keys of providers {providers:?}"
                ),
            );
            state.wanted.extend(providers);
            let _ = hostcalls::set_tick_period(URGENT_TICK);
            Applied::Paused
        }
    }
}

/// Re-runs paused requests whose keys are now settled (fetched or failed) or whose deadline has
/// passed; a request still without keys at its deadline is refused.
pub fn resume_waiters(state: &mut State, now_ms: u64) {
    let ids: Vec<(u32, Waiter)> = state.waiting.iter().map(|(k, v)| (*k, *v)).collect();
    for (id, waiter) in ids {
        state.waiting.remove(&id);
        if hostcalls::set_effective_context(id).is_err() {
            continue; // the stream ended meanwhile
        }
        let applied = run(state, id, now_ms);
        host::log(
            LogLevel::Debug,
            &format!("jwt-auth: request {id} resumed: {applied:?}"),
        );
        match applied {
            Applied::Continue => meshgate_wasm_host::resume_request(),
            Applied::Replied => {}
            Applied::Paused if now_ms >= waiter.deadline_ms => {
                state.waiting.remove(&id);
                host::log(
                    LogLevel::Warn,
                    "jwt-auth: no JWKS before the request's deadline",
                );
                let denial = denial_for(Status::JwksFetchFail);
                reply(&denial);
                state.metrics.denied(denial.status);
            }
            Applied::Paused => {
                // Still pending: keep the original deadline.
                state.waiting.insert(id, waiter);
            }
        }
    }
    let _ = hostcalls::set_effective_context(state.root_id);
}

fn denial_for(status: Status) -> Denial {
    Denial {
        status,
        http_status: status.http_status(),
        www_authenticate: format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\"",
            status.message()
        ),
        body: status.message().to_string(),
    }
}

/// Refuses the request because the host failed it: 500, logged, counted.
fn host_failure(state: &mut State, what: &str) -> Applied {
    host::log(
        LogLevel::Error,
        &format!("jwt-auth: {what}; refusing the request"),
    );
    meshgate_wasm_host::send_reply(
        500,
        &[("content-type", "text/plain")],
        b"jwt-auth: the request could not be checked",
    );
    state.metrics.host_error();
    Applied::Replied
}

/// Applies the changes in [`Mutations`]' order; the first change the host refuses ends it.
fn apply(mutations: &Mutations) -> Result<(), String> {
    for name in &mutations.remove_headers {
        if !meshgate_wasm_host::set_request_header_checked(name, None) {
            return Err(format!("cannot remove request header {name}"));
        }
    }
    if let Some(path) = &mutations.path
        && !meshgate_wasm_host::set_request_header_checked(":path", Some(path))
    {
        return Err("cannot remove the token from :path".into());
    }
    for (name, value) in &mutations.set_headers {
        if !meshgate_wasm_host::add_request_header(name, value) {
            return Err(format!("cannot add request header {name}"));
        }
    }
    for (name, json) in &mutations.publish {
        let key = format!("{PUBLISH_PREFIX}{name}");
        if hostcalls::set_property(vec![key.as_str()], Some(json.as_bytes())).is_err() {
            return Err(format!("cannot publish {key}"));
        }
    }
    Ok(())
}

fn reply(denial: &Denial) {
    meshgate_wasm_host::send_reply(
        denial.http_status,
        &[
            ("www-authenticate", denial.www_authenticate.as_str()),
            ("content-type", "text/plain"),
        ],
        denial.body.as_bytes(),
    );
}
