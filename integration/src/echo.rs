//! An HTTP upstream that echoes each request back as JSON, counting what it served.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

/// An upstream on a free loopback port. Every request gets `200` and a JSON body
/// `{"method", "path", "headers": {name: value}}` (repeated headers joined with `,`), unless the
/// request path starts with `/status/NNN`, which answers that status.
pub struct Echo {
    server: Arc<tiny_http::Server>,
    port: u16,
    served: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    /// Starts the upstream.
    pub fn start() -> Echo {
        let server =
            Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("binding echo upstream"));
        let port = server
            .server_addr()
            .to_ip()
            .expect("echo listens on IP")
            .port();
        let served = Arc::new(AtomicU64::new(0));
        let thread = {
            let server = Arc::clone(&server);
            let served = Arc::clone(&served);
            std::thread::spawn(move || {
                for mut request in server.incoming_requests() {
                    served.fetch_add(1, Ordering::Relaxed);
                    let mut headers: BTreeMap<String, String> = BTreeMap::new();
                    for header in request.headers() {
                        let name = header.field.as_str().as_str().to_ascii_lowercase();
                        let value = header.value.as_str().to_string();
                        headers
                            .entry(name)
                            .and_modify(|v| {
                                v.push(',');
                                v.push_str(&value);
                            })
                            .or_insert(value);
                    }
                    let mut body = String::new();
                    let _ = request.as_reader().read_to_string(&mut body);
                    let path = request.url().to_string();
                    let status = path
                        .strip_prefix("/status/")
                        .and_then(|s| s.get(..3))
                        .and_then(|s| s.parse::<u16>().ok())
                        .unwrap_or(200);
                    let json = serde_json::json!({
                        "method": request.method().as_str(),
                        "path": path,
                        "headers": headers,
                        "body": body,
                    });
                    let response = tiny_http::Response::from_string(json.to_string())
                        .with_status_code(status)
                        .with_header(
                            tiny_http::Header::from_bytes("content-type", "application/json")
                                .expect("static header"),
                        );
                    let _ = request.respond(response);
                }
            })
        };
        Echo {
            server,
            port,
            served,
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
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
