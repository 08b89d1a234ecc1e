//! The root context: configuration and the counter-flushing tick.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use meshgate_ratelimit::Limiter;
use meshgate_ratelimit::rls::OverLimitCache;
use meshgate_ratelimit::table::{Salt, fingerprint, load_or_create_salt};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};

use crate::host::HostStore;
use crate::http::Http;
use crate::metrics::Metrics;
use crate::shared::Shared;

/// How often counters reach Envoy's stats.
pub const FLUSH_PERIOD: Duration = Duration::from_millis(500);

/// The root context of one worker.
#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
}

/// The shared-data namespace of this filter: its plugin name and root id, not its
/// configuration, so a new configuration of the same filter reuses its table instead of
/// leaving the old one in shared data (which cannot be deleted) and resetting every bucket.
fn namespace() -> String {
    let property = |name: &str| {
        hostcalls::get_property(vec![name])
            .ok()
            .flatten()
            .map(meshgate_wasm_host::text)
            .unwrap_or_default()
    };
    let id = fingerprint(&format!(
        "{}\n{}",
        property("plugin_name"),
        property("plugin_root_id")
    ));
    format!("meshgate.rl.{id:016x}")
}

/// 128 random bits. std seeds each `RandomState` from the host's random source (WASI
/// `random_get`, which Envoy implements); two hashes under two such keys are 128 bits nobody
/// outside the VM can predict.
fn random_salt() -> Salt {
    use std::hash::{BuildHasher, RandomState};
    let mut salt = [0u8; 16];
    salt[..8].copy_from_slice(&RandomState::new().hash_one(0u8).to_le_bytes());
    salt[8..].copy_from_slice(&RandomState::new().hash_one(1u8).to_le_bytes());
    salt
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = meshgate_wasm_host::buffer(BufferType::PluginConfiguration, usize::MAX)
            .unwrap_or_default();
        let Some(salt) = load_or_create_salt(&HostStore, random_salt) else {
            let _ = hostcalls::log(
                LogLevel::Critical,
                "rate-limit: shared data refused the key salt",
            );
            return false;
        };
        let limiter = match Limiter::from_json(&config, &namespace(), salt) {
            Ok(limiter) => limiter,
            Err(e) => {
                // Envoy refuses the plugin when this returns false; this line says why.
                let _ = hostcalls::log(LogLevel::Critical, &format!("rate-limit: {e}"));
                return false;
            }
        };
        let metrics = Metrics::define(limiter.stat_prefix.as_deref(), &limiter.names());
        self.shared = Some(Rc::new(Shared {
            leases: RefCell::new(limiter.leases()),
            limiter,
            metrics,
            payloads: meshgate_ratelimit::descriptor::PayloadMemo::default(),
            over_limit: RefCell::new(OverLimitCache::default()),
        }));
        let _ = hostcalls::set_tick_period(FLUSH_PERIOD);
        true
    }

    fn on_tick(&mut self) {
        if let Some(shared) = &self.shared {
            shared.metrics.flush();
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = Rc::clone(self.shared.as_ref()?);
        Some(Box::new(Http::new(shared)))
    }
}
