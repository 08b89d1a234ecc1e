//! `extensions` (the mesh's own Wasm: Istio WasmPlugins and EnvoyFilters, Envoy Gateway
//! EnvoyExtensionPolicies) and `runtimes` (what each Wasm RuntimeClass can run).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// How the modules of WasmPlugins, EnvoyFilters and EnvoyExtensionPolicies are checked.
/// `oci://` modules go through `imageVerification`'s trust rules; this section bounds the rest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Extensions {
    /// Hosts `http(s)://` modules may be fetched from: `host` or `host:port`, `*` globs
    /// (`filters.example.com`, `127.0.0.1:*`). Empty (the default): every HTTP module is
    /// denied, so no object can make the webhook fetch from an address it chose.
    #[serde(default)]
    pub http_hosts: Vec<String>,
    /// Largest module fetched, from a registry or over HTTP.
    #[serde(default = "default_max_module_bytes")]
    pub max_module_bytes: usize,
    /// Bound of one HTTP module fetch.
    #[serde(default = "default_fetch_timeout", with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// EnvoyFilter `local.filename` paths (globs) admitted unverified: a file on the proxy's
    /// own filesystem cannot be checked from here. None by default.
    #[serde(default)]
    pub local_files: Vec<String>,
    /// Whether EnvoyFilter code inline in the object (`local.inline_bytes`, `inline_string`)
    /// may be admitted. Inline code has no provenance (no signature, no registry), so it is
    /// refused by default; admitted, it is still checked to be a proxy-wasm module and its
    /// facts go to the policies.
    #[serde(default)]
    pub inline_modules: bool,
    /// NullVM plugins (`runtime: envoy.wasm.runtime.null`, code compiled into Envoy) that may
    /// be named, exactly. None by default.
    #[serde(default)]
    pub null_vm_plugins: Vec<String>,
    /// Module downloads (registry layers, HTTP) at once across all reviews: each holds up to
    /// `maxModuleBytes`, so this bounds their memory. Others wait, within the review deadline.
    #[serde(default = "default_max_concurrent_fetches")]
    pub max_concurrent_fetches: usize,
}

impl Default for Extensions {
    fn default() -> Self {
        Self {
            http_hosts: Vec::new(),
            max_module_bytes: default_max_module_bytes(),
            fetch_timeout: default_fetch_timeout(),
            local_files: Vec::new(),
            inline_modules: false,
            null_vm_plugins: Vec::new(),
            max_concurrent_fetches: default_max_concurrent_fetches(),
        }
    }
}

impl Extensions {
    /// Checks the globs; the error names the field.
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        for (field, list) in [
            ("httpHosts", &self.http_hosts),
            ("localFiles", &self.local_files),
        ] {
            for (i, pattern) in list.iter().enumerate() {
                if pattern.is_empty() {
                    return Err((format!("{field}[{i}]"), "must not be empty".into()));
                }
                glob::Pattern::new(pattern)
                    .map_err(|e| (format!("{field}[{i}]"), e.to_string()))?;
            }
        }
        for (i, host) in self.http_hosts.iter().enumerate() {
            if host.contains('/') || host.contains('@') {
                return Err((
                    format!("httpHosts[{i}]"),
                    "a host or host:port, without scheme, path or user".into(),
                ));
            }
        }
        if self.max_module_bytes == 0 {
            return Err(("maxModuleBytes".into(), "must be positive".into()));
        }
        if self.max_concurrent_fetches == 0 {
            return Err(("maxConcurrentFetches".into(), "must be positive".into()));
        }
        Ok(())
    }
}

fn default_max_module_bytes() -> usize {
    32 * 1024 * 1024
}

fn default_max_concurrent_fetches() -> usize {
    2
}

fn default_fetch_timeout() -> Duration {
    Duration::from_secs(3)
}

/// What a Wasm module can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModuleKind {
    /// A WebAssembly component (component model).
    Component,
    /// A core WebAssembly module.
    Module,
}

impl ModuleKind {
    /// The name in configs, facts and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleKind::Component => "component",
            ModuleKind::Module => "module",
        }
    }
}

/// What one RuntimeClass's handler can run. Unset lists accept anything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeFit {
    /// The RuntimeClass's handler (the containerd shim), for messages.
    pub handler: Option<String>,
    /// Whether it runs components, core modules or both. Needs
    /// `imageVerification.artifactCheck: parse` (the module must be read to know).
    pub modules: Option<Vec<ModuleKind>>,
    /// Artifact layouts it accepts: `istio`, `wasm-oci`, `wasm-component`, `oci-image-wasm`,
    /// `spin`.
    pub layouts: Option<Vec<String>>,
    /// Wasm layer media types it accepts.
    pub media_types: Option<Vec<String>>,
}

/// Layout names an artifact check can report.
pub const LAYOUTS: [&str; 5] = [
    "istio",
    "wasm-oci",
    "wasm-component",
    "oci-image-wasm",
    "spin",
];

/// Checks `runtimes`: known layouts, and `modules` only where modules are read.
pub(super) fn check_runtimes(
    runtimes: &BTreeMap<String, RuntimeFit>,
    parses_modules: bool,
) -> Result<(), (String, String)> {
    for (class, fit) in runtimes {
        if let Some(layouts) = &fit.layouts
            && let Some((i, bad)) = layouts
                .iter()
                .enumerate()
                .find(|(_, l)| !LAYOUTS.contains(&l.as_str()))
        {
            return Err((
                format!("runtimes.{class}.layouts[{i}]"),
                format!("unknown layout {bad}: one of {}", LAYOUTS.join(", ")),
            ));
        }
        if fit.modules.is_some() && !parses_modules {
            return Err((
                format!("runtimes.{class}.modules"),
                "needs imageVerification.artifactCheck: parse (the module must be read to know \
                 whether it is a component)"
                    .into(),
            ));
        }
    }
    Ok(())
}
