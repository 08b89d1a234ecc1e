//! `/mutate`: what was verified is what runs. A tag is verified at admission but pulled later,
//! when it may name other content; so the tags of verified images (in pods and workload
//! templates) and verified WasmPlugin / EnvoyExtensionPolicy module URLs are rewritten to the
//! digest that was verified, as RFC 6902 JSON Patch. References already pinned are left as
//! they are, so a second pass (reinvocation `IfNeeded`) changes nothing. The validating
//! webhook still judges the result.

use serde_json::{Value as Json, json};

use super::{Pipeline, Selected};
use crate::images::ImageFacts;
use crate::workload;

impl Pipeline {
    /// The patch pinning what `selected`'s checks verified ([`Pipeline::check_images`] must
    /// have run); `None` when nothing needs pinning.
    pub fn pin_patch(&self, selected: &Selected) -> Option<json_patch::Patch> {
        let mut pins = selected.pins.clone();
        if !selected.is_extension() {
            let kind = match &selected.workload {
                Some(workload) => workload["kind"]["kind"].as_str().unwrap_or(""),
                None => "Pod",
            };
            pins.extend(pod_pins(
                kind,
                &selected.request["object"]["spec"],
                selected,
            ));
        }
        if pins.is_empty() {
            return None;
        }
        let operations: Vec<Json> = pins
            .into_iter()
            .map(|(path, value)| json!({"op": "replace", "path": path, "value": value}))
            .collect();
        serde_json::from_value(Json::Array(operations)).ok()
    }
}

/// (path, `image@digest`) for every container whose image was verified by tag.
fn pod_pins(kind: &str, spec: &Json, selected: &Selected) -> Vec<(String, String)> {
    let Some(prefix) = workload::pod_pointer(kind) else {
        return Vec::new();
    };
    let mut pins = Vec::new();
    for field in ["initContainers", "containers", "ephemeralContainers"] {
        let containers = spec[field]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, container) in containers.iter().enumerate() {
            let Some(image) = container["image"].as_str() else {
                continue;
            };
            let Some(ImageFacts::Verified(facts)) = selected.images.facts.get(image) else {
                continue;
            };
            if image.contains('@') {
                continue;
            }
            pins.push((
                format!("{prefix}/spec/{field}/{i}/image"),
                format!("{image}@{}", facts.digest),
            ));
        }
    }
    pins
}
