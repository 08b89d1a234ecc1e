//! Wasm modules as OCI artifacts: the layouts runtimes and Istio pull, and pushing them
//! (`meshgate push`).

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::{Client, Reference};

/// CNCF TAG Runtime Wasm artifact: config media type.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// CNCF TAG Runtime Wasm artifact: layer media type.
pub const WASM_LAYER: &str = "application/wasm";
/// Istio's (solo.io wasm-image-spec) config media type.
pub const ISTIO_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
/// Istio's (solo.io wasm-image-spec) layer media type.
pub const ISTIO_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";

/// runwasi's Wasm component layer media type.
pub const COMPONENT_LAYER: &str = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";

/// Config media types of OCI and Docker images (whose config JSON carries `architecture`).
const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// The media-type view of one image manifest.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// `config.mediaType`.
    pub config_media_type: String,
    /// `config.digest`.
    pub config_digest: String,
    /// `layers[].mediaType`, in order.
    pub layer_media_types: Vec<String>,
    layer_digests: Vec<String>,
}

impl Layout {
    /// Reads an image manifest's media types.
    pub fn of(manifest: &serde_json::Value) -> Self {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        Self {
            config_media_type: text(&manifest["config"]["mediaType"]),
            config_digest: text(&manifest["config"]["digest"]),
            layer_media_types: layers.iter().map(|l| text(&l["mediaType"])).collect(),
            layer_digests: layers.iter().map(|l| text(&l["digest"])).collect(),
        }
    }

    /// Which Wasm layout the media types say, if any: `wasm-oci` (CNCF TAG Runtime),
    /// `wasm-component` (runwasi) or `istio` (solo.io wasm-image-spec).
    pub fn wasm_kind(&self) -> Option<&'static str> {
        let layer = |t: &str| self.layer_media_types.iter().any(|l| l == t);
        if layer(COMPONENT_LAYER) {
            Some("wasm-component")
        } else if self.config_media_type == ISTIO_CONFIG || layer(ISTIO_LAYER) {
            Some("istio")
        } else if self.config_media_type == WASM_CONFIG || layer(WASM_LAYER) {
            Some("wasm-oci")
        } else {
            None
        }
    }

    /// Whether the config is a container image config (which may say `architecture: wasm`).
    pub fn has_image_config(&self) -> bool {
        IMAGE_CONFIGS.contains(&self.config_media_type.as_str())
    }

    /// The digest of the first layer holding a Wasm binary.
    pub fn wasm_layer(&self) -> Option<&str> {
        self.layer_media_types
            .iter()
            .position(|t| [WASM_LAYER, COMPONENT_LAYER, ISTIO_LAYER].contains(&t.as_str()))
            .map(|i| self.layer_digests[i].as_str())
    }

    /// `config <type>, layers [<types>]`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "config {}, layers [{}]",
            self.config_media_type,
            self.layer_media_types.join(", ")
        )
    }
}

/// From an image index, the digest of the Wasm manifest: the entry for platform `wasi/wasm`
/// (or `os` `wasip1`/`wasip2`), else the only entry.
pub fn pick_wasm_manifest(index: &serde_json::Value) -> Result<String, String> {
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let wasm = entries.iter().find(|e| {
        let os = e["platform"]["os"].as_str().unwrap_or("");
        e["platform"]["architecture"] == "wasm" || os.starts_with("wasi")
    });
    let entry = match (wasm, entries.as_slice()) {
        (Some(e), _) => e,
        (None, [only]) => only,
        (None, _) => {
            let platforms: Vec<String> = entries
                .iter()
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["platform"]["os"].as_str().unwrap_or("?"),
                        e["platform"]["architecture"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            return Err(format!(
                "image index has no wasi/wasm platform (has {})",
                platforms.join(", ")
            ));
        }
    };
    entry["digest"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "image index entry without a digest".to_string())
}

/// Whether bytes are a well-formed Wasm module or component (every section parses; not a full
/// validation).
pub fn parse_wasm(bytes: &[u8]) -> Result<(), String> {
    if !bytes.starts_with(b"\0asm") {
        return Err("no \\0asm header".into());
    }
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        payload.map_err(|e| e.to_string())?;
    }
    Ok(())
}

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
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
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

/// A client speaking HTTPS, except plain HTTP to the registries in `plain_http`.
pub fn client(plain_http: &[String]) -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain_http.to_vec()),
        ..Default::default()
    })
}

/// Pushes `wasm` to `reference` in `format` with `registries`' protocol and credentials for
/// that registry; returns the manifest digest the registry reports (`sha256:<hex>`).
pub async fn push(
    wasm: Vec<u8>,
    reference: &str,
    format: Format,
    registries: &crate::registry::Registries,
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
    let registry_error = |e| crate::registry::upload_error(&registry, reference, e);
    let (config_type, layer_type, config_body) = match format {
        Format::Oci => (
            WASM_CONFIG,
            WASM_LAYER,
            serde_json::json!({"architecture": "wasm", "os": "wasip1", "layerDigests": [crate::registry::sha256_digest(&wasm)]}),
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
    let auth = registries.auth(&registry);
    let client = registries.push_client(&registry);
    client
        .push(&parsed, &layers, config, &auth, Some(manifest))
        .await
        .map_err(registry_error)?;
    Ok(client
        .fetch_manifest_digest(&parsed, &auth)
        .await
        .map_err(registry_error)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_recognised() {
        let manifest = |config: &str, layer: &str| {
            serde_json::json!({"config": {"mediaType": config, "digest": "sha256:c"},
                               "layers": [{"mediaType": layer, "digest": "sha256:l"}]})
        };
        assert_eq!(
            Layout::of(&manifest(WASM_CONFIG, WASM_LAYER)).wasm_kind(),
            Some("wasm-oci")
        );
        assert_eq!(
            Layout::of(&manifest(ISTIO_CONFIG, ISTIO_LAYER)).wasm_kind(),
            Some("istio")
        );
        assert_eq!(
            Layout::of(&manifest(WASM_CONFIG, COMPONENT_LAYER)).wasm_kind(),
            Some("wasm-component")
        );
        let image = Layout::of(&manifest(
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ));
        assert_eq!(image.wasm_kind(), None);
        assert!(image.has_image_config());
        assert_eq!(image.wasm_layer(), None);
    }

    #[test]
    fn indexes_yield_their_wasm_entry() {
        let index = serde_json::json!({"manifests": [
            {"digest": "sha256:a", "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": "sha256:w", "platform": {"os": "wasip1", "architecture": "wasm"}},
        ]});
        assert_eq!(pick_wasm_manifest(&index).unwrap(), "sha256:w");
        let linux = serde_json::json!({"manifests": [
            {"digest": "sha256:a", "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": "sha256:b", "platform": {"os": "linux", "architecture": "arm64"}},
        ]});
        assert!(
            pick_wasm_manifest(&linux)
                .unwrap_err()
                .contains("linux/amd64")
        );
    }

    #[test]
    fn wasm_parsing_rejects_garbage() {
        assert!(parse_wasm(b"\0asm\x01\0\0\0").is_ok());
        assert!(parse_wasm(b"\0asm\x01\0\0\0\x01\xff").is_err());
        assert!(parse_wasm(b"MZ").is_err());
    }
}
