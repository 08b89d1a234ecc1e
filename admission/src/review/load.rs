//! Building the pipeline from the configuration: policy engines (the Wasm runtime when a policy
//! needs one), signed policy images fetched and verified, the image verifier.

use std::collections::HashMap;
use std::sync::Arc;

use super::{LoadedPolicy, Pipeline};
use crate::config::{Config, FailurePolicy, Mode};
use crate::extensions::ModuleChecker;
use crate::images::ImageVerifier;
use crate::metrics::Metrics;
use crate::policy::{LoadContext, LoadError, WasmRuntime};

impl Pipeline {
    /// Loads every policy of the configuration.
    pub fn load(config: &Config, metrics: Arc<Metrics>) -> Result<Self, LoadError> {
        let context = LoadContext {
            default_timeout: config.limits.policy_timeout,
            wasm: wasm_runtime(config, &metrics)?,
        };
        let components = policy_images(config, &metrics)?;
        let policies = config
            .policies
            .iter()
            .map(|p| {
                let component = components.get(&p.name).map(Vec::as_slice);
                LoadedPolicy::load(p, config.failure_policy, &context, component)
            })
            .collect::<Result<_, _>>()?;
        let mut pipeline = Self::new(config.runtime_classes.clone(), policies, metrics.clone());
        pipeline.modules = Some(
            ModuleChecker::new(&config.extensions).map_err(|e| LoadError::new("extensions", e))?,
        );
        pipeline.runtimes = config.runtimes.clone();
        if let Some(images) = &config.image_verification {
            pipeline.images = Some(
                ImageVerifier::new(images, metrics)
                    .map_err(|e| LoadError::new("imageVerification", e))?,
            );
        }
        Ok(pipeline)
    }
}

/// The engine of the configuration's Wasm policies, if it has any.
fn wasm_runtime(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<WasmRuntime>>, LoadError> {
    let sources: Vec<_> = config
        .policies
        .iter()
        .filter_map(|p| p.source.wasm())
        .collect();
    if sources.is_empty() {
        return Ok(None);
    }
    let max_memory = sources.iter().map(|s| s.memory_limit.0).max().unwrap_or(0);
    let fuel = sources.iter().any(|s| s.fuel.is_some());
    WasmRuntime::new(&config.wasm, max_memory, fuel, metrics.clone())
        .map(Some)
        .map_err(|e| LoadError::new("wasm", e))
}

/// Fetches the components of policies given by OCI reference, each verified against the
/// image verification's trust rules, concurrently. Keyed by policy name.
fn policy_images(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<HashMap<String, Vec<u8>>, LoadError> {
    let wanted: Vec<(&str, &str)> = config
        .policies
        .iter()
        .filter_map(|p| Some((p.name.as_str(), p.source.wasm()?.image.as_deref()?)))
        .collect();
    let Some(images) = &config.image_verification else {
        return Ok(HashMap::new());
    };
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    // A runtime and verifier of their own, on a thread of their own: loading may happen on a
    // runtime's thread, and registry connections must not outlive the runtime that made them.
    let fetch = || -> Result<HashMap<String, Vec<u8>>, LoadError> {
        let verifier = ImageVerifier::new(images, metrics.clone())
            .map_err(|e| LoadError::new("imageVerification", e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LoadError::new("wasm", e))?;
        let results = runtime.block_on(futures_util::future::join_all(
            wanted.iter().map(|(_, image)| verifier.fetch_policy(image)),
        ));
        wanted
            .iter()
            .zip(results)
            .map(|((name, image), result)| match result {
                Ok((digest, bytes)) => {
                    tracing::info!(policy = name, image, digest, "fetched signed policy image");
                    Ok((name.to_string(), bytes))
                }
                Err(reason) => Err(LoadError::new(name, format!("{image}: {reason}"))),
            })
            .collect()
    };
    std::thread::scope(|scope| {
        scope
            .spawn(fetch)
            .join()
            .unwrap_or_else(|_| Err(LoadError::new("wasm", "fetching policy images panicked")))
    })
}

/// Whether `config` enforces image verification and admits no image it could not verify:
/// then a review that comes before the pipeline is loaded is denied, whatever the server's
/// `failurePolicy`, since its images cannot be checked yet.
pub fn images_fail_closed(config: &Config) -> bool {
    config
        .image_verification
        .as_ref()
        .is_some_and(|i| i.mode == Mode::Enforce && i.failure_policy == FailurePolicy::Fail)
}
