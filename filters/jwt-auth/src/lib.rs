//! meshgate `jwt-auth`: a proxy-wasm HTTP filter that authenticates requests with JWTs.
//!
//! This crate is only the glue between Envoy's Wasm host and [`meshgate_jwt`], which holds all the
//! logic: [`root`] reads the configuration and runs the tick, and gives the JWKS sync between
//! workers ([`meshgate_jwt::jwks_sync`]) its hostcalls (shared data, HTTP calls, the clock);
//! [`http`] runs the authenticator on each request; [`respond`] turns its outcome into
//! header changes or a local reply; [`metrics`] counts what happened; [`crypto`] hands RSA and
//! ECDSA signature checks to Envoy's native `verify_signature` when it offers one.

pub mod crypto;
pub mod host;
pub mod http;
pub mod metrics;
pub mod respond;
pub mod root;

/// The VM entry point: installs the panic hook and the root context factory.
#[allow(missing_docs)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        meshgate_wasm_host::install_panic_hook("jwt-auth");
        proxy_wasm::set_root_context(|id| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(crate::root::Root::new(id))
        });
    }}
}
