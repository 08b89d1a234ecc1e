//! Pieces every meshgate filter core needs and none of them should own: proto3-JSON durations
//! (Envoy configs write `"3600s"`, `"0.5s"`) and JWT claims rendered as text (jwt-auth copies them
//! into headers, rate-limit keys buckets by them).
//!
//! This crate knows nothing of proxy-wasm, so filter logic built on it runs under plain
//! `cargo test`.

pub mod claims;
pub mod duration;

pub use duration::ProtoDuration;
