//! A compiled `JwtProvider`: where its tokens are, what its claims must say, where its keys are.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use crate::config::{self, JwtProvider};
use crate::extract::Location;
use crate::jwks::KeySet;
use crate::rules::StringMatch;
use crate::{ConfigError, UnixSeconds};

/// Envoy's default clock skew.
pub const DEFAULT_CLOCK_SKEW: UnixSeconds = 60;
/// Envoy's default remote JWKS cache duration.
pub const DEFAULT_CACHE_DURATION: Duration = Duration::from_secs(600);
/// Verified tokens kept per provider and worker when `jwt_cache_config` does not say.
pub const DEFAULT_TOKEN_CACHE_SIZE: usize = 1000;
/// Longest token cached when `jwt_cache_config.jwt_max_token_size` does not say (Envoy's
/// default); longer tokens are verified every time, so the cache's memory stays bounded.
pub const DEFAULT_MAX_CACHED_TOKEN: usize = 4096;

/// Where a provider's keys come from.
#[derive(Debug, Clone)]
pub enum Keys {
    /// Keys in the configuration.
    Local(Arc<KeySet>),
    /// Keys fetched from a JWKS endpoint.
    Remote(RemoteJwks),
}

/// How to fetch a remote JWKS.
#[derive(Debug, Clone)]
pub struct RemoteJwks {
    /// The configured URI.
    pub uri: String,
    /// Envoy cluster to send the request to.
    pub cluster: String,
    /// `:authority` of the request.
    pub authority: String,
    /// `:path` of the request.
    pub path: String,
    /// Request timeout.
    pub timeout: Duration,
    /// How long fetched keys stay fresh.
    pub cache_duration: Duration,
    /// Fetch at startup rather than on first use.
    pub fetch_at_start: bool,
    /// Wait after a failed fetch before trying again.
    pub failed_refetch: Duration,
    /// Retries of a failed fetch before giving up on this round.
    pub num_retries: u32,
    /// First back-off between retries.
    pub retry_base: Duration,
    /// Largest back-off between retries.
    pub retry_max: Duration,
}

/// A compiled provider.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Name in `providers`.
    pub name: String,
    /// Required `iss`, empty for any.
    pub issuer: String,
    /// Allowed audiences, empty for any.
    pub audiences: Vec<String>,
    /// Matcher for `sub`.
    pub subjects: Option<StringMatch>,
    /// Refuse tokens without `exp`.
    pub require_expiration: bool,
    /// Largest allowed `exp - now`, in seconds.
    pub max_lifetime: Option<UnixSeconds>,
    /// Allowed clock skew.
    pub clock_skew: UnixSeconds,
    /// Keys.
    pub keys: Keys,
    /// Where tokens are looked for.
    pub locations: Vec<Location>,
    /// Keep the token in the forwarded request.
    pub forward: bool,
    /// Header for the base64url payload.
    pub forward_payload_header: Option<String>,
    /// Pad that payload with `=`.
    pub pad_forward_payload_header: bool,
    /// Name to publish the payload under.
    pub payload_in_metadata: Option<String>,
    /// Name to publish the JWT header under.
    pub header_in_metadata: Option<String>,
    /// `(header, claim path)` pairs.
    pub claim_to_headers: Vec<(String, Vec<String>)>,
    /// Verified-token cache size.
    pub cache_size: usize,
    /// Longest token the cache keeps, in bytes.
    pub cache_max_token: usize,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl Provider {
    /// Compiles provider `name`; errors name the field as `providers.<name>.<field>`.
    pub fn compile(name: &str, raw: &JwtProvider) -> Result<Provider, ConfigError> {
        let field = |f: &str| format!("providers.{name}.{f}");
        let unsupported = |f: &str, why: &str| Err(ConfigError::unsupported(field(f), why));
        if raw.failed_status_in_metadata.is_some() {
            return unsupported(
                "failed_status_in_metadata",
                "not supported by the jwt-auth Wasm filter",
            );
        }
        if raw.normalize_payload_in_metadata.is_some() {
            return unsupported(
                "normalize_payload_in_metadata",
                "not supported by the jwt-auth Wasm filter",
            );
        }
        if raw.clear_route_cache == Some(true) {
            return unsupported(
                "clear_route_cache",
                "a Wasm filter cannot clear Envoy's route cache",
            );
        }
        let keys = match (&raw.local_jwks, &raw.remote_jwks) {
            (Some(local), None) => {
                Keys::Local(Arc::new(compile_local(local, &field("local_jwks"))?))
            }
            (None, Some(remote)) => Keys::Remote(compile_remote(remote, &field("remote_jwks"))?),
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    field("local_jwks"),
                    "set either local_jwks or remote_jwks, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    field("remote_jwks"),
                    "a provider needs local_jwks or remote_jwks",
                ));
            }
        };
        let mut locations: Vec<Location> = raw
            .from_headers
            .iter()
            .map(|h| Location::Header {
                name: h.name.to_ascii_lowercase(),
                prefix: h.value_prefix.clone(),
            })
            .collect();
        locations.extend(raw.from_params.iter().cloned().map(Location::Param));
        locations.extend(raw.from_cookies.iter().cloned().map(Location::Cookie));
        if locations.is_empty() {
            locations = Location::defaults();
        }
        // In the order requests read them, once (so a request need not sort them).
        let locations = crate::extract::envoy_order(&locations);
        let mut claim_to_headers = Vec::new();
        for (i, c) in raw.claim_to_headers.iter().enumerate() {
            if c.header_name.is_empty() || c.claim_name.is_empty() {
                return Err(ConfigError::invalid(
                    field(&format!("claim_to_headers[{i}]")),
                    "header_name and claim_name must not be empty",
                ));
            }
            let path = c.claim_name.split('.').map(str::to_string).collect();
            claim_to_headers.push((c.header_name.to_ascii_lowercase(), path));
        }
        let subjects = raw
            .subjects
            .as_ref()
            .map(|m| StringMatch::compile(m, &field("subjects")))
            .transpose()?;
        let cache = raw.jwt_cache_config.as_ref();
        let cache_size = cache
            .and_then(|c| c.jwt_cache_size)
            .map_or(DEFAULT_TOKEN_CACHE_SIZE, |n| n as usize);
        let cache_max_token = cache
            .and_then(|c| c.jwt_max_token_size)
            .filter(|n| *n > 0)
            .map_or(DEFAULT_MAX_CACHED_TOKEN, |n| n as usize);
        Ok(Provider {
            name: name.to_string(),
            issuer: raw.issuer.clone(),
            audiences: raw.audiences.clone(),
            subjects,
            require_expiration: raw.require_expiration,
            max_lifetime: raw.max_lifetime.map(|d| d.get().as_secs()),
            clock_skew: match raw.clock_skew_seconds {
                None | Some(0) => DEFAULT_CLOCK_SKEW,
                Some(s) => UnixSeconds::from(s),
            },
            keys,
            locations,
            forward: raw.forward,
            forward_payload_header: non_empty(&raw.forward_payload_header.to_ascii_lowercase()),
            pad_forward_payload_header: raw.pad_forward_payload_header,
            payload_in_metadata: non_empty(&raw.payload_in_metadata),
            header_in_metadata: non_empty(&raw.header_in_metadata),
            claim_to_headers,
            cache_size,
            cache_max_token,
        })
    }
}

fn compile_local(source: &config::DataSource, field: &str) -> Result<KeySet, ConfigError> {
    let text = match source {
        config::DataSource {
            filename: Some(_), ..
        } => {
            return Err(ConfigError::unsupported(
                format!("{field}.filename"),
                "a Wasm filter cannot read files; put the JWKS in inline_string or use remote_jwks",
            ));
        }
        config::DataSource {
            environment_variable: Some(_),
            ..
        } => {
            return Err(ConfigError::unsupported(
                format!("{field}.environment_variable"),
                "a Wasm filter cannot read the environment; use inline_string",
            ));
        }
        config::DataSource {
            inline_string: Some(s),
            ..
        } => s.clone(),
        config::DataSource {
            inline_bytes: Some(b),
            ..
        } => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| {
                    ConfigError::invalid(format!("{field}.inline_bytes"), e.to_string())
                })?;
            String::from_utf8(bytes)
                .map_err(|e| ConfigError::invalid(format!("{field}.inline_bytes"), e.to_string()))?
        }
        _ => {
            return Err(ConfigError::invalid(
                field,
                "needs inline_string (or inline_bytes)",
            ));
        }
    };
    KeySet::parse_local(&text).map_err(|e| ConfigError::invalid(field, e.to_string()))
}

fn compile_remote(raw: &config::RemoteJwks, field: &str) -> Result<RemoteJwks, ConfigError> {
    let uri = &raw.http_uri.uri;
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .ok_or_else(|| {
            ConfigError::invalid(
                format!("{field}.http_uri.uri"),
                format!("{uri:?} is not an http(s) URL"),
            )
        })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(ConfigError::invalid(
            format!("{field}.http_uri.uri"),
            "has no host",
        ));
    }
    if raw.http_uri.cluster.is_empty() {
        return Err(ConfigError::invalid(
            format!("{field}.http_uri.cluster"),
            "must name the Envoy cluster that serves the JWKS",
        ));
    }
    let timeout = raw.http_uri.timeout.get();
    if timeout.is_zero() {
        return Err(ConfigError::invalid(
            format!("{field}.http_uri.timeout"),
            "must be above zero",
        ));
    }
    if raw
        .retry_policy
        .as_ref()
        .is_some_and(|p| p.retry_on.is_some())
    {
        return Err(ConfigError::unsupported(
            format!("{field}.retry_policy.retry_on"),
            "not supported: every failed fetch is retried",
        ));
    }
    let back_off = raw
        .retry_policy
        .as_ref()
        .and_then(|p| p.retry_back_off.as_ref());
    let retry_base = back_off.map_or(Duration::from_secs(1), |b| b.base_interval.get());
    Ok(RemoteJwks {
        uri: uri.clone(),
        cluster: raw.http_uri.cluster.clone(),
        authority: authority.to_string(),
        path: path.to_string(),
        timeout,
        cache_duration: raw
            .cache_duration
            .map_or(DEFAULT_CACHE_DURATION, |d| d.get())
            .max(Duration::from_secs(1)),
        fetch_at_start: raw.async_fetch.is_some(),
        failed_refetch: raw
            .async_fetch
            .as_ref()
            .and_then(|a| a.failed_refetch_duration)
            .map_or(Duration::from_secs(1), |d| d.get()),
        num_retries: raw
            .retry_policy
            .as_ref()
            .map_or(0, |p| p.num_retries.unwrap_or(1)),
        retry_base,
        retry_max: back_off
            .and_then(|b| b.max_interval)
            .map_or(retry_base * 10, |d| d.get()),
    })
}
