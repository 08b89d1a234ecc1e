//! proxy-wasm glue every meshgate filter needs, written once: [`Counter`] (counts batched in the
//! VM, handed to Envoy on a tick), [`now_ms`], [`text`], [`install_panic_hook`], and
//! [`HostStore`] (proxy-wasm shared data as the cores' [`SharedStore`]).

use std::cell::Cell;

use meshgate_filter_common::store::{SetError, SharedStore};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType, Status};

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

// The proxy-wasm SDK's trait methods unwrap every hostcall result, so a host that refuses a call
// (a header value it will not take, a stream that is gone) would abort the VM. The filters call
// these instead: a refused call is logged and skipped.

fn report<T>(what: &str, result: Result<T, proxy_wasm::types::Status>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(status) => {
            log(
                LogLevel::Warn,
                &format!("{what}: host refused ({status:?})"),
            );
            None
        }
    }
}

/// Answers the current request locally.
pub fn send_reply(status: u32, headers: &[(&str, &str)], body: &[u8]) {
    report(
        "send_http_response",
        hostcalls::send_http_response(status, headers.to_vec(), Some(body)),
    );
}

/// Sets (or, with `None`, removes) a header of the current request.
pub fn set_request_header(name: &str, value: Option<&str>) {
    report(
        "set request header",
        hostcalls::set_map_value(proxy_wasm::types::MapType::HttpRequestHeaders, name, value),
    );
}

/// Sets (or, with `None`, removes) a header of the current request, saying whether the host did
/// it: a filter whose header changes carry security weight refuses the request when it did not.
pub fn set_request_header_checked(name: &str, value: Option<&str>) -> bool {
    report(
        "set request header",
        hostcalls::set_map_value(proxy_wasm::types::MapType::HttpRequestHeaders, name, value),
    )
    .is_some()
}

/// Adds a value to a header of the current request (another value when it is present already),
/// saying whether the host did it.
pub fn add_request_header(name: &str, value: &str) -> bool {
    report(
        "add request header",
        hostcalls::add_map_value(proxy_wasm::types::MapType::HttpRequestHeaders, name, value),
    )
    .is_some()
}

/// Every request header of the current request, values as [`text`]; `None` when the host refuses
/// (a caller that decides on headers must not mistake that for "no headers").
pub fn request_headers() -> Option<Vec<(String, String)>> {
    report(
        "get request headers",
        hostcalls::get_map_bytes(proxy_wasm::types::MapType::HttpRequestHeaders),
    )
    .map(|pairs| {
        pairs
            .into_iter()
            .map(|(name, value)| (name, text(value)))
            .collect()
    })
}

/// Sets a header of the current response.
pub fn set_response_header(name: &str, value: &str) {
    report(
        "set response header",
        hostcalls::set_map_value(
            proxy_wasm::types::MapType::HttpResponseHeaders,
            name,
            Some(value),
        ),
    );
}

/// Lets a paused request continue.
pub fn resume_request() {
    report("resume_http_request", hostcalls::resume_http_request());
}

/// Up to `size` bytes of a host buffer (a call's response body, the plugin configuration).
pub fn buffer(kind: proxy_wasm::types::BufferType, size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(kind, 0, size).ok().flatten()
}

/// A header of an HTTP call's response, as text.
pub fn call_response_header(name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(proxy_wasm::types::MapType::HttpCallResponseHeaders, name)
        .ok()
        .flatten()
        .map(text)
}

/// proxy-wasm shared data: one store for every worker VM with the same `vm_id`.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), Some(cas))) => Some((value, cas)),
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }
}
