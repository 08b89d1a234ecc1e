//! `policies` and `wasm`: each policy's source (one engine per entry), mode, parameters and
//! scope, and the engine that runs Wasm policies.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{FailurePolicy, Mode};

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

/// One policy, compiled: its engine's source, and its scope with globs parsed.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Unique name, used in messages, logs and metrics.
    pub name: String,
    /// The engine and what it loads.
    pub source: PolicySource,
    /// `enforce` (default), `warn` or `dry-run`. For Gatekeeper policies the Constraint's
    /// `enforcementAction` is used when this is absent.
    pub mode: Option<Mode>,
    /// Parameters: `data.parameters` for Rego policies (Gatekeeper: the Constraint's
    /// `spec.parameters` unless given here), the settings of Wasm policies.
    pub parameters: Option<serde_json::Value>,
    /// Namespaces the policy applies to.
    pub namespaces: NamespaceSelector,
    /// Overrides the server's `failurePolicy` for this policy.
    pub failure_policy: Option<FailurePolicy>,
    /// Overrides `limits.policyTimeout` for this policy.
    pub timeout: Option<Duration>,
    /// The kinds of object the policy judges.
    pub kinds: PolicyKinds,
}

/// Objects that reach the policies, and the kinds a policy judges: workloads count as `Pod`
/// (they are judged as the Pod their template makes).
pub const POLICY_KINDS: [&str; 4] = ["Pod", "WasmPlugin", "EnvoyFilter", "EnvoyExtensionPolicy"];

/// Which kinds a policy judges: `kinds: [...]` in the entry. Without it, Rego and Wasm
/// policies judge pods only (the kind they were written for before the mesh's own Wasm reached
/// the webhook), and Gatekeeper policies every kind their Constraint's `match` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyKinds {
    /// Every kind (`kinds: ["*"]`, or a Gatekeeper policy without `kinds`).
    All,
    /// These kinds.
    Only(Vec<String>),
}

impl PolicyKinds {
    /// Whether objects of `kind` (`Pod` for pods and workloads) are judged.
    pub fn contains(&self, kind: &str) -> bool {
        match self {
            PolicyKinds::All => true,
            PolicyKinds::Only(kinds) => kinds.iter().any(|k| k == kind),
        }
    }
}

/// Which engine runs a policy. A new engine is a new variant: every `match` on it (loading,
/// path resolution, the Wasm runtime's sizing) then fails to compile until it is handled.
#[derive(Debug, Clone)]
pub enum PolicySource {
    /// A conftest/OPA-style Rego policy.
    Rego(RegoSource),
    /// A Gatekeeper ConstraintTemplate and Constraint.
    Gatekeeper(GatekeeperSource),
    /// A policy compiled to a WebAssembly component.
    Wasm(WasmSource),
}

impl PolicySource {
    /// The Wasm source, when the policy is one.
    pub fn wasm(&self) -> Option<&WasmSource> {
        match self {
            PolicySource::Wasm(wasm) => Some(wasm),
            PolicySource::Rego(_) | PolicySource::Gatekeeper(_) => None,
        }
    }
}

/// One policy as written: one source field per engine, exactly one of them set.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) name: String,
    rego: Option<RegoSource>,
    gatekeeper: Option<GatekeeperSource>,
    wasm: Option<WasmSource>,
    mode: Option<Mode>,
    // `settings` is accepted as another name, as Wasm policies call them.
    #[serde(alias = "settings")]
    parameters: Option<serde_json::Value>,
    #[serde(default)]
    namespaces: RawNamespaces,
    failure_policy: Option<FailurePolicy>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    kinds: Option<Vec<String>>,
}

impl RawPolicy {
    /// Checks the entry and compiles it. Errors are (field path below the entry, message).
    pub(super) fn compile(
        self,
        has_image_verification: bool,
    ) -> Result<PolicyConfig, (String, String)> {
        let invalid = |field: &str, message: &str| Err((field.to_string(), message.to_string()));
        if self.name.is_empty() {
            return invalid(".name", "must not be empty");
        }
        let source = match (self.rego, self.gatekeeper, self.wasm) {
            (Some(rego), None, None) => {
                if rego.files.is_empty() {
                    return invalid(".rego.files", "must list at least one file");
                }
                PolicySource::Rego(rego)
            }
            (None, Some(gatekeeper), None) => PolicySource::Gatekeeper(gatekeeper),
            (None, None, Some(wasm)) => {
                wasm.check(has_image_verification)?;
                PolicySource::Wasm(wasm)
            }
            _ => return invalid("", "exactly one of rego, gatekeeper, wasm must be set"),
        };
        let kinds = match self.kinds {
            None if matches!(source, PolicySource::Gatekeeper(_)) => PolicyKinds::All,
            None => PolicyKinds::Only(vec!["Pod".into()]),
            Some(kinds) if kinds.iter().any(|k| k == "*") => PolicyKinds::All,
            Some(kinds) => {
                if kinds.is_empty() {
                    return invalid(".kinds", "must list at least one kind, or \"*\"");
                }
                if let Some((i, bad)) = kinds
                    .iter()
                    .enumerate()
                    .find(|(_, k)| !POLICY_KINDS.contains(&k.as_str()))
                {
                    return Err((
                        format!(".kinds[{i}]"),
                        format!(
                            "unknown kind {bad}: one of {} (workloads are judged as Pod), or \"*\"",
                            POLICY_KINDS.join(", ")
                        ),
                    ));
                }
                PolicyKinds::Only(kinds)
            }
        };
        Ok(PolicyConfig {
            name: self.name,
            source,
            kinds,
            mode: self.mode,
            parameters: self.parameters,
            namespaces: self.namespaces.compile()?,
            failure_policy: self.failure_policy,
            timeout: self.timeout,
        })
    }
}

impl WasmSource {
    fn check(&self, has_image_verification: bool) -> Result<(), (String, String)> {
        let invalid = |field: &str, message: &str| Err((field.to_string(), message.to_string()));
        if self.file.is_some() == self.image.is_some() {
            return invalid(".wasm", "exactly one of file, image must be set");
        }
        if self.image.is_some() && !has_image_verification {
            return invalid(
                ".wasm.image",
                "a policy image needs imageVerification (its keys and trust rules) to check its signature",
            );
        }
        if self.memory_limit.0 < 1 << 16 {
            return invalid(".wasm.memoryLimit", "must be at least one Wasm page (64Ki)");
        }
        if self.fuel == Some(0) {
            return invalid(".wasm.fuel", "must be greater than zero");
        }
        Ok(())
    }
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

/// Which namespaces a policy applies to, as globs such as `team-*`; an empty `include` means
/// all, and `exclude` wins.
#[derive(Debug, Clone, Default)]
pub struct NamespaceSelector {
    include: Vec<glob::Pattern>,
    exclude: Vec<glob::Pattern>,
}

impl NamespaceSelector {
    /// Whether a policy with this selector applies to `namespace`.
    pub fn applies_to(&self, namespace: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(namespace)))
            && !self.exclude.iter().any(|p| p.matches(namespace))
    }
}

/// `namespaces` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawNamespaces {
    /// Namespaces the policy applies to (all when empty).
    #[serde(default)]
    include: Vec<String>,
    /// Namespaces it never applies to; wins over `include`.
    #[serde(default)]
    exclude: Vec<String>,
}

impl RawNamespaces {
    fn compile(self) -> Result<NamespaceSelector, (String, String)> {
        // Numbered across both lists, as the field has always been reported.
        let mut index = 0;
        let mut globs = |patterns: Vec<String>| {
            patterns
                .into_iter()
                .map(|p| {
                    let at = index;
                    index += 1;
                    glob::Pattern::new(&p)
                        .map_err(|_| (format!(".namespaces[{at}]"), "invalid glob".to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(NamespaceSelector {
            include: globs(self.include)?,
            exclude: globs(self.exclude)?,
        })
    }
}

pub(super) fn default_true() -> bool {
    true
}

pub(super) fn default_wasm_memory() -> Quantity {
    Quantity(64 << 20)
}
