//! Wasm modules as OCI artifacts: the layouts runtimes and Istio pull, and pushing them
//! (`meshgate push`).

use oci_client::Reference;
use oci_client::client::{Config, ImageLayer};
use oci_client::manifest::OciImageManifest;

use crate::registry::shown;

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

/// Spin's application config media type (`spin registry push`).
pub const SPIN_CONFIG: &str = "application/vnd.fermyon.spin.application.v1+config";
/// Spin's Wasm component layer media type.
pub const SPIN_WASM_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Spin's static file layer media type.
pub const SPIN_DATA_LAYER: &str = "application/vnd.wasm.content.layer.v1+data";
/// Spin's archive layer media type (directories of static files).
pub const SPIN_ARCHIVE_LAYER: &str = "application/vnd.wasm.content.bundle.v1.tar+gzip";

/// Most layers a Spin application may have (its static files are layers too).
pub const MAX_SPIN_LAYERS: usize = 64;

/// Layer media types that hold Wasm code.
const CODE_LAYERS: [&str; 4] = [WASM_LAYER, ISTIO_LAYER, COMPONENT_LAYER, SPIN_WASM_LAYER];

/// Whether a layer of this media type holds Wasm code.
pub fn is_code_layer(media_type: &str) -> bool {
    CODE_LAYERS.contains(&media_type)
}

/// Most Wasm layers a manifest may have: `parse` fetches each (up to 64 MiB).
pub const MAX_WASM_LAYERS: usize = 4;

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
    /// `wasm-component` (runwasi) or `istio` (solo.io wasm-image-spec). A layout is one only
    /// in the shape its tools write it: its config media type, at least one Wasm layer, at
    /// most [`MAX_WASM_LAYERS`], and no other layer (a filesystem layer beside a Wasm one
    /// would be unpacked as a root filesystem that a runtime falling back to native execution
    /// runs).
    pub fn wasm_kind(&self) -> Option<&'static str> {
        self.check().ok()
    }

    /// [`Self::wasm_kind`], or why the layout is not a Wasm artifact layout.
    fn check(&self) -> Result<&'static str, String> {
        let config = self.config_media_type.as_str();
        // The layer media types each config admits, and the kind it makes.
        let (allowed, kind): (&[&str], &'static str) = if config == ISTIO_CONFIG {
            (&[ISTIO_LAYER], "istio")
        } else if config == SPIN_CONFIG {
            // The locked application (config media type), components, static files.
            (
                &[
                    SPIN_CONFIG,
                    SPIN_WASM_LAYER,
                    SPIN_DATA_LAYER,
                    SPIN_ARCHIVE_LAYER,
                ],
                "spin",
            )
        } else if config == WASM_CONFIG {
            (&[WASM_LAYER, COMPONENT_LAYER], "wasm-oci")
        } else if self.has_image_config() {
            // runwasi's oci-tar-builder: an image config over component layers only.
            (&[COMPONENT_LAYER], "wasm-component")
        } else {
            return Err(format!(
                "config media type {} is not a Wasm artifact config",
                shown(config)
            ));
        };
        let code_layers = self
            .layer_media_types
            .iter()
            .filter(|t| CODE_LAYERS.contains(&t.as_str()))
            .count();
        if kind == "spin" && self.layer_media_types.len() > MAX_SPIN_LAYERS {
            return Err(format!(
                "{} layers; at most {MAX_SPIN_LAYERS} are accepted",
                self.layer_media_types.len()
            ));
        }
        if let Some((i, other)) = self
            .layer_media_types
            .iter()
            .enumerate()
            .find(|(_, t)| !allowed.contains(&t.as_str()))
        {
            return Err(format!(
                "layer {i} has media type {}, not a Wasm layer of this layout ({})",
                shown(other),
                allowed.join(" or ")
            ));
        }
        if code_layers == 0 {
            return Err("no Wasm layer".into());
        }
        if code_layers > MAX_WASM_LAYERS {
            return Err(format!(
                "{code_layers} Wasm layers; at most {MAX_WASM_LAYERS} are accepted"
            ));
        }
        if self.layer_media_types.iter().any(|t| t == COMPONENT_LAYER) {
            return Ok("wasm-component");
        }
        Ok(kind)
    }

    /// Why the layout is not a Wasm artifact, for messages: `config <type>, layers [<types>]:
    /// <reason>`.
    pub fn refusal(&self) -> String {
        match self.check() {
            Ok(_) => self.describe(),
            Err(reason) => format!("{}: {reason}", self.describe()),
        }
    }

    /// Whether the config is a container image config (which may say `architecture: wasm`).
    pub fn has_image_config(&self) -> bool {
        IMAGE_CONFIGS.contains(&self.config_media_type.as_str())
    }

    /// The digests of the Wasm layers, in order; none unless the layout is a Wasm artifact
    /// layout ([`Self::wasm_kind`]), so a Wasm layer beside a filesystem layer is never taken
    /// for the image's code.
    pub fn wasm_layers(&self) -> Vec<&str> {
        if self.check().is_err() {
            return Vec::new();
        }
        self.layer_digests
            .iter()
            .zip(&self.layer_media_types)
            .filter(|(_, t)| CODE_LAYERS.contains(&t.as_str()))
            .map(|(d, _)| d.as_str())
            .collect()
    }

    /// The digest of the first Wasm layer of a Wasm artifact layout.
    pub fn wasm_layer(&self) -> Option<&str> {
        self.wasm_layers().first().copied()
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

/// Most entries of an image index that are checked; an index with more is refused rather than
/// fetched entry by entry.
pub const MAX_INDEX_ENTRIES: usize = 16;

/// An entry of an image index that a node may pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The manifest's digest.
    pub digest: String,
    /// `os/architecture`.
    pub platform: String,
}

/// Whether an index entry's platform is one no node pulls: buildx stores its attestation
/// manifests (annotation `vnd.docker.reference.type: attestation-manifest`) as
/// `unknown/unknown`, and platform matchers (containerd, CRI-O) never select an `unknown` OS.
fn never_pulled(os: &str, architecture: &str) -> bool {
    os == "unknown" && architecture == "unknown"
}

/// Whether a platform is a Wasm one: OS `wasi`/`wasip1`/`wasip2`..., or architecture `wasm`.
fn is_wasm_platform(os: &str, architecture: &str) -> bool {
    os.starts_with("wasi") || architecture == "wasm"
}

/// From an image index, the entries a node may pull, each on a Wasm platform. Under a Wasm
/// RuntimeClass a node pulls the entry for its own platform, so one native entry (`linux/amd64`
/// beside `wasip1/wasm`) would run native code: any entry with another platform, or with none
/// (which matches every platform), refuses the whole index. `unknown/unknown` entries
/// (attestations) are skipped, since no node pulls them.
pub fn index_entries(index: &serde_json::Value) -> Result<Vec<IndexEntry>, String> {
    let Some(entries) = index["manifests"].as_array() else {
        return Err("image index without a manifests list".into());
    };
    let mut wasm = Vec::new();
    let mut skipped = Vec::new();
    for entry in entries {
        let digest = entry["digest"].as_str().unwrap_or("");
        if !crate::oci::is_sha256_digest(digest) {
            return Err(format!(
                "image index entry with digest {:?}, not sha256:<64 hex digits>",
                shown(digest)
            ));
        }
        let digest = digest.to_string();
        let platform = &entry["platform"];
        let (Some(os), Some(architecture)) =
            (platform["os"].as_str(), platform["architecture"].as_str())
        else {
            return Err(format!(
                "image index entry {digest} names no platform, so a node of any platform \
                 would pull it; every entry must be for a Wasm platform"
            ));
        };
        // Registry-supplied text reaches messages only shortened.
        let platform = format!("{}/{}", shown(os), shown(architecture));
        if never_pulled(os, architecture) {
            skipped.push(platform);
        } else if is_wasm_platform(os, architecture) {
            wasm.push(IndexEntry { digest, platform });
        } else {
            return Err(format!(
                "image index entry {digest} is for platform {platform}, which a node of that \
                 platform would pull and run natively; every entry must be for a Wasm platform"
            ));
        }
    }
    if wasm.is_empty() {
        return Err(format!(
            "image index has no Wasm platform entry (has [{}])",
            skipped.join(", ")
        ));
    }
    if wasm.len() > MAX_INDEX_ENTRIES {
        return Err(format!(
            "image index lists {} Wasm entries; at most {MAX_INDEX_ENTRIES} are checked",
            wasm.len()
        ));
    }
    Ok(wasm)
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
            serde_json::json!({"architecture": "wasm", "os": "wasip1", "layerDigests": [crate::oci::sha256_digest(&wasm)]}),
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

    /// The layout of a manifest with this config media type and these layer media types.
    fn layout_of(config: &str, layers: &[&str]) -> Layout {
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .enumerate()
            .map(|(i, t)| serde_json::json!({"mediaType": t, "digest": format!("sha256:{i}")}))
            .collect();
        Layout::of(
            &serde_json::json!({"config": {"mediaType": config, "digest": "sha256:c"},
                                       "layers": layers}),
        )
    }

    #[test]
    fn layouts_in_another_shape_are_refused() {
        let manifest = layout_of;
        const TAR: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
        const IMAGE: &str = "application/vnd.oci.image.config.v1+json";
        // A Wasm config over a filesystem layer, with or without a Wasm layer beside it.
        for config in [WASM_CONFIG, ISTIO_CONFIG] {
            for layers in [&[TAR][..], &[TAR, WASM_LAYER], &[ISTIO_LAYER, TAR], &[]] {
                let layout = manifest(config, layers);
                assert_eq!(layout.wasm_kind(), None, "{}", layout.describe());
                assert!(layout.wasm_layers().is_empty());
            }
        }
        let layout = manifest(WASM_CONFIG, &[TAR]);
        assert!(
            layout.refusal().ends_with(
                ": layer 0 has media type application/vnd.oci.image.layer.v1.tar+gzip, not a \
                 Wasm layer of this layout (application/wasm or \
                 application/vnd.bytecodealliance.wasm.component.layer.v0+wasm)"
            ),
            "{}",
            layout.refusal()
        );
        assert!(
            manifest(ISTIO_CONFIG, &[])
                .refusal()
                .ends_with(": no Wasm layer")
        );
        // Layer types of one layout under another's config.
        assert_eq!(manifest(ISTIO_CONFIG, &[WASM_LAYER]).wasm_kind(), None);
        assert_eq!(manifest(WASM_CONFIG, &[ISTIO_LAYER]).wasm_kind(), None);
        // A native image config with a decoy Wasm layer, or Wasm layers under an unknown config.
        assert_eq!(manifest(IMAGE, &[TAR, WASM_LAYER]).wasm_kind(), None);
        assert_eq!(manifest(IMAGE, &[TAR, COMPONENT_LAYER]).wasm_kind(), None);
        assert_eq!(
            manifest("application/json", &[WASM_LAYER]).wasm_kind(),
            None
        );
        // runwasi's oci-tar-builder image: an image config over component layers only.
        let component = manifest(IMAGE, &[COMPONENT_LAYER, COMPONENT_LAYER]);
        assert_eq!(component.wasm_kind(), Some("wasm-component"));
        assert_eq!(component.wasm_layers(), ["sha256:0", "sha256:1"]);
        let many = manifest(WASM_CONFIG, &[WASM_LAYER; MAX_WASM_LAYERS + 1]);
        assert_eq!(many.wasm_kind(), None);
        assert!(many.refusal().contains("at most"), "{}", many.refusal());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10_000))]

        /// Whatever media types a manifest lists, an accepted layout has a Wasm config, one
        /// to MAX_WASM_LAYERS layers, every one of them a Wasm layer; a refused one has no
        /// Wasm layers to hand out and says why in a bounded message.
        #[test]
        fn accepted_layouts_hold_only_wasm_layers(
            config in proptest::sample::select(vec![
                WASM_CONFIG, ISTIO_CONFIG, IMAGE_CONFIGS[0], IMAGE_CONFIGS[1],
                "application/vnd.fermyon.spin.application.v1+config", "",
            ]),
            layers in proptest::collection::vec(
                proptest::sample::select(vec![
                    WASM_LAYER, ISTIO_LAYER, COMPONENT_LAYER,
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                    "application/vnd.oci.image.layer.v1.tar",
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                    "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "application/vnd.wasm.content.layer.v1+data", "",
                ]),
                0..8,
            ),
        ) {
            let manifest = serde_json::json!({
                "config": {"mediaType": config, "digest": "sha256:c"},
                "layers": layers.iter().map(|t| serde_json::json!({"mediaType": t, "digest": "sha256:l"})).collect::<Vec<_>>(),
            });
            let layout = Layout::of(&manifest);
            match layout.wasm_kind() {
                Some(_) => {
                    proptest::prop_assert!([WASM_CONFIG, ISTIO_CONFIG].contains(&config) || IMAGE_CONFIGS.contains(&config));
                    proptest::prop_assert!(!layers.is_empty() && layers.len() <= MAX_WASM_LAYERS);
                    proptest::prop_assert!(layers.iter().all(|t| [WASM_LAYER, ISTIO_LAYER, COMPONENT_LAYER].contains(t)));
                    proptest::prop_assert_eq!(layout.wasm_layers().len(), layers.len());
                }
                None => {
                    proptest::prop_assert!(layout.wasm_layers().is_empty());
                    proptest::prop_assert!(layout.refusal().len() <= 1024);
                }
            }
        }
    }

    #[test]
    fn indexes_yield_their_wasm_entries_and_refuse_native_ones() {
        // sha256:<64 hex> from a short name.
        let digest = |name: &str| format!("sha256:{name:0>64}");
        let entry = |name: &str, os: &str, arch: &str| serde_json::json!({"digest": digest(name), "platform": {"os": os, "architecture": arch}});
        let index = |entries: Vec<serde_json::Value>| serde_json::json!({"manifests": entries});
        let wasip1 = entry("a1", "wasip1", "wasm");
        let wasip2 = entry("a2", "wasip2", "wasm");
        let mut attestation = entry("a3", "unknown", "unknown");
        attestation["annotations"] =
            serde_json::json!({"vnd.docker.reference.type": "attestation-manifest"});
        let entries =
            index_entries(&index(vec![wasip1.clone(), attestation.clone(), wasip2])).unwrap();
        let digests: Vec<&str> = entries.iter().map(|e| e.digest.as_str()).collect();
        assert_eq!(digests, [digest("a1"), digest("a2")]);
        assert_eq!(entries[0].platform, "wasip1/wasm");

        let mixed = index(vec![entry("b1", "linux", "amd64"), wasip1.clone()]);
        let err = index_entries(&mixed).unwrap_err();
        assert!(
            err.contains(&format!("{} is for platform linux/amd64", digest("b1"))),
            "{err}"
        );
        let no_platform = index(vec![
            wasip1.clone(),
            serde_json::json!({"digest": digest("b2")}),
        ]);
        let err = index_entries(&no_platform).unwrap_err();
        assert!(
            err.contains(&format!("{} names no platform", digest("b2"))),
            "{err}"
        );
        let bad_digest = index(vec![wasip1, entry("b3", "wasip1", "wasm")]);
        let mut bad_digest = bad_digest;
        bad_digest["manifests"][1]["digest"] = serde_json::json!("sha256:../../x");
        assert!(
            index_entries(&bad_digest)
                .unwrap_err()
                .contains("not sha256:<64 hex digits>")
        );
        let err = index_entries(&index(vec![attestation])).unwrap_err();
        assert!(
            err.contains("no Wasm platform entry (has [unknown/unknown])"),
            "{err}"
        );
        let many = index(
            (0..=MAX_INDEX_ENTRIES)
                .map(|i| entry(&format!("{i:x}"), "wasip1", "wasm"))
                .collect(),
        );
        assert!(index_entries(&many).unwrap_err().contains("at most"));
        assert!(index_entries(&serde_json::json!({})).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10_000))]

        /// Whatever an index lists, an accepted one yields exactly its Wasm-platform entries,
        /// in order, and every other entry it has is `unknown/unknown`.
        #[test]
        fn index_entries_admit_only_wasm_platforms(
            entries in proptest::collection::vec(
                (
                    proptest::option::of(proptest::sample::select(
                        vec!["wasi", "wasip1", "wasip2", "linux", "windows", "unknown", "", "WASI"],
                    )),
                    proptest::option::of(proptest::sample::select(
                        vec!["wasm", "amd64", "arm64", "unknown", "", "WASM"],
                    )),
                    proptest::option::of(proptest::sample::select(vec![
                        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                        "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                        "sha256:0",
                        "",
                    ])),
                ),
                0..24,
            )
        ) {
            let manifests: Vec<serde_json::Value> = entries
                .iter()
                .map(|(os, arch, digest)| {
                    let mut platform = serde_json::json!({});
                    if let Some(os) = os { platform["os"] = serde_json::json!(os); }
                    if let Some(arch) = arch { platform["architecture"] = serde_json::json!(arch); }
                    serde_json::json!({"digest": digest, "platform": platform})
                })
                .collect();
            let result = index_entries(&serde_json::json!({"manifests": manifests}));
            if let Ok(picked) = result {
                proptest::prop_assert!(!picked.is_empty() && picked.len() <= MAX_INDEX_ENTRIES);
                let mut expected = Vec::new();
                for (os, arch, digest) in &entries {
                    let (os, arch) = (os.unwrap_or(""), arch.unwrap_or(""));
                    proptest::prop_assert!(crate::oci::is_sha256_digest(digest.unwrap_or("")));
                    if is_wasm_platform(os, arch) {
                        expected.push(format!("{os}/{arch}"));
                    } else {
                        proptest::prop_assert!(os == "unknown" && arch == "unknown");
                    }
                }
                let platforms: Vec<String> = picked.into_iter().map(|e| e.platform).collect();
                proptest::prop_assert_eq!(platforms, expected);
            }
        }

        /// Arbitrary JSON, shaped like indexes or not, never panics the index reader.
        #[test]
        fn index_entries_take_any_json(value in any_json()) {
            let _ = index_entries(&value);
            let _ = index_entries(&serde_json::json!({"manifests": [value]}));
        }
    }

    /// JSON values whose object keys are mostly those an index reader looks at.
    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z0-9/:]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let key = prop_oneof![
                Just("manifests".to_string()),
                Just("platform".to_string()),
                Just("os".to_string()),
                Just("architecture".to_string()),
                Just("digest".to_string()),
                "[a-z]{1,4}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(key, inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn a_spin_application_is_its_own_layout_and_only_its_components_are_code() {
        const TAR: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
        let manifest = layout_of;
        let layout = manifest(
            SPIN_CONFIG,
            &[
                SPIN_CONFIG,
                SPIN_WASM_LAYER,
                SPIN_DATA_LAYER,
                SPIN_WASM_LAYER,
            ],
        );
        assert_eq!(layout.wasm_kind(), Some("spin"));
        assert_eq!(layout.wasm_layers().len(), 2);
        assert_eq!(manifest(SPIN_CONFIG, &[SPIN_DATA_LAYER]).wasm_kind(), None);
        assert_eq!(
            manifest(SPIN_CONFIG, &[SPIN_WASM_LAYER, TAR]).wasm_kind(),
            None
        );
    }

    #[test]
    fn wasm_parsing_rejects_garbage() {
        use crate::capabilities::Capabilities;
        assert!(Capabilities::of(b"\0asm\x01\0\0\0").is_ok());
        assert!(Capabilities::of(b"\0asm\x01\0\0\0\x01\xff").is_err());
        assert!(Capabilities::of(b"MZ").is_err());
    }
}
