//! Registries: the harness's real `docker-registry` accepts a push and serves the same bytes
//! back; and registries that misbehave on purpose ([`HostileRegistry`]) against the real
//! `meshgate serve` and the real CLI: endless answers, redirects to internal addresses, error
//! bodies, plain HTTP, credentials asked for by the wrong host.

// Test helpers fail the test by panicking, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshgate_integration::cli;
use meshgate_integration::registry::{Reply, Seen};
use meshgate_integration::{HostileRegistry, Registry, Webhook, paths};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_and_pulls_an_oci_wasm_artifact() {
    let registry = tokio::task::spawn_blocking(Registry::start).await.unwrap();
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let wasm = std::fs::read(paths::dist_dir().join("test/passthrough.wasm"))
        .expect("dist/test/passthrough.wasm (run `make filters`)");
    let reference: Reference = format!("{}/meshgate/passthrough:v1", registry.host())
        .parse()
        .unwrap();
    let layers = vec![ImageLayer::new(
        wasm.clone(),
        "application/wasm".into(),
        None,
    )];
    let config = Config::new(
        b"{}".to_vec(),
        "application/vnd.wasm.config.v0+json".into(),
        None,
    );
    let manifest = OciImageManifest::build(&layers, &config, None);
    let pushed = client
        .push(
            &reference,
            &layers,
            config,
            &RegistryAuth::Anonymous,
            Some(manifest),
        )
        .await
        .unwrap();
    assert!(
        pushed
            .manifest_url
            .contains("/v2/meshgate/passthrough/manifests/")
    );

    let image = client
        .pull(
            &reference,
            &RegistryAuth::Anonymous,
            vec!["application/wasm"],
        )
        .await
        .unwrap();
    assert_eq!(image.layers.len(), 1);
    assert_eq!(image.layers[0].data.as_ref(), wasm.as_slice());
    let digest = image.digest.expect("pull reports the manifest digest");
    assert!(digest.starts_with("sha256:"), "{digest}");
    // The registry really served it: its access log has the manifest GET.
    assert!(
        registry
            .log()
            .contains("GET /v2/meshgate/passthrough/manifests/v1")
    );
}

/// `meshgate push` in both layouts, read back with an independent OCI client.
#[test]
fn meshgate_push_writes_the_wasm_artifact_layouts() {
    let registry = Registry::start();
    let wasm = paths::dist_dir().join("test/passthrough.wasm");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    for (format, config_type, layer_type) in [
        (
            "oci",
            "application/vnd.wasm.config.v0+json",
            "application/wasm",
        ),
        (
            "istio",
            "application/vnd.module.wasm.config.v1+json",
            "application/vnd.module.wasm.content.layer.v1+wasm",
        ),
    ] {
        let reference = format!("{}/meshgate/passthrough:{format}", registry.host());
        let out = std::process::Command::new(meshgate_integration::webhook::meshgate_binary())
            .args([
                "push",
                "--insecure-registry",
                &registry.host(),
                wasm.to_str().unwrap(),
                &reference,
                "--format",
                format,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let digest = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let parsed: Reference = reference.parse().unwrap();
        let (manifest, served_digest) = runtime
            .block_on(client.pull_image_manifest(&parsed, &RegistryAuth::Anonymous))
            .unwrap();
        assert_eq!(digest, served_digest);
        assert_eq!(manifest.config.media_type, config_type);
        assert_eq!(manifest.layers.len(), 1);
        assert_eq!(manifest.layers[0].media_type, layer_type);
    }
    // Not Wasm: refused before any upload.
    let out = std::process::Command::new(meshgate_integration::webhook::meshgate_binary())
        .args([
            "push",
            "Cargo.toml",
            &format!("{}/meshgate/x:1", registry.host()),
        ])
        .current_dir(paths::repo_root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly binary"));
}

// Registries that misbehave on purpose, against the real `meshgate serve` and the real CLI.

/// `sha256:<hex>` of some bytes.
fn digest_of(bytes: &[u8]) -> String {
    meshgate_admission::oci::sha256_digest(bytes)
}

/// A one-layer manifest in the CNCF Wasm layout (its blobs are never fetched by the default
/// artifact check).
fn wasm_manifest() -> Vec<u8> {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json",
                   "digest": digest_of(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/wasm", "digest": digest_of(b"\0asm"), "size": 4}],
    })
    .to_string()
    .into_bytes()
}

fn manifest_reply(bytes: &[u8]) -> Reply {
    Reply::Body(
        200,
        vec![(
            "content-type".into(),
            "application/vnd.oci.image.manifest.v1+json".into(),
        )],
        bytes.to_vec(),
    )
}

/// Reviews a Wasm pod with one image; returns (allowed, message).
fn review_image(webhook: &Webhook, image: &str) -> (bool, String) {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "namespace": "apps"},
        "spec": {"runtimeClassName": "wasmtime", "containers": [{"name": "app", "image": image}]},
    });
    let response = webhook.review(&meshgate_integration::webhook::request(
        "uid-registry",
        "CREATE",
        &pod,
        None,
    ));
    (
        response["allowed"] == true,
        response["status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

/// A public key file for trust rules.
fn public_key(dir: &std::path::Path) -> String {
    let prefix = dir.join("release");
    cli::key_pair(&prefix, "ecdsa-p256");
    prefix.with_extension("pub").display().to_string()
}

/// Image verification of `127.0.0.1:*/**` with a key, and `extra` (indented two spaces).
fn verifying_webhook(key: &str, extra: &str) -> Webhook {
    Webhook::start(&format!(
        "imageVerification:\n  keys: [{{name: release, file: \"{key}\"}}]\n  trust:\n    \
         - {{name: local, images: [\"127.0.0.1:*/signed/**\"], keys: [release]}}\n    \
         - {{name: unsigned, images: [\"127.0.0.1:*/**\"], keys: []}}\n  \
         timeout: 5s\n  negativeCacheTtl: 0s\n  tagTtl: 0s\n{extra}\n"
    ))
}

/// Manifests, signature payloads and referrer indexes are read under their caps: an endless
/// or over-declared answer is refused once the cap is reached, not read whole.
#[test]
fn registry_answers_are_read_under_their_caps() {
    let manifest = wasm_manifest();
    let digest = digest_of(&manifest);
    let hex = digest.trim_start_matches("sha256:").to_string();
    let payload_digest = digest_of(b"a signature payload");
    let signature_manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest_of(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": payload_digest, "size": 19,
                    "annotations": {"dev.cosignproject.cosign/signature": "c2ln"}}],
    });
    const HUGE: u64 = 512 * 1024 * 1024;
    let registry = {
        let (manifest, hex) = (manifest.clone(), hex.clone());
        HostileRegistry::start(move |seen: &Seen| {
            let url = seen.url.as_str();
            match url {
                "/v2/signed/endless/manifests/v1" => Reply::Stream(HUGE),
                "/v2/signed/declared/manifests/v1" => Reply::Declared(HUGE),
                _ if url.ends_with("/manifests/v1") => manifest_reply(&manifest),
                _ if url.starts_with("/v2/signed/payload/manifests/sha256-")
                    && url.ends_with(".sig") =>
                {
                    Reply::json(&signature_manifest)
                }
                _ if url.starts_with("/v2/signed/payload/blobs/") => Reply::Stream(HUGE),
                _ if url.starts_with(&format!("/v2/signed/referrers/referrers/sha256:{hex}")) => {
                    Reply::Stream(HUGE)
                }
                _ => Reply::status(404, "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\"}]}"),
            }
        })
    };
    let host = registry.host();
    let keys = tempfile::tempdir().unwrap();
    let webhook = verifying_webhook(
        &public_key(keys.path()),
        &format!("  registries: [{{host: \"{host}\", insecure: true}}]"),
    );
    for (image, cap) in [
        ("signed/endless:v1", 4 * 1024 * 1024),
        ("signed/declared:v1", 4 * 1024 * 1024),
        ("signed/payload:v1", 256 * 1024),
        ("signed/referrers:v1", 4 * 1024 * 1024),
    ] {
        let before = registry.streamed_bytes();
        let started = std::time::Instant::now();
        let (allowed, message) = review_image(&webhook, &format!("{host}/{image}"));
        let sent = registry.streamed_bytes() - before;
        assert!(!allowed, "{image}: {message}");
        assert!(
            message.contains(&format!("is larger than {cap} bytes")),
            "{image}: {message}"
        );
        // What the server got out before the client hung up: the cap plus socket buffers,
        // nowhere near the 512 MiB on offer.
        assert!(sent < 32 * 1024 * 1024, "{image}: {sent} bytes streamed");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(4),
            "{image}: {:?}",
            started.elapsed()
        );
    }
}

/// Redirects stay on the registry's host, and what a server says in an error body never
/// reaches the denial message.
#[test]
fn redirects_stay_on_the_registry_host_and_bodies_stay_out_of_messages() {
    let internal = HostileRegistry::start(|_| Reply::status(500, "INTERNAL-SECRET-4821"));
    let target = format!("http://{}/latest/meta-data/iam", internal.host());
    let registry = HostileRegistry::start(move |seen: &Seen| match seen.url.as_str() {
        "/v2/redirect/app/manifests/v1" => Reply::redirect(307, &target),
        "/v2/fails/app/manifests/v1" => Reply::status(500, "REGISTRY-SECRET-1177"),
        "/v2/forbidden/app/manifests/v1" => Reply::status(403, "REGISTRY-SECRET-1177"),
        _ => Reply::status(404, "REGISTRY-SECRET-1177"),
    });
    let keys = tempfile::tempdir().unwrap();
    let webhook = verifying_webhook(
        &public_key(keys.path()),
        &format!(
            "  registries:\n    - {{host: \"{}\", insecure: true}}\n    - {{host: \"{}\", insecure: true}}",
            registry.host(),
            internal.host()
        ),
    );
    let host = registry.host();
    let (allowed, message) = review_image(&webhook, &format!("{host}/redirect/app:v1"));
    assert!(!allowed);
    assert!(
        message.contains("redirect to another host refused (HTTP 307)"),
        "{message}"
    );
    assert!(!message.contains("SECRET"), "{message}");
    assert!(
        internal.requests().is_empty(),
        "the internal URL was fetched: {:?}",
        internal.requests()
    );
    for (image, phrase) in [
        ("fails/app:v1", "HTTP 500"),
        ("forbidden/app:v1", "access denied (HTTP 403)"),
        ("missing/app:v1", "not found"),
    ] {
        let (allowed, message) = review_image(&webhook, &format!("{host}/{image}"));
        assert!(!allowed);
        assert!(message.contains(phrase), "{image}: {message}");
        assert!(!message.contains("SECRET"), "{image}: {message}");
    }
}

/// Blob downloads may leave the registry's host only for hosts listed in its
/// `blobRedirectHosts`, and never carry the registry's credentials there.
#[test]
fn blob_redirects_go_only_to_listed_hosts_without_credentials() {
    let config =
        br#"{"architecture":"wasm","os":"wasip1","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = digest_of(config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest_of(b"layer"), "size": 5}],
    })
    .to_string()
    .into_bytes();
    let storage = HostileRegistry::start(move |_| Reply::Body(200, Vec::new(), config.to_vec()));
    let location = format!("http://{}/bucket/blob?signature=abc", storage.host());
    let registry = HostileRegistry::start(move |seen: &Seen| {
        if seen.authorization.is_none() {
            return Reply::Body(
                401,
                vec![("www-authenticate".into(), "Basic realm=\"test\"".into())],
                Vec::new(),
            );
        }
        match seen.url.as_str() {
            "/v2/wasm/image/manifests/v1" => manifest_reply(&manifest),
            url if url.starts_with("/v2/wasm/image/blobs/") => Reply::redirect(307, &location),
            _ => Reply::status(404, ""),
        }
    });
    let (host, storage_host) = (registry.host(), storage.host());
    let keys = tempfile::tempdir().unwrap();
    let key = public_key(keys.path());
    let access = |redirects: &str| {
        format!(
            "  registries:\n    - {{host: \"{host}\", insecure: true, username: robot, password: s3cret{redirects}}}\n    \
             - {{host: \"{storage_host}\", insecure: true}}"
        )
    };
    let image = format!("{host}/wasm/image:v1");

    // Not listed: the redirect is refused and the storage host never asked.
    let strict = verifying_webhook(&key, &access(""));
    let (allowed, message) = review_image(&strict, &image);
    assert!(!allowed, "{message}");
    assert!(
        message.contains("redirect to another host refused"),
        "{message}"
    );
    assert!(storage.requests().is_empty(), "{:?}", storage.requests());

    // Listed: followed, without the registry's credentials.
    let listed = verifying_webhook(
        &key,
        &access(&format!(", blobRedirectHosts: [\"{storage_host}\"]")),
    );
    let (allowed, message) = review_image(&listed, &image);
    assert!(allowed, "{message}");
    let fetched = storage.requests();
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert_eq!(fetched[0].url, "/bucket/blob?signature=abc");
    assert_eq!(
        fetched[0].authorization, None,
        "credentials followed the redirect"
    );
    // The registry itself got them (the challenge was answered).
    assert!(
        registry
            .requests()
            .iter()
            .any(|r| r.authorization.as_deref() == Some("Basic cm9ib3Q6czNjcmV0")),
        "{:?}",
        registry.requests()
    );
}

/// A registry on loopback is spoken to in HTTPS like any other unless the configuration lists
/// it as insecure (webhook) or the user says so (CLI).
#[test]
fn loopback_registries_are_https_unless_listed_insecure() {
    let registry = meshgate_integration::Registry::start();
    let host = registry.host();
    let keys = tempfile::tempdir().unwrap();
    let key = public_key(keys.path());
    let wasm = paths::dist_dir().join("test/passthrough.wasm");
    let image = format!("{host}/signed/plain:v1");

    // The CLI without being told: HTTPS, which a plain HTTP registry cannot answer.
    let uploads = |log: &str| {
        log.lines()
            .filter(|l| l.contains("response completed"))
            .count()
    };
    let served_before = uploads(&registry.log());
    let out = cli::meshgate_with(
        &["push", wasm.to_str().unwrap(), &image],
        &[("MESHGATE_INSECURE_REGISTRIES", None)],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        uploads(&registry.log()),
        served_before,
        "{}",
        registry.log()
    );
    // Told, with the flag: plain HTTP.
    let out = cli::meshgate_with(
        &[
            "push",
            "--insecure-registry",
            &host,
            wasm.to_str().unwrap(),
            &image,
        ],
        &[("MESHGATE_INSECURE_REGISTRIES", None)],
    );
    assert_eq!(out.code, 0, "{out:?}");
    cli::sign(&keys.path().join("release.key"), &image, false);

    let served_before = uploads(&registry.log());
    let webhook = verifying_webhook(&key, "");
    let (allowed, message) = review_image(&webhook, &image);
    assert!(!allowed, "{message}");
    assert!(
        message.contains(&format!("registry {host} unavailable")),
        "{message}"
    );
    assert_eq!(
        uploads(&registry.log()),
        served_before,
        "{}",
        registry.log()
    );

    let webhook = verifying_webhook(
        &key,
        &format!("  registries: [{{host: \"{host}\", insecure: true}}]"),
    );
    let (allowed, message) = review_image(&webhook, &image);
    assert!(allowed, "{message}");
}

/// The CLI's credentials go to the registry `MESHGATE_REGISTRY_HOST` names and nowhere else:
/// not to another registry a reference names, not through a redirect.
#[test]
fn cli_sends_credentials_only_to_their_registry_host() {
    let challenge = |seen: &Seen, other: Option<&str>| -> Reply {
        if let (Some(other), true) = (other, seen.url.starts_with("/v2/redirect/")) {
            return Reply::redirect(307, &format!("http://{other}/v2/x/app/manifests/v1"));
        }
        match seen.authorization {
            None => Reply::Body(
                401,
                vec![("www-authenticate".into(), "Basic realm=\"test\"".into())],
                Vec::new(),
            ),
            Some(_) => Reply::status(404, ""),
        }
    };
    let other = HostileRegistry::start(move |seen: &Seen| challenge(seen, None));
    let other_host = other.host();
    let own = HostileRegistry::start(move |seen: &Seen| challenge(seen, Some(&other_host)));
    let keys = tempfile::tempdir().unwrap();
    let key = public_key(keys.path());
    let credentials = [
        ("MESHGATE_REGISTRY_USERNAME", Some("robot")),
        ("MESHGATE_REGISTRY_PASSWORD", Some("s3cret")),
    ];
    let own_host = own.host();
    let mut scoped = credentials.to_vec();
    scoped.push(("MESHGATE_REGISTRY_HOST", Some(own_host.as_str())));
    let verify =
        |reference: String| cli::meshgate_with(&["verify", "--key", &key, &reference], &scoped);

    // Another registry named in a reference: asked, challenged, and given nothing.
    let out = verify(format!("{}/x/app:v1", other.host()));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        !other.requests().is_empty(),
        "the other registry was not asked"
    );
    assert!(
        other.requests().iter().all(|r| r.authorization.is_none()),
        "credentials sent to another registry: {:?}",
        other.requests()
    );

    // Their own registry gets them.
    let out = verify(format!("{own_host}/x/app:v1"));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        own.requests()
            .iter()
            .any(|r| r.authorization.as_deref() == Some("Basic cm9ib3Q6czNjcmV0")),
        "{:?}",
        own.requests()
    );

    // A redirect from their registry to another host is not followed with them.
    let asked = other.requests().len();
    let out = verify(format!("{own_host}/redirect/app:v1"));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("redirect to another host refused"),
        "{out:?}"
    );
    assert!(
        other.requests()[asked..]
            .iter()
            .all(|r| r.authorization.is_none()),
        "{:?}",
        other.requests()
    );

    // Credentials without the host they are for are refused before anything is sent.
    let asked = own.requests().len();
    let out = cli::meshgate_with(
        &["verify", "--key", &key, &format!("{own_host}/x/app:v1")],
        &credentials,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("MESHGATE_REGISTRY_HOST"), "{out:?}");
    assert_eq!(own.requests().len(), asked);
}

/// A registry's `WWW-Authenticate` realm is asked for a token only on the registry's own host
/// or a host listed in its `tokenRealmHosts`: a realm elsewhere (path and query chosen by the
/// registry) is refused with a fixed message and that host is never contacted, plain HTTP
/// allowed to it or not.
#[test]
fn token_services_stay_on_the_registry_host_unless_listed() {
    let manifest = wasm_manifest();
    let elsewhere = HostileRegistry::start(|_| Reply::json(&json!({"token": "elsewhere-token"})));
    let away_realm = format!("http://{}/internal/admin?op=delete", elsewhere.host());
    // The registry names its own host in its realm, known only once it listens.
    let own = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let registry = {
        let own = own.clone();
        HostileRegistry::start(move |seen: &Seen| {
            if seen.url.starts_with("/token?") {
                return Reply::json(&json!({"token": "own-token"}));
            }
            let token = seen.authorization.as_deref().unwrap_or("");
            if token == "Bearer own-token" || token == "Bearer elsewhere-token" {
                return match seen.url.as_str() {
                    url if url.ends_with("/manifests/v1") => manifest_reply(&manifest),
                    _ => Reply::status(404, ""),
                };
            }
            let realm = if seen.url.starts_with("/v2/away/") {
                away_realm.clone()
            } else {
                format!("http://{}/token", own.lock().unwrap())
            };
            Reply::Body(
                401,
                vec![(
                    "www-authenticate".into(),
                    format!("Bearer realm=\"{realm}\",service=\"x\""),
                )],
                Vec::new(),
            )
        })
    };
    *own.lock().unwrap() = registry.host();
    let (host, elsewhere_host) = (registry.host(), elsewhere.host());
    let keys = tempfile::tempdir().unwrap();
    let key = public_key(keys.path());
    let access = |realms: &str| {
        format!(
            "  registries:\n    - {{host: \"{host}\", insecure: true{realms}}}\n    \
             - {{host: \"{elsewhere_host}\", insecure: true}}"
        )
    };

    let strict = verifying_webhook(&key, &access(""));
    let (allowed, message) = review_image(&strict, &format!("{host}/own/app:v1"));
    assert!(allowed, "a realm on the registry's own host: {message}");
    assert!(
        registry
            .requests()
            .iter()
            .any(|r| r.url.starts_with("/token?")),
        "{:?}",
        registry.requests()
    );
    let (allowed, message) = review_image(&strict, &format!("{host}/away/app:v1"));
    assert!(!allowed, "{message}");
    assert!(
        message.contains("token service on another host refused (not in tokenRealmHosts)"),
        "{message}"
    );
    assert!(!message.contains("internal/admin"), "{message}");
    assert!(
        elsewhere.requests().is_empty(),
        "the other host was asked: {:?}",
        elsewhere.requests()
    );

    // Listed for this registry: asked.
    let listed = verifying_webhook(
        &key,
        &access(&format!(", tokenRealmHosts: [\"{elsewhere_host}\"]")),
    );
    let (allowed, message) = review_image(&listed, &format!("{host}/away/app:v1"));
    assert!(allowed, "{message}");
    let asked = elsewhere.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        asked[0]
            .url
            .starts_with("/internal/admin?op=delete&service=x&scope="),
        "{asked:?}"
    );
}
