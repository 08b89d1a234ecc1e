//! The compiled filter: from a request to a [`Decision`].

use crate::bucket::{Bucket, Taken};
use crate::config::{Overflow, RateLimitConfig};
use crate::descriptor::{Descriptor, GlobalDescriptor, Request};
use crate::table::{SharedStore, Table, Take};
use crate::{ConfigError, Millis};

/// Live keys kept when `max_keys` is not set.
pub const DEFAULT_MAX_KEYS: u32 = 10_000;
/// The name the default `token_bucket` reports under.
pub const DEFAULT_NAME: &str = "default";

/// What one bucket said about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Descriptor name (or [`DEFAULT_NAME`]).
    pub name: String,
    /// The bucket's parameters.
    pub bucket: Bucket,
    /// The outcome of taking a token.
    pub taken: Taken,
    /// The descriptor only counts.
    pub shadow: bool,
    /// The key found no slot and got the overflow behaviour.
    pub overflow: bool,
}

/// Everything the buckets said about a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// One per applying descriptor, in configuration order.
    pub verdicts: Vec<Verdict>,
    /// The store kept refusing for this many buckets (they let the request through).
    pub store_errors: u32,
}

impl Decision {
    /// The verdict that refuses the request: the first non-shadow bucket that is empty.
    pub fn limited_by(&self) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| !v.shadow && !v.taken.allowed)
    }

    /// Shadow descriptors that would have refused the request.
    pub fn shadow_limited(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts
            .iter()
            .filter(|v| v.shadow && !v.taken.allowed)
    }

    /// The verdict headers report: the limiting one, else the non-shadow bucket closest to
    /// empty.
    pub fn reported(&self) -> Option<&Verdict> {
        self.limited_by().or_else(|| {
            self.verdicts
                .iter()
                .filter(|v| !v.shadow)
                .min_by_key(|v| v.taken.remaining)
        })
    }
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Limiter {
    default: Option<Bucket>,
    descriptors: Vec<Descriptor>,
    table: Table,
    prefix: String,
    default_slot: String,
    overflow: Overflow,
    /// HTTP status of a limited response.
    pub status: u32,
    /// Add `RateLimit` headers to allowed responses.
    pub headers_on_allowed: bool,
    /// Add the `X-RateLimit-*` headers too.
    pub legacy_headers: bool,
    trusted_hops: u32,
    /// `stat_prefix`.
    pub stat_prefix: Option<String>,
    /// Global limiting, when configured.
    pub global: Option<Global>,
}

/// Compiled global limiting settings.
#[derive(Debug, Clone)]
pub struct Global {
    /// Envoy cluster of the rate limit service.
    pub cluster: String,
    /// Domain.
    pub domain: String,
    /// Call timeout.
    pub timeout: std::time::Duration,
    /// Refuse when the service cannot answer.
    pub failure_mode_deny: bool,
    /// Descriptors.
    pub descriptors: Vec<GlobalDescriptor>,
}

/// Default timeout of a call to the rate limit service (as Envoy's `ratelimit` filter).
pub const DEFAULT_RLS_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(20);

impl Limiter {
    /// Parses and compiles the plugin configuration. `store_prefix` namespaces this
    /// configuration's buckets in the shared store (e.g. a hash of the configuration), so two
    /// filters with different limits never share a bucket.
    pub fn from_json(json: &[u8], store_prefix: &str) -> Result<Limiter, ConfigError> {
        Self::new(&RateLimitConfig::from_json(json)?, store_prefix)
    }

    /// Compiles a parsed configuration.
    pub fn new(raw: &RateLimitConfig, store_prefix: &str) -> Result<Limiter, ConfigError> {
        let default = raw
            .token_bucket
            .as_ref()
            .map(|b| Bucket::compile(b, "token_bucket"))
            .transpose()?;
        let descriptors: Vec<Descriptor> = raw
            .descriptors
            .iter()
            .enumerate()
            .map(|(i, d)| Descriptor::compile(d, i))
            .collect::<Result<_, _>>()?;
        let global = raw.global.as_ref().map(compile_global).transpose()?;
        if default.is_none() && descriptors.is_empty() && global.is_none() {
            return Err(ConfigError::invalid(
                "token_bucket",
                "set token_bucket, descriptors or global",
            ));
        }
        for (i, d) in descriptors.iter().enumerate() {
            if d.name == DEFAULT_NAME || descriptors[..i].iter().any(|o| o.name == d.name) {
                return Err(ConfigError::invalid(
                    format!("descriptors[{i}].name"),
                    format!(
                        "{:?} is used twice (or is the reserved \"default\")",
                        d.name
                    ),
                ));
            }
        }
        let max_keys = raw.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
        if max_keys == 0 {
            return Err(ConfigError::invalid("max_keys", "must be at least 1"));
        }
        let status = u32::from(raw.status.unwrap_or(429));
        if !(400..=599).contains(&status) {
            return Err(ConfigError::invalid(
                "status",
                "must be a 4xx or 5xx status",
            ));
        }
        Ok(Limiter {
            default,
            descriptors,
            table: Table::new(format!("{store_prefix}|slot|"), max_keys.saturating_mul(2)),
            prefix: store_prefix.to_string(),
            default_slot: format!("{store_prefix}|default"),
            overflow: raw.overflow,
            status,
            headers_on_allowed: raw.headers_on_allowed.unwrap_or(true),
            legacy_headers: raw.legacy_headers,
            trusted_hops: raw.xff_trusted_hops,
            stat_prefix: raw.stat_prefix.clone(),
            global,
        })
    }

    /// The descriptors to send to the rate limit service for this request: `(name, entries)`.
    pub fn global_descriptors(
        &self,
        request: &dyn Request,
    ) -> Vec<(String, Vec<(String, String)>)> {
        self.global.as_ref().map_or_else(Vec::new, |g| {
            g.descriptors
                .iter()
                .filter_map(|d| Some((d.name.clone(), d.entries(request, self.trusted_hops)?)))
                .collect()
        })
    }

    /// Descriptor names (local and global), for registering stats.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.descriptors.iter().map(|d| d.name.clone()).collect();
        if let Some(g) = &self.global {
            names.extend(g.descriptors.iter().map(|d| d.name.clone()));
        }
        if self.default.is_some() {
            names.insert(0, DEFAULT_NAME.to_string());
        }
        names
    }

    /// Takes a token from every bucket that applies to the request.
    pub fn check(&self, request: &dyn Request, store: &dyn SharedStore, now: Millis) -> Decision {
        let mut decision = Decision::default();
        if let Some(bucket) = &self.default {
            // One bucket for every request, like local_ratelimit's: its own fixed key.
            self.record(&mut decision, DEFAULT_NAME, bucket, false, || {
                self.table
                    .take_in(store, &self.default_slot, DEFAULT_NAME, bucket, now)
            });
        }
        for d in &self.descriptors {
            let Some(key) = d.key(request, self.trusted_hops) else {
                continue;
            };
            let taken = self.table.take(store, &key, &d.bucket, now);
            let taken = match (taken, self.overflow) {
                (Take::Overflow, Overflow::SharedBucket) => {
                    let slot = format!("{}|overflow|{}", self.prefix, d.name);
                    self.table
                        .take_in(store, &slot, &d.name, &d.bucket, now)
                        .into_overflow()
                }
                (other, _) => other,
            };
            self.record(&mut decision, &d.name, &d.bucket, d.shadow, || taken);
        }
        decision
    }

    fn record(
        &self,
        decision: &mut Decision,
        name: &str,
        bucket: &Bucket,
        shadow: bool,
        take: impl FnOnce() -> Take,
    ) {
        let (taken, overflow) = match take() {
            Take::Taken(t) => (t, false),
            Take::OverflowTaken(t) => (t, true),
            Take::Overflow => (
                Taken {
                    allowed: false,
                    remaining: 0,
                    next_fill_ms: bucket.fill_interval_ms,
                },
                true,
            ),
            Take::StoreError => {
                // Fail open: a store that refuses must not take the service down.
                decision.store_errors += 1;
                return;
            }
        };
        decision.verdicts.push(Verdict {
            name: name.to_string(),
            bucket: *bucket,
            taken,
            shadow,
            overflow,
        });
    }
}

fn compile_global(raw: &crate::config::Global) -> Result<Global, ConfigError> {
    if raw.cluster.is_empty() {
        return Err(ConfigError::invalid(
            "global.cluster",
            "must name an Envoy cluster",
        ));
    }
    if raw.domain.is_empty() {
        return Err(ConfigError::invalid("global.domain", "must not be empty"));
    }
    if raw.descriptors.is_empty() {
        return Err(ConfigError::invalid(
            "global.descriptors",
            "needs at least one descriptor",
        ));
    }
    let timeout = raw.timeout.map_or(DEFAULT_RLS_TIMEOUT, |t| t.get());
    if timeout.is_zero() {
        return Err(ConfigError::invalid("global.timeout", "must be above zero"));
    }
    Ok(Global {
        cluster: raw.cluster.clone(),
        domain: raw.domain.clone(),
        timeout,
        failure_mode_deny: raw.failure_mode_deny,
        descriptors: raw
            .descriptors
            .iter()
            .enumerate()
            .map(|(i, d)| GlobalDescriptor::compile(d, i))
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::table::MemoryStore;

    struct Req(HashMap<&'static str, &'static str>);

    impl Request for Req {
        fn header(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
        fn source_address(&self) -> Option<String> {
            Some("192.0.2.1:4000".into())
        }
        fn jwt_payload(&self, _: &str) -> Option<String> {
            None
        }
    }

    fn limiter(json: &str) -> Limiter {
        Limiter::from_json(json.as_bytes(), "t").unwrap()
    }

    #[test]
    fn default_bucket_and_descriptors_with_fake_clock() {
        let l = limiter(
            r#"{"token_bucket":{"max_tokens":3,"tokens_per_fill":3,"fill_interval":"1s"},
                "descriptors":[{"name":"per_user","entries":[{"request_header":{"header_name":"x-user","descriptor_key":"u"}}],
                                "token_bucket":{"max_tokens":1,"fill_interval":"1s"}}]}"#,
        );
        let store = MemoryStore::default();
        let alice = Req([("x-user", "alice")].into());
        let anon = Req(HashMap::new());
        let first = l.check(&alice, &store, 0);
        assert!(first.limited_by().is_none());
        assert_eq!(first.verdicts.len(), 2);
        let second = l.check(&alice, &store, 1);
        assert_eq!(
            second.limited_by().map(|v| v.name.as_str()),
            Some("per_user")
        );
        // The default bucket still had a token and gave it (as Envoy's filters do: every
        // applicable bucket is charged).
        assert!(l.check(&anon, &store, 2).limited_by().is_none());
        assert_eq!(
            l.check(&anon, &store, 3)
                .limited_by()
                .map(|v| v.name.as_str()),
            Some("default")
        );
        // A second later both have refilled.
        assert!(l.check(&alice, &store, 1000).limited_by().is_none());
    }

    #[test]
    fn shadow_counts_without_limiting() {
        let l = limiter(
            r#"{"descriptors":[{"name":"trial","shadow":true,"entries":[{"generic_key":{"descriptor_value":"x"}}],
                                "token_bucket":{"max_tokens":1,"fill_interval":"60s"}}]}"#,
        );
        let store = MemoryStore::default();
        let r = Req(HashMap::new());
        assert_eq!(l.check(&r, &store, 0).shadow_limited().count(), 0);
        let d = l.check(&r, &store, 1);
        assert!(d.limited_by().is_none());
        assert_eq!(d.shadow_limited().count(), 1);
    }

    #[test]
    fn overflow_behaviours() {
        let cfg = |overflow: &str| {
            format!(
                r#"{{"max_keys":1,"overflow":"{overflow}","descriptors":[{{"name":"ip","entries":[{{"request_header":{{"header_name":"x-ip","descriptor_key":"ip"}}}}],
                    "token_bucket":{{"max_tokens":2,"fill_interval":"60s"}}}}]}}"#
            )
        };
        let allowed = |l: &Limiter, store: &MemoryStore, ip: &str| {
            let ip: &'static str = Box::leak(ip.to_string().into_boxed_str());
            l.check(&Req([("x-ip", ip)].into()), store, 0)
                .limited_by()
                .is_none()
        };
        // max_keys 1 → 2 slots: two keys fit, a third finds no room.
        let store = MemoryStore::default();
        let deny = limiter(&cfg("deny"));
        assert!(allowed(&deny, &store, "a") && allowed(&deny, &store, "b"));
        let d = deny.check(&Req([("x-ip", "c")].into()), &store, 0);
        assert!(d.limited_by().is_some_and(|v| v.overflow));

        let store = MemoryStore::default();
        let shared = limiter(&cfg("shared_bucket"));
        assert!(allowed(&shared, &store, "a") && allowed(&shared, &store, "b"));
        let admitted = (0..5)
            .filter(|i| allowed(&shared, &store, &format!("n{i}")))
            .count();
        assert_eq!(admitted, 2, "newcomers share one overflow bucket of 2");
    }

    #[test]
    fn config_errors_name_the_field() {
        let cases = [
            (r#"{}"#, "token_bucket"),
            (
                r#"{"token_bucket":{"max_tokens":0,"fill_interval":"1s"}}"#,
                "token_bucket.max_tokens",
            ),
            (
                r#"{"token_bucket":{"max_tokens":1,"fill_interval":"0.001s"}}"#,
                "token_bucket.fill_interval",
            ),
            (
                r#"{"token_bucket":{"max_tokens":1,"fill_interval":"1s"},"status":200}"#,
                "status",
            ),
            (
                r#"{"token_bucket":{"max_tokens":1,"fill_interval":"1s"},"max_keys":0}"#,
                "max_keys",
            ),
            (
                r#"{"token_bucket":{"max_tokens":1,"fill_interval":"1s"},"bogus":1}"#,
                "bogus",
            ),
            (
                r#"{"token_bucket":{"max_tokens":1,"fill_interval":"1s","extra":2}}"#,
                "extra",
            ),
            (
                r#"{"descriptors":[{"name":"a","entries":[{"generic_key":{"descriptor_value":"x"}}],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}},
                                {"name":"a","entries":[{"generic_key":{"descriptor_value":"y"}}],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}}]}"#,
                "descriptors[1].name",
            ),
        ];
        for (json, field) in cases {
            let err = Limiter::from_json(json.as_bytes(), "t")
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{json}: {err}");
        }
    }
}
