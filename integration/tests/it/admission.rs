//! The admission webhook as the API server meets it: the real `meshgate serve` process over
//! TLS, real AdmissionReview JSON, the starter policies from `policies/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use meshgate_integration::Webhook;
use meshgate_integration::ports::free_port;
use meshgate_integration::webhook::{client_trusting, meshgate_binary, request};
use serde_json::{Value as Json, json};

/// The starter policies as the dev configuration enables them.
const STARTER: &str = r#"
policies:
  - name: privileged
    rego: {files: ["{{repo}}/policies/rego/privileged", "{{repo}}/policies/rego/lib"]}
  - name: host-namespaces
    rego: {files: ["{{repo}}/policies/rego/host-namespaces", "{{repo}}/policies/rego/lib"]}
  - name: resource-limits
    rego: {files: ["{{repo}}/policies/rego/resource-limits", "{{repo}}/policies/rego/lib"]}
  - name: image-digest
    rego: {files: ["{{repo}}/policies/rego/image-digest", "{{repo}}/policies/rego/lib"]}
    mode: warn
  - name: allowed-registries
    rego: {files: ["{{repo}}/policies/rego/allowed-registries", "{{repo}}/policies/rego/lib"]}
    parameters: {registries: [ghcr.io/acme/]}
"#;

const DIGEST: &str = "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn container(name: &str, image: &str, security: Json) -> Json {
    json!({
        "name": name,
        "image": image,
        "securityContext": security,
        "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
    })
}

fn pod(name: &str, runtime: Option<&str>, containers: Json) -> Json {
    let mut spec = json!({"containers": containers});
    if let Some(runtime) = runtime {
        spec["runtimeClassName"] = json!(runtime);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "apps"}, "spec": spec})
}

/// A pod of one privileged container.
fn privileged_pod(name: &str, runtime: Option<&str>, container_name: &str, image: &str) -> Json {
    pod(
        name,
        runtime,
        json!([container(
            container_name,
            image,
            json!({"privileged": true})
        )]),
    )
}

fn message(response: &Json) -> &str {
    response["status"]["message"].as_str().unwrap_or("")
}

#[test]
fn pods_on_wasm_runtimes_are_judged_and_other_pods_pass() {
    let webhook = Webhook::start(STARTER);
    let pinned = format!("ghcr.io/acme/web@{DIGEST}");

    // wasmtime, privileged: denied, naming the container and image.
    let bad = privileged_pod("web", Some("wasmtime"), "app", &pinned);
    let r = webhook.review(&request("uid-1", "CREATE", &bad, None));
    assert_eq!(r["allowed"], false, "{r}");
    assert_eq!(r["status"]["code"], 403);
    assert!(
        message(&r).contains(&format!(
            r#"Pod apps/web: [privileged] container "app" (image {pinned}) is privileged"#
        )),
        "{r}"
    );

    // wasmedge, clean but tagged: admitted with the digest warning.
    let tagged = pod(
        "web",
        Some("wasmedge"),
        json!([container("app", "ghcr.io/acme/web:1", json!({}))]),
    );
    let r = webhook.review(&request("uid-2", "CREATE", &tagged, None));
    assert_eq!(r["allowed"], true, "{r}");
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("[image-digest]") && warnings.contains("not pinned by digest"),
        "{r}"
    );

    // spin, every check failing at once: every failed check is listed.
    let worst = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "worst", "namespace": "apps"},
        "spec": {
            "runtimeClassName": "spin",
            "hostPID": true,
            "containers": [{"name": "x", "image": "quay.io/evil/x:1", "securityContext": {"privileged": true}}],
        },
    });
    let r = webhook.review(&request("uid-3", "CREATE", &worst, None));
    assert_eq!(r["allowed"], false);
    for expected in [
        "[privileged]",
        "[host-namespaces] the pod sets hostPID: true",
        "[resource-limits] container \"x\" (image quay.io/evil/x:1) has no cpu limit",
        "[allowed-registries] container \"x\" (image quay.io/evil/x:1) is not from an allowed registry",
    ] {
        assert!(message(&r).contains(expected), "{expected} missing in {r}");
    }

    // A privileged pod without a Wasm RuntimeClass is not evaluated at all.
    let native = privileged_pod("agent", None, "agent", "quay.io/evil/x:1");
    let r = webhook.review(&request("uid-4", "CREATE", &native, None));
    assert_eq!(r["allowed"], true, "{r}");
    assert!(r.get("warnings").is_none_or(Json::is_null), "{r}");
    let runc = privileged_pod("agent", Some("runc"), "agent", "quay.io/evil/x:1");
    assert_eq!(
        webhook.review(&request("uid-5", "CREATE", &runc, None))["allowed"],
        true
    );

    // A Deployment is refused at apply time through its pod template.
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "apps"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}}, "template": {
            "metadata": {"labels": {"app": "api"}},
            "spec": {"runtimeClassName": "wasmtime", "containers": [container("api", &pinned, json!({"allowPrivilegeEscalation": true}))]},
        }},
    });
    let r = webhook.review(&request("uid-6", "CREATE", &deployment, None));
    assert_eq!(r["allowed"], false);
    assert!(
        message(&r).starts_with("Deployment apps/api: [privileged]"),
        "{r}"
    );
    assert!(message(&r).contains("allows privilege escalation"), "{r}");

    // A CronJob through spec.jobTemplate.spec.template.
    let cronjob = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "report", "namespace": "apps"},
        "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "runtimeClassName": "wasmtime", "restartPolicy": "OnFailure",
            "containers": [{"name": "report", "image": pinned}],
        }}}}},
    });
    let r = webhook.review(&request("uid-7", "CREATE", &cronjob, None));
    assert_eq!(r["allowed"], false);
    assert!(
        message(&r).contains("CronJob apps/report: [resource-limits]"),
        "{r}"
    );

    // UPDATE with oldObject: the new object is judged.
    let updated = pod(
        "web",
        Some("wasmtime"),
        json!([container("app", "quay.io/evil/web:2", json!({}))]),
    );
    let old = pod(
        "web",
        Some("wasmtime"),
        json!([container("app", &pinned, json!({}))]),
    );
    let r = webhook.review(&request("uid-8", "UPDATE", &updated, Some(&old)));
    assert_eq!(r["allowed"], false);
    assert!(message(&r).contains("quay.io/evil/web:2"), "{r}");
    let r = webhook.review(&request("uid-9", "UPDATE", &old, Some(&updated)));
    assert_eq!(r["allowed"], true, "{r}");

    // DELETE carries no new object and is not checked.
    let mut delete = request("uid-10", "DELETE", &bad, None);
    delete["oldObject"] = bad.clone();
    delete["object"] = Json::Null;
    assert_eq!(webhook.review(&delete)["allowed"], true);

    // One log line per decision, with uid, kind, namespace, name and decision.
    let log = webhook.log();
    let line = log
        .lines()
        .find(|l| l.contains("uid-6"))
        .expect("a log line for uid-6");
    for field in ["Deployment", "apps", "api", "denied"] {
        assert!(line.contains(field), "{field} missing in {line}");
    }

    // Metrics: reviews by kind and decision, latency per policy.
    let (status, metrics) = webhook.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics
            .contains(r#"meshgate_admission_reviews_total{kind="Deployment",decision="denied"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"meshgate_admission_reviews_total{kind="Pod",decision="skipped"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"meshgate_admission_policy_evaluation_duration_seconds_count{policy="privileged"} 7"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"meshgate_admission_policy_evaluations_total{policy="image-digest",outcome="violation"}"#), "{metrics}");
}

#[test]
fn bad_input_gets_a_clear_error_and_the_server_keeps_serving() {
    let mut webhook = Webhook::start(STARTER);

    let (status, body) = webhook.post("{not json");
    assert_eq!(status, 400);
    assert!(body.starts_with("malformed JSON"), "{body}");

    let (status, body) = webhook
        .post(r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#);
    assert_eq!(status, 400);
    assert!(body.contains("expected an admission.k8s.io/v1 AdmissionReview, got apiVersion admission.k8s.io/v1beta1"), "{body}");

    let (status, body) =
        webhook.post(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#);
    assert_eq!(status, 400, "{body}");

    // A request with a uid but missing fields: an `invalid` review the API server can match.
    let (status, body) = webhook.post(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"broken-1","operation":"CREATE"}}"#);
    assert_eq!(status, 200, "{body}");
    let answer: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["uid"], "broken-1");
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["reason"], "InvalidRequest");
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed AdmissionReview request"),
        "{body}"
    );

    // Over the 3 MiB limit.
    let huge = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"big","pad":"{}"}}}}"#,
        "x".repeat(4 * 1024 * 1024)
    );
    // On its own connection: the server answers before reading the rest and closes it.
    let response = client_trusting(&webhook.ca)
        .post(format!("{}/validate", webhook.url))
        .body(huge)
        .send()
        .unwrap();
    let (status, body) = (response.status().as_u16(), response.text().unwrap());
    assert_eq!(status, 400);
    assert!(
        body.contains("exceeds the limit of 3145728 bytes"),
        "{body}"
    );

    // Still serving, still judging.
    assert!(webhook.running());
    assert_eq!(webhook.get("/healthz").0, 200);
    let bad = privileged_pod("web", Some("wasmtime"), "app", "ghcr.io/acme/web:1");
    assert_eq!(
        webhook.review(&request("after", "CREATE", &bad, None))["allowed"],
        false
    );
    let (_, metrics) = webhook.get("/metrics");
    assert!(
        metrics.contains(r#"meshgate_admission_errors_total{reason="bad_request"} 5"#),
        "{metrics}"
    );
}

/// A policy that would run for minutes: the time bound stops it; fail closed denies, a
/// policy configured to fail open admits with a warning; the server answers meanwhile.
#[test]
fn runaway_policies_are_stopped_within_their_bound() {
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("slow.rego");
    std::fs::write(
        &slow,
        "package slow\n\ndeny contains \"never\" if {\n\tsome a in numbers.range(1, 100000)\n\tsome b in numbers.range(1, 100000)\n\ta * b == -1\n}\n",
    )
    .unwrap();
    let config = format!(
        r#"
policies:
  - name: slow-closed
    rego: {{files: ["{slow}"]}}
    timeout: 300ms
  - name: slow-open
    rego: {{files: ["{slow}"]}}
    timeout: 300ms
    failurePolicy: Ignore
"#,
        slow = slow.display()
    );
    let webhook = Webhook::start(&config);
    let p = pod(
        "web",
        Some("wasmtime"),
        json!([container("app", "ghcr.io/acme/web:1", json!({}))]),
    );

    let started = Instant::now();
    let r = webhook.review(&request("slow-1", "CREATE", &p, None));
    let took = started.elapsed();
    assert_eq!(r["allowed"], false, "{r}");
    assert!(
        message(&r)
            .contains("[slow-closed] policy error: evaluation exceeded its time limit of 300ms"),
        "{r}"
    );
    assert!(
        r["warnings"]
            .to_string()
            .contains("[slow-open] policy error"),
        "{r}"
    );
    // Bounded by the two policies' limits, far below the 4 s review deadline.
    assert!(took < Duration::from_secs(3), "took {took:?}");

    // While a runaway evaluation is in flight, health checks are answered.
    let client = webhook.client().clone();
    let url = webhook.url.clone();
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request("slow-2", "CREATE", &p, None)}).to_string();
    let in_flight = std::thread::spawn(move || {
        client
            .post(format!("{url}/validate"))
            .body(body)
            .send()
            .unwrap()
            .status()
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(webhook.get("/healthz").0, 200);
    assert_eq!(in_flight.join().unwrap(), 200);
}

#[test]
fn serving_certificate_is_reloaded_when_its_files_change() {
    let work = tempfile::tempdir().unwrap();
    let a = meshgate_admission::tls::dev_certificate(&work.path().join("a")).unwrap();
    let b = meshgate_admission::tls::dev_certificate(&work.path().join("b")).unwrap();
    let live = work.path().join("live");
    std::fs::create_dir(&live).unwrap();
    std::fs::copy(&a.cert, live.join("tls.crt")).unwrap();
    std::fs::copy(&a.key, live.join("tls.key")).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "tls:\n  certFile: {live}/tls.crt\n  keyFile: {live}/tls.key\n  reloadInterval: 200ms\n",
            live = live.display()
        ),
    )
    .unwrap();
    let webhook = Webhook::start_file(&config, dir, &a.ca, free_port());
    let trusts_a = client_trusting(&a.ca);
    let trusts_b = client_trusting(&b.ca);
    let healthz = format!("{}/healthz", webhook.url);
    assert!(trusts_a.get(&healthz).send().is_ok());
    assert!(
        trusts_b.get(&healthz).send().is_err(),
        "B is not served yet"
    );

    // Rotate as cert-manager does: new files moved into place.
    std::fs::copy(&b.cert, live.join("tls.crt.new")).unwrap();
    std::fs::copy(&b.key, live.join("tls.key.new")).unwrap();
    std::fs::rename(live.join("tls.key.new"), live.join("tls.key")).unwrap();
    std::fs::rename(live.join("tls.crt.new"), live.join("tls.crt")).unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    // reqwest pools connections; a fresh client per attempt forces a new handshake.
    while client_trusting(&b.ca).get(&healthz).send().is_err() {
        assert!(
            Instant::now() < deadline,
            "new certificate not served; log:\n{}",
            webhook.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        client_trusting(&a.ca).get(&healthz).send().is_err(),
        "old certificate still served"
    );
    assert!(webhook.log().contains("serving certificate reloaded"));
    drop(trusts_a);
    drop(trusts_b);
}

#[test]
fn the_dev_configuration_runs_with_no_other_input() {
    let repo = meshgate_integration::paths::repo_root();
    let dir = tempfile::tempdir().unwrap();
    let ca = repo.join(".state/admission-tls/ca.crt");
    let webhook = Webhook::start_file(
        &repo.join("admission/examples/dev.yaml"),
        dir,
        &ca,
        free_port(),
    );
    let bad = privileged_pod("web", Some("wasmtime"), "app", "ghcr.io/acme/web:1");
    let r = webhook.review(&request("dev-1", "CREATE", &bad, None));
    assert_eq!(r["allowed"], false);
    assert!(message(&r).contains("[privileged]"), "{r}");
}

#[test]
fn invalid_configuration_fails_at_startup_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let run = |config: &str| {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, config).unwrap();
        let out = Command::new(meshgate_binary())
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stderr) =
        run("policies:\n  - name: a\n    rego: {files: [x.rego]}\n    mode: block\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("policies[0].mode: unknown variant `block`"),
        "{stderr}"
    );

    let broken = dir.path().join("broken.rego");
    std::fs::write(&broken, "package broken\ndeny contains msg if {\n").unwrap();
    let (code, stderr) = run(&format!(
        "tls: {{stateDir: {}}}\npolicies:\n  - name: broken\n    rego: {{files: [{}]}}\n",
        dir.path().join("tls").display(),
        broken.display()
    ));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("policy broken:"), "{stderr}");
}

#[test]
fn policy_test_runs_the_policy_library_and_fails_on_a_failing_test() {
    let repo = meshgate_integration::paths::repo_root();
    let out = Command::new(meshgate_binary())
        .args(["policy", "test"])
        .arg(repo.join("policies"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
    assert!(
        stdout.contains("PASS") && stdout.contains("cases.yaml"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.rego"),
        "package p\n\ndeny contains \"no\" if input.object.bad\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p_test.rego"),
        "package p_test\n\nimport data.p\n\ntest_ok if count(p.deny) == 0 with input as {\"object\": {}}\n\ntest_wrong if count(p.deny) == 0 with input as {\"object\": {\"bad\": true}}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("cases.yaml"),
        "policies: [{name: p, rego: {files: [p.rego]}}]\ncases:\n  - name: expects the wrong thing\n    object: {apiVersion: v1, kind: Pod, metadata: {name: x}, bad: true, spec: {runtimeClassName: spin}}\n    expect: allowed\n",
    )
    .unwrap();
    let out = Command::new(meshgate_binary())
        .args(["policy", "test"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("PASS") && stdout.contains("data.p_test.test_ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL") && stdout.contains("data.p_test.test_wrong"),
        "{stdout}"
    );
    assert!(
        stdout.contains("expected allowed, got denied: Pod default/x: [p] no"),
        "{stdout}"
    );
    assert!(stdout.ends_with("1 passed, 2 failed\n"), "{stdout}");
}
