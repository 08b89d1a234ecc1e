//! One review, step by step: [`decode`] the AdmissionReview body (bounded) → [`select`] what
//! to judge (operation, Wasm RuntimeClass, the Pod a workload makes) → [`check_images`] (trust
//! rules, artifact layout) → [`judge`] with the policies → answer with a [`verdict`]. The server
//! drives these steps under its deadline and limits; `meshgate policy test` and the benchmark
//! drive them in process. [`load`] builds the [`Pipeline`] once from the configuration.

pub mod check_images;
pub mod decode;
pub mod judge;
pub mod load;
pub mod mutate;
pub mod runtime_fit;
pub mod select;
pub mod verdict;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value as Json;

use crate::config::RuntimeFit;
use crate::extensions::ModuleChecker;
use crate::images::ImageVerifier;
use crate::metrics::Metrics;

pub use decode::{ParseLimits, Review, ReviewError};
pub use judge::LoadedPolicy;
pub use select::Selected;
pub use verdict::Verdict;

/// Selection, image checks and policies, built once from the configuration.
pub struct Pipeline {
    runtime_classes: BTreeSet<String>,
    policies: Vec<LoadedPolicy>,
    images: Option<ImageVerifier>,
    /// Checks the modules of WasmPlugins, EnvoyFilters and EnvoyExtensionPolicies; set by
    /// [`Pipeline::load`] (without it such objects are denied).
    modules: Option<ModuleChecker>,
    /// What each Wasm RuntimeClass can run.
    runtimes: BTreeMap<String, RuntimeFit>,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// A pipeline over already loaded policies.
    pub fn new(
        runtime_classes: BTreeSet<String>,
        policies: Vec<LoadedPolicy>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            runtime_classes,
            policies,
            images: None,
            modules: None,
            runtimes: BTreeMap::new(),
            metrics,
        }
    }

    /// The loaded policies, in evaluation order.
    pub fn policies(&self) -> &[LoadedPolicy] {
        &self.policies
    }

    /// Judges an AdmissionReview `request` object with the policies only (no image checks,
    /// which need the registry: see [`Pipeline::select`], [`Pipeline::check_images`]). A request
    /// missing a field the API server always sends is denied, saying which.
    pub fn review(&self, request: Json) -> Verdict {
        let review = match Review::from_request(request) {
            Ok(review) => review,
            Err(error) => return Verdict::deny(error.to_string()),
        };
        match self.select(review) {
            Ok(selected) => self.judge(selected),
            Err(skipped) => skipped,
        }
    }
}
