//! `make istio`: the Istio filter manifests of `istio/filters/` made ready to apply. The
//! EnvoyFilter's `{{sha256:NAME}}` become the checksums of `dist/NAME.wasm`; with a registry,
//! the filters are pushed there in Istio's OCI layout and every WasmPlugin pulling them is
//! pointed at the pushed artifact and pinned to its digest.

use std::path::{Path, PathBuf};
use std::time::Duration;

use meshgate_admission::artifact::{self, Format};
use sha2::Digest as _;

/// The filters the manifests reference, as in `dist/<name>.wasm`.
pub const FILTERS: [&str; 2] = ["jwt-auth", "rate-limit"];
/// The tag the manifests pull.
pub const TAG: &str = "0.1.0";
const PUBLISHED: &str = "ghcr.io/meshgate";

/// Renders every file of `source` into `out`; returns the files written. With `insecure`,
/// the registry is spoken to in plain HTTP (a local development registry).
pub fn render(
    source: &Path,
    out: &Path,
    registry: Option<&str>,
    insecure: bool,
) -> Result<Vec<PathBuf>, String> {
    let mut digests = Vec::new();
    if let Some(registry) = registry {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let plain: Vec<String> = if insecure {
            vec![registry.to_string()]
        } else {
            Vec::new()
        };
        let registries =
            meshgate_admission::registry::Registries::from_env(&plain, Duration::from_secs(30))
                .map_err(|e| e.to_string())?;
        for name in FILTERS {
            let wasm = std::fs::read(crate::paths::wasm(name)).map_err(|e| e.to_string())?;
            let reference = format!("{registry}/meshgate/{name}:{TAG}");
            let digest = runtime
                .block_on(artifact::push(wasm, &reference, Format::Istio, &registries))
                .map_err(|e| e.to_string())?;
            digests.push((name, digest));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut written = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(source)
        .map_err(|e| format!("{}: {e}", source.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let mut text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        for name in FILTERS {
            let bytes = std::fs::read(crate::paths::wasm(name)).map_err(|e| e.to_string())?;
            let sum: String = sha2::Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            text = text.replace(&format!("{{{{sha256:{name}}}}}"), &sum);
        }
        if let Some(registry) = registry {
            text = pin(&text, registry, &digests);
        }
        let target = out.join(file.file_name().unwrap_or_default());
        std::fs::write(&target, text).map_err(|e| format!("{}: {e}", target.display()))?;
        written.push(target);
    }
    Ok(written)
}

/// Points each `url: oci://ghcr.io/meshgate/NAME:TAG` at the registry and adds `sha256:` with
/// the pushed manifest digest beside it.
fn pin(text: &str, registry: &str, digests: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let pinned = digests.iter().find_map(|(name, digest)| {
            let published = format!("oci://{PUBLISHED}/{name}:{TAG}");
            line.contains(&published).then(|| {
                let indent = &line[..line.len() - line.trim_start().len()];
                format!(
                    "{}\n{indent}sha256: {}",
                    line.replace(
                        &published,
                        &format!("oci://{registry}/meshgate/{name}:{TAG}")
                    ),
                    digest.trim_start_matches("sha256:")
                )
            })
        });
        out.push_str(&pinned.unwrap_or_else(|| line.to_string()));
        out.push('\n');
    }
    out
}
