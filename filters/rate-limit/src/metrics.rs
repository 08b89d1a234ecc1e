//! Counters in Envoy's stats (`wasmcustom.rate_limit.*`), kept in the VM and handed to Envoy on
//! the root context's tick: an increment hostcall per request would cost more than the check.

use std::collections::HashMap;

use meshgate_wasm_host::Counter;

/// The filter's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    allowed: Counter,
    limited: HashMap<String, Counter>,
    shadow_limited: HashMap<String, Counter>,
    overflow: Counter,
    store_errors: Counter,
    attribute_errors: Counter,
    rls_calls: Counter,
    rls_errors: Counter,
}

impl Metrics {
    /// Defines the counters for these descriptor names under `rate_limit.[<stat_prefix>.]`.
    pub fn define(stat_prefix: Option<&str>, names: &[String]) -> Metrics {
        let base = match stat_prefix {
            Some(p) if !p.is_empty() => format!("rate_limit.{}.", p.trim_end_matches('.')),
            _ => "rate_limit.".to_string(),
        };
        let per_name = |kind: &str| {
            names
                .iter()
                .map(|n| (n.clone(), Counter::define(&format!("{base}{kind}.{n}"))))
                .collect()
        };
        Metrics {
            allowed: Counter::define(&format!("{base}allowed")),
            limited: per_name("limited"),
            shadow_limited: per_name("shadow_limited"),
            overflow: Counter::define(&format!("{base}overflow")),
            store_errors: Counter::define(&format!("{base}store_errors")),
            attribute_errors: Counter::define(&format!("{base}attribute_errors")),
            rls_calls: Counter::define(&format!("{base}rls_calls")),
            rls_errors: Counter::define(&format!("{base}rls_errors")),
        }
    }

    /// A request passed.
    pub fn allowed(&self) {
        self.allowed.add(1);
    }

    /// A request was refused by descriptor `name`.
    pub fn limited(&self, name: &str) {
        if let Some(c) = self.limited.get(name) {
            c.add(1);
        }
    }

    /// Shadow descriptor `name` would have refused a request.
    pub fn shadow_limited(&self, name: &str) {
        if let Some(c) = self.shadow_limited.get(name) {
            c.add(1);
        }
    }

    /// A key found no slot.
    pub fn overflow(&self) {
        self.overflow.add(1);
    }

    /// The shared store refused a bucket update (the request was refused).
    pub fn store_error(&self) {
        self.store_errors.add(1);
    }

    /// The host failed to read an attribute a descriptor needed (the request was refused).
    pub fn attribute_error(&self) {
        self.attribute_errors.add(1);
    }

    /// A call to the rate limit service started.
    pub fn rls_call(&self) {
        self.rls_calls.add(1);
    }

    /// The rate limit service did not answer usefully (error, timeout, garbage).
    pub fn rls_error(&self) {
        self.rls_errors.add(1);
    }

    /// Hands the pending counts to Envoy.
    pub fn flush(&self) {
        self.rls_calls.flush();
        self.rls_errors.flush();
        self.allowed.flush();
        self.overflow.flush();
        self.store_errors.flush();
        self.attribute_errors.flush();
        for c in self.limited.values().chain(self.shadow_limited.values()) {
            c.flush();
        }
    }
}
