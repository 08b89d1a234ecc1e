//! Gatekeeper-style policies: a ConstraintTemplate (`targets[].rego` with
//! `violation[{"msg": msg}]`, `libs`, Rego v0 unless the source says `version: v1`) and a
//! Constraint giving `parameters`, `enforcementAction` and `match`.
//!
//! The input is Gatekeeper's: `input.review` is the AdmissionReview request and
//! `input.parameters` the Constraint's parameters. For a workload, a Constraint whose
//! `match.kinds` name its kind reviews the workload as the API server sent it; one that names
//! `Pod` reviews the Pod its template makes. `data.inventory` (referential data, which
//! needs the API server's cache) is empty.

use std::path::Path;
use std::time::Duration;

use serde_json::Value as Json;

use super::evaluator::Evaluator;
use super::opa_compat;
use super::{Evaluate, Findings, Input, LoadError, PolicyError, messages};
use crate::config::{GatekeeperSource, Mode};

/// A loaded ConstraintTemplate + Constraint.
pub struct GatekeeperPolicy {
    evaluator: Evaluator,
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
        let err = |m: String| LoadError::new(name, m);
        let template = read_yaml(&source.template).map_err(err)?;
        let constraint = read_yaml(&source.constraint).map_err(err)?;
        let at = |file: &Path, what: &str| format!("{}: {what}", file.display());

        if template["kind"] != "ConstraintTemplate" {
            return Err(err(at(&source.template, "kind must be ConstraintTemplate")));
        }
        let kind = template["spec"]["crd"]["spec"]["names"]["kind"]
            .as_str()
            .ok_or_else(|| err(at(&source.template, "spec.crd.spec.names.kind is missing")))?;
        if constraint["kind"].as_str() != Some(kind) {
            return Err(err(at(
                &source.constraint,
                &format!("kind must be {kind}, the template's constraint kind"),
            )));
        }
        let target = template["spec"]["targets"]
            .as_array()
            .and_then(|targets| {
                targets
                    .iter()
                    .find(|t| t["target"] == "admission.k8s.gatekeeper.sh")
            })
            .ok_or_else(|| {
                err(at(
                    &source.template,
                    "spec.targets has no admission.k8s.gatekeeper.sh target",
                ))
            })?;
        let code = Code::of(target)
            .ok_or_else(|| err(at(&source.template, "the target has no Rego source")))?;

        let mut engine = regorus::Engine::new();
        let version = if code.v1 {
            opa_compat::Version::V1
        } else {
            opa_compat::Version::V0
        };
        let package = opa_compat::add_policy(
            &mut engine,
            &format!("{}#rego", source.template.display()),
            &code.rego,
            version,
        )
        .map_err(|e| err(format!("{}: {e}", source.template.display())))?
        .package;
        for (i, lib) in code.libs.iter().enumerate() {
            opa_compat::add_policy(
                &mut engine,
                &format!("{}#libs[{i}]", source.template.display()),
                lib,
                version,
            )
            .map_err(|e| err(format!("{}: libs[{i}]: {e}", source.template.display())))?;
        }

        let spec = &constraint["spec"];
        let mode = match spec["enforcementAction"].as_str().unwrap_or("deny") {
            "deny" => Mode::Enforce,
            "warn" => Mode::Warn,
            "dryrun" => Mode::DryRun,
            other => {
                return Err(err(at(
                    &source.constraint,
                    &format!(
                        "spec.enforcementAction: unsupported value {other:?} (deny, warn, dryrun)"
                    ),
                )));
            }
        };
        let matcher = Match::parse(&spec["match"])
            .map_err(|m| err(at(&source.constraint, &format!("spec.match: {m}"))))?;
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
        let evaluator = Evaluator::new(
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
        .map_err(err)?;
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

fn read_yaml(path: &Path) -> Result<Json, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A Constraint's `spec.match`: kinds, namespaces, excludedNamespaces, labelSelector, name.
#[derive(Default)]
struct Match {
    kinds: Vec<(Vec<String>, Vec<String>)>,
    namespaces: Vec<glob::Pattern>,
    excluded_namespaces: Vec<glob::Pattern>,
    label_selector: Option<Json>,
    name: Option<glob::Pattern>,
}

impl Match {
    fn parse(spec: &Json) -> Result<Match, String> {
        if spec.is_null() {
            return Ok(Match::default());
        }
        if !spec["namespaceSelector"].is_null() {
            // Namespace labels are not in the AdmissionReview; Gatekeeper reads them from its
            // cache of the API server, which this webhook does not keep.
            return Err(
                "namespaceSelector is not supported; use the policy's `namespaces` selector".into(),
            );
        }
        let strings = |v: &Json| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let globs = |v: &Json, field: &str| -> Result<Vec<glob::Pattern>, String> {
            strings(v)
                .iter()
                .map(|s| glob::Pattern::new(s).map_err(|e| format!("{field}: {e}")))
                .collect()
        };
        Ok(Match {
            kinds: spec["kinds"]
                .as_array()
                .map(|kinds| {
                    kinds
                        .iter()
                        .map(|k| (strings(&k["apiGroups"]), strings(&k["kinds"])))
                        .collect()
                })
                .unwrap_or_default(),
            namespaces: globs(&spec["namespaces"], "namespaces")?,
            excluded_namespaces: globs(&spec["excludedNamespaces"], "excludedNamespaces")?,
            label_selector: (!spec["labelSelector"].is_null())
                .then(|| spec["labelSelector"].clone()),
            name: spec["name"]
                .as_str()
                .map(|n| glob::Pattern::new(n).map_err(|e| format!("name: {e}")))
                .transpose()?,
        })
    }

    fn matches(&self, request: &Json) -> bool {
        let any = |list: &[String], value: &str| list.iter().any(|x| x == "*" || x == value);
        let group = request["kind"]["group"].as_str().unwrap_or("");
        let kind = request["kind"]["kind"].as_str().unwrap_or("");
        if !self.kinds.is_empty()
            && !self
                .kinds
                .iter()
                .any(|(groups, kinds)| any(groups, group) && any(kinds, kind))
        {
            return false;
        }
        let namespace = request["namespace"].as_str().unwrap_or("");
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|p| p.matches(namespace)) {
            return false;
        }
        if self
            .excluded_namespaces
            .iter()
            .any(|p| p.matches(namespace))
        {
            return false;
        }
        let object = &request["object"];
        if let Some(name) = &self.name
            && !name.matches(object["metadata"]["name"].as_str().unwrap_or(""))
        {
            return false;
        }
        match &self.label_selector {
            Some(selector) => label_selector_matches(selector, &object["metadata"]["labels"]),
            None => true,
        }
    }
}

/// Kubernetes label selector semantics: every `matchLabels` pair and every `matchExpressions`
/// requirement must hold.
fn label_selector_matches(selector: &Json, labels: &Json) -> bool {
    let label = |k: &str| labels[k].as_str();
    let match_labels = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let match_expressions = selector["matchExpressions"].as_array().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|v| v.iter().filter_map(Json::as_str).collect())
                .unwrap_or_default();
            match e["operator"].as_str().unwrap_or("") {
                "In" => label(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
                "Exists" => label(key).is_some(),
                "DoesNotExist" => label(key).is_none(),
                // An unknown operator cannot be satisfied, as in Kubernetes.
                _ => false,
            }
        })
    });
    match_labels && match_expressions
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_follow_kubernetes_semantics() {
        let labels = json!({"app": "web", "tier": "front"});
        assert!(label_selector_matches(
            &json!({"matchLabels": {"app": "web"}}),
            &labels
        ));
        assert!(!label_selector_matches(
            &json!({"matchLabels": {"app": "db"}}),
            &labels
        ));
        let expr = |op: &str, values: Json| json!({"matchExpressions": [{"key": "tier", "operator": op, "values": values}]});
        assert!(label_selector_matches(
            &expr("In", json!(["front", "back"])),
            &labels
        ));
        assert!(!label_selector_matches(
            &expr("NotIn", json!(["front"])),
            &labels
        ));
        assert!(label_selector_matches(&expr("Exists", json!([])), &labels));
        assert!(!label_selector_matches(
            &expr("DoesNotExist", json!([])),
            &labels
        ));
        assert!(!label_selector_matches(&expr("Bogus", json!([])), &labels));
    }

    #[test]
    fn match_by_kind_and_namespace() {
        let m = Match::parse(&json!({
            "kinds": [{"apiGroups": [""], "kinds": ["Pod"]}],
            "excludedNamespaces": ["kube-*"],
        }))
        .unwrap();
        let request = |kind: &str, ns: &str| json!({"kind": {"group": "", "version": "v1", "kind": kind}, "namespace": ns, "object": {}});
        assert!(m.matches(&request("Pod", "default")));
        assert!(!m.matches(&request("Service", "default")));
        assert!(!m.matches(&request("Pod", "kube-system")));
        assert!(Match::parse(&json!({"namespaceSelector": {}})).is_err());
    }
}
