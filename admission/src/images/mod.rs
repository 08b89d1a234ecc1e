//! Image verification at admission: every image of a selected pod must be a Wasm artifact
//! signed as its trust rule requires.
//!
//! Per image: parse the reference, pick the trust rule (first glob over `registry/repository`
//! that matches; none denies), refuse a tag if the rule requires a digest, resolve a tag to a
//! digest, check the artifact layout (every runnable entry of an index), then find the cosign
//! signatures of the digest (both layouts, see [`crate::signing`]) and count the rule's keys
//! that verified. On UPDATE, images the old object ran may keep their verdict unfetched.
//! Results are cached per (repository, digest, rule), since signatures live in the image's
//! repository: verified ones for `cacheTtl`, failures for `negativeCacheTtl`. Concurrent checks
//! of the same entry share one registry visit.
//!
//! Work is bounded whatever a pod lists: at most `maxImagesPerReview` distinct images are
//! looked up per review, `maxConcurrentChecksPerReview` at once, and registry work runs under
//! `maxConcurrentChecks` permits shared by all reviews; the caches are bounded and keep no
//! entry for a check every asker gave up on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oci_client::Reference;
use serde_json::Value as Json;
use tokio::sync::Semaphore;

mod facts;
pub(crate) mod flights;

pub use facts::{
    ArtifactFacts, ImageFacts, SignatureFact, UnchangedImage, VerifiedImage, WasmArtifact,
};
use flights::Flights;

use crate::artifact;
use crate::capabilities::Capabilities;
use crate::config::{ArtifactCheck, FailurePolicy, ImageVerification, Mode, OnUpdate};
use crate::metrics::Metrics;
use crate::oci;
use crate::registry::{Manifest, Registries, RegistryError};
use crate::review::decode::clip_to;
use crate::review::judge::LOGGED_FINDING_BYTES;
use crate::signing::{self, PublicKey};
use std::future::Future;

/// Largest Wasm layer fetched for the `parse` artifact check.
const MAX_WASM_BYTES: usize = 64 * 1024 * 1024;

/// A configuration problem found while building the verifier.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A key file could not be read.
    #[error("imageVerification: key {name}: {}: {source}", path.display())]
    KeyFile {
        /// The key's name.
        name: String,
        /// Its file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key has neither `file` nor `pem`.
    #[error("imageVerification: key {0}: no PEM")]
    NoPem(String),
    /// A key's PEM is not a public key cosign can verify with (the message names the key).
    #[error("imageVerification: {0}")]
    Key(#[from] signing::keys::KeyError),
    /// A trust rule's image glob does not parse.
    #[error("imageVerification: trust rule {rule}: {source}")]
    Glob {
        /// The rule's name.
        rule: String,
        /// Why.
        source: glob::PatternError,
    },
    /// Registry credentials could not be read.
    #[error("imageVerification: {0}")]
    Registries(#[from] RegistryError),
    /// The trusted root of keyless signatures could not be read, or an identity's regular
    /// expression does not compile.
    #[error("imageVerification: {0}")]
    Keyless(String),
}

struct Rule {
    name: String,
    patterns: Vec<glob::Pattern>,
    keys: Vec<PublicKey>,
    identities: Vec<signing::keyless::oci::Signer>,
    needed: usize,
    require_digest: bool,
    attestations: Vec<String>,
}

impl Rule {
    /// Whether the rule names no signer at all (images are admitted unsigned).
    fn unsigned(&self) -> bool {
        self.keys.is_empty() && self.identities.is_empty()
    }
}

/// Why a policy image was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyImageError {
    /// It failed a check of its trust rule (artifact layout, signatures).
    #[error("{0}")]
    Denied(String),
    /// Its registry could not be asked.
    #[error("{0}")]
    Unavailable(String),
    /// Its trust rule admits unsigned images; a policy runs inside the webhook, so it must be
    /// signed.
    #[error("trust rule {trust_rule} requires no signature, but a policy image must be signed")]
    Unsigned {
        /// The rule that matched.
        trust_rule: String,
    },
    /// The reference does not parse.
    #[error("{0}")]
    Reference(String),
    /// The artifact has no Wasm layer to load.
    #[error("no Wasm layer: {0}")]
    NoWasmLayer(String),
    /// Fetching the manifest or the layer failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The outcome of one image's checks.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Every check passed; the facts policies receive.
    Verified(Box<VerifiedImage>),
    /// A check failed; the reason.
    Denied(String),
    /// A registry could not be asked; the reason names it.
    Unavailable(String),
}

/// What the image checks of one pod concluded.
#[derive(Debug, Clone, Default)]
pub struct PodImages {
    /// Messages that deny the pod.
    pub violations: Vec<String>,
    /// Messages returned as warnings.
    pub warnings: Vec<String>,
    /// Facts per verified image, keyed by the image as written in the pod.
    pub facts: BTreeMap<String, ImageFacts>,
}

/// Checks images against the trust policy; shared by all reviews.
pub struct ImageVerifier {
    registries: Registries,
    rules: Vec<Rule>,
    /// The Sigstore trusted root, when some rule names identities.
    trusted_root: Option<signing::keyless::TrustedRoot>,
    artifact_check: ArtifactCheck,
    timeout: Duration,
    cache_ttl: Duration,
    negative_ttl: Duration,
    tag_ttl: Duration,
    mode: Mode,
    failure_policy: FailurePolicy,
    on_update: OnUpdate,
    verified: Flights<(String, String, usize), Outcome>,
    tags: Flights<String, Result<Manifest, RegistryError>>,
    max_images: usize,
    per_review: usize,
    /// Permits for image checks running at once, across all reviews.
    running: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl ImageVerifier {
    /// Reads keys and credentials. Only the section's own `failurePolicy` may admit an image
    /// that could not be verified; the server's does not apply.
    pub fn new(config: &ImageVerification, metrics: Arc<Metrics>) -> Result<Self, SetupError> {
        let mut keys = HashMap::new();
        for key in &config.keys {
            let pem = match (&key.file, &key.pem) {
                (Some(file), _) => std::fs::read(file).map_err(|source| SetupError::KeyFile {
                    name: key.name.clone(),
                    path: file.clone(),
                    source,
                })?,
                (None, Some(pem)) => pem.clone().into_bytes(),
                (None, None) => return Err(SetupError::NoPem(key.name.clone())),
            };
            let public = PublicKey::from_pem(&key.name, &pem)?;
            keys.insert(key.name.clone(), public);
        }
        let identities = keyless_identities(config)?;
        let mut rules = Vec::new();
        for rule in &config.trust {
            let patterns = rule
                .images
                .iter()
                .map(|p| glob::Pattern::new(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| SetupError::Glob {
                    rule: rule.name.clone(),
                    source,
                })?;
            let rule_keys = rule
                .keys
                .iter()
                .filter_map(|k| keys.get(k).cloned())
                .collect::<Vec<_>>();
            let rule_identities = rule
                .identities
                .iter()
                .filter_map(|i| identities.get(i).cloned())
                .collect::<Vec<_>>();
            rules.push(Rule {
                name: rule.name.clone(),
                needed: rule.require.needed(rule_keys.len() + rule_identities.len()),
                require_digest: rule.require_digest,
                attestations: rule.attestations.clone(),
                patterns,
                keys: rule_keys,
                identities: rule_identities,
            });
        }
        // Read at startup, so an unreadable root stops `serve` rather than denying later.
        let trusted_root = if rules.iter().any(|r| !r.identities.is_empty()) {
            Some(keyless_root(config.trusted_root.as_ref())?)
        } else {
            None
        };
        let registries = Registries::new(
            &config.registries,
            config.docker_config.as_deref(),
            config.timeout,
        )?;
        Ok(Self {
            registries,
            rules,
            trusted_root,
            artifact_check: config.artifact_check,
            timeout: config.timeout,
            cache_ttl: config.cache_ttl,
            negative_ttl: config.negative_cache_ttl,
            tag_ttl: config.tag_ttl,
            mode: config.mode,
            failure_policy: config.failure_policy,
            on_update: config.on_update,
            verified: Flights::new(),
            tags: Flights::new(),
            max_images: config.max_images_per_review,
            per_review: config.max_concurrent_checks_per_review.max(1),
            running: Arc::new(Semaphore::new(config.max_concurrent_checks.max(1))),
            metrics,
        })
    }

    /// Whether an UPDATE keeps the verdict of images its old object ran (`onUpdate`).
    pub fn keeps_unchanged_images(&self) -> bool {
        self.on_update == OnUpdate::ChangedImages
    }

    /// Whether a pod whose image checks could not finish may still be admitted: only when
    /// findings do not deny (`warn`, `dry-run`) or the section's `failurePolicy` is `Ignore`.
    pub fn admits_unverified(&self) -> bool {
        self.mode != Mode::Enforce || self.failure_policy == FailurePolicy::Ignore
    }

    /// Checks every distinct image of a pod spec, at most `maxConcurrentChecksPerReview` at
    /// once. Images that `earlier` (the pod spec an UPDATE replaces, already admitted) also
    /// runs keep their verdict and are not fetched; policies see them as
    /// `{"image": ..., "unchanged": true}`. More than `maxImagesPerReview` images to check
    /// are not checked at all: the pod is treated as unverifiable.
    pub async fn check_pod(&self, pod_spec: &Json, earlier: Option<&Json>) -> PodImages {
        let earlier = earlier.map(images_of).unwrap_or_default();
        let (unchanged, images): (Vec<&str>, Vec<&str>) = images_of(pod_spec)
            .into_iter()
            .partition(|image| earlier.contains(image));
        let mut pod = PodImages::default();
        for image in unchanged {
            tracing::debug!(image, "image unchanged by the update: not verified again");
            pod.facts.insert(
                image.to_string(),
                ImageFacts::Unchanged(UnchangedImage {
                    image: image.to_string(),
                    unchanged: true,
                }),
            );
        }
        if images.len() > self.max_images {
            let message = format!(
                "[image-verification] the pod has {} distinct images to verify, more than \
                 imageVerification.maxImagesPerReview ({}): none was verified",
                images.len(),
                self.max_images
            );
            match (self.mode, self.failure_policy) {
                (Mode::DryRun, _) => {
                    tracing::info!(finding = %clip_to(&message, LOGGED_FINDING_BYTES), "dry-run image finding")
                }
                (Mode::Warn, _) | (Mode::Enforce, FailurePolicy::Ignore) => {
                    tracing::warn!(reason = %clip_to(&message, LOGGED_FINDING_BYTES), "images admitted unverified");
                    pod.warnings.push(message);
                }
                (Mode::Enforce, FailurePolicy::Fail) => pod.violations.push(message),
            }
            return pod;
        }
        // In order, so outcomes line up with `images`.
        let checks: Vec<_> = images.iter().map(|image| self.check(image)).collect();
        let outcomes: Vec<Outcome> = futures_util::stream::iter(checks)
            .buffered(self.per_review)
            .collect()
            .await;
        for (image, outcome) in images.into_iter().zip(outcomes) {
            let (message, unavailable) = match outcome {
                Outcome::Verified(facts) => {
                    pod.facts
                        .insert(image.to_string(), ImageFacts::Verified(facts));
                    continue;
                }
                Outcome::Denied(reason) => {
                    (format!("[image-verification] {image}: {reason}"), false)
                }
                Outcome::Unavailable(reason) => {
                    (format!("[image-verification] {image}: {reason}"), true)
                }
            };
            match (self.mode, unavailable, self.failure_policy) {
                (Mode::DryRun, ..) => {
                    tracing::info!(image = %clip_to(image, LOGGED_FINDING_BYTES), finding = %clip_to(&message, LOGGED_FINDING_BYTES), "dry-run image finding");
                }
                (Mode::Enforce, true, FailurePolicy::Ignore) => {
                    tracing::warn!(image = %clip_to(image, LOGGED_FINDING_BYTES), reason = %clip_to(&message, LOGGED_FINDING_BYTES), "image admitted unverified");
                    pod.warnings.push(format!(
                        "{message} (admitted unverified: imageVerification.failurePolicy is Ignore)"
                    ));
                }
                (Mode::Warn, ..) => pod.warnings.push(message),
                (Mode::Enforce, ..) => pod.violations.push(message),
            }
        }
        pod
    }

    /// Checks one image, from the cache when it can.
    pub async fn check(&self, image: &str) -> Outcome {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.timeout, self.check_uncached(image)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Unavailable(format!(
                "registry {} did not answer within {:?}",
                registry_of(image),
                self.timeout
            )),
        };
        let label = match &outcome {
            Outcome::Verified(_) => "verified",
            Outcome::Denied(_) => "denied",
            Outcome::Unavailable(_) => "unavailable",
        };
        self.metrics.image(label, started.elapsed().as_secs_f64());
        outcome
    }

    /// Fetches the Wasm component of a policy image after checking it like a pod's image,
    /// and requires that its trust rule has keys: a policy runs inside the webhook, so an
    /// unsigned one is never loaded. Returns the verified digest and the component's bytes.
    pub async fn fetch_policy(&self, image: &str) -> Result<(String, Vec<u8>), PolicyImageError> {
        let facts = match self.check(image).await {
            Outcome::Verified(facts) => facts,
            Outcome::Denied(reason) => return Err(PolicyImageError::Denied(reason)),
            Outcome::Unavailable(reason) => return Err(PolicyImageError::Unavailable(reason)),
        };
        if facts.signed_by.is_empty() {
            return Err(PolicyImageError::Unsigned {
                trust_rule: facts.trust_rule.clone(),
            });
        }
        let bytes = self.wasm_bytes(image, &facts, MAX_WASM_BYTES).await?;
        Ok((facts.digest.clone(), bytes))
    }

    /// The Wasm layer of an image `check` verified (an index's Wasm entry, else the image's
    /// manifest), at most `max` bytes.
    pub async fn wasm_bytes(
        &self,
        image: &str,
        facts: &VerifiedImage,
        max: usize,
    ) -> Result<Vec<u8>, PolicyImageError> {
        let reference: Reference = image
            .parse()
            .map_err(|e: oci_client::ParseError| PolicyImageError::Reference(e.to_string()))?;
        let manifest_digest = match &facts.artifact {
            ArtifactFacts::Wasm(wasm) => &wasm.manifest_digest,
            ArtifactFacts::Unchecked { .. } => &facts.digest,
        };
        let repository = oci::at_digest(&reference, manifest_digest);
        let manifest = self.registries.manifest(&repository).await?;
        let layout = artifact::Layout::of(&manifest.json);
        let layer = layout
            .wasm_layer()
            .ok_or_else(|| PolicyImageError::NoWasmLayer(layout.describe()))?;
        Ok(self.registries.blob(&repository, layer, max).await?)
    }

    /// Runs registry work under one of the process's permits; cached results need none.
    /// Waiting counts against the image's `timeout`: under load an image is reported
    /// unavailable rather than queued without bound.
    async fn limited<T>(&self, work: impl Future<Output = T>) -> T {
        let _permit = self.running.acquire().await;
        work.await
    }

    async fn check_uncached(&self, image: &str) -> Outcome {
        let reference: Reference = match image.parse() {
            Ok(r) => r,
            Err(e) => return Outcome::Denied(format!("invalid image reference: {e}")),
        };
        // Rules match the host as clients resolve it: `GHCR.IO` is `ghcr.io`.
        let name = match oci::canonical_registry(reference.registry()) {
            Ok(host) => format!("{host}/{}", reference.repository()),
            Err(reason) => return Outcome::Denied(reason),
        };
        let Some((index, rule)) = self.rules.iter().enumerate().find(|(_, r)| {
            r.patterns
                .iter()
                .any(|p| p.matches_with(&name, glob_options()))
        }) else {
            return Outcome::Denied(format!("no trust rule matches {name}"));
        };
        if rule.require_digest && reference.digest().is_none() {
            // A tag is verified at admission but pulled later, when it may name other content.
            return Outcome::Denied(format!(
                "trust rule {} requires a digest reference (image@sha256:...), not a tag",
                rule.name
            ));
        }
        // A tag's manifest is kept with its digest: the checks below reuse it.
        let (digest, manifest) = match reference.digest() {
            Some(digest) => (digest.to_string(), None),
            None => {
                let resolved = self
                    .tags
                    .get(
                        reference.whole(),
                        |r| match r {
                            Ok(_) => self.tag_ttl,
                            Err(_) => self.negative_ttl.min(self.tag_ttl),
                        },
                        || self.limited(self.registries.manifest(&reference)),
                    )
                    .await;
                match resolved {
                    Ok(manifest) => (manifest.digest.clone(), Some(manifest)),
                    Err(e) => return registry_outcome(e),
                }
            }
        };
        let outcome = self
            .verified
            .get(
                (name, digest.clone(), index),
                |outcome| match outcome {
                    Outcome::Verified(_) => self.cache_ttl,
                    _ => self.negative_ttl,
                },
                || self.limited(self.verify(&reference, &digest, manifest, rule)),
            )
            .await;
        match outcome {
            Outcome::Verified(mut facts) => {
                facts.image = image.to_string();
                Outcome::Verified(facts)
            }
            other => other,
        }
    }

    async fn verify(
        &self,
        reference: &Reference,
        digest: &str,
        manifest: Option<Manifest>,
        rule: &Rule,
    ) -> Outcome {
        let repository = oci::at_digest(reference, digest);
        let artifact = async {
            let manifest = match manifest {
                Some(m) => m,
                None => self.registries.manifest(&repository).await?,
            };
            self.artifact(&repository, manifest).await
        };
        // The artifact and its signatures are independent lookups: ask for both at once.
        let signatures = async {
            if rule.unsigned() {
                Ok(signing::SignatureCheck::default())
            } else {
                signing::check_signers(
                    &self.registries,
                    &repository,
                    digest,
                    &rule.keys,
                    &rule.identities,
                    self.trusted_root.as_ref(),
                )
                .await
            }
        };
        let (artifact, report) = futures_util::join!(artifact, signatures);
        let artifact = match artifact {
            Ok(Ok(facts)) => facts,
            Ok(Err(reason)) => return Outcome::Denied(reason),
            Err(e) => return registry_outcome(e),
        };
        let capabilities = match &artifact {
            ArtifactFacts::Wasm(wasm) => wasm.capabilities.as_deref().cloned(),
            ArtifactFacts::Unchecked { .. } => None,
        };
        let mut facts = Box::new(VerifiedImage {
            // Set by the caller: cached facts serve every spelling of the image.
            image: String::new(),
            digest: digest.to_string(),
            registry: reference.registry().to_string(),
            repository: reference.repository().to_string(),
            trust_rule: rule.name.clone(),
            artifact,
            signatures: Vec::new(),
            signed_by: Vec::new(),
            attestations: Default::default(),
            capabilities,
        });
        if rule.unsigned() {
            return Outcome::Verified(facts);
        }
        let report = match report {
            Ok(r) => r,
            Err(e) => return registry_outcome(e),
        };
        let signed_by = report.keys();
        if signed_by.len() < rule.needed {
            let reason = if signed_by.is_empty() {
                report.explain()
            } else {
                format!("signed by {}", signed_by.join(", "))
            };
            return Outcome::Denied(format!(
                "{digest} is not signed as trust rule {} requires ({} of {} keys and identities): {reason}",
                rule.name,
                rule.needed,
                rule.keys.len() + rule.identities.len()
            ));
        }
        if let Some(missing) = rule
            .attestations
            .iter()
            .find(|t| !report.attestations.contains_key(*t))
        {
            return Outcome::Denied(format!(
                "{digest} carries no attestation of type {missing} verified for an identity of trust rule {}",
                rule.name
            ));
        }
        // Only the types the rule requires are kept: the facts are cached per image, so what
        // they hold is bounded by the configuration, not by what a registry serves.
        facts.attestations = report
            .attestations
            .iter()
            .filter(|(t, _)| rule.attestations.contains(*t))
            .map(|(t, (_, p))| (t.clone(), p.clone()))
            .collect();
        facts.signatures = report
            .verified
            .iter()
            .map(|v| SignatureFact {
                key: v.key.clone(),
                format: v.format.as_str(),
            })
            .collect();
        facts.signed_by = signed_by;
        Outcome::Verified(facts)
    }

    /// Checks the layout of the artifact; `Ok(Err(reason))` when it is not a Wasm artifact.
    async fn artifact(
        &self,
        repository: &Reference,
        manifest: Manifest,
    ) -> Result<Result<ArtifactFacts, String>, RegistryError> {
        if self.artifact_check == ArtifactCheck::None {
            return Ok(Ok(ArtifactFacts::Unchecked {
                media_type: manifest.media_type().to_string(),
            }));
        }
        if !manifest.is_index() {
            return self.artifact_manifest(repository, manifest, None).await;
        }
        let entries = match artifact::index_entries(&manifest.json) {
            Ok(entries) => entries,
            Err(reason) => return Ok(Err(reason)),
        };
        // Every entry a node may pull is checked, not only the first Wasm one: the node picks
        // by its own platform, the webhook cannot know which.
        let checks = entries.iter().map(|entry| async {
            let child = oci::at_digest(repository, &entry.digest);
            let child = self.registries.manifest(&child).await?;
            self.artifact_manifest(repository, child, Some(manifest.digest.as_str()))
                .await
        });
        let results = futures_util::future::join_all(checks).await;
        let (mut first, mut unavailable) = (None, None);
        for (entry, result) in entries.iter().zip(results) {
            match result {
                // The facts of the first entry, with what every entry imports and is: a node
                // pulls the entry of its own platform, so policies and runtime fit judge all.
                Ok(Ok(facts)) => match (&mut first, facts) {
                    (None, facts) => first = Some(facts),
                    (Some(ArtifactFacts::Wasm(all)), ArtifactFacts::Wasm(more)) => {
                        all.module_kinds.extend(more.module_kinds);
                        if let Some(more) = more.capabilities {
                            match &mut all.capabilities {
                                None => all.capabilities = Some(more),
                                Some(caps) => {
                                    if let Err(reason) = caps.merge(*more) {
                                        return Ok(Err(format!("image index: {reason}")));
                                    }
                                }
                            }
                        }
                    }
                    (Some(_), _) => {}
                },
                // A refused entry decides, even if another one could not be fetched.
                Ok(Err(reason)) => {
                    return Ok(Err(format!(
                        "image index entry {} ({}): {reason}",
                        entry.digest, entry.platform
                    )));
                }
                Err(e) => {
                    unavailable.get_or_insert(e);
                }
            }
        }
        if let Some(e) = unavailable {
            return Err(e);
        }
        // index_entries returns at least one entry, so `first` is set.
        Ok(first.ok_or_else(|| "image index has no entry".to_string()))
    }

    /// Checks the layout of one image manifest (`index_digest`: the index it was reached
    /// through).
    async fn artifact_manifest(
        &self,
        repository: &Reference,
        manifest: Manifest,
        index_digest: Option<&str>,
    ) -> Result<Result<ArtifactFacts, String>, RegistryError> {
        let layout = artifact::Layout::of(&manifest.json);
        let mut kind = layout.wasm_kind();
        if kind.is_none() && layout.has_image_config() {
            // An OCI image is a Wasm image when its config says `architecture: wasm`.
            let config = self
                .registries
                .blob(
                    repository,
                    &layout.config_digest,
                    crate::registry::MAX_METADATA_BYTES,
                )
                .await?;
            if serde_json::from_slice::<Json>(&config).is_ok_and(|c| c["architecture"] == "wasm") {
                kind = Some("oci-image-wasm");
            }
        }
        let Some(kind) = kind else {
            return Ok(Err(format!("not a Wasm artifact: {}", layout.refusal())));
        };
        let mut module_kinds = Vec::new();
        let mut capabilities: Option<Capabilities> = None;
        if self.artifact_check == ArtifactCheck::Parse {
            // Every Wasm layer is parsed, since a runtime may load any of them; an
            // `architecture: wasm` image's filesystem layers hold nothing `parse` can check.
            let layers = layout.wasm_layers();
            if layers.is_empty() {
                return Ok(Err(format!(
                    "{kind} image has no Wasm layer for artifactCheck parse: {}",
                    layout.refusal()
                )));
            }
            for layer in layers {
                let bytes = self
                    .registries
                    .blob(repository, layer, MAX_WASM_BYTES)
                    .await?;
                let read = match Capabilities::of(&bytes) {
                    Ok(read) => read,
                    Err(reason) => {
                        return Ok(Err(format!("Wasm layer {layer} does not parse: {reason}")));
                    }
                };
                module_kinds.push(read.kind);
                capabilities = Some(match capabilities {
                    None => read,
                    Some(mut all) => {
                        if let Err(reason) = all.merge(read) {
                            return Ok(Err(reason));
                        }
                        all
                    }
                });
            }
        }
        Ok(Ok(ArtifactFacts::Wasm(WasmArtifact {
            kind: kind.to_string(),
            media_type: manifest.media_type().to_string(),
            manifest_digest: manifest.digest.clone(),
            index_digest: index_digest.map(str::to_string),
            config_media_type: layout.config_media_type,
            layer_media_types: layout.layer_media_types,
            module_kinds,
            capabilities: capabilities.map(Box::new),
        })))
    }
}

/// The configured keyless identities, by name.
fn keyless_identities(
    config: &ImageVerification,
) -> Result<HashMap<String, signing::keyless::oci::Signer>, SetupError> {
    use signing::keyless::Match;
    let matcher = |exact: &Option<String>, pattern: &Option<String>| match (exact, pattern) {
        (Some(text), _) => Ok(Match::Exact(text.clone())),
        (None, Some(p)) => Match::regex(p).map_err(|e| SetupError::Keyless(e.to_string())),
        (None, None) => Err(SetupError::Keyless(
            "identity without subject or issuer".into(),
        )),
    };
    config
        .identities
        .iter()
        .map(|i| {
            let signer = signing::keyless::oci::Signer {
                name: i.name.clone(),
                subject: matcher(&i.subject, &i.subject_reg_exp)?,
                issuer: matcher(&i.issuer, &i.issuer_reg_exp)?,
            };
            Ok((i.name.clone(), signer))
        })
        .collect()
}

/// The trusted root of keyless signatures: the configured one, else the public-good root.
fn keyless_root(
    config: Option<&crate::config::TrustedRootConfig>,
) -> Result<signing::keyless::TrustedRoot, SetupError> {
    use signing::keyless::{TrustedRoot, load_trusted_root};
    let root = match config {
        Some(crate::config::TrustedRootConfig {
            inline: Some(json), ..
        }) => serde_json::to_vec(json)
            .map_err(|e| signing::keyless::Error::TrustedRoot(e.to_string()))
            .and_then(|bytes| TrustedRoot::from_json(&bytes)),
        Some(root) => load_trusted_root(root.file.as_deref()),
        None => load_trusted_root(None),
    };
    root.map_err(|e| SetupError::Keyless(format!("trustedRoot: {e}")))
}

/// The distinct images of a pod spec (containers, initContainers, ephemeralContainers).
fn images_of(pod_spec: &Json) -> Vec<&str> {
    let mut images: Vec<&str> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|field| pod_spec[*field].as_array().into_iter().flatten())
        .filter_map(|c| c["image"].as_str())
        .collect();
    images.sort_unstable();
    images.dedup();
    images
}

/// How configured globs match names and paths: `*` stays within one `/` segment, `**` spans
/// them; case matters.
pub(crate) fn glob_options() -> glob::MatchOptions {
    glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    }
}

fn registry_outcome(error: RegistryError) -> Outcome {
    match error {
        RegistryError::Unavailable { .. } => Outcome::Unavailable(error.to_string()),
        other => Outcome::Denied(other.to_string()),
    }
}

fn registry_of(image: &str) -> String {
    image
        .parse::<Reference>()
        .map(|r| r.registry().to_string())
        .unwrap_or_else(|_| image.to_string())
}
