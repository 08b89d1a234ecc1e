//! The policy step: every policy that applies to the request judges it; findings combine by
//! each policy's mode and failures by its failure policy.

use std::time::Instant;

use super::decode::clip_to;
use super::{Pipeline, Selected, Verdict};

/// Longest finding or error a log line carries; findings quote the request (image names,
/// container names), so they are cut and escaped like the rest of the request's text.
pub(crate) const LOGGED_FINDING_BYTES: usize = 1024;
use crate::config::{FailurePolicy, Mode, NamespaceSelector, PolicyConfig, PolicyKinds};
use crate::images::PodImages;
use crate::policy::{self, Evaluate, Input, LoadContext, LoadError, PolicyError};

/// One policy ready to run.
pub struct LoadedPolicy {
    name: String,
    mode: Mode,
    failure_policy: FailurePolicy,
    namespaces: NamespaceSelector,
    kinds: PolicyKinds,
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
        Ok(Self {
            name: config.name.clone(),
            mode: config.mode.unwrap_or_else(|| engine.default_mode()),
            failure_policy: config.failure_policy.unwrap_or(server_failure_policy),
            namespaces: config.namespaces.clone(),
            kinds: config.kinds.clone(),
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

    /// Runs the policy alone on `input`, as the pipeline does for a request it applies to
    /// (`meshgate policy bench` times it).
    pub fn evaluate(&self, input: &Input) -> Result<policy::Findings, PolicyError> {
        self.engine.evaluate(input)
    }

    fn applies_to(&self, namespace: &str, kind: &str) -> bool {
        self.kinds.contains(kind) && self.namespaces.applies_to(namespace)
    }
}

impl Pipeline {
    /// Runs every applicable policy and combines their findings with the image checks'.
    pub fn judge(&self, selected: Selected) -> Verdict {
        let Selected {
            request,
            subject,
            namespace,
            images,
            workload,
            ..
        } = selected;
        let input = match workload {
            Some(workload) => Input::with_workload(request, workload),
            None => Input::new(request),
        };
        self.evaluate(&input, &subject, &namespace, images)
    }

    fn evaluate(
        &self,
        input: &Input,
        subject: &str,
        namespace: &str,
        images: PodImages,
    ) -> Verdict {
        // The request's kind after workload expansion: `Pod` for pods and workloads.
        let kind = input.json()["kind"]["kind"].as_str().unwrap_or("");
        let mut violations = images.violations;
        let mut warnings = images.warnings;
        for policy in &self.policies {
            if !policy.applies_to(namespace, kind) || !policy.engine.matches(input) {
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
                                tracing::info!(policy = %policy.name, subject, finding = %clip_to(m, LOGGED_FINDING_BYTES), "dry-run finding");
                            }
                        }
                    }
                }
                Err(err) => {
                    self.metrics.policy(&policy.name, "error", seconds);
                    tracing::warn!(policy = %policy.name, subject, error = %clip_to(&err.to_string(), LOGGED_FINDING_BYTES), "policy failed");
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
