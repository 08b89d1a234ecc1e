//! Checking the modules an object names, each by its source; the facts policies receive and
//! the digests `/mutate` pins.

use std::collections::BTreeMap;
use std::time::Duration;

use oci_client::Reference;
use serde_json::{Value as Json, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use super::fetch::Fetcher;
use super::{ModuleRef, Source, proxy_wasm};
use crate::capabilities::Capabilities;
use crate::config::Extensions;
use crate::images::flights::Flights;
use crate::images::{ImageVerifier, Outcome};

/// How long the analysis of a module's bytes is kept. It is keyed by the content's digest, so
/// it cannot go stale; the bound is on memory, not truth.
const ANALYSIS_TTL: Duration = Duration::from_secs(3600);

/// How long the bytes fetched for an `http(s)` URL are trusted to be what it serves, and a
/// failed fetch is remembered.
const FETCH_TTL: Duration = Duration::from_secs(60);

/// Prefix of the findings module checks make.
const TAG: &str = "[module-verification]";

/// What the checks of one object's modules concluded.
#[derive(Debug, Clone, Default)]
pub struct ModuleChecks {
    /// Messages that deny the object.
    pub violations: Vec<String>,
    /// Messages returned as warnings.
    pub warnings: Vec<String>,
    /// Facts per module, keyed as [`ModuleRef::key`]: `input.modules` of the policies.
    pub facts: BTreeMap<String, Json>,
    /// Fields to rewrite to what was verified: (JSON pointer, digest-pinned URL).
    pub pins: Vec<(String, String)>,
}

/// What reading a module found: its imports and exports, and its proxy-wasm ABI.
#[derive(Debug, Clone)]
struct Analysis {
    capabilities: Capabilities,
    abi_versions: Vec<String>,
}

/// Checks modules; shared by all reviews.
pub struct ModuleChecker {
    fetcher: Fetcher,
    local_files: Vec<glob::Pattern>,
    inline_modules: bool,
    null_vm_plugins: Vec<String>,
    max_bytes: usize,
    /// Permits for module downloads at once, across all reviews: each holds up to
    /// `max_bytes`, so memory stays bounded however many reviews name large modules. Registry
    /// layers and HTTP modules have their own, so slow HTTP hosts cannot starve the others.
    oci_downloads: Semaphore,
    http_downloads: Semaphore,
    analyzed: Flights<String, Result<Analysis, String>>,
    /// Per verified OCI digest (content-addressed, so it never goes stale): what its Wasm
    /// layer is. Concurrent reviews of one module share one download.
    oci: Flights<String, Result<Analysis, String>>,
    /// Per URL: the sha256 of what it served and its analysis, or why it failed (never the
    /// bytes: memory stays bounded by the entry count).
    fetched: Flights<String, Fetched>,
}

/// What a URL served: the sha256 of its content and what reading it found; or why it could
/// not be fetched.
type Fetched = Result<(String, Result<Analysis, String>), String>;

/// Entries per cache: each holds at most [`crate::capabilities::MAX_NAMES`] names twice.
const CACHE_ENTRIES: usize = 256;

impl ModuleChecker {
    /// A checker for the `extensions` section (already checked by the configuration).
    pub fn new(config: &Extensions) -> Result<Self, String> {
        let local_files = config
            .local_files
            .iter()
            .map(|p| glob::Pattern::new(p).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            fetcher: Fetcher::new(
                &config.http_hosts,
                config.max_module_bytes,
                config.fetch_timeout,
            )?,
            local_files,
            inline_modules: config.inline_modules,
            null_vm_plugins: config.null_vm_plugins.clone(),
            max_bytes: config.max_module_bytes,
            oci_downloads: Semaphore::new(config.max_concurrent_fetches.max(1)),
            http_downloads: Semaphore::new(config.max_concurrent_fetches.max(1)),
            analyzed: Flights::with_capacity(CACHE_ENTRIES),
            oci: Flights::with_capacity(CACHE_ENTRIES),
            fetched: Flights::with_capacity(CACHE_ENTRIES),
        })
    }

    /// Checks every module, one after another (an object names a handful at most).
    pub async fn check(
        &self,
        modules: &[ModuleRef],
        images: Option<&ImageVerifier>,
    ) -> ModuleChecks {
        let mut checks = ModuleChecks::default();
        for module in modules {
            let key = crate::review::decode::clip_to(&module.key, 256);
            match self.check_one(module, images, &mut checks).await {
                Ok(facts) => {
                    checks.facts.insert(module.key.clone(), facts);
                }
                Err(reason) => checks.violations.push(format!("{TAG} {key}: {reason}")),
            }
        }
        checks
    }

    async fn check_one(
        &self,
        module: &ModuleRef,
        images: Option<&ImageVerifier>,
        checks: &mut ModuleChecks,
    ) -> Result<Json, String> {
        let mut facts = json!({
            "url": module.key,
            "source": module.source.label(),
            "path": module.path,
        });
        match &module.source {
            Source::Oci(reference) => {
                let (digest, image, analysis) =
                    self.check_oci(reference, module, images, checks).await?;
                facts["sha256"] = json!(digest.trim_start_matches("sha256:"));
                facts["image"] = image;
                self.add_analysis(&mut facts, &analysis);
            }
            Source::Http(url) => {
                let Some(declared) = &module.sha256 else {
                    return Err(
                        "an http(s) module must carry a sha256 (the proxy checks the \
                                download against it; without one any content runs)"
                            .into(),
                    );
                };
                let (actual, analysis) = self
                    .fetched
                    .get(
                        url.clone(),
                        |_| FETCH_TTL,
                        || async {
                            let bytes = {
                                let _permit = self.http_downloads.acquire().await;
                                self.fetcher.fetch(url).await
                            }
                            .map_err(|e| format!("fetching the module: {e}"))?;
                            let actual = hex::encode(Sha256::digest(&bytes));
                            let analysis = self.analyze(&actual, &bytes).await;
                            Ok((actual, analysis))
                        },
                    )
                    .await?;
                if &actual != declared {
                    return Err(format!(
                        "the module served has sha256 {actual}, not the declared {declared}"
                    ));
                }
                let analysis = analysis?;
                facts["sha256"] = json!(actual);
                self.add_analysis(&mut facts, &analysis);
            }
            Source::Inline(bytes) => {
                if !self.inline_modules {
                    return Err(
                        "code inline in the object has no provenance (no signature, \
                                no registry): set extensions.inlineModules to admit it"
                            .into(),
                    );
                }
                let actual = hex::encode(Sha256::digest(bytes));
                let analysis = self.analyze(&actual, bytes).await?;
                facts["sha256"] = json!(actual);
                self.add_analysis(&mut facts, &analysis);
            }
            Source::File(file) => {
                // Envoy opens the path as written: a glob would let `*` match `..`.
                if !file.starts_with('/')
                    || file
                        .split('/')
                        .any(|segment| segment == "." || segment == "..")
                {
                    return Err("a local file must be an absolute path without . or .. \
                                segments"
                        .into());
                }
                let options = crate::images::glob_options();
                if !self
                    .local_files
                    .iter()
                    .any(|p| p.matches_with(file, options))
                {
                    return Err("a file on the proxy's filesystem cannot be verified \
                                (extensions.localFiles admits named paths)"
                        .into());
                }
                checks.warnings.push(format!(
                    "{TAG} {}: admitted unverified (extensions.localFiles)",
                    crate::review::decode::clip_to(&module.key, 256)
                ));
            }
            Source::Builtin(name) => {
                if !self.null_vm_plugins.iter().any(|n| n == name) {
                    return Err(format!(
                        "NullVM plugin {} is not in extensions.nullVmPlugins",
                        crate::review::decode::clip(name)
                    ));
                }
                facts["name"] = json!(name);
            }
            Source::Unverifiable(reason) => return Err(reason.clone()),
        }
        Ok(facts)
    }

    /// An `oci://` module: verified by its trust rule, a Wasm artifact, read, and pinned.
    /// Returns the verified digest, the image facts and the analysis. A module named by tag
    /// whose checks pass gets its pin (for `/mutate`) before it is refused as unpinned.
    async fn check_oci(
        &self,
        reference: &str,
        module: &ModuleRef,
        images: Option<&ImageVerifier>,
        checks: &mut ModuleChecks,
    ) -> Result<(String, Json, Analysis), String> {
        let Some(verifier) = images else {
            return Err(
                "an oci:// module needs imageVerification (trust rules) to be verified".into(),
            );
        };
        let parsed: Reference = reference
            .parse()
            .map_err(|e| format!("invalid image reference: {e}"))?;
        let by_digest = parsed.digest().is_some();
        let facts = match verifier.check(reference).await {
            Outcome::Verified(facts) => facts,
            Outcome::Denied(reason) | Outcome::Unavailable(reason) => return Err(reason),
        };
        if let Some(declared) = &module.sha256 {
            let verified = facts.digest.trim_start_matches("sha256:");
            if declared != verified {
                return Err(format!(
                    "sha256 {declared} is not the digest verified for it ({})",
                    facts.digest
                ));
            }
        }
        if let crate::images::ArtifactFacts::Wasm(wasm) = &facts.artifact {
            if let Some(index) = &wasm.index_digest {
                return Err(format!(
                    "{} is an image index: a proxy pulls one of its manifests, so name the Wasm \
                     manifest's own digest ({})",
                    crate::review::decode::clip(index),
                    wasm.manifest_digest
                ));
            }
            let layers = wasm
                .layer_media_types
                .iter()
                .filter(|t| crate::artifact::is_code_layer(t))
                .count();
            if layers > 1 {
                return Err(format!(
                    "has {layers} Wasm layers: which one a proxy loads is not defined, so push one"
                ));
            }
        }
        let analysis = self
            .oci
            .get(
                facts.digest.clone(),
                |_| ANALYSIS_TTL,
                || async {
                    let bytes = {
                        let _permit = self.oci_downloads.acquire().await;
                        verifier.wasm_bytes(reference, &facts, self.max_bytes).await
                    }
                    .map_err(|e| format!("reading the module: {e}"))?;
                    self.analyze(&hex::encode(Sha256::digest(&bytes)), &bytes)
                        .await
                },
            )
            .await?;
        if !by_digest {
            let scheme = if module.key.starts_with("oci://") {
                "oci://"
            } else {
                ""
            };
            let pinned = format!(
                "{scheme}{}/{}@{}",
                parsed.registry(),
                parsed.repository(),
                facts.digest
            );
            checks.pins.push((module.path.clone(), pinned));
            if module.sha256.is_none() {
                return Err(
                    "not pinned: name a digest (oci://…@sha256:…) or set sha256, so \
                            what the proxies pull is what was verified"
                        .into(),
                );
            }
        }
        let image = crate::images::ImageFacts::Verified(facts.clone()).to_json();
        Ok((facts.digest.clone(), image, analysis))
    }

    /// Reads a module's bytes (cached by their digest) and checks it is a proxy-wasm module.
    async fn analyze(&self, digest: &str, bytes: &[u8]) -> Result<Analysis, String> {
        self.analyzed
            .get(
                digest.to_string(),
                |_| ANALYSIS_TTL,
                || async {
                    let capabilities = Capabilities::of(bytes)
                        .map_err(|e| format!("the module does not parse: {e}"))?;
                    let abi = proxy_wasm::check(&capabilities)?;
                    Ok(Analysis {
                        capabilities,
                        abi_versions: abi.abi_versions,
                    })
                },
            )
            .await
    }

    fn add_analysis(&self, facts: &mut Json, analysis: &Analysis) {
        facts["capabilities"] = analysis.capabilities.to_json();
        facts["abiVersions"] = json!(analysis.abi_versions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extensions::{ExtensionKind, find_modules};

    fn filter(local: Json, runtime: &str) -> Vec<ModuleRef> {
        let object = json!({"spec": {"configPatches": [{"patch": {"value": {"vm_config": {
            "runtime": runtime, "code": {"local": local}}}}}]}});
        find_modules(ExtensionKind::EnvoyFilter, &object).unwrap()
    }

    async fn check(config: &Extensions, modules: &[ModuleRef]) -> ModuleChecks {
        ModuleChecker::new(config)
            .unwrap()
            .check(modules, None)
            .await
    }

    #[tokio::test]
    async fn inline_code_files_and_builtins_need_the_operator_to_name_them() {
        use base64::Engine as _;
        let module = wat::parse_str(
            r#"(module (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))
                       (func (export "proxy_abi_version_0_2_1")))"#,
        )
        .unwrap();
        let inline = filter(
            json!({"inline_bytes": base64::engine::general_purpose::STANDARD.encode(&module)}),
            "envoy.wasm.runtime.v8",
        );
        let refused = check(&Extensions::default(), &inline).await;
        assert!(
            refused.violations[0].contains("no provenance"),
            "{refused:?}"
        );
        let allowed = Extensions {
            inline_modules: true,
            ..Extensions::default()
        };
        let admitted = check(&allowed, &inline).await;
        assert!(admitted.violations.is_empty(), "{admitted:?}");
        let facts = admitted.facts.values().next().unwrap();
        assert_eq!(facts["source"], "inline");
        assert_eq!(facts["capabilities"]["imports"], json!(["env/proxy_log"]));

        let files = Extensions {
            local_files: vec!["/var/lib/wasm/**/*.wasm".into()],
            ..Extensions::default()
        };
        let listed = filter(json!({"filename": "/var/lib/wasm/a/f.wasm"}), "v8");
        let checks = check(&files, &listed).await;
        assert!(checks.violations.is_empty() && checks.warnings.len() == 1);
        for escape in [
            "/var/lib/wasm/../../../tmp/evil.wasm",
            "/var/lib/wasm/./x/../../../etc/e.wasm",
            "var/lib/wasm/f.wasm",
        ] {
            let checks = check(&files, &filter(json!({"filename": escape}), "v8")).await;
            assert!(
                checks.violations[0].contains("absolute path without"),
                "{escape}: {checks:?}"
            );
        }

        let stats = filter(
            json!({"inline_string": "envoy.wasm.stats"}),
            "envoy.wasm.runtime.null",
        );
        assert!(
            check(&Extensions::default(), &stats).await.violations[0]
                .contains("not in extensions.nullVmPlugins")
        );
        let named = Extensions {
            null_vm_plugins: vec!["envoy.wasm.stats".into()],
            ..Extensions::default()
        };
        assert!(check(&named, &stats).await.violations.is_empty());
    }
}
