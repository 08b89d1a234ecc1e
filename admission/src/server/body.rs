//! Request bodies under the in-flight byte budget: reserved as bytes arrive, read within
//! `bodyReadTimeout`, refused with 413 over `maxBodyBytes` (drained so HTTP/1 clients see it),
//! 503 when the budget stays full.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::response::Response;
use http_body_util::BodyExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant as Deadline;

use super::{Webhook, plain};

/// Bodies over the limit are still read (and discarded) up to this size, so an HTTP/1 client
/// gets its 413 instead of a connection reset; larger ones are cut off.
const DRAIN_BYTES: usize = 64 << 20;

/// Marks an HTTP/1 answer as the connection's last: the rest of the body was not read, so the
/// connection cannot carry another request.
pub(super) fn closing(mut response: Response, version: Version) -> Response {
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
pub(super) async fn too_large(
    app: &Webhook,
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
pub(super) async fn drain(mut body: Body, deadline: Deadline) -> bool {
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
pub(super) enum Read {
    Complete(Vec<u8>),
    TooLarge(Body),
    /// More of the in-flight budget was needed and not free in time.
    Busy,
    Failed(String),
}

/// Reads a body of at most `app.max_body_bytes` into one buffer (no chunk list copied at the
/// end), holding in `permit` at least as much of the in-flight budget as the buffer's capacity:
/// more is reserved (until `reserve_by`) as bytes arrive beyond what `permit` holds.
pub(super) async fn read_body(
    app: &Webhook,
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

pub(super) fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// 503 with `Retry-After`: the in-flight budget stayed full.
pub(super) fn busy(app: &Webhook, version: Version) -> Response {
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
pub(super) async fn reserve(
    app: &Webhook,
    bytes: usize,
    deadline: Deadline,
) -> Result<OwnedSemaphorePermit, ()> {
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
