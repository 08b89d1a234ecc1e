//! meshgate's images in real containers (podman, runc): the webhook image run exactly as
//! istio/webhook/deployment.yaml runs it, and envoy/docker-compose.yaml brought up with
//! podman-compose and replayed as `make run` checks itself. Images are built once per run from
//! target/debug (no second compile); containers are removed even when a test fails, and what a
//! killed run left is removed by the next. The scripts under envoy/images/ are checked here too:
//! where the base image's packages come from, what publishing refuses, what pinning takes.

// Test helpers fail the test by panicking, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use meshgate_integration::devkey::{self, DevKey};
use meshgate_integration::podman::{self, Compose, Container};
use meshgate_integration::webhook::{client_trusting, sample_review, sample_review_of};
use meshgate_integration::{cli, http_client, paths, ports};
use serde_json::Value as Json;

/// The compose stack listens on fixed host ports: one stack at a time.
static STACK: Mutex<()> = Mutex::new(());

fn yaml(path: &Path) -> Json {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A Kubernetes memory quantity ("256Mi", "1G", "1000") in bytes.
fn memory_bytes(quantity: &str) -> u64 {
    let units: [(&str, u64); 6] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = quantity.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * factor;
        }
    }
    quantity.parse().unwrap()
}

/// A Kubernetes CPU quantity ("1", "500m") in thousandths of a CPU.
fn millicpus(quantity: &str) -> u64 {
    match quantity.strip_suffix('m') {
        Some(milli) => milli.parse().unwrap(),
        None => (quantity.parse::<f64>().unwrap() * 1000.0).round() as u64,
    }
}

/// The first line of `file` in process `pid`'s cgroup for `controller`: cgroup v1's controller
/// hierarchy, or the unified one (v2) when the controller has none.
fn cgroup_value(pid: &str, controller: &str, v1_file: &str, v2_file: &str) -> String {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mut unified = None;
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (
            fields.next(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        if controllers.split(',').any(|c| c == controller) {
            for dir in [controllers, controller] {
                let file = format!("/sys/fs/cgroup/{dir}{path}/{v1_file}");
                if let Ok(value) = std::fs::read_to_string(&file) {
                    return value.trim().to_string();
                }
            }
        } else if controllers.is_empty() {
            unified = Some(path.to_string());
        }
    }
    let file = format!("/sys/fs/cgroup{}/{v2_file}", unified.unwrap_or_default());
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{file}: {e}\n{cgroups}"))
        .trim()
        .to_string()
}

/// A cert-manager-style Secret's files (ca.crt, tls.crt, tls.key) for 127.0.0.1, mode 0644 as a
/// Secret volume mounts them.
/// Asserts an answer denies, with `needle` in its message.
fn assert_denied(answer: &Json, needle: &str) {
    assert_eq!(answer["allowed"], false, "{answer}");
    let message = answer["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{needle}: {answer}");
}

fn tls_secret(dir: &Path) -> std::path::PathBuf {
    let files = meshgate_admission::tls::dev_certificate(dir).unwrap();
    for file in [&files.ca, &files.cert, &files.key] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    files.ca
}

#[test]
fn webhook_image_runs_as_the_deployment_does() {
    let built = podman::images();
    let repo = paths::repo_root();
    let deployment = yaml(&repo.join("istio/webhook/deployment.yaml"));
    let configmap = yaml(&repo.join("istio/webhook/configmap.yaml"));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let user = format!(
        "{}:{}",
        pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
    );
    let container_port = container["ports"][0]["containerPort"].as_u64().unwrap();
    let limits = &container["resources"]["limits"];
    let memory = memory_bytes(limits["memory"].as_str().unwrap());
    let millicpus = millicpus(limits["cpu"].as_str().unwrap());

    // The pod's volumes: the ConfigMap's config.yaml, the TLS Secret, emptyDirs as tmpfs.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, configmap["data"]["config.yaml"].as_str().unwrap()).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tls = dir.path().join("tls");
    let ca = tls_secret(&tls);
    let volumes: Vec<&Json> = pod["volumes"].as_array().unwrap().iter().collect();
    let port = ports::free_port();
    let mut args: Vec<String> = vec![
        // Its own network namespace: the container listens on 0.0.0.0:8443 as in a pod, and a
        // free host port reaches it.
        "--network=bridge".into(),
        format!("--publish=127.0.0.1:{port}:{container_port}"),
        "--read-only".into(),
        "--read-only-tmpfs=false".into(),
        format!("--user={user}"),
        "--cap-drop=all".into(),
        "--security-opt=no-new-privileges".into(),
        // resources.limits, as the kubelet sets them: memory without swap, CPU as a CFS quota.
        format!("--memory={memory}"),
        format!("--memory-swap={memory}"),
        format!("--cpus={}.{:03}", millicpus / 1000, millicpus % 1000),
    ];
    for mount in container["volumeMounts"].as_array().unwrap() {
        let name = mount["name"].as_str().unwrap();
        let path = mount["mountPath"].as_str().unwrap();
        let volume = volumes.iter().find(|v| v["name"] == name).unwrap();
        let host = if volume.get("configMap").is_some() {
            assert_eq!(mount["subPath"], "config.yaml");
            config.clone()
        } else if volume.get("secret").is_some() {
            tls.clone()
        } else {
            let size = volume["emptyDir"]["sizeLimit"].as_str().unwrap();
            let size = size.trim_end_matches("i").to_lowercase();
            args.push(format!("--tmpfs={path}:rw,size={size},mode=1777"));
            continue;
        };
        let ro = if mount["readOnly"] == true { ":ro" } else { "" };
        args.push(format!("--volume={}:{path}{ro}", host.display()));
    }
    args.push(format!("meshgate:{}", podman::TAG));
    args.extend(
        container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string()),
    );
    let started = Instant::now();
    let webhook = Container::run("webhook", &args);
    let url = format!("https://127.0.0.1:{port}");
    let client = client_trusting(&ca);
    podman::wait_for("the webhook's /readyz", Duration::from_secs(60), || {
        webhook.assert_running();
        client
            .get(format!("{url}/readyz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", webhook.logs()));
    eprintln!(
        "containers: images built in {built:?}; webhook container ready in {:?}",
        started.elapsed()
    );
    // The probes the Deployment declares answer over TLS.
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        let status = client.get(format!("{url}{path}")).send().unwrap().status();
        assert!(status.is_success(), "{probe} {path}: {status}");
    }

    // A privileged pod is denied by the library's policy, a good one admitted.
    let denied = podman::review(
        &client,
        &url,
        &sample_review("c-1", true, Some("wasmtime"))["request"],
    );
    assert_eq!(denied["allowed"], false, "{denied}");
    let message = denied["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("[privileged]"), "{message}");
    let admitted = podman::review(
        &client,
        &url,
        &sample_review("c-2", false, Some("wasmtime"))["request"],
    );
    assert_eq!(admitted["allowed"], true, "{admitted}");

    // It really ran as the Deployment says: that user, a read-only root, no capabilities.
    assert_eq!(webhook.inspect("{{.Config.User}}"), user);
    assert_eq!(webhook.inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    let pid = webhook.inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(field("Uid:"), ["65532"; 4]);
    assert_eq!(field("CapEff:"), ["0000000000000000"]);
    assert_eq!(field("NoNewPrivs:"), ["1"]);
    // Its limits are the kernel's, in the container's cgroup.
    assert_eq!(
        cgroup_value(&pid, "memory", "memory.limit_in_bytes", "memory.max"),
        memory.to_string()
    );
    let quota = cgroup_value(&pid, "cpu", "cpu.cfs_quota_us", "cpu.max");
    let period = cgroup_value(&pid, "cpu", "cpu.cfs_period_us", "cpu.max");
    // v1: two files; v2: one, "QUOTA PERIOD".
    let quota: u64 = quota.split_whitespace().next().unwrap().parse().unwrap();
    let period: u64 = period.split_whitespace().last().unwrap().parse().unwrap();
    assert_eq!(
        quota * 1000 / period,
        millicpus,
        "CFS quota {quota} per {period}"
    );
    let logs = webhook.logs();
    assert!(logs.contains("policies loaded; ready"), "{logs}");
}

#[test]
fn webhook_image_holds_the_binary_its_libraries_certificates_and_policies_only() {
    podman::images();
    let image = format!("meshgate:{}", podman::TAG);
    let root = podman::podman_ok(&["image", "mount", &image]);
    let root = Path::new(root.trim());
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else {
                files.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let bundle = std::fs::read(root.join("etc/ssl/certs/ca-certificates.crt")).unwrap_or_default();
    let _ = podman::podman().args(["image", "unmount", &image]).output();
    // The CA bundle is Mozilla's as the Makefile's pinned certifi ships it, not the build host's.
    let certifi = podman::run_ok({
        let mut python = std::process::Command::new(paths::repo_root().join(".venv/bin/python"));
        python.args(["-c", "import certifi; print(certifi.where())"]);
        python
    });
    assert!(
        bundle == std::fs::read(certifi.trim()).unwrap(),
        "the image's CA bundle is not {}",
        certifi.trim()
    );
    // The Deployment's runAsUser has a name (tools that look the user up find it).
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    let policies = paths::repo_root().join("policies");
    for file in &files {
        let allowed = file == "usr/bin/meshgate"
            || file == "etc/passwd"
            || file == "etc/group"
            || file == "etc/ssl/certs/ca-certificates.crt"
            // The shared libraries `ldd` names (the loader, libc, libm, libgcc_s).
            || ((file.starts_with("lib/") || file.starts_with("lib64/")) && file.contains(".so"))
            || file
                .strip_prefix("usr/share/meshgate/policies/")
                .is_some_and(|p| policies.join(p).is_file());
        assert!(allowed, "{file} is in the image");
    }
    for needed in [
        "usr/bin/meshgate",
        "etc/ssl/certs/ca-certificates.crt",
        "usr/share/meshgate/policies/rego/privileged/privileged.rego",
        "usr/share/meshgate/policies/rego/lib/kubernetes.rego",
    ] {
        assert!(files.iter().any(|f| f == needed), "{needed} is missing");
    }
    let version = podman::podman_ok(&[
        "run",
        "--rm",
        "--entrypoint=/usr/bin/meshgate",
        &image,
        "--version",
    ]);
    assert!(version.starts_with("meshgate "), "{version}");
    // No shell: nothing runs but meshgate.
    let shell = podman::podman()
        .args(["run", "--rm", "--entrypoint=/bin/sh", &image, "-c", "true"])
        .output()
        .unwrap();
    assert!(!shell.status.success(), "the image has a shell");
}

/// The Makefile's ENVOY_VERSION, the Envoy the tests and the compose image run.
fn envoy_version() -> String {
    std::fs::read_to_string(paths::repo_root().join("Makefile"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("ENVOY_VERSION")
                .map(|v| v.trim_start_matches([' ', ':', '=']).trim().to_string())
        })
        .unwrap()
}

/// The host ports envoy/docker-compose.yaml's services listen on whatever the environment says
/// (the configs under envoy/ name them); the webhook's, the registry's and Redis's move.
const STACK_PORTS: [u16; 4] = [10000, 10001, 10002, 9901];
const LISTENER: &str = "http://127.0.0.1:10000";

/// Free ports for the webhook, the registry and Redis, and the environment that moves them there.
fn moved_ports() -> (u16, u16, u16, Vec<(&'static str, String)>) {
    let (webhook, registry, redis) = (ports::free_port(), ports::free_port(), ports::free_port());
    let env = vec![
        ("MESHGATE_TAG", podman::TAG.to_string()),
        ("MESHGATE_WEBHOOK_PORT", webhook.to_string()),
        ("MESHGATE_REGISTRY_PORT", registry.to_string()),
        ("MESHGATE_REDIS_PORT", redis.to_string()),
    ];
    (webhook, registry, redis, env)
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// What `make compose` prepares: dist/*.wasm exist already; the dev key's JWKS, the webhook's
/// TLS files (the key 0600, the webhook's user's) and the cosign public key under dist/compose/.
fn prepare_stack() -> (DevKey, std::path::PathBuf, std::path::PathBuf) {
    let key = DevKey::load_or_create(&devkey::default_dir()).unwrap();
    let cosign = devkey::default_dir().join("cosign");
    cli::key_pair(&cosign, "ecdsa-p256");
    let compose = paths::dist_dir().join("compose");
    let ca = tls_secret(&compose.join("tls"));
    let tls_key = compose.join("tls/tls.key");
    std::fs::set_permissions(&tls_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    if std::os::unix::fs::chown(&tls_key, Some(65532), Some(65532)).is_err() {
        // Not root: rootless podman maps the container's 65532 in its user namespace.
        let mut chown = podman::podman();
        chown
            .args(["unshare", "chown", "65532:65532"])
            .arg(&tls_key);
        podman::run_ok(chown);
    }
    std::fs::copy(cosign.with_extension("pub"), compose.join("cosign.pub")).unwrap();
    for wasm in ["jwt-auth.wasm", "rate-limit.wasm"] {
        assert!(
            paths::dist_dir().join(wasm).is_file(),
            "dist/{wasm} is missing: make filters"
        );
    }
    (key, cosign.with_extension("key"), ca)
}

#[test]
fn compose_stack_answers_as_make_run_does_and_leaves_nothing_behind() {
    let _stack = STACK.lock().unwrap_or_else(|e| e.into_inner());
    podman::require_free(&STACK_PORTS, "envoy/docker-compose.yaml");
    podman::images();
    let (key, cosign_key, ca) = prepare_stack();
    let file = paths::repo_root().join("envoy/docker-compose.yaml");
    let started = Instant::now();
    let (webhook_port, registry_port, _, env) = moved_ports();
    let mut stack = Compose::up("stack", &file, &[], &env_refs(&env));
    let registry = format!("127.0.0.1:{registry_port}");
    let client = http_client();
    let webhook = client_trusting(&ca);
    let url = &format!("https://127.0.0.1:{webhook_port}");
    podman::wait_for("the stack", Duration::from_secs(60), || {
        stack.assert_running();
        client
            .get(format!("{LISTENER}/healthz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
            && client
                .get(format!("http://{registry}/v2/"))
                .send()
                .is_ok_and(|r| r.status() == 200)
            && webhook
                .get(format!("{url}/readyz"))
                .send()
                .is_ok_and(|r| r.status() == 200)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));
    eprintln!("containers: compose stack up in {:?}", started.elapsed());

    // Envoy is the version the tests run (the Makefile's ENVOY_VERSION), from the local image.
    let info: Json = client
        .get("http://127.0.0.1:9901/server_info")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let version = format!("/{}/", envoy_version());
    assert!(
        info["version"].as_str().unwrap().contains(&version),
        "{}",
        info["version"]
    );
    // The webhook runs with the Deployment's security context, and sees dist/compose/ and its
    // configuration only: not envoy/dev/'s committed demo key, nor the rest of dist/.
    let webhook_container = stack
        .containers()
        .into_iter()
        .find(|c| c.contains("_webhook_"))
        .unwrap();
    let inspect = |format: &str| {
        podman::podman_ok(&["inspect", "--format", format, &webhook_container])
            .trim()
            .to_string()
    };
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", inspect("{{.State.Pid}}"))).unwrap();
    for (field, value) in [
        ("Uid:", "65532\t65532\t65532\t65532"),
        // cap_drop: [ALL] empties the bounding set too (a non-root process has no effective
        // capabilities anyway).
        ("CapEff:", "0000000000000000"),
        ("CapBnd:", "0000000000000000"),
        ("NoNewPrivs:", "1"),
    ] {
        let line = status.lines().find_map(|l| l.strip_prefix(field)).unwrap();
        assert_eq!(line.trim(), value, "{field}");
    }
    assert_eq!(inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    let repo = paths::repo_root();
    let mut sources: Vec<std::path::PathBuf> = inspect("{{range .Mounts}}{{.Source}} {{end}}")
        .split_whitespace()
        .map(|s| std::fs::canonicalize(s).unwrap())
        .collect();
    sources.sort();
    let mut expected = [
        std::fs::canonicalize(repo.join("dist/compose")).unwrap(),
        std::fs::canonicalize(repo.join("envoy/webhook.yaml")).unwrap(),
    ];
    expected.sort();
    assert_eq!(sources, expected);

    // Envoy: no token 401, a token 200 (the upstream sees who), the 11th in a minute 429.
    let without = client.get(format!("{LISTENER}/hello")).send().unwrap();
    assert_eq!(without.status(), 401, "{}", stack.logs());
    let sub = format!("compose-{}", std::process::id());
    let token = key.token(&sub, 600);
    let with = client
        .get(format!("{LISTENER}/hello"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(with.status(), 200, "{}", stack.logs());
    let echoed: Json = with.json().unwrap();
    assert_eq!(echoed["headers"]["x-user"], sub.as_str(), "{echoed}");
    for i in 2..=10 {
        let ok = client
            .get(format!("{LISTENER}/hello"))
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert_eq!(ok.status(), 200, "request {i}");
    }
    let limited = client
        .get(format!("{LISTENER}/hello"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(limited.status(), 429);
    let headers = limited.headers();
    assert_eq!(headers["ratelimit-policy"], "\"per_user\";q=10;w=60");
    assert!(
        headers["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"per_user\";r=0;t="),
        "{headers:?}"
    );
    assert!(headers.contains_key("retry-after"), "{headers:?}");

    // The webhook: a signed artifact in the stack's registry, and an unsigned one.
    let dist = paths::dist_dir();
    let signed = format!("{registry}/meshgate/jwt-auth:{}", podman::TAG);
    let digest = cli::push(&dist.join("jwt-auth.wasm"), &signed);
    cli::sign(&cosign_key, &signed, false);
    let signed_pinned = format!("{registry}/meshgate/jwt-auth@{digest}");
    let unsigned = format!("{registry}/meshgate/rate-limit:{}", podman::TAG);
    cli::push(&dist.join("rate-limit.wasm"), &unsigned);
    let review = |uid: &str, privileged: bool, image: &str| {
        podman::review(
            &webhook,
            url,
            &sample_review_of(uid, privileged, Some("wasmtime"), image)["request"],
        )
    };
    assert_denied(&review("compose-1", true, &signed_pinned), "[privileged]");
    let clean = review("compose-2", false, &signed_pinned);
    assert_eq!(clean["allowed"], true, "{clean}\n{}", stack.logs());
    assert_denied(
        &review("compose-3", false, &unsigned),
        "[image-verification]",
    );

    let stopping = Instant::now();
    let left = stack.down();
    assert!(left.is_empty(), "left behind: {left:?}");
    eprintln!("containers: compose stack down in {:?}", stopping.elapsed());
}

#[test]
fn compose_global_profile_counts_in_redis_through_limitador() {
    let _stack = STACK.lock().unwrap_or_else(|e| e.into_inner());
    podman::require_free(&STACK_PORTS, "envoy/docker-compose.yaml");
    podman::require_free(&[10003], "the global profile");
    podman::images();
    let (key, _, _) = prepare_stack();
    let file = paths::repo_root().join("envoy/docker-compose.yaml");
    let (_, _, redis_port, mut env) = moved_ports();
    env.push(("MESHGATE_ENVOY_CONFIG", "global-ratelimit.yaml".to_string()));
    let mut stack = Compose::up("global", &file, &["global"], &env_refs(&env));
    let client = http_client();
    podman::wait_for("the stack", Duration::from_secs(60), || {
        stack.assert_running();
        client
            .get(format!("{LISTENER}/healthz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
            && std::net::TcpStream::connect(("127.0.0.1", 10003)).is_ok()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.logs()));
    let services = stack.containers();
    for service in ["ratelimit", "redis"] {
        assert!(
            services.iter().any(|s| s.contains(service)),
            "{service} not in {services:?}"
        );
    }
    assert_eq!(
        client
            .get(format!("{LISTENER}/hello"))
            .send()
            .unwrap()
            .status(),
        401
    );
    // ratelimit-config.yaml: 10 a minute per user, counted by the service (its x-rls header).
    let token = key.token(&format!("global-{}", std::process::id()), 600);
    for i in 1..=10 {
        let ok = client
            .get(format!("{LISTENER}/hello"))
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert_eq!(ok.status(), 200, "request {i}\n{}", stack.logs());
    }
    let limited = client
        .get(format!("{LISTENER}/hello"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(limited.status(), 429, "{}", stack.logs());
    // Per user: another subject is still admitted.
    let other = key.token(&format!("global-other-{}", std::process::id()), 600);
    let fresh = client
        .get(format!("{LISTENER}/hello"))
        .bearer_auth(&other)
        .send()
        .unwrap();
    assert_eq!(fresh.status(), 200);
    // The counters live in Redis: it holds keys now (DBSIZE over RESP).
    let mut redis = std::net::TcpStream::connect(("127.0.0.1", redis_port)).unwrap();
    redis
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    std::io::Write::write_all(&mut redis, b"*1\r\n$6\r\nDBSIZE\r\n").unwrap();
    let mut answer = [0u8; 32];
    let n = std::io::Read::read(&mut redis, &mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    let keys: u64 = answer.trim().trim_start_matches(':').parse().unwrap_or(0);
    assert!(keys > 0, "Redis answered {answer:?}");
    let left = stack.down();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn webhook_image_is_exported_pushed_signed_and_pinned() {
    podman::images();
    let repo = paths::repo_root();
    let registry = meshgate_integration::Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cosign.key");
    let publish = |registry: Option<&str>| {
        let mut publish = std::process::Command::new("bash");
        publish
            .arg(repo.join("envoy/images/publish.sh"))
            .args(registry)
            .env("TAG", podman::TAG)
            .env("INSECURE", "1")
            .env("DIST", dir.path())
            .env("KEY", &key)
            .env("COSIGN_PASSWORD", cli::KEY_PASSWORD)
            .env(
                "MESHGATE_BIN",
                meshgate_integration::webhook::meshgate_binary(),
            );
        podman::run_ok(publish);
    };

    // What an earlier publish recorded goes, even when this one pushes nothing: `make istio`
    // would pin the Deployment to it.
    let image_dir = dir.path().join("image");
    std::fs::create_dir_all(&image_dir).unwrap();
    let stale = format!("127.0.0.1:1/meshgate/meshgate@sha256:{}", "0".repeat(64));
    std::fs::write(image_dir.join("meshgate.ref"), &stale).unwrap();
    std::fs::write(image_dir.join("meshgate.digest"), "sha256:0").unwrap();
    publish(None);
    assert!(image_dir.join("meshgate/index.json").is_file());
    for file in ["meshgate.ref", "meshgate.digest"] {
        assert!(!image_dir.join(file).exists(), "{file} outlived a publish");
    }
    publish(Some(registry.host().as_str()));

    // The OCI layout holds the image under its tag.
    let index: Json = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("image/meshgate/index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        podman::TAG,
        "{index}"
    );
    // The registry holds it, signed by the key and by no other.
    let pinned = std::fs::read_to_string(dir.path().join("image/meshgate.ref")).unwrap();
    let pinned = pinned.trim();
    assert!(
        pinned.starts_with(&format!("{}/meshgate/meshgate@sha256:", registry.host())),
        "{pinned}"
    );
    let public = key.with_extension("pub").display().to_string();
    cli::meshgate_ok(&["verify", "--key", &public, pinned]);
    cli::key_pair(&dir.path().join("other"), "ecdsa-p256");
    let other = dir.path().join("other.pub").display().to_string();
    assert_ne!(cli::meshgate(&["verify", "--key", &other, pinned]).code, 0);
    // meshgate's own webhook admits a pod running meshgate's image under a trust rule for it.
    let webhook = meshgate_integration::Webhook::start(&format!(
        r#"imageVerification:
  keys: [{{name: release, file: "{public}"}}]
  trust: [{{name: meshgate, images: ["127.0.0.1:*/meshgate/meshgate"], keys: [release]}}]
  registries: [{{host: "127.0.0.1:*", insecure: true}}]
  # A native image: its signature is what is checked, not a Wasm layout.
  artifactCheck: none
policies:
  - name: privileged
    rego: {{files: ["{{{{repo}}}}/policies/rego/privileged", "{{{{repo}}}}/policies/rego/lib"]}}
"#
    ));
    let answer =
        webhook.review(&sample_review_of("pub-1", false, Some("wasmtime"), pinned)["request"]);
    assert_eq!(answer["allowed"], true, "{answer}");

    // make istio's rendering pins the Deployment to that digest and changes nothing else.
    let out = dir.path().join("istio");
    let mut pin = std::process::Command::new("bash");
    pin.arg(repo.join("envoy/images/pin.sh"))
        .arg(pinned)
        .arg(&out);
    podman::run_ok(pin);
    let mut expected = yaml(&repo.join("istio/webhook/deployment.yaml"));
    expected["spec"]["template"]["spec"]["containers"][0]["image"] = Json::from(pinned);
    assert_eq!(yaml(&out.join("deployment.yaml")), expected);
}

#[test]
fn a_killed_runs_containers_and_pods_are_removed_by_the_next_run() {
    podman::images();
    // What a run killed before its Drop left: names carrying the pid of a process that is gone.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let prefix = format!("{}-{dead}", podman::PREFIX);
    let image = format!("meshgate:{}", podman::TAG);
    let pod = format!("pod_{prefix}-stack");
    // A compose project's pod (its infra container has no compose label), a container in it,
    // and a container created but never started.
    podman::podman_ok(&["pod", "create", "--name", &pod]);
    let in_pod = format!("{prefix}-stack_envoy_1");
    podman::podman_ok(&["create", "--pod", &pod, "--name", &in_pod, &image]);
    let created = format!("{prefix}-webhook");
    podman::podman_ok(&["create", "--name", &created, &image]);
    // This process's own stay: a concurrent test may be using them.
    let own = podman::owned("leftovers-own");
    podman::podman_ok(&["create", "--name", &own, &image]);

    let removed = podman::remove_leftovers();
    let containers = podman::podman_ok(&["ps", "-a", "--format", "{{.Names}}"]);
    let pods = podman::podman_ok(&["pod", "ps", "--format", "{{.Name}}"]);
    let _ = podman::podman().args(["rm", "-f", &own]).output();
    for name in [&pod, &created] {
        assert!(removed.contains(name), "{name} not in {removed:?}");
    }
    assert!(!removed.contains(&own), "{removed:?}");
    assert!(!pods.lines().any(|p| p == pod), "{pods}");
    for name in [&in_pod, &created] {
        assert!(
            !containers.lines().any(|c| c == name.as_str()),
            "{name} left: {containers}"
        );
    }
    assert!(
        containers.lines().any(|c| c == own),
        "{own} removed: {containers}"
    );
}

/// `envoy/images/publish.sh` with `args` and `env`, KEY and IMAGE_PROFILE unset unless named:
/// its exit code and stderr.
fn publish_script(args: &[&str], env: &[(&str, &Path)], dist: &Path) -> (i32, String) {
    let mut publish = std::process::Command::new("bash");
    publish
        .arg(paths::repo_root().join("envoy/images/publish.sh"))
        .args(args)
        .env_remove("KEY")
        .env_remove("IMAGE_PROFILE")
        .env("DIST", dist)
        .envs(env.iter().copied());
    let output = publish.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn publishing_beyond_loopback_takes_an_explicit_key_and_a_release_build() {
    let dir = tempfile::tempdir().unwrap();
    let dist = dir.path();
    let key = dir.path().join("release.key");
    let release = Path::new("release");
    let debug = Path::new("debug");
    let refused = [
        // No KEY: the dev key would sign.
        (
            "registry.example.com:5000",
            vec![("IMAGE_PROFILE", release)],
            "KEY=",
        ),
        // A debug build.
        (
            "registry.example.com",
            vec![("KEY", key.as_path())],
            "IMAGE_PROFILE=release",
        ),
        (
            "127.evil.example:5000",
            vec![("KEY", key.as_path()), ("IMAGE_PROFILE", debug)],
            "IMAGE_PROFILE=release",
        ),
        ("localhost.example:5000", vec![], "KEY="),
    ];
    // The key must exist: none is made for such a registry.
    let (code, stderr) = publish_script(
        &["--check", "registry.example.com"],
        &[("KEY", &key), ("IMAGE_PROFILE", release)],
        dist,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    std::fs::write(&key, "a key").unwrap();
    for (registry, env, says) in refused {
        // A refused publish leaves no reference of an earlier one for `make istio` either.
        std::fs::create_dir_all(dist.join("image")).unwrap();
        std::fs::write(dist.join("image/meshgate.ref"), "old").unwrap();
        let (code, stderr) = publish_script(&[registry], &env, dist);
        assert_eq!(code, 2, "{registry} {env:?}: {stderr}");
        assert!(stderr.contains(says), "{registry}: {stderr}");
        assert!(!dist.join("image/meshgate.ref").exists());
    }
    for (registry, env) in [
        (
            "registry.example.com:5000",
            vec![("KEY", key.as_path()), ("IMAGE_PROFILE", release)],
        ),
        ("127.0.0.1:5000", vec![]),
        ("localhost:5000", vec![]),
        ("localhost", vec![]),
        ("[::1]:5000", vec![]),
    ] {
        let (code, stderr) = publish_script(&["--check", registry], &env, dist);
        assert_eq!(code, 0, "{registry} {env:?}: {stderr}");
    }
}

#[test]
fn pinning_takes_a_digest_reference_and_nothing_that_would_rewrite_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let pin = |reference: &str, out: &Path| {
        let mut pin = std::process::Command::new("bash");
        pin.arg(paths::repo_root().join("envoy/images/pin.sh"))
            .arg(reference)
            .arg(out);
        pin.output().unwrap()
    };
    for (i, reference) in [
        format!("registry.example/meshgate/meshgate@{digest}&"),
        format!("registry.example/a&b/meshgate/meshgate@{digest}"),
        format!("registry.example/a|b/meshgate/meshgate@{digest}"),
        format!("registry.example/a\\1/meshgate/meshgate@{digest}"),
        format!("registry.example/meshgate/meshgate@{digest}\nkind: Secret"),
        "registry.example/meshgate/meshgate:0.1.0".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let out = dir.path().join(format!("refused-{i}"));
        let output = pin(reference, &out);
        assert!(!output.status.success(), "{reference} was pinned");
        assert!(!out.exists(), "{reference}: {} written", out.display());
    }
    let out = dir.path().join("pinned");
    let reference = format!("[::1]:5000/meshgate/meshgate@{digest}");
    let output = pin(&reference, &out);
    assert!(output.status.success(), "{output:?}");
    let deployment = yaml(&out.join("deployment.yaml"));
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        reference.as_str()
    );
}

#[test]
fn base_image_packages_come_from_apts_debian_mirror_or_debians_own() {
    let mirror = |sources: &[(&str, &str)], env: Option<&str>| {
        // An /etc/apt with these files.
        let etc = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(etc.path().join("sources.list.d")).unwrap();
        for (file, text) in sources {
            std::fs::write(etc.path().join(file), text).unwrap();
        }
        let mut base = std::process::Command::new("bash");
        base.arg(paths::repo_root().join("envoy/images/base.sh"))
            .arg("--mirror")
            .env("MESHGATE_APT_ETC", etc.path())
            .env_remove("MESHGATE_DEBIAN_MIRROR");
        if let Some(mirror) = env {
            base.env("MESHGATE_DEBIAN_MIRROR", mirror);
        }
        podman::run_ok(base).trim().to_string()
    };
    let debian = "http://deb.debian.org/debian";
    // Debian, deb822: the archive, not security.
    assert_eq!(
        mirror(
            &[(
                "sources.list.d/debian.sources",
                "Types: deb\nURIs: http://security.debian.org/debian-security\nSuites: bookworm-security\n\n\
                 Types: deb\nURIs: https://ftp.de.debian.org/debian/\nSuites: bookworm\n"
            )],
            None
        ),
        "https://ftp.de.debian.org/debian/"
    );
    // Debian, one-line entries with options.
    assert_eq!(
        mirror(
            &[(
                "sources.list",
                "deb [arch=amd64 signed-by=/k.gpg] http://ftp.fr.debian.org/debian bookworm main\n"
            )],
            None
        ),
        "http://ftp.fr.debian.org/debian"
    );
    // Ubuntu; Debian's cloud images (mirror+file:); nothing at all: Debian's own.
    assert_eq!(
        mirror(
            &[(
                "sources.list",
                "deb http://archive.ubuntu.com/ubuntu noble main\n"
            )],
            None
        ),
        debian
    );
    assert_eq!(
        mirror(
            &[(
                "sources.list.d/debian.sources",
                "Types: deb\nURIs: mirror+file:///etc/apt/mirrors/debian.list\nSuites: bookworm\n"
            )],
            None
        ),
        debian
    );
    assert_eq!(mirror(&[], None), debian);
    // Named explicitly.
    assert_eq!(
        mirror(&[], Some("http://mirror.example/debian")),
        "http://mirror.example/debian"
    );
}
