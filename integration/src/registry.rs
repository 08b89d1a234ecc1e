//! Debian's `docker-registry` (the CNCF distribution registry) on a free loopback port, and
//! [`HostileRegistry`], a scripted one that misbehaves on purpose.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::{Process, ports};

/// A running OCI registry with its storage in a temporary directory; killed on drop.
pub struct Registry {
    process: Process,
    port: u16,
    _dir: tempfile::TempDir,
}

/// Where Debian installs the registry binary; `MESHGATE_REGISTRY` overrides it.
fn registry_binary() -> String {
    std::env::var("MESHGATE_REGISTRY").unwrap_or_else(|_| "/usr/bin/docker-registry".into())
}

impl Registry {
    /// Starts the registry and waits until `GET /v2/` answers.
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().expect("temp dir for the registry");
        let port = ports::free_port();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            root = dir.path().join("storage").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("writing registry config");
        let mut command = Command::new(registry_binary());
        command.arg("serve").arg(&config_path);
        let mut process =
            Process::spawn("docker-registry", command, &dir.path().join("registry.log"));
        process
            .wait_http_ok(
                &format!("http://127.0.0.1:{port}/v2/"),
                Duration::from_secs(30),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        Registry {
            process,
            port,
            _dir: dir,
        }
    }

    /// `127.0.0.1:<port>`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// CPU time the registry process has used so far.
    pub fn cpu_time(&self) -> std::time::Duration {
        crate::process::cpu_time(self.process.pid())
    }

    /// The registry's log (its access log counts the requests it served).
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// One request a [`HostileRegistry`] received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// Path and query.
    pub url: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

/// What a [`HostileRegistry`] answers.
pub enum Reply {
    /// A status, headers and a body.
    Body(u16, Vec<(String, String)>, Vec<u8>),
    /// `200` with `len` bytes of JSON whitespace, chunked (no declared length); the bytes the
    /// server managed to send are counted.
    Stream(u64),
    /// `200` declaring a `Content-Length` of `len` and sending as much as the client reads.
    Declared(u64),
}

impl Reply {
    /// A JSON body with `200`.
    pub fn json(body: &serde_json::Value) -> Reply {
        Reply::Body(
            200,
            vec![("content-type".into(), "application/json".into())],
            body.to_string().into_bytes(),
        )
    }

    /// A status with a text body.
    pub fn status(code: u16, body: &str) -> Reply {
        Reply::Body(code, Vec::new(), body.as_bytes().to_vec())
    }

    /// A redirect to `location`.
    pub fn redirect(code: u16, location: &str) -> Reply {
        Reply::Body(code, vec![("location".into(), location.into())], Vec::new())
    }
}

/// A small registry (or any HTTP service) on a free loopback port that answers as a test
/// scripts it, recording every request and counting the streamed bytes it sent. Each request
/// is served on its own thread, so a slow answer blocks no other.
pub struct HostileRegistry {
    server: std::sync::Arc<tiny_http::Server>,
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    streamed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// JSON whitespace, counted as it is read out.
struct Counted {
    left: u64,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::io::Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        buf[..n].fill(b' ');
        self.left -= n as u64;
        self.sent
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

impl HostileRegistry {
    /// Starts serving; `answer` decides each reply.
    pub fn start(answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> HostileRegistry {
        use std::sync::Arc;
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("binding a port"));
        let port = server.server_addr().to_ip().expect("an IP listener").port();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let streamed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let answer = Arc::new(answer);
        let thread = {
            let (server, seen, streamed) = (server.clone(), seen.clone(), streamed.clone());
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    let (seen, streamed, answer) = (seen.clone(), streamed.clone(), answer.clone());
                    std::thread::spawn(move || {
                        let request_seen = Seen {
                            method: request.method().to_string(),
                            url: request.url().to_string(),
                            authorization: request
                                .headers()
                                .iter()
                                .find(|h| h.field.equiv("authorization"))
                                .map(|h| h.value.to_string()),
                        };
                        seen.lock().unwrap().push(request_seen.clone());
                        let header = |(name, value): &(String, String)| {
                            tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
                                .expect("a valid header")
                        };
                        // A client that hangs up mid-body is what caps look like here.
                        let _ = match answer(&request_seen) {
                            Reply::Body(code, headers, body) => {
                                let mut response =
                                    tiny_http::Response::from_data(body).with_status_code(code);
                                for h in &headers {
                                    response.add_header(header(h));
                                }
                                request.respond(response)
                            }
                            Reply::Stream(len) => request.respond(tiny_http::Response::new(
                                tiny_http::StatusCode(200),
                                vec![header(&("content-type".into(), "application/json".into()))],
                                Counted {
                                    left: len,
                                    sent: streamed,
                                },
                                None,
                                None,
                            )),
                            Reply::Declared(len) => request.respond(tiny_http::Response::new(
                                tiny_http::StatusCode(200),
                                vec![header(&("content-type".into(), "application/json".into()))],
                                Counted {
                                    left: len,
                                    sent: streamed,
                                },
                                Some(len as usize),
                                None,
                            )),
                        };
                    });
                }
            })
        };
        HostileRegistry {
            server,
            port,
            seen,
            streamed,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Body bytes handed to the network by [`Reply::Stream`] and [`Reply::Declared`] answers.
    pub fn streamed_bytes(&self) -> u64 {
        self.streamed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A runtime for the OCI client calls of the helpers below.
fn oci_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An OCI client for the loopback registries (plain HTTP).
fn plain_http_client() -> oci_client::Client {
    oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    })
}

/// `sha256:<hex>` of some bytes, as OCI digests are written.
pub fn sha256_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// The raw manifest a reference names: its bytes and media type.
pub fn pull_raw(reference: &str) -> (Vec<u8>, String) {
    let reference: oci_client::Reference = reference.parse().expect("registry");
    oci_runtime().block_on(async {
        let (bytes, digest) = plain_http_client()
            .pull_manifest_raw(
                &reference,
                &oci_client::secrets::RegistryAuth::Anonymous,
                &[
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.oci.image.index.v1+json",
                ],
            )
            .await
            .expect("registry");
        let media_type = serde_json::from_slice::<Json>(&bytes).expect("registry")["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.manifest.v1+json")
            .to_string();
        assert!(digest.starts_with("sha256:"));
        (bytes.to_vec(), media_type)
    })
}

/// Pushes an OCI image index to `reference` whose entries are the manifests at the given tags
/// of the same repository, each with the platform (`os/architecture`, or "" for none) and
/// annotations given; returns the index's digest.
pub fn push_index(reference: &str, entries: &[(&str, &str, Json)]) -> String {
    let repository = reference.rsplit_once(':').expect("registry").0;
    let manifests: Vec<Json> = entries
        .iter()
        .map(|(tag, platform, annotations)| {
            let (bytes, media_type) = pull_raw(&format!("{repository}:{tag}"));
            let mut entry = json!({
                "mediaType": media_type,
                "size": bytes.len(),
                "digest": sha256_of(&bytes),
            });
            if let Some((os, architecture)) = platform.split_once('/') {
                entry["platform"] = json!({"os": os, "architecture": architecture});
            }
            if !annotations.is_null() {
                entry["annotations"] = annotations.clone();
            }
            entry
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let bytes = serde_json::to_vec(&index).expect("registry");
    let digest = sha256_of(&bytes);
    let target: oci_client::Reference = reference.parse().expect("registry");
    oci_runtime().block_on(async {
        plain_http_client()
            .push_manifest_raw(
                &target,
                bytes,
                "application/vnd.oci.image.index.v1+json"
                    .parse()
                    .expect("registry"),
            )
            .await
            .expect("registry");
    });
    digest
}
