//! `POST /kiln/models/pull`: installs a model while the server runs, reporting progress as
//! server-sent events. The install runs on the blocking pool; the registry serves the model
//! from its next refresh (at the latest on the first request that names it).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use kiln_core::{KilnError, KilnResult};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::SharedState;

/// Progress events at most this often (the last one always goes out).
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    name: String,
}

pub(crate) async fn start(
    state: SharedState,
    headers: &HeaderMap,
    body: Body,
) -> KilnResult<Response> {
    let bytes = crate::body::read_limited(headers, body, 64 * 1024).await?;
    let request: PullRequest = serde_json::from_slice(&bytes)
        .map_err(|error| KilnError::bad_input(format!("invalid pull request: {error}")))?;
    let installer = crate::kiln_routes::installer(&state)?;
    let known = installer
        .installable()
        .into_iter()
        .any(|model| model.name == request.name);
    if !known {
        return Err(KilnError::bad_input(format!(
            "the model store has no model named {:?} (GET /kiln/models lists what it can install)",
            request.name
        )));
    }
    let (events, received) = mpsc::channel::<Value>(16);
    let registry = state.registry.clone();
    tokio::task::spawn_blocking(move || {
        let name = request.name;
        let _ = events.blocking_send(json!({"status": "pulling", "name": name}));
        let last_sent = std::sync::Mutex::new(Instant::now() - PROGRESS_EVERY);
        let progress = |completed: u64, total: u64| {
            let mut last = last_sent.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() >= PROGRESS_EVERY || completed >= total {
                *last = Instant::now();
                // A closed page stops listening, not the install.
                let _ = events.try_send(json!({
                    "status": "pulling", "name": name, "completed": completed, "total": total,
                }));
            }
        };
        let outcome = installer.install(&name, &progress);
        let last = match outcome {
            Ok(()) => {
                registry.refresh();
                json!({"status": "success", "name": name})
            }
            Err(error) => json!({
                "status": "error",
                "name": name,
                "errors": [{"code": error.code(), "message": error.message}],
            }),
        };
        let _ = events.blocking_send(last);
    });
    let stream = ReceiverStream::new(received)
        .map(|event| Ok::<_, std::convert::Infallible>(format!("data: {event}\n\n")));
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
