//! Pieces every meshgate filter core needs and none of them should own: proto3-JSON durations
//! (Envoy configs write `"3600s"`, `"0.5s"`), JWT claims rendered as text (jwt-auth copies them
//! into headers, rate-limit keys buckets by them), and the [`store::SharedStore`] trait through
//! which cores read and compare-and-swap proxy-wasm shared data (with one in-memory fake,
//! `store::testing::MemoryStore`, behind the `testing` feature for every core's tests).
//!
//! This crate knows nothing of proxy-wasm, so filter logic built on it runs under plain
//! `cargo test`.

pub mod claims;
pub mod duration;
pub mod store;

pub use duration::ProtoDuration;
pub use store::{SetError, SharedStore};
