//! The routes driven in process with real AdmissionReview files (`admission/tests/reviews/`):
//! what the API server gets back for each mode × failure policy × policy outcome, before and
//! after the policies are loaded, and for bodies that are not reviews.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value as Json;
use tower::ServiceExt;

use super::{Webhook, router};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::review::Pipeline;

const WASM_POD: &str = include_str!("../../tests/reviews/pod-wasm-create.json");
const RUNC_POD: &str = include_str!("../../tests/reviews/pod-runc-create.json");
const DELETE: &str = include_str!("../../tests/reviews/pod-wasm-delete.json");
const DEPLOYMENT: &str = include_str!("../../tests/reviews/deployment-spin-create.json");

/// A policy that denies every pod, and one whose answer is not a verdict (a policy error).
const DENY_ALL: &str = "package deny_all\n\ndeny contains \"no pods today\" if true\n";
const BROKEN: &str = "package broken\n\ndeny contains 42 if true\n";

/// A webhook whose one policy is `rego` (file contents) with the given mode and failure
/// policy; loaded unless `loaded` is false.
fn webhook(
    rego: &str,
    mode: &str,
    failure_policy: &str,
    loaded: bool,
) -> (Arc<Webhook>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.rego"), rego).unwrap();
    let text = format!(
        "failurePolicy: {failure_policy}\npolicies:\n  - name: p\n    mode: {mode}\n    rego: {{files: [p.rego]}}\n"
    );
    let config = Config::parse(&text, "test.yaml", dir.path()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let webhook = Webhook::new(&config, metrics.clone());
    if loaded {
        webhook.set_pipeline(Arc::new(Pipeline::load(&config, metrics).unwrap()));
    }
    (webhook, dir)
}

/// POSTs `body` to `/validate`; the status and the body as JSON (or as a string).
async fn post(webhook: &Arc<Webhook>, body: &str) -> (StatusCode, Json) {
    let request = Request::post("/validate")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router(webhook.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, json)
}

/// What the API server reads from an answer: allowed, the message, the warnings.
fn answer(review: &Json) -> (bool, String, Vec<String>) {
    let response = &review["response"];
    let warnings = response["warnings"]
        .as_array()
        .map(|w| w.iter().map(|w| w.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    (
        response["allowed"].as_bool().unwrap(),
        response["status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        warnings,
    )
}

#[tokio::test]
async fn mode_and_failure_policy_decide_what_the_api_server_gets() {
    // (policy, mode, failurePolicy) → (allowed, message contains, warning contains)
    let table = [
        (
            DENY_ALL,
            "enforce",
            "Fail",
            false,
            "[p] no pods today",
            None,
        ),
        (
            DENY_ALL,
            "enforce",
            "Ignore",
            false,
            "[p] no pods today",
            None,
        ),
        (
            DENY_ALL,
            "warn",
            "Fail",
            true,
            "",
            Some("[p] no pods today"),
        ),
        (DENY_ALL, "dry-run", "Fail", true, "", None),
        (
            BROKEN,
            "enforce",
            "Fail",
            false,
            "[p] policy error: invalid result",
            None,
        ),
        (
            BROKEN,
            "enforce",
            "Ignore",
            true,
            "",
            Some("[p] policy error: invalid result"),
        ),
        (BROKEN, "warn", "Fail", true, "", Some("(ignored)")),
        (BROKEN, "dry-run", "Fail", true, "", None),
    ];
    for (rego, mode, failure_policy, allowed, message, warning) in table {
        let case = format!("{} {mode} {failure_policy}", &rego[8..16]);
        let (webhook, _dir) = webhook(rego, mode, failure_policy, true);
        let (status, review) = post(&webhook, WASM_POD).await;
        assert_eq!(status, StatusCode::OK, "{case}");
        assert_eq!(
            review["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002",
            "{case}"
        );
        let (got_allowed, got_message, got_warnings) = answer(&review);
        assert_eq!(got_allowed, allowed, "{case}: {review}");
        assert!(got_message.contains(message), "{case}: {got_message}");
        if !allowed {
            assert!(
                got_message.starts_with("Pod apps/web: "),
                "{case}: {got_message}"
            );
            assert_eq!(review["response"]["status"]["code"], 403, "{case}");
        }
        match warning {
            Some(w) => assert!(
                got_warnings.iter().any(|g| g.contains(w)),
                "{case}: {got_warnings:?}"
            ),
            None => assert!(got_warnings.is_empty(), "{case}: {got_warnings:?}"),
        }
    }
}

#[tokio::test]
async fn out_of_scope_requests_are_admitted_without_evaluation() {
    let (webhook, _dir) = webhook(DENY_ALL, "enforce", "Fail", true);
    for review in [RUNC_POD, DELETE] {
        let (status, answer) = post(&webhook, review).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
    }
    // A workload on a Wasm RuntimeClass is judged as the Pod its template makes.
    let (_, answer) = post(&webhook, DEPLOYMENT).await;
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Deployment apps/api: [p] no pods today"),
        "{message}"
    );
}

#[tokio::test]
async fn before_the_policies_load_the_failure_policy_answers() {
    let (strict, _dir) = webhook(DENY_ALL, "enforce", "Fail", false);
    let (_, review) = post(&strict, WASM_POD).await;
    let (allowed, message, _) = answer(&review);
    assert!(!allowed);
    assert!(message.contains("still loading its policies"), "{message}");

    let (open, _dir) = webhook(DENY_ALL, "enforce", "Ignore", false);
    let (_, review) = post(&open, WASM_POD).await;
    let (allowed, _, warnings) = answer(&review);
    assert!(allowed);
    assert!(
        warnings.iter().any(|w| w.contains("still loading")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn bodies_that_are_not_reviews_get_400_or_an_invalid_answer() {
    let (webhook, _dir) = webhook(DENY_ALL, "enforce", "Fail", true);
    let (status, body) = post(&webhook, "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.as_str().unwrap().starts_with("malformed JSON"),
        "{body}"
    );

    // With a uid the API server can match, the answer is an `invalid` review naming the field.
    let mut review: Json = serde_json::from_str(WASM_POD).unwrap();
    review["request"]
        .as_object_mut()
        .unwrap()
        .remove("operation");
    let (status, answer) = post(&webhook, &review.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("operation"), "{message}");
}

#[test]
fn review_files_are_what_the_api_server_sends() {
    // The files decode with the server's own bounded parser, so the table above tests them
    // and not a parse error.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reviews");
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let limits = crate::review::ParseLimits {
            max_values: 50_000,
            max_depth: 64,
        };
        crate::review::decode::parse(&bytes, limits).unwrap();
    }
}
