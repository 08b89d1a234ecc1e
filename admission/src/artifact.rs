//! Wasm modules as OCI artifacts: the layouts runtimes and Istio pull, and pushing them
//! (`meshgate push`).

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// CNCF TAG Runtime Wasm artifact: config media type.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// CNCF TAG Runtime Wasm artifact: layer media type.
pub const WASM_LAYER: &str = "application/wasm";
/// Istio's (solo.io wasm-image-spec) config media type.
pub const ISTIO_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
/// Istio's (solo.io wasm-image-spec) layer media type.
pub const ISTIO_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";

/// An artifact problem.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The reference does not parse.
    #[error("invalid reference {reference}: {message}")]
    Reference {
        /// The reference as given.
        reference: String,
        /// Why.
        message: String,
    },
    /// The file is not a WebAssembly module or component.
    #[error("{0}: not a WebAssembly binary (no \\0asm header)")]
    NotWasm(String),
    /// The registry refused or could not be reached.
    #[error("registry {registry}: {message}")]
    Registry {
        /// The registry host.
        registry: String,
        /// What it said.
        message: String,
    },
}

/// Which manifest layout to push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// CNCF TAG Runtime layout: config `application/vnd.wasm.config.v0+json`, one
    /// `application/wasm` layer (runwasi, wasmtime/spin shims).
    Oci,
    /// The layout Istio's WasmPlugin pulls: config `application/vnd.module.wasm.config.v1+json`,
    /// one `application/vnd.module.wasm.content.layer.v1+wasm` layer.
    Istio,
}

/// Whether a registry host is on this machine, where plain HTTP is allowed.
pub fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(registry, |(host, _)| host);
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// A client speaking HTTPS, except plain HTTP to loopback registries and to `plain_http`.
pub fn client(plain_http: &[String]) -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain_http.to_vec()),
        ..Default::default()
    })
}

/// Pushes `wasm` to `reference` in `format`; returns the manifest digest the registry reports
/// (`sha256:<hex>`).
pub async fn push(
    wasm: Vec<u8>,
    reference: &str,
    format: Format,
    auth: &RegistryAuth,
) -> Result<String, ArtifactError> {
    if !wasm.starts_with(b"\0asm") {
        return Err(ArtifactError::NotWasm(reference.to_string()));
    }
    let parsed: Reference =
        reference
            .parse()
            .map_err(|e: oci_client::ParseError| ArtifactError::Reference {
                reference: reference.to_string(),
                message: e.to_string(),
            })?;
    let registry = parsed.resolve_registry().to_string();
    let registry_error = |e: oci_client::errors::OciDistributionError| ArtifactError::Registry {
        registry: registry.clone(),
        message: e.to_string(),
    };
    let (config_type, layer_type, config_body) = match format {
        Format::Oci => (
            WASM_CONFIG,
            WASM_LAYER,
            serde_json::json!({"architecture": "wasm", "os": "wasip1", "layerDigests": [layer_digest(&wasm)]}),
        ),
        Format::Istio => (ISTIO_CONFIG, ISTIO_LAYER, serde_json::json!({})),
    };
    let layers = vec![ImageLayer::new(wasm, layer_type.to_string(), None)];
    let config = Config::new(
        config_body.to_string().into_bytes(),
        config_type.to_string(),
        None,
    );
    let manifest = OciImageManifest::build(&layers, &config, None);
    let plain = if is_loopback(&registry) {
        vec![registry.clone()]
    } else {
        Vec::new()
    };
    let client = client(&plain);
    client
        .push(&parsed, &layers, config, auth, Some(manifest))
        .await
        .map_err(registry_error)?;
    client
        .fetch_manifest_digest(&parsed, auth)
        .await
        .map_err(registry_error)
}

fn layer_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let sum = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        sum.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_recognised() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("ghcr.io"));
        assert!(!is_loopback("127.0.0.1.example.com:5000"));
    }
}
