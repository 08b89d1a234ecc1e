//! `meshgate policy test`: Rego unit tests and YAML case files.
//!
//! - **Rego unit tests**, as `opa test` runs them: in every directory holding `*_test.rego`
//!   files, all `.rego` files are loaded together and each rule named `test_*` in a test file
//!   must evaluate to `true` (tests use `with input as` and `with data.x as`).
//! - **Case files** (`cases.yaml` or `*.cases.yaml`): a `policies` list with the server
//!   configuration's schema (plus optional `runtimeClasses`), and `cases`, each a Kubernetes
//!   object (or a whole AdmissionReview file) with the expected outcome. Cases go through the
//!   same pipeline as the server, selection included. `casesFrom: FILE` takes the cases of
//!   another case file, to hold policies of two engines to the same cases.
//! - **Gatekeeper suites** ([`suite`], `meshgate policy verify`): `gator verify` suites as
//!   they are.

pub mod suite;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::policy::opa_compat::{self, TestRule};
use crate::review::{Pipeline, Verdict};

/// Bound of one Rego unit test.
const TEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One test's result.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// The file the test comes from.
    pub file: PathBuf,
    /// The test: `data.pkg.test_x`, or a case's name.
    pub name: String,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
    /// How long it ran.
    pub duration: Duration,
}

/// Every result of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Results in discovery order.
    pub results: Vec<TestResult>,
}

impl Report {
    /// Number of passed tests.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.failure.is_none()).count()
    }

    /// Number of failed tests.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// `opa test`-like text: a line per test, the failure's detail under a FAIL, then
    /// `N passed, M failed`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in &self.results {
            let status = if r.failure.is_some() { "FAIL" } else { "PASS" };
            out.push_str(&format!(
                "{status} {}: {} ({:.1} ms)\n",
                r.file.display(),
                r.name,
                r.duration.as_secs_f64() * 1e3
            ));
            if let Some(failure) = &r.failure {
                for line in failure.lines() {
                    out.push_str(&format!("    {line}\n"));
                }
            }
        }
        out.push_str(&format!(
            "{} passed, {} failed\n",
            self.passed(),
            self.failed()
        ));
        out
    }
}

/// Discovers and runs every test under `paths`. As with `opa test`, all `.rego` files under
/// one path argument are loaded together (so tests can import shared libraries), and every
/// `test_*` rule of a `*_test.rego` file is run; case files are run one by one.
pub fn run(paths: &[PathBuf]) -> Report {
    let mut report = Report::default();
    for path in paths {
        let mut rego_files = Vec::new();
        let mut case_files = Vec::new();
        if let Err(e) = discover(path, &mut rego_files, &mut case_files) {
            report.results.push(TestResult {
                file: path.clone(),
                name: "(discovery)".into(),
                failure: Some(e),
                duration: Duration::ZERO,
            });
            continue;
        }
        if rego_files.iter().any(|f| is_rego_test(f)) {
            run_rego_tests(path, &rego_files, &mut report);
        }
        for file in case_files {
            run_case_file(&file, &mut report);
        }
    }
    report
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

fn is_rego_test(path: &Path) -> bool {
    file_name(path).ends_with("_test.rego")
}

fn is_case_file(path: &Path) -> bool {
    let name = file_name(path);
    ["cases.yaml", "cases.yml"].contains(&name)
        || name.ends_with(".cases.yaml")
        || name.ends_with(".cases.yml")
}

/// Collects `.rego` and case files under `path`, sorted.
fn discover(path: &Path, rego: &mut Vec<PathBuf>, cases: &mut Vec<PathBuf>) -> Result<(), String> {
    if path.is_file() {
        if file_name(path).ends_with(".rego") {
            rego.push(path.to_path_buf());
        } else if is_case_file(path) {
            cases.push(path.to_path_buf());
        }
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        discover(&entry, rego, cases)?;
    }
    Ok(())
}

/// Loads Rego files into one engine, each as Rego v1 or, if that does not parse, v0, through
/// the OPA compatibility pass; returns every test rule of the `*_test.rego` files.
fn load_rego(files: &[PathBuf]) -> Result<(regorus::Engine, Vec<(PathBuf, TestRule)>), String> {
    let mut engine = regorus::Engine::new();
    engine.set_execution_timer_config(crate::policy::timer(TEST_TIMEOUT));
    // `opa test`'s default: a builtin's error makes its expression undefined.
    engine.set_strict_builtin_errors(false);
    let mut tests = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let name = file.display().to_string();
        let loaded = opa_compat::add_policy(&mut engine, &name, &text, opa_compat::Version::Either)
            .map_err(|e| e.to_string())?;
        if is_rego_test(file) {
            tests.extend(loaded.tests.into_iter().map(|t| (file.clone(), t)));
        }
    }
    Ok((engine, tests))
}

fn run_rego_tests(root: &Path, files: &[PathBuf], report: &mut Report) {
    let (engine, tests) = match load_rego(files) {
        Ok(loaded) => loaded,
        Err(e) => {
            report.results.push(TestResult {
                file: root.to_path_buf(),
                name: "(load)".into(),
                failure: Some(e),
                duration: Duration::ZERO,
            });
            return;
        }
    };
    for (file, test) in tests {
        let started = Instant::now();
        let mut engine = engine.clone();
        let failure = match engine.eval_rule(test.rule.clone()) {
            Ok(regorus::Value::Bool(true)) => None,
            Ok(regorus::Value::Undefined) => {
                Some("the test rule is undefined (a condition failed)".into())
            }
            Ok(other) => Some(format!("the test rule is {other}, not true")),
            Err(e) => Some(format!("error: {e:#}")),
        };
        report.results.push(TestResult {
            file,
            name: test.name,
            failure,
            duration: started.elapsed(),
        });
    }
}

/// What a case expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allowed,
    Denied,
    Warned,
}

impl Expect {
    fn as_str(self) -> &'static str {
        match self {
            Expect::Allowed => "allowed",
            Expect::Denied => "denied",
            Expect::Warned => "warned",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    name: String,
    /// The object under review (a Pod, a Deployment, ...).
    object: Option<Json>,
    /// The previous object; makes the operation UPDATE unless `operation` says otherwise.
    old_object: Option<Json>,
    operation: Option<String>,
    /// Default: the object's namespace, else `default`.
    namespace: Option<String>,
    user_info: Option<Json>,
    /// A whole AdmissionReview (JSON or YAML file, relative to the case file) instead of
    /// `object`.
    review: Option<PathBuf>,
    expect: Expect,
    /// Substrings that must appear in the denial message (denied) or the warnings (warned).
    #[serde(default)]
    messages: Vec<String>,
    /// Image facts as the image checks would give them (`input.images`): case files run
    /// without a registry.
    images: Option<Json>,
    /// Module facts of a WasmPlugin, EnvoyFilter or EnvoyExtensionPolicy (`input.modules`).
    modules: Option<Json>,
}

fn run_case_file(file: &Path, report: &mut Report) {
    let started = Instant::now();
    let fail = |report: &mut Report, message: String| {
        report.results.push(TestResult {
            file: file.to_path_buf(),
            name: "(load)".into(),
            failure: Some(message),
            duration: started.elapsed(),
        });
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return fail(report, e.to_string()),
    };
    let base = file.parent().unwrap_or(Path::new("."));
    let (config, cases, cases_base) = match parse_case_file(&text, file, base) {
        Ok(parsed) => parsed,
        Err(e) => return fail(report, e.to_string()),
    };
    let pipeline = match Pipeline::load(&config, Arc::new(Metrics::new())) {
        Ok(p) => p,
        Err(e) => return fail(report, e.to_string()),
    };
    for (i, case) in cases.iter().enumerate() {
        let started = Instant::now();
        let failure = match case_request(case, i, &cases_base) {
            Ok(request) => check(case, &pipeline.review(request)),
            Err(e) => Some(e),
        };
        report.results.push(TestResult {
            file: file.to_path_buf(),
            name: case.name.clone(),
            failure,
            duration: started.elapsed(),
        });
    }
}

/// The configuration, the cases, and the directory the cases' `review` files are relative
/// to. With `casesFrom: FILE`, the cases are another case file's, run against this file's
/// policies (one set of cases for a rule written for two engines).
fn parse_case_file(
    text: &str,
    file: &Path,
    base: &Path,
) -> Result<(Config, Vec<Case>, PathBuf), ConfigError> {
    let name = file.display().to_string();
    let mut doc: Json = crate::config::parse_yaml(text, &name)?;
    let invalid = |field: &str, message: String| ConfigError::Invalid {
        file: name.clone(),
        field: field.to_string(),
        message,
    };
    let object = doc
        .as_object_mut()
        .ok_or_else(|| invalid("(root)", "a case file is a mapping".into()))?;
    let (cases, cases_name, cases_base) = match object.remove("casesFrom") {
        Some(Json::String(from)) => {
            let path = base.join(from);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid("casesFrom", format!("{}: {e}", path.display())))?;
            let mut other: Json = crate::config::parse_yaml(&text, &path.display().to_string())?;
            let cases = other
                .as_object_mut()
                .and_then(|o| o.remove("cases"))
                .unwrap_or(Json::Array(Vec::new()));
            let other_base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            (cases, path.display().to_string(), other_base)
        }
        Some(_) => return Err(invalid("casesFrom", "must be a file path".into())),
        None => (
            object.remove("cases").unwrap_or(Json::Array(Vec::new())),
            name.clone(),
            base.to_path_buf(),
        ),
    };
    let cases: Vec<Case> =
        serde_path_to_error::deserialize(cases).map_err(|e| ConfigError::Invalid {
            file: cases_name,
            field: match e.path().to_string().as_str() {
                "." => "cases".to_string(),
                path => format!("cases{path}"),
            },
            message: e.into_inner().to_string(),
        })?;
    let config = Config::from_json(doc, &name, base)?;
    Ok((config, cases, cases_base))
}

/// Builds the AdmissionReview `request` a case describes.
fn case_request(case: &Case, index: usize, base: &Path) -> Result<Json, String> {
    if let Some(path) = &case.review {
        let path = base.join(path);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let review: Json =
            serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        return match review.get("request") {
            Some(request) => Ok(request.clone()),
            None => Err(format!(
                "{}: no `request` in the AdmissionReview",
                path.display()
            )),
        };
    }
    let object = case
        .object
        .clone()
        .ok_or_else(|| "a case needs `object` or `review`".to_string())?;
    let namespace = case
        .namespace
        .clone()
        .or_else(|| {
            object
                .pointer("/metadata/namespace")
                .and_then(Json::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "default".into());
    let operation = case.operation.clone().unwrap_or_else(|| {
        if case.old_object.is_some() {
            "UPDATE"
        } else {
            "CREATE"
        }
        .into()
    });
    let mut request = admission_request(
        &format!("case-{index}"),
        &operation,
        &object,
        case.old_object.as_ref(),
    );
    request["namespace"] = json!(namespace);
    if let Some(user) = &case.user_info {
        request["userInfo"] = user.clone();
    }
    if let Some(images) = &case.images {
        request["images"] = images.clone();
    }
    if let Some(modules) = &case.modules {
        request["modules"] = modules.clone();
    }
    Ok(request)
}

/// An AdmissionReview `request` for `object` (a Pod, a Deployment, ...) as the API server
/// sends it: kind and resource from the object, its namespace and name, the previous object for
/// an UPDATE. Used by case files and by tests that talk to the webhook.
pub fn admission_request(
    uid: &str,
    operation: &str,
    object: &Json,
    old_object: Option<&Json>,
) -> Json {
    let kind = object["kind"].as_str().unwrap_or("");
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": plural(kind)});
    let options_kind = if operation == "UPDATE" {
        "UpdateOptions"
    } else {
        "CreateOptions"
    };
    json!({
        "uid": uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": object.pointer("/metadata/name").cloned().unwrap_or(json!("")),
        "namespace": object.pointer("/metadata/namespace").cloned().unwrap_or(json!("default")),
        "operation": operation,
        "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
        "object": object,
        "oldObject": old_object.cloned().unwrap_or(Json::Null),
        "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind},
    })
}

/// A kind's resource name as the API server forms it (`Policy` → `policies`).
fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    match lower.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) => format!("{stem}ies"),
        _ => format!("{lower}s"),
    }
}

fn check(case: &Case, verdict: &Verdict) -> Option<String> {
    let got = if !verdict.allowed {
        Expect::Denied
    } else if !verdict.warnings.is_empty() {
        Expect::Warned
    } else {
        Expect::Allowed
    };
    let said = match got {
        Expect::Denied => verdict.message.clone().unwrap_or_default(),
        Expect::Warned => verdict.warnings.join("\n"),
        Expect::Allowed => verdict
            .skipped
            .clone()
            .map(|s| format!("skipped: {s}"))
            .unwrap_or_default(),
    };
    if got != case.expect {
        return Some(format!(
            "expected {}, got {}{}",
            case.expect.as_str(),
            got.as_str(),
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        ));
    }
    let missing: Vec<&String> = case
        .messages
        .iter()
        .filter(|m| !said.contains(m.as_str()))
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!("message {missing:?} not found in: {said}"))
    }
}
