//! The HTTPS server: `POST /validate`, `POST /mutate`, `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! Under hostile input the front door bounds, in this order: how many connections are served at
//! once (`limits.maxConnections`) and how long each may take to finish its TLS handshake, to
//! send a request head, or to sit idle (`limits.handshakeTimeout`, `limits.idleTimeout`), who
//! may connect (`tls.clientCaFile`), how many body bytes are held at once
//! (`limits.maxBytesInFlight`, reserved as a body's bytes arrive, whatever length it declares),
//! how long a body may take (`limits.bodyReadTimeout`), the
//! size of one body (`limits.maxBodyBytes`, 413), and what parsing may build ([`review`]).
//! Text from the request reaches answers and logs cut and with control characters escaped.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use kube_core::admission::AdmissionResponse;
use tokio::sync::Semaphore;
use tokio::time::Instant as Deadline;

use crate::config::{Config, FailurePolicy};
use crate::metrics::Metrics;
use crate::review::verdict::after_internal_failure;
use crate::review::{Pipeline, Verdict, decode};
use crate::tls::{self, ReloadingCertificate};
use decode::{ParseLimits, Review, ReviewError};

mod body;
mod connections;

use body::{Read, busy, closing, content_length, read_body, too_large};
use connections::{ConnectionLimits, accept_loop, plain_loop};

/// Longest message a decision's log line carries.
const LOGGED_MESSAGE_BYTES: usize = 1024;

/// Bodies at least this large are parsed off the reactor, so health checks stay prompt.
const BLOCKING_PARSE_BYTES: usize = 256 << 10;

/// The webhook's state behind its routes: the pipeline (once loaded), metrics and the limits
/// of `limits`. Built by [`Webhook::new`]; served by [`router`].
pub struct Webhook {
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

impl Webhook {
    /// The state for `config`'s limits and failure policy, with no pipeline yet: reviews are
    /// answered as "still loading" until [`Webhook::set_pipeline`].
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Arc<Self> {
        let permits = match config.limits.max_concurrent_reviews {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Arc::new(Webhook {
            pipeline: OnceLock::new(),
            metrics,
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
            images_fail_closed: crate::review::load::images_fail_closed(config),
        })
    }

    /// Starts judging reviews with `pipeline`; the first one set stays.
    pub fn set_pipeline(&self, pipeline: Arc<Pipeline>) {
        let _ = self.pipeline.set(pipeline);
    }
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
    let app = Webhook::new(&config, metrics.clone());
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
            app.set_pipeline(Arc::new(pipeline));
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

/// The HTTPS listener's routes: `POST /validate` and the probe routes. Tests drive it in
/// process (`tower::ServiceExt::oneshot`); [`run`] serves it over TLS.
pub fn router(app: Arc<Webhook>) -> Router {
    probe_router(app.clone())
        .route("/validate", post(validate).with_state(app.clone()))
        .route("/mutate", post(mutate).with_state(app))
}

/// What the probe listener serves: no reviews.
fn probe_router(app: Arc<Webhook>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn ready(State(app): State<Arc<Webhook>>) -> Response {
    match app.pipeline.get() {
        Some(_) => (StatusCode::OK, "ready").into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "loading policies").into_response(),
    }
}

async fn metrics(State(app): State<Arc<Webhook>>) -> Response {
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

fn bad_request(app: &Webhook, message: &str) -> Response {
    app.metrics.error("bad_request");
    tracing::warn!(error = %message, "bad request");
    plain(StatusCode::BAD_REQUEST, message)
}

/// Which answer a review gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `/validate`: the verdict of the checks and policies.
    Validate,
    /// `/mutate`: admitted, with a JSON Patch pinning what the checks verified.
    Mutate,
}

async fn validate(
    State(app): State<Arc<Webhook>>,
    version: Version,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(app, version, headers, body, Route::Validate).await
}

async fn mutate(
    State(app): State<Arc<Webhook>>,
    version: Version,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(app, version, headers, body, Route::Mutate).await
}

async fn answer(
    app: Arc<Webhook>,
    version: Version,
    headers: HeaderMap,
    body: Body,
    route: Route,
) -> Response {
    let started = Instant::now();
    let deadline = Deadline::now() + app.review_timeout;
    let declared = content_length(&headers);
    if declared.is_some_and(|n| n > app.max_body_bytes) {
        return too_large(&app, version, body, declared, deadline).await;
    }
    // Memory is reserved before it is used: at most `maxBytesInFlight` body bytes (and what
    // parsing them builds) are held at once, whatever the number of connections or streams.
    // A body reserves only as its bytes arrive (doubling), never ahead of them: a sender that
    // declares 3 MiB and then stalls, or opens streams that send nothing, holds nothing and
    // queues before no real review.
    // A review waits at most half its deadline for its share: one that gets in later would
    // have too little time left to be judged, and the API server is better told at once.
    let reserve_by = Deadline::now() + app.review_timeout / 2;
    let Ok(mut permit) = app.bytes_in_flight.clone().try_acquire_many_owned(0) else {
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
    let parse = |bytes: Vec<u8>, limits| decode::parse(&bytes, limits);
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
            tracing::warn!(uid = %decode::clip(&uid), error = %message, "invalid review");
            let mut response = AdmissionResponse::invalid(message);
            response.uid = uid;
            app.metrics
                .review("", "invalid", started.elapsed().as_secs_f64());
            return reply(response);
        }
        Err(e) => return bad_request(&app, &e.to_string()),
    };
    // Kept for the log line; the review itself goes to the pipeline.
    let (uid, kind, namespace, name, operation) = (
        review.uid.clone(),
        review.kind.clone(),
        review.namespace.clone(),
        review.name.clone(),
        review.operation.clone(),
    );
    let (verdict, patch) = match route {
        Route::Validate => (evaluate(&app, review, deadline).await, None),
        Route::Mutate => pin(&app, review, deadline).await,
    };
    drop(permit);
    let mut response = verdict.to_response(uid);
    if let Some(patch) = patch {
        let unpatched = response.clone();
        response = response.with_patch(patch).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "patch not serialized");
            unpatched
        });
    }
    let seconds = started.elapsed().as_secs_f64();
    app.metrics.review(&kind, verdict.decision(), seconds);
    tracing::info!(
        uid = %decode::clip(&response.uid),
        kind = %decode::clip(&kind),
        namespace = %decode::clip(&namespace),
        name = %decode::clip(&name),
        operation = ?operation,
        decision = verdict.decision(),
        duration_us = (seconds * 1e6) as u64,
        // Skip reasons quote the request (its kind, its RuntimeClass): cut like the rest.
        message = decode::clip_to(
            verdict.message.as_deref().or(verdict.skipped.as_deref()).unwrap_or(""),
            LOGGED_MESSAGE_BYTES
        )
        .as_str(),
        "review"
    );
    reply(response)
}

/// Runs the pipeline off the reactor, bounded by the semaphore and the review deadline.
async fn evaluate(app: &Webhook, review: Review, deadline: Deadline) -> Verdict {
    let Some(pipeline) = app.pipeline.get().cloned() else {
        app.metrics.error("internal");
        let reason = "the webhook is still loading its policies";
        if app.images_fail_closed {
            return Verdict::deny(format!("meshgate: {reason}"));
        }
        return internal_failure(app, reason);
    };
    let mut selected = match pipeline.select(review) {
        Ok(selected) => selected,
        Err(skipped) => return skipped,
    };
    let subject = selected.subject().to_string();
    let extension = selected.is_extension();
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
            pipeline.after_failure(&subject, images.as_ref(), &reason, extension, fallback)
        }
        Err(_) => {
            app.metrics.error("deadline");
            let reason = format!("review not finished within {:?}", app.review_timeout);
            let fallback = internal_failure(app, &reason);
            pipeline.after_failure(&subject, images.as_ref(), &reason, extension, fallback)
        }
    }
}

/// `/mutate`: the checks alone (no policies), under the review deadline; always admits (the
/// validating webhook judges), with the patch when something verified by tag can be pinned.
async fn pin(
    app: &Webhook,
    review: Review,
    deadline: Deadline,
) -> (Verdict, Option<json_patch::Patch>) {
    let admitted = |reason: &str| Verdict::skip(reason.to_string());
    let Some(pipeline) = app.pipeline.get().cloned() else {
        return (
            admitted("the webhook is still loading: nothing pinned"),
            None,
        );
    };
    let mut selected = match pipeline.select(review) {
        Ok(selected) => selected,
        Err(skipped) => return (skipped, None),
    };
    match tokio::time::timeout_at(deadline, pipeline.check_images(&mut selected)).await {
        Ok(()) => {
            let patch = pipeline.pin_patch(&selected);
            let verdict = Verdict {
                allowed: true,
                message: None,
                warnings: Vec::new(),
                skipped: None,
            };
            (verdict, patch)
        }
        Err(_) => {
            app.metrics.error("deadline");
            (admitted("checks not finished: nothing pinned"), None)
        }
    }
}

fn internal_failure(app: &Webhook, reason: &str) -> Verdict {
    after_internal_failure(app.failure_policy, reason)
}

fn reply(response: AdmissionResponse) -> Response {
    let patch = response.patch.clone();
    let review = response.into_review();
    let Some(patch) = patch else {
        return axum::Json(review).into_response();
    };
    // kube-core writes the patch as an array of numbers; the API documents a base64 string
    // (Go's []byte), which is what every API server version reads.
    let mut json = serde_json::to_value(&review).unwrap_or_default();
    json["response"]["patch"] =
        serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(patch));
    axum::Json(json).into_response()
}

#[cfg(test)]
mod tests;
