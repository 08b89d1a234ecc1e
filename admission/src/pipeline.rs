//! The review pipeline: select the pods that run on Wasm RuntimeClasses, run every policy that
//! applies, and combine the findings into one verdict.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value as Json, json};

use crate::config::{Config, FailurePolicy, Mode, NamespaceSelector, PolicyConfig};
use crate::images::{ImageVerifier, PodImages};
use crate::metrics::Metrics;
use crate::policy::{self, Evaluate, Input, LoadContext, LoadError, PolicyError, WasmRuntime};
use crate::workload;

/// One policy ready to run.
pub struct LoadedPolicy {
    name: String,
    mode: Mode,
    failure_policy: FailurePolicy,
    include: Vec<glob::Pattern>,
    exclude: Vec<glob::Pattern>,
    engine: Box<dyn Evaluate>,
}

impl LoadedPolicy {
    /// Loads a policy entry; `server_failure_policy` and `default_timeout` apply when the
    /// entry does not set its own.
    pub fn load(
        config: &PolicyConfig,
        server_failure_policy: FailurePolicy,
        context: &LoadContext,
        component: Option<&[u8]>,
    ) -> Result<Self, LoadError> {
        let engine = policy::load(config, context, component)?;
        let globs = |patterns: &[String]| -> Result<Vec<glob::Pattern>, LoadError> {
            patterns
                .iter()
                .map(|p| glob::Pattern::new(p).map_err(|e| LoadError::new(&config.name, e)))
                .collect()
        };
        let NamespaceSelector { include, exclude } = &config.namespaces;
        Ok(Self {
            name: config.name.clone(),
            mode: config.mode.unwrap_or_else(|| engine.default_mode()),
            failure_policy: config.failure_policy.unwrap_or(server_failure_policy),
            include: globs(include)?,
            exclude: globs(exclude)?,
            engine,
        })
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The engine that runs it (`rego-vm`, `rego-interpreter`, ...).
    pub fn engine(&self) -> &'static str {
        self.engine.engine()
    }

    fn applies_to(&self, namespace: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(namespace)))
            && !self.exclude.iter().any(|p| p.matches(namespace))
    }
}

/// The engine of the configuration's Wasm policies, if it has any.
fn wasm_runtime(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<WasmRuntime>>, LoadError> {
    let sources: Vec<_> = config
        .policies
        .iter()
        .filter_map(|p| p.wasm.as_ref())
        .collect();
    if sources.is_empty() {
        return Ok(None);
    }
    let max_memory = sources.iter().map(|s| s.memory_limit.0).max().unwrap_or(0);
    let fuel = sources.iter().any(|s| s.fuel.is_some());
    WasmRuntime::new(&config.wasm, max_memory, fuel, metrics.clone())
        .map(Some)
        .map_err(|e| LoadError::new("wasm", e))
}

/// Fetches the components of policies given by OCI reference, each verified against the
/// image verification's trust rules, concurrently. Keyed by policy name.
fn policy_images(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<HashMap<String, Vec<u8>>, LoadError> {
    let wanted: Vec<(&str, &str)> = config
        .policies
        .iter()
        .filter_map(|p| Some((p.name.as_str(), p.wasm.as_ref()?.image.as_deref()?)))
        .collect();
    let Some(images) = &config.image_verification else {
        return Ok(HashMap::new());
    };
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    // A runtime and verifier of their own, on a thread of their own: loading may happen on a
    // runtime's thread, and registry connections must not outlive the runtime that made them.
    let fetch = || -> Result<HashMap<String, Vec<u8>>, LoadError> {
        let verifier = ImageVerifier::new(images, metrics.clone())
            .map_err(|e| LoadError::new("imageVerification", e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LoadError::new("wasm", e))?;
        let results = runtime.block_on(futures_util::future::join_all(
            wanted.iter().map(|(_, image)| verifier.fetch_policy(image)),
        ));
        wanted
            .iter()
            .zip(results)
            .map(|((name, image), result)| match result {
                Ok((digest, bytes)) => {
                    tracing::info!(policy = name, image, digest, "fetched signed policy image");
                    Ok((name.to_string(), bytes))
                }
                Err(reason) => Err(LoadError::new(name, format!("{image}: {reason}"))),
            })
            .collect()
    };
    std::thread::scope(|scope| {
        scope
            .spawn(fetch)
            .join()
            .unwrap_or_else(|_| Err(LoadError::new("wasm", "fetching policy images panicked")))
    })
}

/// Whether `config` enforces image verification and admits no image it could not verify:
/// then a review that comes before the pipeline is loaded is denied, whatever the server's
/// `failurePolicy`, since its images cannot be checked yet.
pub fn images_fail_closed(config: &Config) -> bool {
    config
        .image_verification
        .as_ref()
        .is_some_and(|i| i.mode == Mode::Enforce && i.failure_policy == FailurePolicy::Fail)
}

/// The answer to one review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// The denial message: every failed check, each prefixed with its policy.
    pub message: Option<String>,
    /// Warnings returned to the client (warn-mode findings, ignored failures).
    pub warnings: Vec<String>,
    /// Set when no policy ran because the request is out of scope; says why.
    pub skipped: Option<String>,
}

impl Verdict {
    fn skip(reason: String) -> Self {
        Self {
            allowed: true,
            message: None,
            warnings: Vec::new(),
            skipped: Some(reason),
        }
    }

    /// The decision label used in logs and metrics.
    pub fn decision(&self) -> &'static str {
        match (self.allowed, &self.skipped) {
            (false, _) => "denied",
            (true, Some(_)) => "skipped",
            (true, None) => "allowed",
        }
    }
}

/// A request in scope: the pod it is about, ready for image checks and policies.
pub struct Selected {
    request: Json,
    subject: String,
    namespace: String,
    images: PodImages,
}

impl Selected {
    /// `Kind namespace/name`, as messages name it.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// What the image checks concluded (empty until [`Pipeline::check_images`] ran).
    pub fn images(&self) -> &PodImages {
        &self.images
    }
}

/// Selection, image checks and policies, built once from the configuration.
pub struct Pipeline {
    runtime_classes: BTreeSet<String>,
    policies: Vec<LoadedPolicy>,
    images: Option<ImageVerifier>,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// Loads every policy of the configuration.
    pub fn load(config: &Config, metrics: Arc<Metrics>) -> Result<Self, LoadError> {
        let context = LoadContext {
            default_timeout: config.limits.policy_timeout,
            wasm: wasm_runtime(config, &metrics)?,
        };
        let components = policy_images(config, &metrics)?;
        let policies = config
            .policies
            .iter()
            .map(|p| {
                let component = components.get(&p.name).map(Vec::as_slice);
                LoadedPolicy::load(p, config.failure_policy, &context, component)
            })
            .collect::<Result<_, _>>()?;
        let mut pipeline = Self::new(config.runtime_classes.clone(), policies, metrics.clone());
        if let Some(images) = &config.image_verification {
            pipeline.images = Some(
                ImageVerifier::new(images, metrics)
                    .map_err(|e| LoadError::new("imageVerification", e))?,
            );
        }
        Ok(pipeline)
    }

    /// A pipeline over already loaded policies.
    pub fn new(
        runtime_classes: BTreeSet<String>,
        policies: Vec<LoadedPolicy>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            runtime_classes,
            policies,
            images: None,
            metrics,
        }
    }

    /// The loaded policies, in evaluation order.
    pub fn policies(&self) -> &[LoadedPolicy] {
        &self.policies
    }

    /// Judges an AdmissionReview `request` object with the policies only (no image checks,
    /// which need the registry: see [`Pipeline::select`], [`Pipeline::check_images`]).
    pub fn review(&self, request: Json) -> Verdict {
        match self.select(request) {
            Ok(selected) => self.judge(selected),
            Err(skipped) => skipped,
        }
    }

    /// Whether image checks are configured.
    pub fn checks_images(&self) -> bool {
        self.images.is_some()
    }

    /// Runs the image checks of a selected pod; their facts join the request as `images`
    /// (image as written → facts) for the policies.
    pub async fn check_images(&self, selected: &mut Selected) {
        let Some(verifier) = &self.images else { return };
        let request = &selected.request;
        // On UPDATE, images the old pod ran on a Wasm RuntimeClass were judged when it was
        // admitted; an old pod outside the scope (a workload moved onto a Wasm RuntimeClass)
        // vouches for nothing.
        let earlier = Some(&request["oldObject"]["spec"]).filter(|old| {
            request["operation"] == "UPDATE"
                && verifier.keeps_unchanged_images()
                && workload::runtime_class(old).is_some_and(|c| self.runtime_classes.contains(c))
        });
        let images = verifier
            .check_pod(&request["object"]["spec"], earlier)
            .await;
        selected.request["images"] = json!(images.facts);
        selected.images = images;
    }

    /// The answer to a review that failed (its deadline passed, its evaluation panicked):
    /// `fallback`, what the server's `failurePolicy` answers, unless the image checks refused
    /// an image, or did not finish while `imageVerification` does not admit unverified images.
    /// The server's `Ignore` is for policy errors: it never admits such an image.
    pub fn after_failure(
        &self,
        subject: &str,
        images: Option<&PodImages>,
        reason: &str,
        mut fallback: Verdict,
    ) -> Verdict {
        let Some(verifier) = &self.images else {
            return fallback;
        };
        let violations = match images {
            Some(images) if images.violations.is_empty() => {
                fallback
                    .warnings
                    .splice(0..0, images.warnings.iter().cloned());
                return fallback;
            }
            Some(images) => images.violations.clone(),
            None if verifier.admits_unverified() => {
                fallback
                    .warnings
                    .push("[image-verification] images not verified: the review failed".into());
                return fallback;
            }
            None => vec!["[image-verification] image checks did not finish".into()],
        };
        Verdict {
            allowed: false,
            message: Some(format!(
                "{subject}: {}; meshgate: {reason}",
                violations.join("; ")
            )),
            warnings: Vec::new(),
            skipped: None,
        }
    }

    /// Decides whether a request is in scope: its pod (workloads expand to the Pod their
    /// template makes) runs on a Wasm RuntimeClass. Out of scope, the answer is the skip verdict.
    pub fn select(&self, mut request: Json) -> Result<Selected, Verdict> {
        let operation = request["operation"].as_str().unwrap_or("");
        if operation != "CREATE" && operation != "UPDATE" {
            return Err(Verdict::skip(format!(
                "operation {operation} is not checked"
            )));
        }
        let kind = request["kind"]["kind"].as_str().unwrap_or("").to_string();
        let namespace = request["namespace"].as_str().unwrap_or("").to_string();
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
        let name = request["name"]
            .as_str()
            .or_else(|| {
                request
                    .pointer("/object/metadata/name")
                    .and_then(Json::as_str)
            })
            .or_else(|| {
                request
                    .pointer("/object/metadata/generateName")
                    .and_then(Json::as_str)
            })
            .unwrap_or("")
            .to_string();
        if kind != "Pod" {
            // Policies judge the Pod the workload makes (Gatekeeper's expansion semantics).
            let pod = workload::pod_of(&kind, &request["object"], &namespace);
            let old_pod = workload::pod_of(&kind, &request["oldObject"], &namespace);
            request["object"] = pod.unwrap_or(Json::Null);
            request["oldObject"] = old_pod.unwrap_or(Json::Null);
            request["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
        }
        Ok(Selected {
            request,
            subject: format!("{kind} {namespace}/{name}"),
            namespace,
            images: PodImages::default(),
        })
    }

    /// Runs every applicable policy and combines their findings with the image checks'.
    pub fn judge(&self, selected: Selected) -> Verdict {
        let Selected {
            request,
            subject,
            namespace,
            images,
        } = selected;
        let input = Input::new(request);
        self.evaluate(&input, &subject, &namespace, images)
    }

    fn evaluate(
        &self,
        input: &Input,
        subject: &str,
        namespace: &str,
        images: PodImages,
    ) -> Verdict {
        let mut violations = images.violations;
        let mut warnings = images.warnings;
        for policy in &self.policies {
            if !policy.applies_to(namespace) || !policy.engine.matches(input) {
                continue;
            }
            let started = Instant::now();
            let result = policy.engine.evaluate(input);
            let seconds = started.elapsed().as_secs_f64();
            let tag = |m: &String| format!("[{}] {m}", policy.name);
            match result {
                Ok(findings) => {
                    let outcome = if !findings.violations.is_empty() {
                        "violation"
                    } else if !findings.warnings.is_empty() {
                        "warning"
                    } else {
                        "pass"
                    };
                    self.metrics.policy(&policy.name, outcome, seconds);
                    match policy.mode {
                        Mode::Enforce => {
                            violations.extend(findings.violations.iter().map(tag));
                            warnings.extend(findings.warnings.iter().map(tag));
                        }
                        Mode::Warn => {
                            warnings.extend(
                                findings
                                    .violations
                                    .iter()
                                    .chain(&findings.warnings)
                                    .map(tag),
                            );
                        }
                        Mode::DryRun => {
                            for m in findings.violations.iter().chain(&findings.warnings) {
                                tracing::info!(policy = %policy.name, subject, finding = %m, "dry-run finding");
                            }
                        }
                    }
                }
                Err(err) => {
                    self.metrics.policy(&policy.name, "error", seconds);
                    tracing::warn!(policy = %policy.name, subject, error = %err, "policy failed");
                    self.failed(policy, &err, &mut violations, &mut warnings);
                }
            }
        }
        let allowed = violations.is_empty();
        Verdict {
            allowed,
            message: (!allowed).then(|| format!("{subject}: {}", violations.join("; "))),
            warnings,
            skipped: None,
        }
    }

    fn failed(
        &self,
        policy: &LoadedPolicy,
        err: &PolicyError,
        violations: &mut Vec<String>,
        warnings: &mut Vec<String>,
    ) {
        let message = format!("[{}] policy error: {err}", policy.name);
        match (policy.mode, policy.failure_policy) {
            (Mode::DryRun, _) => {}
            (Mode::Enforce, FailurePolicy::Fail) => violations.push(message),
            _ => warnings.push(format!("{message} (ignored)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(image_section: &str) -> Pipeline {
        let text = format!(
            "failurePolicy: Ignore\nimageVerification: {{keys: [], trust: [{{name: t, images: ['**']}}]{image_section}}}"
        );
        let config = Config::parse(&text, "test.yaml", std::path::Path::new("/")).unwrap();
        Pipeline::load(&config, Arc::new(Metrics::new())).unwrap()
    }

    /// What the server's `failurePolicy: Ignore` answers to a failed review.
    fn ignored() -> Verdict {
        Verdict {
            allowed: true,
            message: None,
            warnings: vec!["meshgate: review not finished (ignored)".into()],
            skipped: None,
        }
    }

    #[test]
    fn a_failed_review_keeps_image_denials_and_unfinished_checks_deny() {
        let strict = pipeline("");
        let refused = PodImages {
            violations: vec!["[image-verification] r/a:1: not a Wasm artifact".into()],
            ..PodImages::default()
        };
        let reason = "review not finished";
        let verdict = strict.after_failure("Pod a/b", Some(&refused), reason, ignored());
        assert!(!verdict.allowed);
        assert_eq!(
            verdict.message.as_deref(),
            Some(
                "Pod a/b: [image-verification] r/a:1: not a Wasm artifact; meshgate: review not finished"
            )
        );
        let verdict = strict.after_failure("Pod a/b", None, reason, ignored());
        assert!(!verdict.allowed, "unverified images are not admitted");
        let verified = PodImages::default();
        assert_eq!(
            strict.after_failure("Pod a/b", Some(&verified), reason, ignored()),
            ignored(),
            "verified images leave the failure to the server's failurePolicy"
        );

        let open = pipeline(", failurePolicy: Ignore");
        let verdict = open.after_failure("Pod a/b", None, reason, ignored());
        assert!(verdict.allowed);
        assert!(verdict.warnings.iter().any(|w| w.contains("not verified")));
        let verdict = open.after_failure("Pod a/b", Some(&refused), reason, ignored());
        assert!(!verdict.allowed, "Ignore never admits a refused image");
    }
}
