//! The user-facing configuration: Envoy's `envoy.extensions.filters.http.jwt_authn.v3.
//! JwtAuthentication` in proto3-JSON form, field for field.
//!
//! Field names are snake_case; the lowerCamelCase spelling proto3 JSON also allows is accepted.
//! Unknown fields are errors. Fields Envoy has but a Wasm filter cannot honour are parsed so the
//! error can name them (see [`crate::Authenticator::new`]), never silently dropped.

use std::collections::BTreeMap;

use meshgate_filter_common::ProtoDuration;
use serde::Deserialize;

/// `JwtAuthentication`: the whole filter configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthentication {
    /// Providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, JwtProvider>,
    /// Route rules, first match wins; no match means no check.
    #[serde(default)]
    pub rules: Vec<RequirementRule>,
    /// Named requirements that rules refer to with `requirement_name`.
    #[serde(default, alias = "requirementMap")]
    pub requirement_map: BTreeMap<String, JwtRequirement>,
    /// Let CORS preflight requests through unchecked.
    #[serde(default, alias = "bypassCorsPreflight")]
    pub bypass_cors_preflight: bool,
    /// Envoy's stats prefix; used here as the stats prefix of the filter's counters.
    #[serde(default, alias = "statPrefix")]
    pub stat_prefix: Option<String>,
    /// Not supported: per-filter-state rules.
    #[serde(default, alias = "filterStateRules")]
    pub filter_state_rules: Option<serde_json::Value>,
    /// Not supported.
    #[serde(default, alias = "stripFailureResponse")]
    pub strip_failure_response: Option<bool>,
}

/// `JwtProvider`: how tokens of one issuer are found and verified.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProvider {
    /// Expected `iss`; empty accepts any issuer.
    #[serde(default)]
    pub issuer: String,
    /// Allowed audiences; empty skips the audience check.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Matcher the `sub` claim must satisfy.
    #[serde(default)]
    pub subjects: Option<StringMatcher>,
    /// Refuse tokens without `exp`.
    #[serde(default, alias = "requireExpiration")]
    pub require_expiration: bool,
    /// Refuse tokens whose `exp` lies further ahead than this.
    #[serde(default, alias = "maxLifetime")]
    pub max_lifetime: Option<ProtoDuration>,
    /// Allowed clock skew for `exp`/`nbf`; 60 s when absent or 0 (as Envoy).
    #[serde(default, alias = "clockSkewSeconds")]
    pub clock_skew_seconds: Option<u32>,
    /// Keys given in the configuration.
    #[serde(default, alias = "localJwks")]
    pub local_jwks: Option<DataSource>,
    /// Keys fetched from a JWKS endpoint through an Envoy cluster.
    #[serde(default, alias = "remoteJwks")]
    pub remote_jwks: Option<RemoteJwks>,
    /// Keep the token in the request forwarded upstream.
    #[serde(default)]
    pub forward: bool,
    /// Headers to look for tokens in.
    #[serde(default, alias = "fromHeaders")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters to look for tokens in.
    #[serde(default, alias = "fromParams")]
    pub from_params: Vec<String>,
    /// Cookies to look for tokens in.
    #[serde(default, alias = "fromCookies")]
    pub from_cookies: Vec<String>,
    /// Header to forward the base64url payload in.
    #[serde(default, alias = "forwardPayloadHeader")]
    pub forward_payload_header: String,
    /// Pad the forwarded payload to a multiple of 4 with `=`.
    #[serde(default, alias = "padForwardPayloadHeader")]
    pub pad_forward_payload_header: bool,
    /// Name under which the verified payload is published for later filters.
    #[serde(default, alias = "payloadInMetadata")]
    pub payload_in_metadata: String,
    /// Name under which the verified header is published for later filters.
    #[serde(default, alias = "headerInMetadata")]
    pub header_in_metadata: String,
    /// Claims copied into request headers.
    #[serde(default, alias = "claimToHeaders")]
    pub claim_to_headers: Vec<JwtClaimToHeader>,
    /// Size of the verified-token cache.
    #[serde(default, alias = "jwtCacheConfig")]
    pub jwt_cache_config: Option<JwtCacheConfig>,
    /// Not supported: the failure status in metadata.
    #[serde(default, alias = "failedStatusInMetadata")]
    pub failed_status_in_metadata: Option<String>,
    /// Not supported.
    #[serde(default, alias = "normalizePayloadInMetadata")]
    pub normalize_payload_in_metadata: Option<serde_json::Value>,
    /// Not supported: a Wasm filter cannot clear Envoy's route cache.
    #[serde(default, alias = "clearRouteCache")]
    pub clear_route_cache: Option<bool>,
}

/// `config.core.v3.DataSource`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// The JWKS JSON itself.
    #[serde(default, alias = "inlineString")]
    pub inline_string: Option<String>,
    /// Base64 of the JWKS JSON (proto3 JSON form of `bytes`).
    #[serde(default, alias = "inlineBytes")]
    pub inline_bytes: Option<String>,
    /// Not available inside a Wasm sandbox.
    #[serde(default)]
    pub filename: Option<String>,
    /// Not available inside a Wasm sandbox.
    #[serde(default, alias = "environmentVariable")]
    pub environment_variable: Option<String>,
}

/// `RemoteJwks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteJwks {
    /// Where to fetch from.
    #[serde(alias = "httpUri")]
    pub http_uri: HttpUri,
    /// How long fetched keys are fresh; 600 s by default (as Envoy).
    #[serde(default, alias = "cacheDuration")]
    pub cache_duration: Option<ProtoDuration>,
    /// Fetch at startup instead of on the first request.
    #[serde(default, alias = "asyncFetch")]
    pub async_fetch: Option<AsyncFetch>,
    /// Retries of a failed fetch.
    #[serde(default, alias = "retryPolicy")]
    pub retry_policy: Option<RetryPolicy>,
}

/// `config.core.v3.HttpUri`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpUri {
    /// Full URL; its authority and path are used, the cluster decides where it goes.
    pub uri: String,
    /// The Envoy cluster that serves it.
    pub cluster: String,
    /// Request timeout.
    pub timeout: ProtoDuration,
}

/// `JwksAsyncFetch`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsyncFetch {
    /// Accepted for compatibility; the listener never waits for the fetch here.
    #[serde(default, alias = "fastListener")]
    pub fast_listener: bool,
    /// How soon to retry after a failed fetch; 1 s by default (as Envoy).
    #[serde(default, alias = "failedRefetchDuration")]
    pub failed_refetch_duration: Option<ProtoDuration>,
}

/// `config.core.v3.RetryPolicy`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Back-off between retries.
    #[serde(default, alias = "retryBackOff")]
    pub retry_back_off: Option<BackoffStrategy>,
    /// How many retries after the first attempt; 1 by default (as Envoy).
    #[serde(default, alias = "numRetries")]
    pub num_retries: Option<u32>,
    /// Not supported.
    #[serde(default, alias = "retryOn")]
    pub retry_on: Option<serde_json::Value>,
}

/// `config.core.v3.BackoffStrategy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffStrategy {
    /// First back-off.
    #[serde(alias = "baseInterval")]
    pub base_interval: ProtoDuration,
    /// Upper bound of the back-off; 10× the base by default.
    #[serde(default, alias = "maxInterval")]
    pub max_interval: Option<ProtoDuration>,
}

/// `JwtHeader`: a header to take tokens from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtHeader {
    /// Header name.
    pub name: String,
    /// Text before the token, e.g. `Bearer `.
    #[serde(default, alias = "valuePrefix")]
    pub value_prefix: String,
}

/// `JwtClaimToHeader`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtClaimToHeader {
    /// Request header to set.
    #[serde(alias = "headerName")]
    pub header_name: String,
    /// Claim to copy; nested claims with dots (`a.b.c`).
    #[serde(alias = "claimName")]
    pub claim_name: String,
}

/// `JwtCacheConfig`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtCacheConfig {
    /// Entries in the verified-token cache (per Envoy worker).
    #[serde(default, alias = "jwtCacheSize")]
    pub jwt_cache_size: Option<u32>,
    /// Longest token cached, in bytes; 4096 by default (as Envoy).
    #[serde(default, alias = "jwtMaxTokenSize")]
    pub jwt_max_token_size: Option<u32>,
}

/// `RequirementRule`: a route match and what it requires.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequirementRule {
    /// The route match.
    #[serde(rename = "match")]
    pub route_match: RouteMatch,
    /// The requirement; absent means no check for matching requests.
    #[serde(default)]
    pub requires: Option<JwtRequirement>,
    /// A requirement from `requirement_map`.
    #[serde(default, alias = "requirementName")]
    pub requirement_name: Option<String>,
}

/// `JwtRequirement`: a oneof, written as an object with exactly one field.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtRequirement {
    /// A token of this provider is required.
    #[serde(default, alias = "providerName")]
    pub provider_name: Option<String>,
    /// A token of this provider with one of these audiences is required.
    #[serde(default, alias = "providerAndAudiences")]
    pub provider_and_audiences: Option<ProviderWithAudiences>,
    /// Any one of these requirements.
    #[serde(default, alias = "requiresAny")]
    pub requires_any: Option<RequirementList>,
    /// All of these requirements.
    #[serde(default, alias = "requiresAll")]
    pub requires_all: Option<RequirementList>,
    /// Tokens are checked (and forwarded when good), but the request passes whatever the result.
    #[serde(default, alias = "allowMissingOrFailed")]
    pub allow_missing_or_failed: Option<Empty>,
    /// A present token must be valid; no token is fine.
    #[serde(default, alias = "allowMissing")]
    pub allow_missing: Option<Empty>,
}

/// `google.protobuf.Empty`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `ProviderWithAudiences`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderWithAudiences {
    /// The provider.
    #[serde(alias = "providerName")]
    pub provider_name: String,
    /// Audiences that override the provider's.
    #[serde(default)]
    pub audiences: Vec<String>,
}

/// `JwtRequirementOrList` / `JwtRequirementAndList`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequirementList {
    /// The requirements.
    pub requirements: Vec<JwtRequirement>,
}

/// `config.route.v3.RouteMatch`, the parts that make sense for a filter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Path prefix.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Exact path (query excluded).
    #[serde(default)]
    pub path: Option<String>,
    /// Path regex (query excluded), whole-string match.
    #[serde(default, alias = "safeRegex")]
    pub safe_regex: Option<RegexMatcher>,
    /// Prefix that ends at a path segment boundary.
    #[serde(default, alias = "pathSeparatedPrefix")]
    pub path_separated_prefix: Option<String>,
    /// Case sensitivity of `prefix`/`path`; true by default.
    #[serde(default, alias = "caseSensitive")]
    pub case_sensitive: Option<bool>,
    /// Header conditions, all of which must hold.
    #[serde(default)]
    pub headers: Vec<HeaderMatcher>,
    /// Not supported.
    #[serde(default, alias = "queryParameters")]
    pub query_parameters: Option<serde_json::Value>,
    /// Not supported.
    #[serde(default)]
    pub grpc: Option<serde_json::Value>,
    /// Not supported.
    #[serde(default, alias = "runtimeFraction")]
    pub runtime_fraction: Option<serde_json::Value>,
    /// Not supported.
    #[serde(default, alias = "connectMatcher")]
    pub connect_matcher: Option<serde_json::Value>,
    /// Not supported.
    #[serde(default, alias = "pathMatchPolicy")]
    pub path_match_policy: Option<serde_json::Value>,
}

/// `type.matcher.v3.RegexMatcher` (RE2 syntax and meaning: see [`crate::re2`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexMatcher {
    /// The expression.
    pub regex: String,
    /// Deprecated engine selector; accepted and ignored as Envoy does.
    #[serde(default, alias = "googleRe2")]
    pub google_re2: Option<serde_json::Value>,
}

/// `config.route.v3.HeaderMatcher`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatcher {
    /// Header name (pseudo headers such as `:method` included).
    pub name: String,
    /// Exact value.
    #[serde(default, alias = "exactMatch")]
    pub exact_match: Option<String>,
    /// Value prefix.
    #[serde(default, alias = "prefixMatch")]
    pub prefix_match: Option<String>,
    /// Value suffix.
    #[serde(default, alias = "suffixMatch")]
    pub suffix_match: Option<String>,
    /// Value substring.
    #[serde(default, alias = "containsMatch")]
    pub contains_match: Option<String>,
    /// Value regex.
    #[serde(default, alias = "safeRegexMatch")]
    pub safe_regex_match: Option<RegexMatcher>,
    /// Presence (true) or absence (false).
    #[serde(default, alias = "presentMatch")]
    pub present_match: Option<bool>,
    /// A string matcher on the value.
    #[serde(default, alias = "stringMatch")]
    pub string_match: Option<StringMatcher>,
    /// Invert the result.
    #[serde(default, alias = "invertMatch")]
    pub invert_match: bool,
    /// Match a missing header as the empty string.
    #[serde(default, alias = "treatMissingHeaderAsEmpty")]
    pub treat_missing_header_as_empty: bool,
    /// Not supported.
    #[serde(default, alias = "rangeMatch")]
    pub range_match: Option<serde_json::Value>,
}

/// `type.matcher.v3.StringMatcher`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringMatcher {
    /// Exact value.
    #[serde(default)]
    pub exact: Option<String>,
    /// Prefix.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Suffix.
    #[serde(default)]
    pub suffix: Option<String>,
    /// Substring.
    #[serde(default)]
    pub contains: Option<String>,
    /// Regex.
    #[serde(default, alias = "safeRegex")]
    pub safe_regex: Option<RegexMatcher>,
    /// Compare case-insensitively (not for regexes).
    #[serde(default, alias = "ignoreCase")]
    pub ignore_case: bool,
}

impl JwtAuthentication {
    /// Parses the plugin configuration JSON.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }
}
