//! Keyless signatures of OCI images in both layouts cosign writes:
//! - a Sigstore bundle attached as a referrer (see [`crate::signing::bundle`]): a DSSE
//!   envelope over an in-toto statement of predicate type `https://sigstore.dev/cosign/sign/v1`
//!   naming the image digest;
//! - the `sha256-<hex>.sig` tag (see [`crate::signing::legacy`]): a simple-signing payload
//!   whose layer carries the signature, the Fulcio certificate
//!   (`dev.sigstore.cosign/certificate`) and Rekor's signed entry timestamp with the entry
//!   (`dev.sigstore.cosign/bundle`). The layer is read as the v0.1 bundle it amounts to.
//!
//! Each signature is verified with [`super::verify`] against the trusted root and each named
//! identity; an identity that verifies is reported under its name, as keys are.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use oci_client::Reference;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Artifact, Bundle, Match, Policy, TrustedRoot};
use crate::registry::{Registries, RegistryError, shown};
use crate::signing::bundle::SIGN_PREDICATE_TYPE;
use crate::signing::{SignatureCheck, SignatureLayout, legacy};

/// Annotation of a keyless `.sig` layer holding the PEM signing certificate.
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// Annotation holding Rekor's signed entry timestamp and entry (JSON).
pub const REKOR_BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";

/// An identity trusted to sign, under the name trust rules and reports use.
#[derive(Debug, Clone)]
pub struct Signer {
    /// Name in reports (`signedBy`).
    pub name: String,
    /// The certificate's subject alternative name.
    pub subject: Match,
    /// The OIDC issuer.
    pub issuer: Match,
}

impl Signer {
    /// Whether a verified certificate's identity is this signer's.
    fn matches(&self, identity: &super::certificate::Identity) -> bool {
        identity.subjects.iter().any(|s| self.subject.matches(s))
            && identity
                .issuer
                .as_deref()
                .is_some_and(|i| self.issuer.matches(i))
    }
}

/// A signature is verified once, for any identity the trusted root's CA vouches for; which
/// configured signers its identity is then matched after (verifying it once per signer would
/// repeat the chain, log and timestamp checks for each).
fn any_identity() -> Policy {
    let any = || super::Match::regex(".*").unwrap_or(super::Match::Exact(String::new()));
    Policy::Identity {
        subject: any(),
        issuer: any(),
    }
}

/// The configured signers a verified signature's certificate names, or why none.
fn signers_of<'a>(
    verified: &super::Verified,
    signers: &'a [Signer],
) -> Result<Vec<&'a Signer>, String> {
    let Some(identity) = &verified.identity else {
        return Err("no certificate identity".into());
    };
    let named: Vec<&Signer> = signers.iter().filter(|s| s.matches(identity)).collect();
    if named.is_empty() {
        return Err(format!(
            "the certificate is for {:?} from {:?}, an identity no signer of the rule names",
            identity
                .subjects
                .iter()
                .map(|s| shown(s))
                .collect::<Vec<_>>(),
            identity.issuer.as_deref().map(shown)
        ));
    }
    Ok(named)
}

/// Finds the keyless signatures of `digest` in `repository`, both layouts, and checks each
/// against `signers` under `root` (keyed signatures count as found, trusted by no key).
pub async fn check(
    registries: &Registries,
    repository: &Reference,
    digest: &str,
    signers: &[Signer],
    root: &TrustedRoot,
) -> Result<SignatureCheck, RegistryError> {
    crate::signing::check_signers(registries, repository, digest, &[], signers, Some(root)).await
}

/// Whether a `.sig` layer is keyless (carries a certificate).
pub fn is_keyless_layer(layer: &legacy::LayerSignature) -> bool {
    !layer.annotations()[CERTIFICATE_ANNOTATION].is_null()
}

/// Whether a bundle is keyless (its verification material is a certificate or chain).
pub fn is_keyless_bundle(raw: &[u8]) -> bool {
    serde_json::from_slice::<Value>(raw).is_ok_and(|b| {
        let material = &b["verificationMaterial"];
        !material["certificate"].is_null() || !material["x509CertificateChain"].is_null()
    })
}

fn sha256_of(digest: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(digest.strip_prefix("sha256:")?, &mut out).ok()?;
    Some(out)
}

/// A referrer bundle: a keyless DSSE image signature naming `digest`.
pub fn check_bundle(
    raw: &[u8],
    digest: &str,
    signers: &[Signer],
    root: &TrustedRoot,
    report: &mut SignatureCheck,
) {
    let bundle = match Bundle::from_json(raw) {
        Ok(b) => b,
        Err(e) => return report.reject(format!("sigstore bundle: {e}")),
    };
    if !matches!(bundle.material, super::model::Material::Certificate { .. }) {
        return report.reject("sigstore bundle signed by an untrusted key".into());
    }
    let Some(image) = sha256_of(digest) else {
        return report.reject(format!("{} is not a sha256 digest", shown(digest)));
    };
    let verified = match super::verify(
        &bundle,
        Artifact::Digest(image),
        &any_identity(),
        root,
        Utc::now(),
    ) {
        Ok(verified) => verified,
        Err(e) => return report.reject(format!("keyless bundle: {e}")),
    };
    let named = match signers_of(&verified, signers) {
        Ok(named) => named,
        Err(reason) => return report.reject(format!("keyless bundle: {reason}")),
    };
    let predicate = verified
        .statement
        .as_ref()
        .and_then(|s| s["predicateType"].as_str())
        .unwrap_or_default();
    let Some(statement) = &verified.statement else {
        return report
            .reject("keyless bundle holds a message signature, not an in-toto statement".into());
    };
    if predicate != SIGN_PREDICATE_TYPE {
        // Another statement about the image by a signer of the rule: an attestation, which a
        // rule may require and policies read; it signs nothing. Of several of one type the
        // newest by verified time counts, whatever order the registry lists them in.
        let at = verified.times.iter().max().map_or(0, |t| t.timestamp());
        report.attest(predicate, &statement["predicate"], at);
        return;
    }
    for signer in named {
        report.accept(&signer.name, SignatureLayout::Bundle, &signer_of(&verified));
    }
}

/// The v0.1 bundle a keyless `.sig` layer amounts to, or why it is not one.
pub fn layer_bundle(
    payload: &[u8],
    signature: &[u8],
    annotations: &Value,
) -> Result<Bundle, String> {
    let cert_pem = annotations[CERTIFICATE_ANNOTATION]
        .as_str()
        .ok_or("no certificate annotation")?;
    let cert = pem::parse(cert_pem).map_err(|_| "certificate annotation is not PEM")?;
    let rekor: Value = serde_json::from_str(
        annotations[REKOR_BUNDLE_ANNOTATION]
            .as_str()
            .ok_or("no Rekor bundle annotation")?,
    )
    .map_err(|_| "Rekor bundle annotation is not JSON")?;
    let entry = &rekor["Payload"];
    let body_b64 = entry["body"].as_str().ok_or("Rekor bundle without body")?;
    let body: Value = STANDARD
        .decode(body_b64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("Rekor entry body unreadable")?;
    let log_id = hex::decode(
        entry["logID"]
            .as_str()
            .ok_or("Rekor bundle without logID")?,
    )
    .map_err(|_| "Rekor logID is not hex")?;
    let bundle = json!({
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "verificationMaterial": {
            "x509CertificateChain": {"certificates": [{"rawBytes": STANDARD.encode(cert.contents())}]},
            "tlogEntries": [{
                "logIndex": entry["logIndex"],
                "logId": {"keyId": STANDARD.encode(log_id)},
                "kindVersion": {"kind": body["kind"], "version": body["apiVersion"]},
                "integratedTime": entry["integratedTime"],
                "inclusionPromise": {"signedEntryTimestamp": rekor["SignedEntryTimestamp"]},
                "canonicalizedBody": body_b64,
            }],
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": STANDARD.encode(Sha256::digest(payload))},
            "signature": STANDARD.encode(signature),
        },
    });
    let bytes = serde_json::to_vec(&bundle).map_err(|e| e.to_string())?;
    Bundle::from_json(&bytes).map_err(|e| e.to_string())
}

/// A `.sig` layer: a keyless signature of a simple-signing payload naming `digest`.
pub fn check_layer(
    layer: &legacy::LayerSignature,
    digest: &str,
    signers: &[Signer],
    root: &TrustedRoot,
    report: &mut SignatureCheck,
) {
    if !is_keyless_layer(layer) {
        return report.reject("cosign signature by an untrusted key".into());
    }
    let signature = match layer.signature() {
        Ok(s) => s,
        Err(reason) => return report.reject(reason.to_string()),
    };
    let bundle = match layer_bundle(layer.payload(), signature, layer.annotations()) {
        Ok(b) => b,
        Err(reason) => return report.reject(format!("keyless cosign signature: {reason}")),
    };
    let verified = match super::verify(
        &bundle,
        Artifact::Bytes(layer.payload()),
        &any_identity(),
        root,
        Utc::now(),
    ) {
        Ok(verified) => verified,
        Err(e) => return report.reject(format!("keyless cosign signature: {e}")),
    };
    let named = match signers_of(&verified, signers) {
        Ok(named) => named,
        Err(reason) => return report.reject(format!("keyless cosign signature: {reason}")),
    };
    // Only a verified payload is read.
    match legacy::parse_payload(layer.payload()) {
        Ok(named_digest) if named_digest == digest => {
            for signer in named {
                report.accept(&signer.name, SignatureLayout::Legacy, &signer_of(&verified));
            }
        }
        Ok(other) => report.reject(format!(
            "cosign signature by {} is for {}",
            named[0].name,
            shown(&other)
        )),
        Err(e) => report.reject(format!("cosign payload signed by {}: {e}", named[0].name)),
    }
}

/// Who made a verified keyless signature: its certificate's identity. Two configured
/// identities a certificate both matches are one signer.
fn signer_of(verified: &super::Verified) -> String {
    match &verified.identity {
        Some(identity) => format!(
            "identity {} from {}",
            identity.subjects.join(","),
            identity.issuer.as_deref().unwrap_or("")
        ),
        None => "identity (none)".to_string(),
    }
}
