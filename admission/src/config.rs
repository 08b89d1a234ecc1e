//! The webhook's YAML configuration (`meshgate serve --config FILE`).
//!
//! Field names are camelCase, as in Kubernetes objects, and unknown fields are refused so a typo
//! never silently disables a check. Errors name the path of the bad field, e.g.
//! `policies[2].mode: unknown variant `block``.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Wasm RuntimeClass names checked when the configuration names none.
pub const DEFAULT_RUNTIME_CLASSES: [&str; 7] = [
    "wasmtime", "wasmedge", "spin", "wasmer", "wws", "lunatic", "slight",
];

/// An error while reading or checking the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML does not match the schema; `field` is the path of the offending field.
    #[error("{file}: {field}: {message}")]
    Invalid {
        /// The file (or `<inline>`).
        file: String,
        /// Path of the bad field, e.g. `policies[2].mode`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Address the HTTPS server listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A plain-HTTP address serving only `/healthz`, `/readyz` and `/metrics`, for kubelet
    /// probes and scrapers when `tls.clientCaFile` makes the HTTPS listener refuse clients
    /// without a certificate. Off when absent.
    pub probe_listen: Option<SocketAddr>,
    /// Serving certificate.
    #[serde(default)]
    pub tls: TlsConfig,
    /// RuntimeClass names whose pods are checked; every other pod is admitted without evaluation.
    #[serde(default = "default_runtime_classes")]
    pub runtime_classes: BTreeSet<String>,
    /// What an internal error (policy failure, deadline) means for the review.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Resource bounds.
    #[serde(default)]
    pub limits: Limits,
    /// Log format and level.
    #[serde(default)]
    pub logging: Logging,
    /// The policies, evaluated in order.
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
    /// Signature and artifact checks of the images of selected pods; off when absent.
    pub image_verification: Option<ImageVerification>,
    /// How Wasm policies are compiled and instantiated.
    #[serde(default)]
    pub wasm: WasmRuntimeConfig,
}

/// The engine that runs Wasm policies.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmRuntimeConfig {
    /// Keep compiled policies on disk so a restart skips compilation (only with
    /// `cache_key_file`).
    #[serde(default = "default_true")]
    pub cache: bool,
    /// Where compiled policies are kept. It must be a directory (not a symbolic link) of the
    /// server's user that nobody else may write, since its files are loaded as machine code;
    /// created with mode 0700. Default: `$XDG_CACHE_HOME/meshgate/wasm`, else
    /// `~/.cache/meshgate/wasm`, else `meshgate-wasm-cache-<uid>` in the temp directory.
    pub cache_dir: Option<PathBuf>,
    /// A file of at least 32 secret bytes (a Secret volume; the TLS private key will do) whose
    /// MAC ties each cached file to its component, so a file written or swapped by anyone
    /// without it is refused. The server must be able to read it and not write it. Without it
    /// nothing is kept on disk.
    pub cache_key_file: Option<PathBuf>,
    /// Instantiate from wasmtime's pooling allocator (pre-reserved memory slots) rather than
    /// on demand.
    #[serde(default = "default_true")]
    pub pooling_allocator: bool,
}

impl Default for WasmRuntimeConfig {
    fn default() -> Self {
        Self {
            cache: true,
            cache_dir: None,
            cache_key_file: None,
            pooling_allocator: true,
        }
    }
}

/// A policy compiled to a WebAssembly component (the `meshgate:policy` world).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmSource {
    /// The component file.
    pub file: Option<PathBuf>,
    /// An OCI reference (`registry/repository:tag` or `@sha256:...`); its signature is checked
    /// with `imageVerification`'s trust rules, and a rule with keys must match it.
    pub image: Option<String>,
    /// Linear memory the policy may use, in bytes or as a quantity (`64Mi`, `1Gi`).
    #[serde(default = "default_wasm_memory")]
    pub memory_limit: Quantity,
    /// Fuel per evaluation (about one unit per Wasm instruction). Off by default: the
    /// policy's `timeout` bounds CPU time; fuel adds a bound that does not depend on load.
    pub fuel: Option<u64>,
}

/// A byte count, written as a number or a Kubernetes quantity (`64Mi`, `1Gi`, `512Ki`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(pub u64);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(Quantity(n)),
            Raw::Text(text) => Quantity::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

impl Quantity {
    /// Parses `123`, `64Mi`, `1Gi`, `512Ki`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (digits, shift) = [("Ki", 10), ("Mi", 20), ("Gi", 30)]
            .iter()
            .find_map(|(suffix, shift)| text.strip_suffix(suffix).map(|d| (d, *shift)))
            .unwrap_or((text, 0));
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1 << shift))
            .map(Quantity)
            .ok_or_else(|| format!("{text:?} is not a byte count (e.g. 67108864 or 64Mi)"))
    }
}

/// Signature and artifact checks of every image of a selected pod, before policies run.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageVerification {
    /// `enforce` (default): a failed check denies; `warn`: it becomes a warning; `dry-run`:
    /// it is logged.
    #[serde(default)]
    pub mode: Mode,
    /// What an image whose registry could not be asked (unreachable, timeout, 5xx) means:
    /// `Fail` (default) denies; `Ignore` admits it unverified, with a warning. The server's
    /// `failurePolicy` does not apply: admitting unverified images is opted into here only.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Which images an UPDATE verifies: `changedImages` (default) only those its old object
    /// (on a Wasm RuntimeClass) did not run; `allImages` every image again.
    #[serde(default)]
    pub on_update: OnUpdate,
    /// How strictly an image must be a Wasm artifact.
    #[serde(default)]
    pub artifact_check: ArtifactCheck,
    /// Public keys, by name.
    pub keys: Vec<KeyConfig>,
    /// Which keys may sign which images; the first rule whose pattern matches decides. An image
    /// no rule matches is denied.
    pub trust: Vec<TrustRule>,
    /// Registry access: credentials and plain-HTTP exceptions.
    #[serde(default)]
    pub registries: Vec<RegistryAccess>,
    /// A Docker `config.json` (e.g. an imagePullSecret mounted as a file) with credentials.
    pub docker_config: Option<PathBuf>,
    /// Bound of each registry connection and read, and of the checks of one image.
    #[serde(default = "default_registry_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a verified (digest, rule) pair is trusted without asking again; 0 disables.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How long a failed check is remembered (a burst of bad pods costs one registry visit).
    #[serde(default = "default_negative_ttl", with = "humantime_serde")]
    pub negative_cache_ttl: Duration,
    /// How long a tag's digest is reused. Tags can move, so keep this short, or 0.
    #[serde(default = "default_tag_ttl", with = "humantime_serde")]
    pub tag_ttl: Duration,
    /// Most distinct images one review verifies; a pod with more is not verified (denied in
    /// `enforce` unless `failurePolicy` is `Ignore`), since each costs registry visits.
    #[serde(default = "default_max_images_per_review")]
    pub max_images_per_review: usize,
    /// Most image checks one review runs at once.
    #[serde(default = "default_max_concurrent_checks_per_review")]
    pub max_concurrent_checks_per_review: usize,
    /// Most image checks the whole process runs at once; the others wait (within `timeout`).
    #[serde(default = "default_max_concurrent_checks")]
    pub max_concurrent_checks: usize,
}

impl ImageVerification {
    /// Cross-field checks: key sources, names, rule references and thresholds. Errors are
    /// (field path, message).
    fn check(&self) -> Result<(), (String, String)> {
        let mut names = BTreeSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            if key.file.is_some() == key.pem.is_some() {
                return Err((
                    format!("keys[{i}]"),
                    "exactly one of file, pem must be set".into(),
                ));
            }
            if !names.insert(key.name.as_str()) {
                return Err((format!("keys[{i}].name"), "duplicate key name".into()));
            }
        }
        if self.trust.is_empty() {
            return Err(("trust".into(), "must list at least one rule".into()));
        }
        for (i, rule) in self.trust.iter().enumerate() {
            for (j, key) in rule.keys.iter().enumerate() {
                if !names.contains(key.as_str()) {
                    return Err((
                        format!("trust[{i}].keys[{j}]"),
                        format!("no key named {key}"),
                    ));
                }
            }
            if rule.images.is_empty() {
                return Err((
                    format!("trust[{i}].images"),
                    "must list at least one glob".into(),
                ));
            }
            for (j, pattern) in rule.images.iter().enumerate() {
                if glob::Pattern::new(pattern).is_err() {
                    return Err((format!("trust[{i}].images[{j}]"), "invalid glob".into()));
                }
            }
            let needed = rule.require.needed(rule.keys.len());
            if needed > rule.keys.len() || (needed == 0 && !rule.keys.is_empty()) {
                return Err((
                    format!("trust[{i}].require"),
                    format!("threshold {needed} does not fit {} keys", rule.keys.len()),
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err(("timeout".into(), "must be greater than zero".into()));
        }
        for (field, value) in [
            ("maxImagesPerReview", self.max_images_per_review),
            (
                "maxConcurrentChecksPerReview",
                self.max_concurrent_checks_per_review,
            ),
            ("maxConcurrentChecks", self.max_concurrent_checks),
        ] {
            if value == 0 {
                return Err((field.into(), "must be greater than zero".into()));
            }
        }
        Ok(())
    }
}

/// Which images of an UPDATE are verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnUpdate {
    /// Images the old object already ran keep their verdict and are not fetched again, so an
    /// UPDATE that changes no image (a finalizer, a label) does not depend on registries.
    #[default]
    ChangedImages,
    /// Every image is verified again, as on CREATE.
    AllImages,
}

/// How strictly an image on a Wasm RuntimeClass must be a Wasm artifact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ArtifactCheck {
    /// Media types (or an image config with `architecture: wasm`) must say Wasm.
    #[default]
    MediaTypes,
    /// As `mediaTypes`, and the Wasm layer is fetched and must parse as a module or component.
    Parse,
    /// No check.
    None,
}

/// A public key that may sign images.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyConfig {
    /// Name used by trust rules and reported to policies as `signedBy`.
    pub name: String,
    /// PEM file (cosign's `cosign.pub`): ECDSA P-256/P-384, Ed25519 or RSA.
    pub file: Option<PathBuf>,
    /// Inline PEM.
    pub pem: Option<String>,
}

/// Which keys must have signed images matching `images`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustRule {
    /// Name reported in messages and to policies.
    pub name: String,
    /// Globs over `registry/repository` (no tag): `*` stays within a path segment, `**`
    /// spans segments; `nginx` is `docker.io/library/nginx`.
    pub images: Vec<String>,
    /// Keys that may sign. An empty list admits matching images unsigned (the artifact check
    /// still applies).
    #[serde(default)]
    pub keys: Vec<String>,
    /// `any` (default): one key; `all`: every key; a number: that many distinct keys.
    #[serde(default)]
    pub require: Require,
    /// Deny references by tag (`repo:v1`); only `repo@sha256:...` is admitted, so the kubelet
    /// pulls exactly the verified content.
    #[serde(default)]
    pub require_digest: bool,
}

/// How many of a rule's keys must have signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Require {
    /// `any` or `all`.
    Word(RequireWord),
    /// A threshold of distinct keys.
    Threshold(usize),
    /// One key (the default).
    #[default]
    #[serde(skip)]
    Any,
}

/// `any` or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequireWord {
    /// One key.
    Any,
    /// Every key of the rule.
    All,
}

impl Require {
    /// How many distinct keys out of `keys` must have signed.
    pub fn needed(self, keys: usize) -> usize {
        match self {
            Require::Any | Require::Word(RequireWord::Any) => keys.min(1),
            Require::Word(RequireWord::All) => keys,
            Require::Threshold(n) => n,
        }
    }
}

/// Access to one registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryAccess {
    /// `host[:port]` as in image references.
    pub host: String,
    /// Basic auth user.
    pub username: Option<String>,
    /// Basic auth password.
    pub password: Option<String>,
    /// File holding the password (a mounted Secret).
    pub password_file: Option<PathBuf>,
    /// Use plain HTTP. Every registry without this, loopback ones included, is HTTPS.
    #[serde(default)]
    pub insecure: bool,
    /// Hosts (globs over `host[:port]`) a blob download from this registry may be redirected
    /// to, such as a storage service; without credentials, over HTTPS (or plain HTTP to a host
    /// listed `insecure`). Any other redirect must stay on the registry's own host.
    #[serde(default)]
    pub blob_redirect_hosts: Vec<String>,
    /// Hosts (globs over `host[:port]`) other than the registry's own whose token service
    /// this registry's `WWW-Authenticate` challenge may name; any other realm is refused.
    #[serde(default)]
    pub token_realm_hosts: Vec<String>,
}

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

/// Kubernetes' spelling: `Fail` denies on internal errors (fail closed), `Ignore` admits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum FailurePolicy {
    /// Deny when a check cannot be completed.
    #[default]
    Fail,
    /// Admit (with a warning) when a check cannot be completed.
    Ignore,
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
    /// Request bodies held at once, in bytes (declared `Content-Length`, or `maxBodyBytes` when
    /// unknown), reserved before a body is read and kept until its review is answered; a
    /// request that cannot reserve its share within the review deadline gets 503. Bounds the
    /// webhook's memory: the default admits four maximum-size reviews at once.
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

/// How a policy's findings affect the review.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Violations deny the request.
    #[default]
    Enforce,
    /// Violations are returned as warnings; the request is admitted.
    Warn,
    /// Violations are only logged and counted.
    DryRun,
}

impl Mode {
    /// The name used in config files, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::DryRun => "dry-run",
        }
    }
}

/// One policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConfig {
    /// Unique name, used in messages, logs and metrics.
    pub name: String,
    /// A conftest/OPA-style Rego policy.
    pub rego: Option<RegoSource>,
    /// A Gatekeeper ConstraintTemplate and Constraint.
    pub gatekeeper: Option<GatekeeperSource>,
    /// A policy compiled to a WebAssembly component.
    pub wasm: Option<WasmSource>,
    /// `enforce` (default), `warn` or `dry-run`. For Gatekeeper policies the Constraint's
    /// `enforcementAction` is used when this is absent.
    pub mode: Option<Mode>,
    /// Parameters: `data.parameters` for Rego policies (Gatekeeper: the Constraint's
    /// `spec.parameters` unless given here), the settings of Wasm policies (`settings` is
    /// accepted as another name).
    #[serde(alias = "settings")]
    pub parameters: Option<serde_json::Value>,
    /// Namespaces the policy applies to.
    #[serde(default)]
    pub namespaces: NamespaceSelector,
    /// Overrides the server's `failurePolicy` for this policy.
    pub failure_policy: Option<FailurePolicy>,
    /// Overrides `limits.policyTimeout` for this policy.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// Rego files of a conftest/OPA-style policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegoSource {
    /// `.rego` files or directories (every `.rego` file in it except `*_test.rego`).
    pub files: Vec<PathBuf>,
    /// The package holding `deny`/`violation`/`warn`; default: the first file's package.
    pub package: Option<String>,
    /// Parse as Rego v0 (pre-1.0 syntax). Default: v1.
    #[serde(default)]
    pub rego_v0: bool,
}

/// A Gatekeeper policy: ConstraintTemplate and Constraint YAML files.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatekeeperSource {
    /// The ConstraintTemplate YAML.
    pub template: PathBuf,
    /// The Constraint YAML (its kind is the template's CRD kind).
    pub constraint: PathBuf,
}

/// Which namespaces a policy applies to: globs such as `team-*`. An empty `include` means all.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSelector {
    /// Namespaces the policy applies to (all when empty).
    #[serde(default)]
    pub include: Vec<String>,
    /// Namespaces it never applies to; wins over `include`.
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn default_true() -> bool {
    true
}

fn default_wasm_memory() -> Quantity {
    Quantity(64 << 20)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}

fn default_runtime_classes() -> BTreeSet<String> {
    DEFAULT_RUNTIME_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn default_registry_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(600)
}

fn default_negative_ttl() -> Duration {
    Duration::from_secs(10)
}

fn default_tag_ttl() -> Duration {
    Duration::from_secs(30)
}

fn default_max_images_per_review() -> usize {
    64
}

fn default_max_concurrent_checks_per_review() -> usize {
    16
}

fn default_max_concurrent_checks() -> usize {
    64
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_max_body_bytes() -> usize {
    3 * 1024 * 1024
}

fn default_max_bytes_in_flight() -> usize {
    4 * default_max_body_bytes()
}

fn default_max_json_values() -> usize {
    50_000
}

fn default_max_json_depth() -> usize {
    64
}

fn default_max_connections() -> usize {
    1024
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_body_read_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_review_timeout() -> Duration {
    Duration::from_secs(4)
}

fn default_policy_timeout() -> Duration {
    Duration::from_secs(1)
}

impl Config {
    /// Reads, parses and checks a configuration file; relative paths inside it are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &path.display().to_string(), base)
    }

    /// Parses and checks configuration text; `file` names it in errors, `base` resolves
    /// relative paths.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let config: Config = parse_yaml(text, file)?;
        config.finish(file, base)
    }

    /// Like [`Config::parse`], from an already parsed document (case files embed a config).
    pub fn from_json(
        doc: serde_json::Value,
        file: &str,
        base: &Path,
    ) -> Result<Config, ConfigError> {
        let config: Config =
            serde_path_to_error::deserialize(doc).map_err(|e| path_error(file, e))?;
        config.finish(file, base)
    }

    fn finish(mut self, file: &str, base: &Path) -> Result<Config, ConfigError> {
        self.check(file)?;
        self.resolve_paths(base);
        Ok(self)
    }

    fn check(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |field: String, message: &str| ConfigError::Invalid {
            file: file.to_string(),
            field,
            message: message.to_string(),
        };
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(invalid(
                "tls".into(),
                "certFile and keyFile must be given together",
            ));
        }
        if self.limits.review_timeout.is_zero() {
            return Err(invalid(
                "limits.reviewTimeout".into(),
                "must be greater than zero",
            ));
        }
        // A body the budget cannot hold would wait forever.
        if self.limits.max_bytes_in_flight < self.limits.max_body_bytes {
            return Err(invalid(
                "limits.maxBytesInFlight".into(),
                "must be at least limits.maxBodyBytes",
            ));
        }
        if u32::try_from(self.limits.max_bytes_in_flight).is_err() {
            return Err(invalid(
                "limits.maxBytesInFlight".into(),
                "must be below 4Gi",
            ));
        }
        if self.limits.max_connections == 0 {
            return Err(invalid(
                "limits.maxConnections".into(),
                "must be greater than zero",
            ));
        }
        for (field, value) in [
            ("limits.handshakeTimeout", self.limits.handshake_timeout),
            ("limits.idleTimeout", self.limits.idle_timeout),
            ("limits.bodyReadTimeout", self.limits.body_read_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(field.into(), "must be greater than zero"));
            }
        }
        if self.limits.max_json_values == 0 || self.limits.max_json_depth < 2 {
            return Err(invalid(
                "limits".into(),
                "maxJsonValues must be at least 1 and maxJsonDepth at least 2",
            ));
        }
        let mut names = BTreeSet::new();
        for (i, policy) in self.policies.iter().enumerate() {
            let at = |field: &str| format!("policies[{i}]{field}");
            if policy.name.is_empty() {
                return Err(invalid(at(".name"), "must not be empty"));
            }
            if !names.insert(policy.name.as_str()) {
                return Err(invalid(at(".name"), "duplicate policy name"));
            }
            let sources = usize::from(policy.rego.is_some())
                + usize::from(policy.gatekeeper.is_some())
                + usize::from(policy.wasm.is_some());
            if sources != 1 {
                return Err(invalid(
                    at(""),
                    "exactly one of rego, gatekeeper, wasm must be set",
                ));
            }
            if let Some(wasm) = &policy.wasm {
                if wasm.file.is_some() == wasm.image.is_some() {
                    return Err(invalid(
                        at(".wasm"),
                        "exactly one of file, image must be set",
                    ));
                }
                if wasm.image.is_some() && self.image_verification.is_none() {
                    return Err(invalid(
                        at(".wasm.image"),
                        "a policy image needs imageVerification (its keys and trust rules) to check its signature",
                    ));
                }
                if wasm.memory_limit.0 < 1 << 16 {
                    return Err(invalid(
                        at(".wasm.memoryLimit"),
                        "must be at least one Wasm page (64Ki)",
                    ));
                }
                if wasm.fuel == Some(0) {
                    return Err(invalid(at(".wasm.fuel"), "must be greater than zero"));
                }
            }
            if let Some(rego) = &policy.rego
                && rego.files.is_empty()
            {
                return Err(invalid(at(".rego.files"), "must list at least one file"));
            }
            for (j, pattern) in policy
                .namespaces
                .include
                .iter()
                .chain(&policy.namespaces.exclude)
                .enumerate()
            {
                if glob::Pattern::new(pattern).is_err() {
                    return Err(invalid(at(&format!(".namespaces[{j}]")), "invalid glob"));
                }
            }
        }
        if let Some(images) = &self.image_verification {
            images.check().map_err(|(field, message)| {
                invalid(format!("imageVerification.{field}"), &message)
            })?;
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for p in [
            &mut self.tls.cert_file,
            &mut self.tls.key_file,
            &mut self.tls.state_dir,
            &mut self.tls.client_ca_file,
        ]
        .into_iter()
        .flatten()
        {
            resolve(p);
        }
        if let Some(images) = &mut self.image_verification {
            images
                .keys
                .iter_mut()
                .filter_map(|k| k.file.as_mut())
                .chain(images.docker_config.as_mut())
                .chain(
                    images
                        .registries
                        .iter_mut()
                        .filter_map(|r| r.password_file.as_mut()),
                )
                .for_each(resolve);
        }
        for policy in &mut self.policies {
            if let Some(rego) = &mut policy.rego {
                rego.files.iter_mut().for_each(resolve);
            }
            if let Some(gk) = &mut policy.gatekeeper {
                resolve(&mut gk.template);
                resolve(&mut gk.constraint);
            }
            if let Some(file) = policy.wasm.as_mut().and_then(|w| w.file.as_mut()) {
                resolve(file);
            }
        }
        if let Some(dir) = &mut self.wasm.cache_dir {
            resolve(dir);
        }
        if let Some(key) = &mut self.wasm.cache_key_file {
            resolve(key);
        }
    }
}

/// Deserializes YAML, reporting the path of the field that failed.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ConfigError> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| path_error(file, e))
}

fn path_error<E: std::fmt::Display>(file: &str, e: serde_path_to_error::Error<E>) -> ConfigError {
    let field = e.path().to_string();
    ConfigError::Invalid {
        file: file.to_string(),
        field: if field == "." { "(root)".into() } else { field },
        message: e.into_inner().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.yaml", Path::new("/etc/meshgate"))
    }

    #[test]
    fn defaults_cover_every_wasm_runtime() {
        let config = parse("{}").unwrap();
        assert_eq!(config.listen.port(), 8443);
        assert!(config.runtime_classes.contains("spin"));
        assert_eq!(config.runtime_classes.len(), 7);
        assert_eq!(config.failure_policy, FailurePolicy::Fail);
        assert_eq!(config.limits.max_body_bytes, 3 * 1024 * 1024);
    }

    #[test]
    fn bad_field_is_reported_with_its_path() {
        let text = r#"
policies:
  - name: a
    rego: {files: [a.rego]}
  - name: b
    rego: {files: [b.rego]}
  - name: c
    rego: {files: [c.rego]}
    mode: block
"#;
        let err = parse(text).unwrap_err().to_string();
        assert!(
            err.contains("policies[2].mode: unknown variant `block`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_and_missing_sources_are_refused() {
        let err = parse("listen: 127.0.0.1:1\nlisten_addr: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `listen_addr`"), "{err}");
        let err = parse("policies: [{name: a}]").unwrap_err().to_string();
        assert!(
            err.contains("policies[0]: exactly one of rego, gatekeeper, wasm"),
            "{err}"
        );
        let err = parse("policies: [{name: a, rego: {files: [x]}}, {name: a, rego: {files: [y]}}]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("policies[1].name: duplicate"), "{err}");
        let err = parse("tls: {certFile: a.pem}").unwrap_err().to_string();
        assert!(err.contains("certFile and keyFile"), "{err}");
    }

    #[test]
    fn front_door_limits_and_client_ca_are_checked() {
        let config = parse("probeListen: 127.0.0.1:8081\ntls: {clientCaFile: ca/api.crt}").unwrap();
        assert_eq!(
            config.limits.max_bytes_in_flight,
            4 * config.limits.max_body_bytes
        );
        assert_eq!(config.limits.max_json_values, 50_000);
        assert_eq!(config.limits.max_connections, 1024);
        assert_eq!(config.limits.handshake_timeout, Duration::from_secs(5));
        assert_eq!(config.limits.idle_timeout, Duration::from_secs(5));
        assert_eq!(config.limits.body_read_timeout, Duration::from_secs(2));
        assert_eq!(
            config.tls.client_ca_file.as_deref(),
            Some(Path::new("/etc/meshgate/ca/api.crt"))
        );
        assert_eq!(config.probe_listen.map(|a| a.port()), Some(8081));
        for (limits, error) in [
            (
                "{maxBodyBytes: 2000, maxBytesInFlight: 1000}",
                "limits.maxBytesInFlight: must be at least limits.maxBodyBytes",
            ),
            ("{maxBytesInFlight: 8589934592}", "must be below 4Gi"),
            ("{maxJsonValues: 0}", "maxJsonValues must be at least 1"),
            (
                "{maxConnections: 0}",
                "limits.maxConnections: must be greater than zero",
            ),
            (
                "{idleTimeout: 0s}",
                "limits.idleTimeout: must be greater than zero",
            ),
        ] {
            let err = parse(&format!("limits: {limits}")).unwrap_err().to_string();
            assert!(err.contains(error), "{limits}: {err}");
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_config_file() {
        let config =
            parse("policies: [{name: a, rego: {files: [p/a.rego]}, timeout: 250ms}]").unwrap();
        let policy = &config.policies[0];
        assert_eq!(
            policy.rego.as_ref().unwrap().files[0],
            PathBuf::from("/etc/meshgate/p/a.rego")
        );
        assert_eq!(policy.timeout, Some(Duration::from_millis(250)));
    }

    #[test]
    fn wasm_sources_and_quantities_are_checked() {
        let config = parse(
            "wasm: {cacheDir: cache, cacheKeyFile: key}\npolicies: [{name: a, wasm: {file: p.wasm, memoryLimit: 16Mi}, settings: {x: 1}}]",
        )
        .unwrap();
        let wasm = config.policies[0].wasm.as_ref().unwrap();
        assert_eq!(wasm.memory_limit, Quantity(16 << 20));
        assert_eq!(
            wasm.file.as_deref(),
            Some(Path::new("/etc/meshgate/p.wasm"))
        );
        assert_eq!(
            config.policies[0].parameters,
            Some(serde_json::json!({"x": 1}))
        );
        assert_eq!(
            config.wasm.cache_dir.as_deref(),
            Some(Path::new("/etc/meshgate/cache"))
        );
        assert_eq!(
            config.wasm.cache_key_file.as_deref(),
            Some(Path::new("/etc/meshgate/key"))
        );
        assert_eq!(Quantity::parse("1Gi"), Ok(Quantity(1 << 30)));
        assert_eq!(Quantity::parse("4096"), Ok(Quantity(4096)));
        for (policy, error) in [
            (
                "{file: a, image: b}",
                "policies[0].wasm: exactly one of file, image",
            ),
            ("{}", "policies[0].wasm: exactly one of file, image"),
            (
                "{image: r/p:1}",
                "policies[0].wasm.image: a policy image needs imageVerification",
            ),
            (
                "{file: a, memoryLimit: 64MB}",
                "policies[0].wasm.memoryLimit",
            ),
            ("{file: a, memoryLimit: 1Ki}", "at least one Wasm page"),
            (
                "{file: a, fuel: 0}",
                "policies[0].wasm.fuel: must be greater than zero",
            ),
        ] {
            let err = parse(&format!("policies: [{{name: a, wasm: {policy}}}]"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(error), "{policy}: {err}");
        }
    }

    #[test]
    fn trust_rules_are_checked_and_require_counts_keys() {
        let base = "imageVerification:\n  keys: [{name: a, pem: x}, {name: b, file: b.pub}]\n";
        let config = parse(&format!(
            "{base}  trust:\n    - {{name: t, images: ['ghcr.io/**'], keys: [a, b], require: 2}}\n\
             \x20   - {{name: u, images: ['*/x'], keys: [a, b], require: all}}\n\
             \x20   - {{name: v, images: ['**'], keys: [a, b]}}\n"
        ))
        .unwrap();
        let images = config.image_verification.unwrap();
        let needed: Vec<usize> = images
            .trust
            .iter()
            .map(|r| r.require.needed(r.keys.len()))
            .collect();
        assert_eq!(needed, vec![2, 2, 1]);
        assert_eq!(
            images.keys[1].file.as_deref(),
            Some(Path::new("/etc/meshgate/b.pub"))
        );
        for (trust, error) in [
            (
                "[{name: t, images: [x], keys: [c]}]",
                "trust[0].keys[0]: no key named c",
            ),
            (
                "[{name: t, images: [x], keys: [a], require: 2}]",
                "trust[0].require",
            ),
            ("[]", "imageVerification.trust: must list at least one rule"),
            (
                "[{name: t, images: [x], keys: [a], require: some}]",
                "trust[0]",
            ),
        ] {
            let err = parse(&format!("{base}  trust: {trust}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(error), "{trust}: {err}");
        }
        let err = parse("imageVerification: {keys: [{name: a}], trust: [{name: t, images: [x]}]}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one of file, pem"), "{err}");
    }

    #[test]
    fn images_fail_closed_unless_their_own_section_says_ignore() {
        let section = "imageVerification: {keys: [], trust: [{name: t, images: ['**']";
        // The server's Ignore is for policy errors; it does not reach images.
        let config = parse(&format!("failurePolicy: Ignore\n{section}}}]}}")).unwrap();
        let images = config.image_verification.unwrap();
        assert_eq!(images.failure_policy, FailurePolicy::Fail);
        assert_eq!(images.on_update, OnUpdate::ChangedImages);
        assert!(!images.trust[0].require_digest);
        let config = parse(&format!(
            "{section}, requireDigest: true}}], failurePolicy: Ignore, onUpdate: allImages}}"
        ))
        .unwrap();
        let images = config.image_verification.unwrap();
        assert_eq!(images.failure_policy, FailurePolicy::Ignore);
        assert_eq!(images.on_update, OnUpdate::AllImages);
        assert!(images.trust[0].require_digest);
        let err = parse(&format!("{section}}}], onUpdate: never}}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("imageVerification.onUpdate"), "{err}");
    }
}
