//! The asynchronous batch API (spec §1.6) over the durable [`kiln_batch::BatchQueue`]:
//! `?queueRequest=true` with `{"requests":[…]}` queues, with `{"request_id"}` polls. A runner
//! task takes queued items a few at a time and runs each through Kiln's own
//! `/accounts/{account}/ai/run/{model}` route, exactly as a direct request would run, so a
//! batch item is validated, served and billed like one.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;
use kiln_batch::{ItemOutcome, PendingItem, Poll, Submission, Submitted, MAX_BATCH_BYTES};
use kiln_core::{ErrorKind, KilnError};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::envelope::{success, ApiError};
use crate::offload::off_runtime;
use crate::platform::{Caller, ReportedUsage, TrustedCall};
use crate::SharedState;

/// Items run at once: enough for the LLM's sequence slots to batch them, few enough that
/// direct requests still get their turn.
const CONCURRENT_ITEMS: usize = 4;
/// How often an idle runner looks for new batches.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// The largest answer kept for one item.
const MAX_ITEM_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Whether `?queueRequest=true` is in the query.
pub fn requested(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        query.split('&').any(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, "true"));
            name == "queueRequest" && value.eq_ignore_ascii_case("true")
        })
    })
}

/// `{"request_id": …}` and nothing else: a poll, with or without `?queueRequest=true`.
pub fn poll_id(input: &Value) -> Option<&str> {
    let fields = input.as_object()?;
    (fields.len() == 1)
        .then(|| fields.get("request_id")?.as_str())
        .flatten()
}

/// Submits `{"requests":[…]}` or answers a poll for `model`, which the caller has resolved.
pub async fn submit_or_poll(
    state: &SharedState,
    caller: &Caller,
    model: &str,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = state.config.max_body_bytes.min(MAX_BATCH_BYTES);
    let bytes = crate::body::read_limited(headers, body, limit).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(KilnError::new(
            ErrorKind::IncompleteRequest,
            "Request is missing headers or body: the body is empty",
        )
        .into());
    }
    // Read and queued on the blocking pool: up to 10 MB of JSON and an fsync'd transaction.
    // The queue's `[limits.batch]` are checked while reading, before anything is stored.
    let queue = state.batches.clone();
    let (account, owned_model) = (caller.account.clone(), model.to_owned());
    let queued = off_runtime("batch submit", move || {
        match kiln_batch::read_submission(&bytes, queue.limits())? {
            Submission::Poll(request_id) => Ok(Err(request_id)),
            Submission::Requests(inputs) => {
                queue.submit_inputs(&account, &owned_model, &inputs).map(Ok)
            }
        }
    })
    .await?;
    let Submitted { request_id, model } = match queued {
        Ok(submitted) => submitted,
        Err(request_id) => return poll(state, caller, &request_id).await,
    };
    Ok(
        success(json!({"status": "queued", "request_id": request_id, "model": model}))
            .into_response(),
    )
}

/// A finished batch's answer can be megabytes of stored JSON, so it is read off the async threads.
pub async fn poll(
    state: &SharedState,
    caller: &Caller,
    request_id: &str,
) -> Result<Response, ApiError> {
    let queue = state.batches.clone();
    let (account, id) = (caller.account.clone(), request_id.to_owned());
    let polled = off_runtime("batch poll", move || queue.poll(&account, &id)).await?;
    let result = match polled {
        None => {
            return Err(KilnError::new(
                ErrorKind::NotFound,
                format!("No queued request {request_id} in this account"),
            )
            .into())
        }
        Some(Poll::Queued { model }) => {
            json!({"status": "queued", "request_id": request_id, "model": model})
        }
        Some(Poll::Running { model }) => {
            json!({"status": "running", "request_id": request_id, "model": model})
        }
        Some(Poll::Done(done)) => done,
    };
    Ok(success(result).into_response())
}

/// Runs queued items for as long as the server lives; a restarted server picks up where the
/// last one stopped (items in flight then run again).
pub fn spawn_runner(state: SharedState, inner: Router) {
    tokio::spawn(async move {
        let mut running: JoinSet<()> = JoinSet::new();
        loop {
            let free = CONCURRENT_ITEMS.saturating_sub(running.len());
            let claimed = if free == 0 {
                Vec::new()
            } else {
                let claimer = state.clone();
                off_runtime("batch claim", move || {
                    claimer.batches.claim_runnable(free, &|model| {
                        crate::forward::runnable_here(&claimer, model)
                    })
                })
                .await
                .unwrap_or_else(|error| {
                    tracing::error!("batch queue: {}", error.message);
                    Vec::new()
                })
            };
            for item in claimed {
                let (state, inner) = (state.clone(), inner.clone());
                running.spawn(async move {
                    let outcome = run_item(&inner, &item).await;
                    let queue = state.batches.clone();
                    let saved =
                        off_runtime("batch completion", move || queue.complete(&item, &outcome));
                    if let Err(error) = saved.await {
                        tracing::error!("batch queue: {}", error.message);
                    }
                });
            }
            // Until an item finishes (a slot frees) or a while has passed (new batches).
            tokio::select! {
                _ = running.join_next(), if !running.is_empty() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    });
}

/// One item through Kiln's own route, as its account, outside the per-minute limits (the
/// queue is the throttle); streaming is turned off, as a queued answer is read whole.
async fn run_item(inner: &Router, item: &PendingItem) -> ItemOutcome {
    let mut input = item.input.clone();
    if let Some(fields) = input.as_object_mut() {
        fields.remove("stream");
    }
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "/accounts/{}/ai/run/{}",
            item.account_id, item.model
        ))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(input.to_string()));
    let mut request = match request {
        Ok(request) => request,
        Err(error) => return failure(&KilnError::internal(error)),
    };
    request.extensions_mut().insert(TrustedCall {
        account: item.account_id.clone(),
        rate_limited: false,
    });
    let response = match inner.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let reported = response
        .extensions()
        .get::<ReportedUsage>()
        .and_then(|reported| serde_json::to_value(reported.0).ok());
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let bytes = match axum::body::to_bytes(response.into_body(), MAX_ITEM_ANSWER_BYTES).await {
        Ok(bytes) => bytes,
        Err(error) => return failure(&KilnError::internal(format!("reading the answer: {error}"))),
    };
    if !is_json {
        return failure(&KilnError::bad_input(
            "queued requests must have JSON outputs; this model answers with binary data",
        ));
    }
    let envelope: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let succeeded = envelope.get("success").and_then(Value::as_bool) == Some(true);
    ItemOutcome {
        success: succeeded,
        result: envelope.get("result").cloned().unwrap_or(Value::Null),
        errors: envelope.get("errors").cloned().unwrap_or_else(|| json!([])),
        usage: reported,
    }
}

fn failure(error: &KilnError) -> ItemOutcome {
    ItemOutcome {
        success: false,
        result: Value::Null,
        errors: json!([{"code": error.code(), "message": error.message}]),
        usage: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_queue_request_from_the_query() {
        assert!(requested(Some("queueRequest=true")));
        assert!(requested(Some("a=1&queueRequest=TRUE")));
        assert!(requested(Some("queueRequest")));
        assert!(!requested(Some("queueRequest=false")));
        assert!(!requested(None));
    }

    #[test]
    fn a_poll_is_a_lone_request_id() {
        assert_eq!(poll_id(&json!({"request_id": "x"})), Some("x"));
        assert_eq!(poll_id(&json!({"request_id": "x", "prompt": "p"})), None);
        assert_eq!(poll_id(&json!({"request_id": 7})), None);
    }
}
