//! Vectorize v2 (spec §5): the REST API under `/accounts/{account_id}/vectorize/v2/indexes` and
//! the Worker binding's wire protocol (§5.8). Storage, indexes and queries are `kiln-vectorize`;
//! this module only reads bodies, moves the blocking work off the runtime, and shapes answers.

mod api_doc;
mod binding;
mod header_route;
mod rest;

pub use header_route::route_by_header;

use axum::body::{Body, Bytes};
use axum::extract::FromRequest;
use axum::http::{header, HeaderMap, Request};
use kiln_core::{KilnError, KilnResult};
use kiln_vectorize::{parse_vectors, Unparsable, VectorRecord, WriteLimits};
use serde_json::Value;

use crate::offload::off_runtime;
use crate::openapi::ApiRouter;
use crate::SharedState;

/// NDJSON uploads may be up to 100 MB (spec §5.2).
pub const MAX_UPLOAD_BYTES: usize = 100 * 1024 * 1024;

/// Routes relative to `/accounts/{account_id}`.
pub fn account_routes() -> ApiRouter<SharedState> {
    let index = "/vectorize/v2/indexes/{index}";
    ApiRouter::new()
        .get(
            "/vectorize/v2/indexes",
            rest::list_indexes,
            api_doc::list_indexes(),
        )
        .post(
            "/vectorize/v2/indexes",
            rest::create_index,
            api_doc::create_index(),
        )
        .get(index, rest::get_index, api_doc::get_index())
        .delete(index, rest::delete_index, api_doc::delete_index())
        .get(&format!("{index}/info"), rest::info, api_doc::info())
        .post(&format!("{index}/insert"), rest::insert, api_doc::insert())
        .post(&format!("{index}/upsert"), rest::upsert, api_doc::upsert())
        .post(&format!("{index}/query"), rest::query, api_doc::query())
        .post(
            &format!("{index}/get_by_ids"),
            rest::get_by_ids,
            api_doc::get_by_ids(),
        )
        .post(
            &format!("{index}/delete_by_ids"),
            rest::delete_by_ids,
            api_doc::delete_by_ids(),
        )
        .get(
            &format!("{index}/list"),
            rest::list_vectors,
            api_doc::list_vectors(),
        )
        .post(
            &format!("{index}/metadata_index/create"),
            rest::create_metadata_index,
            api_doc::create_metadata_index(),
        )
        .get(
            &format!("{index}/metadata_index/list"),
            rest::list_metadata_indexes,
            api_doc::list_metadata_indexes(),
        )
        .post(
            &format!("{index}/metadata_index/delete"),
            rest::delete_metadata_index,
            api_doc::delete_metadata_index(),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
}

/// The binding's operations, at `/vectorize-binding/{account}/{index}/{op}`. The genuine
/// binding sends `/{op}` and names no index; `header_route` maps it here from a header its
/// workerd config injects.
pub fn binding_routes(state: SharedState) -> ApiRouter<SharedState> {
    let path = "/vectorize-binding/{account_id}/{index}/{op}";
    ApiRouter::new()
        .get(path, binding::handle, api_doc::binding_read())
        .post(path, binding::handle, api_doc::binding_write())
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            crate::platform::authorize::binding_access,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
}

/// A query body: straight into a [`kiln_vectorize::Query`] when it has the common shape (see
/// `Query::from_plain_json`), else through JSON, which also words every error.
async fn query_of(
    state: &SharedState,
    headers: &HeaderMap,
    body: Body,
) -> KilnResult<kiln_vectorize::Query> {
    let bytes = crate::body::read_limited(headers, body, state.config.max_body_bytes).await?;
    if let Some(query) = kiln_vectorize::Query::from_plain_json(&bytes) {
        return query;
    }
    kiln_vectorize::Query::from_json(&crate::body::parse_json(&bytes)?)
}

/// Runs a query in place when the store says it is cheap and the index is free (a graph search:
/// well under a millisecond, less than handing it to another thread and back costs), else on
/// the blocking pool.
async fn run_query(
    state: SharedState,
    account: String,
    index: String,
    query: kiln_vectorize::Query,
) -> KilnResult<Value> {
    if let Some(answer) = state.vectors.try_query_now(&account, &index, &query) {
        return answer;
    }
    blocking(move || state.vectors.query(&account, &index, &query)).await
}

/// Runs blocking store work (fsync, index search) off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> KilnResult<T> + Send + 'static,
) -> KilnResult<T> {
    off_runtime("vectorize task", work).await
}

/// The vectors of an insert or upsert: NDJSON (`application/x-ndjson` or anything that is not
/// JSON with a `vectors` field), a multipart upload's `vectors` file, or `{"vectors": [...]}`;
/// parsing stops at the first vector over `[limits.vectorize]`.
async fn read_vectors(
    state: &SharedState,
    request: Request<Body>,
    unparsable: Unparsable,
) -> KilnResult<Vec<VectorRecord>> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = if content_type.starts_with("multipart/form-data") {
        multipart_vectors(request).await?
    } else {
        let (parts, body) = request.into_parts();
        crate::body::read_limited(&parts.headers, body, MAX_UPLOAD_BYTES).await?
    };
    let limits = WriteLimits::from(&state.config.limits.vectorize);
    // Up to 100 MB of JSON: parsed on the blocking pool.
    off_runtime("vector parsing", move || {
        parse_vectors(&bytes, unparsable, limits)
    })
    .await
}

async fn multipart_vectors(request: Request<Body>) -> KilnResult<Bytes> {
    let mut multipart = axum::extract::Multipart::from_request(request, &())
        .await
        .map_err(|e| KilnError::bad_input(format!("invalid multipart body: {}", e.body_text())))?;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| KilnError::bad_input(e.body_text()))?
    {
        if field.name() == Some("vectors") {
            return field
                .bytes()
                .await
                .map_err(|e| KilnError::bad_input(e.body_text()));
        }
    }
    Err(KilnError::bad_input(
        "the multipart body has no 'vectors' field",
    ))
}

/// `unparsable-behavior=error|discard` (default error).
fn unparsable_behavior(query: Option<&str>) -> KilnResult<Unparsable> {
    let value = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "unparsable-behavior")
        .map(|(_, value)| value);
    match value {
        None | Some("error") => Ok(Unparsable::Error),
        Some("discard") => Ok(Unparsable::Discard),
        Some(other) => Err(KilnError::bad_input(format!(
            "unparsable-behavior must be error or discard, not {other:?}"
        ))),
    }
}

/// `{ids: [...]}` of get_by_ids / delete_by_ids.
fn ids_of(input: &Value) -> KilnResult<Vec<String>> {
    input
        .get("ids")
        .and_then(Value::as_array)
        .and_then(|ids| {
            ids.iter()
                .map(|id| id.as_str().map(str::to_owned))
                .collect()
        })
        .ok_or_else(|| KilnError::bad_input("'ids' must be an array of strings"))
}
