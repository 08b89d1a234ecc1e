//! The per-request context: local buckets on request headers, then (when configured) one call
//! to the rate limit service; rate-limit headers on the response.

use std::rc::Rc;

use meshgate_ratelimit::limiter::Decision;
use meshgate_ratelimit::{headers, rls};
use meshgate_wasm_host as wasm_host;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel};

use crate::host::{self, HostRequest, HostStore};
use crate::shared::Shared;

/// Request header naming the shadow descriptors that would have refused the request, for the
/// upstream to see.
pub const SHADOW_HEADER: &str = "x-meshgate-ratelimit-shadow";

/// A call to the rate limit service in flight.
struct Pending {
    names: Vec<String>,
    keys: Vec<String>,
    local: Decision,
}

/// One request.
pub struct Http {
    shared: Rc<Shared>,
    response_headers: Vec<(String, String)>,
    pending: Option<Pending>,
}

impl Http {
    /// A context sharing the worker's limiter.
    pub fn new(shared: Rc<Shared>) -> Self {
        Http {
            shared,
            response_headers: Vec::new(),
            pending: None,
        }
    }

    /// Answers the request with the limited status and these headers.
    fn refuse(&self, decision: &Decision, extra: Vec<(String, String)>) {
        let limiter = &self.shared.limiter;
        let name = decision
            .limited_by()
            .map_or("rate limit service", |v| v.name.as_str());
        self.shared.metrics.limited(name);
        let mut reply: Vec<(String, String)> = headers::render(decision, limiter.legacy_headers)
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect();
        reply.extend(extra);
        reply.push(("content-type".into(), "text/plain".into()));
        let reply: Vec<(&str, &str)> = reply
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let body = format!("rate limited by {name}\n");
        wasm_host::send_reply(limiter.status, &reply, body.as_bytes());
    }

    /// Lets the request through, keeping the headers its response should carry.
    fn admit(&mut self, decision: &Decision, mut extra: Vec<(String, String)>) {
        self.shared.metrics.allowed();
        let limiter = &self.shared.limiter;
        if limiter.headers_on_allowed {
            self.response_headers = headers::render(decision, limiter.legacy_headers)
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect();
        }
        self.response_headers.append(&mut extra);
    }

    /// The rate limit service did not answer: let through or refuse, as configured.
    fn service_failed(&mut self, local: &Decision, why: &str) -> bool {
        self.shared.metrics.rls_error();
        let _ = proxy_wasm::hostcalls::log(
            LogLevel::Warn,
            &format!("rate-limit: rate limit service: {why}"),
        );
        let deny = self
            .shared
            .limiter
            .global
            .as_ref()
            .is_some_and(|g| g.failure_mode_deny);
        if deny {
            wasm_host::send_reply(
                500,
                &[("content-type", "text/plain")],
                b"rate limit service unavailable\n",
            );
        } else {
            self.admit(local, Vec::new());
        }
        !deny
    }
}

impl Context for Http {
    fn on_grpc_call_response(&mut self, _token: u32, status_code: u32, response_size: usize) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let answer = if status_code == 0 {
            wasm_host::buffer(BufferType::GrpcReceiveBuffer, response_size)
                .ok_or_else(|| "empty answer".to_string())
                .and_then(|b| rls::decode_response(&b).map_err(|e| e.to_string()))
        } else {
            Err(format!("gRPC status {status_code}"))
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(why) => {
                if self.service_failed(&pending.local, &why) {
                    wasm_host::resume_request();
                }
                return;
            }
        };
        let now = host::now_ms();
        let verdicts: Vec<_> = pending
            .names
            .iter()
            .zip(&answer.statuses)
            .map(|(name, status)| rls::verdict(name, status))
            .collect();
        let response_headers: Vec<(String, String)> = answer
            .response_headers_to_add
            .iter()
            .map(|h| (h.key.to_ascii_lowercase(), h.value.clone()))
            .collect();
        let mut decision = pending.local;
        decision.verdicts.extend(verdicts.iter().cloned());
        if answer.overall_code == rls::OVER_LIMIT {
            let mut cache = self.shared.over_limit.borrow_mut();
            for (key, verdict) in pending.keys.iter().zip(&verdicts) {
                if !verdict.taken.allowed {
                    cache.insert(key.clone(), verdict.clone(), now);
                }
            }
            drop(cache);
            if decision.limited_by().is_none() {
                // OVER_LIMIT without a descriptor status: refuse under the service's name.
                decision.verdicts.clear();
            }
            self.refuse(&decision, response_headers);
            return;
        }
        for h in &answer.request_headers_to_add {
            wasm_host::set_request_header(&h.key, Some(&h.value));
        }
        self.admit(&decision, response_headers);
        wasm_host::resume_request();
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let shared = Rc::clone(&self.shared);
        let (limiter, metrics) = (&shared.limiter, &shared.metrics);
        let request = HostRequest::new(&shared.payloads);
        let now = host::now_ms();
        let decision = {
            let mut leases = shared.leases.borrow_mut();
            limiter.check_with(&request, &HostStore, &mut leases, now)
        };
        for _ in 0..decision.store_errors {
            metrics.store_error();
        }
        for _ in 0..decision.attribute_errors {
            metrics.attribute_error();
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
        if decision.limited_by().is_some() {
            self.refuse(&decision, Vec::new());
            return Action::Pause;
        }
        if !shadow.is_empty() {
            wasm_host::set_request_header(SHADOW_HEADER, Some(&shadow.join(",")));
        }
        let Some(global) = &limiter.global else {
            self.admit(&decision, Vec::new());
            return Action::Continue;
        };
        let Ok(descriptors) = limiter.global_descriptors(&request) else {
            // An attribute the host could not read: refuse rather than skip the service.
            metrics.attribute_error();
            self.refuse(&decision, Vec::new());
            return Action::Pause;
        };
        if descriptors.is_empty() {
            self.admit(&decision, Vec::new());
            return Action::Continue;
        }
        let keys: Vec<String> = descriptors.iter().map(|(_, e)| rls::cache_key(e)).collect();
        // A refusal still in force answers without asking the service again.
        let cached = {
            let mut cache = shared.over_limit.borrow_mut();
            keys.iter().zip(&descriptors).find_map(|(key, (name, _))| {
                cache.get(key, now).map(|mut v| {
                    v.name = name.clone();
                    v
                })
            })
        };
        if let Some(verdict) = cached {
            let mut refused = decision;
            refused.verdicts.push(verdict);
            self.refuse(&refused, Vec::new());
            return Action::Pause;
        }
        let entries: Vec<Vec<(String, String)>> =
            descriptors.iter().map(|(_, e)| e.clone()).collect();
        let message = rls::encode_request(&global.domain, &entries);
        match self.dispatch_grpc_call(
            &global.cluster,
            rls::SERVICE,
            rls::METHOD,
            vec![],
            Some(&message),
            global.timeout,
        ) {
            Ok(_) => {
                metrics.rls_call();
                self.pending = Some(Pending {
                    names: descriptors.into_iter().map(|(n, _)| n).collect(),
                    keys,
                    local: decision,
                });
                Action::Pause
            }
            Err(status) => {
                if self.service_failed(&decision, &format!("cannot call cluster: {status:?}")) {
                    Action::Continue
                } else {
                    Action::Pause
                }
            }
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            wasm_host::set_response_header(&name, &value);
        }
        Action::Continue
    }
}
