//! Runtime fit: a pod whose Wasm artifact its RuntimeClass's shim cannot run (a component on
//! a shim for core modules, a Spin application on a plain Wasm shim) fails at admission with
//! both named, instead of in `StartError` on the node.

use std::collections::BTreeMap;

use crate::config::RuntimeFit;
use crate::images::{ArtifactFacts, ImageFacts};

/// Prefix of runtime fit findings.
const TAG: &str = "[runtime-fit]";

/// A finding for every verified image that `fit` (RuntimeClass `class`) cannot run. Images not
/// verified (unchanged on UPDATE, refused, unchecked layouts) are judged elsewhere or were
/// judged before.
pub fn misfits(class: &str, fit: &RuntimeFit, facts: &BTreeMap<String, ImageFacts>) -> Vec<String> {
    let runtime = match &fit.handler {
        Some(handler) => format!("RuntimeClass {class} (handler {handler})"),
        None => format!("RuntimeClass {class}"),
    };
    let mut found = Vec::new();
    for (image, facts) in facts {
        let ImageFacts::Verified(verified) = facts else {
            continue;
        };
        let image = crate::review::decode::clip(image);
        let ArtifactFacts::Wasm(wasm) = &verified.artifact else {
            if fit.layouts.is_some() || fit.modules.is_some() || fit.media_types.is_some() {
                found.push(format!(
                    "{TAG} image {image}: its layout was not checked (imageVerification.artifactCheck: none), so it cannot be shown to fit {runtime}"
                ));
            }
            continue;
        };
        if let Some(layouts) = &fit.layouts
            && !layouts.contains(&wasm.kind)
        {
            found.push(format!(
                "{TAG} image {image} is a {} artifact; {runtime} runs {}",
                wasm.kind,
                layouts.join(", ")
            ));
        }
        if let Some(types) = &fit.media_types
            && let Some(other) = wasm.layer_media_types.iter().find(|t| !types.contains(t))
        {
            found.push(format!(
                "{TAG} image {image} has a layer of media type {}; {runtime} accepts {}",
                crate::review::decode::clip(other),
                types.join(", ")
            ));
        }
        if let Some(kinds) = &fit.modules
            && let Some(other) = wasm.module_kinds.iter().find(|k| !kinds.contains(k))
        {
            let accepted: Vec<_> = kinds.iter().map(|k| k.as_str()).collect();
            found.push(format!(
                "{TAG} image {image} is a Wasm {}; {runtime} runs {}",
                other.as_str(),
                if accepted.is_empty() {
                    "nothing".to_string()
                } else {
                    accepted.join(" and ")
                }
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModuleKind;
    use crate::images::{VerifiedImage, WasmArtifact};

    fn image(kind: &str, layers: &[&str], modules: &[ModuleKind]) -> ImageFacts {
        ImageFacts::Verified(Box::new(VerifiedImage {
            image: "r/app:1".into(),
            digest: "sha256:ab".into(),
            registry: "r".into(),
            repository: "app".into(),
            trust_rule: "t".into(),
            artifact: ArtifactFacts::Wasm(WasmArtifact {
                kind: kind.into(),
                media_type: "m".into(),
                manifest_digest: "sha256:ab".into(),
                index_digest: None,
                config_media_type: "c".into(),
                layer_media_types: layers.iter().map(|l| l.to_string()).collect(),
                module_kinds: modules.to_vec(),
                capabilities: None,
            }),
            signatures: Vec::new(),
            signed_by: Vec::new(),
            attestations: Default::default(),
            capabilities: None,
        }))
    }

    #[test]
    fn a_component_on_a_module_shim_and_a_wrong_layout_are_named() {
        let fit = RuntimeFit {
            handler: Some("wasmedge".into()),
            modules: Some(vec![ModuleKind::Module]),
            layouts: Some(vec!["wasm-oci".into()]),
            media_types: None,
        };
        let facts = BTreeMap::from([
            (
                "r/comp:1".to_string(),
                image("wasm-oci", &["application/wasm"], &[ModuleKind::Component]),
            ),
            (
                "r/spin:1".to_string(),
                image("spin", &["x"], &[ModuleKind::Module]),
            ),
            (
                "r/ok:1".to_string(),
                image("wasm-oci", &["application/wasm"], &[ModuleKind::Module]),
            ),
        ]);
        let found = misfits("wasmedge", &fit, &facts);
        assert_eq!(
            found,
            [
                "[runtime-fit] image r/comp:1 is a Wasm component; RuntimeClass wasmedge (handler wasmedge) runs module",
                "[runtime-fit] image r/spin:1 is a spin artifact; RuntimeClass wasmedge (handler wasmedge) runs wasm-oci",
            ]
        );
        let media = RuntimeFit {
            media_types: Some(vec!["application/wasm".into()]),
            ..RuntimeFit::default()
        };
        assert_eq!(misfits("x", &media, &facts).len(), 1);
        assert!(misfits("x", &RuntimeFit::default(), &facts).is_empty());
    }
}
