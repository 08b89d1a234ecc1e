//! cosign's original layout: signatures of `sha256:<hex>` live in the manifest tagged
//! `sha256-<hex>.sig` in the image's repository, one layer per signature. Each layer is a
//! simple-signing payload (`application/vnd.dev.cosign.simplesigning.v1+json`) and carries its
//! base64 signature in the `dev.cosignproject.cosign/signature` annotation.

use base64::Engine as _;
use oci_client::Reference;
use serde_json::json;
use sigstore::cosign::payload::simple_signing::{
    CRITICAL_TYPE_NAME, Critical, Identity, Image, SimpleSigning,
};
use sigstore::crypto::SigStoreSigner;

use super::{PublicKey, SignError, SignatureCheck, SignatureLayout};
use crate::oci::{at_tag, repository_name};
use crate::registry::{
    MAX_SIGNATURE_BYTES, MAX_SIGNATURES, Registries, RegistryError, json_error, shown,
};

/// Layer media type of a simple-signing payload.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The tag holding the signatures of `digest`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// One signature layer as found: the payload bytes and the decoded signature.
#[derive(Debug, Clone)]
pub struct LayerSignature {
    payload: Vec<u8>,
    signature: Result<Vec<u8>, String>,
    annotations: serde_json::Value,
}

impl LayerSignature {
    /// The simple-signing payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The decoded signature, or why there is none.
    pub fn signature(&self) -> Result<&[u8], &str> {
        self.signature.as_deref().map_err(String::as_str)
    }

    /// The layer's annotations (keyless signatures carry their certificate and log entry
    /// there).
    pub fn annotations(&self) -> &serde_json::Value {
        &self.annotations
    }

    /// Checks the signature against every key and the payload against `digest`.
    pub(super) fn check(&self, digest: &str, keys: &[PublicKey], report: &mut SignatureCheck) {
        let signature = match &self.signature {
            Ok(s) => s,
            Err(reason) => return report.reject(reason.clone()),
        };
        let Some(key) = keys.iter().find(|k| k.verifies(signature, &self.payload)) else {
            return report.reject("cosign signature by an untrusted key".into());
        };
        // Only a verified payload is read: its claims mean nothing unsigned.
        match parse_payload(&self.payload) {
            Ok(named) if named == digest => {
                report.accept(&key.name, SignatureLayout::Legacy, key.fingerprint())
            }
            Ok(named) => report.reject(format!(
                "cosign signature by {} is for {}",
                key.name,
                shown(&named)
            )),
            Err(e) => report.reject(format!("cosign payload signed by {}: {e}", key.name)),
        }
    }
}

/// The digest a simple-signing payload names; the error is a fixed phrase.
pub fn parse_payload(payload: &[u8]) -> Result<String, String> {
    serde_json::from_slice::<SimpleSigning>(payload)
        .map(|p| p.critical.image.docker_manifest_digest)
        .map_err(|e| format!("payload is {}", json_error(e)))
}

/// A payload digest with its decoded signature, or why it has none.
pub type SignatureLayer = (String, Result<Vec<u8>, String>);

/// The simple-signing layers of a `.sig` manifest, at most [`MAX_SIGNATURES`]. The second
/// value counts layers left out.
pub fn signature_layers(manifest: &serde_json::Value) -> (Vec<SignatureLayer>, usize) {
    let layers = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["mediaType"] == PAYLOAD_MEDIA_TYPE)
        .filter_map(|l| Some((l["digest"].as_str()?, l)));
    let mut found = Vec::new();
    let mut skipped = 0;
    for (digest, layer) in layers {
        if found.len() == MAX_SIGNATURES {
            skipped += 1;
            continue;
        }
        let signature = match layer["annotations"][SIGNATURE_ANNOTATION].as_str() {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| "cosign signature annotation is not base64".to_string()),
            None => Err("cosign layer without a signature annotation".to_string()),
        };
        found.push((digest.to_string(), signature));
    }
    (found, skipped)
}

/// The signature layers of `digest`; none when the `.sig` tag does not exist.
pub async fn fetch(
    registries: &Registries,
    repository: &Reference,
    digest: &str,
) -> Result<Vec<LayerSignature>, RegistryError> {
    let tag = at_tag(repository, &signature_tag(digest));
    let Some(manifest) = registries.manifest_if_exists(&tag).await? else {
        return Ok(Vec::new());
    };
    let (layers, skipped) = signature_layers(&manifest.json);
    if skipped > 0 {
        tracing::warn!(tag = %tag, skipped, "more cosign signatures than are read");
    }
    let mut found = Vec::new();
    for (layer_digest, signature) in layers {
        let payload = registries
            .blob(&tag, &layer_digest, MAX_SIGNATURE_BYTES)
            .await?;
        let annotations = manifest.json["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["digest"] == layer_digest.as_str())
            .map(|l| l["annotations"].clone())
            .unwrap_or_default();
        found.push(LayerSignature {
            payload,
            signature,
            annotations,
        });
    }
    Ok(found)
}

/// Signs `digest` of `repository` and adds the signature to the `.sig` manifest (keeping the
/// signatures already there). Returns the tag written.
pub async fn sign(
    registries: &Registries,
    repository: &Reference,
    digest: &str,
    signer: &SigStoreSigner,
) -> Result<String, SignError> {
    let payload = SimpleSigning {
        critical: Critical {
            type_name: CRITICAL_TYPE_NAME.to_string(),
            image: Image {
                docker_manifest_digest: digest.to_string(),
            },
            identity: Identity {
                docker_reference: repository_name(repository),
            },
        },
        optional: None,
    };
    let payload = serde_json::to_vec(&payload).map_err(|e| SignError::Other(e.to_string()))?;
    let signature = signer
        .sign(&payload)
        .map_err(|e| SignError::Other(format!("signing: {e}")))?;
    let signature = base64::engine::general_purpose::STANDARD.encode(signature);

    let tag_name = signature_tag(digest);
    let tag = at_tag(repository, &tag_name);
    let mut layers = registries
        .manifest_if_exists(&tag)
        .await?
        .and_then(|existing| existing.json["layers"].as_array().cloned())
        .unwrap_or_default();
    let payload_digest = registries.push_blob(&tag, &payload).await?;
    let layer = json!({
        "mediaType": PAYLOAD_MEDIA_TYPE,
        "size": payload.len(),
        "digest": payload_digest,
        "annotations": {SIGNATURE_ANNOTATION: signature},
    });
    if !layers.contains(&layer) {
        layers.push(layer);
    }
    // The config cosign writes: an image config whose single "layer" is the payload.
    let diff_ids: Vec<&str> = layers.iter().filter_map(|l| l["digest"].as_str()).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {},
    }))
    .map_err(|e| SignError::Other(e.to_string()))?;
    let config_digest = registries.push_blob(&tag, &config).await?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": config.len(),
            "digest": config_digest,
        },
        "layers": layers,
    });
    registries
        .push_manifest(repository, Some(&tag_name), &manifest)
        .await?;
    Ok(tag_name)
}
