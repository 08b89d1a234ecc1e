//! The logic of meshgate's `rate-limit` proxy-wasm filter, with no proxy-wasm in it.
//!
//! A request flows one way: [`config`] (the user's JSON, parsed strictly) is compiled by
//! [`Limiter::new`] into [`descriptor`]s; each descriptor that matches the request
//! ([`descriptor::Request`]) names a bucket key; the [`table`] finds that key's [`bucket`] in
//! the host's shared store ([`SharedStore`], defined in `meshgate-filter-common` and shared with
//! jwt-core; tests use its in-memory fake) and takes a token with compare-and-swap, so every
//! Envoy worker sees one bucket; [`Limiter::check`] returns a [`Decision`], and [`headers`]
//! renders it as `RateLimit`/`RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-11) and
//! `Retry-After`. A worker's [`lease::Leases`] let a busy key take several tokens per
//! compare-and-swap ([`Limiter::check_with`]) without ever admitting more.

pub mod bucket;
pub mod config;
pub mod descriptor;
pub mod headers;
pub mod lease;
pub mod limiter;
pub mod rls;
pub mod table;

pub use limiter::{Decision, Limiter, Verdict};
pub use table::SharedStore;

/// Milliseconds since the Unix epoch on the host's clock.
pub type Millis = u64;

/// A configuration the filter refuses; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The JSON does not parse (unknown field, wrong type, ...).
    #[error("invalid rate-limit configuration: {0}")]
    Json(#[from] serde_json::Error),
    /// A field has a value that cannot work.
    #[error("{field}: {reason}")]
    Invalid {
        /// Path of the field, e.g. `descriptors[1].token_bucket.fill_interval`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
