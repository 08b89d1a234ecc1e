//! The per-request context: authenticate on request headers.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::host;
use crate::respond::{self, Applied, Shared};

/// One request.
pub struct Http {
    id: u32,
    state: Shared,
}

impl Http {
    /// A context for request `id`.
    pub fn new(id: u32, state: Shared) -> Self {
        Http { id, state }
    }
}

impl Context for Http {
    fn on_done(&mut self) -> bool {
        if let Ok(mut state) = self.state.try_borrow_mut() {
            state.waiting.remove(&self.id);
        }
        true
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Ok(mut state) = self.state.try_borrow_mut() else {
            // Re-entrancy cannot happen on one thread; refuse rather than skip the check.
            meshgate_wasm_host::send_reply(500, &[], b"jwt-auth: busy");
            return Action::Pause;
        };
        match respond::run(&mut state, self.id, host::now_ms()) {
            Applied::Continue => Action::Continue,
            Applied::Replied | Applied::Paused => Action::Pause,
        }
    }
}
