//! Runs Rego rules for one request, on regorus' bytecode VM (RVM) when the policy compiles to
//! it, else on its tree-walking interpreter. The VM evaluates the starter policies about three
//! times faster; both are bounded by the same execution timer, and each evaluation starts from
//! the shared compiled form with no state from earlier requests.

use std::sync::Arc;
use std::time::Duration;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::{Program, RegoVM};

use super::{PolicyError, eval_error, timer, vm_error};

/// Which regorus engine a policy runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The bytecode VM.
    Vm,
    /// The interpreter (constructs the VM does not compile).
    Interpreter,
}

/// Prepared rules of one policy.
pub(crate) struct RegoRuntime {
    engine: regorus::Engine,
    programs: Option<Vec<Arc<Program>>>,
    rules: Vec<String>,
    data: regorus::Value,
    timeout: Duration,
    strict_builtin_errors: bool,
}

impl Backend {
    /// The name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vm => "rego-vm",
            Backend::Interpreter => "rego-interpreter",
        }
    }
}

impl RegoRuntime {
    /// `engine` holds the parsed policy; `rules` are fully qualified rule paths; `data` is the
    /// policy's data document. `strict_builtin_errors`: a builtin's error fails the evaluation
    /// (else, as in OPA by default, it makes the expression undefined); both engines follow it.
    /// `use_vm`: run on the VM when the rules compile to it (else always the interpreter).
    pub(crate) fn new(
        mut engine: regorus::Engine,
        rules: Vec<String>,
        data: serde_json::Value,
        timeout: Duration,
        strict_builtin_errors: bool,
        use_vm: bool,
    ) -> Result<Self, String> {
        let data = regorus::Value::from(data);
        engine
            .add_data(data.clone())
            .map_err(|e| format!("{e:#}"))?;
        engine.set_execution_timer_config(timer(timeout));
        engine.set_strict_builtin_errors(strict_builtin_errors);
        let programs = rules
            .iter()
            .map(|rule| -> Result<Arc<Program>, String> {
                let compiled = engine
                    .compile_with_entrypoint(&rule.as_str().into())
                    .map_err(|e| format!("{e:#}"))?;
                Compiler::compile_from_policy(&compiled, &[rule.as_str()])
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, String>>();
        let programs = match programs {
            Ok(_) if !use_vm => None,
            Ok(programs) => Some(programs),
            Err(e) => {
                tracing::info!(rules = ?rules, reason = %e, "policy runs on the Rego interpreter (not compilable to the VM)");
                None
            }
        };
        let evaluator = Self {
            engine,
            programs,
            rules,
            data,
            timeout,
            strict_builtin_errors,
        };
        // Prepares the interpreter once (scheduling, compilation); every clone shares it.
        let _ = evaluator.eval_interpreter(regorus::Value::new_object());
        Ok(evaluator)
    }

    /// The engine in use.
    pub(crate) fn backend(&self) -> Backend {
        if self.programs.is_some() {
            Backend::Vm
        } else {
            Backend::Interpreter
        }
    }

    /// Evaluates every rule against `input`, in order.
    pub(crate) fn eval(&self, input: regorus::Value) -> Result<Vec<regorus::Value>, PolicyError> {
        // regorus reports limits and errors as values, but a panic inside it (a bug there) must
        // not take the server down: it becomes this policy's error.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &self.programs {
            Some(programs) => self.eval_vm(programs, input),
            None => self.eval_interpreter(input),
        }))
        .unwrap_or_else(|_| Err(PolicyError::Eval("the Rego engine panicked".into())))
    }

    fn eval_vm(
        &self,
        programs: &[Arc<Program>],
        input: regorus::Value,
    ) -> Result<Vec<regorus::Value>, PolicyError> {
        programs
            .iter()
            .zip(&self.rules)
            .map(|(program, rule)| {
                let mut vm = RegoVM::new();
                vm.load_program(program.clone());
                vm.set_data(self.data.clone())
                    .map_err(|e| PolicyError::Eval(format!("{e:#}")))?;
                vm.set_input(input.clone());
                vm.set_execution_timer_config(Some(timer(self.timeout)));
                vm.set_strict_builtin_errors(self.strict_builtin_errors);
                // The VM's default instruction cap (25 000) stops ordinary policies over larger
                // objects; the execution timer is the bound, as for the interpreter.
                vm.set_max_instructions(usize::MAX);
                vm.execute_entry_point_by_name(rule)
                    .map_err(|e| vm_error(e, self.timeout))
            })
            .collect()
    }

    fn eval_interpreter(&self, input: regorus::Value) -> Result<Vec<regorus::Value>, PolicyError> {
        let mut engine = self.engine.clone();
        engine.set_input(input);
        self.rules
            .iter()
            .map(|rule| {
                engine
                    .eval_rule(rule.clone())
                    .map_err(|e| eval_error(e, self.timeout))
            })
            .collect()
    }
}
