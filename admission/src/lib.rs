//! meshgate's admission gate: a Kubernetes validating admission webhook that judges pods on
//! Wasm RuntimeClasses with Rego policies (conftest/OPA and Gatekeeper style), and the
//! `meshgate policy test` runner for those policies.
//!
//! - [`config`]: the YAML configuration.
//! - [`workload`]: which Pod a request is about (workloads expand to their pod template).
//! - [`policy`]: the policy engines.
//! - [`pipeline`]: selection, evaluation and the combined verdict.
//! - [`server`]: HTTPS, AdmissionReview in and out, health and metrics.
//! - [`tls`]: serving certificates, reloaded when they change.
//! - [`testing`]: policy unit tests and YAML case files.
//! - [`artifact`]: Wasm modules as OCI artifacts (`meshgate push`).

pub mod artifact;
pub mod config;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod server;
pub mod testing;
pub mod tls;
pub mod workload;
