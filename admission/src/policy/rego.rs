//! conftest/OPA-style Rego policies: a package with `deny` (or `violation`) and optional `warn`
//! sets of messages; `input` is the AdmissionReview request, `data.parameters` the policy's
//! parameters.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::opa_compat;
use super::rego_runtime::{Backend, RegoRuntime};
use super::{Evaluate, Findings, Input, LoadError, PolicyError, messages};
use crate::config::RegoSource;

/// Rules read for violations and for warnings, in the order they are evaluated.
const DENY_RULES: [&str; 2] = ["deny", "violation"];
const WARN_RULE: &str = "warn";

/// A loaded conftest/OPA-style policy: compiled once, evaluated per request with no state
/// shared between requests.
pub struct RegoPolicy {
    evaluator: RegoRuntime,
    /// How many of the evaluator's rules (the first ones) give violations; the rest warnings.
    deny_rules: usize,
}

impl RegoPolicy {
    /// Parses the files, checks that the package declares `deny`, `violation` or `warn`, and
    /// prepares the engine.
    pub fn load(
        name: &str,
        source: &RegoSource,
        parameters: &serde_json::Value,
        timeout: Duration,
    ) -> Result<Self, LoadError> {
        Self::compile(source, parameters, timeout).map_err(|e| LoadError::new(name, e))
    }

    fn compile(
        source: &RegoSource,
        parameters: &serde_json::Value,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let files = rego_files(&source.files).map_err(Error::Files)?;
        let mut engine = regorus::Engine::new();
        let version = if source.rego_v0 {
            opa_compat::Version::V0
        } else {
            opa_compat::Version::V1
        };
        let mut packages = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).map_err(|e| Error::Read {
                path: file.clone(),
                message: e.to_string(),
            })?;
            let path = file.display().to_string();
            let loaded = opa_compat::add_policy(&mut engine, &path, &text, version)?;
            packages.push((path, loaded.package));
        }
        let package = match &source.package {
            Some(p) => qualified(p),
            None => packages
                .first()
                .map(|(_, p)| p.clone())
                .ok_or(Error::NoFiles)?,
        };
        let declares = |rule: &str| -> Result<bool, Error> {
            for (path, p) in &packages {
                if *p == package
                    && engine
                        .has_declared_rule_rooted_at(path, rule)
                        .map_err(|e| Error::Rules(format!("{e:#}")))?
                {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        let mut deny_rules = Vec::new();
        for rule in DENY_RULES {
            if declares(rule)? {
                deny_rules.push(format!("{package}.{rule}"));
            }
        }
        let warn_rule = declares(WARN_RULE)?.then(|| format!("{package}.{WARN_RULE}"));
        if deny_rules.is_empty() && warn_rule.is_none() {
            return Err(Error::NoVerdictRules(package));
        }
        let count = deny_rules.len();
        let evaluator = RegoRuntime::new(
            engine,
            deny_rules.into_iter().chain(warn_rule).collect(),
            serde_json::json!({ "parameters": parameters }),
            timeout,
            // A builtin's error is the policy's error, which its failurePolicy decides (fail
            // closed by default), rather than a silently undefined check.
            true,
            true,
        )
        .map_err(Error::Parameters)?;
        Ok(Self {
            evaluator,
            deny_rules: count,
        })
    }

    /// The regorus engine the policy runs on.
    pub fn backend(&self) -> Backend {
        self.evaluator.backend()
    }
}

impl Evaluate for RegoPolicy {
    fn engine(&self) -> &'static str {
        self.evaluator.backend().as_str()
    }

    fn evaluate(&self, input: &Input) -> Result<Findings, PolicyError> {
        let values = self.evaluator.eval(input.rego().clone())?;
        let mut findings = Findings::default();
        for (i, value) in values.iter().enumerate() {
            if i < self.deny_rules {
                findings.violations.extend(messages("deny", value)?);
            } else {
                findings.warnings.extend(messages("warn", value)?);
            }
        }
        Ok(findings)
    }
}

/// Why a conftest-style policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path of `files` is neither a file nor a directory of `.rego` files.
    #[error("{0}")]
    Files(String),
    /// A file could not be read.
    #[error("{}: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// A module does not parse or load (the OPA pass, then regorus).
    #[error(transparent)]
    Rego(#[from] opa_compat::Error),
    /// `files` holds no `.rego` file.
    #[error("no .rego files found")]
    NoFiles,
    /// The rule heads could not be read.
    #[error("{0}")]
    Rules(String),
    /// The package has nothing to give a verdict.
    #[error("package {0} declares no deny, violation or warn rule")]
    NoVerdictRules(String),
    /// The parameters (`data.parameters`) were refused.
    #[error("parameters: {0}")]
    Parameters(String),
}

/// `data.`-qualified package name.
fn qualified(package: &str) -> String {
    if package.starts_with("data.") {
        package.to_string()
    } else {
        format!("data.{package}")
    }
}

/// Expands directories to their `.rego` files (tests excluded), sorted for a stable order.
pub(crate) fn rego_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| is_policy_file(p))
                .collect();
            found.sort();
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(format!("{}: no such file or directory", path.display()));
        }
    }
    Ok(files)
}

fn is_policy_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".rego") && !name.ends_with("_test.rego")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str, parameters: serde_json::Value) -> Result<RegoPolicy, LoadError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.rego");
        std::fs::write(&file, text).unwrap();
        let source = RegoSource {
            files: vec![file],
            package: None,
            rego_v0: false,
        };
        RegoPolicy::load("p", &source, &parameters, Duration::from_millis(200))
    }

    #[test]
    fn deny_and_warn_messages_with_parameters() {
        let p = policy(
            r#"package t
deny contains msg if { input.object.x > data.parameters.max; msg := sprintf("x=%v over %v", [input.object.x, data.parameters.max]) }
warn contains {"msg": "x is odd"} if { input.object.x % 2 == 1 }
"#,
            serde_json::json!({"max": 2}),
        )
        .unwrap();
        let findings = p
            .evaluate(&Input::new(serde_json::json!({"object": {"x": 3}})))
            .unwrap();
        assert_eq!(findings.violations, vec!["x=3 over 2"]);
        assert_eq!(findings.warnings, vec!["x is odd"]);
        let findings = p
            .evaluate(&Input::new(serde_json::json!({"object": {"x": 2}})))
            .unwrap();
        assert_eq!(findings, Findings::default());
    }

    #[test]
    fn a_package_without_verdict_rules_is_refused() {
        let err = policy("package t\nallow := true\n", serde_json::json!({}))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("declares no deny, violation or warn rule"),
            "{err}"
        );
        let err = policy("package t\ndeny contains x if {", serde_json::json!({}))
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("policy p: "), "{err}");
    }

    #[test]
    fn a_runaway_policy_is_stopped_by_its_time_limit() {
        let p = policy(
            r#"package t
deny contains "slow" if {
    some a in numbers.range(1, 100000)
    some b in numbers.range(1, 100000)
    a * b == -1
}
"#,
            serde_json::json!({}),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let err = p.evaluate(&Input::new(serde_json::json!({}))).unwrap_err();
        assert!(matches!(err, PolicyError::Timeout(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_result_that_is_not_a_message_set_is_an_error() {
        let p = policy("package t\ndeny := 5\n", serde_json::json!({})).unwrap();
        let err = p.evaluate(&Input::new(serde_json::json!({}))).unwrap_err();
        assert!(matches!(err, PolicyError::InvalidResult(_)), "{err}");
    }
}
