//! An HTTP upstream that echoes each request back as JSON, counting what it served.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

/// An upstream on a loopback port (hyper, HTTP/1.1 keep-alive). Every request gets `200` and a
/// JSON body `{"method", "path", "headers": {name: value}, "body"}` (repeated headers joined with
/// `,`), unless the path starts with `/status/NNN`, which answers that status.
pub struct Echo {
    port: u16,
    served: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

async fn handle(
    request: Request<hyper::body::Incoming>,
    served: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    served.fetch_add(1, Ordering::Relaxed);
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in request.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let method = request.method().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(200);
    let json =
        serde_json::json!({"method": method, "path": path, "headers": headers, "body": body});
    let mut response = Response::new(Full::new(Bytes::from(json.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

impl Echo {
    /// Starts the upstream on a free port.
    pub fn start() -> Echo {
        Self::start_on(0)
    }

    /// Starts the upstream on `port` (0 for a free one).
    pub fn start_on(port: u16) -> Echo {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime for the echo upstream");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap_or_else(|e| panic!("binding echo upstream on port {port}: {e}"));
        let port = listener.local_addr().expect("bound address").port();
        let served = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = {
            let served = Arc::clone(&served);
            std::thread::spawn(move || {
                runtime.block_on(async move {
                    let accept = async {
                        loop {
                            let Ok((stream, _)) = listener.accept().await else {
                                continue;
                            };
                            let served = Arc::clone(&served);
                            tokio::spawn(async move {
                                let service = hyper::service::service_fn(move |r| {
                                    handle(r, Arc::clone(&served))
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept => {}
                    }
                });
            })
        };
        Echo {
            port,
            served,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many requests it has served.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
