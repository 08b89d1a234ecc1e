//! A Constraint's `spec.match`, as Gatekeeper reads it: kinds, namespaces,
//! excludedNamespaces, labelSelector, name.

use serde_json::Value as Json;

/// A Constraint's `spec.match`: kinds, namespaces, excludedNamespaces, labelSelector, name.
#[derive(Default)]
pub(super) struct Match {
    kinds: Vec<(Vec<String>, Vec<String>)>,
    namespaces: Vec<glob::Pattern>,
    excluded_namespaces: Vec<glob::Pattern>,
    label_selector: Option<Json>,
    name: Option<glob::Pattern>,
}

impl Match {
    pub(super) fn parse(spec: &Json) -> Result<Match, String> {
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

    /// Whether the Constraint selects this AdmissionReview request.
    pub(super) fn matches(&self, request: &Json) -> bool {
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
