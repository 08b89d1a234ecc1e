//! meshgate `rate-limit`: a proxy-wasm HTTP filter that limits request rates with token buckets.
//!
//! This crate is only the glue between Envoy's Wasm host and [`meshgate_ratelimit`], which holds
//! the logic: [`root`] reads the configuration, builds the worker's [`shared::Shared`] state and
//! flushes counters; [`http`] checks each request against that state and adds the rate-limit
//! headers; [`host`] gives the core the request attributes and proxy-wasm shared data (where the
//! buckets live, shared by every worker). `root` and `http` both depend on `shared`, never on
//! each other for it.

pub mod host;
pub mod http;
pub mod metrics;
pub mod root;
pub mod shared;

/// The VM entry point: installs the panic hook and the root context factory.
#[allow(missing_docs)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        meshgate_wasm_host::install_panic_hook("rate-limit");
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(crate::root::Root::default())
        });
    }}
}
