//! Signed Wasm images end to end, against a real `docker-registry` on 127.0.0.1: the CLI makes
//! keys, pushes and signs; the real webhook admits only signed Wasm artifacts; the `sigstore`
//! crate's own cosign verifier checks what `meshgate sign` wrote.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshgate_integration::cli::{self, meshgate, meshgate_with};
use meshgate_integration::ports::free_port;
use meshgate_integration::registry::{Reply, push_index, sha256_of};
use meshgate_integration::webhook::request;
use meshgate_integration::{HostileRegistry, Registry, Webhook, paths};
use serde_json::{Value as Json, json};

fn wasm(name: &str) -> PathBuf {
    let path = paths::dist_dir().join(name);
    assert!(path.is_file(), "{} (run `make filters`)", path.display());
    path
}

/// Keys of every type in a temporary directory.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        for (name, algorithm) in [
            ("release", "ecdsa-p256"),
            ("ci", "ed25519"),
            ("legacy-rsa", "rsa"),
            ("stranger", "ecdsa-p256"),
        ] {
            cli::key_pair(&dir.path().join(name), algorithm);
        }
        Keys { dir }
    }

    fn private(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.key"))
    }

    fn public(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pub"))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn http() -> oci_client::Client {
    oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    })
}

/// Pushes a one-layer manifest as given; returns its digest.
fn push_raw(reference: &str, config: (&str, Vec<u8>), layer: (&str, Vec<u8>)) -> String {
    push_layers(reference, config, &[layer])
}

/// Pushes a container image (config + one tar layer) whose config names `architecture`.
fn push_container_image(reference: &str, architecture: &str) -> String {
    let os = if architecture == "wasm" {
        "wasip1"
    } else {
        "linux"
    };
    push_raw(
        reference,
        (
            "application/vnd.oci.image.config.v1+json",
            json!({"architecture": architecture, "os": os,
                   "rootfs": {"type": "layers", "diff_ids": []}})
            .to_string()
            .into_bytes(),
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+gzip",
            b"not really a tarball".to_vec(),
        ),
    )
}

fn pod_with_images(name: &str, images: &[&str], init: &[&str]) -> Json {
    let container = |(i, image): (usize, &&str)| {
        json!({"name": format!("c{i}"), "image": image,
               "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}})
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {
            "runtimeClassName": "wasmtime",
            "containers": images.iter().enumerate().map(container).collect::<Vec<_>>(),
            "initContainers": init.iter().enumerate().map(container).collect::<Vec<_>>(),
        },
    })
}

fn review(webhook: &Webhook, name: &str, images: &[&str]) -> Json {
    webhook.review(&request(
        &format!("uid-{name}"),
        "CREATE",
        &pod_with_images(name, images, &[]),
        None,
    ))
}

fn message(response: &Json) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The test configuration with `rules` (YAML list items, indented four spaces) after its own
/// trust rules and `extra` at the end of the `imageVerification` section (two spaces) or at the
/// top level (none).
fn webhook_config_with_rules(keys: &Keys, rules: &str, extra: &str) -> String {
    format!(
        r#"
imageVerification:
  keys:
    - {{name: release, file: "{release}"}}
    - {{name: ci, file: "{ci}"}}
    - {{name: legacy-rsa, file: "{rsa}"}}
  trust:
    - name: two-keys
      images: ["127.0.0.1:*/dual/*"]
      keys: [release, ci]
      require: all
    - name: meshgate
      images: ["127.0.0.1:*/meshgate/**"]
      keys: [release, ci, legacy-rsa]
{rules}
  tagTtl: 0s
  negativeCacheTtl: 1s
  timeout: 2s
  # Test registries are plain HTTP on loopback; the webhook speaks HTTPS to any other.
  registries: [{{host: "127.0.0.1:*", insecure: true}}]
{extra}
policies:
  - name: image-facts
    rego:
      files: ["{{{{dir}}}}/facts.rego"]
    mode: warn
"#,
        release = keys.public("release").display(),
        ci = keys.public("ci").display(),
        rsa = keys.public("legacy-rsa").display(),
    )
}

/// A policy that reports, as a warning, what the image checks told it.
const FACTS_POLICY: &str = r#"package facts
import rego.v1
warn contains msg if {
    some image, facts in input.images
    msg := sprintf("%s is %s signed by %v", [image, facts.artifact.kind, facts.signedBy])
}
"#;

fn start_webhook(keys: &Keys, extra: &str) -> Webhook {
    start_webhook_with_rules(keys, "", extra)
}

fn start_webhook_with_rules(keys: &Keys, rules: &str, extra: &str) -> Webhook {
    // The policy file must exist before the server loads; write it where `{{dir}}` will point
    // by starting from a config that names an absolute path instead.
    let policy_dir = keys.dir.path().join(format!("policy-{}", free_port()));
    std::fs::create_dir_all(&policy_dir).unwrap();
    std::fs::write(policy_dir.join("facts.rego"), FACTS_POLICY).unwrap();
    let config = webhook_config_with_rules(keys, rules, extra)
        .replace("{{dir}}", &policy_dir.display().to_string());
    Webhook::start(&config)
}

#[test]
fn webhook_admits_only_signed_wasm_artifacts() {
    let registry = Registry::start();
    let keys = Keys::new();
    let host = registry.host();
    let jwt = wasm("jwt-auth.wasm");
    let ratelimit = wasm("rate-limit.wasm");
    let passthrough = wasm("test/passthrough.wasm");

    // Signed three ways: cosign legacy with P-256 and RSA, a sigstore bundle with Ed25519.
    let p256 = format!("{host}/meshgate/jwt-auth:v1");
    cli::push(&jwt, &p256);
    cli::sign(&keys.private("release"), &p256, false);
    let ed = format!("{host}/meshgate/rate-limit:v1");
    cli::push_format(&ratelimit, &ed, "istio");
    cli::sign(&keys.private("ci"), &ed, true);
    let rsa = format!("{host}/meshgate/passthrough:v1");
    cli::push(&passthrough, &rsa);
    cli::sign(&keys.private("legacy-rsa"), &rsa, false);

    let webhook = start_webhook(&keys, "");

    let allowed = review(&webhook, "signed", &[&p256, &ed, &rsa]);
    assert_eq!(allowed["allowed"], true, "{allowed}");
    let warnings = allowed["warnings"].to_string();
    assert!(
        warnings.contains(&format!("{p256} is wasm-oci signed by [\\\"release\\\"]")),
        "policies see the facts: {warnings}"
    );
    assert!(
        warnings.contains(&format!("{ed} is istio signed by [\\\"ci\\\"]")),
        "{warnings}"
    );
    assert!(warnings.contains("legacy-rsa"), "{warnings}");

    // Unsigned.
    let unsigned = format!("{host}/meshgate/unsigned:v1");
    cli::push(&jwt, &unsigned);
    let denied = review(&webhook, "unsigned", &[&unsigned]);
    assert_eq!(denied["allowed"], false);
    assert!(
        message(&denied).contains(&format!("[image-verification] {unsigned}")),
        "{denied}"
    );
    assert!(message(&denied).contains("no signatures found"), "{denied}");

    // Signed, but by a key no rule trusts.
    let stranger = format!("{host}/meshgate/stranger:v1");
    cli::push(&ratelimit, &stranger);
    cli::sign(&keys.private("stranger"), &stranger, false);
    let denied = review(&webhook, "stranger", &[&stranger]);
    assert_eq!(denied["allowed"], false);
    assert!(message(&denied).contains("untrusted key"), "{denied}");

    // An unsigned init container denies the pod too.
    let denied = webhook.review(&request(
        "uid-init",
        "CREATE",
        &pod_with_images("init", &[&p256], &[&unsigned]),
        None,
    ));
    assert_eq!(denied["allowed"], false);
    assert!(message(&denied).contains(&unsigned), "{denied}");

    // A tag moved to other content after signing.
    let moving = format!("{host}/meshgate/moving:stable");
    cli::push(&jwt, &moving);
    cli::sign(&keys.private("release"), &moving, false);
    assert_eq!(review(&webhook, "before-move", &[&moving])["allowed"], true);
    cli::push(&ratelimit, &moving);
    let denied = review(&webhook, "after-move", &[&moving]);
    assert_eq!(
        denied["allowed"], false,
        "a moved tag must not keep the old signature"
    );
    assert!(message(&denied).contains("no signatures found"), "{denied}");

    // A valid signature of one digest copied to another digest's signature tag.
    let original = format!("{host}/meshgate/copy-source:v1");
    let original_digest = cli::push(&jwt, &original);
    cli::sign(&keys.private("release"), &original, false);
    let target = format!("{host}/meshgate/copy-source:other");
    let target_digest = cli::push(&passthrough, &target);
    copy_manifest(
        &format!(
            "{host}/meshgate/copy-source:{}.sig",
            original_digest.replace(':', "-")
        ),
        &format!(
            "{host}/meshgate/copy-source:{}.sig",
            target_digest.replace(':', "-")
        ),
    );
    let denied = review(&webhook, "copied", &[&target]);
    assert_eq!(denied["allowed"], false);
    assert!(
        message(&denied).contains(&format!("is for {original_digest}")),
        "{denied}"
    );

    // A signed container image that is not Wasm; and one whose config says wasm.
    let linux = format!("{host}/meshgate/linux-app:v1");
    push_container_image(&linux, "amd64");
    cli::sign(&keys.private("release"), &linux, false);
    let denied = review(&webhook, "linux", &[&linux]);
    assert_eq!(denied["allowed"], false);
    assert!(message(&denied).contains("not a Wasm artifact"), "{denied}");
    let wasm_image = format!("{host}/meshgate/wasm-image:v1");
    push_container_image(&wasm_image, "wasm");
    cli::sign(&keys.private("release"), &wasm_image, false);
    let allowed = review(&webhook, "wasm-image", &[&wasm_image]);
    assert_eq!(allowed["allowed"], true, "{allowed}");

    // No rule for the image.
    let denied = review(&webhook, "no-rule", &[&format!("{host}/elsewhere/app:v1")]);
    assert!(
        message(&denied).contains("no trust rule matches"),
        "{denied}"
    );

    // require: all — one key is not enough, both are.
    let dual = format!("{host}/dual/app:v1");
    cli::push(&jwt, &dual);
    cli::sign(&keys.private("release"), &dual, false);
    let denied = review(&webhook, "dual-one", &[&dual]);
    assert_eq!(denied["allowed"], false);
    assert!(message(&denied).contains("2 of 2 keys"), "{denied}");
    assert!(message(&denied).contains("signed by release"), "{denied}");
    // The failure is remembered for negativeCacheTtl (1s here); after it, the new signature
    // counts.
    cli::sign(&keys.private("ci"), &dual, true);
    std::thread::sleep(Duration::from_millis(1200));
    let allowed = review(&webhook, "dual-both", &[&dual]);
    assert_eq!(allowed["allowed"], true, "{allowed}");
}

/// Copies a manifest from one tag to another, byte for byte.
fn copy_manifest(from: &str, to: &str) {
    let from: oci_client::Reference = from.parse().unwrap();
    let to: oci_client::Reference = to.parse().unwrap();
    runtime().block_on(async {
        let client = http();
        let auth = oci_client::secrets::RegistryAuth::Anonymous;
        let (bytes, _) = client
            .pull_manifest_raw(
                &from,
                &auth,
                &["application/vnd.oci.image.manifest.v1+json"],
            )
            .await
            .unwrap();
        client
            .push_manifest_raw(
                &to,
                bytes,
                "application/vnd.oci.image.manifest.v1+json"
                    .parse()
                    .unwrap(),
            )
            .await
            .unwrap();
    });
}

/// Requests the registry served whose line contains `needle`.
fn requests(registry: &Registry, needle: &str) -> usize {
    registry
        .log()
        .lines()
        .filter(|l| l.contains("response completed") && l.contains(needle))
        .count()
}

#[test]
fn verified_images_are_cached_and_bursts_share_one_registry_visit() {
    let registry = Registry::start();
    let keys = Keys::new();
    let host = registry.host();
    let image = format!("{host}/meshgate/burst:v1");
    let digest = cli::push(&wasm("jwt-auth.wasm"), &image);
    cli::sign(&keys.private("release"), &image, false);
    let pinned = format!("{host}/meshgate/burst@{digest}");
    let sig_tag = format!("{}.sig", digest.replace(':', "-"));
    let webhook = std::sync::Arc::new(start_webhook(&keys, ""));
    let signature_fetches = requests(&registry, &sig_tag);

    // Eight concurrent reviews of a never-seen image: one look at its signatures.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let webhook = webhook.clone();
            let pinned = pinned.clone();
            std::thread::spawn(move || review(&webhook, &format!("burst-{i}"), &[&pinned]))
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap()["allowed"], true);
    }
    assert_eq!(
        requests(&registry, &sig_tag),
        signature_fetches + 1,
        "signature manifest fetched once for the burst:\n{}",
        registry.log()
    );

    // Warm: no registry request at all.
    let before = requests(&registry, "/v2/meshgate/burst/");
    for i in 0..5 {
        assert_eq!(
            review(&webhook, &format!("warm-{i}"), &[&pinned])["allowed"],
            true
        );
    }
    assert_eq!(requests(&registry, "/v2/meshgate/burst/"), before);
    let (_, metrics) = webhook.get("/metrics");
    assert!(
        metrics.contains(
            "meshgate_admission_image_verification_duration_seconds_count{outcome=\"verified\"} 13"
        ),
        "{metrics}"
    );
}

#[test]
fn a_registry_that_is_down_denies_fast_or_warns_when_failing_open() {
    let keys = Keys::new();
    // Nothing listens on this port.
    let down = format!("127.0.0.1:{}/meshgate/app:v1", free_port());
    let webhook = start_webhook(&keys, "");
    let started = Instant::now();
    let denied = review(&webhook, "down", &[&down]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(denied["allowed"], false);
    let reason = message(&denied);
    let registry = down.split('/').next().unwrap();
    assert!(
        reason.contains(&format!("registry {registry} unavailable")),
        "{reason}"
    );
    assert_eq!(webhook.get("/healthz").0, 200);

    let open = start_webhook(&keys, "  failurePolicy: Ignore");
    let allowed = review(&open, "down-open", &[&down]);
    assert_eq!(allowed["allowed"], true, "{allowed}");
    assert!(
        allowed["warnings"].to_string().contains("unavailable"),
        "{allowed}"
    );
    // Fail-open covers an unreachable registry only, never a failed signature check.
    let denied = review(&open, "no-rule", &["ghcr.io/acme/app:v1"]);
    assert_eq!(denied["allowed"], false, "{denied}");
}

#[test]
fn cli_sign_and_verify_agree_with_the_sigstore_crate() {
    let registry = Registry::start();
    let keys = Keys::new();
    let host = registry.host();
    let reference = format!("{host}/meshgate/jwt-auth:v2");
    let digest = cli::push(&wasm("jwt-auth.wasm"), &reference);

    // Not yet signed.
    let release_pub = keys.public("release").display().to_string();
    let out = meshgate(&["verify", "--key", &release_pub, &reference]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no signatures found"), "{out:?}");

    cli::sign(&keys.private("release"), &reference, false);
    let out = meshgate(&["verify", "--key", &release_pub, &reference]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        format!("{reference}: {digest} signed by {release_pub} (cosign)")
    );
    let stranger_pub = keys.public("stranger").display().to_string();
    let out = meshgate(&["verify", "--key", &stranger_pub, &reference]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("untrusted key"), "{out:?}");

    // The sigstore crate's cosign client finds and verifies the same signature.
    sigstore_verifies(&reference, &digest, &keys.public("release"));
    assert!(
        std::panic::catch_unwind(|| sigstore_verifies(
            &reference,
            &digest,
            &keys.public("stranger")
        ))
        .is_err(),
        "the sigstore crate must reject the wrong key"
    );

    // The bundle form: verify finds it, and the bundle is a well-formed sigstore bundle whose
    // DSSE signature ed25519-dalek verifies over the statement naming the digest.
    cli::sign(&keys.private("ci"), &reference, true);
    let ci_pub = keys.public("ci").display().to_string();
    let out = meshgate(&["verify", "--key", &ci_pub, &reference]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("(sigstore-bundle)"), "{out:?}");
    bundle_verifies_independently(&host, &digest, &keys.public("ci"));
}

fn sigstore_verifies(reference: &str, digest: &str, public_key: &Path) {
    use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraint};
    use sigstore::cosign::{ClientBuilder, CosignCapabilities};
    use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};
    let pem = std::fs::read(public_key).unwrap();
    runtime().block_on(async {
        let mut client = ClientBuilder::default()
            .with_oci_client_config(ClientConfig {
                protocol: ClientProtocol::Http,
                ..Default::default()
            })
            .build()
            .unwrap();
        let image: OciReference = reference.parse().unwrap();
        let (_, source_digest) = client.triangulate(&image, &Auth::Anonymous).await.unwrap();
        assert_eq!(source_digest, digest);
        let layers = client
            .trusted_signature_layers(&Auth::Anonymous, &image)
            .await
            .unwrap();
        let verifier: Box<dyn VerificationConstraint> =
            Box::new(PublicKeyVerifier::try_from(pem.as_slice()).unwrap());
        let constraints = [verifier];
        sigstore::cosign::verify_constraints(&layers, constraints.iter())
            .unwrap_or_else(|e| panic!("sigstore rejects the signature: {e:?}"));
    });
}

fn bundle_verifies_independently(host: &str, digest: &str, public_key: &Path) {
    use base64::Engine as _;
    use ed25519_dalek::Verifier as _;
    use ed25519_dalek::pkcs8::DecodePublicKey as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (index, bundle) = runtime().block_on(async {
        let client = http();
        let auth = oci_client::secrets::RegistryAuth::Anonymous;
        // docker-registry has no referrers API: the tag schema index must list the bundle.
        let index_ref: oci_client::Reference =
            format!("{host}/meshgate/jwt-auth:{}", digest.replace(':', "-"))
                .parse()
                .unwrap();
        let (index, _) = client
            .pull_manifest_raw(
                &index_ref,
                &auth,
                &["application/vnd.oci.image.index.v1+json"],
            )
            .await
            .unwrap();
        let index: Json = serde_json::from_slice(&index).unwrap();
        let referrer = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let referrer_ref: oci_client::Reference = format!("{host}/meshgate/jwt-auth@{referrer}")
            .parse()
            .unwrap();
        let image = client
            .pull(
                &referrer_ref,
                &auth,
                vec!["application/vnd.dev.sigstore.bundle.v0.3+json"],
            )
            .await
            .unwrap();
        let manifest = image.manifest.unwrap();
        assert_eq!(manifest.subject.unwrap().digest, digest);
        (index, image.layers[0].data.to_vec())
    });
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    // The sigstore crate's protobuf bundle type accepts it.
    let parsed: sigstore::bundle::Bundle = serde_json::from_slice(&bundle).unwrap();
    assert_eq!(
        parsed.media_type,
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    let bundle: Json = serde_json::from_slice(&bundle).unwrap();
    let envelope = &bundle["dsseEnvelope"];
    let payload = b64.decode(envelope["payload"].as_str().unwrap()).unwrap();
    let statement: Json = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        statement["predicateType"],
        "https://sigstore.dev/cosign/sign/v1"
    );
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    let payload_type = envelope["payloadType"].as_str().unwrap();
    let mut pae = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    pae.extend_from_slice(&payload);
    let signature = b64
        .decode(envelope["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    let key = ed25519_dalek::VerifyingKey::from_public_key_pem(
        &std::fs::read_to_string(public_key).unwrap(),
    )
    .unwrap();
    key.verify(
        &pae,
        &ed25519_dalek::Signature::from_slice(&signature).unwrap(),
    )
    .expect("ed25519-dalek verifies the DSSE signature");
}

#[test]
fn cli_reports_key_and_password_problems() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("k").display().to_string();
    let out = meshgate_with(
        &["generate-key-pair", "--output-prefix", &prefix],
        &[("COSIGN_PASSWORD", None)],
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("COSIGN_PASSWORD"), "{out:?}");
    cli::meshgate_ok(&["generate-key-pair", "--output-prefix", &prefix]);
    let key = std::fs::read_to_string(dir.path().join("k.key")).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
    let public = std::fs::read_to_string(dir.path().join("k.pub")).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    // Existing keys are kept.
    let out = meshgate(&["generate-key-pair", "--output-prefix", &prefix]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--force"), "{out:?}");
    // A wrong password is named as the likely cause before any registry is contacted.
    let key_path = dir.path().join("k.key").display().to_string();
    let out = meshgate_with(
        &["sign", "--key", &key_path, "127.0.0.1:1/x/y:v1"],
        &[("COSIGN_PASSWORD", Some("wrong"))],
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("wrong COSIGN_PASSWORD"), "{out:?}");
}

#[test]
fn make_publish_pushes_and_signs_the_filters() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("publisher.key");
    // The prerequisites (filters, meshgate) are built before the tests run.
    let out = std::process::Command::new("make")
        .current_dir(paths::repo_root())
        .args(["-s", "-o", "filters", "-o", "meshgate", "publish"])
        .arg(format!("REGISTRY={}", registry.host()))
        .arg(format!("KEY={}", key.display()))
        .arg("TAG=test")
        .arg("INSECURE=1")
        .env("COSIGN_PASSWORD", cli::KEY_PASSWORD)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = key.with_extension("pub").display().to_string();
    for filter in ["jwt-auth", "rate-limit"] {
        let reference = format!("{}/meshgate/{filter}:test", registry.host());
        assert!(
            stdout.contains(&format!("publish: {reference}@sha256:")),
            "{stdout}"
        );
        let out = meshgate(&["verify", "--key", &public, &reference]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    // The dev key never signs for a registry other than loopback: nothing is pushed there.
    let out = std::process::Command::new("make")
        .current_dir(paths::repo_root())
        .args(["-s", "-o", "filters", "-o", "meshgate", "publish"])
        .arg("REGISTRY=registry.example:5000")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("registry.example:5000 is not a loopback registry: name the signing key"),
        "{stderr}"
    );
}

#[test]
fn artifact_check_parse_rejects_a_wasm_layer_that_does_not_parse() {
    let registry = Registry::start();
    let keys = Keys::new();
    let host = registry.host();
    // Wasm media types around bytes that only start like a module.
    let broken = format!("{host}/meshgate/broken:v1");
    push_raw(
        &broken,
        ("application/vnd.wasm.config.v0+json", b"{}".to_vec()),
        ("application/wasm", b"\0asm\x01\0\0\0\x01\xff\xff".to_vec()),
    );
    cli::sign(&keys.private("release"), &broken, false);
    let good = format!("{host}/meshgate/good:v1");
    cli::push(&wasm("test/passthrough.wasm"), &good);
    cli::sign(&keys.private("release"), &good, false);

    let webhook = start_webhook(&keys, "  artifactCheck: parse");
    let denied = review(&webhook, "broken", &[&broken]);
    assert_eq!(denied["allowed"], false);
    assert!(message(&denied).contains("does not parse"), "{denied}");
    assert_eq!(review(&webhook, "good", &[&good])["allowed"], true);

    // With the default check (media types only) the same broken artifact passes: the parse
    // check is what caught it.
    let lenient = start_webhook(&keys, "");
    assert_eq!(
        review(&lenient, "broken-lenient", &[&broken])["allowed"],
        true
    );
}

#[test]
fn an_image_index_is_admitted_only_when_every_entry_a_node_may_pull_is_wasm() {
    let registry = Registry::start();
    let keys = Keys::new();
    let host = registry.host();
    let repository = format!("{host}/meshgate/multi");
    cli::push(&wasm("jwt-auth.wasm"), &format!("{repository}:wasm"));
    push_container_image(&format!("{repository}:linux"), "amd64");
    // What buildx stores beside each platform: an in-toto attestation manifest.
    push_raw(
        &format!("{repository}:attestation"),
        (
            "application/vnd.oci.image.config.v1+json",
            json!({"architecture": "unknown", "os": "unknown", "rootfs": {"type": "layers", "diff_ids": []}})
                .to_string()
                .into_bytes(),
        ),
        ("application/vnd.in-toto+json", b"{}".to_vec()),
    );
    let attestation = json!({
        "vnd.docker.reference.type": "attestation-manifest",
        "vnd.docker.reference.digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
    });
    let webhook = start_webhook(&keys, "");
    let signed_index = |tag: &str, entries: &[(&str, &str, Json)]| {
        let reference = format!("{repository}:{tag}");
        push_index(&reference, entries);
        cli::sign(&keys.private("release"), &reference, false);
        reference
    };

    // (tag, entries, None when admitted or the denial's reason)
    let cases = [
        // A native entry beside the Wasm one: a linux/amd64 node would pull and run it.
        (
            "mixed",
            vec![
                ("linux", "linux/amd64", Json::Null),
                ("wasm", "wasip1/wasm", Json::Null),
            ],
            Some("is for platform linux/amd64"),
        ),
        // An entry that claims a Wasm platform but holds a native image.
        (
            "disguised",
            vec![
                ("wasm", "wasip1/wasm", Json::Null),
                ("linux", "wasip2/wasm", Json::Null),
            ],
            Some("(wasip2/wasm): not a Wasm artifact"),
        ),
        // An entry without a platform matches every node.
        (
            "no-platform",
            vec![
                ("wasm", "wasip1/wasm", Json::Null),
                ("linux", "", Json::Null),
            ],
            Some("names no platform"),
        ),
        // buildx attestations (unknown/unknown) are never pulled by a node: skipped.
        (
            "attested",
            vec![
                ("wasm", "wasip1/wasm", Json::Null),
                ("attestation", "unknown/unknown", attestation.clone()),
            ],
            None,
        ),
        (
            "only-attestation",
            vec![("attestation", "unknown/unknown", attestation)],
            Some("no Wasm platform entry"),
        ),
    ];
    for (tag, entries, denial) in cases {
        let reference = signed_index(tag, &entries);
        let answer = review(&webhook, tag, &[&reference]);
        match denial {
            None => assert_eq!(answer["allowed"], true, "{tag}: {answer}"),
            Some(reason) => {
                assert_eq!(answer["allowed"], false, "{tag}: {answer}");
                assert!(message(&answer).contains(reason), "{tag}: {answer}");
            }
        }
    }
}

#[test]
fn a_rule_that_requires_a_digest_refuses_tags() {
    let registry = Registry::start();
    let keys = Keys::new();
    let host = registry.host();
    let tagged = format!("{host}/pinned/app:v1");
    let digest = cli::push(&wasm("jwt-auth.wasm"), &tagged);
    cli::sign(&keys.private("release"), &tagged, false);
    let webhook = start_webhook_with_rules(
        &keys,
        "    - {name: pinned, images: [\"127.0.0.1:*/pinned/**\"], keys: [release], requireDigest: true}",
        "",
    );
    let denied = review(&webhook, "tag", &[&tagged]);
    assert_eq!(denied["allowed"], false, "{denied}");
    assert!(
        message(&denied).contains("trust rule pinned requires a digest reference"),
        "{denied}"
    );
    for (name, image) in [
        ("digest", format!("{host}/pinned/app@{digest}")),
        ("tag-and-digest", format!("{tagged}@{digest}")),
    ] {
        let allowed = review(&webhook, name, &[&image]);
        assert_eq!(allowed["allowed"], true, "{image}: {allowed}");
    }
    // Rules without requireDigest still take tags.
    let other = format!("{host}/meshgate/app:v1");
    cli::push(&wasm("jwt-auth.wasm"), &other);
    cli::sign(&keys.private("release"), &other, false);
    assert_eq!(review(&webhook, "other-tag", &[&other])["allowed"], true);
}

/// An UPDATE of `old` to `new` (both Pods or both workloads).
fn update(webhook: &Webhook, name: &str, old: &Json, new: &Json) -> Json {
    webhook.review(&request(&format!("uid-{name}"), "UPDATE", new, Some(old)))
}

#[test]
fn an_update_that_keeps_its_images_does_not_need_the_registry() {
    let registry = Registry::start();
    let keys = Keys::new();
    let host = registry.host();
    let kept = format!("{host}/meshgate/kept:v1");
    cli::push(&wasm("jwt-auth.wasm"), &kept);
    cli::sign(&keys.private("release"), &kept, false);
    let added = format!("{host}/meshgate/added:v1");
    cli::push(&wasm("rate-limit.wasm"), &added);
    cli::sign(&keys.private("release"), &added, false);
    let webhook = start_webhook(&keys, "");

    let pod = pod_with_images("job-pod", &[&kept], &[]);
    assert_eq!(review(&webhook, "create", &[&kept])["allowed"], true);
    drop(registry);

    // A controller removes its finalizer while the registry is down.
    let mut finalized = pod.clone();
    finalized["metadata"]["finalizers"] = json!(["batch.kubernetes.io/job-tracking"]);
    let allowed = update(&webhook, "finalizer", &finalized, &pod);
    assert_eq!(allowed["allowed"], true, "{allowed}");
    // With onUpdate: allImages the same UPDATE verifies again, and the registry is down.
    let every_image = start_webhook(&keys, "  onUpdate: allImages");
    let denied = update(&every_image, "finalizer-all", &finalized, &pod);
    assert_eq!(denied["allowed"], false, "{denied}");
    assert!(message(&denied).contains("unavailable"), "{denied}");

    // An image the UPDATE brings is verified as usual.
    let grown = pod_with_images("job-pod", &[&kept, &added], &[]);
    let denied = update(&webhook, "added", &pod, &grown);
    assert_eq!(denied["allowed"], false, "{denied}");
    let reason = message(&denied);
    assert!(reason.contains(&format!("{added}: registry")), "{reason}");
    assert!(!reason.contains(&format!("{kept}:")), "{reason}");

    // A workload moved onto a Wasm RuntimeClass: its old pods ran elsewhere, so nothing is
    // vouched for.
    let deployment = |runtime_class: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "moved", "namespace": "apps"},
            "spec": {"template": {"spec": {
                "runtimeClassName": runtime_class,
                "containers": [{"name": "c", "image": kept}],
            }}},
        })
    };
    let denied = update(
        &webhook,
        "moved",
        &deployment("runc"),
        &deployment("wasmtime"),
    );
    assert_eq!(denied["allowed"], false, "{denied}");
    assert!(message(&denied).contains(&kept), "{denied}");
}

/// A registry that reads every request and never answers.
struct SilentRegistry {
    server: std::sync::Arc<tiny_http::Server>,
    port: u16,
    /// Requests received so far.
    received: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentRegistry {
    fn start() -> SilentRegistry {
        let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let thread = {
            let server = server.clone();
            let received = received.clone();
            std::thread::spawn(move || {
                // Held, unanswered, until the server is unblocked.
                let held: Vec<_> = server
                    .incoming_requests()
                    .inspect(|_| {
                        received.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    })
                    .collect();
                drop(held);
            })
        };
        SilentRegistry {
            server,
            port,
            received,
            thread: Some(thread),
        }
    }

    fn image(&self, repository: &str) -> String {
        format!("127.0.0.1:{}/{repository}:v1", self.port)
    }

    fn received(&self) -> usize {
        self.received.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for SilentRegistry {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn an_image_that_cannot_be_verified_is_admitted_only_under_the_sections_own_ignore() {
    let keys = Keys::new();
    let failing = HostileRegistry::start(|_| Reply::status(503, "unavailable"));
    let image = format!("{}/meshgate/app:v1", failing.host());

    // The server's failurePolicy is for policy errors; it does not admit unverified images.
    let server_ignore = start_webhook(&keys, "failurePolicy: Ignore");
    let denied = review(&server_ignore, "server-ignore", &[&image]);
    assert_eq!(denied["allowed"], false, "{denied}");
    assert!(message(&denied).contains("unavailable"), "{denied}");

    // Opted into here: admitted, and the warning says it was not verified.
    let image_ignore = start_webhook(&keys, "  failurePolicy: Ignore");
    let allowed = review(&image_ignore, "image-ignore", &[&image]);
    assert_eq!(allowed["allowed"], true, "{allowed}");
    let warnings = allowed["warnings"].to_string();
    assert!(warnings.contains(&image), "{warnings}");
    assert!(warnings.contains("admitted unverified"), "{warnings}");
    assert!(
        image_ignore.log().contains("image admitted unverified"),
        "logged for audit"
    );
}

#[test]
fn a_review_deadline_under_the_servers_ignore_does_not_admit_unverified_images() {
    let keys = Keys::new();
    // A registry that never answers, and image checks allowed to outlast the review.
    let stalling = SilentRegistry::start();
    let slow = start_webhook(&keys, "failurePolicy: Ignore\nlimits:\n  reviewTimeout: 1s");
    let denied = review(&slow, "deadline", &[&stalling.image("meshgate/app")]);
    assert_eq!(denied["allowed"], false, "{denied}");
    assert!(message(&denied).contains("did not finish"), "{denied}");
}

#[test]
fn while_loading_the_servers_ignore_does_not_admit_pods_unverified() {
    let keys = Keys::new();
    // The webhook fetches a policy image at startup from a registry that never answers, so it
    // serves reviews for `timeout` before its policies are loaded (then it exits).
    let stalling = SilentRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
failurePolicy: Ignore
tls: {{stateDir: "{tls}"}}
imageVerification:
  keys: [{{name: release, file: "{release}"}}]
  trust: [{{name: all, images: ["127.0.0.1:*/**"], keys: [release]}}]
  timeout: 20s
  registries: [{{host: "127.0.0.1:*", insecure: true}}]
policies:
  - name: slow-to-load
    wasm: {{image: "{policy}"}}
"#,
        tls = dir.path().join("tls").display(),
        release = keys.public("release").display(),
        policy = stalling.image("meshgate/policy"),
    );
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, config).unwrap();
    let port = free_port();
    let mut command = std::process::Command::new(meshgate_integration::webhook::meshgate_binary());
    command
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    let mut process =
        meshgate_integration::Process::spawn("meshgate serve", command, &dir.path().join("log"));
    let ca = dir.path().join("tls/ca.crt");
    process
        .wait_until(Duration::from_secs(10), || ca.is_file())
        .unwrap();
    let client = meshgate_integration::webhook::client_trusting(&ca);
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": request("uid-loading", "CREATE", &pod_with_images("early", &["127.0.0.1:1/meshgate/app:v1"], &[]), None),
    })
    .to_string();
    let started = Instant::now();
    let answer: Json = loop {
        let sent = client
            .post(format!("https://127.0.0.1:{port}/validate"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send();
        if let Ok(response) = sent {
            break response.json().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            process.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let response = &answer["response"];
    let readyz = client
        .get(format!("https://127.0.0.1:{port}/readyz"))
        .send()
        .unwrap()
        .status();
    assert_eq!(readyz, 503, "answered while still loading");
    assert_eq!(response["allowed"], false, "{answer}");
    assert!(message(response).contains("still loading"), "{answer}");
}

#[test]
fn a_pod_with_more_images_than_the_cap_is_denied_without_asking_the_registry() {
    let keys = Keys::new();
    let stalling = SilentRegistry::start();
    let images: Vec<String> = (0..65)
        .map(|i| stalling.image(&format!("meshgate/app{i}")))
        .collect();
    let images: Vec<&str> = images.iter().map(String::as_str).collect();

    let webhook = start_webhook(&keys, "");
    let started = Instant::now();
    let denied = review(&webhook, "too-many", &images);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(denied["allowed"], false, "{denied}");
    let reason = message(&denied);
    assert!(reason.contains("65 distinct images"), "{reason}");
    assert!(reason.contains("maxImagesPerReview (64)"), "{reason}");
    assert_eq!(stalling.received(), 0, "no image was looked up");

    // The cap counts distinct images: the same image in many containers is one.
    let same = vec![images[0]; 100];
    let one = review(&webhook, "one-image", &same);
    assert!(!message(&one).contains("maxImagesPerReview"), "{one}");
    assert_eq!(stalling.received(), 1, "looked up once");

    // Under the section's own Ignore such a pod is admitted, unverified, with a warning.
    let open = start_webhook(&keys, "  failurePolicy: Ignore\n  maxImagesPerReview: 10");
    let allowed = review(&open, "too-many-open", &images[..11]);
    assert_eq!(allowed["allowed"], true, "{allowed}");
    assert!(
        allowed["warnings"]
            .to_string()
            .contains("maxImagesPerReview (10)"),
        "{allowed}"
    );
}

#[test]
fn many_images_on_a_silent_registry_are_answered_in_time_with_bounded_work() {
    let keys = Keys::new();
    let stalling = SilentRegistry::start();
    // Image checks (2 s) outlast the review (1 s): every review ends at its deadline, and
    // what it left running must stop with it.
    let webhook = std::sync::Arc::new(start_webhook(
        &keys,
        "  maxImagesPerReview: 200\nlimits:\n  reviewTimeout: 1s",
    ));
    let mut rss = Vec::new();
    for round in 0..5 {
        let before = stalling.received();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let webhook = webhook.clone();
                let images: Vec<String> = (0..200)
                    .map(|i| stalling.image(&format!("meshgate/r{round}-{t}-{i}")))
                    .collect();
                std::thread::spawn(move || {
                    let images: Vec<&str> = images.iter().map(String::as_str).collect();
                    let started = Instant::now();
                    let answer = review(&webhook, &format!("many-{round}-{t}"), &images);
                    (started.elapsed(), answer)
                })
            })
            .collect();
        // Probes stay prompt meanwhile.
        let mut slowest = Duration::ZERO;
        while !threads.iter().all(|t| t.is_finished()) {
            let started = Instant::now();
            assert_eq!(webhook.get("/healthz").0, 200);
            slowest = slowest.max(started.elapsed());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            slowest < Duration::from_millis(500),
            "/healthz took {slowest:?}"
        );
        for thread in threads {
            let (elapsed, answer) = thread.join().unwrap();
            assert!(
                elapsed < Duration::from_secs(2),
                "answered after {elapsed:?}"
            );
            assert_eq!(answer["allowed"], false, "{answer}");
            assert!(message(&answer).contains("not finished"), "{answer}");
        }
        // 16 checks per review at once, each stalled on its first request: 64 requests for
        // the 800 images of a round, not one per image.
        let asked = stalling.received() - before;
        assert!(
            asked <= 4 * 16,
            "{asked} registry requests in round {round}"
        );
        std::thread::sleep(Duration::from_millis(200));
        rss.push(webhook.rss());
    }
    let growth = rss[4].saturating_sub(rss[1]);
    assert!(
        growth < 8 << 20,
        "resident memory grew by {growth} bytes: {rss:?}"
    );

    // SIGTERM under this load stops the process promptly.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let webhook = webhook.clone();
            let images: Vec<String> = (0..200)
                .map(|i| stalling.image(&format!("meshgate/term-{t}-{i}")))
                .collect();
            std::thread::spawn(move || {
                let images: Vec<&str> = images.iter().map(String::as_str).collect();
                review(&webhook, "term", &images);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let terminated = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &webhook.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // An answer may be lost to the shutdown (the thread then panics): only the exit counts.
    for thread in threads {
        let _ = thread.join();
    }
    let mut webhook = std::sync::Arc::into_inner(webhook).unwrap();
    while webhook.running() && terminated.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        terminated.elapsed() < Duration::from_secs(3),
        "exited {:?} after SIGTERM (running: {})",
        terminated.elapsed(),
        webhook.running()
    );
}

/// Pushes a manifest with the given config and layers (media type, bytes), as given; returns
/// its digest.
fn push_layers(reference: &str, config: (&str, Vec<u8>), layers: &[(&str, Vec<u8>)]) -> String {
    use oci_client::client::{Config, ImageLayer};
    let reference: oci_client::Reference = reference.parse().unwrap();
    let layers: Vec<ImageLayer> = layers
        .iter()
        .map(|(media_type, bytes)| ImageLayer::new(bytes.clone(), media_type.to_string(), None))
        .collect();
    let config = Config::new(config.1, config.0.into(), None);
    runtime().block_on(async {
        let client = http();
        let auth = oci_client::secrets::RegistryAuth::Anonymous;
        client
            .push(&reference, &layers, config, &auth, None)
            .await
            .unwrap();
        client
            .fetch_manifest_digest(&reference, &auth)
            .await
            .unwrap()
    })
}

/// Wasm media types never carry a container filesystem in: a Wasm config over a native layer,
/// a native image with a decoy Wasm layer, and (under `parse`) an `architecture: wasm` image
/// whose layers hold no Wasm are refused, naming why; the layouts `meshgate push` and runwasi
/// write are admitted. Under a rule without keys, so the artifact check is the only gate.
#[test]
fn the_artifact_check_refuses_native_layers_under_wasm_media_types() {
    const TAR: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    const IMAGE: &str = "application/vnd.oci.image.config.v1+json";
    const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
    const ISTIO_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
    const COMPONENT: &str = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
    let registry = Registry::start();
    let keys = Keys::new();
    let repository = format!("{}/open/native", registry.host());
    let elf = b"\x7fELF\x02\x01\x01 native payload".to_vec();
    let image_config = |architecture: &str, os: &str| {
        json!({"architecture": architecture, "os": os,
               "config": {"Entrypoint": ["/bin/evil"]},
               "rootfs": {"type": "layers", "diff_ids": [sha256_of(&elf)]}})
        .to_string()
        .into_bytes()
    };
    let module = std::fs::read(wasm("test/passthrough.wasm")).unwrap();
    let native = (TAR, elf.clone());
    let decoy = ("application/wasm", module.clone());
    let refused = [
        (
            "cfgonly",
            WASM_CONFIG,
            image_config("amd64", "linux"),
            vec![native.clone()],
        ),
        (
            "istiocfg",
            ISTIO_CONFIG,
            image_config("amd64", "linux"),
            vec![native.clone()],
        ),
        (
            "decoy",
            IMAGE,
            image_config("amd64", "linux"),
            vec![native.clone(), decoy.clone()],
        ),
        (
            "wasmdecoy",
            WASM_CONFIG,
            b"{}".to_vec(),
            vec![native.clone(), decoy.clone()],
        ),
        (
            "archwasm",
            IMAGE,
            image_config("wasm", "wasip1"),
            vec![native.clone()],
        ),
    ];
    for (tag, config_type, config, layers) in &refused {
        push_layers(
            &format!("{repository}:{tag}"),
            (config_type, config.clone()),
            layers,
        );
    }
    // What `meshgate push` writes in both formats, and runwasi's oci-tar-builder image.
    let oci = format!("{repository}:oci");
    cli::push(&wasm("test/passthrough.wasm"), &oci);
    let istio = format!("{repository}:istio");
    cli::push_format(&wasm("test/passthrough.wasm"), &istio, "istio");
    let component = format!("{repository}:component");
    push_layers(
        &component,
        (IMAGE, image_config("wasm", "wasip1")),
        &[(COMPONENT, module.clone())],
    );

    let open = "    - {name: open, images: [\"127.0.0.1:*/open/**\"], keys: []}";
    let parse = start_webhook_with_rules(&keys, open, "  artifactCheck: parse");
    let lenient = start_webhook_with_rules(&keys, open, "");
    let tar_layer = |i: usize| format!("layer {i} has media type {TAR}, not a Wasm layer");
    for (tag, why) in [
        ("cfgonly", tar_layer(0)),
        ("istiocfg", tar_layer(0)),
        ("decoy", tar_layer(0)),
        ("wasmdecoy", tar_layer(0)),
        (
            "archwasm",
            "oci-image-wasm image has no Wasm layer for artifactCheck parse".into(),
        ),
    ] {
        let image = format!("{repository}:{tag}");
        let denied = review(&parse, &format!("parse-{tag}"), &[&image]);
        assert_eq!(denied["allowed"], false, "{tag}: {denied}");
        assert!(message(&denied).contains(&why), "{tag}: {denied}");
        // The media-type check refuses the same shapes, except the documented
        // `architecture: wasm` image, whose filesystem layers only `parse` looks for Wasm in.
        let lenient_review = review(&lenient, &format!("lenient-{tag}"), &[&image]);
        assert_eq!(
            lenient_review["allowed"],
            tag == "archwasm",
            "{tag}: {lenient_review}"
        );
        if tag != "archwasm" {
            assert!(
                message(&lenient_review).contains("not a Wasm artifact"),
                "{tag}: {lenient_review}"
            );
        }
    }
    for (image, kind) in [
        (&oci, "wasm-oci"),
        (&istio, "istio"),
        (&component, "wasm-component"),
    ] {
        for webhook in [&parse, &lenient] {
            let allowed = review(webhook, "accepted", &[image]);
            assert_eq!(allowed["allowed"], true, "{image}: {allowed}");
            assert!(
                allowed["warnings"]
                    .to_string()
                    .contains(&format!("{image} is {kind} signed by")),
                "{allowed}"
            );
        }
    }
}
