//! Counters in Envoy's stats (`/stats` shows them as `wasmcustom.jwt_auth.*`).

use std::collections::HashMap;

use meshgate_jwt::Status;
use meshgate_jwt::authenticator::Tally;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

/// The filter's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    allowed: Option<u32>,
    denied: HashMap<&'static str, u32>,
    fetch_success: Option<u32>,
    fetch_failed: Option<u32>,
    cache_hit: Option<u32>,
    cache_miss: Option<u32>,
}

fn counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

fn bump(id: Option<u32>, by: u64) {
    if let (Some(id), true) = (id, by > 0) {
        let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
    }
}

impl Metrics {
    /// Defines the counters, under `jwt_auth.` plus the optional `stat_prefix`.
    pub fn define(stat_prefix: Option<&str>) -> Metrics {
        let base = match stat_prefix {
            Some(p) if !p.is_empty() => format!("jwt_auth.{}.", p.trim_end_matches('.')),
            _ => "jwt_auth.".to_string(),
        };
        Metrics {
            allowed: counter(&format!("{base}allowed")),
            denied: Status::REASONS
                .iter()
                .filter_map(|r| Some((*r, counter(&format!("{base}denied.{r}"))?)))
                .collect(),
            fetch_success: counter(&format!("{base}jwks_fetch_success")),
            fetch_failed: counter(&format!("{base}jwks_fetch_failed")),
            cache_hit: counter(&format!("{base}cache_hit")),
            cache_miss: counter(&format!("{base}cache_miss")),
        }
    }

    /// A request was let through.
    pub fn allowed(&self) {
        bump(self.allowed, 1);
    }

    /// A request was refused for `status`.
    pub fn denied(&self, status: Status) {
        bump(self.denied.get(status.reason()).copied(), 1);
    }

    /// A JWKS fetch ended.
    pub fn fetch(&self, ok: bool) {
        bump(
            if ok {
                self.fetch_success
            } else {
                self.fetch_failed
            },
            1,
        );
    }

    /// Cache hits and misses since the last report.
    pub fn tally(&self, tally: Tally) {
        bump(self.cache_hit, tally.cache_hits);
        bump(self.cache_miss, tally.cache_misses);
    }
}
