//! The HTTPS server: `POST /validate`, `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! Under hostile input the front door bounds, in this order: how many connections are served at
//! once (`limits.maxConnections`) and how long each may take to finish its TLS handshake, to
//! send a request head, or to sit idle (`limits.handshakeTimeout`, `limits.idleTimeout`), who
//! may connect (`tls.clientCaFile`), how many body bytes are held at once
//! (`limits.maxBytesInFlight`, reserved as a body's bytes arrive, whatever length it declares),
//! how long a body may take (`limits.bodyReadTimeout`), the
//! size of one body (`limits.maxBodyBytes`, 413), and what parsing may build ([`review`]).
//! Text from the request reaches answers and logs cut and with control characters escaped.

pub mod review;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant as Deadline;

use crate::config::{Config, FailurePolicy};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Verdict};
use crate::tls::{self, ReloadingCertificate};
use review::{ParseLimits, Review, ReviewError};

/// What a body reserves of `maxBytesInFlight` before its first byte; it reserves more
/// (doubling) as bytes arrive, so a slow sender holds little whatever length it declares.
const INITIAL_SHARE: usize = 16 << 10;

/// Longest `status.message` of an answer: a denial listing every one of thousands of
/// containers is cut, saying how much was left out.
const ANSWER_MESSAGE_BYTES: usize = 16 << 10;

/// Longest total of an answer's warnings; the rest are counted, not sent.
const ANSWER_WARNING_BYTES: usize = 16 << 10;

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
    body_read_timeout: Duration,
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
        body_read_timeout: config.limits.body_read_timeout,
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
    let connections = Arc::new(Semaphore::new(config.limits.max_connections));
    let limits = ConnectionLimits {
        handshake: config.limits.handshake_timeout,
        idle: config.limits.idle_timeout,
    };
    let serve = accept_loop(listener, acceptor, router, connections, limits);
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

/// How long a connection may take at each stage (`limits`).
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    handshake: Duration,
    idle: Duration,
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    connections: Arc<Semaphore>,
    limits: ConnectionLimits,
) {
    loop {
        // At the cap nothing is accepted: further connections wait in the kernel's accept
        // queue, costing this process nothing, until a served one ends.
        let Ok(permit) = connections.clone().acquire_owned().await else {
            return;
        };
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
            serve_connection(stream, peer, acceptor, router, limits).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    limits: ConnectionLimits,
) {
    let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(stream)).await {
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
    // The protocol is the one ALPN chose (HTTP/1.1 without ALPN): no unbounded wait to sniff it.
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let service = hyper_util::service::TowerToHyperService::new(router);
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let ended = if h2 {
        let mut builder = builder.http2_only();
        // Pings find dead peers; a live one answers them, so no byte for `idle` means the
        // client never spoke HTTP/2 (a stalled preface) or stopped answering.
        builder
            .http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(limits.idle / 2)
            .keep_alive_timeout(limits.idle / 2);
        let watched = Watched::new(tls);
        let last_read = watched.last_read.clone();
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(watched), service);
        tokio::select! {
            ended = connection => ended,
            () = last_read.expired(limits.idle) => {
                tracing::debug!(%peer, "HTTP/2 connection idle; closed");
                Ok(())
            }
        }
    } else {
        let mut builder = builder.http1_only();
        // Counts from the handshake and from each answer: covers both a slow request head and
        // an idle keep-alive connection.
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.idle);
        builder
            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
            .await
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// When a connection last read a byte.
struct LastRead {
    origin: Instant,
    /// Milliseconds since `origin`.
    millis: AtomicU64,
}

impl LastRead {
    fn touch(&self) {
        let millis = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(millis, Ordering::Relaxed);
    }

    /// Returns once no byte has been read for `idle`.
    async fn expired(&self, idle: Duration) {
        loop {
            let last = self.origin + Duration::from_millis(self.millis.load(Ordering::Relaxed));
            let until = last + idle;
            if Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(Deadline::from_std(until)).await;
        }
    }
}

/// A stream that records when it last read a byte.
struct Watched<T> {
    inner: T,
    last_read: Arc<LastRead>,
}

impl<T> Watched<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            last_read: Arc::new(LastRead {
                origin: Instant::now(),
                millis: AtomicU64::new(0),
            }),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last_read.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
    /// More of the in-flight budget was needed and not free in time.
    Busy,
    Failed(String),
}

/// Reads a body of at most `app.max_body_bytes` into one buffer (no chunk list copied at the
/// end), holding in `permit` at least as much of the in-flight budget as the buffer's capacity:
/// more is reserved (until `reserve_by`) as bytes arrive beyond what `permit` holds.
async fn read_body(
    app: &App,
    mut body: Body,
    permit: &mut OwnedSemaphorePermit,
    reserve_by: Deadline,
    deadline: Deadline,
) -> Read {
    let max = app.max_body_bytes;
    let mut bytes = Vec::with_capacity(permit.num_permits().min(max));
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Read::Failed(format!(
                    "request body not received within {:?} (limits.bodyReadTimeout, or the review deadline)",
                    app.body_read_timeout
                ));
            }
            Ok(None) => return Read::Complete(bytes),
            Ok(Some(Err(e))) => {
                return Read::Failed(format!("could not read the request body: {e}"));
            }
            Ok(Some(Ok(frame))) => {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                let len = bytes.len() + data.len();
                if len > max {
                    return Read::TooLarge(body);
                }
                let held = permit.num_permits();
                if len > held {
                    // Doubling keeps the number of reservations small for a fast sender.
                    let target = len.max(held.saturating_mul(2)).min(max);
                    let Ok(more) = reserve(app, target - held, reserve_by.min(deadline)).await
                    else {
                        return Read::Busy;
                    };
                    permit.merge(more);
                    bytes.reserve_exact(target.saturating_sub(bytes.len()));
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
    // Memory is reserved before it is used: at most `maxBytesInFlight` body bytes (and what
    // parsing them builds) are held at once, whatever the number of connections. Every body,
    // declared length or not, reserves as its bytes arrive: a sender that declares 3 MiB and
    // then stalls holds a small share, not a full body's.
    // A review waits at most half its deadline for its share: one that gets in later would
    // have too little time left to be judged, and the API server is better told at once.
    let share = declared
        .unwrap_or(INITIAL_SHARE)
        .min(INITIAL_SHARE)
        .min(app.max_body_bytes)
        .max(1);
    let reserve_by = Deadline::now() + app.review_timeout / 2;
    let Ok(mut permit) = reserve(&app, share, reserve_by).await else {
        return busy(&app, version);
    };
    // The body's own clock starts once it may be read: a slow sender holds its share for at
    // most `bodyReadTimeout`.
    let body_deadline = deadline.min(Deadline::now() + app.body_read_timeout);
    let bytes = match read_body(&app, body, &mut permit, reserve_by, body_deadline).await {
        Read::Complete(bytes) => bytes,
        Read::TooLarge(rest) => {
            return too_large(&app, version, rest, declared, deadline).await;
        }
        Read::Busy => return busy(&app, version),
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
        response = response.deny(cap_message(
            verdict.message.as_deref().unwrap_or_default(),
            ANSWER_MESSAGE_BYTES,
        ));
        response.result.code = 403;
        response.result.reason = "Forbidden".into();
    }
    if !verdict.warnings.is_empty() {
        response.warnings = Some(cap_warnings(&verdict.warnings, ANSWER_WARNING_BYTES));
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

/// 503 with `Retry-After`: the in-flight budget stayed full.
fn busy(app: &App, version: Version) -> Response {
    app.metrics.error("busy");
    tracing::warn!("too many reviews in flight; answering 503");
    let mut response = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many reviews in flight, retry later",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    closing(response, version)
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

/// `message` cut to at most `max` bytes at a character boundary, saying how many were left out.
fn cap_message(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let note_room = 40;
    let end = (0..=max.saturating_sub(note_room))
        .rev()
        .find(|&i| message.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}… ({} more bytes)", &message[..end], message.len() - end)
}

/// As many of `warnings` as fit in `max` bytes (each cut to a quarter of it), then how many
/// were left out.
fn cap_warnings(warnings: &[String], max: usize) -> Vec<String> {
    let mut kept = Vec::new();
    let mut used = 0;
    for (i, warning) in warnings.iter().enumerate() {
        let warning = cap_message(warning, max / 4);
        if used + warning.len() > max {
            kept.push(format!("… and {} more warnings", warnings.len() - i));
            break;
        }
        used += warning.len();
        kept.push(warning);
    }
    kept
}

fn reply(response: AdmissionResponse) -> Response {
    axum::Json(response.into_review()).into_response()
}
