//! The public Gatekeeper library (its Pod Security Policy group, in `../shared/gatekeeper-library`)
//! through the real `meshgate` binary: every Rego unit test passes under `meshgate policy
//! test`, and every `gator verify` suite holds under `meshgate policy verify`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use meshgate_integration::paths::subdirs;
use meshgate_integration::webhook::meshgate_binary;

/// `shared/gatekeeper-library` beside the checkout.
pub fn library() -> PathBuf {
    meshgate_integration::paths::shared("gatekeeper-library")
}

/// Runs `meshgate policy <verb> <paths>`: exit status and stdout.
fn meshgate_policy(verb: &str, paths: &[PathBuf]) -> (bool, String) {
    let out = Command::new(meshgate_binary())
        .args(["policy", verb])
        .args(paths)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `N passed, M failed` of the closing line.
fn counts(stdout: &str) -> (usize, usize) {
    let last = stdout.lines().last().unwrap_or("");
    let numbers: Vec<usize> = last
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(
        last.ends_with(" failed") && numbers.len() == 2,
        "closing line: {last}"
    );
    (numbers[0], numbers[1])
}

/// Every template's unit tests, each directory on its own as upstream runs them (templates
/// share package names), then the shared libraries'.
#[test]
fn every_unit_test_of_the_library_passes() {
    let library = library();
    let mut dirs = subdirs(&library.join("src/pod-security-policy"));
    dirs.extend(subdirs(&library.join("src/rego")));
    assert!(dirs.len() >= 16, "{dirs:?}");
    let mut total = 0;
    for dir in &dirs {
        let (ok, stdout) = meshgate_policy("test", std::slice::from_ref(dir));
        let failures: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("PASS")).collect();
        let (passed, failed) = counts(&stdout);
        assert!(
            ok && failed == 0 && passed > 0,
            "{}:\n{}",
            dir.display(),
            failures.join("\n")
        );
        // Each definition of a test name is a test of its own.
        let tests_in_files: usize = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with("_test.rego"))
            .map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .filter(|l| l.starts_with("test_"))
                    .filter(|l| !l.contains('('))
                    .count()
            })
            .sum();
        assert_eq!(passed, tests_in_files, "{}", dir.display());
        total += passed;
    }
    eprintln!("{total} unit tests passed");
}

#[test]
fn every_gator_suite_of_the_library_holds() {
    let library = library();
    let suites: Vec<PathBuf> = subdirs(&library.join("library/pod-security-policy"))
        .into_iter()
        .map(|d| d.join("suite.yaml"))
        .filter(|p| p.is_file())
        .collect();
    assert!(suites.len() >= 16, "{suites:?}");
    let (ok, stdout) = meshgate_policy("verify", &suites);
    let failures: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("PASS")).collect();
    let (passed, failed) = counts(&stdout);
    assert!(ok && failed == 0, "{}", failures.join("\n"));
    let cases: usize = suites
        .iter()
        .map(|s| {
            std::fs::read_to_string(s)
                .unwrap()
                .lines()
                .filter(|l| l.trim_start().starts_with("object:"))
                .count()
        })
        .sum();
    assert_eq!(passed, cases);
}

#[test]
fn a_suite_that_expects_the_wrong_thing_fails_with_what_the_policy_said() {
    let library = library();
    let dir = tempfile::tempdir().unwrap();
    let psp = library.join("library/pod-security-policy/privileged-containers");
    let suite = format!(
        "kind: Suite\napiVersion: test.gatekeeper.sh/v1alpha1\ntests:\n- name: privileged\n  template: {0}/template.yaml\n  constraint: {0}/samples/psp-privileged-container/constraint.yaml\n  cases:\n  - name: wrong-count\n    object: {0}/samples/psp-privileged-container/example_disallowed.yaml\n    assertions:\n    - violations: 1\n  - name: wrong-message\n    object: {0}/samples/psp-privileged-container/example_disallowed.yaml\n    assertions:\n    - violations: yes\n      message: not what it says\n  - name: right\n    object: {0}/samples/psp-privileged-container/example_disallowed.yaml\n    assertions:\n    - violations: 1\n      message: \"^Privileged container is not allowed: nginx-init,\"\n",
        psp.display()
    );
    let path = dir.path().join("suite.yaml");
    std::fs::write(&path, suite).unwrap();
    let (ok, stdout) = meshgate_policy("verify", &[path]);
    assert!(!ok, "{stdout}");
    assert!(stdout.contains("expected 1 violations, got 2"), "{stdout}");
    assert!(
        stdout.contains("expected violations matching \"not what it says\", got none"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS") && stdout.contains("privileged/right"),
        "{stdout}"
    );
    assert!(stdout.ends_with("1 passed, 2 failed\n"), "{stdout}");
}

/// The `[gk] ` messages of a denial (`Pod ns/name: [gk] a; [gk] b`).
fn denial_messages(message: &str) -> Vec<String> {
    message
        .split("[gk] ")
        .skip(1)
        .map(|m| m.trim_end().trim_end_matches(';').to_string())
        .collect()
}

/// The suites' Pod cases through the webhook's own review pipeline (selection, the
/// Constraint's match, evaluation, the verdict), the Pods put on a Wasm RuntimeClass: each
/// decides as its suite says, with as many violations and the messages it names.
#[test]
fn the_library_suites_hold_through_the_webhook_pipeline() {
    use meshgate_admission::config::Config;
    use meshgate_admission::metrics::Metrics;
    use meshgate_admission::policy_test::suite;
    use meshgate_admission::review::Pipeline;

    let library = library();
    let mut checked = 0;
    let mut failures = Vec::new();
    for dir in subdirs(&library.join("library/pod-security-policy")) {
        let suite_file = dir.join("suite.yaml");
        let doc: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&suite_file).unwrap()).unwrap();
        for test in doc["tests"].as_array().unwrap() {
            let config = format!(
                "policies:\n  - name: gk\n    gatekeeper:\n      template: {}\n      constraint: {}\n",
                dir.join(test["template"].as_str().unwrap()).display(),
                dir.join(test["constraint"].as_str().unwrap()).display(),
            );
            let config = Config::parse(&config, "gk.yaml", &dir).unwrap();
            let pipeline = Pipeline::load(&config, std::sync::Arc::new(Metrics::new())).unwrap();
            for case in test["cases"].as_array().unwrap() {
                let object: serde_json::Value = serde_yaml::from_str(
                    &std::fs::read_to_string(dir.join(case["object"].as_str().unwrap())).unwrap(),
                )
                .unwrap();
                let mut request = suite::review(&object);
                if request["kind"]["kind"] != "Pod" {
                    continue;
                }
                for side in ["object", "oldObject"] {
                    if request[side].is_object() {
                        request[side]["spec"]["runtimeClassName"] = "wasmtime".into();
                    }
                }
                if request["namespace"] == "" {
                    request["namespace"] = "default".into();
                }
                let verdict = pipeline.review(request);
                let messages = denial_messages(verdict.message.as_deref().unwrap_or(""));
                let name = format!(
                    "{}: {}/{}",
                    suite_file.display(),
                    test["name"],
                    case["name"]
                );
                if verdict.skipped.is_some() {
                    failures.push(format!("{name}: skipped: {:?}", verdict.skipped));
                }
                for assertion in case["assertions"].as_array().unwrap() {
                    let pattern = assertion["message"].as_str().unwrap_or("");
                    let matching = messages
                        .iter()
                        .filter(|m| regex_free_match(pattern, m))
                        .count();
                    let ok = match &assertion["violations"] {
                        serde_json::Value::Number(n) => n.as_u64() == Some(matching as u64),
                        serde_json::Value::String(w) if w == "no" => matching == 0,
                        _ => matching > 0,
                    };
                    if !ok {
                        failures.push(format!("{name}: {assertion} against {messages:?}"));
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 100, "{checked}");
}

/// The suites' message patterns are plain text or anchored text; `^` and `$` are what they
/// use of regular expressions.
fn regex_free_match(pattern: &str, message: &str) -> bool {
    let start = pattern.strip_prefix('^');
    let body = start.unwrap_or(pattern);
    let (body, end) = match body.strip_suffix('$') {
        Some(b) => (b, true),
        None => (body, false),
    };
    match (start.is_some(), end) {
        (true, true) => message == body,
        (true, false) => message.starts_with(body),
        (false, true) => message.ends_with(body),
        (false, false) => message.contains(body),
    }
}
