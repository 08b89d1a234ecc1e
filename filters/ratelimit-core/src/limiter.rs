//! The compiled filter: from a request to a [`Decision`].

use crate::bucket::{Bucket, Taken};
use crate::config::{Overflow, RateLimitConfig};
use crate::descriptor::{self, Descriptor, GlobalDescriptor, Options, Request, Unreadable};
use crate::lease::Leases;
use crate::table::{Owner, Salt, SharedStore, Table, Take, fingerprint};
use crate::{ConfigError, Millis};

/// Live keys kept when `max_keys` is not set.
pub const DEFAULT_MAX_KEYS: u32 = 10_000;
/// The name the default `token_bucket` reports under.
pub const DEFAULT_NAME: &str = "default";
/// Overflow buckets per descriptor: a key without a slot shares one, chosen by its salted
/// digest, with about 1/16 of the other keys without a slot.
pub const OVERFLOW_GROUPS: u64 = 16;
/// What a refusal for a failure (store, attribute) tells the client to wait.
pub const RETRY_AFTER_FAILURE_MS: u64 = 1_000;

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
    /// The store kept refusing for this many buckets (each refuses the request, unless shadow).
    pub store_errors: u32,
    /// The host failed to read an attribute this many descriptors needed (each refuses the
    /// request, unless shadow).
    pub attribute_errors: u32,
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
    default: Option<(Bucket, Owner)>,
    descriptors: Vec<Local>,
    table: Table,
    max_keys: u32,
    default_slot: String,
    overflow: Overflow,
    /// HTTP status of a limited response.
    pub status: u32,
    /// Add `RateLimit` headers to allowed responses.
    pub headers_on_allowed: bool,
    /// Add the `X-RateLimit-*` headers too.
    pub legacy_headers: bool,
    options: Options,
    /// `stat_prefix`.
    pub stat_prefix: Option<String>,
    /// Global limiting, when configured.
    pub global: Option<Global>,
}

/// A local descriptor with what its keys share when the table has no room for them.
#[derive(Debug, Clone)]
struct Local {
    descriptor: Descriptor,
    /// One slot per overflow group.
    overflow_slots: Vec<String>,
    overflow_owner: Owner,
    overflow_bucket: Bucket,
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
    /// Parses and compiles the plugin configuration. `store_prefix` namespaces the filter's
    /// buckets in the shared store: it should name the filter, not its configuration, so a new
    /// configuration reuses the table (buckets of unchanged descriptors keep their counts,
    /// the others' slots are reclaimed as they refill). `salt` keys the digests of bucket keys
    /// ([`crate::table::load_or_create_salt`]).
    pub fn from_json(json: &[u8], store_prefix: &str, salt: Salt) -> Result<Limiter, ConfigError> {
        Self::new(&RateLimitConfig::from_json(json)?, store_prefix, salt)
    }

    /// Compiles a parsed configuration (see [`Limiter::from_json`]).
    pub fn new(
        raw: &RateLimitConfig,
        store_prefix: &str,
        salt: Salt,
    ) -> Result<Limiter, ConfigError> {
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
        let overflow_bucket = raw
            .overflow_bucket
            .as_ref()
            .map(|b| Bucket::compile(b, "overflow_bucket"))
            .transpose()?;
        let max_value_bytes = raw
            .max_value_bytes
            .map_or(descriptor::DEFAULT_MAX_VALUE_BYTES, |m| m as usize);
        if !(1..=MAX_VALUE_BYTES_LIMIT).contains(&max_value_bytes) {
            return Err(ConfigError::invalid(
                "max_value_bytes",
                format!("must be between 1 and {MAX_VALUE_BYTES_LIMIT}"),
            ));
        }
        let ipv6_prefix_len = raw
            .ipv6_prefix_len
            .unwrap_or(descriptor::DEFAULT_IPV6_PREFIX_LEN);
        if ipv6_prefix_len > 128 {
            return Err(ConfigError::invalid(
                "ipv6_prefix_len",
                "must be at most 128",
            ));
        }
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
        let table = Table::new(
            format!("{store_prefix}|slot|"),
            max_keys.saturating_mul(2),
            salt,
        );
        let default = default.map(|b| (b, table.owner(fingerprint(DEFAULT_NAME), "")));
        if let Some(o) = &overflow_bucket
            && let Some((i, _)) = descriptors
                .iter()
                .enumerate()
                .find(|(_, d)| gives_more(o, &d.bucket))
        {
            return Err(ConfigError::invalid(
                "overflow_bucket",
                format!(
                    "gives a key without a slot more than its own bucket (descriptors[{i}]): \
                     at most its max_tokens, and tokens_per_fill per fill_interval"
                ),
            ));
        }
        let descriptors = descriptors
            .into_iter()
            .map(|d| Local {
                overflow_slots: (0..OVERFLOW_GROUPS)
                    .map(|g| format!("{store_prefix}|overflow|{}|{g}", d.name))
                    .collect(),
                overflow_owner: table.owner(d.fingerprint, "|overflow"),
                // The descriptor's own bucket, fill interval included: a key without a slot
                // never gets more than its quota per interval from its group.
                overflow_bucket: overflow_bucket.unwrap_or(d.bucket),
                descriptor: d,
            })
            .collect();
        Ok(Limiter {
            default,
            descriptors,
            table,
            max_keys,
            default_slot: format!("{store_prefix}|default"),
            overflow: raw.overflow,
            status,
            headers_on_allowed: raw.headers_on_allowed.unwrap_or(true),
            legacy_headers: raw.legacy_headers,
            options: Options {
                trusted_hops: raw.xff_trusted_hops,
                max_value_bytes,
                ipv6_prefix_len,
            },
            stat_prefix: raw.stat_prefix.clone(),
            global,
        })
    }

    /// The descriptors to send to the rate limit service for this request: `(name, entries)`;
    /// `Err` when the host failed to read an attribute one of them needs.
    pub fn global_descriptors(
        &self,
        request: &dyn Request,
    ) -> Result<Vec<(String, descriptor::Entries)>, Unreadable> {
        let mut out = Vec::new();
        for d in self.global.iter().flat_map(|g| &g.descriptors) {
            if let Some(entries) = d.entries(request, &self.options)? {
                out.push((d.name.clone(), entries));
            }
        }
        Ok(out)
    }

    /// Empty lease state for one worker ([`Limiter::check_with`]): as many keys as `max_keys`
    /// plus the default bucket, up to [`crate::lease::MAX_LEASE_KEYS`].
    pub fn leases(&self) -> Leases {
        Leases::new(
            usize::try_from(self.max_keys)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
                .min(crate::lease::MAX_LEASE_KEYS),
        )
    }

    /// Descriptor names (local and global), for registering stats.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .descriptors
            .iter()
            .map(|d| d.descriptor.name.clone())
            .collect();
        if let Some(g) = &self.global {
            names.extend(g.descriptors.iter().map(|d| d.name.clone()));
        }
        if self.default.is_some() {
            names.insert(0, DEFAULT_NAME.to_string());
        }
        names
    }

    /// Takes a token from every bucket that applies to the request. A bucket the store kept
    /// refusing, or a descriptor whose attributes the host could not read, refuses the request
    /// (unless shadow): a limiter that cannot count must not let everything through.
    pub fn check(&self, request: &dyn Request, store: &dyn SharedStore, now: Millis) -> Decision {
        self.check_with(request, store, &mut Leases::new(0), now)
    }

    /// [`Limiter::check`] for a worker that keeps `leases`: a busy key's tokens are taken from
    /// the shared store several at a time and handed out from the worker (see
    /// [`crate::lease`]: never more admitted, a bounded number of tokens left unused).
    pub fn check_with(
        &self,
        request: &dyn Request,
        store: &dyn SharedStore,
        leases: &mut Leases,
        now: Millis,
    ) -> Decision {
        let mut decision = Decision::default();
        if let Some((bucket, owner)) = &self.default {
            // One bucket for every request, like local_ratelimit's: its own fixed key.
            let taken = leased(leases, DEFAULT_NAME, bucket, now, |want| {
                self.table
                    .take_in_up_to(store, &self.default_slot, *owner, bucket, now, want)
            });
            record(&mut decision, DEFAULT_NAME, bucket, false, taken);
        }
        for local in &self.descriptors {
            let d = &local.descriptor;
            let key = match d.key(request, &self.options) {
                Ok(Some(key)) => key,
                Ok(None) => continue,
                Err(Unreadable) => {
                    decision.attribute_errors += 1;
                    decision
                        .verdicts
                        .push(failure(&d.name, &d.bucket, d.shadow));
                    continue;
                }
            };
            let owner = || self.table.owner(d.fingerprint, &key);
            let own = leased(leases, &key, &d.bucket, now, |want| {
                self.table.take_up_to(store, owner(), &d.bucket, now, want)
            });
            let taken = match (own, self.overflow) {
                (Take::Overflow, Overflow::SharedBucket) => self
                    .table
                    .take_in(
                        store,
                        overflow_group(&local.overflow_slots, &owner()),
                        local.overflow_owner,
                        &local.overflow_bucket,
                        now,
                    )
                    .into_overflow(),
                (other, _) => other,
            };
            let bucket = match taken {
                Take::OverflowTaken(_) => &local.overflow_bucket,
                _ => &d.bucket,
            };
            record(&mut decision, &d.name, bucket, d.shadow, taken);
        }
        decision
    }
}

/// A token for bucket key `key`: from the worker's lease when it holds one, else from the shared
/// store through `shared` (which takes up to the tokens it is given, for the next lease).
fn leased(
    leases: &mut Leases,
    key: &str,
    bucket: &Bucket,
    now: Millis,
    shared: impl FnOnce(u64) -> (Take, u64),
) -> Take {
    let cap = match leases.take(key, bucket, now) {
        Ok(taken) => return Take::Taken(taken),
        Err(cap) => cap,
    };
    match shared(cap) {
        (Take::Taken(taken), granted) => {
            Take::Taken(leases.record(key, bucket, now, granted, taken))
        }
        (other, _) => other,
    }
}

/// Whether `overflow` would give a key more than `own`: more tokens at once, or faster.
fn gives_more(overflow: &Bucket, own: &Bucket) -> bool {
    let rate =
        |b: &Bucket, per: &Bucket| u128::from(b.tokens_per_fill) * u128::from(per.fill_interval_ms);
    overflow.max_tokens > own.max_tokens || rate(overflow, own) > rate(own, overflow)
}

/// The overflow slot of `owner`'s group (from bits of the salted digest the home slot does not
/// use).
fn overflow_group<'a>(slots: &'a [String], owner: &Owner) -> &'a str {
    let mut bits = [0u8; 8];
    bits.copy_from_slice(&owner.digest[..8]);
    let len = u64::try_from(slots.len()).unwrap_or(1).max(1);
    usize::try_from(u64::from_le_bytes(bits) % len)
        .ok()
        .and_then(|g| slots.get(g))
        .map_or("", String::as_str)
}

/// The verdict of a bucket that could not be counted: refused, retry in a second.
fn failure(name: &str, bucket: &Bucket, shadow: bool) -> Verdict {
    Verdict {
        name: name.to_string(),
        bucket: *bucket,
        taken: Taken {
            allowed: false,
            remaining: 0,
            next_fill_ms: RETRY_AFTER_FAILURE_MS,
        },
        shadow,
        overflow: false,
    }
}

fn record(decision: &mut Decision, name: &str, bucket: &Bucket, shadow: bool, take: Take) {
    let (taken, overflow) = match take {
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
            // Fail closed: the request is refused and counted (`store_errors`).
            decision.store_errors += 1;
            decision.verdicts.push(failure(name, bucket, shadow));
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

/// The largest `max_value_bytes` accepted.
pub const MAX_VALUE_BYTES_LIMIT: usize = 16_384;

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
    use meshgate_filter_common::store::testing::MemoryStore;

    struct Req(HashMap<&'static str, &'static str>);

    impl Request for Req {
        fn header(&self, name: &str) -> Result<Option<String>, Unreadable> {
            Ok(self.0.get(name).map(|v| v.to_string()))
        }
        fn source_address(&self) -> Result<Option<String>, Unreadable> {
            Ok(Some("192.0.2.1:4000".into()))
        }
        fn jwt_payload(&self, _: &str) -> Result<Option<String>, Unreadable> {
            Ok(None)
        }
    }

    fn limiter(json: &str) -> Limiter {
        Limiter::from_json(json.as_bytes(), "t", [0; 16]).unwrap()
    }

    fn user(name: &'static str) -> Req {
        Req([("x-user", name)].into())
    }

    const PER_USER: &str = r#"{"name":"per_user","entries":[{"request_header":{"header_name":"x-user","descriptor_key":"u"}}],
                               "token_bucket":{"max_tokens":2,"fill_interval":"3600s"}}"#;

    /// A store another worker always writes to between our read and our write.
    struct Contended(MemoryStore);

    impl SharedStore for Contended {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.0.get(key)
        }
        fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), crate::table::SetError> {
            Err(crate::table::SetError::CasMismatch)
        }
    }

    #[test]
    fn a_bucket_that_cannot_be_counted_refuses_the_request() {
        let l = limiter(&format!(
            r#"{{"token_bucket":{{"max_tokens":100,"fill_interval":"1s"}},"descriptors":[{PER_USER}]}}"#
        ));
        let d = l.check(&user("alice"), &Contended(MemoryStore::default()), 0);
        assert_eq!(d.store_errors, 2);
        let refused = d
            .limited_by()
            .map(|v| (v.name.as_str(), v.taken.next_fill_ms));
        assert_eq!(refused, Some(("default", RETRY_AFTER_FAILURE_MS)));
    }

    #[test]
    fn an_attribute_the_host_cannot_read_refuses_the_request() {
        struct Broken;
        impl Request for Broken {
            fn header(&self, _: &str) -> Result<Option<String>, Unreadable> {
                Err(Unreadable)
            }
            fn source_address(&self) -> Result<Option<String>, Unreadable> {
                Err(Unreadable)
            }
            fn jwt_payload(&self, _: &str) -> Result<Option<String>, Unreadable> {
                Err(Unreadable)
            }
        }
        let l = limiter(&format!(r#"{{"descriptors":[{PER_USER}]}}"#));
        let d = l.check(&Broken, &MemoryStore::default(), 0);
        assert_eq!(d.attribute_errors, 1);
        assert_eq!(d.limited_by().map(|v| v.name.as_str()), Some("per_user"));
        let global = limiter(
            r#"{"global":{"cluster":"c","domain":"d","descriptors":[{"name":"g","entries":[{"remote_address":{}}]}]}}"#,
        );
        assert_eq!(global.global_descriptors(&Broken), Err(Unreadable));
    }

    #[test]
    fn a_flood_of_new_keys_neither_resets_a_limit_nor_locks_new_clients_out() {
        // max_keys 1 → 2 slots.
        let l = limiter(&format!(r#"{{"max_keys":1,"descriptors":[{PER_USER}]}}"#));
        let store = MemoryStore::default();
        let allowed = |r: &Req, now| l.check(r, &store, now).limited_by().is_none();
        assert!(allowed(&user("victim"), 0) && allowed(&user("victim"), 0));
        assert!(!allowed(&user("victim"), 0));
        // A flood of keys, one request each: every one is a new key with a quota of its own.
        for i in 0..100 {
            let key: &'static str = Box::leak(format!("attacker-{i}").into_boxed_str());
            let _ = allowed(&user(key), 10);
        }
        // The victim's bucket was not reset by the flood.
        assert!(!allowed(&user("victim"), 20));
        // A new client within the same second gets a bucket of its own (a slot whose bucket
        // gave one token is reclaimed), not a share of what the flood drained.
        let newcomer = l.check(&user("newcomer"), &store, 20);
        assert!(newcomer.limited_by().is_none());
        assert!(!newcomer.verdicts[0].overflow);
    }

    #[test]
    fn a_key_without_a_slot_gets_at_most_its_quota_per_interval() {
        let cfg = |overflow: &str| {
            format!(r#"{{"max_keys":1,"overflow":"{overflow}","descriptors":[{PER_USER}]}}"#)
        };
        let l = limiter(&cfg("shared_bucket"));
        let store = MemoryStore::default();
        // Two keys empty their buckets: both slots are pinned for the hour.
        for key in ["a", "b"] {
            for _ in 0..2 {
                assert!(l.check(&user(key), &store, 0).limited_by().is_none());
            }
        }
        // Another key, one request every 100 ms for 10 s: 2 an hour, its own quota.
        let admitted = (0..100u64)
            .filter(|i| {
                let d = l.check(&user("mallory"), &store, 10 + i * 100);
                assert!(d.verdicts[0].overflow);
                d.limited_by().is_none()
            })
            .count();
        assert_eq!(admitted, 2, "a key without a slot got more than its quota");
        // Other keys without a slot share with about 1/16 of the others, not with mallory.
        let served = (0..20)
            .filter(|i| {
                let key: &'static str = Box::leak(format!("new-{i}").into_boxed_str());
                l.check(&user(key), &store, 10_000).limited_by().is_none()
            })
            .count();
        assert!(served >= 15, "{served} of 20 new keys served");
        // With overflow: deny, keys without a slot are refused.
        let deny = limiter(&cfg("deny"));
        let store = MemoryStore::default();
        for key in ["a", "b"] {
            for _ in 0..2 {
                let _ = deny.check(&user(key), &store, 0);
            }
        }
        let d = deny.check(&user("mallory"), &store, 10);
        assert!(d.limited_by().is_some_and(|v| v.overflow));
    }

    #[test]
    fn a_new_configuration_reuses_the_table_and_keeps_unchanged_buckets() {
        let store = MemoryStore::default();
        let before = limiter(&format!(r#"{{"max_keys":50,"descriptors":[{PER_USER}]}}"#));
        for _ in 0..3 {
            let _ = before.check(&user("alice"), &store, 0);
        }
        for i in 0..40 {
            let key: &'static str = Box::leak(format!("user-{i}").into_boxed_str());
            let _ = before.check(&user(key), &store, 0);
        }
        let entries = store.len();
        // Another descriptor added, another capacity for per_user: same descriptor, same keys.
        let after = limiter(&format!(
            r#"{{"max_keys":50,"stat_prefix":"v2","descriptors":[{},
                {{"name":"per_path","entries":[{{"path":{{"prefix":"/"}}}}],"token_bucket":{{"max_tokens":9,"fill_interval":"1s"}}}}]}}"#,
            PER_USER.replace(r#""max_tokens":2"#, r#""max_tokens":3"#)
        ));
        let d = after.check(&user("alice"), &store, 10);
        assert_eq!(
            d.limited_by()
                .map(|v| (v.name.as_str(), v.bucket.max_tokens)),
            Some(("per_user", 3)),
            "a new configuration does not reset alice's bucket"
        );
        let bob = after.check(&user("user-0"), &store, 10);
        assert_eq!(bob.verdicts[0].taken.remaining, 0, "user-0 had 1 left");
        assert_eq!(store.len(), entries, "the same slots, no second table");
        // A descriptor whose entries changed owns none of the old buckets: alice starts anew.
        let rekeyed = limiter(
            r#"{"max_keys":50,"descriptors":[{"name":"per_user","entries":[{"request_header":{"header_name":"x-user","descriptor_key":"u"}},{"method":{}}],
                 "token_bucket":{"max_tokens":2,"fill_interval":"3600s"}}]}"#,
        );
        let alice = Req([("x-user", "alice"), (":method", "GET")].into());
        assert!(rekeyed.check(&alice, &store, 20).limited_by().is_none());
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
        // max_keys 1 → 2 slots: two keys fit (here emptying their buckets, so their slots
        // cannot be reclaimed), a third finds no room.
        let store = MemoryStore::default();
        let deny = limiter(&cfg("deny"));
        for key in ["a", "a", "b", "b"] {
            assert!(allowed(&deny, &store, key));
        }
        let d = deny.check(&Req([("x-ip", "c")].into()), &store, 0);
        assert!(d.limited_by().is_some_and(|v| v.overflow));

        let store = MemoryStore::default();
        let shared = limiter(&cfg("shared_bucket"));
        for key in ["a", "a", "b", "b"] {
            assert!(allowed(&shared, &store, key));
        }
        let admitted = (0..5).filter(|_| allowed(&shared, &store, "n0")).count();
        assert_eq!(
            admitted, 2,
            "a newcomer's overflow group has the bucket of 2"
        );
        let d = shared.check(&Req([("x-ip", "n1")].into()), &store, 0);
        assert!(d.verdicts[0].overflow);
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
                r#"{"token_bucket":{"max_tokens":1,"fill_interval":"1s"},"max_value_bytes":0}"#,
                "max_value_bytes",
            ),
            (
                r#"{"token_bucket":{"max_tokens":1,"fill_interval":"1s"},"ipv6_prefix_len":129}"#,
                "ipv6_prefix_len",
            ),
            (
                r#"{"token_bucket":{"max_tokens":1,"fill_interval":"1s"},"overflow_bucket":{"max_tokens":0,"fill_interval":"1s"}}"#,
                "overflow_bucket.max_tokens",
            ),
            (
                r#"{"max_keys":1,"overflow_bucket":{"max_tokens":2,"fill_interval":"1s"},"descriptors":[{"name":"a","entries":[{"generic_key":{"descriptor_value":"x"}}],"token_bucket":{"max_tokens":2,"fill_interval":"60s"}}]}"#,
                "overflow_bucket",
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
            let err = Limiter::from_json(json.as_bytes(), "t", [0; 16])
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{json}: {err}");
        }
    }
}
