//! What policies learn about each image of a pod, as `input.request.images[<image as written>]`:
//! typed here, serialized once for the engines. A field added here is a field every policy
//! engine sees, under the camelCase name serde gives it.

use serde::Serialize;

/// The facts of one image of a reviewed pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ImageFacts {
    /// The image passed its checks.
    Verified(Box<VerifiedImage>),
    /// An UPDATE kept an image its old object ran: its verdict stands, nothing was fetched.
    Unchanged(UnchangedImage),
}

/// An image that is a Wasm artifact signed as its trust rule requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedImage {
    /// The image as written in the pod.
    pub image: String,
    /// The digest that was verified (`sha256:...`): the tag's, for a tag reference.
    pub digest: String,
    /// The registry host.
    pub registry: String,
    /// The repository within the registry.
    pub repository: String,
    /// The trust rule that matched the image.
    pub trust_rule: String,
    /// What the artifact check found.
    pub artifact: ArtifactFacts,
    /// Each signature that verified: which key, in which layout.
    pub signatures: Vec<SignatureFact>,
    /// The keys whose signatures verified, sorted, each once.
    pub signed_by: Vec<String>,
    /// Verified in-toto attestations by the rule's identities: predicate type → predicate.
    /// Absent when there are none.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attestations: std::collections::BTreeMap<String, serde_json::Value>,
    /// What its Wasm imports and exports (every Wasm layer's, together), when the layers were
    /// read (`artifactCheck: parse`). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<crate::capabilities::Capabilities>,
}

/// An image an UPDATE did not change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnchangedImage {
    /// The image as written in the pod.
    pub image: String,
    /// Always `true`: what tells policies the image was not checked again.
    pub unchanged: bool,
}

/// The artifact's layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ArtifactFacts {
    /// `artifactCheck: none`: only the manifest's media type.
    Unchecked {
        /// The manifest's (or index's) media type.
        #[serde(rename = "mediaType")]
        media_type: String,
    },
    /// A Wasm artifact.
    Wasm(WasmArtifact),
}

/// A manifest found to hold Wasm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmArtifact {
    /// Which layout: `wasm-oci-artifact`, `istio-wasm`, `oci-image-wasm`, ...
    pub kind: String,
    /// The manifest's media type.
    pub media_type: String,
    /// The manifest checked (an index's Wasm entry, else the image's own).
    pub manifest_digest: String,
    /// The index it was reached through, if any (`null` otherwise).
    pub index_digest: Option<String>,
    /// `config.mediaType`.
    pub config_media_type: String,
    /// `layers[].mediaType`, in order.
    pub layer_media_types: Vec<String>,
    /// What each Wasm layer is (component or core module), when they were read.
    #[serde(skip)]
    pub module_kinds: Vec<crate::config::ModuleKind>,
    /// The layers' imports and exports together, when they were read; lifted into
    /// [`VerifiedImage::capabilities`].
    #[serde(skip)]
    pub capabilities: Option<Box<crate::capabilities::Capabilities>>,
}

/// One verified signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureFact {
    /// The key's name in the configuration.
    pub key: String,
    /// `cosign` (the `.sig` tag) or `sigstore-bundle` (a referrer).
    pub format: &'static str,
}

impl ImageFacts {
    /// The facts as policies read them.
    pub fn to_json(&self) -> serde_json::Value {
        // Plain strings, vectors and options: serializing cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policies_read_the_same_json_as_before_the_types() {
        let verified = ImageFacts::Verified(Box::new(VerifiedImage {
            image: "r.example/app:1".into(),
            digest: "sha256:ab".into(),
            registry: "r.example".into(),
            repository: "app".into(),
            trust_rule: "ours".into(),
            artifact: ArtifactFacts::Wasm(WasmArtifact {
                kind: "wasm-oci-artifact".into(),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                manifest_digest: "sha256:ab".into(),
                index_digest: None,
                config_media_type: "application/vnd.wasm.config.v0+json".into(),
                layer_media_types: vec!["application/wasm".into()],
                module_kinds: Vec::new(),
                capabilities: None,
            }),
            signatures: vec![SignatureFact {
                key: "ci".into(),
                format: "cosign",
            }],
            signed_by: vec!["ci".into()],
            attestations: Default::default(),
            capabilities: None,
        }));
        assert_eq!(
            verified.to_json(),
            json!({
                "image": "r.example/app:1", "digest": "sha256:ab", "registry": "r.example",
                "repository": "app", "trustRule": "ours",
                "artifact": {
                    "kind": "wasm-oci-artifact",
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "manifestDigest": "sha256:ab", "indexDigest": null,
                    "configMediaType": "application/vnd.wasm.config.v0+json",
                    "layerMediaTypes": ["application/wasm"],
                },
                "signatures": [{"key": "ci", "format": "cosign"}],
                "signedBy": ["ci"],
            })
        );
        let unchecked = ArtifactFacts::Unchecked {
            media_type: "m".into(),
        };
        assert_eq!(
            serde_json::to_value(unchecked).unwrap(),
            json!({"mediaType": "m"})
        );
        let unchanged = ImageFacts::Unchanged(UnchangedImage {
            image: "a:1".into(),
            unchanged: true,
        });
        assert_eq!(
            unchanged.to_json(),
            json!({"image": "a:1", "unchanged": true})
        );
    }
}
