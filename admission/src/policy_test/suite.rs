//! `meshgate policy verify`: Gatekeeper's `gator verify` suites, unchanged.
//!
//! A suite (`kind: Suite`, `test.gatekeeper.sh/v1alpha1`) lists tests, each a
//! ConstraintTemplate and a Constraint (paths relative to the suite) and cases: an object (a
//! Kubernetes object, or an AdmissionReview whose `request` is reviewed as it is), optional
//! `inventory` objects (`data.inventory`), and assertions. An assertion counts the violations
//! whose message matches its `message` regular expression (all of them without one) and
//! checks the count against `violations`: `yes` (at least one, the default), `no` (none), or
//! an exact number. The Constraint's `match` applies, as in gator; the object is reviewed as
//! it is (a workload is not turned into its Pod).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{Report, TestResult, admission_request};
use crate::config::GatekeeperSource;
use crate::policy::{Evaluate, GatekeeperPolicy, Input};

/// Bound of one review.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a suite, a test or a case could not be run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not the YAML it should be.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The template or the Constraint did not load.
    #[error("{0}")]
    Load(String),
    /// The evaluation failed.
    #[error("evaluation failed: {0}")]
    Eval(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Suite {
    kind: String,
    #[serde(default)]
    tests: Vec<Test>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Test {
    name: String,
    template: PathBuf,
    constraint: PathBuf,
    #[serde(default)]
    cases: Vec<Case>,
    #[serde(default)]
    skip: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    name: String,
    object: PathBuf,
    #[serde(default)]
    inventory: Vec<PathBuf>,
    #[serde(default)]
    assertions: Vec<Assertion>,
    #[serde(default)]
    skip: bool,
}

#[derive(Debug, Deserialize)]
struct Assertion {
    /// `yes`, `no` or a number; unset means `yes`.
    violations: Option<Violations>,
    /// A regular expression matched against each violation's message.
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Violations {
    Count(u64),
    Word(String),
}

/// Runs every suite; one result per case (`test/case`), or per test or suite that could not
/// be loaded.
pub fn run(suites: &[PathBuf]) -> Report {
    let mut report = Report::default();
    for path in suites {
        if let Err(e) = run_suite(path, &mut report) {
            report.results.push(TestResult {
                file: path.clone(),
                name: "(load)".into(),
                failure: Some(e.to_string()),
                duration: Duration::ZERO,
            });
        }
    }
    report
}

fn read_yaml(path: &Path) -> Result<Json, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|e| Error::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn run_suite(path: &Path, report: &mut Report) -> Result<(), Error> {
    let suite: Suite = serde_json::from_value(read_yaml(path)?).map_err(|e| Error::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if suite.kind != "Suite" {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            message: format!("kind must be Suite, not {}", suite.kind),
        });
    }
    let base = path.parent().unwrap_or(Path::new("."));
    for test in suite.tests.iter().filter(|t| !t.skip) {
        for case in test.cases.iter().filter(|c| !c.skip) {
            let started = Instant::now();
            let failure = run_case(base, test, case).err();
            report.results.push(TestResult {
                file: path.to_path_buf(),
                name: format!("{}/{}", test.name, case.name),
                failure,
                duration: started.elapsed(),
            });
        }
    }
    Ok(())
}

/// The inventory as Gatekeeper's sync caches it: cluster-scoped objects under
/// `cluster[apiVersion][kind][name]`, namespaced ones under
/// `namespace[ns][apiVersion][kind][name]`.
fn inventory(base: &Path, files: &[PathBuf]) -> Result<Json, Error> {
    let mut inventory = json!({"cluster": {}, "namespace": {}});
    for file in files {
        let object = read_yaml(&base.join(file))?;
        let api_version = object["apiVersion"].as_str().unwrap_or("v1").to_string();
        let kind = object["kind"].as_str().unwrap_or("").to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let slot = match object["metadata"]["namespace"].as_str() {
            Some(ns) => &mut inventory["namespace"][ns],
            None => &mut inventory["cluster"],
        };
        slot[api_version][kind][name] = object;
    }
    Ok(inventory)
}

/// The review a case's object makes: an AdmissionReview's own `request`, or a CREATE of the
/// object.
pub fn review(object: &Json) -> Json {
    if object["kind"] == "AdmissionReview" && object["request"].is_object() {
        return object["request"].clone();
    }
    let mut request = admission_request("gator", "CREATE", object, None);
    request["namespace"] = object["metadata"]["namespace"].clone();
    if request["namespace"].is_null() {
        request["namespace"] = json!("");
    }
    request
}

/// Runs one case; the failure says which assertion failed and what the policy said.
fn run_case(base: &Path, test: &Test, case: &Case) -> Result<(), String> {
    let source = GatekeeperSource {
        template: base.join(&test.template),
        constraint: base.join(&test.constraint),
    };
    let inventory = inventory(base, &case.inventory).map_err(|e| e.to_string())?;
    let policy =
        GatekeeperPolicy::load_with_inventory(&test.name, &source, None, REVIEW_TIMEOUT, inventory)
            .map_err(|e| Error::Load(e.to_string()).to_string())?;
    let object = read_yaml(&base.join(&case.object)).map_err(|e| e.to_string())?;
    let input = Input::new(review(&object));
    let messages = if policy.matches(&input) {
        policy
            .evaluate(&input)
            .map_err(|e| Error::Eval(e.to_string()).to_string())?
            .violations
    } else {
        Vec::new()
    };
    let mut failures = Vec::new();
    for (i, assertion) in case.assertions.iter().enumerate() {
        if let Err(e) = check(assertion, &messages) {
            failures.push(format!("assertion {i}: {e}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        failures.push(format!("violations: {messages:?}"));
        Err(failures.join("\n"))
    }
}

fn check(assertion: &Assertion, messages: &[String]) -> Result<(), String> {
    let matching = match &assertion.message {
        Some(pattern) => {
            let re = message_pattern(pattern)?;
            messages.iter().filter(|m| re.is_match(m)).count()
        }
        None => messages.len(),
    };
    let about = assertion
        .message
        .as_ref()
        .map(|m| format!(" matching {m:?}"))
        .unwrap_or_default();
    match &assertion.violations {
        None => expect_some(matching, &about),
        Some(Violations::Word(w)) if w == "yes" => expect_some(matching, &about),
        Some(Violations::Word(w)) if w == "no" => match matching {
            0 => Ok(()),
            n => Err(format!("expected no violations{about}, got {n}")),
        },
        Some(Violations::Word(w)) => {
            Err(format!("violations must be yes, no or a number, not {w:?}"))
        }
        Some(Violations::Count(n)) if *n as usize == matching => Ok(()),
        Some(Violations::Count(n)) => {
            Err(format!("expected {n} violations{about}, got {matching}"))
        }
    }
}

fn expect_some(matching: usize, about: &str) -> Result<(), String> {
    if matching > 0 {
        Ok(())
    } else {
        Err(format!("expected violations{about}, got none"))
    }
}

/// gator matches messages with Go's RE2 syntax, which the `regex` crate follows.
fn message_pattern(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("message {pattern:?}: {e}"))
}
