//! Whether a Wasm binary is a proxy-wasm module Envoy can load: a core module that exports a
//! `proxy_abi_version_*` function Envoy knows and imports nothing Envoy does not provide.
//! Envoy refuses such a module only when a proxy loads it, after the object was accepted;
//! here it is refused at admission, with the name of what is missing.

use crate::capabilities::Capabilities;
use crate::config::ModuleKind;

/// ABI versions Envoy's proxy-wasm host (proxy-wasm-cpp-host) accepts.
pub const ABI_VERSIONS: [&str; 3] = [
    "proxy_abi_version_0_1_0",
    "proxy_abi_version_0_2_0",
    "proxy_abi_version_0_2_1",
];

/// `env.proxy_*` host functions of every ABI version (proxy-wasm-cpp-host's
/// `FOR_ALL_HOST_FUNCTIONS`).
const HOST_FUNCTIONS: [&str; 36] = [
    "log",
    "get_status",
    "set_property",
    "get_property",
    "send_local_response",
    "get_shared_data",
    "set_shared_data",
    "register_shared_queue",
    "resolve_shared_queue",
    "dequeue_shared_queue",
    "enqueue_shared_queue",
    "get_header_map_value",
    "add_header_map_value",
    "replace_header_map_value",
    "remove_header_map_value",
    "get_header_map_pairs",
    "set_header_map_pairs",
    "get_header_map_size",
    "get_buffer_status",
    "get_buffer_bytes",
    "set_buffer_bytes",
    "http_call",
    "grpc_call",
    "grpc_stream",
    "grpc_close",
    "grpc_cancel",
    "grpc_send",
    "set_tick_period_milliseconds",
    "get_current_time_nanoseconds",
    "define_metric",
    "increment_metric",
    "record_metric",
    "get_metric",
    "set_effective_context",
    "done",
    "call_foreign_function",
];

/// `env.proxy_*` functions registered only for one ABI version.
fn abi_functions(version: &str) -> &'static [&'static str] {
    match version {
        "proxy_abi_version_0_1_0" => &[
            "get_configuration",
            "continue_request",
            "continue_response",
            "clear_route_cache",
        ],
        "proxy_abi_version_0_2_0" => &["continue_stream", "close_stream"],
        _ => &["continue_stream", "close_stream", "get_log_level"],
    }
}

/// Other `env` functions the host registers.
const ENV_FUNCTIONS: [&str; 2] = ["pthread_equal", "emscripten_notify_memory_growth"];

/// WASI functions the host provides, under both `wasi_snapshot_preview1` and `wasi_unstable`
/// (`FOR_ALL_WASI_FUNCTIONS`).
const WASI_FUNCTIONS: [&str; 15] = [
    "fd_write",
    "fd_read",
    "fd_seek",
    "fd_close",
    "fd_fdstat_get",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "clock_time_get",
    "random_get",
    "proc_exit",
    "path_open",
    "fd_prestat_get",
    "fd_prestat_dir_name",
];

/// What the check found in a proxy-wasm module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyWasm {
    /// The ABI versions it exports (Envoy uses the first it knows).
    pub abi_versions: Vec<String>,
}

/// Checks a module's capabilities against the proxy-wasm ABI Envoy implements.
pub fn check(capabilities: &Capabilities) -> Result<ProxyWasm, String> {
    if capabilities.kind == ModuleKind::Component {
        return Err(
            "is a WebAssembly component, not a proxy-wasm module (Envoy loads core modules)".into(),
        );
    }
    let abi_versions: Vec<String> = capabilities
        .abi_exports
        .iter()
        .filter(|e| ABI_VERSIONS.contains(&e.as_str()))
        .cloned()
        .collect();
    // proxy-wasm-cpp-host takes the first known version among the function exports, in
    // module order: the imports are judged against that one.
    let Some(version) = abi_versions.first().map(String::as_str) else {
        let unknown = capabilities.abi_exports.first();
        return Err(match unknown {
            Some(other) => format!(
                "exports {other}, an ABI version Envoy does not know ({})",
                ABI_VERSIONS.join(", ")
            ),
            None => "is not a proxy-wasm module: it exports no proxy_abi_version_* function".into(),
        });
    };
    if let Some(import) = capabilities.non_function_imports.first() {
        return Err(format!(
            "imports {import}, which is not a function: Envoy provides only functions"
        ));
    }
    let unknown: Vec<&str> = capabilities
        .imports
        .iter()
        .map(String::as_str)
        .filter(|import| !provided(import, version))
        .collect();
    if !unknown.is_empty() {
        const SHOWN: usize = 8;
        let more = unknown.len().saturating_sub(SHOWN);
        let mut list = unknown
            .iter()
            .take(SHOWN)
            .map(|i| crate::review::decode::clip(i))
            .collect::<Vec<_>>()
            .join(", ");
        if more > 0 {
            list.push_str(&format!(" and {more} more"));
        }
        return Err(format!(
            "imports host functions Envoy does not provide ({version}): {list}"
        ));
    }
    Ok(ProxyWasm { abi_versions })
}

/// Whether Envoy provides `module/name` to a module of this ABI version.
fn provided(import: &str, version: &str) -> bool {
    let Some((module, name)) = import.split_once('/') else {
        return false;
    };
    match module {
        "env" => match name.strip_prefix("proxy_") {
            Some(host) => HOST_FUNCTIONS.contains(&host) || abi_functions(version).contains(&host),
            None => ENV_FUNCTIONS.contains(&name),
        },
        "wasi_snapshot_preview1" | "wasi_unstable" => WASI_FUNCTIONS.contains(&name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(wat: &str) -> Capabilities {
        Capabilities::of(&wat::parse_str(wat).unwrap()).unwrap()
    }

    #[test]
    fn a_filter_using_the_abi_and_wasi_passes() {
        let module = caps(
            r#"(module
                (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))
                (import "env" "proxy_get_log_level" (func (param i32) (result i32)))
                (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                (import "wasi_snapshot_preview1" "random_get" (func (param i32 i32) (result i32)))
                (memory (export "memory") 1)
                (func (export "proxy_abi_version_0_2_1")))"#,
        );
        assert_eq!(
            check(&module).unwrap().abi_versions,
            ["proxy_abi_version_0_2_1"]
        );
    }

    #[test]
    fn missing_abi_unknown_imports_and_components_are_refused_by_name() {
        let no_abi = caps(r#"(module (func (export "_start")))"#);
        assert!(
            check(&no_abi)
                .unwrap_err()
                .contains("exports no proxy_abi_version_*")
        );

        let future = caps(r#"(module (func (export "proxy_abi_version_9_9_9")))"#);
        assert!(
            check(&future)
                .unwrap_err()
                .contains("proxy_abi_version_9_9_9")
        );

        let sockets = caps(
            r#"(module
                (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))
                (import "env" "proxy_exec" (func))
                (func (export "proxy_abi_version_0_2_1")))"#,
        );
        let error = check(&sockets).unwrap_err();
        assert!(error.contains("env/proxy_exec"), "{error}");
        assert!(
            error.contains("wasi_snapshot_preview1/sock_accept"),
            "{error}"
        );

        // get_log_level is 0.2.1's: a 0.2.0 module cannot call it.
        let older = caps(
            r#"(module
                (import "env" "proxy_get_log_level" (func (param i32) (result i32)))
                (func (export "proxy_abi_version_0_2_0")))"#,
        );
        assert!(
            check(&older)
                .unwrap_err()
                .contains("env/proxy_get_log_level")
        );

        // The first ABI export in module order counts, as in the proxy: 0.1.0 here, which has
        // no get_log_level.
        let first = caps(
            r#"(module
                (import "env" "proxy_get_log_level" (func (param i32) (result i32)))
                (func (export "proxy_abi_version_0_1_0"))
                (func (export "proxy_abi_version_0_2_1")))"#,
        );
        let error = check(&first).unwrap_err();
        assert!(
            error.contains("(proxy_abi_version_0_1_0): env/proxy_get_log_level"),
            "{error}"
        );
        let global =
            caps(r#"(module (global (export "proxy_abi_version_0_2_1") i32 (i32.const 0)))"#);
        assert!(
            check(&global)
                .unwrap_err()
                .contains("no proxy_abi_version_* function")
        );

        let memory = caps(
            r#"(module (import "env" "memory" (memory 1)) (func (export "proxy_abi_version_0_2_1")))"#,
        );
        assert!(check(&memory).unwrap_err().contains("not a function"));

        let component = caps(r#"(component)"#);
        assert!(check(&component).unwrap_err().contains("component"));
    }
}
