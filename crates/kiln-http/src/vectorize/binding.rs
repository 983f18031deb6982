//! The Vectorize binding's wire protocol (spec §5.8): `GET info`, `POST query`, `insert`,
//! `upsert`, `getByIds`, `deleteByIds`. Answers are bare JSON; failures are non-200 with
//! `{code, error}`, which the binding throws as `<OP>_ERROR (code = N): <error>`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use serde_json::{json, Value};

use super::{blocking, ids_of, query_of, read_vectors, run_query};
use crate::SharedState;
use kiln_vectorize::Unparsable;

pub async fn handle(
    State(state): State<SharedState>,
    Path((account, index, op)): Path<(String, String, String)>,
    request: Request<Body>,
) -> Response {
    match serve(state, account, index, &op, request).await {
        Ok(answer) => Json(answer).into_response(),
        Err(error) => error_response(&error),
    }
}

/// `{code, error}` with the error's status: what the binding turns into its thrown error.
pub(super) fn error_response(error: &KilnError) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(json!({"code": error.code(), "error": error.message})),
    )
        .into_response()
}

async fn serve(
    state: SharedState,
    account: String,
    index: String,
    op: &str,
    request: Request<Body>,
) -> KilnResult<Value> {
    let method = request.method().clone();
    match (method, op) {
        (Method::GET, "info") => blocking(move || state.vectors.info(&account, &index)).await,
        (Method::POST, "query") => {
            let (parts, body) = request.into_parts();
            let query = query_of(&state, &parts.headers, body).await?;
            run_query(state, account, index, query).await
        }
        (Method::POST, "insert" | "upsert") => {
            let upsert = op == "upsert";
            let vectors = read_vectors(&state, request, Unparsable::Error).await?;
            let mutation_id = blocking(move || {
                if upsert {
                    state.vectors.upsert(&account, &index, vectors)
                } else {
                    state.vectors.insert(&account, &index, vectors)
                }
            })
            .await?;
            Ok(json!({"mutationId": mutation_id}))
        }
        (Method::POST, "getByIds") => {
            let ids = ids_of(&json_of(&state, request).await?)?;
            let vectors =
                blocking(move || state.vectors.get_by_ids(&account, &index, &ids)).await?;
            Ok(json!(vectors))
        }
        (Method::POST, "deleteByIds") => {
            let ids = ids_of(&json_of(&state, request).await?)?;
            let mutation_id =
                blocking(move || state.vectors.delete_by_ids(&account, &index, ids)).await?;
            Ok(json!({"mutationId": mutation_id}))
        }
        (method, op) => Err(KilnError::new(
            ErrorKind::RouteNotFound,
            format!("no Vectorize binding operation {method} {op}"),
        )),
    }
}

async fn json_of(state: &SharedState, request: Request<Body>) -> KilnResult<Value> {
    let (parts, body) = request.into_parts();
    crate::body::read_json(&parts.headers, body, state.config.max_body_bytes).await
}
