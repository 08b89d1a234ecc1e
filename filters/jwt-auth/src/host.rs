//! Small wrappers over proxy-wasm hostcalls that cannot panic on hostile input.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MapType};

/// Request headers of the effective context. Values that are not UTF-8 (a client may send any
/// byte) are decoded lossily instead of panicking as `get_map` would.
pub fn request_headers() -> Vec<(String, String)> {
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
        .map(|pairs| {
            pairs
                .into_iter()
                .map(|(name, value)| {
                    // Reuse the buffer in the usual (valid UTF-8) case.
                    let value = String::from_utf8(value)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                    (name, value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch on the host's clock.
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Logs through the host; logging failures are not worth failing a request for.
pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}
