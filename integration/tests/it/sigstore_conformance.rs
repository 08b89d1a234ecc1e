//! The Sigstore conformance suite's bundle-verification cases (`../shared/sigstore/conformance`)
//! through the real `meshgate verify-bundle`, in the suite's client protocol: every case with
//! the artifact's path and again with its `sha256:<hex>` digest; a case whose name ends in
//! `_fail` must fail, every other must verify. sigstore-python (installed into `.venv` by
//! `make setup`) gives a second opinion on the cases it can verify offline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use meshgate_integration::paths::{repo_root, subdirs};
use meshgate_integration::webhook::meshgate_binary;
use sha2::{Digest, Sha256};

const DEFAULT_IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const DEFAULT_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// `shared/sigstore` beside the checkout.
fn sigstore_dir() -> PathBuf {
    meshgate_integration::paths::shared("sigstore")
}

fn cases() -> Vec<PathBuf> {
    subdirs(&sigstore_dir().join("conformance"))
}

fn name(case: &Path) -> String {
    case.file_name().unwrap().to_string_lossy().into_owned()
}

fn read_or(case: &Path, file: &str, default: &str) -> String {
    std::fs::read_to_string(case.join(file))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| default.to_string())
}

/// `meshgate verify-bundle` for one case and artifact argument: exit 0 or not, and stderr.
fn verify_bundle(case: &Path, artifact_arg: &str) -> (bool, String) {
    let mut command = Command::new(meshgate_binary());
    command
        .arg("verify-bundle")
        .arg("--bundle")
        .arg(case.join("bundle.sigstore.json"));
    if case.join("trusted_root.json").is_file() {
        command
            .arg("--trusted-root")
            .arg(case.join("trusted_root.json"));
    }
    if case.join("key.pub").is_file() {
        command.arg("--key").arg(case.join("key.pub"));
    } else {
        command
            .arg("--certificate-identity")
            .arg(read_or(case, "identity", DEFAULT_IDENTITY))
            .arg("--certificate-oidc-issuer")
            .arg(read_or(case, "issuer", DEFAULT_ISSUER));
    }
    let out = command.arg(artifact_arg).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn artifact(case: &Path) -> PathBuf {
    let own = case.join("artifact");
    if own.is_file() {
        own
    } else {
        case.parent().unwrap().join("a.txt")
    }
}

#[test]
fn every_conformance_case_through_meshgate_verify_bundle() {
    let cases = cases();
    assert!(!cases.is_empty(), "no conformance cases");
    let mut wrong = Vec::new();
    let mut runs = 0;
    for case in &cases {
        let should_verify = !name(case).ends_with("_fail");
        let path = artifact(case);
        let hex: String = Sha256::digest(std::fs::read(&path).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let digest = format!("sha256:{hex}");
        for arg in [path.to_string_lossy().into_owned(), digest] {
            runs += 1;
            let (verified, stderr) = verify_bundle(case, &arg);
            if verified != should_verify {
                wrong.push(format!(
                    "{} ({}): {} {}",
                    name(case),
                    if arg.starts_with("sha256:") {
                        "digest"
                    } else {
                        "file"
                    },
                    if verified { "verified" } else { "refused:" },
                    stderr.trim()
                ));
            }
        }
    }
    println!("{} passed, {} failed", runs - wrong.len(), wrong.len());
    assert!(
        wrong.is_empty(),
        "cases judged wrongly:\n{}",
        wrong.join("\n")
    );
}

/// Cases where sigstore-python 4.5.1 itself judges against the suite, and why; every other
/// case it judges must agree with the suite (and so with meshgate, held to the suite above).
const SIGSTORE_PYTHON_GAPS: &[(&str, &str)] = &[
    // intoto 0.0.2 entries: "Integrated time only supported for dsse/hashedrekord 0.0.1".
    (
        "intoto-with-custom-trust-root",
        "refuses intoto 0.0.2 log entries",
    ),
    // It compares the TSA validity end exclusively; the suite says TimeRange is closed.
    (
        "trust-root-tsa-validity-end-inclusive",
        "treats the TSA validity end as exclusive",
    ),
];

#[test]
fn sigstore_python_agrees_on_the_cases_it_can_judge_offline() {
    let python = repo_root().join(".venv/bin/python");
    let dir = sigstore_dir();
    let out = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/sigstore_conformance.py"))
        .arg(dir.join("conformance"))
        .arg(dir.join("trusted_root.public-good.json"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (make setup installs sigstore into .venv)",
                python.display()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sigstore-python run failed (make setup installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: BTreeMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once(' ')).collect();
    let key_cases = cases()
        .iter()
        .filter(|c| c.join("key.pub").is_file())
        .count();
    assert_eq!(
        verdicts.len() + key_cases,
        cases().len(),
        "sigstore-python judged:\n{stdout}"
    );
    let mut disagreements = Vec::new();
    for (case, verdict) in &verdicts {
        let should_verify = !case.ends_with("_fail");
        let verified = *verdict == "ok";
        let known_gap = SIGSTORE_PYTHON_GAPS.iter().any(|(c, _)| c == case);
        if (verified == should_verify) == known_gap {
            disagreements.push(format!("{case}: {verdict} (known gap: {known_gap})"));
        }
    }
    assert!(
        disagreements.is_empty(),
        "sigstore-python vs the suite:\n{}",
        disagreements.join("\n")
    );
}

/// meshgate's own refusal cases, in the suite's layout (`integration/fixtures/sigstore`): each
/// must fail through `meshgate verify-bundle`, with the artifact's path and with its digest.
#[test]
fn meshgates_own_refusal_cases_fail() {
    let dir = repo_root().join("integration/fixtures/sigstore");
    let cases = subdirs(&dir);
    assert!(!cases.is_empty(), "no cases in {}", dir.display());
    for case in &cases {
        assert!(name(case).ends_with("_fail"), "{}", name(case));
        let path = artifact(case);
        let hex: String = Sha256::digest(std::fs::read(&path).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        for arg in [path.to_string_lossy().into_owned(), format!("sha256:{hex}")] {
            let (verified, stderr) = verify_bundle(case, &arg);
            assert!(!verified, "{} ({arg}) verified: {stderr}", name(case));
        }
    }
}
