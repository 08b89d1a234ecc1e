//! The per-request context: take tokens on request headers, add headers to the response.

use std::rc::Rc;

use meshgate_ratelimit::headers;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::host::{self, HostRequest, HostStore};
use crate::root::Shared;

/// Request header naming the shadow descriptors that would have refused the request, for the
/// upstream to see.
pub const SHADOW_HEADER: &str = "x-meshgate-ratelimit-shadow";

/// One request.
pub struct Http {
    shared: Rc<Shared>,
    response_headers: Vec<(&'static str, String)>,
}

impl Http {
    /// A context sharing the worker's limiter.
    pub fn new(shared: Rc<Shared>) -> Self {
        Http {
            shared,
            response_headers: Vec::new(),
        }
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let limiter = &self.shared.limiter;
        let metrics = &self.shared.metrics;
        let decision = limiter.check(&HostRequest::default(), &HostStore, host::now_ms());
        for _ in 0..decision.store_errors {
            metrics.store_error();
        }
        if decision.verdicts.iter().any(|v| v.overflow) {
            metrics.overflow();
        }
        let shadow: Vec<&str> = decision
            .shadow_limited()
            .map(|v| {
                metrics.shadow_limited(&v.name);
                v.name.as_str()
            })
            .collect();
        if let Some(limiting) = decision.limited_by() {
            metrics.limited(&limiting.name);
            let rendered = headers::render(&decision, limiter.legacy_headers);
            let mut reply: Vec<(&str, &str)> =
                rendered.iter().map(|(n, v)| (*n, v.as_str())).collect();
            reply.push(("content-type", "text/plain"));
            let body = format!("rate limited by {}\n", limiting.name);
            self.send_http_response(limiter.status, reply, Some(body.as_bytes()));
            return Action::Pause;
        }
        metrics.allowed();
        if !shadow.is_empty() {
            self.set_http_request_header(SHADOW_HEADER, Some(&shadow.join(",")));
        }
        if limiter.headers_on_allowed {
            self.response_headers = headers::render(&decision, limiter.legacy_headers);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            self.set_http_response_header(name, Some(&value));
        }
        Action::Continue
    }
}
