//! Small wrappers over proxy-wasm hostcalls that cannot panic on hostile input.

pub use meshgate_wasm_host::{log, now_ms, request_headers};
