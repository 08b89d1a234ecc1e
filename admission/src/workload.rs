//! Pods and the workloads that make them: which Pod a request is about.
//!
//! A Deployment (or ReplicaSet, StatefulSet, DaemonSet, Job, CronJob, ReplicationController)
//! is judged through the Pod its template makes, as Gatekeeper's expansion does, so a bad
//! Deployment is refused at `kubectl apply` rather than when its ReplicaSet fails to create
//! pods.

use serde_json::{Value as Json, json};

/// Kinds whose pods are judged, with the path of their pod template (empty for `Pod`).
const POD_TEMPLATES: [(&str, &[&str]); 8] = [
    ("Pod", &[]),
    ("Deployment", &["spec", "template"]),
    ("ReplicaSet", &["spec", "template"]),
    ("StatefulSet", &["spec", "template"]),
    ("DaemonSet", &["spec", "template"]),
    ("Job", &["spec", "template"]),
    ("ReplicationController", &["spec", "template"]),
    ("CronJob", &["spec", "jobTemplate", "spec", "template"]),
];

/// Whether requests of this kind carry a pod.
pub fn is_pod_kind(kind: &str) -> bool {
    known_kind(kind).is_some()
}

/// The kind, as a `'static` name, when requests of it carry a pod.
pub fn known_kind(kind: &str) -> Option<&'static str> {
    POD_TEMPLATES.iter().map(|(k, _)| *k).find(|k| *k == kind)
}

/// The pod spec an object of `kind` carries (its own, or its template's), without copying.
pub fn pod_spec<'a>(kind: &str, object: &'a Json) -> Option<&'a Json> {
    let (_, path) = POD_TEMPLATES.iter().find(|(k, _)| *k == kind)?;
    let holder = path.iter().try_fold(object, |v, key| v.get(key))?;
    holder.get("spec").filter(|spec| spec.is_object())
}

/// The Pod an object of `kind` makes: the object itself for a Pod, otherwise a Pod built from
/// its template (metadata from the template, namespace and name from the workload).
/// `None` when the kind makes no pods or the object has no template.
pub fn pod_of(kind: &str, object: &Json, namespace: &str) -> Option<Json> {
    let (_, path) = POD_TEMPLATES.iter().find(|(k, _)| *k == kind)?;
    if path.is_empty() {
        return object.is_object().then(|| object.clone());
    }
    let template = path.iter().try_fold(object, |v, key| v.get(key))?;
    let mut metadata = template
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    // The namespace and name are the workload's, whatever the template claims: its pods are
    // created in the workload's namespace, and policies must not judge another one.
    if let Some(m) = metadata.as_object_mut() {
        m.insert("namespace".into(), json!(namespace));
        if let Some(name) = object.pointer("/metadata/name") {
            m.insert("name".into(), name.clone());
        }
    }
    Some(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    }))
}

/// JSON pointer of the pod an object of `kind` carries (empty for a Pod, `/spec/template` for
/// a Deployment, ...): the prefix of its containers' paths.
pub fn pod_pointer(kind: &str) -> Option<String> {
    let (_, path) = POD_TEMPLATES.iter().find(|(k, _)| *k == kind)?;
    Some(path.iter().map(|p| format!("/{p}")).collect())
}

/// The RuntimeClass a pod spec names, if any.
pub fn runtime_class(spec: &Json) -> Option<&str> {
    spec.get("runtimeClassName").and_then(Json::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cronjob_template_becomes_a_pod() {
        let cronjob = json!({
            "kind": "CronJob",
            "metadata": {"name": "nightly"},
            "spec": {"jobTemplate": {"spec": {"template": {
                "metadata": {"labels": {"app": "n"}},
                "spec": {"runtimeClassName": "spin", "containers": [{"name": "c", "image": "i"}]}
            }}}}
        });
        let pod = pod_of("CronJob", &cronjob, "batch").unwrap();
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["metadata"]["name"], "nightly");
        assert_eq!(pod["metadata"]["namespace"], "batch");
        assert_eq!(pod["metadata"]["labels"]["app"], "n");
        assert_eq!(runtime_class(&pod["spec"]), Some("spin"));
        assert_eq!(pod_spec("CronJob", &cronjob), Some(&pod["spec"]));
    }

    #[test]
    fn kinds_without_pods_are_not_expanded() {
        assert!(pod_of("Service", &json!({"spec": {}}), "d").is_none());
        assert!(pod_of("Deployment", &json!({"spec": {}}), "d").is_none());
        assert!(!is_pod_kind("ConfigMap"));
    }

    #[test]
    fn a_template_cannot_claim_another_namespace_or_name() {
        let deployment = json!({
            "metadata": {"name": "api"},
            "spec": {"template": {
                "metadata": {"namespace": "kube-system", "name": "trusted", "labels": {"a": "b"}},
                "spec": {"runtimeClassName": "spin", "containers": []}
            }}
        });
        let pod = pod_of("Deployment", &deployment, "apps").unwrap();
        assert_eq!(pod["metadata"]["namespace"], "apps");
        assert_eq!(pod["metadata"]["name"], "api");
        assert_eq!(pod["metadata"]["labels"]["a"], "b");
    }
}
