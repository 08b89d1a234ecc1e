//! A rate limit service speaking Envoy's protocol (`envoy.service.ratelimit.v3.RateLimitService`,
//! gRPC over h2c, messages from Envoy's own protos via `envoy-types`), for tests of global
//! limiting. It counts fixed windows in memory: a limit of `max` hits per `seconds` per distinct
//! descriptor.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit, rate_limit::Unit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tokio::sync::oneshot;

type Windows = HashMap<String, (Instant, u64)>;

struct Service {
    domain: String,
    max: u64,
    window: Duration,
    windows: Arc<Mutex<Windows>>,
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
        if request.domain != self.domain {
            return Err(tonic::Status::invalid_argument(format!(
                "unknown domain {:?}",
                request.domain
            )));
        }
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut overall = Code::Ok;
        let statuses = request
            .descriptors
            .iter()
            .map(|d| {
                let key: Vec<String> = d
                    .entries
                    .iter()
                    .map(|e| format!("{}={}", e.key, e.value))
                    .collect();
                let (start, hits) = windows.entry(key.join("|")).or_insert((now, 0));
                if now.duration_since(*start) >= self.window {
                    *start = now;
                    *hits = 0;
                }
                *hits += u64::from(request.hits_addend.max(1));
                let over = *hits > self.max;
                if over {
                    overall = Code::OverLimit;
                }
                let reset = self.window.saturating_sub(now.duration_since(*start));
                DescriptorStatus {
                    code: if over { Code::OverLimit } else { Code::Ok } as i32,
                    current_limit: Some(RateLimit {
                        name: String::new(),
                        requests_per_unit: u32::try_from(self.max).unwrap_or(u32::MAX),
                        unit: Unit::Minute as i32,
                    }),
                    limit_remaining: u32::try_from(self.max.saturating_sub(*hits)).unwrap_or(0),
                    duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                        seconds: i64::try_from(reset.as_secs()).unwrap_or(0),
                        nanos: i32::try_from(reset.subsec_nanos()).unwrap_or(0),
                    }),
                    ..Default::default()
                }
            })
            .collect();
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
    /// Starts a service for `domain` allowing `max` hits per minute per distinct descriptor.
    pub fn start(domain: &str, max: u64) -> RlsServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime for the rate limit service");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binding the rate limit service");
        let port = listener.local_addr().expect("bound address").port();
        let calls = Arc::new(AtomicU64::new(0));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let service = Service {
            domain: domain.to_string(),
            max,
            window: Duration::from_secs(60),
            windows: Arc::new(Mutex::new(HashMap::new())),
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
