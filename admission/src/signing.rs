//! cosign-compatible image signatures: keys, signing, and finding and checking the signatures
//! of a digest.
//!
//! Two layouts are supported, both as cosign writes them:
//! - [`legacy`]: the `sha256-<hex>.sig` tag, one simple-signing payload per layer with the
//!   signature in the `dev.cosignproject.cosign/signature` annotation;
//! - [`bundle`]: a sigstore bundle (v0.3, DSSE envelope over an in-toto statement of predicate
//!   type `https://sigstore.dev/cosign/sign/v1`) attached as an OCI 1.1 referrer.
//!
//! - [`keyless`]: Sigstore bundles verified offline against a trusted root (Fulcio
//!   certificates, transparency log proofs, RFC 3161 timestamps), and managed-key bundles.
//!
//! Cryptography is the `sigstore` crate's: its encrypted key format, signers and verification
//! keys (ECDSA P-256/P-384, Ed25519, RSA PKCS#1 v1.5).

pub mod bundle;
pub mod keyless;
pub mod keys;
pub mod legacy;

use oci_client::Reference;

pub use keys::{Algorithm, PublicKey};

use crate::oci::repository_name;
use crate::registry::{Registries, RegistryError};

/// Largest attestation predicate kept for policies, as JSON.
pub const MAX_PREDICATE_BYTES: usize = 64 * 1024;

/// Which layout a signature was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SignatureLayout {
    /// cosign's `.sig` tag.
    Legacy,
    /// A sigstore bundle referrer.
    Bundle,
}

impl SignatureLayout {
    /// The name used in summaries and policy input.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureLayout::Legacy => "cosign",
            SignatureLayout::Bundle => "sigstore-bundle",
        }
    }
}

/// A signature that one of the given keys verified for the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The key's name.
    pub key: String,
    /// Where it was found.
    pub format: SignatureLayout,
    /// Who made it: the key material, or the certificate's identity (subjects and issuer).
    /// Names backed by the same signer count once towards a threshold.
    pub signer: String,
}

/// What the registry holds for a digest, checked against keys.
#[derive(Debug, Clone, Default)]
pub struct SignatureCheck {
    /// Signatures that verified, one per (key, format).
    pub verified: Vec<Verified>,
    /// Signature objects found in total (verified or not).
    pub found: usize,
    /// Why found signatures did not count (wrong key, other digest, malformed), deduplicated.
    pub rejected: Vec<String>,
    /// Verified in-toto attestations of the digest by a signer of the rule: predicate type →
    /// (its latest verified time in seconds, predicate), the newest of each type.
    pub attestations: std::collections::BTreeMap<String, (i64, serde_json::Value)>,
}

impl SignatureCheck {
    /// Names of the keys and identities that signed, each backed by a signer of its own: the
    /// largest set of names that distinct signers account for, sorted. One signature matching
    /// two names (overlapping identities, one key listed twice) counts once, so a threshold
    /// counts independent signers.
    pub fn keys(&self) -> Vec<String> {
        let mut names: Vec<&str> = self.verified.iter().map(|v| v.key.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let mut signers: Vec<&str> = self.verified.iter().map(|v| v.signer.as_str()).collect();
        signers.sort_unstable();
        signers.dedup();
        let edges: Vec<Vec<usize>> = names
            .iter()
            .map(|name| {
                let mut of: Vec<usize> = self
                    .verified
                    .iter()
                    .filter(|v| v.key == *name)
                    .filter_map(|v| signers.iter().position(|s| *s == v.signer))
                    .collect();
                of.sort_unstable();
                of.dedup();
                of
            })
            .collect();
        // Maximum bipartite matching (augmenting paths): names × signers, a few dozen at most.
        let mut owner: Vec<Option<usize>> = vec![None; signers.len()];
        fn augment(
            name: usize,
            edges: &[Vec<usize>],
            owner: &mut [Option<usize>],
            seen: &mut [bool],
        ) -> bool {
            for &signer in &edges[name] {
                if seen[signer] {
                    continue;
                }
                seen[signer] = true;
                if owner[signer].is_none_or(|other| augment(other, edges, owner, seen)) {
                    owner[signer] = Some(name);
                    return true;
                }
            }
            false
        }
        for name in 0..names.len() {
            let mut seen = vec![false; signers.len()];
            augment(name, &edges, &mut owner, &mut seen);
        }
        let mut matched: Vec<String> = owner
            .iter()
            .flatten()
            .map(|&n| names[n].to_string())
            .collect();
        matched.sort();
        matched
    }

    /// Keeps a verified attestation's predicate, at most [`MAX_PREDICATE_BYTES`] of JSON (it
    /// is cached with the image's facts and handed to every policy). Of several of one type,
    /// the one signed last (`at`: its latest verified time, in seconds) is kept, so pushing an
    /// older one again cannot displace a newer.
    fn attest(&mut self, predicate_type: &str, predicate: &serde_json::Value, at: i64) {
        if self
            .attestations
            .get(predicate_type)
            .is_some_and(|(held, _)| *held >= at)
        {
            return;
        }
        let size = serde_json::to_vec(predicate).map_or(usize::MAX, |b| b.len());
        if size > MAX_PREDICATE_BYTES {
            return self.reject(format!(
                "attestation of type {} is larger than {MAX_PREDICATE_BYTES} bytes",
                crate::registry::shown(predicate_type)
            ));
        }
        self.attestations
            .insert(predicate_type.to_string(), (at, predicate.clone()));
    }

    fn reject(&mut self, reason: String) {
        if !self.rejected.contains(&reason) {
            self.rejected.push(reason);
        }
    }

    fn accept(&mut self, key: &str, format: SignatureLayout, signer: &str) {
        let verified = Verified {
            key: key.to_string(),
            format,
            signer: signer.to_string(),
        };
        if !self.verified.contains(&verified) {
            self.verified.push(verified);
        }
    }

    /// One line on why nothing verified, for deny messages.
    pub fn explain(&self) -> String {
        if self.found == 0 {
            "no signatures found".to_string()
        } else if self.rejected.is_empty() {
            format!("{} signature(s) found, none by a trusted key", self.found)
        } else {
            format!(
                "{} signature(s) found, none valid: {}",
                self.found,
                self.rejected.join("; ")
            )
        }
    }
}

/// Finds every signature of `digest` in `repository` (a reference to the image's repository)
/// in both layouts and checks each against `keys`.
pub async fn check(
    registries: &Registries,
    repository: &Reference,
    digest: &str,
    keys: &[PublicKey],
) -> Result<SignatureCheck, RegistryError> {
    check_signers(registries, repository, digest, keys, &[], None).await
}

/// As [`check`], and keyless signatures (a Fulcio certificate, in either layout) are checked
/// against `identities` under `root`: keys and identities are reported alike, by name, so a
/// threshold counts distinct keys and identities together. Without identities or a root,
/// keyless signatures are only counted as found.
pub async fn check_signers(
    registries: &Registries,
    repository: &Reference,
    digest: &str,
    keys: &[PublicKey],
    identities: &[keyless::oci::Signer],
    root: Option<&keyless::TrustedRoot>,
) -> Result<SignatureCheck, RegistryError> {
    let mut report = SignatureCheck::default();
    let (legacy, bundles) = futures_util::join!(
        legacy::fetch(registries, repository, digest),
        bundle::fetch(registries, repository, digest),
    );
    let keyless_root = root.filter(|_| !identities.is_empty());
    for signature in legacy? {
        report.found += 1;
        match keyless_root {
            Some(root) if keyless::oci::is_keyless_layer(&signature) => {
                keyless::oci::check_layer(&signature, digest, identities, root, &mut report);
            }
            _ => signature.check(digest, keys, &mut report),
        }
    }
    for found in bundles? {
        report.found += 1;
        match found {
            Ok(bundle) => match keyless_root {
                Some(root) if keyless::oci::is_keyless_bundle(bundle.raw()) => {
                    keyless::oci::check_bundle(bundle.raw(), digest, identities, root, &mut report);
                }
                _ => bundle.check(digest, keys, &mut report),
            },
            Err(reason) => report.reject(reason),
        }
    }
    Ok(report)
}

/// Resolves a reference to the digest of what it names (the index, for multi-platform
/// images, as cosign signs).
pub async fn resolve(
    registries: &Registries,
    reference: &Reference,
) -> Result<String, RegistryError> {
    match reference.digest() {
        Some(digest) => Ok(digest.to_string()),
        None => Ok(registries.manifest(reference).await?.digest),
    }
}

/// Why signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The registry refused or could not be reached.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Parses an image reference, naming it in the error.
pub fn parse_reference(reference: &str) -> Result<Reference, SignError> {
    reference
        .parse()
        .map_err(|e| SignError::Other(format!("invalid reference {reference}: {e}")))
}

/// Signs what `reference` names (`meshgate sign`); returns `(digest, where the signature went)`.
pub async fn sign(
    registries: &Registries,
    reference: &str,
    signer: &sigstore::crypto::SigStoreSigner,
    as_bundle: bool,
) -> Result<(String, String), SignError> {
    let reference = parse_reference(reference)?;
    let manifest = registries.manifest(&reference).await?;
    let digest = manifest.digest.clone();
    let location = if as_bundle {
        let public_der = signer
            .to_sigstore_keypair()
            .and_then(|pair| pair.public_key_to_der())
            .map_err(|e| SignError::Other(format!("public key: {e}")))?;
        let referrer = bundle::sign(
            registries,
            &reference,
            &digest,
            manifest.media_type(),
            manifest.bytes.len(),
            signer,
            &public_der,
        )
        .await?;
        format!("bundle referrer {referrer}")
    } else {
        let tag = legacy::sign(registries, &reference, &digest, signer).await?;
        format!("{}:{tag}", repository_name(&reference))
    };
    Ok((digest, location))
}

/// Verifies that one of `keys` signed what `reference` names (`meshgate verify`); returns a
/// one-line summary, or the reason it is not signed.
pub async fn verify(
    registries: &Registries,
    reference: &str,
    keys: &[PublicKey],
) -> Result<String, SignError> {
    let parsed = parse_reference(reference)?;
    let digest = resolve(registries, &parsed).await?;
    let report = check(registries, &parsed, &digest, keys).await?;
    summary(reference, &digest, &report)
}

/// Verifies that one of `signers` signed what `reference` names, keyless, under `root`
/// (`meshgate verify --certificate-identity`); returns a one-line summary, or the reason it
/// is not signed.
pub async fn verify_keyless(
    registries: &Registries,
    reference: &str,
    signers: &[keyless::oci::Signer],
    root: &keyless::TrustedRoot,
) -> Result<String, SignError> {
    let parsed = parse_reference(reference)?;
    let digest = resolve(registries, &parsed).await?;
    let report = keyless::oci::check(registries, &parsed, &digest, signers, root).await?;
    summary(reference, &digest, &report)
}

/// The summary of a check: who signed, or why nothing verified.
fn summary(reference: &str, digest: &str, report: &SignatureCheck) -> Result<String, SignError> {
    if report.verified.is_empty() {
        return Err(SignError::Other(format!(
            "{reference} ({digest}): {}",
            report.explain()
        )));
    }
    let by: Vec<String> = report
        .verified
        .iter()
        .map(|v| format!("{} ({})", v.key, v.format.as_str()))
        .collect();
    Ok(format!("{reference}: {digest} signed by {}", by.join(", ")))
}

#[cfg(test)]
mod tests;
