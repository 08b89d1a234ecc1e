//! The logic of meshgate's `jwt-auth` proxy-wasm filter, with no proxy-wasm in it.
//!
//! The configuration is Envoy's `JwtAuthentication` message in proto3-JSON form, so a config
//! written for Envoy's native `jwt_authn` filter moves across unchanged. A request flows one way:
//!
//! 1. [`config`] — the user's JSON, parsed strictly (unknown fields are errors naming the field);
//! 2. [`Authenticator::new`] compiles it: [`rules`] (route matchers), [`requirement`] trees,
//!    [`provider`]s with their [`jwks`] and token locations;
//! 3. [`extract`] finds the tokens a provider accepts in the request headers;
//! 4. [`token`] parses a JWT, refusing `alg: none` and embedded-key headers;
//! 5. [`verify`] checks claims in Envoy's order (issuer, time, audience) and the signature;
//! 6. [`Authenticator::authenticate`] folds the requirement tree into an [`Outcome`]: allow with
//!    header [`output::Mutations`], deny with a status and `WWW-Authenticate`, or wait for keys.
//!
//! Verified tokens are kept in a bounded [`cache`] so a repeated token skips the signature check.
//!
//! Remote keys: [`remote`] is one worker's fetch state of one JWKS (when to fetch, what to serve,
//! back-off); [`shared`] is the document in which workers share a fetched JWKS and the checks
//! made when reading it back; [`jwks_sync`] puts them together across workers — the refresh
//! lease, installing what other workers fetched, which fetches are due, taking a fetch's answer —
//! on the host's shared data seen through [`meshgate_filter_common::store::SharedStore`], with
//! the time and the fetching handed in, so all of it is tested here natively. A new piece of
//! state shared between workers belongs here in the same way (against `&dyn SharedStore`, time
//! as a parameter, tested on `meshgate_filter_common::store::testing::MemoryStore`), never in
//! the filter's glue.

pub mod authenticator;
pub mod cache;
pub mod config;
pub mod error;
pub mod extract;
pub mod jwks;
pub mod jwks_sync;
pub mod output;
pub mod provider;
pub mod re2;
pub mod remote;
pub mod requirement;
pub mod rules;
pub mod shared;
pub mod token;
pub mod verify;

pub use authenticator::{Authenticator, Denial, Outcome};
pub use error::{ConfigError, Status};

/// Request headers as the host hands them over: lowercase names (HTTP/2 style, with the pseudo
/// headers `:path`, `:method`, `:authority`, `:scheme`) and their values.
pub type Headers = [(String, String)];

/// Seconds since the Unix epoch, the resolution JWT claims have.
pub type UnixSeconds = u64;

/// The first value of header `name` (lowercase).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(feature = "mint")]
pub mod mint;

#[cfg(test)]
mod proptests;
