//! What a worker's root context and its request contexts share: the compiled limiter, the
//! worker's token leases, the counters and the rate limit service's OVER_LIMIT answers.
//!
//! It has a module of its own so the dependency goes one way: [`crate::root`] builds it and
//! [`crate::http`] uses it, and neither imports the other for it.

use std::cell::RefCell;

use meshgate_ratelimit::Limiter;
use meshgate_ratelimit::lease::Leases;
use meshgate_ratelimit::rls::OverLimitCache;

use meshgate_ratelimit::descriptor::PayloadMemo;

use crate::metrics::Metrics;

/// The compiled configuration and counters, shared by the worker's request contexts.
pub struct Shared {
    /// The limiter.
    pub limiter: Limiter,
    /// Tokens this worker took from shared buckets ahead of its requests (new with each
    /// configuration: a dropped lease only leaves tokens unused).
    pub leases: RefCell<Leases>,
    /// Counters.
    pub metrics: Metrics,
    /// The last JWT payload a `jwt_claim` descriptor parsed.
    pub payloads: PayloadMemo,
    /// OVER_LIMIT answers of the rate limit service, until their reset.
    pub over_limit: RefCell<OverLimitCache>,
}
