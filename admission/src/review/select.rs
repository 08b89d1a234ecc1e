//! Which requests are judged: CREATE and UPDATE of a Pod, or of a workload whose pod template
//! runs on one of the configured Wasm RuntimeClasses, and of the objects that attach Wasm to
//! the mesh's proxies (WasmPlugin, EnvoyFilter, EnvoyExtensionPolicy), whatever runs them.
//! Workloads are judged as the Pod their template makes.

use serde_json::{Value as Json, json};

use kube_core::admission::Operation;

use super::{Pipeline, Review, Verdict};
use crate::extensions::{self, ExtensionKind, FindError, ModuleRef};
use crate::images::PodImages;
use crate::workload;

/// A request in scope: the pod it is about, ready for image checks and policies.
pub struct Selected {
    pub(super) request: Json,
    pub(super) subject: String,
    pub(super) namespace: String,
    pub(super) images: PodImages,
    /// A workload's request as sent (before its Pod replaced the object), for Gatekeeper
    /// constraints that name the workload's kind.
    pub(super) workload: Option<Json>,
    /// For an object that attaches Wasm to proxies: the modules it names.
    pub(super) extension: Option<Result<Vec<ModuleRef>, FindError>>,
    /// Fields `/mutate` rewrites to what the checks verified: (JSON pointer, value).
    pub(super) pins: Vec<(String, String)>,
}

impl Selected {
    /// `Kind namespace/name`, as messages name it.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// What the image (or module) checks concluded (empty until [`Pipeline::check_images`]
    /// ran).
    pub fn images(&self) -> &PodImages {
        &self.images
    }

    /// Whether the object attaches Wasm to proxies (WasmPlugin, EnvoyFilter,
    /// EnvoyExtensionPolicy) rather than running a pod.
    pub fn is_extension(&self) -> bool {
        self.extension.is_some()
    }
}

impl Pipeline {
    /// Decides whether a review is in scope: its pod (workloads expand to the Pod their
    /// template makes) runs on a Wasm RuntimeClass. Out of scope, the answer is the skip verdict.
    pub fn select(&self, review: Review) -> Result<Selected, Verdict> {
        let Review {
            kind,
            namespace,
            name,
            operation,
            mut request,
            ..
        } = review;
        if !matches!(operation, Operation::Create | Operation::Update) {
            let operation = request["operation"].as_str().unwrap_or("");
            return Err(Verdict::skip(format!(
                "operation {operation} is not checked"
            )));
        }
        let group = request["kind"]["group"].as_str().unwrap_or("");
        if let Some(extension) = ExtensionKind::of(group, &kind) {
            let modules = extensions::find_modules(extension, &request["object"]);
            return Ok(Selected {
                subject: format!("{kind} {namespace}/{name}"),
                request,
                namespace,
                images: PodImages::default(),
                workload: None,
                extension: Some(modules),
                pins: Vec::new(),
            });
        }
        let Some(spec) = workload::pod_spec(&kind, &request["object"]) else {
            return Err(Verdict::skip(format!("{kind} carries no pod")));
        };
        match workload::runtime_class(spec) {
            Some(class) if self.runtime_classes.contains(class) => {}
            Some(class) => {
                return Err(Verdict::skip(format!(
                    "runtimeClassName {class} is not a Wasm runtime"
                )));
            }
            None => return Err(Verdict::skip("no runtimeClassName".into())),
        }
        let workload = if kind == "Pod" {
            None
        } else {
            // Policies judge the Pod the workload makes (Gatekeeper's expansion semantics); the
            // workload's request stays as sent for constraints naming its kind. The Pod's request
            // copies the small fields only, not the workload's objects.
            let pod = workload::pod_of(&kind, &request["object"], &namespace);
            let old_pod = workload::pod_of(&kind, &request["oldObject"], &namespace);
            let mut as_pod: serde_json::Map<String, Json> = request
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(field, _)| !matches!(field.as_str(), "object" | "oldObject" | "kind"))
                .map(|(field, value)| (field.clone(), value.clone()))
                .collect();
            as_pod.insert("object".into(), pod.unwrap_or(Json::Null));
            as_pod.insert("oldObject".into(), old_pod.unwrap_or(Json::Null));
            as_pod.insert(
                "kind".into(),
                json!({"group": "", "version": "v1", "kind": "Pod"}),
            );
            Some(std::mem::replace(&mut request, Json::Object(as_pod)))
        };
        Ok(Selected {
            request,
            subject: format!("{kind} {namespace}/{name}"),
            namespace,
            images: PodImages::default(),
            workload,
            extension: None,
            pins: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::Metrics;

    fn pipeline() -> Pipeline {
        Pipeline::new(
            ["spin".to_string()].into(),
            Vec::new(),
            Arc::new(Metrics::new()),
        )
    }

    fn review(operation: &str, kind: &str, object: Json) -> Review {
        Review::from_request(json!({
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "x"},
            "namespace": "apps", "operation": operation,
            "userInfo": {"username": "alice"}, "object": object,
        }))
        .unwrap()
    }

    #[test]
    fn only_create_and_update_on_a_wasm_runtime_class_are_judged() {
        let pod = json!({"metadata": {"generateName": "web-"}, "spec": {"runtimeClassName": "spin", "containers": []}});
        let selected = pipeline()
            .select(review("CREATE", "Pod", pod.clone()))
            .ok()
            .unwrap();
        // One name for messages, taken where the decoder found it (generateName here).
        assert_eq!(selected.subject(), "Pod apps/web-");
        let skipped = |r| pipeline().select(r).err().unwrap().skipped.unwrap();
        assert_eq!(
            skipped(review("DELETE", "Pod", pod)),
            "operation DELETE is not checked"
        );
        let runc = json!({"metadata": {"name": "n"}, "spec": {"runtimeClassName": "runc"}});
        assert_eq!(
            skipped(review("CREATE", "Pod", runc)),
            "runtimeClassName runc is not a Wasm runtime"
        );
        let none = json!({"metadata": {"name": "n"}, "spec": {}});
        assert_eq!(
            skipped(review("UPDATE", "Pod", none)),
            "no runtimeClassName"
        );
        assert_eq!(
            skipped(review("CREATE", "ConfigMap", json!({}))),
            "ConfigMap carries no pod"
        );
    }

    #[test]
    fn a_workload_is_judged_as_the_pod_its_template_makes() {
        let job = json!({"metadata": {"name": "j"}, "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"runtimeClassName": "spin", "containers": []}}}});
        let selected = pipeline()
            .select(review("CREATE", "Job", job))
            .ok()
            .unwrap();
        assert_eq!(selected.subject(), "Job apps/j");
        assert_eq!(selected.request["kind"]["kind"], "Pod");
        assert_eq!(selected.request["object"]["kind"], "Pod");
        assert_eq!(
            selected.request["object"]["spec"]["runtimeClassName"],
            "spin"
        );
    }
}
