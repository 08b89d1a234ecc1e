//! meshgate's admission gate: a Kubernetes validating admission webhook for pods on Wasm
//! RuntimeClasses (their images must be signed Wasm artifacts; Rego policies, conftest/OPA and
//! Gatekeeper style, judge them), the `meshgate policy test` runner, and the CLI that pushes,
//! signs and verifies Wasm artifacts.
//!
//! - [`config`]: the YAML configuration.
//! - [`workload`]: which Pod a request is about (workloads expand to their pod template).
//! - [`policy`]: the policy engines.
//! - [`review`]: one review, step by step: decode, select, check images, judge, verdict.
//! - [`server`]: HTTPS, AdmissionReview in and out, health and metrics.
//! - [`tls`]: serving certificates, reloaded when they change.
//! - [`policy_test`]: policy unit tests, YAML case files and Gatekeeper `gator verify` suites.
//! - [`artifact`]: Wasm modules as OCI artifacts (`meshgate push`) and their layouts.
//! - [`oci`]: OCI references, digests and registry host names (a leaf module).
//! - [`registry`]: OCI registry access (credentials, plain HTTP rules, digests checked).
//! - [`signing`]: cosign-compatible keys, signatures and their verification.
//! - [`images`]: the image checks of admission (artifact layout, trust policy, cache).

pub mod artifact;
pub mod capabilities;
pub mod config;
pub mod extensions;
pub mod images;
pub mod metrics;
pub mod oci;
pub mod policy;
pub mod policy_test;
pub mod registry;
pub mod review;
pub mod server;
pub mod signing;
pub mod tls;
pub mod workload;
