//! Sigstore bundles attached as OCI 1.1 referrers, as `cosign sign --new-bundle-format` writes
//! them: a manifest of artifact type `application/vnd.dev.sigstore.bundle.v0.3+json` whose
//! `subject` is the signed image and whose one layer is the bundle. The bundle holds a DSSE
//! envelope over an in-toto statement naming the image digest, with predicate type
//! `https://sigstore.dev/cosign/sign/v1`.
//!
//! Registries without the referrers API are served through the `sha256-<hex>` tag index
//! (OCI distribution spec, referrers tag schema), which [`sign`] keeps up to date.

use base64::Engine as _;
use oci_client::Reference;
use serde::Deserialize;
use serde_json::json;
use sigstore::crypto::SigStoreSigner;

use super::{PublicKey, SignError, SignatureCheck, SignatureLayout};
use crate::oci::{at_digest, at_tag, repository_name};
use crate::registry::{
    MAX_SIGNATURE_BYTES, MAX_SIGNATURES, Registries, RegistryError, json_error, shown,
};

/// Media type and artifact type of a sigstore bundle v0.3.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The statement type cosign writes.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The predicate type of an image signature (other predicates are attestations, not
/// signatures).
pub const SIGN_PREDICATE_TYPE: &str = "https://sigstore.dev/cosign/sign/v1";
const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// A parsed bundle, reduced to what a keyed image signature needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    media_type: String,
    dsse_envelope: Option<Envelope>,
    message_signature: Option<serde_json::Value>,
    /// The bundle as read, for the keyless verifier.
    #[serde(skip)]
    raw: Vec<u8>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

#[derive(Debug, Deserialize)]
struct Statement {
    #[serde(rename = "_type")]
    statement_type: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
}

#[derive(Debug, Deserialize)]
struct Subject {
    digest: std::collections::BTreeMap<String, String>,
}

/// DSSE pre-authentication encoding: what is actually signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

impl Bundle {
    /// Parses bundle JSON; the error is a fixed phrase (no text of the input beyond a
    /// shortened media type).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut bundle: Bundle = serde_json::from_slice(bytes)
            .map_err(|e| format!("sigstore bundle is {}", json_error(e)))?;
        bundle.raw = bytes.to_vec();
        if !bundle
            .media_type
            .starts_with("application/vnd.dev.sigstore.bundle")
        {
            return Err(format!(
                "sigstore bundle: unexpected media type {}",
                shown(&bundle.media_type)
            ));
        }
        Ok(bundle)
    }

    /// The bundle's bytes as read.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Checks the envelope's signatures against every key and the statement against `digest`.
    /// Only the first [`MAX_SIGNATURES`] envelope signatures are tried.
    pub fn check(&self, digest: &str, keys: &[PublicKey], report: &mut SignatureCheck) {
        let Some(envelope) = &self.dsse_envelope else {
            let what = if self.message_signature.is_some() {
                "a message signature, not an image signature"
            } else {
                "no DSSE envelope"
            };
            return report.reject(format!("sigstore bundle holds {what}"));
        };
        if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
            return report.reject(format!(
                "sigstore bundle payload type {}",
                shown(&envelope.payload_type)
            ));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let Ok(payload) = b64.decode(&envelope.payload) else {
            return report.reject("sigstore bundle payload is not base64".into());
        };
        let message = pae(&envelope.payload_type, &payload);
        let signer = envelope
            .signatures
            .iter()
            .take(MAX_SIGNATURES)
            .find_map(|s| {
                let sig = b64.decode(&s.sig).ok()?;
                keys.iter().find(|k| k.verifies(&sig, &message))
            });
        let Some(key) = signer else {
            return report.reject("sigstore bundle signed by an untrusted key".into());
        };
        let statement = match serde_json::from_slice::<Statement>(&payload) {
            Ok(s) => s,
            Err(e) => {
                return report.reject(format!(
                    "statement signed by {} is {}",
                    key.name,
                    json_error(e)
                ));
            }
        };
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        if statement.statement_type != STATEMENT_TYPE
            || statement.predicate_type != SIGN_PREDICATE_TYPE
        {
            report.reject(format!(
                "bundle signed by {} is a {} statement, not an image signature",
                key.name,
                shown(&statement.predicate_type)
            ));
        } else if statement
            .subject
            .iter()
            .any(|s| s.digest.get("sha256").is_some_and(|d| d == hex))
        {
            report.accept(&key.name, SignatureLayout::Bundle, key.fingerprint());
        } else {
            report.reject(format!(
                "bundle signed by {} names another digest",
                key.name
            ));
        }
    }
}

/// The bundles referring to `digest`; an entry is `Err` with the reason when it is unreadable.
pub async fn fetch(
    registries: &Registries,
    repository: &Reference,
    digest: &str,
) -> Result<Vec<Result<Bundle, String>>, RegistryError> {
    let subject = at_digest(repository, digest);
    let index = match registries.referrers(&subject, BUNDLE_MEDIA_TYPE).await {
        Ok(index) => index,
        Err(RegistryError::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut bundles = Vec::new();
    let entries = index
        .manifests
        .iter()
        .filter(|m| m.artifact_type.as_deref() == Some(BUNDLE_MEDIA_TYPE));
    for entry in entries.take(MAX_SIGNATURES) {
        let referrer = at_digest(repository, &entry.digest);
        let manifest = registries.manifest(&referrer).await?;
        if manifest.json["subject"]["digest"] != digest {
            bundles.push(Err("bundle referrer with another subject".to_string()));
            continue;
        }
        let layer = manifest.json["layers"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["mediaType"] == BUNDLE_MEDIA_TYPE));
        let Some(layer_digest) = layer.and_then(|l| l["digest"].as_str()) else {
            bundles.push(Err("bundle referrer without a bundle layer".to_string()));
            continue;
        };
        let bytes = registries
            .blob(&referrer, layer_digest, MAX_SIGNATURE_BYTES)
            .await?;
        bundles.push(Bundle::parse(&bytes));
    }
    Ok(bundles)
}

/// Signs `digest` of `repository` as a bundle referrer; returns the referrer's digest.
pub async fn sign(
    registries: &Registries,
    repository: &Reference,
    digest: &str,
    subject_media_type: &str,
    subject_size: usize,
    signer: &SigStoreSigner,
    public_key_der: &[u8],
) -> Result<String, SignError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let statement = serde_json::to_vec(&json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": repository_name(repository), "digest": {"sha256": hex}}],
        "predicateType": SIGN_PREDICATE_TYPE,
        "predicate": {},
    }))
    .map_err(|e| SignError::Other(e.to_string()))?;
    let signature = signer
        .sign(&pae(IN_TOTO_PAYLOAD_TYPE, &statement))
        .map_err(|e| SignError::Other(format!("signing: {e}")))?;
    // The hint identifies the key as cosign does: base64 of the SHA-256 of its DER SPKI.
    let hint = {
        use sha2::Digest as _;
        b64.encode(sha2::Sha256::digest(public_key_der))
    };
    let bundle = serde_json::to_vec(&json!({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": b64.encode(&statement),
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "signatures": [{"sig": b64.encode(signature), "keyid": ""}],
        },
    }))
    .map_err(|e| SignError::Other(e.to_string()))?;

    let subject = at_digest(repository, digest);
    let bundle_digest = registries.push_blob(&subject, &bundle).await?;
    let config_digest = registries.push_blob(&subject, b"{}").await?;
    let annotations = json!({
        "dev.sigstore.bundle.content": "dsse-envelope",
        "dev.sigstore.bundle.predicateType": SIGN_PREDICATE_TYPE,
    });
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": BUNDLE_MEDIA_TYPE,
        "config": {"mediaType": EMPTY_CONFIG_MEDIA_TYPE, "digest": config_digest, "size": 2},
        "layers": [{
            "mediaType": BUNDLE_MEDIA_TYPE,
            "digest": bundle_digest,
            "size": bundle.len(),
            "annotations": {
                "org.opencontainers.image.title": format!("{}.sigstore.json", bundle_digest.replace(':', "-")),
            },
        }],
        "subject": {"mediaType": subject_media_type, "digest": digest, "size": subject_size},
        "annotations": annotations,
    });
    let (manifest_digest, manifest_size) = registries
        .push_manifest(repository, None, &manifest)
        .await?;

    // The referrers tag schema, for registries without the referrers API (harmless on the
    // others: clients ask the API first).
    let index_tag = digest.replace(':', "-");
    let mut entries = registries
        .manifest_if_exists(&at_tag(repository, &index_tag))
        .await?
        .and_then(|index| index.json["manifests"].as_array().cloned())
        .unwrap_or_default();
    entries.push(json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest,
        "size": manifest_size,
        "artifactType": BUNDLE_MEDIA_TYPE,
        "annotations": annotations,
    }));
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    registries
        .push_manifest(repository, Some(&index_tag), &index)
        .await?;
    Ok(manifest_digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    fn bundle_for(statement: &serde_json::Value, signer: &SigStoreSigner) -> Bundle {
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = serde_json::to_vec(statement).unwrap();
        let sig = signer.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &payload)).unwrap();
        Bundle::parse(
            &serde_json::to_vec(&json!({
                "mediaType": BUNDLE_MEDIA_TYPE,
                "dsseEnvelope": {"payload": b64.encode(payload), "payloadType": IN_TOTO_PAYLOAD_TYPE,
                                 "signatures": [{"sig": b64.encode(sig)}]},
            }))
            .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn bundles_are_checked_for_key_digest_and_predicate() {
        let (private, _) =
            super::super::keys::generate(super::super::Algorithm::Ed25519, b"").unwrap();
        let signer = super::super::keys::signer(private.as_bytes(), b"").unwrap();
        let key = PublicKey::of_signer("release", &signer).unwrap();
        let digest = format!("sha256:{}", "ab".repeat(32));
        let statement = |hex: &str, predicate: &str| {
            json!({"_type": STATEMENT_TYPE, "subject": [{"digest": {"sha256": hex}}],
                   "predicateType": predicate, "predicate": {}})
        };
        let mut report = SignatureCheck::default();
        bundle_for(&statement(&"ab".repeat(32), SIGN_PREDICATE_TYPE), &signer).check(
            &digest,
            std::slice::from_ref(&key),
            &mut report,
        );
        assert_eq!(report.keys(), vec!["release".to_string()]);

        let mut report = SignatureCheck::default();
        bundle_for(&statement(&"cd".repeat(32), SIGN_PREDICATE_TYPE), &signer).check(
            &digest,
            std::slice::from_ref(&key),
            &mut report,
        );
        assert!(report.verified.is_empty());
        assert!(report.rejected[0].contains("another digest"), "{report:?}");

        let mut report = SignatureCheck::default();
        bundle_for(
            &statement(&"ab".repeat(32), "https://slsa.dev/provenance/v1"),
            &signer,
        )
        .check(&digest, std::slice::from_ref(&key), &mut report);
        assert!(report.verified.is_empty());
        assert!(report.rejected[0].contains("not an image signature"));

        let other = super::super::keys::generate(super::super::Algorithm::EcdsaP256, b"").unwrap();
        let other = PublicKey::from_pem("other", other.1.as_bytes()).unwrap();
        let mut report = SignatureCheck::default();
        bundle_for(&statement(&"ab".repeat(32), SIGN_PREDICATE_TYPE), &signer).check(
            &digest,
            &[other],
            &mut report,
        );
        assert!(report.rejected[0].contains("untrusted key"));
    }
}
