//! Envoy's rate limit service protocol (`envoy.service.ratelimit.v3.RateLimitService/
//! ShouldRateLimit`): the messages (field numbers as in Envoy's protos), what an answer means
//! for the request, and a cache of OVER_LIMIT answers.
//!
//! Only the fields this filter reads or writes are declared; protobuf skips the rest.

use std::collections::HashMap;

use crate::Millis;
use crate::bucket::{Bucket, Taken};
use crate::limiter::Verdict;

/// The gRPC service name.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
/// The gRPC method name.
pub const METHOD: &str = "ShouldRateLimit";

/// `envoy.service.ratelimit.v3.RateLimitRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitRequest {
    /// Domain.
    #[prost(string, tag = "1")]
    pub domain: String,
    /// Descriptors.
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    /// Hits to add (1 per request).
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitDescriptor {
    /// Entries.
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<DescriptorEntry>,
}

/// `RateLimitDescriptor.Entry`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DescriptorEntry {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `envoy.service.ratelimit.v3.RateLimitResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimitResponse {
    /// `Code`: 0 unknown, 1 OK, 2 OVER_LIMIT.
    #[prost(int32, tag = "1")]
    pub overall_code: i32,
    /// One per request descriptor.
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
    /// Headers for the client's response.
    #[prost(message, repeated, tag = "3")]
    pub response_headers_to_add: Vec<HeaderValue>,
    /// Headers for the upstream request.
    #[prost(message, repeated, tag = "4")]
    pub request_headers_to_add: Vec<HeaderValue>,
}

/// `RateLimitResponse.DescriptorStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DescriptorStatus {
    /// `Code`.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The limit that applied.
    #[prost(message, optional, tag = "2")]
    pub current_limit: Option<RateLimit>,
    /// Requests left in the window.
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    /// Time until the window resets.
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<ProtoDuration>,
}

/// `RateLimitResponse.RateLimit`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RateLimit {
    /// Requests per unit.
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    /// `Unit`: 1 second, 2 minute, 3 hour, 4 day, 5 month, 6 year, 7 week.
    #[prost(int32, tag = "2")]
    pub unit: i32,
    /// Name.
    #[prost(string, tag = "3")]
    pub name: String,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    /// Seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    /// Name.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `Code.OVER_LIMIT`.
pub const OVER_LIMIT: i32 = 2;

/// Encodes a request for these descriptors.
pub fn encode_request(domain: &str, descriptors: &[Vec<(String, String)>]) -> Vec<u8> {
    let request = RateLimitRequest {
        domain: domain.to_string(),
        descriptors: descriptors
            .iter()
            .map(|entries| RateLimitDescriptor {
                entries: entries
                    .iter()
                    .map(|(key, value)| DescriptorEntry {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect(),
            })
            .collect(),
        hits_addend: 1,
    };
    prost::Message::encode_to_vec(&request)
}

/// Decodes an answer.
pub fn decode_response(bytes: &[u8]) -> Result<RateLimitResponse, prost::DecodeError> {
    <RateLimitResponse as prost::Message>::decode(bytes)
}

fn unit_secs(unit: i32) -> u64 {
    match unit {
        2 => 60,
        3 => 3600,
        4 => 86_400,
        5 => 30 * 86_400,
        6 => 365 * 86_400,
        7 => 7 * 86_400,
        _ => 1,
    }
}

fn millis(d: Option<&ProtoDuration>) -> u64 {
    d.map_or(0, |d| {
        let secs = u64::try_from(d.seconds).unwrap_or(0);
        let nanos = u64::try_from(d.nanos).unwrap_or(0);
        secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
    })
}

/// Descriptor `i`'s status as a [`Verdict`], so it renders like a local bucket's.
pub fn verdict(name: &str, status: &DescriptorStatus) -> Verdict {
    let (quota, window) = status.current_limit.as_ref().map_or((0, 1), |l| {
        (u64::from(l.requests_per_unit), unit_secs(l.unit))
    });
    Verdict {
        name: name.to_string(),
        bucket: Bucket {
            max_tokens: quota,
            tokens_per_fill: quota,
            fill_interval_ms: window * 1000,
        },
        taken: Taken {
            allowed: status.code != OVER_LIMIT,
            remaining: u64::from(status.limit_remaining),
            next_fill_ms: millis(status.duration_until_reset.as_ref()),
        },
        shadow: false,
        overflow: false,
    }
}

/// Entries cached at most, per worker.
pub const OVER_LIMIT_CACHE_SIZE: usize = 10_000;

/// OVER_LIMIT answers remembered until their reset, so a flood of refused requests does not
/// turn into a flood of calls to the service.
#[derive(Debug, Default)]
pub struct OverLimitCache {
    until: HashMap<String, (Millis, Verdict)>,
}

/// The cache key of a descriptor's entries.
pub fn cache_key(entries: &[(String, String)]) -> String {
    let mut key = String::new();
    for (k, v) in entries {
        key.push_str(k);
        key.push('\u{1f}');
        key.push_str(v);
        key.push('\u{1e}');
    }
    key
}

impl OverLimitCache {
    /// The remembered refusal of this descriptor, if still in force.
    pub fn get(&mut self, key: &str, now: Millis) -> Option<Verdict> {
        match self.until.get(key) {
            Some((until, verdict)) if *until > now => {
                let mut v = verdict.clone();
                v.taken.next_fill_ms = until - now;
                Some(v)
            }
            Some(_) => {
                self.until.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers a refusal until its reset.
    pub fn insert(&mut self, key: String, verdict: Verdict, now: Millis) {
        if verdict.taken.next_fill_ms == 0 {
            return;
        }
        if self.until.len() >= OVER_LIMIT_CACHE_SIZE {
            self.until.retain(|_, (until, _)| *until > now);
            if self.until.len() >= OVER_LIMIT_CACHE_SIZE {
                self.until.clear();
            }
        }
        let until = now.saturating_add(verdict.taken.next_fill_ms);
        self.until.insert(key, (until, verdict));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let bytes = encode_request("d", &[vec![("user".into(), "alice".into())]]);
        let decoded = <RateLimitRequest as prost::Message>::decode(&bytes[..]).unwrap();
        assert_eq!(decoded.domain, "d");
        assert_eq!(decoded.hits_addend, 1);
        assert_eq!(decoded.descriptors[0].entries[0].value, "alice");
    }

    #[test]
    fn answers_become_verdicts_and_refusals_are_cached() {
        let status = DescriptorStatus {
            code: OVER_LIMIT,
            current_limit: Some(RateLimit {
                requests_per_unit: 10,
                unit: 2,
                name: String::new(),
            }),
            limit_remaining: 0,
            duration_until_reset: Some(ProtoDuration {
                seconds: 30,
                nanos: 500_000_000,
            }),
        };
        let v = verdict("per_user", &status);
        assert!(!v.taken.allowed);
        assert_eq!((v.bucket.max_tokens, v.bucket.window_secs()), (10, 60));
        assert_eq!(v.taken.next_fill_ms, 30_500);
        let mut cache = OverLimitCache::default();
        cache.insert("k".into(), v, 1_000);
        assert_eq!(
            cache.get("k", 2_000).map(|v| v.taken.next_fill_ms),
            Some(29_500)
        );
        assert!(cache.get("k", 31_500).is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10_000))]

        /// Whatever the service (or something posing as it) answers: no panic, and verdicts
        /// and cache entries of bounded number.
        #[test]
        fn any_answer_is_safe(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            fields in proptest::collection::vec(proptest::prelude::any::<(i32, u32, i32, u32, i64, i32)>(), 0..4),
            structured in proptest::prelude::any::<bool>(),
            now in proptest::prelude::any::<u64>(),
        ) {
            // Either noise, or a well-formed answer with any numbers in it.
            let bytes = if structured {
                prost::Message::encode_to_vec(&RateLimitResponse {
                    overall_code: OVER_LIMIT,
                    statuses: fields
                        .iter()
                        .map(|&(code, quota, unit, remaining, seconds, nanos)| DescriptorStatus {
                            code,
                            current_limit: Some(RateLimit { requests_per_unit: quota, unit, name: String::new() }),
                            limit_remaining: remaining,
                            duration_until_reset: Some(ProtoDuration { seconds, nanos }),
                        })
                        .collect(),
                    ..Default::default()
                })
            } else {
                noise
            };
            let Ok(answer) = decode_response(&bytes) else {
                return Ok(());
            };
            let mut cache = OverLimitCache::default();
            for (i, status) in answer.statuses.iter().enumerate() {
                let v = verdict("d", status);
                let _ = crate::headers::render(&crate::limiter::Decision { verdicts: vec![v.clone()], ..Default::default() }, true);
                cache.insert(format!("k{i}"), v, now);
                let _ = cache.get(&format!("k{i}"), now);
            }
            proptest::prop_assert!(answer.statuses.len() <= bytes.len());
            proptest::prop_assert!(cache.until.len() <= answer.statuses.len());
        }
    }
}
