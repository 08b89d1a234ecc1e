//! A JWKS endpoint whose document and availability a test controls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Debug)]
struct Served {
    status: u16,
    body: String,
}

/// An HTTP server on 127.0.0.1 that answers every GET with the current JWKS document (or the
/// status set with [`JwksServer::fail_with`]) and counts the requests it served.
pub struct JwksServer {
    server: Arc<tiny_http::Server>,
    port: u16,
    served: Arc<Mutex<Served>>,
    requests: Arc<AtomicU64>,
    paths: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl JwksServer {
    /// Starts on a free port, serving `jwks`.
    pub fn start(jwks: &str) -> JwksServer {
        Self::start_on(0, jwks)
    }

    /// Starts on `port` (0 for a free one), serving `jwks`.
    pub fn start_on(port: u16, jwks: &str) -> JwksServer {
        let server = Arc::new(
            tiny_http::Server::http(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("binding JWKS server on port {port}: {e}")),
        );
        let port = server.server_addr().to_ip().expect("IP listener").port();
        let served = Arc::new(Mutex::new(Served {
            status: 200,
            body: jwks.to_string(),
        }));
        let requests = Arc::new(AtomicU64::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (server, served, requests, paths) = (
                Arc::clone(&server),
                Arc::clone(&served),
                Arc::clone(&requests),
                Arc::clone(&paths),
            );
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    paths
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(request.url().to_string());
                    requests.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = {
                        let s = served.lock().unwrap_or_else(|e| e.into_inner());
                        (s.status, s.body.clone())
                    };
                    let response = tiny_http::Response::from_string(body)
                        .with_status_code(status)
                        .with_header(
                            tiny_http::Header::from_bytes("content-type", "application/json")
                                .expect("static header"),
                        );
                    let _ = request.respond(response);
                }
            })
        };
        JwksServer {
            server,
            port,
            served,
            requests,
            paths,
            thread: Some(thread),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the document.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/.well-known/jwks.json", self.port)
    }

    /// Serves `jwks` with 200 from now on.
    pub fn set_jwks(&self, jwks: &str) {
        let mut s = self.served.lock().unwrap_or_else(|e| e.into_inner());
        s.status = 200;
        s.body = jwks.to_string();
    }

    /// Answers `status` with an error body from now on (a JWKS endpoint that is down).
    pub fn fail_with(&self, status: u16) {
        let mut s = self.served.lock().unwrap_or_else(|e| e.into_inner());
        s.status = status;
        s.body = "unavailable".into();
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Requests served so far whose path and query contain `marker`.
    pub fn requests_matching(&self, marker: &str) -> usize {
        let paths = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        paths.iter().filter(|p| p.contains(marker)).count()
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
