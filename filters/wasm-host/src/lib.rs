//! proxy-wasm glue every meshgate filter needs, written once: [`Counter`] (counts batched in the
//! VM, handed to Envoy on a tick), [`now_ms`], [`text`], and [`install_panic_hook`].

use std::cell::Cell;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType};

/// A counter in Envoy's stats (`/stats` shows it as `wasmcustom.<name>`).
///
/// A hostcall per increment costs about a tenth of a Wasm filter's request budget, so counts are
/// kept in the VM and handed to Envoy by [`Counter::flush`] on the root context's tick: the stats
/// lag by at most the tick period.
#[derive(Debug, Default)]
pub struct Counter {
    id: Option<u32>,
    pending: Cell<u64>,
}

impl Counter {
    /// Defines (or finds) the counter `name`.
    pub fn define(name: &str) -> Counter {
        Counter {
            id: hostcalls::define_metric(MetricType::Counter, name).ok(),
            pending: Cell::new(0),
        }
    }

    /// Counts `by` more.
    pub fn add(&self, by: u64) {
        self.pending.set(self.pending.get().saturating_add(by));
    }

    /// Hands the pending count to Envoy.
    pub fn flush(&self) {
        let by = self.pending.replace(0);
        if let (Some(id), true) = (self.id, by > 0) {
            let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }
}

/// Milliseconds since the Unix epoch on the host's clock.
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Bytes from the host as text: the buffer itself when it is UTF-8 (the usual case), else a
/// lossy copy — a client may send any byte in a header, and that must not panic.
pub fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Logs through the host; a failed log line is not worth failing a request for.
pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// Makes a panic say why in Envoy's log, at the level operators watch, before the VM aborts.
pub fn install_panic_hook(filter: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        log(LogLevel::Critical, &format!("{filter}: panic: {info}"));
    }));
}
