//! The HTTPS server: `POST /validate`, `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! Under hostile input the front door bounds, in this order: who may connect
//! (`tls.clientCaFile`), how many body bytes are held at once (`limits.maxBytesInFlight`,
//! reserved before a body is read), the size of one body (`limits.maxBodyBytes`, 413), and what
//! parsing may build ([`review`]).

pub mod review;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use kube_core::admission::AdmissionResponse;
use serde_json::Value as Json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant as Deadline;

use crate::config::{Config, FailurePolicy};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Verdict};
use crate::tls::{self, ReloadingCertificate};
use review::{ParseLimits, Review, ReviewError};

/// TLS handshakes that take longer are dropped, so idle sockets cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bodies over the limit are still read (and discarded) up to this size, so an HTTP/1 client
/// gets its 413 instead of a connection reset; larger ones are cut off.
const DRAIN_BYTES: usize = 64 << 20;

/// Longest message a decision's log line carries.
const LOGGED_MESSAGE_BYTES: usize = 1024;

/// Bodies at least this large are parsed off the reactor, so health checks stay prompt.
const BLOCKING_PARSE_BYTES: usize = 256 << 10;

struct App {
    pipeline: OnceLock<Arc<Pipeline>>,
    metrics: Arc<Metrics>,
    evaluations: Arc<Semaphore>,
    /// Body bytes held at once: reserved before a body is read, released with the answer.
    bytes_in_flight: Arc<Semaphore>,
    max_body_bytes: usize,
    parse_limits: ParseLimits,
    review_timeout: Duration,
    failure_policy: FailurePolicy,
    /// Deny reviews while loading, whatever `failure_policy`: their images cannot be checked.
    images_fail_closed: bool,
}

/// Serves the webhook until the process is stopped. Policies are loaded in the background
/// after the socket is bound (`/readyz` turns 200 when they are); a policy that fails to load
/// ends the server with its error.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (cert_file, key_file) = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let dir = config
                .tls
                .state_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("meshgate-dev-tls"));
            let dev = tls::dev_certificate(&dir)?;
            tracing::info!(ca = %dev.ca.display(), cert = %dev.cert.display(), "no tls.certFile configured: serving a development certificate for localhost/127.0.0.1");
            (dev.cert, dev.key)
        }
    };
    let certificate = Arc::new(ReloadingCertificate::new(cert_file, key_file)?);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(
        certificate.clone(),
        config.tls.client_ca_file.as_deref(),
    )?));
    if let Some(ca) = &config.tls.client_ca_file {
        tracing::info!(ca = %ca.display(), "clients must present a certificate signed by this CA");
    }
    tls::spawn_reloader(certificate, config.tls.reload_interval);

    let metrics = Arc::new(Metrics::new());
    let permits = match config.limits.max_concurrent_reviews {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let app = Arc::new(App {
        pipeline: OnceLock::new(),
        metrics: metrics.clone(),
        evaluations: Arc::new(Semaphore::new(permits)),
        bytes_in_flight: Arc::new(Semaphore::new(config.limits.max_bytes_in_flight)),
        max_body_bytes: config.limits.max_body_bytes,
        parse_limits: ParseLimits {
            max_values: config.limits.max_json_values,
            max_depth: config.limits.max_json_depth,
        },
        review_timeout: config.limits.review_timeout,
        failure_policy: config.failure_policy,
        images_fail_closed: crate::pipeline::images_fail_closed(&config),
    });
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "listening on https://{local}");
    if let Some(address) = config.probe_listen {
        let probes = tokio::net::TcpListener::bind(address).await?;
        let local = probes.local_addr()?;
        tracing::info!(address = %local, "probes and metrics on http://{local}");
        tokio::spawn(plain_loop(probes, probe_router(app.clone())));
    }

    let loader = {
        let app = app.clone();
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let pipeline = Pipeline::load(&config, app.metrics.clone())?;
            let names: Vec<String> = pipeline
                .policies()
                .iter()
                .map(|p| format!("{} ({})", p.name(), p.engine()))
                .collect();
            tracing::info!(policies = ?names, millis = started.elapsed().as_millis() as u64, "policies loaded; ready");
            let _ = app.pipeline.set(Arc::new(pipeline));
            Ok::<_, anyhow::Error>(())
        })
    };

    let router = router(app);
    let serve = accept_loop(listener, acceptor, router);
    tokio::pin!(serve);
    tokio::select! {
        loaded = loader => {
            loaded??;
        }
        () = &mut serve => return Ok(()),
    }
    tokio::select! {
        () = serve => Ok(()),
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, acceptor, router).await;
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let service = hyper_util::service::TowerToHyperService::new(router);
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Serves plain HTTP (the probe listener) until the process stops.
async fn plain_loop(listener: tokio::net::TcpListener, router: Router) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper_util::service::TowerToHyperService::new(router);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

fn router(app: Arc<App>) -> Router {
    probe_router(app.clone()).route("/validate", post(validate).with_state(app))
}

/// What the probe listener serves: no reviews.
fn probe_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    match app.pipeline.get() {
        Some(_) => (StatusCode::OK, "ready").into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "loading policies").into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

fn plain(status: StatusCode, message: &str) -> Response {
    (status, format!("{message}\n")).into_response()
}

fn bad_request(app: &App, message: &str) -> Response {
    app.metrics.error("bad_request");
    tracing::warn!(error = %message, "bad request");
    plain(StatusCode::BAD_REQUEST, message)
}

/// Marks an HTTP/1 answer as the connection's last: the rest of the body was not read, so the
/// connection cannot carry another request.
fn closing(mut response: Response, version: Version) -> Response {
    if version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// 413 for a body over the limit. An HTTP/1 client sends its whole body before it reads the
/// answer, and closing a socket with unread bytes resets it, losing the answer: so the rest of
/// the body is read and discarded first (bounded by [`DRAIN_BYTES`] and the deadline).
async fn too_large(
    app: &App,
    version: Version,
    body: Body,
    declared: Option<usize>,
    deadline: Deadline,
) -> Response {
    app.metrics.error("too_large");
    let message = format!(
        "request body exceeds the limit of {} bytes",
        app.max_body_bytes
    );
    tracing::warn!(error = %message, "bad request");
    let response = plain(StatusCode::PAYLOAD_TOO_LARGE, &message);
    let drained = version < Version::HTTP_2
        && declared.is_none_or(|n| n <= DRAIN_BYTES)
        && drain(body, deadline).await;
    if drained {
        response
    } else {
        closing(response, version)
    }
}

/// Reads and discards a body; whether it ended within [`DRAIN_BYTES`] and the deadline.
async fn drain(mut body: Body, deadline: Deadline) -> bool {
    let mut seen = 0usize;
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                seen += frame.data_ref().map_or(0, |d| d.len());
                if seen > DRAIN_BYTES {
                    return false;
                }
            }
            Ok(None) => return true,
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

/// What reading a body can end in, besides its bytes.
enum Read {
    Complete(Vec<u8>),
    TooLarge(Body),
    Failed(String),
}

/// Reads a body of at most `max` bytes into one buffer (no chunk list copied at the end).
async fn read_body(
    mut body: Body,
    max: usize,
    declared: Option<usize>,
    deadline: Deadline,
) -> Read {
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(max));
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Read::Failed("request body not received within the review deadline".into());
            }
            Ok(None) => return Read::Complete(bytes),
            Ok(Some(Err(e))) => {
                return Read::Failed(format!("could not read the request body: {e}"));
            }
            Ok(Some(Ok(frame))) => {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                if bytes.len() + data.len() > max {
                    return Read::TooLarge(body);
                }
                bytes.extend_from_slice(data);
            }
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn validate(
    State(app): State<Arc<App>>,
    version: Version,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let deadline = Deadline::now() + app.review_timeout;
    let declared = content_length(&headers);
    if declared.is_some_and(|n| n > app.max_body_bytes) {
        return too_large(&app, version, body, declared, deadline).await;
    }
    // Memory is reserved before the body is read: at most `maxBytesInFlight` body bytes (and
    // what parsing them builds) are held at once, whatever the number of connections.
    // A review waits at most half its deadline for its share: one that gets in later would
    // have too little time left to be judged, and the API server is better told at once.
    let share = declared.unwrap_or(app.max_body_bytes).max(1);
    let Ok(permit) = reserve(&app, share, Deadline::now() + app.review_timeout / 2).await else {
        app.metrics.error("busy");
        tracing::warn!("too many reviews in flight; answering 503");
        let mut response = plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many reviews in flight, retry later",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return closing(response, version);
    };
    let bytes = match read_body(body, app.max_body_bytes, declared, deadline).await {
        Read::Complete(bytes) => bytes,
        Read::TooLarge(rest) => {
            return too_large(&app, version, rest, declared, deadline).await;
        }
        Read::Failed(message) => return closing(bad_request(&app, &message), version),
    };
    // The body is dropped once parsed: only the tree the pipeline needs is held.
    let parse = |bytes: Vec<u8>, limits| review::parse(&bytes, limits);
    let parsed = if bytes.len() >= BLOCKING_PARSE_BYTES {
        let limits = app.parse_limits;
        match tokio::task::spawn_blocking(move || parse(bytes, limits)).await {
            Ok(parsed) => parsed,
            Err(e) => {
                app.metrics.error("internal");
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("parse failed: {e}"),
                );
            }
        }
    } else {
        parse(bytes, app.parse_limits)
    };
    let review = match parsed {
        Ok(review) => review,
        Err(ReviewError::Invalid {
            uid: Some(uid),
            message,
        }) => {
            // With a uid the API server can match an answer to its request: say what is wrong
            // in an `invalid` review instead of a bare 400.
            app.metrics.error("bad_request");
            let message = format!("malformed AdmissionReview request: {message}");
            tracing::warn!(uid = %review::clip(&uid), error = %message, "invalid review");
            let mut response = AdmissionResponse::invalid(message);
            response.uid = uid;
            app.metrics
                .review("", "invalid", started.elapsed().as_secs_f64());
            return reply(response);
        }
        Err(e) => return bad_request(&app, &e.to_string()),
    };
    let Review {
        uid,
        kind,
        namespace,
        name,
        operation,
        request,
    } = review;

    let verdict = evaluate(&app, request, deadline).await;
    drop(permit);
    // `invalid` starts from a v1 AdmissionReview answer; the rest is set here.
    let mut response = AdmissionResponse::invalid("");
    response.uid = uid;
    response.allowed = verdict.allowed;
    response.result = Default::default();
    if !verdict.allowed {
        response = response.deny(verdict.message.clone().unwrap_or_default());
        response.result.code = 403;
        response.result.reason = "Forbidden".into();
    }
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings.clone());
    }
    let seconds = started.elapsed().as_secs_f64();
    app.metrics.review(&kind, verdict.decision(), seconds);
    tracing::info!(
        uid = %review::clip(&response.uid),
        kind = %review::clip(&kind),
        namespace = %review::clip(&namespace),
        name = %review::clip(&name),
        operation = ?operation,
        decision = verdict.decision(),
        duration_us = (seconds * 1e6) as u64,
        // Skip reasons quote the request (its kind, its RuntimeClass): cut like the rest.
        message = review::clip_to(
            verdict.message.as_deref().or(verdict.skipped.as_deref()).unwrap_or(""),
            LOGGED_MESSAGE_BYTES
        )
        .as_str(),
        "review"
    );
    reply(response)
}

/// Reserves `bytes` of the in-flight budget, waiting at most until `deadline`.
async fn reserve(app: &App, bytes: usize, deadline: Deadline) -> Result<OwnedSemaphorePermit, ()> {
    // `maxBytesInFlight` fits in a u32 (checked with the configuration) and `bytes` in it.
    let bytes = u32::try_from(bytes).map_err(|_| ())?;
    match tokio::time::timeout_at(
        deadline,
        app.bytes_in_flight.clone().acquire_many_owned(bytes),
    )
    .await
    {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(()),
    }
}

/// Runs the pipeline off the reactor, bounded by the semaphore and the review deadline.
async fn evaluate(app: &App, request: Json, deadline: Deadline) -> Verdict {
    let Some(pipeline) = app.pipeline.get().cloned() else {
        app.metrics.error("internal");
        let reason = "the webhook is still loading its policies";
        if app.images_fail_closed {
            return Verdict {
                allowed: false,
                message: Some(format!("meshgate: {reason}")),
                warnings: Vec::new(),
                skipped: None,
            };
        }
        return internal_failure(app, reason);
    };
    let mut selected = match pipeline.select(request) {
        Ok(selected) => selected,
        Err(skipped) => return skipped,
    };
    let subject = selected.subject().to_string();
    // What the image checks concluded, once they have: a failure after them must not lose it.
    let mut images = None;
    let work = async {
        // Image checks wait on registries, not on the CPU: they run before taking a permit.
        pipeline.check_images(&mut selected).await;
        images = Some(selected.images().clone());
        let permit = app.evaluations.clone().acquire_owned().await;
        let judge = pipeline.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            judge.judge(selected)
        })
        .await
    };
    match tokio::time::timeout_at(deadline, work).await {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(e)) => {
            app.metrics.error("internal");
            let reason = format!("evaluation failed: {e}");
            let fallback = internal_failure(app, &reason);
            pipeline.after_failure(&subject, images.as_ref(), &reason, fallback)
        }
        Err(_) => {
            app.metrics.error("deadline");
            let reason = format!("review not finished within {:?}", app.review_timeout);
            let fallback = internal_failure(app, &reason);
            pipeline.after_failure(&subject, images.as_ref(), &reason, fallback)
        }
    }
}

fn internal_failure(app: &App, reason: &str) -> Verdict {
    match app.failure_policy {
        FailurePolicy::Fail => Verdict {
            allowed: false,
            message: Some(format!("meshgate: {reason}")),
            warnings: Vec::new(),
            skipped: None,
        },
        FailurePolicy::Ignore => Verdict {
            allowed: true,
            message: None,
            warnings: vec![format!("meshgate: {reason} (ignored)")],
            skipped: None,
        },
    }
}

fn reply(response: AdmissionResponse) -> Response {
    axum::Json(response.into_review()).into_response()
}
