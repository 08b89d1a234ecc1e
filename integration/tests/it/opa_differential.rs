//! A real OPA as second opinion: the shared Gatekeeper library's templates on their suites'
//! objects, the Gatekeeper starter and the Rego starter policies on their case files' objects,
//! evaluated by meshgate (regorus, with its OPA pass) and by OPA's own Go engine
//! (`opa-golib-python-bindings`, OPA v1.20.2, installed into `.venv` by `make setup`), must give
//! the same messages. Rego v0 templates reach OPA 1.x rewritten as v1
//! (`meshgate_admission::policy::opa_compat::to_v1`, syntax only).
//!
//! Known differences are in admission/README.md ("Differences from OPA"), each pinned by a
//! test in `admission/src/policy/opa_compat/tests.rs`; none of them shows on these inputs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use meshgate_admission::config::{GatekeeperSource, RegoSource};
use meshgate_admission::policy::{Evaluate, GatekeeperPolicy, Input, RegoPolicy, opa_compat};
use meshgate_admission::policy_test::{admission_request, suite};
use serde_json::{Value as Json, json};

use crate::gatekeeper_library::library;

const TIMEOUT: Duration = Duration::from_secs(5);

/// One OPA evaluation job: modules, data, the rules asked for, and the inputs.
struct Job {
    label: String,
    modules: Vec<(String, String)>,
    data: Json,
    queries: Vec<String>,
    inputs: Vec<Json>,
    /// meshgate's messages per input (violations, then warnings with a `warn: ` prefix).
    meshgate: Vec<Vec<String>>,
}

/// Runs the jobs through OPA (one Python process for all).
fn opa(jobs: &[Job]) -> Vec<Json> {
    let repo = meshgate_integration::paths::repo_root();
    let python = repo.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run make setup",
        python.display()
    );
    let request: Vec<Json> = jobs
        .iter()
        .map(|j| {
            json!({
                "modules": j.modules.iter().map(|(path, source)| json!({"path": path, "source": source})).collect::<Vec<_>>(),
                "data": j.data,
                "queries": j.queries,
                "inputs": j.inputs,
            })
        })
        .collect();
    let mut child = Command::new(python)
        .arg(repo.join("integration/opa/opa_eval.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let body = serde_json::to_vec(&request).unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&body).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "opa_eval.py failed (is opa-golib-python-bindings installed? make setup):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Messages of a `deny`/`violation`/`warn` value: strings, or objects with `msg`.
fn messages(value: &Json) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().or_else(|| i["msg"].as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn package_of(rego: &str) -> String {
    rego.lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .map(|p| p.trim().to_string())
        .unwrap()
}

fn read_yaml(path: &Path) -> Json {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A job for a ConstraintTemplate and Constraint on `objects` (reviewed as `gator` does).
fn gatekeeper_job(label: String, template: &Path, constraint: &Path, objects: &[Json]) -> Job {
    let policy = GatekeeperPolicy::load(
        &label,
        &GatekeeperSource {
            template: template.to_path_buf(),
            constraint: constraint.to_path_buf(),
        },
        None,
        TIMEOUT,
    )
    .unwrap();
    let t = read_yaml(template);
    let target = &t["spec"]["targets"][0];
    // The Rego engine's entry of the newer `code` list, else the target's own `rego`.
    let source = target["code"]
        .as_array()
        .and_then(|code| code.iter().find(|c| c["engine"] == "Rego"))
        .map(|c| &c["source"])
        .unwrap_or(target);
    let rego = source["rego"].as_str().unwrap();
    let v1 = source["version"] == "v1";
    let libs: Vec<&str> = source["libs"]
        .as_array()
        .map(|l| l.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default();
    let as_v1 = |text: &str| {
        if v1 {
            text.to_string()
        } else {
            opa_compat::to_v1("template", text).unwrap()
        }
    };
    let mut modules = vec![(format!("{}#rego", template.display()), as_v1(rego))];
    for (i, lib) in libs.iter().enumerate() {
        modules.push((format!("{}#libs[{i}]", template.display()), as_v1(lib)));
    }
    let parameters = match &read_yaml(constraint)["spec"]["parameters"] {
        Json::Null => json!({}),
        p => p.clone(),
    };
    // The reviews the Constraint's match selects (meshgate does not evaluate the others).
    let reviews: Vec<Json> = objects
        .iter()
        .map(suite::review)
        .filter(|r| policy.matches(&Input::new(r.clone())))
        .collect();
    let meshgate = reviews
        .iter()
        .map(|r| policy.evaluate(&Input::new(r.clone())).unwrap().violations)
        .collect();
    Job {
        label,
        modules,
        data: json!({"inventory": {}}),
        queries: vec![format!("data.{}.violation", package_of(rego))],
        inputs: reviews
            .into_iter()
            .map(|review| json!({"review": review, "parameters": parameters}))
            .collect(),
        meshgate,
    }
}

fn library_jobs() -> Vec<Job> {
    let base = library().join("library/pod-security-policy");
    let mut jobs = Vec::new();
    for entry in std::fs::read_dir(&base).unwrap() {
        let dir = entry.unwrap().path();
        let suite_file = dir.join("suite.yaml");
        if !suite_file.is_file() {
            continue;
        }
        let suite = read_yaml(&suite_file);
        for test in suite["tests"].as_array().unwrap() {
            let objects: Vec<Json> = test["cases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| read_yaml(&dir.join(c["object"].as_str().unwrap())))
                .collect();
            jobs.push(gatekeeper_job(
                format!(
                    "{}: {}",
                    suite_file.display(),
                    test["name"].as_str().unwrap()
                ),
                &dir.join(test["template"].as_str().unwrap()),
                &dir.join(test["constraint"].as_str().unwrap()),
                &objects,
            ));
        }
    }
    jobs
}

/// The objects of a case file's cases (inline objects and AdmissionReview files).
fn case_objects(file: &Path) -> Vec<Json> {
    let doc = read_yaml(file);
    let cases = match doc["casesFrom"].as_str() {
        Some(from) => read_yaml(&file.parent().unwrap().join(from))["cases"].clone(),
        None => doc["cases"].clone(),
    };
    cases
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.get("object").cloned())
        .collect()
}

fn rego_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".rego") && !name.ends_with("_test.rego")
        })
        .collect();
    files.sort();
    files
}

fn starter_jobs() -> Vec<Job> {
    let repo = meshgate_integration::paths::repo_root();
    let mut jobs = Vec::new();
    let mut gatekeeper: Vec<PathBuf> = std::fs::read_dir(repo.join("policies/gatekeeper"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("template.yaml").is_file())
        .collect();
    gatekeeper.sort();
    assert!(gatekeeper.len() >= 2, "{gatekeeper:?}");
    for dir in gatekeeper {
        let mut objects = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let file = entry.unwrap().path();
            if file.to_string_lossy().ends_with("cases.yaml") {
                objects.extend(case_objects(&file));
            }
        }
        jobs.push(gatekeeper_job(
            dir.display().to_string(),
            &dir.join("template.yaml"),
            &dir.join("constraint.yaml"),
            &objects,
        ));
    }
    let rego_root = repo.join("policies/rego");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&rego_root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("cases.yaml").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 6, "{dirs:?}");
    for dir in dirs {
        let cases_file = dir.join("cases.yaml");
        let doc = read_yaml(&cases_file);
        for entry in doc["policies"].as_array().unwrap() {
            let Some(rego) = entry.get("rego") else {
                continue;
            };
            let parameters = entry.get("parameters").cloned().unwrap_or(json!({}));
            let mut files = Vec::new();
            for f in rego["files"].as_array().unwrap() {
                let path = dir.join(f.as_str().unwrap());
                if path.is_dir() {
                    files.extend(rego_files(&path));
                } else {
                    files.push(path);
                }
            }
            let policy = RegoPolicy::load(
                entry["name"].as_str().unwrap(),
                &RegoSource {
                    files: files.clone(),
                    package: None,
                    rego_v0: false,
                },
                &parameters,
                TIMEOUT,
            )
            .unwrap();
            let modules: Vec<(String, String)> = files
                .iter()
                .map(|f| (f.display().to_string(), std::fs::read_to_string(f).unwrap()))
                .collect();
            let package = package_of(&modules[0].1);
            let requests: Vec<Json> = case_objects(&cases_file)
                .iter()
                .map(|o| admission_request("diff", "CREATE", o, None))
                .collect();
            let meshgate = requests
                .iter()
                .map(|r| {
                    let f = policy.evaluate(&Input::new(r.clone())).unwrap();
                    f.violations
                        .into_iter()
                        .chain(f.warnings.into_iter().map(|w| format!("warn: {w}")))
                        .collect()
                })
                .collect();
            jobs.push(Job {
                label: format!("{} ({})", cases_file.display(), entry["name"]),
                modules,
                data: json!({"parameters": parameters}),
                queries: ["deny", "violation", "warn"]
                    .iter()
                    .map(|r| format!("data.{package}.{r}"))
                    .collect(),
                inputs: requests,
                meshgate,
            });
        }
    }
    jobs
}

fn compare(jobs: &[Job]) -> usize {
    let answers = opa(jobs);
    let mut compared = 0;
    let mut disagreements = Vec::new();
    for (job, answer) in jobs.iter().zip(&answers) {
        assert!(
            answer.get("error").is_none(),
            "{}: OPA refused the policy: {}",
            job.label,
            answer["error"]
        );
        for (i, (per_query, ours)) in answer
            .as_array()
            .unwrap()
            .iter()
            .zip(&job.meshgate)
            .enumerate()
        {
            let mut theirs = Vec::new();
            for (query, result) in job.queries.iter().zip(per_query.as_array().unwrap()) {
                assert!(
                    result.get("error").is_none(),
                    "{} input {i} {query}: OPA: {}",
                    job.label,
                    result["error"]
                );
                let found = messages(&result["value"]);
                if query.ends_with(".warn") {
                    theirs.extend(found.into_iter().map(|w| format!("warn: {w}")));
                } else {
                    theirs.extend(found);
                }
            }
            let mut ours = ours.clone();
            ours.sort();
            theirs.sort();
            if ours != theirs {
                disagreements.push(format!(
                    "{} input {i}:\n  meshgate: {ours:?}\n  OPA:      {theirs:?}",
                    job.label
                ));
            }
            compared += 1;
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    compared
}

#[test]
fn the_library_templates_agree_with_opa_on_their_suites() {
    let jobs = library_jobs();
    assert!(jobs.len() >= 16);
    let compared = compare(&jobs);
    assert!(compared >= 100, "{compared}");
}

#[test]
fn the_starter_policies_agree_with_opa_on_their_cases() {
    let compared = compare(&starter_jobs());
    assert!(compared >= 50, "{compared}");
}

/// Negations whose arguments may be undefined, the case the OPA pass exists for: each probe is
/// a `deny` rule of one module, so meshgate and OPA must deny with the same probes' names.
const NEGATION_PROBES: &[&str] = &[
    "not f(input.missing)",
    "not startswith(input.missing, \"a\")",
    "not f(g(input.missing))",
    "p := input.p; not f(p.missing)",
    "not input.missing > 1",
    "not input.missing != 1",
    "not count(input.missing) > 0",
    "not f2(input.x, input.missing)",
    "not f([input.missing])",
    "not f({\"a\": input.missing})",
    "not f({input.missing})",
    "not f(input.missing + 1)",
    "not input.missing in [1]",
    "not g(input.missing) == 1",
    "not input.missing == 1",
    "x := 1; not x == input.missing",
    "not input.missing = 1",
    "not f([y | y := input.missing])",
    "p := input.p; not p.missing",
    "not f(input.p.a)",
    "not f(input.p[input.missing])",
    "some i in [1, 2]; not f(input.list[i])",
    "not f(input.x) with input.x as 1",
    "every k in [1] { k == 1; not f(input.missing) }",
    "count([1 | not f(input.missing)]) == 0",
    // Not a negation: a line that starts with `(` is a new expression in OPA.
    "y := input.x\n  (input.x + 1) > y",
];

#[test]
fn negations_with_undefined_arguments_decide_as_in_opa() {
    let dir = tempfile::tempdir().unwrap();
    let mut module = String::from(
        // f compares with input.x, so that the type checker takes any argument.
        "package probes\n\nf(a) if { a == input.x }\nf2(a, b) if { a == b }\ng(a) := a\n\n",
    );
    for (i, probe) in NEGATION_PROBES.iter().enumerate() {
        module.push_str(&format!("deny contains \"probe {i}\" if {{ {probe} }}\n"));
    }
    let file = dir.path().join("probes.rego");
    std::fs::write(&file, &module).unwrap();
    let policy = RegoPolicy::load(
        "probes",
        &RegoSource {
            files: vec![file.clone()],
            package: None,
            rego_v0: false,
        },
        &json!({}),
        TIMEOUT,
    )
    .unwrap();
    let inputs = vec![
        json!({"x": 5, "p": {"a": 1}, "list": [2, 1]}),
        json!({"x": 1, "p": {"a": 2, "missing": 1}, "list": [1]}),
    ];
    let meshgate = inputs
        .iter()
        .map(|i| policy.evaluate(&Input::new(i.clone())).unwrap().violations)
        .collect();
    let job = Job {
        label: "negation probes".into(),
        modules: vec![(file.display().to_string(), module)],
        data: json!({}),
        queries: vec!["data.probes.deny".into()],
        inputs,
        meshgate,
    };
    assert_eq!(compare(&[job]), 2);
}
