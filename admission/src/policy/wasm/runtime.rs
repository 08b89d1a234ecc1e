//! The wasmtime engine shared by every Wasm policy of a server: its configuration, the epoch
//! clock that bounds evaluation time, and compilation with an on-disk cache of compiled
//! components ([`super::cache`] says why its files can be trusted).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::cache::{self, DiskCache, Lookup};
use crate::config::WasmRuntimeConfig;
use crate::metrics::Metrics;

/// How often the epoch advances: the granularity of evaluation deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Instances, tables and memories one evaluation may create. A Rust policy uses a handful of
/// core instances (its module and the component's adapter shims), one memory and one table.
pub(crate) const MAX_INSTANCES: usize = 32;
pub(crate) const MAX_TABLES: usize = 16;
pub(crate) const MAX_MEMORIES: usize = 4;
/// Elements of one table (function pointers of the policy's indirect calls).
pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Bytes of each memory and table slot reset in place between instances; a Rust policy's
/// stack and heap for one review fit in it.
const KEEP_RESIDENT: usize = 4 << 20;

/// Instances the pooling allocator holds slots for at once. An instantiation beyond that
/// fails rather than waits, so this is far above what the server runs at once (one instance
/// per concurrent review, `limits.maxConcurrentReviews`).
const POOL_INSTANCES: u32 = 256;

/// Where a policy's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSource {
    /// Compiled now.
    Compiled,
    /// Loaded from the on-disk cache.
    DiskCache,
    /// Already loaded by another policy of this server (same component bytes).
    Memory,
}

impl CodeSource {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeSource::Compiled => "compiled",
            CodeSource::DiskCache => "disk-cache",
            CodeSource::Memory => "memory",
        }
    }
}

/// The engine and its compiled components.
pub struct WasmRuntime {
    engine: Engine,
    /// Whether stores meter fuel (then every store needs some).
    pub(crate) fuel: bool,
    cache: Option<DiskCache>,
    /// Components by sha256: policies sharing a file share its code.
    loaded: Mutex<HashMap<String, Component>>,
    pub(crate) metrics: Arc<Metrics>,
}

impl WasmRuntime {
    /// Builds the engine. `max_memory` is the largest memory limit of any policy (the pooling
    /// allocator reserves slots that size); `fuel` turns on fuel metering, which costs every
    /// policy some speed, so only when a policy asks for it.
    pub fn new(
        config: &WasmRuntimeConfig,
        max_memory: u64,
        fuel: bool,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .consume_fuel(fuel)
            .wasm_component_model(true);
        if config.pooling_allocator {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(POOL_INSTANCES)
                .total_core_instances(POOL_INSTANCES * MAX_INSTANCES as u32)
                .total_memories(POOL_INSTANCES * MAX_MEMORIES as u32)
                .total_tables(POOL_INSTANCES * MAX_TABLES as u32)
                .max_core_instances_per_component(MAX_INSTANCES as u32)
                .max_memories_per_component(MAX_MEMORIES as u32)
                .max_tables_per_component(MAX_TABLES as u32)
                .table_elements(MAX_TABLE_ELEMENTS)
                .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX));
            // Resetting a slot by memset rather than madvise: every madvise of a multi-threaded
            // process interrupts its other CPUs to flush their TLBs. Measured with the webhook
            // under load (BENCHMARKS.md): about 4 500 reviews/s without, 6 400 with.
            pool.linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(KEEP_RESIDENT)
                // Not PAGEMAP_SCAN (reset only the pages the kernel reports written): in
                // wasmtime 48 a written page that is swapped out or migrating at the reset is
                // neither restored nor decommitted, and the next evaluation in the slot would
                // read it. Every byte below KEEP_RESIDENT is reset instead; the SDK's policies
                // keep that small with a 256 KiB stack (`.cargo/config.toml`).
                .pagemap_scan(Enabled::No);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm).map_err(|e| format!("wasmtime: {e:#}"))?;
        spawn_epoch_clock(&engine);
        let cache = match (config.cache, &config.cache_key_file) {
            (false, _) => None,
            (true, None) => {
                // Without a key no file in the cache can be trusted (see `cache`).
                if config.cache_dir.is_some() {
                    tracing::warn!(
                        "wasm.cacheDir is set but wasm.cacheKeyFile is not: compiled Wasm policies are not kept on disk, every start compiles them"
                    );
                }
                None
            }
            (true, Some(key_file)) => {
                let dir = config.cache_dir.clone().unwrap_or_else(cache::default_dir);
                match DiskCache::open(&dir, key_file) {
                    Ok(cache) => Some(cache),
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "no on-disk cache of compiled Wasm policies: every start compiles them");
                        None
                    }
                }
            }
        };
        Ok(Arc::new(Self {
            engine,
            fuel,
            cache,
            loaded: Mutex::new(HashMap::new()),
            metrics,
        }))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `bytes`, or loads the code compiled earlier for the same bytes and engine.
    pub fn component(&self, bytes: &[u8]) -> Result<(Component, CodeSource), String> {
        let digest = crate::oci::sha256_digest(bytes);
        let hex = digest.trim_start_matches("sha256:").to_string();
        if let Ok(loaded) = self.loaded.lock()
            && let Some(component) = loaded.get(&hex)
        {
            return Ok((component.clone(), CodeSource::Memory));
        }
        let name = format!("{hex}-{:016x}", self.compatibility());
        let loaded = self
            .cache
            .as_ref()
            .and_then(|cache| self.load_cached(cache, &name));
        let (component, source) = match loaded {
            Some(component) => (component, CodeSource::DiskCache),
            None => {
                if wasmparser::Parser::is_core_wasm(bytes) {
                    return Err("this is a core Wasm module, not a component: build the policy for wasm32-wasip2 (or wrap it with `wasm-tools component new`)".into());
                }
                let started = Instant::now();
                let component = Component::new(&self.engine, bytes)
                    .map_err(|e| format!("not a valid WebAssembly component: {e:#}"))?;
                tracing::info!(digest = %digest, seconds = started.elapsed().as_secs_f64(), "compiled Wasm policy");
                if let Some(cache) = &self.cache {
                    store_cached(cache, &name, &component);
                }
                (component, CodeSource::Compiled)
            }
        };
        if let Ok(mut loaded) = self.loaded.lock() {
            loaded.insert(hex, component.clone());
        }
        Ok((component, source))
    }

    /// What makes compiled code loadable: wasmtime's version and every setting that changes
    /// code generation, reduced to one number for the file name.
    fn compatibility(&self) -> u64 {
        // DefaultHasher::new() has fixed keys: stable for a given build, which is all a cache
        // keyed by the engine itself needs.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        hasher.finish()
    }

    #[allow(unsafe_code)]
    fn load_cached(&self, cache: &DiskCache, name: &str) -> Option<Component> {
        let file = cache.path(name);
        let code = match cache.load(name) {
            Lookup::Miss => return None,
            Lookup::Hit(code) => code,
            Lookup::Refused(reason) => {
                tracing::warn!(file = %file.display(), reason = %reason, "refusing a compiled policy from the cache: compiling the component again");
                return None;
            }
        };
        // SAFETY: the bytes are machine code that wasmtime loads as is, so they must be what
        // `Component::serialize` wrote for this component. They are: `cache.load` returns
        // them only under a MAC, keyed by a secret this server reads and cannot write, over
        // the file's name (the component's sha256 and the engine's compatibility hash) and
        // the code. wasmtime also refuses code of another version or configuration (then the
        // policy is compiled afresh).
        match unsafe { Component::deserialize(&self.engine, &code) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(file = %file.display(), reason = %format!("{e:#}"), "refusing a compiled policy from the cache: compiling the component again");
                None
            }
        }
    }
}

fn store_cached(cache: &DiskCache, name: &str, component: &Component) {
    let stored = component
        .serialize()
        .map_err(std::io::Error::other)
        .and_then(|code| cache.store(name, &code));
    if let Err(e) = stored {
        tracing::warn!(file = %cache.path(name).display(), error = %e, "could not cache a compiled policy");
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] for as long as the engine lives.
fn spawn_epoch_clock(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(e) = spawned {
        // Without the clock only fuel bounds a policy; say so loudly.
        tracing::error!(error = %e, "could not start the Wasm epoch clock: policy timeouts will not fire");
    }
}
