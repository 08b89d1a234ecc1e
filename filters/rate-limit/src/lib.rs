//! meshgate `rate-limit`: a proxy-wasm HTTP filter that limits request rates with token buckets.
//!
//! This crate is only the glue between Envoy's Wasm host and [`meshgate_ratelimit`], which holds
//! the logic: [`root`] reads the configuration and flushes counters; [`http`] checks each
//! request and adds the rate-limit headers; [`host`] gives the core the request attributes and
//! proxy-wasm shared data (where the buckets live, shared by every worker).

pub mod host;
pub mod http;
pub mod metrics;
pub mod root;

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
