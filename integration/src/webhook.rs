//! The real `meshgate serve` process over TLS, with a client that trusts its CA.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value as Json;

use crate::paths;
use crate::ports::free_port;
use crate::process::Process;

/// A running webhook. Dropping it stops the process.
pub struct Webhook {
    process: Process,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The CA the client trusts (the development CA unless the config names certificate files).
    pub ca: PathBuf,
    client: reqwest::blocking::Client,
    dir: tempfile::TempDir,
}

/// Builds the `meshgate` binary's path: `MESHGATE_BIN`, else `target/debug/meshgate`.
pub fn meshgate_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MESHGATE_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| paths::repo_root().join("target"));
    let path = target.join("debug/meshgate");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p meshgate-admission` (make test does)",
        path.display()
    );
    path
}

/// An HTTPS client that trusts only `ca`.
pub fn client_trusting(ca: &Path) -> reqwest::blocking::Client {
    client_with_identity(ca, None)
}

/// An HTTPS client that trusts only `ca` and, with `identity` (PEM certificate chain and
/// private key, concatenated), presents that client certificate.
pub fn client_with_identity(ca: &Path, identity: Option<&[u8]>) -> reqwest::blocking::Client {
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()));
    let mut builder = reqwest::blocking::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("CA certificate")])
        .timeout(Duration::from_secs(30));
    if let Some(identity) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(identity).expect("client identity"));
    }
    builder.build().expect("building an HTTPS client")
}

impl Webhook {
    /// Starts `meshgate serve` with `config` (YAML; `{{repo}}` becomes the repository root,
    /// `{{dir}}` a temporary directory the webhook owns). The listen address is a free port;
    /// with no certificate files configured, the development CA goes to `{{dir}}/tls`.
    /// Waits for `/readyz`.
    pub fn start(config: &str) -> Webhook {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = config
            .replace("{{repo}}", &paths::repo_root().display().to_string())
            .replace("{{dir}}", &dir.path().display().to_string());
        let with_tls = if text.contains("\ntls:") || text.starts_with("tls:") {
            text
        } else {
            format!("{text}\ntls:\n  stateDir: {}/tls\n", dir.path().display())
        };
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, &with_tls).expect("writing the config");
        Self::start_file(&config_path, dir, &dir_ca(&with_tls), free_port())
    }

    /// Starts `meshgate serve --config path --listen 127.0.0.1:port`; `ca` is the CA to
    /// trust, `dir` receives the log.
    pub fn start_file(config_path: &Path, dir: tempfile::TempDir, ca: &Path, port: u16) -> Webhook {
        Self::start_file_with_identity(config_path, dir, ca, port, None)
    }

    /// [`Webhook::start_file`] for a webhook that requires client certificates
    /// (`tls.clientCaFile`): its client presents `identity` (PEM chain and key).
    pub fn start_file_with_identity(
        config_path: &Path,
        dir: tempfile::TempDir,
        ca: &Path,
        port: u16,
        identity: Option<&[u8]>,
    ) -> Webhook {
        let mut command = Command::new(meshgate_binary());
        command
            .arg("serve")
            .arg("--config")
            .arg(config_path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env(
                "RUST_LOG",
                std::env::var("MESHGATE_WEBHOOK_LOG").unwrap_or_else(|_| "info".into()),
            );
        let mut process =
            Process::spawn("meshgate serve", command, &dir.path().join("meshgate.log"));
        let url = format!("https://127.0.0.1:{port}");
        // The CA appears once the server has generated it.
        process
            .wait_until(Duration::from_secs(30), || ca.is_file())
            .unwrap_or_else(|e| panic!("{e}"));
        let client = client_with_identity(ca, identity);
        process
            .wait_until(Duration::from_secs(60), || {
                client
                    .get(format!("{url}/readyz"))
                    .send()
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            })
            .unwrap_or_else(|e| panic!("{e}"));
        Webhook {
            process,
            url,
            ca: ca.to_path_buf(),
            client,
            dir,
        }
    }

    /// The client that trusts the webhook's CA.
    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    /// The webhook's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Posts a body to `/validate`; returns the status and body text.
    pub fn post(&self, body: impl Into<reqwest::blocking::Body>) -> (u16, String) {
        self.post_to("/validate", body)
    }

    /// Posts a body to `path` (`/validate`, `/mutate`); returns the status and body text.
    pub fn post_to(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> (u16, String) {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}\nlog:\n{}", self.process.log_tail(20)));
        let status = response.status().as_u16();
        (status, response.text().unwrap_or_default())
    }

    /// Posts an AdmissionReview wrapping `request`; returns its `response`, checking that the
    /// answer is an admission.k8s.io/v1 AdmissionReview echoing the uid.
    pub fn review(&self, request: &Json) -> Json {
        self.review_at("/validate", request)
    }

    /// [`Webhook::review`] at `path` (`/mutate`).
    pub fn review_at(&self, path: &str, request: &Json) -> Json {
        let (status, body) = self.post_to(path, review_of(request).to_string());
        response_of(status, &body, request)
    }

    /// GETs a path; returns status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
        (
            response.status().as_u16(),
            response.text().unwrap_or_default(),
        )
    }

    /// The process log.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.process.exited().is_none()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The process's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:") * 1024
    }

    /// The process's resident memory now (`VmRSS`), in bytes.
    pub fn rss(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:") * 1024
    }

    /// CPU time the process has used so far ([`crate::process::cpu_time`]).
    pub fn cpu_time(&self) -> Duration {
        crate::process::cpu_time(self.pid())
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Shapes of a hostile review, each a Pod on wasmtime whose body is as large as allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// One array of zeros: a million and a half values, the most a body can hold.
    Zeros,
    /// Short strings, just under the webhook's default value budget (50 000), so the review
    /// passes parsing and reaches the policies: the largest tree a review can make them judge.
    Strings,
    /// Thousands of containers as the API server sends them (its defaults filled in), just under
    /// the value budget: every policy judges every container, and every message names each.
    Containers,
}

/// An AdmissionReview of `bytes` bytes (at most; within a few bytes) shaped as `shape`.
pub fn hostile_review(uid: &str, shape: Hostile, bytes: usize) -> String {
    let mut review = sample_review(uid, false, Some("wasmtime"));
    if shape == Hostile::Containers {
        // Ten values a container; the rest of the request holds a few dozen.
        let containers: Vec<Json> = (0..4_950)
            .map(|i| {
                serde_json::json!({
                    "name": format!("c{i}"),
                    "image": format!("ghcr.io/acme/app-{i}:1"),
                    "imagePullPolicy": "IfNotPresent",
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "securityContext": {"allowPrivilegeEscalation": false},
                })
            })
            .collect();
        review["request"]["object"]["spec"]["containers"] = Json::Array(containers);
        let text = review.to_string();
        assert!(text.len() <= bytes, "{} bytes of containers", text.len());
        return text;
    }
    review["request"]["object"]["spec"]["containers"][0]["args"] = serde_json::json!(["FILL"]);
    let text = review.to_string();
    let room = bytes.saturating_sub(text.len());
    let fill = match shape {
        Hostile::Containers => String::new(),
        Hostile::Zeros => "0,".repeat(room / 2).trim_end_matches(',').to_string(),
        Hostile::Strings => {
            // Each element is `"x…x",`; the count stays 200 under the budget (the rest of the
            // request holds a few dozen values).
            let count = 49_800;
            let len = (room / count).saturating_sub(3).max(1);
            let element = format!("\"{}\"", "x".repeat(len));
            vec![element; count].join(",")
        }
    };
    text.replacen("\"FILL\"", &fill, 1)
}

/// The CA file a config's server will present: `tls.caFile`-less configs with certificate
/// files are handled by the caller through [`Webhook::start_file`].
fn dir_ca(config: &str) -> PathBuf {
    let state_dir = config
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("stateDir:")
                .map(|s| s.trim().to_string())
        })
        .expect("the config names tls.stateDir (Webhook::start adds it when tls is absent)");
    PathBuf::from(state_dir).join("ca.crt")
}

/// An AdmissionReview `request` for `object` (a Pod or a workload), as the API server sends it.
pub use meshgate_admission::policy_test::admission_request as request;

/// The AdmissionReview the API server sends for `request`.
pub fn review_of(request: &Json) -> Json {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request,
    })
}

/// The `response` of a webhook's answer (HTTP `status`, `body`) to `request`, checking that the
/// answer is an admission.k8s.io/v1 AdmissionReview echoing the uid.
pub fn response_of(status: u16, body: &str, request: &Json) -> Json {
    assert_eq!(status, 200, "{body}");
    let answer: Json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{body}");
    assert_eq!(answer["kind"], "AdmissionReview", "{body}");
    assert_eq!(answer["response"]["uid"], request["uid"], "{body}");
    answer["response"].clone()
}

/// `object` with the JSON Patch of a `/mutate` answer applied; the object unchanged when the
/// answer has no patch.
pub fn patched(object: &Json, response: &Json) -> Json {
    use base64::Engine as _;
    let Some(text) = response["patch"].as_str() else {
        return object.clone();
    };
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("the patch is base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("the patch is JSON Patch");
    let mut object = object.clone();
    json_patch::patch(&mut object, &patch).expect("the patch applies");
    object
}

/// A whole AdmissionReview creating a Pod on wasmtime in namespace `demo`: one container with
/// limits and a pinned image from ghcr.io, privileged or not. Used by `make run` and
/// `make bench`.
pub fn sample_review(uid: &str, privileged: bool, runtime_class: Option<&str>) -> Json {
    sample_review_of(
        uid,
        privileged,
        runtime_class,
        "ghcr.io/meshgate/hello@sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
    )
}

/// [`sample_review`] with another image.
pub fn sample_review_of(
    uid: &str,
    privileged: bool,
    runtime_class: Option<&str>,
    image: &str,
) -> Json {
    let mut spec = serde_json::json!({
        "containers": [{
            "name": "app",
            "image": image,
            "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
            "securityContext": {"privileged": privileged, "allowPrivilegeEscalation": false},
        }],
    });
    if let Some(class) = runtime_class {
        spec["runtimeClassName"] = serde_json::json!(class);
    }
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hello", "namespace": "demo", "labels": {"app": "hello"}},
        "spec": spec,
    });
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request(uid, "CREATE", &pod, None),
    })
}
