//! `make run`: the meshgate demo stack on 127.0.0.1, until Ctrl-C.
//!
//! Envoy (with `envoy/demo.yaml`: jwt-auth then rate-limit in front of an upstream), a demo upstream
//! that echoes what reaches it, a JWKS endpoint serving a development key generated now, and the
//! admission webhook over TLS: `admission/examples/dev.yaml` plus image verification against a
//! local OCI registry (`docker-registry`) holding the jwt-auth filter, signed with the dev cosign
//! key in `.state/dev/`. It checks the stack answers as it should, then prints the commands to
//! try it.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use meshgate_integration::devkey::{self, DevKey};
use meshgate_integration::webhook::{patched, request, sample_review_of};
use meshgate_integration::{
    Echo, Envoy, JwksServer, Registry, Webhook, cli, envoy::template_file, http_client, paths,
};
use serde_json::{Value as Json, json};

const LISTENER: &str = "http://127.0.0.1:10000";
const WEBHOOK_PORT: u16 = 8443;

/// Appended to dev.yaml (after a Wasm policy from the registry): images from loopback
/// registries, policy images included, must be signed by the dev cosign key. The local
/// registry speaks plain HTTP, which the webhook uses only for registries listed `insecure`.
const IMAGE_VERIFICATION: &str = r#"imageVerification:
  keys:
    - {name: dev, file: ../dev/cosign.pub}
  trust:
    - name: local-registry
      images: ["127.0.0.1:*/**"]
      keys: [dev]
  registries:
    - {host: "127.0.0.1:*", insecure: true}
"#;

fn main() -> Result<()> {
    let key = DevKey::load_or_create(&devkey::default_dir()).map_err(anyhow::Error::msg)?;
    let upstream = Echo::start_on(10001);
    let jwks = JwksServer::start_on(10002, &key.jwks());
    let envoy = Envoy::builder(template_file("envoy/demo.yaml"))
        .admin_port(9901)
        .component_log_level(None)
        .try_start()
        .map_err(anyhow::Error::msg)
        .context("starting Envoy with envoy/demo.yaml (ports 10000-10002 and 9901 must be free)")?;

    // A local registry with the jwt-auth filter signed by the dev cosign key, and the rate-limit
    // filter unsigned.
    let registry = Registry::start();
    let cosign_key = devkey::default_dir().join("cosign");
    cli::key_pair(&cosign_key, "ecdsa-p256");
    let dist = paths::dist_dir();
    let signed = format!("{}/meshgate/jwt-auth:dev", registry.host());
    let signed_digest = cli::push(&dist.join("jwt-auth.wasm"), &signed);
    cli::sign(&cosign_key.with_extension("key"), &signed, false);
    let signed_pinned = format!("{}/meshgate/jwt-auth@{signed_digest}", registry.host());
    let unsigned = format!("{}/meshgate/rate-limit:dev", registry.host());
    cli::push(&dist.join("rate-limit.wasm"), &unsigned);
    // The Wasm `privileged` policy, signed, which the webhook loads from the registry.
    let policy_image = format!("{}/meshgate/policies/privileged:dev", registry.host());
    cli::push(&dist.join("policies/privileged.wasm"), &policy_image);
    cli::sign(&cosign_key.with_extension("key"), &policy_image, false);

    // dev.yaml plus image verification; written two levels below the repository root, like
    // dev.yaml, so its relative paths hold.
    let repo = paths::repo_root();
    let state = repo.join(".state/demo");
    std::fs::create_dir_all(&state)?;
    let config = state.join("webhook.yaml");
    std::fs::write(
        &config,
        format!(
            "{}  - name: privileged-wasm\n    wasm: {{image: \"{policy_image}\"}}\n{}",
            std::fs::read_to_string(repo.join("admission/examples/dev.yaml"))?,
            IMAGE_VERIFICATION
        ),
    )?;
    let webhook = Webhook::start_file(
        &config,
        tempfile::tempdir()?,
        &repo.join(".state/admission-tls/ca.crt"),
        WEBHOOK_PORT,
    );
    let reviews = [
        (
            "privileged-pod.json",
            sample_review_of("demo-1", true, Some("wasmtime"), &signed_pinned),
        ),
        (
            "wasm-pod.json",
            sample_review_of("demo-2", false, Some("wasmtime"), &signed_pinned),
        ),
        (
            "unsigned-pod.json",
            sample_review_of("demo-3", false, Some("wasmtime"), &unsigned),
        ),
    ];
    for (file, review) in &reviews {
        std::fs::write(state.join(file), review.to_string())?;
    }
    let answers: Vec<Json> = reviews
        .iter()
        .map(|(_, review)| webhook.review(&review["request"]))
        .collect();
    let wasm_denied = answers[0]["status"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("[privileged-wasm]"));
    if answers[0]["allowed"] != false
        || !wasm_denied
        || answers[1]["allowed"] != true
        || answers[2]["allowed"] != false
    {
        bail!("the webhook does not answer as expected: {answers:?}");
    }
    let [privileged, allowed, unsigned_pod] =
        ["privileged-pod.json", "wasm-pod.json", "unsigned-pod.json"].map(|f| state.join(f));

    // The demo's own WasmPlugin (istio/filters/wasmplugin-jwt-auth.yaml), its url on the local
    // registry's signed filter by tag: validation refuses the tag, /mutate pins it to the
    // digest verified, and the pinned object is admitted.
    let plugin_ref = format!("{}/meshgate/filters/jwt-auth:dev", registry.host());
    let plugin_digest = cli::push_format(&dist.join("jwt-auth.wasm"), &plugin_ref, "istio");
    cli::sign(&cosign_key.with_extension("key"), &plugin_ref, false);
    let mut plugin: Json = serde_yaml::from_str(&std::fs::read_to_string(
        repo.join("istio/filters/wasmplugin-jwt-auth.yaml"),
    )?)?;
    plugin["spec"]["url"] = json!(format!("oci://{plugin_ref}"));
    let plugin_review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": request("demo-4", "CREATE", &plugin, None),
    });
    let plugin_file = state.join("wasmplugin.json");
    std::fs::write(&plugin_file, plugin_review.to_string())?;
    let by_tag = webhook.review(&plugin_review["request"]);
    let mutation = webhook.review_at("/mutate", &plugin_review["request"]);
    let pinned = patched(&plugin, &mutation);
    let pinned_answer = webhook.review(&request("demo-5", "CREATE", &pinned, None));
    let pinned_url = format!(
        "oci://{}/meshgate/filters/jwt-auth@{plugin_digest}",
        registry.host()
    );
    if by_tag["allowed"] != false
        || pinned["spec"]["url"] != pinned_url
        || pinned_answer["allowed"] != true
    {
        bail!(
            "the webhook does not guard the demo's WasmPlugin as expected: by tag {by_tag}, \
             mutation {mutation}, pinned {pinned_answer}"
        );
    }

    // A self-check subject of its own per run, so the printed token starts with a full
    // rate-limit bucket.
    let token_for = |sub: &str| key.token(sub, 12 * 3600);
    let token = token_for("dev-user");
    let client = http_client();
    let without = client.get(format!("{LISTENER}/hello")).send()?;
    let with = client
        .get(format!("{LISTENER}/hello"))
        .bearer_auth(token_for("self-check"))
        .send()?;
    let (without_status, with_status) = (without.status().as_u16(), with.status().as_u16());
    if without_status != 401 || with_status != 200 {
        bail!(
            "the demo does not answer as expected (no token: {without_status}, token: \
             {with_status}); Envoy log:\n{}",
            envoy.log_tail(30)
        );
    }
    println!(
        "meshgate demo is running (Ctrl-C stops it):\n\
         \n  Envoy listener   {LISTENER}      jwt-auth in front of the demo upstream\
         \n  demo upstream    http://127.0.0.1:{}       echoes the request it receives\
         \n  JWKS             {}\
         \n  Envoy admin      http://127.0.0.1:9901\
         \n\nTry it:\n\
         \n  curl -i {LISTENER}/hello                       # 401 Jwt is missing\
         \n  curl -i {LISTENER}/healthz                     # 200, no token needed\
         \n  curl -i -H 'Authorization: Bearer {token}' {LISTENER}/hello\
         \n                                                 # 200; the upstream sees x-user, x-groups, x-jwt-payload\
         \n                                                 # the same 11 times in a minute: the 11th is 429\
         \n  target/debug/meshgate-dev token --sub alice      # more tokens for the same dev key (.state/dev)\
         \n  curl -s http://127.0.0.1:9901/stats | grep wasmcustom\n\
         \n  Admission webhook {webhook_url}   dev.yaml + the Wasm privileged policy from the registry + image verification ({config})\
         \n  OCI registry      http://{registry}   {signed} signed with .state/dev/cosign.key\
         \n\n  curl --cacert {ca} \\\
         \n       -H 'Content-Type: application/json' --data @{privileged} {webhook_url}/validate\
         \n                                                 # allowed: false, [privileged] and [privileged-wasm]: container \"app\" ... is privileged\
         \n  curl --cacert {ca} \\\
         \n       -H 'Content-Type: application/json' --data @{allowed} {webhook_url}/validate\
         \n                                                 # allowed: true (a signed Wasm artifact, a clean pod)\
         \n  curl --cacert {ca} \\\
         \n       -H 'Content-Type: application/json' --data @{plugin_file} {webhook_url}/mutate\
         \n                                                 # the WasmPlugin's url pinned: a base64 JSON Patch to {pinned_url}\
         \n  curl --cacert {ca} \\\
         \n       -H 'Content-Type: application/json' --data @{unsigned_pod} {webhook_url}/validate\
         \n                                                 # allowed: false, [image-verification] ... no signatures found\
         \n  target/debug/meshgate verify --insecure-registry {registry} --key .state/dev/cosign.pub {signed}\
         \n  curl --cacert {ca} {webhook_url}/metrics\n\
         \nSelf-check: no token → {without_status}, dev token → {with_status}; privileged Wasm pod denied, signed clean one allowed, unsigned one denied; the WasmPlugin denied by tag, pinned by /mutate, then admitted.",
        upstream.port(),
        jwks.url(),
        webhook_url = webhook.url,
        ca = webhook.ca.display(),
        privileged = privileged.display(),
        allowed = allowed.display(),
        unsigned_pod = unsigned_pod.display(),
        plugin_file = plugin_file.display(),
        config = config.display(),
        registry = registry.host(),
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    println!("\nstopping: Envoy, upstream, JWKS, webhook, registry");
    drop(envoy);
    drop(webhook);
    drop(registry);
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}
