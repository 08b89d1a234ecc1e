//! The webhook's YAML configuration (`meshgate serve --config FILE`).
//!
//! Field names are camelCase, as in Kubernetes objects, and unknown fields are refused so a typo
//! never silently disables a check. Errors name the path of the bad field, e.g.
//! `policies[2].mode: unknown variant `block``.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod extensions;
mod images;
mod policies;
mod server;

pub use extensions::*;
pub use images::*;
pub use policies::*;
pub use server::*;

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

/// The whole configuration, checked and compiled (globs parsed, each policy's engine chosen):
/// what the server and the pipeline use.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTPS server listens on.
    pub listen: SocketAddr,
    /// A plain-HTTP address serving only `/healthz`, `/readyz` and `/metrics`, for kubelet
    /// probes and scrapers when `tls.clientCaFile` makes the HTTPS listener refuse clients
    /// without a certificate. Off when absent.
    pub probe_listen: Option<SocketAddr>,
    /// Serving certificate.
    pub tls: TlsConfig,
    /// RuntimeClass names whose pods are checked; every other pod is admitted without evaluation.
    pub runtime_classes: BTreeSet<String>,
    /// What an internal error (policy failure, deadline) means for the review.
    pub failure_policy: FailurePolicy,
    /// Resource bounds.
    pub limits: Limits,
    /// Log format and level.
    pub logging: Logging,
    /// The policies, evaluated in order.
    pub policies: Vec<PolicyConfig>,
    /// Signature and artifact checks of the images of selected pods; off when absent.
    pub image_verification: Option<ImageVerification>,
    /// How Wasm policies are compiled and instantiated.
    pub wasm: WasmRuntimeConfig,
    /// How the modules of WasmPlugins, EnvoyFilters and EnvoyExtensionPolicies are checked.
    pub extensions: Extensions,
    /// What each Wasm RuntimeClass can run, by RuntimeClass name; a pod whose image does not
    /// fit is denied.
    pub runtimes: BTreeMap<String, RuntimeFit>,
}

/// The file as written; [`Config`] is what it compiles to (same fields, policies compiled).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    probe_listen: Option<SocketAddr>,
    #[serde(default)]
    tls: TlsConfig,
    #[serde(default = "default_runtime_classes")]
    runtime_classes: BTreeSet<String>,
    #[serde(default)]
    failure_policy: FailurePolicy,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    logging: Logging,
    #[serde(default)]
    policies: Vec<RawPolicy>,
    image_verification: Option<ImageVerification>,
    #[serde(default)]
    wasm: WasmRuntimeConfig,
    #[serde(default)]
    extensions: Extensions,
    #[serde(default)]
    runtimes: BTreeMap<String, RuntimeFit>,
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

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}

fn default_runtime_classes() -> BTreeSet<String> {
    DEFAULT_RUNTIME_CLASSES
        .iter()
        .map(|s| s.to_string())
        .collect()
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
        let raw: RawConfig = parse_yaml(text, file)?;
        Self::compile(raw, file, base)
    }

    /// Like [`Config::parse`], from an already parsed document (case files embed a config).
    pub fn from_json(
        doc: serde_json::Value,
        file: &str,
        base: &Path,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            serde_path_to_error::deserialize(doc).map_err(|e| path_error(file, e))?;
        Self::compile(raw, file, base)
    }

    /// Checks every section and compiles the policies; each error names its field.
    fn compile(raw: RawConfig, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let invalid = |(field, message): (String, String)| ConfigError::Invalid {
            file: file.to_string(),
            field,
            message,
        };
        raw.tls.check().map_err(invalid)?;
        raw.limits.check().map_err(invalid)?;
        let mut names = BTreeSet::new();
        let has_image_verification = raw.image_verification.is_some();
        let mut policies = Vec::with_capacity(raw.policies.len());
        for (i, policy) in raw.policies.into_iter().enumerate() {
            let at = |field: &str| format!("policies[{i}]{field}");
            if !policy.name.is_empty() && !names.insert(policy.name.clone()) {
                return Err(invalid((at(".name"), "duplicate policy name".into())));
            }
            let compiled = policy
                .compile(has_image_verification)
                .map_err(|(field, message)| invalid((at(&field), message)))?;
            policies.push(compiled);
        }
        if let Some(images) = &raw.image_verification {
            images.check().map_err(|(field, message)| {
                invalid((format!("imageVerification.{field}"), message))
            })?;
        }
        raw.extensions
            .check()
            .map_err(|(field, message)| invalid((format!("extensions.{field}"), message)))?;
        let parses_modules = raw
            .image_verification
            .as_ref()
            .is_some_and(|i| i.artifact_check == ArtifactCheck::Parse);
        check_runtimes(&raw.runtimes, parses_modules).map_err(invalid)?;
        let mut config = Config {
            listen: raw.listen,
            probe_listen: raw.probe_listen,
            tls: raw.tls,
            runtime_classes: raw.runtime_classes,
            failure_policy: raw.failure_policy,
            limits: raw.limits,
            logging: raw.logging,
            policies,
            image_verification: raw.image_verification,
            wasm: raw.wasm,
            extensions: raw.extensions,
            runtimes: raw.runtimes,
        };
        config.resolve_paths(base);
        Ok(config)
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
            match &mut policy.source {
                PolicySource::Rego(rego) => rego.files.iter_mut().for_each(resolve),
                PolicySource::Gatekeeper(gk) => {
                    resolve(&mut gk.template);
                    resolve(&mut gk.constraint);
                }
                PolicySource::Wasm(wasm) => wasm.file.iter_mut().for_each(resolve),
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
mod tests;
