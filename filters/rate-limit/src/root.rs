//! The root context: configuration and the counter-flushing tick.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use meshgate_ratelimit::Limiter;
use meshgate_ratelimit::rls::OverLimitCache;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};

use crate::http::Http;
use crate::metrics::Metrics;

/// How often counters reach Envoy's stats.
pub const FLUSH_PERIOD: Duration = Duration::from_millis(500);

/// The compiled configuration and counters, shared by the worker's request contexts.
pub struct Shared {
    /// The limiter.
    pub limiter: Limiter,
    /// Counters.
    pub metrics: Metrics,
    /// OVER_LIMIT answers of the rate limit service, until their reset.
    pub over_limit: RefCell<OverLimitCache>,
}

/// The root context of one worker.
#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
}

/// FNV-1a of the configuration: buckets of different configurations never share a slot.
fn config_id(config: &[u8]) -> String {
    let hash = config.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("meshgate.rl.{hash:016x}")
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = meshgate_wasm_host::buffer(BufferType::PluginConfiguration, usize::MAX)
            .unwrap_or_default();
        let limiter = match Limiter::from_json(&config, &config_id(&config)) {
            Ok(limiter) => limiter,
            Err(e) => {
                // Envoy refuses the plugin when this returns false; this line says why.
                let _ = hostcalls::log(LogLevel::Critical, &format!("rate-limit: {e}"));
                return false;
            }
        };
        let metrics = Metrics::define(limiter.stat_prefix.as_deref(), &limiter.names());
        self.shared = Some(Rc::new(Shared {
            limiter,
            metrics,
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
