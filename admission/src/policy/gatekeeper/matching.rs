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
            label_selector: match &spec["labelSelector"] {
                Json::Null => None,
                selector => Some(check_label_selector(selector)?.clone()),
            },
            // An empty name selects any name, as in Gatekeeper.
            name: spec["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map(|n| glob::Pattern::new(n).map_err(|e| format!("name: {e}")))
                .transpose()?,
        })
    }

    /// Whether the Constraint selects this AdmissionReview request.
    pub(super) fn matches(&self, request: &Json) -> bool {
        // As Gatekeeper: an empty list of groups or kinds matches any.
        let any = |list: &[String], value: &str| {
            list.is_empty() || list.iter().any(|x| x == "*" || x == value)
        };
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

/// Refuses a selector Kubernetes would refuse (an unknown operator, a value that is not a
/// string), which would otherwise match nothing and silently disable the Constraint.
fn check_label_selector(selector: &Json) -> Result<&Json, String> {
    if let Some(labels) = selector["matchLabels"].as_object()
        && let Some((key, _)) = labels.iter().find(|(_, v)| !v.is_string())
    {
        return Err(format!("labelSelector.matchLabels.{key}: must be a string"));
    }
    for (i, expression) in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("labelSelector.matchExpressions[{i}]");
        let values = expression["values"].as_array();
        if values.is_some_and(|v| v.iter().any(|v| !v.is_string())) {
            return Err(format!("{at}.values: must be strings"));
        }
        let has_values = values.is_some_and(|v| !v.is_empty());
        match expression["operator"].as_str() {
            Some("In" | "NotIn") if has_values => {}
            Some("In" | "NotIn") => {
                return Err(format!("{at}.values: must not be empty for In and NotIn"));
            }
            Some("Exists" | "DoesNotExist") if !has_values => {}
            Some("Exists" | "DoesNotExist") => {
                return Err(format!(
                    "{at}.values: must be empty for Exists and DoesNotExist"
                ));
            }
            other => {
                return Err(format!(
                    "{at}.operator: {} is not In, NotIn, Exists or DoesNotExist",
                    other.map_or_else(|| "(none)".to_string(), |o| format!("{o:?}"))
                ));
            }
        }
    }
    Ok(selector)
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

    #[test]
    fn empty_groups_kinds_and_names_match_any_as_in_gatekeeper() {
        let request = json!({"kind": {"group": "", "kind": "Pod"}, "namespace": "a",
                             "object": {"metadata": {"name": "web"}}});
        for spec in [
            json!({"kinds": [{"kinds": ["Pod"]}]}),
            json!({"kinds": [{"apiGroups": [""]}]}),
            json!({"kinds": [{}]}),
            json!({"name": ""}),
        ] {
            assert!(Match::parse(&spec).unwrap().matches(&request), "{spec}");
        }
        let other = json!({"kinds": [{"kinds": ["Deployment"]}]});
        assert!(!Match::parse(&other).unwrap().matches(&request));
    }

    #[test]
    fn selectors_kubernetes_would_refuse_are_refused_at_load() {
        for (selector, error) in [
            (
                json!({"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]}),
                "operator",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
                "must not be empty",
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
                "must be empty",
            ),
            (json!({"matchLabels": {"a": 1}}), "must be a string"),
        ] {
            let err = Match::parse(&json!({"labelSelector": selector}))
                .err()
                .unwrap();
            assert!(err.contains(error), "{selector}: {err}");
        }
    }
}
