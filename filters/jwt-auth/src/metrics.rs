//! Counters in Envoy's stats (`/stats` shows them as `wasmcustom.jwt_auth.*`).
//!
//! Counts are batched in the VM and handed to Envoy on the root context's tick
//! ([`Metrics::flush`], every [`crate::respond::IDLE_TICK`] at most).

use std::collections::HashMap;

use meshgate_jwt::Status;
use meshgate_jwt::authenticator::Tally;
use meshgate_wasm_host::Counter;

/// The filter's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    allowed: Counter,
    denied: HashMap<&'static str, Counter>,
    fetch_success: Counter,
    fetch_failed: Counter,
    cache_hit: Counter,
    cache_miss: Counter,
    host_error: Counter,
}

impl Metrics {
    /// Defines the counters, under `jwt_auth.` plus the optional `stat_prefix`.
    pub fn define(stat_prefix: Option<&str>) -> Metrics {
        let base = match stat_prefix {
            Some(p) if !p.is_empty() => format!("jwt_auth.{}.", p.trim_end_matches('.')),
            _ => "jwt_auth.".to_string(),
        };
        Metrics {
            allowed: Counter::define(&format!("{base}allowed")),
            denied: Status::REASONS
                .iter()
                .map(|r| (*r, Counter::define(&format!("{base}denied.{r}"))))
                .collect(),
            fetch_success: Counter::define(&format!("{base}jwks_fetch_success")),
            fetch_failed: Counter::define(&format!("{base}jwks_fetch_failed")),
            cache_hit: Counter::define(&format!("{base}cache_hit")),
            cache_miss: Counter::define(&format!("{base}cache_miss")),
            host_error: Counter::define(&format!("{base}host_error")),
        }
    }

    /// A request was let through.
    pub fn allowed(&self) {
        self.allowed.add(1);
    }

    /// A request was refused for `status`.
    pub fn denied(&self, status: Status) {
        if let Some(counter) = self.denied.get(status.reason()) {
            counter.add(1);
        }
    }

    /// A request was refused because the host would not read or change its headers.
    pub fn host_error(&self) {
        self.host_error.add(1);
    }

    /// A JWKS fetch ended.
    pub fn fetch(&self, ok: bool) {
        if ok {
            self.fetch_success.add(1)
        } else {
            self.fetch_failed.add(1)
        }
    }

    /// Cache hits and misses since the last report.
    pub fn tally(&self, tally: Tally) {
        self.cache_hit.add(tally.cache_hits);
        self.cache_miss.add(tally.cache_misses);
    }

    /// Hands the pending counts to Envoy.
    pub fn flush(&self) {
        for counter in [
            &self.allowed,
            &self.fetch_success,
            &self.fetch_failed,
            &self.cache_hit,
            &self.cache_miss,
            &self.host_error,
        ] {
            counter.flush();
        }
        for counter in self.denied.values() {
            counter.flush();
        }
    }
}
