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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oci_client::Reference;
use serde_json::{Value as Json, json};
use tokio::sync::{OnceCell, Semaphore};

use crate::artifact;
use crate::config::{ArtifactCheck, FailurePolicy, ImageVerification, Mode, OnUpdate};
use crate::metrics::Metrics;
use crate::oci;
use crate::registry::{Manifest, Registries, RegistryError};
use crate::signing::{self, PublicKey};
use std::future::Future;

/// Largest Wasm layer fetched for the `parse` artifact check.
const MAX_WASM_BYTES: usize = 64 * 1024 * 1024;

/// A configuration problem found while building the verifier.
#[derive(Debug, thiserror::Error)]
#[error("imageVerification: {0}")]
pub struct SetupError(String);

struct Rule {
    name: String,
    patterns: Vec<glob::Pattern>,
    keys: Vec<PublicKey>,
    needed: usize,
    require_digest: bool,
}

/// The outcome of one image's checks.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Every check passed; the facts policies receive.
    Verified(Json),
    /// A check failed; the reason.
    Denied(String),
    /// A registry could not be asked; the reason names it.
    Unavailable(String),
}

/// Results by key that expire, where concurrent askers of a missing key share one
/// computation. Bounded: at most `capacity` entries, and a computation every asker gave up on
/// (a timeout, a review past its deadline) leaves no entry behind.
struct Flights<K, V> {
    slots: Mutex<Slots<K, V>>,
    capacity: usize,
}

struct Slots<K, V> {
    map: HashMap<K, Flight<V>>,
    /// Inserts left before the next sweep; sweeping at most once per `capacity / 2` inserts
    /// keeps its cost amortised constant per insert.
    until_sweep: usize,
}

/// A value once computed, with when.
type Flight<V> = Arc<OnceCell<(V, Instant)>>;

/// Entries kept per cache.
const MAX_ENTRIES: usize = 10_000;

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Flights<K, V> {
    fn new() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }

    fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(2);
        Self {
            slots: Mutex::new(Slots {
                map: HashMap::new(),
                until_sweep: capacity,
            }),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots<K, V>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }

    async fn get<F: Future<Output = V>>(
        &self,
        key: K,
        ttl: impl Fn(&V) -> Duration,
        compute: impl FnOnce() -> F,
    ) -> V {
        let fresh = |slot: &Flight<V>| match slot.get() {
            Some((value, at)) => at.elapsed() < ttl(value),
            None => true, // in flight: join it
        };
        let slot = {
            let mut slots = self.lock();
            match slots.map.get(&key).filter(|s| fresh(s)) {
                Some(slot) => slot.clone(),
                None => {
                    if slots.map.len() >= self.capacity || slots.until_sweep == 0 {
                        self.sweep(&mut slots, &fresh);
                    }
                    slots.until_sweep = slots.until_sweep.saturating_sub(1);
                    let slot = Arc::new(OnceCell::new());
                    slots.map.insert(key.clone(), slot.clone());
                    slot
                }
            }
        };
        // Every clone of a slot is made and dropped under the lock (here and in the guard), so
        // the guard can tell whether it held the last one.
        let guard = Asker {
            flights: self,
            key,
            slot: Some(slot),
        };
        let Some(slot) = guard.slot.as_ref() else {
            return compute().await; // unreachable: the guard was just given the slot
        };
        let (value, _) = slot
            .get_or_init(|| async { (compute().await, Instant::now()) })
            .await;
        value.clone()
    }

    /// Drops expired entries, then, if at least half the capacity is still used, computed ones
    /// (oldest first) until half is free. Entries being computed stay: their askers hold them,
    /// and the number of those is bounded by the checks running at once.
    fn sweep(&self, slots: &mut Slots<K, V>, fresh: &impl Fn(&Flight<V>) -> bool) {
        slots.map.retain(|_, s| fresh(s));
        let keep = self.capacity / 2;
        if slots.map.len() > keep {
            let mut done: Vec<(Instant, K)> = slots
                .map
                .iter()
                .filter_map(|(k, s)| s.get().map(|(_, at)| (*at, k.clone())))
                .collect();
            done.sort_unstable_by_key(|(at, _)| *at);
            let excess = slots.map.len() - keep;
            for (_, key) in done.into_iter().take(excess) {
                slots.map.remove(&key);
            }
        }
        slots.until_sweep = self.capacity / 2;
    }
}

/// One asker of a [`Flights`] slot. When the last asker goes away before the value was
/// computed (its future was dropped), the slot is removed, so that a cancelled computation
/// neither stays in the map nor is joined later by askers that would wait for nothing.
struct Asker<'a, K: std::hash::Hash + Eq + Clone, V: Clone> {
    flights: &'a Flights<K, V>,
    key: K,
    slot: Option<Flight<V>>,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Drop for Asker<'_, K, V> {
    fn drop(&mut self) {
        let mut slots = self.flights.lock();
        drop(self.slot.take());
        if let Some(slot) = slots.map.get(&self.key)
            && slot.get().is_none()
            && Arc::strong_count(slot) == 1
        {
            slots.map.remove(&self.key);
        }
    }
}

/// What the image checks of one pod concluded.
#[derive(Debug, Clone, Default)]
pub struct PodImages {
    /// Messages that deny the pod.
    pub violations: Vec<String>,
    /// Messages returned as warnings.
    pub warnings: Vec<String>,
    /// Facts per verified image, keyed by the image as written in the pod.
    pub facts: BTreeMap<String, Json>,
}

/// Checks images against the trust policy; shared by all reviews.
pub struct ImageVerifier {
    registries: Registries,
    rules: Vec<Rule>,
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
                (Some(file), _) => std::fs::read(file).map_err(|e| {
                    SetupError(format!("key {}: {}: {e}", key.name, file.display()))
                })?,
                (None, Some(pem)) => pem.clone().into_bytes(),
                (None, None) => return Err(SetupError(format!("key {}: no PEM", key.name))),
            };
            let public = PublicKey::from_pem(&key.name, &pem).map_err(|e| SetupError(e.0))?;
            keys.insert(key.name.clone(), public);
        }
        let mut rules = Vec::new();
        for rule in &config.trust {
            let patterns = rule
                .images
                .iter()
                .map(|p| glob::Pattern::new(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SetupError(format!("trust rule {}: {e}", rule.name)))?;
            let rule_keys = rule
                .keys
                .iter()
                .filter_map(|k| keys.get(k).cloned())
                .collect::<Vec<_>>();
            rules.push(Rule {
                name: rule.name.clone(),
                needed: rule.require.needed(rule_keys.len()),
                require_digest: rule.require_digest,
                patterns,
                keys: rule_keys,
            });
        }
        let registries = Registries::new(
            &config.registries,
            config.docker_config.as_deref(),
            config.timeout,
        )
        .map_err(|e| SetupError(e.to_string()))?;
        Ok(Self {
            registries,
            rules,
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
                json!({"image": image, "unchanged": true}),
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
                (Mode::DryRun, _) => tracing::info!(finding = %message, "dry-run image finding"),
                (Mode::Warn, _) | (Mode::Enforce, FailurePolicy::Ignore) => {
                    tracing::warn!(reason = %message, "images admitted unverified");
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
                    pod.facts.insert(image.to_string(), facts);
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
                    tracing::info!(image, finding = %message, "dry-run image finding");
                }
                (Mode::Enforce, true, FailurePolicy::Ignore) => {
                    tracing::warn!(image, reason = %message, "image admitted unverified");
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
    pub async fn fetch_policy(&self, image: &str) -> Result<(String, Vec<u8>), String> {
        let facts = match self.check(image).await {
            Outcome::Verified(facts) => facts,
            Outcome::Denied(reason) | Outcome::Unavailable(reason) => return Err(reason),
        };
        if facts["signedBy"].as_array().is_none_or(Vec::is_empty) {
            return Err(format!(
                "trust rule {} requires no signature, but a policy image must be signed",
                facts["trustRule"].as_str().unwrap_or("")
            ));
        }
        let digest = facts["digest"].as_str().unwrap_or("").to_string();
        let reference: Reference = image.parse().map_err(|e| format!("{e}"))?;
        // The manifest the artifact check picked (an index's Wasm entry), else the image's.
        let manifest_digest = facts["artifact"]["manifestDigest"]
            .as_str()
            .unwrap_or(&digest);
        let repository = oci::at_digest(&reference, manifest_digest);
        let manifest = self
            .registries
            .manifest(&repository)
            .await
            .map_err(|e| e.to_string())?;
        let layout = artifact::Layout::of(&manifest.json);
        let layer = layout
            .wasm_layer()
            .ok_or_else(|| format!("no Wasm layer: {}", layout.describe()))?;
        let bytes = self
            .registries
            .blob(&repository, layer, MAX_WASM_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        Ok((digest, bytes))
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
        let name = oci::repository_name(&reference);
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
                facts["image"] = json!(image);
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
            if rule.keys.is_empty() {
                Ok(signing::SignatureCheck::default())
            } else {
                signing::check(&self.registries, &repository, digest, &rule.keys).await
            }
        };
        let (artifact, report) = futures_util::join!(artifact, signatures);
        let artifact = match artifact {
            Ok(Ok(facts)) => facts,
            Ok(Err(reason)) => return Outcome::Denied(reason),
            Err(e) => return registry_outcome(e),
        };
        let mut facts = json!({
            "digest": digest,
            "registry": reference.registry(),
            "repository": reference.repository(),
            "trustRule": rule.name,
            "artifact": artifact,
            "signatures": [],
            "signedBy": [],
        });
        if rule.keys.is_empty() {
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
                "{digest} is not signed as trust rule {} requires ({} of {} keys): {reason}",
                rule.name,
                rule.needed,
                rule.keys.len()
            ));
        }
        facts["signedBy"] = json!(signed_by);
        facts["signatures"] = report
            .verified
            .iter()
            .map(|v| json!({"key": v.key, "format": v.format.as_str()}))
            .collect();
        Outcome::Verified(facts)
    }

    /// Checks the layout of the artifact; `Ok(Err(reason))` when it is not a Wasm artifact.
    async fn artifact(
        &self,
        repository: &Reference,
        manifest: Manifest,
    ) -> Result<Result<Json, String>, RegistryError> {
        if self.artifact_check == ArtifactCheck::None {
            return Ok(Ok(json!({"mediaType": manifest.media_type()})));
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
                Ok(Ok(facts)) => {
                    first.get_or_insert(facts);
                }
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
    ) -> Result<Result<Json, String>, RegistryError> {
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
                if let Err(reason) = artifact::parse_wasm(&bytes) {
                    return Ok(Err(format!("Wasm layer {layer} does not parse: {reason}")));
                }
            }
        }
        Ok(Ok(json!({
            "kind": kind,
            "mediaType": manifest.media_type(),
            "manifestDigest": manifest.digest,
            "indexDigest": index_digest,
            "configMediaType": layout.config_media_type,
            "layerMediaTypes": layout.layer_media_types,
        })))
    }
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

fn glob_options() -> glob::MatchOptions {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_cancelled_computation_leaves_no_entry() {
        let flights: Flights<u32, u32> = Flights::new();
        for key in 0..100 {
            let pending = flights.get(key, |_| LONG, std::future::pending::<u32>);
            let timed_out = tokio::time::timeout(Duration::from_millis(1), pending).await;
            assert!(timed_out.is_err());
        }
        assert_eq!(flights.len(), 0);
        // A later asker computes afresh instead of waiting on the abandoned one.
        assert_eq!(flights.get(7, |_| LONG, || async { 70 }).await, 70);
        assert_eq!(flights.len(), 1);
    }

    #[tokio::test]
    async fn a_computation_outlives_a_cancelled_asker_while_another_waits() {
        let flights: Flights<u32, u32> = Flights::new();
        let runs = AtomicUsize::new(0);
        let compute = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            5
        };
        let first =
            tokio::time::timeout(Duration::from_millis(10), flights.get(1, |_| LONG, compute));
        let second = flights.get(1, |_| LONG, compute);
        let (first, second) = tokio::join!(first, second);
        assert!(first.is_err());
        assert_eq!(second, 5);
        assert_eq!(flights.len(), 1);
    }

    #[tokio::test]
    async fn concurrent_askers_share_one_computation() {
        let flights: Flights<u32, u32> = Flights::new();
        let runs = AtomicUsize::new(0);
        let ask = || {
            flights.get(
                1,
                |_| LONG,
                || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    9
                },
            )
        };
        let values = futures_util::future::join_all((0..8).map(|_| ask())).await;
        assert_eq!(values, vec![9; 8]);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn entries_stay_within_capacity() {
        let flights: Flights<u32, u32> = Flights::with_capacity(100);
        for key in 0..10_000 {
            flights.get(key, |_| LONG, || async move { key }).await;
            assert!(flights.len() <= 100, "{} entries", flights.len());
        }
        // The newest entries are the ones kept.
        let runs = AtomicUsize::new(0);
        let value = flights
            .get(
                9_999,
                |_| LONG,
                || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    0
                },
            )
            .await;
        assert_eq!((value, runs.load(Ordering::SeqCst)), (9_999, 0));
    }

    #[tokio::test]
    async fn expired_entries_are_computed_again() {
        let flights: Flights<u32, u32> = Flights::new();
        assert_eq!(flights.get(1, |_| Duration::ZERO, || async { 1 }).await, 1);
        assert_eq!(flights.get(1, |_| Duration::ZERO, || async { 2 }).await, 2);
        assert_eq!(flights.get(1, |_| LONG, || async { 3 }).await, 2);
    }
}
