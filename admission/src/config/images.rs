//! `imageVerification`: keys, trust rules, registry access and the bounds of image checks.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{FailurePolicy, Mode};

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
    /// Keyless signers, by name: a Fulcio certificate's subject and OIDC issuer.
    #[serde(default)]
    pub identities: Vec<IdentityConfig>,
    /// The Sigstore trusted root keyless signatures are verified against, read at startup
    /// (`{file: PATH}` or `{inline: {...}}`); default: the Sigstore public-good root built in.
    #[serde(default)]
    pub trusted_root: Option<TrustedRootConfig>,
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
    pub(super) fn check(&self) -> Result<(), (String, String)> {
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
        if let Some(root) = &self.trusted_root
            && root.file.is_some() == root.inline.is_some()
        {
            return Err((
                "trustedRoot".into(),
                "exactly one of file, inline must be set".into(),
            ));
        }
        let mut identities = BTreeSet::new();
        for (i, identity) in self.identities.iter().enumerate() {
            if names.contains(identity.name.as_str()) || !identities.insert(identity.name.as_str())
            {
                return Err((
                    format!("identities[{i}].name"),
                    "duplicate key or identity name".into(),
                ));
            }
            for (field, exact, pattern) in [
                ("subject", &identity.subject, &identity.subject_reg_exp),
                ("issuer", &identity.issuer, &identity.issuer_reg_exp),
            ] {
                if exact.is_some() == pattern.is_some() {
                    return Err((
                        format!("identities[{i}]"),
                        format!("exactly one of {field}, {field}RegExp must be set"),
                    ));
                }
                if let Some(Err(e)) = pattern
                    .as_deref()
                    .map(crate::signing::keyless::Match::regex)
                {
                    return Err((format!("identities[{i}].{field}RegExp"), e.to_string()));
                }
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
            for (j, identity) in rule.identities.iter().enumerate() {
                if !identities.contains(identity.as_str()) {
                    return Err((
                        format!("trust[{i}].identities[{j}]"),
                        format!("no identity named {identity}"),
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
            for (j, predicate_type) in rule.attestations.iter().enumerate() {
                if predicate_type.is_empty() {
                    return Err((
                        format!("trust[{i}].attestations[{j}]"),
                        "must name a predicate type".into(),
                    ));
                }
                // Image signatures are statements of this type; they count as signatures.
                if predicate_type == crate::signing::bundle::SIGN_PREDICATE_TYPE {
                    return Err((
                        format!("trust[{i}].attestations[{j}]"),
                        "is the predicate type of image signatures, not of an attestation".into(),
                    ));
                }
                if rule.identities.is_empty() {
                    return Err((
                        format!("trust[{i}].attestations[{j}]"),
                        "an attestation must be signed by one of the rule's identities: list some"
                            .into(),
                    ));
                }
            }
            let signers = rule.signers();
            let needed = rule.require.needed(signers);
            if needed > signers || (needed == 0 && signers > 0) {
                return Err((
                    format!("trust[{i}].require"),
                    format!("threshold {needed} does not fit {signers} keys and identities"),
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
    /// Keys that may sign. With no keys and no identities, matching images are admitted
    /// unsigned (the artifact check still applies).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Identities (names from `identities`) that may sign keyless; `require` counts keys and
    /// identities together, each name backed by a signer of its own.
    #[serde(default)]
    pub identities: Vec<String>,
    /// In-toto predicate types (e.g. `https://slsa.dev/provenance/v1`) of which the image must
    /// carry a keyless attestation (a DSSE bundle referrer) verified for one of the rule's
    /// identities; policies read each predicate as `attestations[<type>]` in the image's facts.
    #[serde(default)]
    pub attestations: Vec<String>,
    /// `any` (default): one key; `all`: every key; a number: that many distinct keys.
    #[serde(default)]
    pub require: Require,
    /// Deny references by tag (`repo:v1`); only `repo@sha256:...` is admitted, so the kubelet
    /// pulls exactly the verified content.
    #[serde(default)]
    pub require_digest: bool,
}

impl TrustRule {
    /// How many keys and identities may sign.
    pub fn signers(&self) -> usize {
        self.keys.len() + self.identities.len()
    }
}

/// A keyless signer: a Fulcio certificate naming `subject` (a URI or e-mail subject
/// alternative name) proven to `issuer`. Each is exact or a regular expression matching the
/// whole text.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityConfig {
    /// Name used by trust rules and reported to policies as `signedBy`.
    pub name: String,
    /// The exact subject, e.g. `https://github.com/acme/filters/.github/workflows/release.yml@refs/heads/main`.
    pub subject: Option<String>,
    /// Or a regular expression over it.
    pub subject_reg_exp: Option<String>,
    /// The exact OIDC issuer, e.g. `https://token.actions.githubusercontent.com`.
    pub issuer: Option<String>,
    /// Or a regular expression over it.
    pub issuer_reg_exp: Option<String>,
}

/// Where the Sigstore trusted root comes from: exactly one of `file` and `inline`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustedRootConfig {
    /// A `trusted_root.json` file.
    pub file: Option<PathBuf>,
    /// The trusted root itself.
    pub inline: Option<serde_json::Value>,
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

pub(super) fn default_registry_timeout() -> Duration {
    Duration::from_secs(3)
}

pub(super) fn default_cache_ttl() -> Duration {
    Duration::from_secs(600)
}

pub(super) fn default_negative_ttl() -> Duration {
    Duration::from_secs(10)
}

pub(super) fn default_tag_ttl() -> Duration {
    Duration::from_secs(30)
}

pub(super) fn default_max_images_per_review() -> usize {
    64
}

pub(super) fn default_max_concurrent_checks_per_review() -> usize {
    16
}

pub(super) fn default_max_concurrent_checks() -> usize {
    64
}
