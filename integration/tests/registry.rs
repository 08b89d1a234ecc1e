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
