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

/// A container with limits; `allowPrivilegeEscalation: false` unless `security` says otherwise,
/// as the `privileged` starter requires of every container.
fn container(name: &str, image: &str, mut security: Json) -> Json {
    if security.get("allowPrivilegeEscalation").is_none() {
        security["allowPrivilegeEscalation"] = json!(false);
    }
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
            "containers": [{"name": "report", "image": pinned, "securityContext": {"allowPrivilegeEscalation": false}}],
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
    let response = client_trusting(&webhook.ca)
        .post(format!("{}/validate", webhook.url))
        .body(huge)
        .send()
        .unwrap();
    let (status, body) = (response.status().as_u16(), response.text().unwrap());
    assert_eq!(status, 413);
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
        metrics.contains(r#"meshgate_admission_errors_total{reason="bad_request"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"meshgate_admission_errors_total{reason="too_large"} 1"#),
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

/// What a client reads back from a `/validate` post: status and body, or the transport error.
fn post_raw(
    client: &reqwest::blocking::Client,
    url: &str,
    body: reqwest::blocking::Body,
) -> Result<(u16, String), String> {
    let response = client
        .post(format!("{url}/validate"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    Ok((status, response.text().map_err(|e| format!("{e:?}"))?))
}

/// A reader that yields `len` bytes of `b'x'` in 64 KiB pieces: a body without a known length
/// (sent chunked), or a slow one when `gate` holds it back after `before_gate` bytes.
struct Filler {
    left: usize,
    before_gate: usize,
    gate: Option<std::sync::mpsc::Receiver<()>>,
}

impl std::io::Read for Filler {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.before_gate == 0
            && let Some(gate) = self.gate.take()
        {
            let _ = gate.recv();
        }
        let mut n = buf.len().min(self.left).min(64 * 1024);
        if self.gate.is_some() {
            n = n.min(self.before_gate);
        }
        buf[..n].fill(b'x');
        self.left -= n;
        self.before_gate = self.before_gate.saturating_sub(n);
        Ok(n)
    }
}

/// An 8 MiB body, with and without a Content-Length: the client reads a 413 with a one-line
/// reason (the server reads the rest of the body before answering, so the connection is not
/// reset under the answer), and the connection stays usable.
#[test]
fn an_oversized_body_gets_a_413_the_client_can_read() {
    let webhook = Webhook::start(STARTER);
    let client = client_trusting(&webhook.ca);
    let eight = 8 * 1024 * 1024;
    for round in 0..3 {
        let sized = post_raw(&client, &webhook.url, vec![b'x'; eight].into());
        let (status, body) =
            sized.unwrap_or_else(|e| panic!("round {round}, sized: no answer: {e}"));
        assert_eq!(status, 413, "{body}");
        assert_eq!(body, "request body exceeds the limit of 3145728 bytes\n");

        let chunked = reqwest::blocking::Body::new(Filler {
            left: eight,
            before_gate: 0,
            gate: None,
        });
        let (status, body) = post_raw(&client, &webhook.url, chunked)
            .unwrap_or_else(|e| panic!("round {round}, chunked: no answer: {e}"));
        assert_eq!(status, 413, "{body}");
        assert!(body.len() < 100, "{body}");
    }
    // The same client goes on with a normal review.
    let bad = privileged_pod("web", Some("wasmtime"), "app", "ghcr.io/acme/web:1");
    assert_eq!(
        webhook.review(&request("after-413", "CREATE", &bad, None))["allowed"],
        false
    );
    let (_, metrics) = webhook.get("/metrics");
    assert!(
        metrics.contains(r#"meshgate_admission_errors_total{reason="too_large"} 6"#),
        "{metrics}"
    );
}

/// Four maximum-size hostile reviews at once, twice over: one array of 1.5 million zeros
/// (refused at the value budget, with the uid) and 50 000 strings (just within the budget:
/// every policy judges it). The real process's peak RSS stays under 128 MiB.
#[test]
fn peak_memory_stays_bounded_under_concurrent_hostile_reviews() {
    use meshgate_integration::webhook::{Hostile, hostile_review};
    let webhook = Webhook::start(&format!(
        "{STARTER}\nlimits:\n  maxConcurrentReviews: 4\n  reviewTimeout: 30s\n  policyTimeout: 20s\n"
    ));
    let max = 3 * 1024 * 1024;
    let baseline = webhook.peak_rss();
    let mut answers = Vec::new();
    for (shape, round) in [
        (Hostile::Zeros, 0),
        (Hostile::Strings, 1),
        (Hostile::Zeros, 2),
    ] {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let client = webhook.client().clone();
                let url = webhook.url.clone();
                let uid = format!("hostile-{round}-{i}");
                let body = hostile_review(&uid, shape, max - 64);
                assert!(body.len() <= max, "{}", body.len());
                std::thread::spawn(move || (shape, uid, post_raw(&client, &url, body.into())))
            })
            .collect();
        answers.extend(handles.into_iter().map(|h| h.join().unwrap()));
    }
    let peak = webhook.peak_rss();
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    eprintln!(
        "peak RSS {:.1} MiB (at start {:.1} MiB)",
        mib(peak),
        mib(baseline)
    );
    assert!(
        peak <= 128 * 1024 * 1024,
        "peak RSS {:.1} MiB over 128 MiB (at start {:.1} MiB)",
        mib(peak),
        mib(baseline)
    );
    for (shape, uid, answer) in answers {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 200, "{shape:?}: {body}");
        let answer: Json = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["response"]["uid"], uid);
        if shape == Hostile::Zeros {
            assert_eq!(answer["response"]["allowed"], false, "{body}");
            assert!(
                body.contains("more than 50000 JSON values"),
                "{shape:?}: {body}"
            );
        } else {
            // Judged by the policies (allowed-registries denies its ghcr.io/meshgate image).
            assert_ne!(
                answer["response"]["status"]["reason"], "InvalidRequest",
                "{body}"
            );
            assert!(body.contains("[allowed-registries]"), "{body}");
        }
    }
}

/// Reviews wait for their share of `limits.maxBytesInFlight` as their body is read; one
/// that cannot get it within half its deadline gets 503, and the budget frees up once the
/// review holding it ends.
#[test]
fn reviews_over_the_in_flight_budget_wait_then_get_503() {
    let webhook = Webhook::start(&format!(
        "{STARTER}\nlimits:\n  maxBodyBytes: 1048576\n  maxBytesInFlight: 1048576\n  reviewTimeout: 1s\n"
    ));
    // A slow client sends all but 1 KiB of a 1 MiB body and stalls: as its bytes arrived it
    // reserved the whole budget.
    let (release, gate) = std::sync::mpsc::channel();
    let slow = {
        let client = client_trusting(&webhook.ca);
        let url = webhook.url.clone();
        std::thread::spawn(move || {
            let body = Filler {
                left: 1 << 20,
                before_gate: (1 << 20) - 1024,
                gate: Some(gate),
            };
            post_raw(&client, &url, reqwest::blocking::Body::sized(body, 1 << 20))
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let p = pod(
        "web",
        Some("wasmtime"),
        json!([container("app", "ghcr.io/acme/web:1", json!({}))]),
    );
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request("queued", "CREATE", &p, None)});
    let started = Instant::now();
    let (status, body) = post_raw(
        &client_trusting(&webhook.ca),
        &webhook.url,
        review.to_string().into(),
    )
    .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many reviews in flight"), "{body}");
    // It waited half its deadline (500 ms) for the budget.
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    let _ = release.send(());
    let slow = slow.join().unwrap();
    // The slow review ran out of its deadline while its body was still arriving.
    assert!(
        slow.as_ref().map_or(true, |(status, _)| *status == 400),
        "{slow:?}"
    );
    // The budget is free again.
    let (status, body) = webhook.post(review.to_string());
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = webhook.get("/metrics");
    assert!(
        metrics.contains(r#"meshgate_admission_errors_total{reason="busy"} 1"#),
        "{metrics}"
    );
}

/// The `kind` label of the review counter comes from a fixed set: 300 unique 10 KB kinds
/// leave `/metrics` small.
#[test]
fn metric_labels_do_not_grow_with_the_kinds_sent() {
    let webhook = Webhook::start(STARTER);
    let p = pod(
        "web",
        None,
        json!([container("app", "ghcr.io/acme/web:1", json!({}))]),
    );
    let (_, before) = webhook.get("/metrics");
    for i in 0..300 {
        let mut r = request(&format!("kind-{i}"), "CREATE", &p, None);
        r["kind"]["kind"] = json!(format!("{i:05}{}", "K".repeat(10_000)));
        let response = webhook.review(&r);
        assert_eq!(response["allowed"], true, "{response}");
    }
    let (_, after) = webhook.get("/metrics");
    assert!(
        after.len() < before.len() + 4096,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(
        after.contains(r#"meshgate_admission_reviews_total{kind="other",decision="skipped"} 300"#),
        "{after}"
    );
    // The decision log names the kind, cut short.
    let log = webhook.log();
    let line = log.lines().find(|l| l.contains("kind-7")).unwrap();
    assert!(line.len() < 2000, "{} bytes", line.len());
}

/// A test PKI: a CA and a client certificate it signed, as PEM.
struct ClientPki {
    ca_pem: String,
    identity: Vec<u8>,
}

fn client_pki(name: &str) -> ClientPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client
        .distinguished_name
        .push(DnType::CommonName, format!("{name} client"));
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = client.signed_by(&key, &issuer).unwrap();
    ClientPki {
        ca_pem: ca_cert.pem(),
        identity: format!("{}{}", cert.pem(), key.serialize_pem()).into_bytes(),
    }
}

/// With `tls.clientCaFile`, a client without a certificate, or with one from another CA, is
/// refused at the TLS handshake on every path; the API server's certificate gets through.
/// `probeListen` serves the probes and metrics over plain HTTP, and no reviews.
#[test]
fn client_certificates_are_required_when_a_client_ca_is_configured() {
    use meshgate_integration::webhook::client_with_identity;
    let trusted = client_pki("api-server");
    let stranger = client_pki("stranger");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.crt");
    std::fs::write(&ca_file, &trusted.ca_pem).unwrap();
    let probe_port = free_port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "probeListen: 127.0.0.1:{probe_port}\ntls:\n  stateDir: {tls}\n  clientCaFile: {ca}\n{STARTER}",
            tls = dir.path().join("tls").display(),
            ca = ca_file.display(),
        )
        .replace("{{repo}}", &meshgate_integration::paths::repo_root().display().to_string()),
    )
    .unwrap();
    let server_ca = dir.path().join("tls/ca.crt");
    let webhook = Webhook::start_file_with_identity(
        &config,
        dir,
        &server_ca,
        free_port(),
        Some(&trusted.identity),
    );

    // The API server's certificate: reviews are judged.
    let bad = privileged_pod("web", Some("wasmtime"), "app", "ghcr.io/acme/web:1");
    assert_eq!(
        webhook.review(&request("mtls-1", "CREATE", &bad, None))["allowed"],
        false
    );

    // No certificate, or another CA's: refused before any HTTP, on every path.
    for (who, client) in [
        ("no certificate", client_trusting(&webhook.ca)),
        (
            "another CA's certificate",
            client_with_identity(&webhook.ca, Some(&stranger.identity)),
        ),
    ] {
        for path in ["/validate", "/healthz", "/metrics"] {
            let result = client.get(format!("{}{path}", webhook.url)).send();
            assert!(result.is_err(), "{who} reached {path}: {result:?}");
        }
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request("mtls-2", "CREATE", &bad, None)});
        let result = post_raw(&client, &webhook.url, review.to_string().into());
        assert!(result.is_err(), "{who} got an answer: {result:?}");
    }
    assert!(
        webhook.log().contains("clients must present a certificate"),
        "{}",
        webhook.log()
    );

    // The probe listener: plain HTTP, probes and metrics only.
    let plain = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let probes = format!("http://127.0.0.1:{probe_port}");
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = plain.get(format!("{probes}{path}")).send().unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let response = plain
        .post(format!("{probes}/validate"))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// How many sockets a test may open: `want`, or fewer when the open-file limit is low (CI
/// runners often allow 1024), keeping room for the rest of the test process.
fn socket_budget(want: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(1024usize);
    want.min(soft.saturating_sub(200))
}

/// Whether a socket the server should have closed is closed by `deadline`: a read ends (EOF or
/// reset) instead of timing out.
fn closed_by(
    read: &mut impl std::io::Read,
    set_timeout: impl Fn(Duration),
    deadline: Instant,
) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    set_timeout(left.max(Duration::from_millis(10)));
    let mut buf = [0u8; 512];
    loop {
        match read.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

const FRONT_DOOR: &str =
    "limits:\n  maxConnections: 128\n  handshakeTimeout: 500ms\n  idleTimeout: 500ms\n";

/// Thousands of TLS connections that send half a request head (HTTP/1.1) or half a preface
/// (HTTP/2) and stop: each is closed within `limits.idleTimeout` of its handshake, at most `limits.maxConnections` are held at once (the
/// process's memory grows by a few MiB, not ~23 KiB per socket), and a real review is still
/// answered in the middle of the flood.
#[test]
fn idle_connections_are_closed_and_their_number_capped() {
    use rustls::pki_types::pem::PemObject;
    let webhook = Webhook::start(&format!("{STARTER}\n{FRONT_DOOR}"));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(&webhook.ca).unwrap())
        .unwrap();
    let config = |alpn: &[u8]| {
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        std::sync::Arc::new(config)
    };
    let (h1, h2) = (config(b"http/1.1"), config(b"h2"));
    let address: std::net::SocketAddr = webhook.url.trim_start_matches("https://").parse().unwrap();
    let count = socket_budget(2_000);
    let baseline = webhook.rss();
    let review = sample_body("in-the-flood");
    let mut legit = None;
    let mut streams = Vec::with_capacity(count);
    let started = Instant::now();
    for i in 0..count {
        let tcp = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(20)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let server = rustls::pki_types::ServerName::IpAddress(address.ip().into());
        // One in ten negotiates HTTP/2 and sends half its preface.
        let (config, start) = if i % 10 == 0 {
            (&h2, b"PRI * HTTP/2.0\r\n".as_slice())
        } else {
            (&h1, b"POST /validate HTTP/1.1\r\nHost: x\r\n".as_slice())
        };
        let connection = rustls::ClientConnection::new(config.clone(), server).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        // Completes the handshake (waiting for a free connection slot), then stalls.
        std::io::Write::write_all(&mut tls, start)
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        std::io::Write::flush(&mut tls).unwrap();
        streams.push(tls);
        if i == count / 2 {
            let client = webhook.client().clone();
            let url = webhook.url.clone();
            let body = review.clone();
            legit = Some(std::thread::spawn(move || {
                post_raw(&client, &url, body.into())
            }));
        }
    }
    let opened = started.elapsed();
    let deadline = Instant::now() + Duration::from_millis(500) + Duration::from_secs(3);
    let open: Vec<usize> = streams
        .iter_mut()
        .enumerate()
        .filter_map(|(i, tls)| {
            let sock = tls.sock.try_clone().unwrap();
            let closed = closed_by(tls, |t| sock.set_read_timeout(Some(t)).unwrap(), deadline);
            (!closed).then_some(i)
        })
        .collect();
    let growth = webhook.peak_rss().saturating_sub(baseline);
    eprintln!(
        "{count} connections in {opened:?}; peak RSS grew {:.1} MiB",
        growth as f64 / 1048576.0
    );
    assert!(
        open.is_empty(),
        "{} of {count} idle connections still open 3.5 s after the last handshake (first: {:?})",
        open.len(),
        &open[..open.len().min(5)]
    );
    assert!(
        growth < 16 * 1024 * 1024,
        "peak RSS grew {:.1} MiB with {count} idle connections",
        growth as f64 / 1048576.0
    );
    let (status, body) = legit.unwrap().join().unwrap().unwrap();
    assert_eq!(status, 200, "{body}");
}

/// Thousands of connections that send the first 5 bytes of a ClientHello and stop: each is
/// dropped within `limits.handshakeTimeout`, and no more than `limits.maxConnections` handshakes
/// are held at once.
#[test]
fn stalled_handshakes_are_dropped_and_their_number_capped() {
    let webhook = Webhook::start(&format!("{STARTER}\n{FRONT_DOOR}"));
    let address: std::net::SocketAddr = webhook.url.trim_start_matches("https://").parse().unwrap();
    let count = socket_budget(2_000);
    let baseline = webhook.rss();
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let mut tcp =
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(20)).unwrap();
        // A TLS record header announcing a 512-byte handshake message that never comes.
        std::io::Write::write_all(&mut tcp, &[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
        sockets.push(tcp);
    }
    let deadline = Instant::now() + Duration::from_millis(500) + Duration::from_secs(3);
    let open = sockets
        .iter()
        .filter(|tcp| {
            let mut reader = *tcp;
            !closed_by(
                &mut reader,
                |t| tcp.set_read_timeout(Some(t)).unwrap(),
                deadline,
            )
        })
        .count();
    let growth = webhook.peak_rss().saturating_sub(baseline);
    eprintln!(
        "{count} stalled handshakes; peak RSS grew {:.1} MiB",
        growth as f64 / 1048576.0
    );
    assert_eq!(open, 0, "{open} of {count} stalled handshakes still open");
    assert!(
        growth < 12 * 1024 * 1024,
        "peak RSS grew {:.1} MiB with {count} stalled handshakes",
        growth as f64 / 1048576.0
    );
    // The webhook serves again once they are gone.
    let (status, body) = webhook.post(sample_body("after-handshakes"));
    assert_eq!(status, 200, "{body}");
}

/// A whole AdmissionReview the starter policies allow.
fn sample_body(uid: &str) -> String {
    let p = pod(
        "web",
        Some("wasmtime"),
        json!([container("app", "ghcr.io/acme/web:1", json!({}))]),
    );
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request(uid, "CREATE", &p, None)}).to_string()
}

/// A body of unknown length that trickles one byte a second until `stop` is set.
struct Trickle {
    sent: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.sent > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        if self.stop.load(std::sync::atomic::Ordering::Relaxed) || self.sent >= 30 || buf.is_empty()
        {
            return Ok(0);
        }
        buf[0] = b'{';
        self.sent += 1;
        Ok(1)
    }
}

/// `n` clients each sending a body a byte a second (declaring `declared` bytes, or chunked)
/// until `stop`; each thread returns what its client got.
fn slow_senders(
    webhook: &Webhook,
    n: usize,
    declared: Option<u64>,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<Result<(u16, String), String>>> {
    (0..n)
        .map(|_| {
            let client = client_trusting(&webhook.ca);
            let url = webhook.url.clone();
            let body = Trickle {
                sent: 0,
                stop: stop.clone(),
            };
            std::thread::spawn(move || {
                let body = match declared {
                    Some(len) => reqwest::blocking::Body::sized(body, len),
                    None => reqwest::blocking::Body::new(body),
                };
                post_raw(&client, &url, body)
            })
        })
        .collect()
}

/// `count` real reviews, `pause` apart: each one's status, time taken and body.
fn reviews_meanwhile(
    webhook: &Webhook,
    count: usize,
    pause: Duration,
) -> Vec<(u16, Duration, String)> {
    let client = client_trusting(&webhook.ca);
    (0..count)
        .map(|i| {
            let started = Instant::now();
            let (status, body) = post_raw(
                &client,
                &webhook.url,
                sample_body(&format!("legit-{i}")).into(),
            )
            .unwrap();
            let took = started.elapsed();
            std::thread::sleep(pause);
            (status, took, body)
        })
        .collect()
}

/// Every real review was admitted with 200 within a second.
fn assert_answered_at_once(statuses: &[(u16, Duration, String)]) {
    for (status, took, body) in statuses {
        assert_eq!(*status, 200, "after {took:?}: {body}");
        assert!(*took < Duration::from_secs(1), "{took:?}");
    }
}

/// Thirty clients sending chunked bodies a byte a second, with the default limits: they hold
/// little of `maxBytesInFlight` (a body of unknown length reserves as it arrives) and are cut
/// off after `bodyReadTimeout` (2 s), so real reviews sent meanwhile are all answered.
#[test]
fn slow_chunked_bodies_do_not_starve_reviews() {
    let webhook = Webhook::start(STARTER);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let began = Instant::now();
    let slow = slow_senders(&webhook, 30, None, &stop);
    std::thread::sleep(Duration::from_millis(500));
    // Spread over the time the slow bodies would hold their share.
    let statuses = reviews_meanwhile(&webhook, 8, Duration::from_millis(300));
    // Past the 2 s body timeout (the slow bodies were sent for longer), within the 4 s
    // review deadline.
    std::thread::sleep(Duration::from_millis(3_500).saturating_sub(began.elapsed()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for handle in slow {
        let _ = handle.join().unwrap();
    }
    assert_answered_at_once(&statuses);
    // The slow bodies were cut off by the body timeout, not the 4 s review deadline.
    let log = webhook.log();
    let cut = log
        .lines()
        .filter(|l| l.contains("request body not received within 2s"))
        .count();
    assert_eq!(cut, 30, "{}", webhook.log());
}

/// Eight clients declaring a maximum-size body (`Content-Length: 3 MiB`, four of which would
/// take the whole default `maxBytesInFlight` if reserved up front) and then sending a byte a
/// second: a body reserves as its bytes arrive, so real reviews sent meanwhile are answered
/// at once.
#[test]
fn stalled_declared_bodies_do_not_starve_reviews() {
    let webhook = Webhook::start(STARTER);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow = slow_senders(&webhook, 8, Some(3 << 20), &stop);
    std::thread::sleep(Duration::from_millis(500));
    let statuses = reviews_meanwhile(&webhook, 5, Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for handle in slow {
        let _ = handle.join().unwrap();
    }
    assert_answered_at_once(&statuses);
}

/// Text from the request reaches answers and logs cut and escaped: an `operation` carrying a
/// forged log line writes no raw newline to the log, a 1 MB `dryRun` string makes neither a
/// large answer nor a large log line, and a denial listing a thousand containers is cut to
/// 16 KiB, saying how much was left out (warnings likewise).
#[test]
fn request_text_is_cut_and_escaped_in_answers_and_logs() {
    let webhook = Webhook::start(&format!(
        "{STARTER}\nlimits:\n  reviewTimeout: 30s\n  policyTimeout: 20s\n"
    ));
    let p = pod(
        "web",
        Some("wasmtime"),
        json!([container("app", "ghcr.io/acme/web:1", json!({}))]),
    );
    let forged = "X\n2026-12-02T00:21:00.000000Z  INFO meshgate_admission::server: review uid=forged kind=Pod decision=\"allowed\"";
    for (uid, field, value) in [
        ("forged", "operation", json!(forged)),
        ("huge-dry-run", "dryRun", json!("d".repeat(1_000_000))),
        ("huge-operation", "operation", json!("o".repeat(1_000_000))),
    ] {
        let mut r = request(uid, "CREATE", &p, None);
        r[field] = value;
        let review =
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": r});
        let (status, body) = webhook.post(review.to_string());
        assert_eq!(status, 200, "{uid}: {body}");
        assert!(body.len() < 1024, "{uid}: answer of {} bytes", body.len());
        let answer: Json = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["response"]["uid"], uid);
        assert_eq!(
            answer["response"]["status"]["reason"], "InvalidRequest",
            "{body}"
        );
        assert!(!message(&answer["response"]).contains('\n'), "{body}");
    }
    let log = webhook.log();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-02T00:21:00")),
        "a forged line reached the log:\n{log}"
    );
    assert!(log.contains(r"X\n2026-12-02T00:21:00"), "{log}");
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");

    // A thousand containers from a registry that is not allowed, none pinned by digest.
    let containers: Vec<Json> = (0..1_000)
        .map(|i| {
            container(
                &format!("c{i}"),
                &format!("docker.io/evil/img{i:04}:1"),
                json!({}),
            )
        })
        .collect();
    let wide = pod("wide", Some("wasmtime"), json!(containers));
    let response = webhook.review(&request("wide", "CREATE", &wide, None));
    assert_eq!(response["allowed"], false);
    let text = message(&response);
    assert!(
        text.len() <= 16 * 1024,
        "status.message of {} bytes",
        text.len()
    );
    assert!(text.contains("more bytes)"), "{text}");
    assert!(text.contains("[allowed-registries]"), "{text}");
    let warnings: usize = response["warnings"].as_array().map_or(0, |w| {
        w.iter().map(|w| w.as_str().unwrap_or("").len()).sum()
    });
    assert!(warnings <= 16 * 1024 + 64, "warnings of {warnings} bytes");
}

/// One HTTP/2 frame: 24-bit length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend(payload);
    frame
}

/// Twenty HTTP/2 connections, each keeping 200 `POST /validate` streams open that declare a
/// 1 MB body and never send a byte of it, as fast as the webhook answers them: a body reserves
/// `maxBytesInFlight` only as its bytes arrive, so these hold none of it and queue before no
/// real review, which are all answered at once.
#[test]
fn http2_streams_that_send_no_body_do_not_starve_reviews() {
    use rustls::pki_types::pem::PemObject;
    let webhook = Webhook::start(STARTER);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(&webhook.ca).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let config = std::sync::Arc::new(config);
    let address: std::net::SocketAddr = webhook.url.trim_start_matches("https://").parse().unwrap();
    // HPACK literals without indexing (names and values under 127 bytes).
    let literal = |name: &str, value: &str| {
        let mut field = vec![0, name.len() as u8];
        field.extend(name.as_bytes());
        field.push(value.len() as u8);
        field.extend(value.as_bytes());
        field
    };
    let block: Vec<u8> = [
        (":method", "POST"),
        (":scheme", "https"),
        (":path", "/validate"),
        (":authority", "127.0.0.1"),
        ("content-type", "application/json"),
        ("content-length", "1000000"),
    ]
    .iter()
    .flat_map(|(n, v)| literal(n, v))
    .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood: Vec<_> = (0..20)
        .map(|_| {
            let (config, block, stop, opened) =
                (config.clone(), block.clone(), stop.clone(), opened.clone());
            std::thread::spawn(move || {
                let tcp = std::net::TcpStream::connect(address).unwrap();
                tcp.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let server = rustls::pki_types::ServerName::IpAddress(address.ip().into());
                let connection = rustls::ClientConnection::new(config, server).unwrap();
                let mut tls = rustls::StreamOwned::new(connection, tcp);
                let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
                out.extend(h2_frame(4, 0, 0, &[]));
                let mut next = 1u32;
                // END_HEADERS, no END_STREAM: the body is declared and never comes.
                let mut open = |out: &mut Vec<u8>| {
                    out.extend(h2_frame(1, 4, next, &block));
                    next += 2;
                    opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                };
                for _ in 0..200 {
                    open(&mut out);
                }
                let write = |tls: &mut rustls::StreamOwned<_, _>, out: &mut Vec<u8>| {
                    std::io::Write::write_all(tls, out).is_ok()
                        && std::io::Write::flush(tls).is_ok()
                };
                if !write(&mut tls, &mut out) {
                    return;
                }
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut head = [0u8; 9];
                    match std::io::Read::read_exact(&mut tls, &mut head) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                        Err(_) => return,
                    }
                    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                    let mut payload = vec![0; len];
                    if std::io::Read::read_exact(&mut tls, &mut payload).is_err() {
                        return;
                    }
                    let mut out = Vec::new();
                    match (head[3], head[4] & 1) {
                        (4, 0) => out.extend(h2_frame(4, 1, 0, &[])),
                        (6, 0) => out.extend(h2_frame(6, 1, 0, &payload)),
                        // An answered stream is replaced by a new one (a refused one is not:
                        // the connection is at its stream limit).
                        (1, _) => open(&mut out),
                        (7, _) => return,
                        _ => {}
                    }
                    if !out.is_empty() && !write(&mut tls, &mut out) {
                        return;
                    }
                }
            })
        })
        .collect();
    // Once the streams are open (the first ones time out after `bodyReadTimeout`, 2 s, and
    // are replaced), real reviews come and go.
    std::thread::sleep(Duration::from_millis(1_200));
    let statuses = reviews_meanwhile(&webhook, 10, Duration::from_millis(200));
    let streams = opened.load(std::sync::atomic::Ordering::Relaxed);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for handle in flood {
        let _ = handle.join();
    }
    assert!(streams >= 20 * 200, "only {streams} streams were opened");
    assert_answered_at_once(&statuses);
}
