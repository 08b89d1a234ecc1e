//! Policies compiled to WebAssembly components of the `meshgate:policy` world
//! (`policies/wit/policy.wit`), run in wasmtime.
//!
//! Each policy is compiled once (or loaded from the on-disk cache), linked once into an
//! `InstancePre`, and instantiated in a fresh `Store` for every evaluation, so nothing a policy
//! does survives the request. Every store is bounded: an epoch deadline (the policy's
//! `timeout`), optional fuel, and a [`Bounds`] limiter for memory, tables and instances. The
//! world imports nothing, and nothing is linked: an import the component carries anyway (Rust's
//! standard library brings WASI's stderr and exit for panics) traps when called.

mod cache;
mod runtime;

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, types::ComponentItem};
use wasmtime::{ResourceLimiter, Store, Trap};

pub use runtime::{CodeSource, WasmRuntime};
use runtime::{EPOCH_TICK, MAX_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES};

use super::{Evaluate, Findings, Input, LoadError, PolicyError};
use crate::config::WasmSource;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../policies/wit",
        world: "policy",
    });
}

use bindings::exports::meshgate::policy::validator::Verdict;
use bindings::{Policy, PolicyPre};

/// The interface a policy exports, without its version.
const INTERFACE: &str = "meshgate:policy/validator";
/// Versions of the world this webhook runs.
const SUPPORTED_VERSIONS: [&str; 1] = ["0.1.0"];
/// Largest verdict text (message and warnings together) accepted from a policy.
const MAX_VERDICT_BYTES: usize = 64 * 1024;

/// What one evaluation may use; the store's data.
pub struct Bounds {
    memory_limit: u64,
    /// Linear memory in use, all memories together.
    memory_used: u64,
    memory_exceeded: bool,
    table_exceeded: bool,
}

impl Bounds {
    fn new(memory_limit: u64) -> Self {
        Self {
            memory_limit,
            memory_used: 0,
            memory_exceeded: false,
            table_exceeded: false,
        }
    }
}

impl ResourceLimiter for Bounds {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current) as u64;
        if self.memory_used.saturating_add(growth) > self.memory_limit {
            // Refused growth is what the guest's allocator sees as out-of-memory; remembering
            // it turns the resulting trap into a message that names the limit.
            self.memory_exceeded = true;
            return Ok(false);
        }
        self.memory_used += growth;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.table_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// A loaded Wasm policy.
pub struct WasmPolicy {
    name: String,
    runtime: Arc<WasmRuntime>,
    pre: PolicyPre<Bounds>,
    /// The settings as the JSON text the policy receives.
    settings: String,
    memory_limit: u64,
    fuel: Option<u64>,
    timeout: Duration,
    source: CodeSource,
}

impl WasmPolicy {
    /// Compiles (or loads compiled) `bytes`, checks that the component implements a supported
    /// version of the world, links it, and has it validate `settings`.
    pub fn load(
        name: &str,
        runtime: Arc<WasmRuntime>,
        bytes: &[u8],
        source: &WasmSource,
        settings: &serde_json::Value,
        timeout: Duration,
    ) -> Result<Self, LoadError> {
        let error = |message: String| LoadError::new(name, message);
        let (component, code_source) = runtime.component(bytes).map_err(error)?;
        runtime.metrics.wasm_code_load(name, code_source.as_str());
        check_version(&runtime, &component).map_err(error)?;
        let mut linker = Linker::<Bounds>::new(runtime.engine());
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| error(format!("linking: {e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(PolicyPre::new)
            .map_err(|e| error(format!("linking: {e:#}")))?;
        let policy = Self {
            name: name.to_string(),
            runtime,
            pre,
            settings: settings.to_string(),
            memory_limit: source.memory_limit.0,
            fuel: source.fuel,
            timeout,
            source: code_source,
        };
        let (mut store, instance) = policy
            .instantiate()
            .map_err(|e| error(format!("instantiating: {e}")))?;
        let result = instance
            .meshgate_policy_validator()
            .call_validate_settings(&mut store, &policy.settings);
        match result {
            Ok(Ok(())) => Ok(policy),
            Ok(Err(message)) => Err(error(format!("settings refused by the policy: {message}"))),
            Err(e) => Err(error(format!(
                "validate-settings failed: {}",
                policy.failure(&store, e)
            ))),
        }
    }

    /// Where the policy's compiled code came from.
    pub fn code_source(&self) -> CodeSource {
        self.source
    }

    /// A fresh store, bounded, with a new instance of the policy.
    fn instantiate(&self) -> Result<(Store<Bounds>, Policy), PolicyError> {
        let started = Instant::now();
        let mut store = Store::new(self.runtime.engine(), Bounds::new(self.memory_limit));
        store.limiter(|bounds| bounds);
        let ticks = self.timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) + 1;
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        if self.runtime.fuel {
            // Metering is engine-wide; a policy without a fuel bound gets all there is.
            store
                .set_fuel(self.fuel.unwrap_or(u64::MAX))
                .map_err(|e| PolicyError::Eval(format!("{e:#}")))?;
        }
        match self.pre.instantiate(&mut store) {
            Ok(instance) => {
                self.runtime
                    .metrics
                    .wasm_instantiation(&self.name, started.elapsed().as_secs_f64());
                Ok((store, instance))
            }
            Err(e) => Err(self.failure(&store, e)),
        }
    }

    /// Names why a call failed: a bound it hit, or the trap or error itself.
    fn failure(&self, store: &Store<Bounds>, err: wasmtime::Error) -> PolicyError {
        let bounds = store.data();
        if bounds.memory_exceeded {
            return PolicyError::Limit(format!(
                "exceeded its memory limit of {}",
                human_bytes(self.memory_limit)
            ));
        }
        if bounds.table_exceeded {
            return PolicyError::Limit(format!(
                "exceeded its table limit of {MAX_TABLE_ELEMENTS} elements"
            ));
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PolicyError::Timeout(self.timeout),
            Some(Trap::OutOfFuel) => PolicyError::Limit(format!(
                "ran out of fuel ({} units)",
                self.fuel.unwrap_or(0)
            )),
            Some(trap) => PolicyError::Eval(format!("trapped: {trap}")),
            None => PolicyError::Eval(format!("{err:#}")),
        }
    }
}

impl Evaluate for WasmPolicy {
    fn engine(&self) -> &'static str {
        "wasm"
    }

    fn evaluate(&self, input: &Input) -> Result<Findings, PolicyError> {
        let (mut store, instance) = self.instantiate()?;
        let verdict = instance
            .meshgate_policy_validator()
            .call_validate(&mut store, input.text(), &self.settings)
            .map_err(|e| self.failure(&store, e))?;
        findings(verdict)
    }
}

/// Checks a verdict and turns it into findings.
fn findings(verdict: Verdict) -> Result<Findings, PolicyError> {
    if verdict.patch.is_some() {
        return Err(PolicyError::InvalidResult(
            "the verdict carries a patch, but this webhook only validates".into(),
        ));
    }
    let size = verdict.message.as_ref().map_or(0, String::len)
        + verdict.warnings.iter().map(String::len).sum::<usize>();
    if size > MAX_VERDICT_BYTES {
        return Err(PolicyError::InvalidResult(format!(
            "the verdict's messages are {size} bytes; at most {MAX_VERDICT_BYTES} are accepted"
        )));
    }
    let mut findings = Findings {
        violations: Vec::new(),
        warnings: verdict.warnings,
    };
    if !verdict.allowed {
        match verdict.message {
            Some(message) if !message.trim().is_empty() => findings.violations.push(message),
            _ => {
                return Err(PolicyError::InvalidResult(
                    "a denial without a message".into(),
                ));
            }
        }
    }
    Ok(findings)
}

/// Refuses components that do not export a supported version of the world, naming what they
/// export instead.
fn check_version(runtime: &WasmRuntime, component: &Component) -> Result<(), String> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(runtime.engine())
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
        .map(|(name, _)| name.to_string())
        .collect();
    let versions: Vec<&str> = exports
        .iter()
        .filter_map(|name| name.strip_prefix(INTERFACE)?.strip_prefix('@'))
        .collect();
    if versions.iter().any(|v| SUPPORTED_VERSIONS.contains(v)) {
        return Ok(());
    }
    if let Some(version) = versions.first() {
        return Err(format!(
            "the component implements meshgate:policy@{version}; this webhook runs {}",
            SUPPORTED_VERSIONS.join(", ")
        ));
    }
    Err(format!(
        "the component does not export {INTERFACE} (exports: {}); build it with the meshgate-policy SDK or against policies/wit",
        if exports.is_empty() {
            "none".to_string()
        } else {
            exports.join(", ")
        }
    ))
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(allowed: bool, message: Option<&str>) -> Verdict {
        Verdict {
            allowed,
            message: message.map(str::to_string),
            warnings: vec!["w".into()],
            patch: None,
        }
    }

    #[test]
    fn verdicts_become_findings_or_errors() {
        let f = findings(verdict(false, Some("no"))).unwrap();
        assert_eq!(f.violations, ["no"]);
        assert_eq!(f.warnings, ["w"]);
        assert!(findings(verdict(true, None)).unwrap().violations.is_empty());
        for bad in [
            verdict(false, None),
            verdict(false, Some(" ")),
            Verdict {
                patch: Some("[]".into()),
                ..verdict(true, None)
            },
            verdict(false, Some(&"x".repeat(MAX_VERDICT_BYTES + 1))),
        ] {
            assert!(matches!(findings(bad), Err(PolicyError::InvalidResult(_))));
        }
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(3 << 30), "3 GiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }
}
