//! `POST /`: a request's CloudEvents, parsed by
//! [`cloudevents`](crate::inputs::cloudevents), pushed into the sink; the
//! answer only once they are in the spool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use super::{json_response, LATENCY};
use crate::inputs::cloudevents::{self, Rejection};
use crate::sink::{Error, Sink};

/// Default for [`RouterOptions::push_wait`].
pub const DEFAULT_PUSH_WAIT: Duration = Duration::from_secs(5);

/// What [`router`](super::router) needs besides the sink.
#[derive(Clone, Debug)]
pub struct RouterOptions {
    /// Largest request body; larger ones get `413`.
    pub max_body_bytes: usize,
    /// How long a request waits for spool space before `503`.
    pub push_wait: Duration,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            max_body_bytes: super::config::DEFAULT_MAX_BODY_BYTES,
            push_wait: DEFAULT_PUSH_WAIT,
        }
    }
}

#[derive(Clone)]
struct AppState {
    sink: Arc<Sink>,
    push_wait: Duration,
}

/// The input: `POST /` over `sink`, bodies limited to
/// [`RouterOptions::max_body_bytes`].
pub(super) fn router(sink: Arc<Sink>, opts: &RouterOptions) -> Router {
    let state = AppState {
        sink,
        push_wait: opts.push_wait,
    };
    Router::new()
        .route("/", post(receive))
        .layer(DefaultBodyLimit::max(opts.max_body_bytes))
        .with_state(state)
}

fn reject(r: &Rejection, events: u64) -> Response {
    metrics::counter!("s3_sink_events_rejected_total", "reason" => r.reason).increment(events);
    tracing::debug!(status = %r.status, reason = r.reason, error = %r.message, "request rejected");
    let mut resp = json_response(r.status, &r.body());
    if r.status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// A refusal without an attribute or index.
fn rejection(status: StatusCode, reason: &'static str, message: String) -> Rejection {
    Rejection {
        status,
        reason,
        message,
        attribute: None,
        index: None,
    }
}

async fn receive(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let (mode, resp) = receive_inner(&st, &headers, body).await;
    metrics::histogram!(LATENCY, "mode" => mode, "status" => resp.status().as_str().to_owned())
        .record(started.elapsed().as_secs_f64());
    resp
}

/// The mode's label and the answer.
async fn receive_inner(
    st: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> (&'static str, Response) {
    let mode = match cloudevents::mode(headers) {
        Ok(m) => m,
        Err(r) => return ("unknown", reject(&r, 1)),
    };
    let label = mode.as_str();
    let body = match body {
        Ok(b) => b,
        Err(e) => return (label, reject(&unreadable(&e), 1)),
    };
    let events = match cloudevents::parse(mode, headers, &body) {
        Ok(evs) => evs,
        Err(r) => return (label, reject(&r, 1)),
    };
    let n = events.len() as u64;
    metrics::counter!("s3_sink_events_received_total", "mode" => label).increment(n);
    if events.is_empty() {
        return (
            label,
            json_response(StatusCode::OK, &json!({"accepted": 0})),
        );
    }
    (label, push(st, label, &events).await)
}

/// The refusal of a body that could not be read: too large (413) or broken
/// off (400).
fn unreadable(e: &BytesRejection) -> Rejection {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        rejection(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the body is larger than `maxBodyBytes`".to_owned(),
        )
    } else {
        rejection(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("the body could not be read: {e}"),
        )
    }
}

/// Pushes `events` into the spool: `200 {"accepted": n}` once they are in
/// it, `400` when the encoding cannot hold one of them, `503` under
/// backpressure or shutdown, `500` otherwise.
async fn push(st: &AppState, label: &'static str, events: &[Value]) -> Response {
    let n = events.len() as u64;
    match st.sink.push_batch_within(events, st.push_wait).await {
        Ok(()) => {
            metrics::counter!("s3_sink_events_accepted_total").increment(n);
            tracing::debug!(mode = label, events = n, "events accepted");
            json_response(StatusCode::OK, &json!({"accepted": n}))
        }
        Err(e @ (Error::Backpressure | Error::Shutdown)) => {
            let reason = if matches!(e, Error::Backpressure) {
                "backpressure"
            } else {
                "shutdown"
            };
            let r = rejection(StatusCode::SERVICE_UNAVAILABLE, reason, e.to_string());
            reject(&r, n)
        }
        Err(e @ (Error::RecordMismatch { .. } | Error::InvalidRecord { .. })) => {
            // The encoding cannot hold an event (one the Parquet schema does
            // not fit): nothing of the request was accepted.
            let r = rejection(StatusCode::BAD_REQUEST, "invalid_event", e.to_string());
            reject(&r, n)
        }
        Err(e) => {
            tracing::error!(error = %e, "sink: push failed");
            let r = rejection(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string());
            reject(&r, n)
        }
    }
}
