//! Small wrappers over proxy-wasm hostcalls that cannot panic on hostile input.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

/// Request headers of the effective context. Values that are not UTF-8 (a client may send any
/// byte) are decoded lossily instead of panicking as `get_map` would.
pub fn request_headers() -> Vec<(String, String)> {
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
        .map(|pairs| {
            pairs
                .into_iter()
                .map(|(name, value)| (name, meshgate_wasm_host::text(value)))
                .collect()
        })
        .unwrap_or_default()
}

pub use meshgate_wasm_host::{log, now_ms};
