//! Token bucket arithmetic on a stored state, so any worker can refill and take from it.
//!
//! Fills are discrete, as in Envoy's `local_ratelimit`: `tokens_per_fill` tokens every
//! `fill_interval`, up to `max_tokens`. The state keeps the time of the last fill boundary, so a
//! refill computed by any worker at any time gives the same result as a timer would have.

use crate::config::TokenBucket;
use crate::{ConfigError, Millis};

/// The smallest fill interval accepted (Envoy's own lower bound).
pub const MIN_FILL_INTERVAL_MS: u64 = 50;
/// Longest fill interval: a year. Longer ones are refused in the configuration, and a shared
/// record that claims one is not trusted (it would never refill, pinning its slot).
pub const MAX_FILL_INTERVAL_MS: u64 = 366 * 24 * 3600 * 1000;

/// A bucket's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Capacity.
    pub max_tokens: u64,
    /// Tokens per fill.
    pub tokens_per_fill: u64,
    /// Milliseconds between fills.
    pub fill_interval_ms: u64,
}

/// A bucket's stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Tokens left.
    pub tokens: u64,
    /// Time of the last fill boundary.
    pub last_fill_ms: Millis,
}

/// The result of taking a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Whether a token was available.
    pub allowed: bool,
    /// Tokens left after this request.
    pub remaining: u64,
    /// Milliseconds until the next fill (0 when the bucket is full).
    pub next_fill_ms: u64,
}

impl Bucket {
    /// Compiles a `token_bucket`; `field` names it in errors.
    pub fn compile(raw: &TokenBucket, field: &str) -> Result<Bucket, ConfigError> {
        if raw.max_tokens == 0 {
            return Err(ConfigError::invalid(
                format!("{field}.max_tokens"),
                "must be at least 1",
            ));
        }
        let per_fill = raw.tokens_per_fill.unwrap_or(1);
        if per_fill == 0 {
            return Err(ConfigError::invalid(
                format!("{field}.tokens_per_fill"),
                "must be at least 1",
            ));
        }
        let interval = u64::try_from(raw.fill_interval.get().as_millis()).unwrap_or(u64::MAX);
        if interval < MIN_FILL_INTERVAL_MS {
            return Err(ConfigError::invalid(
                format!("{field}.fill_interval"),
                format!("{} is below the minimum of 0.05s", raw.fill_interval),
            ));
        }
        if interval > MAX_FILL_INTERVAL_MS {
            return Err(ConfigError::invalid(
                format!("{field}.fill_interval"),
                format!("{} is above the maximum of 366 days", raw.fill_interval),
            ));
        }
        Ok(Bucket {
            max_tokens: u64::from(raw.max_tokens),
            tokens_per_fill: u64::from(per_fill),
            fill_interval_ms: interval,
        })
    }

    /// A full bucket as of `now`.
    pub fn fresh(&self, now: Millis) -> State {
        State {
            tokens: self.max_tokens,
            last_fill_ms: now,
        }
    }

    /// The state with the fills due by `now` applied.
    pub fn refill(&self, state: State, now: Millis) -> State {
        if now <= state.last_fill_ms {
            return state;
        }
        let fills = (now - state.last_fill_ms) / self.fill_interval_ms;
        if fills == 0 {
            return state;
        }
        let tokens = state
            .tokens
            .saturating_add(fills.saturating_mul(self.tokens_per_fill))
            .min(self.max_tokens);
        State {
            tokens,
            last_fill_ms: state.last_fill_ms + fills * self.fill_interval_ms,
        }
    }

    /// Whether the bucket is full at `now` (a full bucket holds nothing worth keeping, so its
    /// slot may go to another key).
    pub fn is_full(&self, state: State, now: Millis) -> bool {
        self.refill(state, now).tokens >= self.max_tokens
    }

    /// Refills, then takes one token if there is one.
    pub fn take(&self, state: State, now: Millis) -> (State, Taken) {
        let (state, taken, _) = self.take_up_to(state, now, 1);
        (state, taken)
    }

    /// Refills, then takes [`crate::lease::lease_size`] tokens (at least one, at most `want`;
    /// more than one only for a busy bucket that holds plenty) if there is one; the tokens taken
    /// come third. `Taken` describes the bucket after the take.
    pub fn take_up_to(&self, state: State, now: Millis, want: u64) -> (State, Taken, u64) {
        let mut state = self.refill(state, now);
        let allowed = state.tokens > 0;
        let granted = if allowed {
            let used = self.max_tokens.saturating_sub(state.tokens);
            crate::lease::lease_size(state.tokens, used, want)
        } else {
            0
        };
        state.tokens -= granted;
        let next_fill_ms = if state.tokens >= self.max_tokens {
            0
        } else {
            state
                .last_fill_ms
                .saturating_add(self.fill_interval_ms)
                .saturating_sub(now)
        };
        (
            state,
            Taken {
                allowed,
                remaining: state.tokens,
                next_fill_ms,
            },
            granted,
        )
    }

    /// The window to report in `RateLimit-Policy`, in whole seconds (at least 1).
    pub fn window_secs(&self) -> u64 {
        self.fill_interval_ms.div_ceil(1000).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(max: u64, per_fill: u64, interval: u64) -> Bucket {
        Bucket {
            max_tokens: max,
            tokens_per_fill: per_fill,
            fill_interval_ms: interval,
        }
    }

    #[test]
    fn takes_until_empty_then_refills_on_boundaries() {
        let b = bucket(3, 1, 1000);
        let mut s = b.fresh(10_000);
        for expected in [2, 1, 0] {
            let (next, taken) = b.take(s, 10_000);
            assert!(taken.allowed);
            assert_eq!(taken.remaining, expected);
            s = next;
        }
        let (s2, taken) = b.take(s, 10_999);
        assert!(!taken.allowed);
        assert_eq!(taken.next_fill_ms, 1);
        let (s3, taken) = b.take(s2, 11_000);
        assert!(taken.allowed, "one token filled at the boundary");
        assert_eq!(taken.remaining, 0);
        // Long idle: capped at max, boundary kept aligned.
        let s4 = b.refill(s3, 20_500);
        assert_eq!(
            s4,
            State {
                tokens: 3,
                last_fill_ms: 20_000
            }
        );
        assert!(b.is_full(s3, 20_500));
        assert!(!b.is_full(s3, 11_999));
    }

    #[test]
    fn fills_in_batches() {
        let b = bucket(50, 50, 3_600_000);
        let mut s = b.fresh(0);
        for _ in 0..50 {
            s = b.take(s, 1).0;
        }
        assert!(!b.take(s, 3_599_999).1.allowed);
        let (_, taken) = b.take(s, 3_600_000);
        assert_eq!((taken.allowed, taken.remaining), (true, 49));
    }

    #[test]
    fn refuses_impossible_buckets() {
        let parse = |json: &str| {
            Bucket::compile(&serde_json::from_str(json).unwrap(), "token_bucket")
                .map_err(|e| e.to_string())
        };
        assert!(
            parse(r#"{"max_tokens":0,"fill_interval":"1s"}"#)
                .unwrap_err()
                .contains("token_bucket.max_tokens")
        );
        assert!(
            parse(r#"{"max_tokens":1,"tokens_per_fill":0,"fill_interval":"1s"}"#)
                .unwrap_err()
                .contains("tokens_per_fill")
        );
        assert!(
            parse(r#"{"max_tokens":1,"fill_interval":"31708800s"}"#)
                .unwrap_err()
                .contains("above the maximum of 366 days")
        );
        assert!(parse(r#"{"max_tokens":1,"fill_interval":"31622400s"}"#).is_ok());
        assert!(
            parse(r#"{"max_tokens":1,"fill_interval":"0.01s"}"#)
                .unwrap_err()
                .contains("fill_interval")
        );
        assert!(parse(r#"{"max_tokens":1,"fill_interval":"0.05s"}"#).is_ok());
    }
}
