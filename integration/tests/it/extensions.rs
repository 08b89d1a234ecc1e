//! The mesh's own Wasm at admission, against the real webhook over TLS, a real registry and
//! real modules (dist/*.wasm, the policy components, modules and components written for the
//! test): WasmPlugins, EnvoyFilters and EnvoyExtensionPolicies admitted only with signed,
//! pinned proxy-wasm modules; `/mutate` pinning verified tags; capability facts and runtime
//! fit for pods.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use meshgate_integration::cli;
use meshgate_integration::registry::Reply;
use meshgate_integration::webhook::request;
use meshgate_integration::{HostileRegistry, Registry, Webhook, paths};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

fn dist(name: &str) -> PathBuf {
    let path = paths::dist_dir().join(name);
    assert!(
        path.is_file(),
        "{} (run `make filters policies`)",
        path.display()
    );
    path
}

/// A file of `bytes` in `dir`.
fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A policy that reports, as warnings, the module facts it was given.
const FACTS_POLICY: &str = r#"package facts
import rego.v1
warn contains msg if {
    some key, facts in input.modules
    msg := sprintf("module %s source=%s sha256=%s abi=%v imports=%v signedBy=%v", [key, facts.source, object.get(facts, "sha256", ""), object.get(facts, "abiVersions", []), object.get(object.get(facts, "capabilities", {}), "imports", []), object.get(object.get(facts, "image", {}), "signedBy", [])])
}
"#;

struct Setup {
    registry: Registry,
    keys: tempfile::TempDir,
    webhook: Webhook,
}

/// A registry, a `release` key, and the webhook trusting it for `meshgate/**` (and nothing
/// else), fetching HTTP modules only from `http_hosts`.
fn setup(http_hosts: &[String], extra: &str) -> Setup {
    let registry = Registry::start();
    let keys = tempfile::tempdir().unwrap();
    cli::key_pair(&keys.path().join("release"), "ecdsa-p256");
    std::fs::write(keys.path().join("facts.rego"), FACTS_POLICY).unwrap();
    let config = format!(
        r#"
imageVerification:
  artifactCheck: parse
  keys: [{{name: release, file: "{key}"}}]
  trust:
    - {{name: meshgate, images: ["127.0.0.1:*/meshgate/**"], keys: [release]}}
    - {{name: unsigned-lab, images: ["127.0.0.1:*/lab/**"], keys: []}}
  tagTtl: 0s
  timeout: 3s
  registries: [{{host: "127.0.0.1:*", insecure: true}}]
extensions:
  httpHosts: {hosts}
{extra}
policies:
  - name: module-facts
    rego: {{files: ["{facts}"]}}
    kinds: [WasmPlugin, EnvoyFilter, EnvoyExtensionPolicy]
    mode: warn
"#,
        key = keys.path().join("release.pub").display(),
        hosts = serde_json::to_string(http_hosts).unwrap(),
        facts = keys.path().join("facts.rego").display(),
    );
    let webhook = Webhook::start(&config);
    Setup {
        registry,
        keys,
        webhook,
    }
}

impl Setup {
    fn key(&self) -> PathBuf {
        self.keys.path().join("release.key")
    }

    /// Pushes `wasm` in `format` to `repository:1` and signs it; returns the digest.
    fn signed(&self, wasm: &Path, repository: &str, format: &str) -> (String, String) {
        let reference = format!("{}/{repository}:1", self.registry.host());
        let digest = cli::push_format(wasm, &reference, format);
        cli::sign(&self.key(), &reference, false);
        (reference, digest)
    }

    fn review(&self, object: &Json) -> Json {
        self.webhook
            .review(&request("uid-ext", "CREATE", object, None))
    }

    fn mutate(&self, object: &Json) -> Json {
        self.webhook
            .review_at("/mutate", &request("uid-ext", "CREATE", object, None))
    }
}

fn wasm_plugin(url: &str, sha256: Option<&str>) -> Json {
    let mut plugin = json!({
        "apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
        "metadata": {"name": "jwt-auth", "namespace": "istio-system"},
        "spec": {"url": url, "phase": "AUTHN", "selector": {"matchLabels": {"app": "web"}}},
    });
    if let Some(sha) = sha256 {
        plugin["spec"]["sha256"] = json!(sha);
    }
    plugin
}

fn message(response: &Json) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn warnings(response: &Json) -> String {
    response["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(Json::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Applies an answer's JSON Patch to `object`, which must have one.
fn patched(object: &Json, response: &Json) -> Json {
    assert!(response["patch"].is_string(), "no patch: {response}");
    meshgate_integration::webhook::patched(object, response)
}

/// A proxy-wasm module that imports a host function Envoy does not have.
const FOREIGN_IMPORT: &str = r#"(module
    (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))
    (import "env" "proxy_exec_shell" (func (param i32 i32) (result i32)))
    (memory (export "memory") 1)
    (func (export "malloc") (param i32) (result i32) i32.const 0)
    (func (export "proxy_abi_version_0_2_1")))"#;

#[test]
fn wasm_plugins_are_admitted_only_signed_pinned_and_proxy_wasm() {
    let setup = setup(&[], "");
    let host = setup.registry.host();
    let (tagged, digest) = setup.signed(&dist("jwt-auth.wasm"), "meshgate/jwt-auth", "istio");
    let hex_digest = digest.trim_start_matches("sha256:");
    let pinned_url = format!("oci://{host}/meshgate/jwt-auth@{digest}");

    // Pinned by digest: admitted; policies saw the module's facts.
    let answer = setup.review(&wasm_plugin(&pinned_url, None));
    assert_eq!(answer["allowed"], true, "{answer}");
    let seen = warnings(&answer);
    assert!(seen.contains(&format!("sha256={hex_digest}")), "{seen}");
    assert!(seen.contains("abi=[\"proxy_abi_version_0_2_1\"]"), "{seen}");
    assert!(seen.contains("env/proxy_log"), "{seen}");
    assert!(seen.contains("signedBy=[\"release\"]"), "{seen}");

    // A tag with the sha256 field of the verified digest: admitted.
    let answer = setup.review(&wasm_plugin(&format!("oci://{tagged}"), Some(hex_digest)));
    assert_eq!(answer["allowed"], true, "{answer}");

    // A tag alone: not pinned.
    let answer = setup.review(&wasm_plugin(&format!("oci://{tagged}"), None));
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(message(&answer).contains("not pinned"), "{answer}");

    // A sha256 that is not what the tag names.
    let wrong = "ab".repeat(32);
    let answer = setup.review(&wasm_plugin(&format!("oci://{tagged}"), Some(&wrong)));
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        message(&answer).contains(&format!("sha256 {wrong} is not the digest verified for it")),
        "{answer}"
    );

    // Unsigned, where the trust rule wants a signature.
    let unsigned = format!("{host}/meshgate/unsigned:1");
    let unsigned_digest = cli::push_format(&dist("jwt-auth.wasm"), &unsigned, "istio");
    let answer = setup.review(&wasm_plugin(
        &format!("oci://{host}/meshgate/unsigned@{unsigned_digest}"),
        None,
    ));
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(message(&answer).contains("is not signed"), "{answer}");

    // Signed, but a policy component, not a proxy-wasm module.
    let (_, component) = setup.signed(
        &dist("policies/privileged.wasm"),
        "meshgate/privileged",
        "oci",
    );
    let answer = setup.review(&wasm_plugin(
        &format!("oci://{host}/meshgate/privileged@{component}"),
        None,
    ));
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        message(&answer).contains("is a WebAssembly component, not a proxy-wasm module"),
        "{answer}"
    );

    // Signed, proxy-wasm, but importing a host function Envoy does not provide.
    let foreign = file(
        setup.keys.path(),
        "foreign.wasm",
        &wat::parse_str(FOREIGN_IMPORT).unwrap(),
    );
    let (_, foreign_digest) = setup.signed(&foreign, "meshgate/foreign", "istio");
    let answer = setup.review(&wasm_plugin(
        &format!("oci://{host}/meshgate/foreign@{foreign_digest}"),
        None,
    ));
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        message(&answer).contains(
            "imports host functions Envoy does not provide (proxy_abi_version_0_2_1): env/proxy_exec_shell"
        ),
        "{answer}"
    );

    // A core module that is not proxy-wasm at all (no ABI export), unsigned-allowed lab rule.
    let plain = file(
        setup.keys.path(),
        "plain.wasm",
        &wat::parse_str(r#"(module (func (export "_start")))"#).unwrap(),
    );
    let plain_digest = cli::push_format(&plain, &format!("{host}/lab/plain:1"), "istio");
    let answer = setup.review(&wasm_plugin(
        &format!("oci://{host}/lab/plain@{plain_digest}"),
        None,
    ));
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        message(&answer).contains("exports no proxy_abi_version_*"),
        "{answer}"
    );
}

#[test]
fn mutation_pins_verified_tags_and_the_result_passes_validation() {
    let setup = setup(&[], "");
    let host = setup.registry.host();
    let (tagged, digest) = setup.signed(&dist("jwt-auth.wasm"), "meshgate/jwt-auth", "istio");

    // A WasmPlugin by tag: its url becomes the digest that was verified.
    let plugin = wasm_plugin(&format!("oci://{tagged}"), None);
    let answer = setup.mutate(&plugin);
    assert_eq!(answer["allowed"], true, "{answer}");
    let pinned = patched(&plugin, &answer);
    assert_eq!(
        pinned["spec"]["url"],
        format!("oci://{host}/meshgate/jwt-auth@{digest}")
    );
    let verdict = setup.review(&pinned);
    assert_eq!(verdict["allowed"], true, "{verdict}");
    // Pinned already: nothing more to change (reinvocation is idempotent).
    let again = setup.mutate(&pinned);
    assert_eq!(again["allowed"], true, "{again}");
    assert!(again.get("patch").is_none_or(Json::is_null), "{again}");

    // A Deployment's template: the verified image by tag gets `@digest`; the init container
    // that is not verified (no trust rule) is left for the validating webhook to deny.
    let pod_image = format!("{host}/meshgate/app:1");
    let app_digest = cli::push(&dist("jwt-auth.wasm"), &pod_image);
    cli::sign(&setup.key(), &pod_image, false);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {
            "runtimeClassName": "wasmtime",
            "initContainers": [{"name": "init", "image": "127.0.0.1:1/elsewhere/x:1"}],
            "containers": [{"name": "app", "image": pod_image}],
        }}},
    });
    let answer = setup.mutate(&deployment);
    assert_eq!(answer["allowed"], true, "{answer}");
    let pinned = patched(&deployment, &answer);
    assert_eq!(
        pinned["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{pod_image}@{app_digest}")
    );
    assert_eq!(
        pinned["spec"]["template"]["spec"]["initContainers"][0]["image"],
        "127.0.0.1:1/elsewhere/x:1"
    );
    let again = setup.mutate(&pinned);
    assert!(again.get("patch").is_none_or(Json::is_null), "{again}");

    // The tag moves after admission: the pinned pod still names what was verified.
    cli::push(&dist("rate-limit.wasm"), &pod_image);
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "apps"},
        "spec": {"runtimeClassName": "wasmtime", "containers": [{"name": "app", "image": pinned["spec"]["template"]["spec"]["containers"][0]["image"]}]},
    });
    let verdict = setup.review(&pod);
    assert_eq!(verdict["allowed"], true, "{verdict}");
}

#[test]
fn http_modules_come_only_from_allowed_hosts_and_match_their_sha256() {
    let module = std::fs::read(dist("rate-limit.wasm")).unwrap();
    let sha = sha256_hex(&module);
    let served = module.clone();
    let origin = HostileRegistry::start(move |seen| match seen.url.as_str() {
        "/rate-limit.wasm" => Reply::Body(200, Vec::new(), served.clone()),
        "/moved.wasm" => Reply::redirect(302, "/rate-limit.wasm"),
        "/away.wasm" => Reply::redirect(302, "http://127.0.0.1:9/rate-limit.wasm"),
        _ => Reply::status(404, "no"),
    });
    let other = HostileRegistry::start(|_| Reply::status(200, "internal secrets"));
    let setup = setup(
        &[format!(
            "127.0.0.1:{}",
            origin.host().rsplit(':').next().unwrap()
        )],
        "",
    );
    let filter = |uri: &str, sha256: Option<&str>| {
        let mut remote = json!({"http_uri": {"uri": uri, "cluster": "filters", "timeout": "5s"}});
        if let Some(sha) = sha256 {
            remote["sha256"] = json!(sha);
        }
        json!({
            "apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
            "metadata": {"name": "rl", "namespace": "apps"},
            "spec": {"configPatches": [{"applyTo": "HTTP_FILTER", "patch": {
                "operation": "INSERT_BEFORE",
                "value": {"name": "rl", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {"vm_config": {"runtime": "envoy.wasm.runtime.v8",
                                              "code": {"remote": remote}}}}}}}]},
        })
    };
    let url = format!("http://{}/rate-limit.wasm", origin.host());
    let answer = setup.review(&filter(&url, Some(&sha)));
    assert_eq!(answer["allowed"], true, "{answer}");
    assert!(
        warnings(&answer).contains(&format!("source=http sha256={sha}")),
        "{answer}"
    );
    // A redirect on the same origin is followed.
    let moved = format!("http://{}/moved.wasm", origin.host());
    assert_eq!(setup.review(&filter(&moved, Some(&sha)))["allowed"], true);

    let denied = |object: Json, needle: &str| {
        let answer = setup.review(&object);
        assert_eq!(answer["allowed"], false, "{answer}");
        assert!(message(&answer).contains(needle), "{needle}: {answer}");
    };
    denied(filter(&url, Some(&"00".repeat(32))), "not the declared");
    denied(filter(&url, None), "must carry a sha256");
    let away = format!("http://{}/away.wasm", origin.host());
    denied(
        filter(&away, Some(&sha)),
        "redirect to another origin refused",
    );
    // Another host: refused before anything is sent to it.
    let elsewhere = format!("http://{}/rate-limit.wasm", other.host());
    denied(
        filter(&elsewhere, Some(&sha)),
        "is not in extensions.httpHosts",
    );
    assert!(
        other.requests().is_empty(),
        "the webhook asked a host it may not"
    );

    // The same rules through Envoy Gateway's EnvoyExtensionPolicy, and camelCase Envoy fields.
    let policy = json!({
        "apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyExtensionPolicy",
        "metadata": {"name": "p", "namespace": "apps"},
        "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "r"}],
                 "wasm": [{"name": "rl", "code": {"type": "HTTP", "http": {"url": url, "sha256": sha}}}]},
    });
    assert_eq!(setup.review(&policy)["allowed"], true);
    let mut camel = filter(&elsewhere, Some(&sha));
    let value = &mut camel["spec"]["configPatches"][0]["patch"]["value"];
    let config = value["typed_config"]["config"]["vm_config"].take();
    value["typed_config"]["config"] = json!({"vmConfig": config});
    denied(camel, "is not in extensions.httpHosts");
}

/// A component that imports network sockets.
const SOCKETS_COMPONENT: &str = r#"(component
    (import "wasi:sockets/tcp@0.2.0" (instance))
    (import "wasi:cli/environment@0.2.0" (instance)))"#;

#[test]
fn pods_capabilities_reach_policies_and_runtimes_refuse_what_they_cannot_run() {
    let repo = paths::repo_root();
    let extra = format!(
        r#"runtimes:
  spin: {{handler: spin, modules: [component]}}
  wasmedge: {{handler: wasmedge, modules: [module], layouts: [wasm-oci, istio]}}
policies:
  - name: wasm-capabilities
    rego: {{files: ["{repo}/policies/rego/wasm-capabilities", "{repo}/policies/rego/lib"]}}
    parameters: {{network: [trusted]}}"#,
        repo = repo.display()
    );
    let registry = Registry::start();
    let keys = tempfile::tempdir().unwrap();
    cli::key_pair(&keys.path().join("release"), "ecdsa-p256");
    let config = format!(
        r#"
imageVerification:
  artifactCheck: parse
  keys: [{{name: release, file: "{key}"}}]
  trust: [{{name: meshgate, images: ["127.0.0.1:*/meshgate/**"], keys: [release]}}]
  timeout: 3s
  registries: [{{host: "127.0.0.1:*", insecure: true}}]
{extra}
"#,
        key = keys.path().join("release.pub").display(),
    );
    let webhook = Webhook::start(&config);
    let host = registry.host();
    let push_signed = |wasm: &Path, repository: &str| {
        let reference = format!("{host}/meshgate/{repository}:1");
        cli::push(wasm, &reference);
        cli::sign(&keys.path().join("release.key"), &reference, false);
        reference
    };
    let sockets = push_signed(
        &file(
            keys.path(),
            "sockets.wasm",
            &wat::parse_str(SOCKETS_COMPONENT).unwrap(),
        ),
        "sockets",
    );
    let filter = push_signed(&dist("jwt-auth.wasm"), "jwt-auth");
    let pod = |namespace: &str, class: &str, image: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": namespace},
            "spec": {"runtimeClassName": class, "containers": [{"name": "app", "image": image}]},
        })
    };
    let review = |object: Json| webhook.review(&request("uid-cap", "CREATE", &object, None));

    // The sockets component: network in `apps` is denied, in `trusted` allowed; spin runs it.
    let answer = review(pod("apps", "spin", &sockets));
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(message(&answer).contains("[wasm-capabilities]"), "{answer}");
    assert!(message(&answer).contains("wasi:sockets/tcp"), "{answer}");
    let answer = review(pod("trusted", "spin", &sockets));
    assert_eq!(answer["allowed"], true, "{answer}");

    // Runtime fit: a component on the module-only shim, a core module on spin.
    let answer = review(pod("trusted", "wasmedge", &sockets));
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        message(&answer).contains(&format!(
            "[runtime-fit] image {sockets} is a Wasm component; RuntimeClass wasmedge (handler wasmedge) runs module"
        )),
        "{answer}"
    );
    let answer = review(pod("trusted", "spin", &filter));
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        message(&answer)
            .contains("is a Wasm module; RuntimeClass spin (handler spin) runs component"),
        "{answer}"
    );
    // jwt-auth fetches its JWKS through the proxy (env/proxy_http_call): network, denied
    // outside `trusted`.
    let answer = review(pod("apps", "wasmedge", &filter));
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(message(&answer).contains("env/proxy_http_call"), "{answer}");
    let answer = review(pod("trusted", "wasmedge", &filter));
    assert_eq!(answer["allowed"], true, "{answer}");
}

#[test]
fn many_reviews_naming_large_modules_hold_a_bounded_amount_of_memory() {
    // 24 MiB of junk per URL (each URL distinct, so no cache helps): the checks must fail on
    // the sha256, after holding at most `maxConcurrentFetches` downloads at once.
    const SIZE: usize = 24 << 20;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let junk = std::sync::Arc::new(vec![0x5a_u8; SIZE]);
    let served = junk.clone();
    // Requests in flight at the origin, and the most seen at once: each answer waits a little
    // so that downloads the webhook lets run together do overlap here.
    let in_flight = std::sync::Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let counters = in_flight.clone();
    let origin = HostileRegistry::start(move |_| {
        let now = counters.0.fetch_add(1, Ordering::SeqCst) + 1;
        counters.1.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(150));
        counters.0.fetch_sub(1, Ordering::SeqCst);
        Reply::Body(200, Vec::new(), (*served).clone())
    });
    let port = origin.host().rsplit(':').next().unwrap().to_string();
    let setup = setup(&[format!("127.0.0.1:{port}")], "");
    let baseline = setup.webhook.peak_rss();
    let reviews = 8;
    std::thread::scope(|scope| {
        for i in 0..reviews {
            let setup = &setup;
            let host = origin.host();
            scope.spawn(move || {
                let object = json!({
                    "apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
                    "metadata": {"name": format!("big{i}"), "namespace": "apps"},
                    "spec": {"configPatches": [{"patch": {"value": {"vm_config": {"code": {"remote": {
                        "http_uri": {"uri": format!("http://{host}/big.wasm?n={i}")},
                        "sha256": "00".repeat(32)}}}}}}]},
                });
                let answer = setup.review(&object);
                assert_eq!(answer["allowed"], false, "{answer}");
            });
        }
    });
    let most = in_flight.1.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&most),
        "{most} module downloads at once; extensions.maxConcurrentFetches is 2"
    );
    let growth = setup.webhook.peak_rss().saturating_sub(baseline);
    // Two downloads at once (the default), each held whole while hashed, plus the client's
    // buffers: far below one download per review (8 × 24 MiB).
    assert!(
        growth < (4 * SIZE) as u64,
        "peak grew by {} MiB for {reviews} reviews of {} MiB modules",
        growth >> 20,
        SIZE >> 20
    );
    assert!(
        setup.webhook.log().contains("review"),
        "the webhook kept serving"
    );
}

#[test]
fn every_entry_of_an_image_index_is_judged() {
    let registry = Registry::start();
    let keys = tempfile::tempdir().unwrap();
    let repo = paths::repo_root();
    let config = format!(
        r#"
imageVerification:
  artifactCheck: parse
  keys: []
  trust: [{{name: lab, images: ["127.0.0.1:*/lab/**"], keys: []}}]
  timeout: 3s
  registries: [{{host: "127.0.0.1:*", insecure: true}}]
runtimes:
  wasmedge: {{handler: wasmedge, modules: [module]}}
policies:
  - name: wasm-capabilities
    rego: {{files: ["{repo}/policies/rego/wasm-capabilities", "{repo}/policies/rego/lib"]}}
    kinds: ["*"]
"#,
        repo = repo.display()
    );
    let webhook = Webhook::start(&config);
    let repository = format!("{}/lab/multi", registry.host());
    let benign = file(
        keys.path(),
        "benign.wasm",
        &wat::parse_str(r#"(module (func (export "_start")))"#).unwrap(),
    );
    cli::push(&benign, &format!("{repository}:benign"));
    let sockets = file(
        keys.path(),
        "sockets.wasm",
        &wat::parse_str(SOCKETS_COMPONENT).unwrap(),
    );
    cli::push(&sockets, &format!("{repository}:sockets"));
    // The benign entry first: a node on the second platform pulls the component.
    let index = meshgate_integration::registry::push_index(
        &format!("{repository}:index"),
        &[
            ("benign", "wasip1/wasm", Json::Null),
            ("sockets", "wasi/wasm", Json::Null),
        ],
    );
    let image = format!("{repository}@{index}");
    let pod = |class: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "apps"},
            "spec": {"runtimeClassName": class, "containers": [{"name": "app", "image": image}]},
        })
    };
    let review = |object: Json| webhook.review(&request("uid-index", "CREATE", &object, None));
    let answer = review(pod("wasmtime"));
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(message(&answer).contains("wasi:sockets/tcp"), "{answer}");
    let answer = review(pod("wasmedge"));
    assert!(
        message(&answer).contains("is a Wasm component; RuntimeClass wasmedge"),
        "{answer}"
    );
    // A proxy pulls one manifest of an index: a WasmPlugin names the manifest itself.
    let answer = review(wasm_plugin(&format!("oci://{image}"), None));
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(message(&answer).contains("is an image index"), "{answer}");
}
