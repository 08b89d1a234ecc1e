//! Gatekeeper-style policies: a ConstraintTemplate (`targets[].rego` with
//! `violation[{"msg": msg}]`, `libs`, Rego v0 unless the source says `version: v1`) and a
//! Constraint giving `parameters`, `enforcementAction` and `match`.
//!
//! The input is Gatekeeper's: `input.review` is the AdmissionReview request and
//! `input.parameters` the Constraint's parameters. For a workload, a Constraint whose
//! `match.kinds` name its kind reviews the workload as the API server sent it; one that names
//! `Pod` reviews the Pod its template makes. `data.inventory` (referential data, which
//! needs the API server's cache) is empty.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value as Json;

mod matching;

use matching::Match;

use super::opa_compat;
use super::rego_runtime::RegoRuntime;
use super::{Evaluate, Findings, Input, LoadError, PolicyError, messages};
use crate::config::{GatekeeperSource, Mode};

/// A loaded ConstraintTemplate + Constraint.
pub struct GatekeeperPolicy {
    evaluator: RegoRuntime,
    parameters: regorus::Value,
    mode: Mode,
    matcher: Match,
}

impl GatekeeperPolicy {
    /// Reads both files, checks that they belong together and prepares the engine.
    /// `parameters`, when given, replace the Constraint's `spec.parameters`.
    pub fn load(
        name: &str,
        source: &GatekeeperSource,
        parameters: Option<&Json>,
        timeout: Duration,
    ) -> Result<Self, LoadError> {
        Self::load_with_inventory(name, source, parameters, timeout, serde_json::json!({}))
    }

    /// As [`GatekeeperPolicy::load`], with `inventory` as `data.inventory` (Gatekeeper's
    /// cache of synced objects; `gator verify` suites give it per case).
    pub fn load_with_inventory(
        name: &str,
        source: &GatekeeperSource,
        parameters: Option<&Json>,
        timeout: Duration,
        inventory: Json,
    ) -> Result<Self, LoadError> {
        Self::compile(source, parameters, timeout, inventory).map_err(|e| LoadError::new(name, e))
    }

    fn compile(
        source: &GatekeeperSource,
        parameters: Option<&Json>,
        timeout: Duration,
        inventory: Json,
    ) -> Result<Self, Error> {
        let template = read_yaml(&source.template)?;
        let constraint = read_yaml(&source.constraint)?;
        let invalid = |what: &'static str| Error::Template {
            path: source.template.clone(),
            what,
        };

        if template["kind"] != "ConstraintTemplate" {
            return Err(invalid("kind must be ConstraintTemplate"));
        }
        let kind = template["spec"]["crd"]["spec"]["names"]["kind"]
            .as_str()
            .ok_or_else(|| invalid("spec.crd.spec.names.kind is missing"))?;
        if constraint["kind"].as_str() != Some(kind) {
            return Err(Error::ConstraintKind {
                path: source.constraint.clone(),
                kind: kind.to_string(),
            });
        }
        let target = template["spec"]["targets"]
            .as_array()
            .and_then(|targets| {
                targets
                    .iter()
                    .find(|t| t["target"] == "admission.k8s.gatekeeper.sh")
            })
            .ok_or_else(|| invalid("spec.targets has no admission.k8s.gatekeeper.sh target"))?;
        let code = Code::of(target).ok_or_else(|| invalid("the target has no Rego source"))?;

        let mut engine = regorus::Engine::new();
        let version = if code.v1 {
            opa_compat::Version::V1
        } else {
            opa_compat::Version::V0
        };
        let rego = |part: String, source_error: opa_compat::Error| Error::Rego {
            path: source.template.clone(),
            part,
            message: source_error.to_string(),
        };
        let package = opa_compat::add_policy(
            &mut engine,
            &format!("{}#rego", source.template.display()),
            &code.rego,
            version,
        )
        .map_err(|e| rego("rego".into(), e))?
        .package;
        for (i, lib) in code.libs.iter().enumerate() {
            opa_compat::add_policy(
                &mut engine,
                &format!("{}#libs[{i}]", source.template.display()),
                lib,
                version,
            )
            .map_err(|e| rego(format!("libs[{i}]"), e))?;
        }

        let spec = &constraint["spec"];
        let mode = match spec["enforcementAction"].as_str().unwrap_or("deny") {
            "deny" => Mode::Enforce,
            "warn" => Mode::Warn,
            "dryrun" => Mode::DryRun,
            other => {
                return Err(Error::EnforcementAction {
                    path: source.constraint.clone(),
                    value: other.to_string(),
                });
            }
        };
        let matcher = Match::parse(&spec["match"]).map_err(|message| Error::Match {
            path: source.constraint.clone(),
            message,
        })?;
        let parameters = parameters
            .cloned()
            .unwrap_or_else(|| match &spec["parameters"] {
                Json::Null => serde_json::json!({}),
                p => p.clone(),
            });
        let package = package
            .strip_prefix("data.")
            .unwrap_or(&package)
            .to_string();
        let evaluator = RegoRuntime::new(
            engine,
            vec![format!("data.{package}.violation")],
            serde_json::json!({ "inventory": inventory }),
            timeout,
            // Gatekeeper runs templates with OPA's default: a builtin's error makes its
            // expression undefined (`object.get` on `null`, `sprintf` missing an argument).
            false,
            // The interpreter: the VM makes an undefined argument of a negated call (bound
            // before the `not` by the OPA pass) succeed where OPA and the interpreter fail the
            // body (the library's `users` template; see README, differences from OPA).
            false,
        )
        .map_err(Error::Engine)?;
        Ok(Self {
            evaluator,
            parameters: regorus::Value::from(parameters),
            mode,
            matcher,
        })
    }

    /// The reviews the Constraint judges: the workload as sent when its `match.kinds` name the
    /// workload's kind, and the Pod (itself, or the one a workload makes) when they name
    /// Pods — both for a Constraint that matches both, as Gatekeeper reviews a workload and,
    /// with expansion, its Pod.
    fn reviews<'a>(&self, input: &'a Input) -> Vec<&'a regorus::Value> {
        let mut reviews = Vec::new();
        if let (Some(workload), Some(rego)) = (input.workload(), input.workload_rego())
            && self.matcher.matches(workload)
        {
            reviews.push(rego);
        }
        if self.matcher.matches(input.json()) {
            reviews.push(input.rego());
        }
        reviews
    }

    fn run(&self, review: &regorus::Value) -> Result<Vec<String>, PolicyError> {
        let mut gk_input = regorus::Value::new_object();
        let object = gk_input
            .as_object_mut()
            .map_err(|e| PolicyError::Eval(e.to_string()))?;
        object.insert(regorus::Value::from("review"), review.clone());
        object.insert(regorus::Value::from("parameters"), self.parameters.clone());
        let values = self.evaluator.eval(gk_input)?;
        match values.first() {
            Some(value) => messages("violation", value),
            None => Ok(Vec::new()),
        }
    }
}

impl Evaluate for GatekeeperPolicy {
    fn engine(&self) -> &'static str {
        self.evaluator.backend().as_str()
    }

    fn evaluate(&self, input: &Input) -> Result<Findings, PolicyError> {
        let mut violations = Vec::new();
        for review in self.reviews(input) {
            for message in self.run(review)? {
                if !violations.contains(&message) {
                    violations.push(message);
                }
            }
        }
        Ok(Findings {
            violations,
            warnings: Vec::new(),
        })
    }

    fn default_mode(&self) -> Mode {
        self.mode
    }

    fn matches(&self, input: &Input) -> bool {
        !self.reviews(input).is_empty()
    }
}

/// The Rego of a template target: the `rego`/`libs` fields, or the newer `code` list's Rego
/// engine entry.
struct Code {
    rego: String,
    libs: Vec<String>,
    v1: bool,
}

impl Code {
    fn of(target: &Json) -> Option<Code> {
        let libs = |v: &Json| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(code) = target["code"]
            .as_array()
            .and_then(|c| c.iter().find(|e| e["engine"] == "Rego"))
        {
            let source = &code["source"];
            return Some(Code {
                rego: source["rego"].as_str()?.to_string(),
                libs: libs(&source["libs"]),
                v1: source["version"] == "v1",
            });
        }
        Some(Code {
            rego: target["rego"].as_str()?.to_string(),
            libs: libs(&target["libs"]),
            v1: false,
        })
    }
}

fn read_yaml(path: &Path) -> Result<Json, Error> {
    let file = |message: String| Error::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file(e.to_string()))?;
    serde_yaml::from_str(&text).map_err(|e| file(e.to_string()))
}

/// Why a ConstraintTemplate and its Constraint could not be loaded (each names its file).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, or is not YAML.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O or YAML error.
        message: String,
    },
    /// The template is not a ConstraintTemplate Gatekeeper could run.
    #[error("{}: {what}", path.display())]
    Template {
        /// The template file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// The Constraint is not of the template's kind.
    #[error("{}: kind must be {kind}, the template's constraint kind", path.display())]
    ConstraintKind {
        /// The Constraint file.
        path: PathBuf,
        /// The template's constraint kind.
        kind: String,
    },
    /// The template's Rego (`rego` or `libs[i]`) does not load.
    #[error("{}: {part}: {message}", path.display())]
    Rego {
        /// The template file.
        path: PathBuf,
        /// `rego` or `libs[i]`.
        part: String,
        /// The parser's or regorus' message.
        message: String,
    },
    /// `spec.enforcementAction` is not one meshgate applies.
    #[error(
        "{}: spec.enforcementAction: unsupported value {value:?} (deny, warn, dryrun)",
        path.display()
    )]
    EnforcementAction {
        /// The Constraint file.
        path: PathBuf,
        /// The value given.
        value: String,
    },
    /// `spec.match` uses what meshgate cannot evaluate, or a bad glob.
    #[error("{}: spec.match: {message}", path.display())]
    Match {
        /// The Constraint file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The engine could not be prepared (the inventory or the rule).
    #[error("{0}")]
    Engine(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TEMPLATE: &str = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: kinds}
spec:
  crd: {spec: {names: {kind: Kinds}}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package kinds
        violation[{"msg": msg}] {
          msg := sprintf("%v %v", [input.review.kind.kind, input.review.object.apiVersion])
        }
"#;

    fn load(constraint: &str) -> Result<GatekeeperPolicy, LoadError> {
        let dir = tempfile::tempdir().unwrap();
        let source = GatekeeperSource {
            template: dir.path().join("template.yaml"),
            constraint: dir.path().join("constraint.yaml"),
        };
        std::fs::write(&source.template, TEMPLATE).unwrap();
        std::fs::write(&source.constraint, constraint).unwrap();
        GatekeeperPolicy::load("k", &source, None, Duration::from_secs(5))
    }

    fn deployment_input() -> Input {
        let workload = json!({"kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "namespace": "a", "object": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}});
        let pod = json!({"kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "a", "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "d"}}});
        Input::with_workload(pod, workload)
    }

    fn violations(constraint_match: &str) -> Vec<String> {
        let policy = load(&format!(
            "kind: Kinds\nmetadata: {{name: k}}\nspec: {{match: {constraint_match}}}\n"
        ))
        .unwrap();
        let input = deployment_input();
        if !policy.matches(&input) {
            return Vec::new();
        }
        let mut v = policy.evaluate(&input).unwrap().violations;
        v.sort();
        v
    }

    #[test]
    fn a_constraint_judges_the_view_its_kinds_name() {
        assert_eq!(
            violations(r#"{kinds: [{apiGroups: [apps], kinds: [Deployment]}]}"#),
            ["Deployment apps/v1"]
        );
        assert_eq!(
            violations(r#"{kinds: [{apiGroups: [""], kinds: [Pod]}]}"#),
            ["Pod v1"]
        );
        assert_eq!(violations("{}"), ["Deployment apps/v1", "Pod v1"]);
        assert!(violations(r#"{kinds: [{apiGroups: [batch], kinds: [Job]}]}"#).is_empty());
    }

    #[test]
    fn load_errors_name_the_file_and_what_is_wrong() {
        let err = load("kind: Other\nspec: {}\n").err().unwrap().to_string();
        assert!(
            err.contains("constraint.yaml: kind must be Kinds, the template's constraint kind"),
            "{err}"
        );
        let err = load("kind: Kinds\nspec: {enforcementAction: scream}\n")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("spec.enforcementAction: unsupported value \"scream\""),
            "{err}"
        );
        let err = load("kind: Kinds\nspec: {match: {namespaceSelector: {}}}\n")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("spec.match: namespaceSelector"), "{err}");
    }
}
