//! A rate limit service speaking Envoy's protocol (`envoy.service.ratelimit.v3.RateLimitService`,
//! gRPC over h2c, messages from Envoy's own protos via `envoy-types`), for tests of global
//! limiting. The counting is Kuadrant's Limitador engine on a real Redis — what users run behind
//! the same protocol — wrapped in a small server that also records what it was asked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit, rate_limit::Unit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use limitador::AsyncRateLimiter;
use limitador::limit::{Context, Limit};
use limitador::storage::redis::AsyncRedisStorage;
use tokio::sync::oneshot;

use crate::Redis;

struct Service {
    limiter: AsyncRateLimiter,
    calls: Arc<AtomicU64>,
    delay: Arc<Mutex<Duration>>,
    requests: Arc<Mutex<Vec<RateLimitRequest>>>,
}

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap_or_else(|e| e.into_inner());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let request = request.into_inner();
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.clone());
        let descriptors: Vec<HashMap<String, String>> = request
            .descriptors
            .iter()
            .map(|d| {
                d.entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect()
            })
            .collect();
        // Limitador's Envoy front end binds the descriptors the same way.
        let mut ctx = Context::default();
        ctx.list_binding("descriptors".to_string(), descriptors);
        let namespace = request.domain.as_str().into();
        let result = self
            .limiter
            .check_rate_limited_and_update(&namespace, &ctx, u64::from(request.hits_addend.max(1)))
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let counter = result
            .counters
            .iter()
            .min_by_key(|c| c.remaining().unwrap_or(u64::MAX));
        let overall = if result.limited {
            Code::OverLimit
        } else {
            Code::Ok
        };
        let status = DescriptorStatus {
            code: overall as i32,
            current_limit: counter.map(|c| RateLimit {
                name: String::new(),
                requests_per_unit: u32::try_from(c.max_value()).unwrap_or(u32::MAX),
                unit: match c.window().as_secs() {
                    60 => Unit::Minute,
                    3600 => Unit::Hour,
                    86_400 => Unit::Day,
                    _ => Unit::Second,
                } as i32,
            }),
            limit_remaining: counter
                .and_then(|c| c.remaining())
                .map_or(0, |r| u32::try_from(r).unwrap_or(u32::MAX)),
            duration_until_reset: counter.and_then(|c| c.expires_in()).map(|d| {
                envoy_types::pb::google::protobuf::Duration {
                    seconds: i64::try_from(d.as_secs()).unwrap_or(0),
                    nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
                }
            }),
            ..Default::default()
        };
        let statuses = vec![status; request.descriptors.len()];
        Ok(tonic::Response::new(RateLimitResponse {
            overall_code: overall as i32,
            statuses,
            response_headers_to_add: vec![envoy_types::pb::envoy::config::core::v3::HeaderValue {
                key: "x-rls".into(),
                value: "fixture".into(),
                ..Default::default()
            }],
            ..Default::default()
        }))
    }
}

/// The service on a free loopback port; stopped on drop.
pub struct RlsServer {
    port: u16,
    calls: Arc<AtomicU64>,
    delay: Arc<Mutex<Duration>>,
    requests: Arc<Mutex<Vec<RateLimitRequest>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RlsServer {
    /// Starts a service for `domain` allowing `max` hits per minute per value of `key` in the
    /// first descriptor, counting in `redis`.
    pub fn start(redis: &Redis, domain: &str, key: &str, max: u64) -> RlsServer {
        Self::start_at(&redis.url(), "127.0.0.1:0", domain, key, max)
    }

    /// [`RlsServer::start`] counting in the Redis at `redis_url`, listening on `address`
    /// (`meshgate-stack rls`: the compose stack's rate limit service on a fixed port).
    pub fn start_at(
        redis_url: &str,
        address: &str,
        domain: &str,
        key: &str,
        max: u64,
    ) -> RlsServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime for the rate limit service");
        let url = redis_url.to_string();
        let storage = runtime
            .block_on(AsyncRedisStorage::new(&url))
            .unwrap_or_else(|e| panic!("Limitador cannot use Redis at {url}: {e}"));
        let limiter = AsyncRateLimiter::new_with_storage(Box::new(storage));
        let variable = format!("descriptors[0].{key}");
        let variable: limitador::limit::Expression = variable
            .as_str()
            .try_into()
            .unwrap_or_else(|e| panic!("CEL {variable}: {e:?}"));
        limiter.add_limit(Limit::new(domain, max, 60, Vec::new(), vec![variable]));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(address))
            .unwrap_or_else(|e| panic!("binding the rate limit service to {address}: {e}"));
        let port = listener.local_addr().expect("bound address").port();
        let calls = Arc::new(AtomicU64::new(0));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let service = Service {
            limiter,
            calls: Arc::clone(&calls),
            delay: Arc::clone(&delay),
            requests: Arc::clone(&requests),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let incoming = futures_util::stream::unfold(listener, |listener| async move {
                    let accepted = listener.accept().await.map(|(stream, _)| stream);
                    Some((accepted, listener))
                });
                let _ = tonic::transport::Server::builder()
                    .add_service(RateLimitServiceServer::new(service))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        RlsServer {
            port,
            calls,
            delay,
            requests,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The port (h2c).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ShouldRateLimit` calls served.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The requests received, as decoded with Envoy's protos.
    pub fn requests(&self) -> Vec<RateLimitRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes every answer wait this long (to test timeouts).
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap_or_else(|e| e.into_inner()) = delay;
    }
}

impl Drop for RlsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
