//! Middleware that counts and times every request for `/metrics`, and tells the client how long
//! the server took (`x-kiln-total-ms`).
//!
//! Routes are labelled by their matched template (`/client/v4/accounts/{account_id}/ai/run/{*model}`),
//! never the raw path, so label cardinality stays bounded whatever clients send.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use kiln_scheduler::RequestTimings;

use crate::envelope::MODEL_HEADER;
use crate::metrics::{MODEL_REQUESTS_TOTAL, REQUESTS_TOTAL, REQUEST_DURATION_SECONDS};

/// Milliseconds from receiving the request to sending the response head: the whole handler for
/// JSON answers; for streams, the time to the first event (queueing and prefill included).
pub const TOTAL_MS_HEADER: &str = "x-kiln-total-ms";

/// Per-request phases of text generation (milliseconds): waiting for a slot, prompt processing
/// up to the first token, and first to last token. Streams carry the first two (the head is sent
/// at the first token); `/metrics` has all three as histograms.
pub const QUEUE_MS_HEADER: &str = "x-kiln-queue-ms";
pub const PREFILL_MS_HEADER: &str = "x-kiln-prefill-ms";
pub const DECODE_MS_HEADER: &str = "x-kiln-decode-ms";

/// Adds the phase headers that `timings` knows.
pub fn with_timing_headers(mut response: Response, timings: RequestTimings) -> Response {
    let phases = [
        (QUEUE_MS_HEADER, timings.queue),
        (PREFILL_MS_HEADER, timings.prefill),
        (DECODE_MS_HEADER, timings.decode),
    ];
    for (name, duration) in phases {
        let Some(duration) = duration else { continue };
        if let Ok(value) = HeaderValue::from_str(&format!("{:.3}", duration.as_secs_f64() * 1000.0))
        {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Route label of requests no route matched (404s of the fallback).
const UNMATCHED_ROUTE: &str = "unmatched";

pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let mut response = next.run(request).await;
    let head_time = started.elapsed();

    let status = response.status().as_u16().to_string();
    metrics::counter!(REQUESTS_TOTAL, "route" => route.clone(), "status" => status.clone())
        .increment(1);
    // The header names a model from the registry, so this label is bounded too.
    if let Some(model) = response
        .headers()
        .get(MODEL_HEADER)
        .and_then(|value| value.to_str().ok())
    {
        metrics::counter!(MODEL_REQUESTS_TOTAL, "model" => model.to_owned(), "status" => status)
            .increment(1);
    }
    let total_ms = format!("{:.3}", head_time.as_secs_f64() * 1000.0);
    if let Ok(value) = HeaderValue::from_str(&total_ms) {
        response.headers_mut().insert(TOTAL_MS_HEADER, value);
    }
    response.map(|body| {
        Body::new(TimedBody {
            inner: body,
            _timer: DurationTimer { route, started },
        })
    })
}

/// Records the request duration when dropped: after the last byte of a stream is sent, or when
/// the client goes away mid-stream.
struct DurationTimer {
    route: String,
    started: Instant,
}

impl Drop for DurationTimer {
    fn drop(&mut self) {
        let route = std::mem::take(&mut self.route);
        metrics::histogram!(REQUEST_DURATION_SECONDS, "route" => route)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// A response body that carries its [`DurationTimer`] until the server is done with it.
struct TimedBody {
    inner: Body,
    _timer: DurationTimer,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
