//! The HTTPS server: `POST /validate`, `GET /healthz`, `GET /readyz`, `GET /metrics`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Limited};
use kube_core::admission::{AdmissionRequest, AdmissionResponse};
use kube_core::{DynamicObject, TypeMeta};
use serde::Deserialize as _;
use serde_json::Value as Json;
use tokio::sync::Semaphore;

use crate::config::{Config, FailurePolicy};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Verdict};
use crate::tls::{self, ReloadingCertificate};

/// TLS handshakes that take longer are dropped, so idle sockets cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct App {
    pipeline: OnceLock<Arc<Pipeline>>,
    metrics: Arc<Metrics>,
    evaluations: Arc<Semaphore>,
    max_body_bytes: usize,
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
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(certificate.clone())?));
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
        max_body_bytes: config.limits.max_body_bytes,
        review_timeout: config.limits.review_timeout,
        failure_policy: config.failure_policy,
        images_fail_closed: crate::pipeline::images_fail_closed(&config),
    });
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "listening on https://{local}");

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

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/validate", post(validate))
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

fn bad_request(app: &App, message: String) -> Response {
    app.metrics.error("bad_request");
    tracing::warn!(error = %message, "bad request");
    (StatusCode::BAD_REQUEST, message + "\n").into_response()
}

async fn validate(State(app): State<Arc<App>>, version: Version, body: Body) -> Response {
    let started = Instant::now();
    // A client that stops sending mid-body must not hold the review past its deadline.
    let read = tokio::time::timeout(
        app.review_timeout,
        Limited::new(body, app.max_body_bytes).collect(),
    )
    .await;
    let bytes = match read {
        Err(_) => {
            return bad_request(
                &app,
                format!("request body not received within {:?}", app.review_timeout),
            );
        }
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) => {
            let message = if e.is::<http_body_util::LengthLimitError>() {
                format!(
                    "request body exceeds the limit of {} bytes",
                    app.max_body_bytes
                )
            } else {
                format!("could not read the request body: {e}")
            };
            let mut response = bad_request(&app, message);
            if version < Version::HTTP_2 {
                // The rest of the body is never read, so this HTTP/1 connection cannot carry
                // another request: tell the client instead of letting it reuse a dead socket.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return response;
        }
    };
    let mut review: Json = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return bad_request(&app, format!("malformed JSON: {e}")),
    };
    let (api_version, kind) = (review["apiVersion"].as_str(), review["kind"].as_str());
    if api_version != Some(kube_core::admission::META_API_VERSION_V1)
        || kind != Some(kube_core::admission::META_KIND)
    {
        return bad_request(
            &app,
            format!(
                "expected an admission.k8s.io/v1 AdmissionReview, got apiVersion {} kind {}",
                api_version.unwrap_or("(none)"),
                kind.unwrap_or("(none)")
            ),
        );
    }
    // The typed request checks every required field; the JSON is what policies see.
    let request_json = review["request"].take();
    if request_json.is_null() {
        return bad_request(&app, "the AdmissionReview has no request".into());
    }
    // Deserialized from the parsed tree by reference: no second copy of the request.
    let typed = match AdmissionRequest::<DynamicObject>::deserialize(&request_json) {
        Ok(r) => r,
        Err(e) => {
            // With a uid the API server can match an answer to its request: say what is wrong
            // in an `invalid` review instead of a bare 400.
            return match request_json["uid"].as_str() {
                Some(uid) => {
                    app.metrics.error("bad_request");
                    let mut response = AdmissionResponse::invalid(format!(
                        "malformed AdmissionReview request: {e}"
                    ));
                    response.uid = uid.to_string();
                    app.metrics
                        .review("", "invalid", started.elapsed().as_secs_f64());
                    reply(response)
                }
                None => bad_request(&app, format!("malformed AdmissionReview request: {e}")),
            };
        }
    };
    let kind = typed.kind.kind.clone();
    let namespace = typed.namespace.clone().unwrap_or_default();
    let name = if typed.name.is_empty() {
        typed
            .object
            .as_ref()
            .and_then(|o| o.metadata.name.clone().or(o.metadata.generate_name.clone()))
            .unwrap_or_default()
    } else {
        typed.name.clone()
    };

    let verdict = evaluate(&app, request_json).await;
    let mut response = AdmissionResponse::from(&typed);
    response.types = TypeMeta {
        api_version: kube_core::admission::META_API_VERSION_V1.into(),
        kind: kube_core::admission::META_KIND.into(),
    };
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
        uid = %typed.uid,
        kind = %kind,
        namespace = %namespace,
        name = %name,
        operation = ?typed.operation,
        decision = verdict.decision(),
        duration_us = (seconds * 1e6) as u64,
        message = verdict.message.as_deref().or(verdict.skipped.as_deref()).unwrap_or(""),
        "review"
    );
    reply(response)
}

/// Runs the pipeline off the reactor, bounded by the semaphore and the review deadline.
async fn evaluate(app: &App, request: Json) -> Verdict {
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
    match tokio::time::timeout(app.review_timeout, work).await {
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
