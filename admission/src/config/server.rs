//! The server's own settings: the serving certificate, resource bounds and logs.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Where the serving certificate comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first). With `keyFile`; when both are absent a development
    /// CA and certificate for `localhost`/`127.0.0.1` are generated into `stateDir`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Where generated development certificates live (`ca.crt`, `tls.crt`, `tls.key`).
    /// Default: `meshgate-dev-tls` in the system temp directory.
    pub state_dir: Option<PathBuf>,
    /// How often the files are checked for changes (cert-manager rotates them in place).
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// PEM CA bundle: when set, every client of the HTTPS listener (the API server) must
    /// present a certificate signed by one of these CAs, or the TLS handshake fails. Read once
    /// at startup.
    pub client_ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Errors are (field path, message).
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err((
                "tls".into(),
                "certFile and keyFile must be given together".into(),
            ));
        }
        Ok(())
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            state_dir: None,
            reload_interval: default_reload_interval(),
            client_ca_file: None,
        }
    }
}

/// Resource bounds of the server and of each evaluation.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted request body (the API server sends at most 3 MiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Deadline of a whole review; keep it below the webhook's `timeoutSeconds`.
    #[serde(default = "default_review_timeout", with = "humantime_serde")]
    pub review_timeout: Duration,
    /// Default bound of one policy evaluation.
    #[serde(default = "default_policy_timeout", with = "humantime_serde")]
    pub policy_timeout: Duration,
    /// Reviews evaluated at once; further reviews wait (within their deadline). 0 = CPU count.
    #[serde(default)]
    pub max_concurrent_reviews: usize,
    /// Request body bytes held at once, reserved as they arrive (never ahead of them) and kept
    /// until their review is answered; a request that cannot reserve within half the review
    /// deadline gets 503. Bounds the webhook's memory: the default admits four maximum-size
    /// reviews at once.
    #[serde(default = "default_max_bytes_in_flight")]
    pub max_bytes_in_flight: usize,
    /// JSON values (scalars, arrays, objects) a review's `request` may hold; more is refused
    /// as invalid before any policy runs. Real pods hold a few thousand.
    #[serde(default = "default_max_json_values")]
    pub max_json_values: usize,
    /// Nesting depth of a review's JSON; deeper is refused (serde_json stops at 128 anyway).
    #[serde(default = "default_max_json_depth")]
    pub max_json_depth: usize,
    /// Connections served at once, TLS handshakes included; further connections wait in the
    /// kernel's accept queue until one ends. Bounds per-connection memory (25–40 KiB each).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A TLS handshake not finished within this long is dropped.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// An HTTP/1 connection that has not sent a whole request head within this long (after
    /// its handshake, or after its previous answer: idle keep-alive) is closed; an HTTP/2
    /// connection is closed after this long without a byte from the client (pings included).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A request body must arrive whole within this long of being admitted to the in-flight
    /// budget (and within the review deadline); the API server sends it at once.
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
}

impl Limits {
    /// Errors are (field path, message).
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        let invalid = |field: &str, message: &str| Err((field.to_string(), message.to_string()));
        if self.review_timeout.is_zero() {
            return invalid("limits.reviewTimeout", "must be greater than zero");
        }
        // A body the budget cannot hold would wait forever.
        if self.max_bytes_in_flight < self.max_body_bytes {
            return invalid(
                "limits.maxBytesInFlight",
                "must be at least limits.maxBodyBytes",
            );
        }
        if u32::try_from(self.max_bytes_in_flight).is_err() {
            return invalid("limits.maxBytesInFlight", "must be below 4Gi");
        }
        if self.max_connections == 0 {
            return invalid("limits.maxConnections", "must be greater than zero");
        }
        for (field, value) in [
            ("limits.handshakeTimeout", self.handshake_timeout),
            ("limits.idleTimeout", self.idle_timeout),
            ("limits.bodyReadTimeout", self.body_read_timeout),
        ] {
            if value.is_zero() {
                return invalid(field, "must be greater than zero");
            }
        }
        if self.max_json_values == 0 || self.max_json_depth < 2 {
            return invalid(
                "limits",
                "maxJsonValues must be at least 1 and maxJsonDepth at least 2",
            );
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body_bytes(),
            review_timeout: default_review_timeout(),
            policy_timeout: default_policy_timeout(),
            max_concurrent_reviews: 0,
            max_bytes_in_flight: default_max_bytes_in_flight(),
            max_json_values: default_max_json_values(),
            max_json_depth: default_max_json_depth(),
            max_connections: default_max_connections(),
            handshake_timeout: default_handshake_timeout(),
            idle_timeout: default_idle_timeout(),
            body_read_timeout: default_body_read_timeout(),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Logging {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `meshgate_admission=debug`; `RUST_LOG` wins.
    pub level: Option<String>,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

pub(super) fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

pub(super) fn default_max_body_bytes() -> usize {
    3 * 1024 * 1024
}

pub(super) fn default_max_bytes_in_flight() -> usize {
    4 * default_max_body_bytes()
}

pub(super) fn default_max_json_values() -> usize {
    50_000
}

pub(super) fn default_max_json_depth() -> usize {
    64
}

pub(super) fn default_max_connections() -> usize {
    1024
}

pub(super) fn default_handshake_timeout() -> Duration {
    Duration::from_secs(5)
}

pub(super) fn default_idle_timeout() -> Duration {
    Duration::from_secs(5)
}

pub(super) fn default_body_read_timeout() -> Duration {
    Duration::from_secs(2)
}

pub(super) fn default_review_timeout() -> Duration {
    Duration::from_secs(4)
}

pub(super) fn default_policy_timeout() -> Duration {
    Duration::from_secs(1)
}
