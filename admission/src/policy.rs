//! Policies: what they are given, what they answer, and how they fail.
//!
//! Every engine (Rego in the conftest or Gatekeeper style, and the engines that plug in later)
//! implements [`Evaluate`]: given the review's request it returns [`Findings`], or a
//! [`PolicyError`] that the pipeline turns into a deny or an allow per the failure policy.

mod gatekeeper;
pub mod opa_compat;
mod rego;
mod rego_runtime;
pub mod wasm;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use gatekeeper::GatekeeperPolicy;
pub use rego::RegoPolicy;
pub use rego_runtime::Backend;
pub use wasm::{WasmPolicy, WasmRuntime};

use crate::config::{Mode, PolicyConfig, PolicySource};

/// The request a policy judges: the AdmissionReview `request`, with workloads expanded to the
/// Pod their template makes; for a workload, also the request as the API server sent it
/// (Gatekeeper constraints whose `match.kinds` name the workload's kind judge that one).
pub struct Input {
    json: serde_json::Value,
    rego: OnceLock<regorus::Value>,
    text: OnceLock<String>,
    workload: Option<(serde_json::Value, OnceLock<regorus::Value>)>,
}

impl Input {
    /// Wraps a request object.
    pub fn new(json: serde_json::Value) -> Self {
        Self {
            json,
            rego: OnceLock::new(),
            text: OnceLock::new(),
            workload: None,
        }
    }

    /// Wraps a request whose object is the Pod a workload makes, with the workload's own
    /// request.
    pub fn with_workload(json: serde_json::Value, workload: serde_json::Value) -> Self {
        Self {
            workload: Some((workload, OnceLock::new())),
            ..Self::new(json)
        }
    }

    /// The workload's request as sent, when the request is about a workload.
    pub fn workload(&self) -> Option<&serde_json::Value> {
        self.workload.as_ref().map(|(json, _)| json)
    }

    /// The workload's request as a Rego value, converted once.
    pub fn workload_rego(&self) -> Option<&regorus::Value> {
        self.workload
            .as_ref()
            .map(|(json, rego)| rego.get_or_init(|| rego_value(json)))
    }

    /// The request as JSON.
    pub fn json(&self) -> &serde_json::Value {
        &self.json
    }

    /// The request as a Rego value, converted once and shared by every Rego policy.
    pub fn rego(&self) -> &regorus::Value {
        self.rego.get_or_init(|| rego_value(&self.json))
    }

    /// The request as JSON text, serialized once and shared by every Wasm policy.
    pub fn text(&self) -> &str {
        // serde_json's writer, not `Display`: formatting through `fmt::Write` is about twice
        // as slow. A `Value` always serializes (its keys are strings).
        self.text
            .get_or_init(|| serde_json::to_string(&self.json).unwrap_or_default())
    }
}

/// Converts JSON into a Rego value without copying the JSON first (as `From` would).
fn rego_value(json: &serde_json::Value) -> regorus::Value {
    use serde::Deserialize as _;
    // As `regorus::Value::from`: what cannot be represented is undefined.
    regorus::Value::deserialize(json).unwrap_or(regorus::Value::Undefined)
}

/// What one policy found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// Messages of the checks that failed (`deny`, `violation`).
    pub violations: Vec<String>,
    /// Advisory messages (`warn`).
    pub warnings: Vec<String>,
}

/// Why a policy could not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    /// The evaluation ran past its time bound.
    #[error("evaluation exceeded its time limit of {0:?}")]
    Timeout(Duration),
    /// The engine reported an error (a builtin failed, a conflict, ...).
    #[error("evaluation failed: {0}")]
    Eval(String),
    /// The policy answered something that is not a verdict.
    #[error("invalid result: {0}")]
    InvalidResult(String),
    /// The evaluation hit a resource bound (memory, tables, fuel).
    #[error("{0}")]
    Limit(String),
}

/// Why a policy could not be loaded; reported at startup.
#[derive(Debug, thiserror::Error)]
#[error("policy {policy}: {message}")]
pub struct LoadError {
    /// The policy's name.
    pub policy: String,
    /// What is wrong.
    pub message: String,
}

impl LoadError {
    pub(crate) fn new(policy: &str, message: impl std::fmt::Display) -> Self {
        Self {
            policy: policy.to_string(),
            message: message.to_string(),
        }
    }
}

/// A loaded policy engine.
pub trait Evaluate: Send + Sync {
    /// Judges one request. Must be bounded in time by the policy's own limit.
    fn evaluate(&self, input: &Input) -> Result<Findings, PolicyError>;

    /// The mode the policy itself asks for (a Gatekeeper Constraint's `enforcementAction`),
    /// used when the configuration gives none.
    fn default_mode(&self) -> Mode {
        Mode::Enforce
    }

    /// Which engine runs the policy, for logs: `rego-vm`, `rego-interpreter`, ...
    fn engine(&self) -> &'static str;

    /// Whether the policy applies to this request beyond the namespace selector (a Gatekeeper
    /// Constraint's `spec.match`).
    fn matches(&self, _input: &Input) -> bool {
        true
    }
}

/// What loading a policy may need besides its own entry.
pub struct LoadContext {
    /// Bound of one evaluation when the entry sets none.
    pub default_timeout: Duration,
    /// The engine of Wasm policies (present when any policy is one).
    pub wasm: Option<Arc<WasmRuntime>>,
}

/// Loads the engine a policy entry names. `component` holds a Wasm policy's bytes when they
/// came from a registry rather than a file.
pub fn load(
    config: &PolicyConfig,
    context: &LoadContext,
    component: Option<&[u8]>,
) -> Result<Box<dyn Evaluate>, LoadError> {
    let timeout = config.timeout.unwrap_or(context.default_timeout);
    // Rego's `data.parameters` and a Wasm policy's settings; Gatekeeper falls back to the
    // Constraint's own.
    let parameters = || {
        config
            .parameters
            .clone()
            .unwrap_or_else(|| serde_json::json!({}))
    };
    match &config.source {
        PolicySource::Rego(source) => Ok(Box::new(RegoPolicy::load(
            &config.name,
            source,
            &parameters(),
            timeout,
        )?)),
        PolicySource::Gatekeeper(source) => Ok(Box::new(GatekeeperPolicy::load(
            &config.name,
            source,
            config.parameters.as_ref(),
            timeout,
        )?)),
        PolicySource::Wasm(source) => {
            let runtime = context
                .wasm
                .clone()
                .ok_or_else(|| LoadError::new(&config.name, "no Wasm engine was set up"))?;
            let read;
            let bytes = match (component, &source.file) {
                (Some(bytes), _) => bytes,
                (None, Some(file)) => {
                    read = std::fs::read(file).map_err(|e| {
                        LoadError::new(&config.name, format!("{}: {e}", file.display()))
                    })?;
                    &read
                }
                (None, None) => {
                    return Err(LoadError::new(
                        &config.name,
                        "the policy image was not fetched",
                    ));
                }
            };
            Ok(Box::new(WasmPolicy::load(
                &config.name,
                runtime,
                bytes,
                source,
                &parameters(),
                timeout,
            )?))
        }
    }
}

/// Reads the messages out of a `deny`/`warn`/`violation` result: a set (or array) of strings,
/// or of objects with a `msg` field.
pub(crate) fn messages(rule: &str, value: &regorus::Value) -> Result<Vec<String>, PolicyError> {
    if *value == regorus::Value::Undefined {
        return Ok(Vec::new());
    }
    let json =
        serde_json::to_value(value).map_err(|e| PolicyError::InvalidResult(e.to_string()))?;
    let items = match json {
        serde_json::Value::Array(items) => items,
        other => {
            return Err(PolicyError::InvalidResult(format!(
                "{rule} must be a set of messages, got {other}"
            )));
        }
    };
    items
        .into_iter()
        .map(|item| match item {
            serde_json::Value::String(s) => Ok(s),
            serde_json::Value::Object(mut o) => match o.remove("msg") {
                Some(serde_json::Value::String(s)) => Ok(s),
                _ => Err(PolicyError::InvalidResult(format!(
                    "{rule} entries must be strings or objects with a string `msg`"
                ))),
            },
            other => Err(PolicyError::InvalidResult(format!(
                "{rule} entries must be strings or objects with a string `msg`, got {other}"
            ))),
        })
        .collect()
}

/// Turns a regorus error into a [`PolicyError`], recognising its time limit.
pub(crate) fn eval_error(err: anyhow::Error, timeout: Duration) -> PolicyError {
    // The interpreter raises its execution timer as a `LimitError` inside the error chain.
    let timed_out = err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<regorus::LimitError>(),
            Some(regorus::LimitError::TimeLimitExceeded { .. })
        )
    });
    if timed_out {
        PolicyError::Timeout(timeout)
    } else {
        PolicyError::Eval(format!("{err:#}"))
    }
}

/// What a failed RVM run means; its timer stops it with [`regorus::rvm::vm::VmError::TimeLimitExceeded`].
pub(crate) fn vm_error(err: regorus::rvm::vm::VmError, timeout: Duration) -> PolicyError {
    match err {
        regorus::rvm::vm::VmError::TimeLimitExceeded { .. } => PolicyError::Timeout(timeout),
        other => PolicyError::Eval(other.to_string()),
    }
}

/// The execution bound regorus checks cooperatively while it evaluates.
pub(crate) fn timer(timeout: Duration) -> regorus::utils::limits::ExecutionTimerConfig {
    regorus::utils::limits::ExecutionTimerConfig {
        limit: timeout,
        // Elapsed time is read every 64 work units: cheap, and still milliseconds-precise.
        check_interval: std::num::NonZeroU32::new(64).unwrap_or(std::num::NonZeroU32::MIN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_limit_is_recognised_by_its_type_not_its_text() {
        let limit = Duration::from_millis(50);
        let timer = regorus::LimitError::TimeLimitExceeded {
            elapsed: limit * 2,
            limit,
        };
        let wrapped = anyhow::Error::new(timer).context("while evaluating data.t.deny");
        assert!(matches!(eval_error(wrapped, limit), PolicyError::Timeout(l) if l == limit));
        // A message that merely says so (a policy's own error text) is an evaluation error.
        let text = anyhow::anyhow!("deny: exceeded time limit of my own making");
        assert!(matches!(eval_error(text, limit), PolicyError::Eval(_)));
        let vm = regorus::rvm::vm::VmError::TimeLimitExceeded {
            elapsed: limit * 2,
            limit,
            pc: 7,
        };
        assert!(matches!(vm_error(vm, limit), PolicyError::Timeout(_)));
        let other = regorus::rvm::vm::VmError::MemoryLimitExceeded {
            usage: 2,
            limit: 1,
            pc: 0,
        };
        assert!(matches!(vm_error(other, limit), PolicyError::Eval(_)));
    }
}
