//! The registry harness: a real `docker-registry` accepts a push and serves the same bytes back.

// Test helpers fail the test by panicking, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshgate_integration::{Registry, paths};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

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
