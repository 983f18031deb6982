//! Reading request bodies within the size limit.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use kiln_core::{ErrorKind, KilnError, KilnResult};
use serde_json::Value;

use crate::offload::{off_runtime_if, INLINE_BYTES};

fn too_large(limit: usize) -> KilnError {
    KilnError::new(
        ErrorKind::RequestTooLarge,
        format!("Request is too large: the limit is {limit} bytes"),
    )
}

/// Reads the whole body, refusing at once when `content-length` already says it is too large.
pub async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> KilnResult<Bytes> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let over_limit = std::error::Error::source(&error)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if over_limit {
            too_large(limit)
        } else {
            KilnError::new(
                ErrorKind::IncompleteRequest,
                format!("Could not read the body: {error}"),
            )
        }
    })
}

/// Parses a JSON body; an empty body or broken JSON is bad input that says where it broke.
pub fn parse_json(bytes: &[u8]) -> KilnResult<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(KilnError::new(
            ErrorKind::IncompleteRequest,
            "Request is missing headers or body: the body is empty",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| KilnError::bad_input(format!("invalid JSON: {e}")))
}

/// [`read_limited`] then [`parse_json`]: the JSON body of a request, within `limit` bytes.
pub async fn read_json(headers: &HeaderMap, body: Body, limit: usize) -> KilnResult<Value> {
    parse_json_off_runtime(read_limited(headers, body, limit).await?).await
}

/// [`parse_json`], on the blocking pool when the body is large: parsing megabytes takes
/// milliseconds that the runtime's other requests would wait for.
pub async fn parse_json_off_runtime(bytes: Bytes) -> KilnResult<Value> {
    let large = bytes.len() > INLINE_BYTES;
    off_runtime_if(large, "JSON parsing", move || parse_json(&bytes)).await
}

/// `x-session-affinity`: pins a conversation to the slot that holds its prefix cache.
pub fn session_affinity(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-session-affinity")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 256)
        .map(str::to_owned)
}
