//! meshgate's integration tests: real Envoy, registry, Redis, rate limit service and webhook
//! processes on loopback. One test binary, so the whole dependency tree is linked once.

mod admission;
mod containers;
mod envoy;
mod envoy_configs;
mod extensions;
mod gatekeeper_library;
mod jwt_auth;
mod keyless;
mod manifests;
mod opa_differential;
mod rate_limit;
mod registry;
mod signing;
mod sigstore_conformance;
mod wasm_policies;
