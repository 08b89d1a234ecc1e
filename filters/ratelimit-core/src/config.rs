//! The user-facing configuration (JSON). The bucket uses the names and shapes of Envoy's
//! `local_ratelimit` (`token_bucket.max_tokens`, `tokens_per_fill`, `fill_interval` as a proto3
//! duration); descriptor entries follow Envoy's rate-limit actions.

use meshgate_filter_common::ProtoDuration;
use serde::Deserialize;

/// The whole filter configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Prefix of the filter's counters (`rate_limit.<stat_prefix>.*`).
    #[serde(default)]
    pub stat_prefix: Option<String>,
    /// A bucket every request takes from (Envoy `local_ratelimit`'s default bucket).
    #[serde(default)]
    pub token_bucket: Option<TokenBucket>,
    /// Named limits keyed by request attributes, each with its own bucket per key.
    #[serde(default)]
    pub descriptors: Vec<Descriptor>,
    /// Live bucket keys kept at most (default 10000).
    #[serde(default)]
    pub max_keys: Option<u32>,
    /// What a new key gets when every slot it may use holds a bucket that has not refilled.
    #[serde(default)]
    pub overflow: Overflow,
    /// The bucket keys without a slot share under `overflow: shared_bucket`, one per overflow
    /// group of each descriptor (default: the descriptor's own bucket, fill interval included;
    /// refused if it would give a key more than a descriptor's bucket).
    #[serde(default)]
    pub overflow_bucket: Option<TokenBucket>,
    /// Descriptor values (header values, claims, addresses) longer than this many bytes are cut
    /// to it (default 256).
    #[serde(default)]
    pub max_value_bytes: Option<u32>,
    /// IPv6 client addresses are grouped by this prefix length (default 64: one bucket per
    /// /64, the block a single host is usually given).
    #[serde(default)]
    pub ipv6_prefix_len: Option<u8>,
    /// Status of a limited response (default 429).
    #[serde(default)]
    pub status: Option<u16>,
    /// Add `RateLimit`/`RateLimit-Policy` to allowed responses too (default true).
    #[serde(default)]
    pub headers_on_allowed: Option<bool>,
    /// Also send `X-RateLimit-Limit/-Remaining/-Reset` (Envoy's DRAFT_VERSION_03).
    #[serde(default)]
    pub legacy_headers: bool,
    /// `x-forwarded-for` hops added by trusted proxies, counted from the right (default 0: use
    /// the connection's source address).
    #[serde(default)]
    pub xff_trusted_hops: u32,
    /// Limits counted by a rate limit service shared by every sidecar.
    #[serde(default)]
    pub global: Option<Global>,
}

/// Global limiting through Envoy's rate limit service protocol
/// (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Global {
    /// The Envoy cluster (HTTP/2) of the rate limit service.
    pub cluster: String,
    /// The `domain` of every request.
    pub domain: String,
    /// How long to wait for the service (default 20 ms).
    #[serde(default)]
    pub timeout: Option<ProtoDuration>,
    /// Refuse requests when the service cannot answer (default false: let them through).
    #[serde(default)]
    pub failure_mode_deny: bool,
    /// Descriptors sent to the service; their entries are its descriptor entries.
    pub descriptors: Vec<GlobalDescriptor>,
}

/// A descriptor whose counting the rate limit service does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalDescriptor {
    /// Name in stats and headers.
    pub name: String,
    /// Entries, as for local descriptors; at least one must yield a value.
    pub entries: Vec<Entry>,
}

/// What happens to a key that finds no slot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Refuse the request (no key can win a fresh bucket by crowding others out, but a flood of
    /// new keys refuses every new client until the flood's buckets refill).
    Deny,
    /// Take from the overflow bucket of the key's group (one of 16, by salted digest), shared
    /// with the other keys without a slot in that group: a key never gets more than its quota
    /// per fill interval that way.
    #[default]
    SharedBucket,
}

/// Envoy's `type.v3.TokenBucket`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    /// Capacity.
    pub max_tokens: u32,
    /// Tokens added per fill (default 1).
    #[serde(default)]
    pub tokens_per_fill: Option<u32>,
    /// Time between fills (at least 50 ms).
    pub fill_interval: ProtoDuration,
}

/// A named limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    /// Name in stats and headers.
    pub name: String,
    /// Entries, all of which must apply; together their values form the bucket key.
    pub entries: Vec<Entry>,
    /// The bucket each distinct key gets.
    pub token_bucket: TokenBucket,
    /// Count and report, never reject.
    #[serde(default)]
    pub shadow: bool,
}

/// One part of a descriptor: a condition, a value for the key, or both.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Entry {
    /// A request header's value (absent header: the descriptor does not apply).
    RequestHeader {
        /// Header name.
        header_name: String,
        /// Key name in the bucket key.
        descriptor_key: String,
        /// A fixed value instead of the header's (the header must still be present).
        #[serde(default)]
        descriptor_value: Option<String>,
    },
    /// The client address: the `x-forwarded-for` hop `xff_trusted_hops` from the right, or the
    /// connection's source address.
    RemoteAddress {
        /// Key name (default `remote_address`).
        #[serde(default)]
        descriptor_key: Option<String>,
    },
    /// The request method; with `equals`, only that method matches (a condition).
    Method {
        /// Match only this method.
        #[serde(default)]
        equals: Option<String>,
        /// Key name (default `method`).
        #[serde(default)]
        descriptor_key: Option<String>,
    },
    /// A path condition (query excluded): contributes no value.
    Path {
        /// Path prefix.
        #[serde(default)]
        prefix: Option<String>,
        /// Exact path.
        #[serde(default)]
        exact: Option<String>,
    },
    /// A claim of a JWT verified by meshgate's jwt-auth filter: from the payload it published
    /// (`payload_in_metadata` name) or from a header it set (`claim_to_headers`).
    JwtClaim {
        /// Claim name; nested claims with dots.
        claim: String,
        /// jwt-auth `payload_in_metadata` name to read the payload from.
        #[serde(default)]
        payload: Option<String>,
        /// Or: the header jwt-auth copied the claim to.
        #[serde(default)]
        header_name: Option<String>,
        /// Key name (default: the claim name).
        #[serde(default)]
        descriptor_key: Option<String>,
    },
    /// A fixed key and value (a descriptor shared by every request it applies to).
    GenericKey {
        /// Key name (default `generic_key`).
        #[serde(default)]
        descriptor_key: Option<String>,
        /// Value.
        descriptor_value: String,
    },
}

impl RateLimitConfig {
    /// Parses the plugin configuration JSON.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }
}
