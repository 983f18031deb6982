//! `/accounts/{account_id}/vectorize/v2/indexes…` (spec §5.7), in the Workers AI envelope.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_core::KilnResult;
use kiln_vectorize::VectorStore;
use serde_json::{json, Value};

use super::{blocking, ids_of, query_of, read_vectors, run_query, unparsable_behavior};
use crate::envelope::{success, ApiError};
use crate::paging::{paged, Unasked};
use crate::{body, SharedState};

type IndexPath = Path<(String, String)>;
type MetadataIndexChange = fn(&VectorStore, &str, &str, &Value) -> KilnResult<String>;

fn answer(result: KilnResult<Value>) -> Response {
    match result {
        Ok(value) => success(value).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

async fn json_body(state: &SharedState, headers: &HeaderMap, body: Body) -> KilnResult<Value> {
    body::read_json(headers, body, state.config.max_body_bytes).await
}

pub async fn create_index(
    State(state): State<SharedState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let created = async {
        let input = json_body(&state, &headers, request_body).await?;
        blocking(move || state.vectors.create_index(&account, &input)).await
    };
    match created.await {
        Ok(index) => (StatusCode::CREATED, success(index)).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// One page of every index unless the client asks for `page`/`per_page` (Cloudflare answers
/// one page).
pub async fn list_indexes(
    State(state): State<SharedState>,
    Path(account): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    paged("listing indexes", &pairs, Unasked::Everything, move || {
        state.vectors.list_indexes(&account)
    })
    .await
}

pub async fn get_index(
    State(state): State<SharedState>,
    Path((account, index)): IndexPath,
) -> Response {
    answer(state.vectors.get_index(&account, &index))
}

pub async fn delete_index(
    State(state): State<SharedState>,
    Path((account, index)): IndexPath,
) -> Response {
    let deleted = async {
        blocking(move || state.vectors.delete_index(&account, &index)).await?;
        Ok(Value::Null)
    };
    answer(deleted.await)
}

pub async fn info(State(state): State<SharedState>, Path((account, index)): IndexPath) -> Response {
    answer(state.vectors.info(&account, &index))
}

pub async fn insert(
    State(state): State<SharedState>,
    Path((account, index)): IndexPath,
    request: Request<Body>,
) -> Response {
    mutate(state, account, index, request, Mutation::Insert).await
}

pub async fn upsert(
    State(state): State<SharedState>,
    Path((account, index)): IndexPath,
    request: Request<Body>,
) -> Response {
    mutate(state, account, index, request, Mutation::Upsert).await
}

#[derive(Clone, Copy)]
enum Mutation {
    Insert,
    Upsert,
}

async fn mutate(
    state: SharedState,
    account: String,
    index: String,
    request: Request<Body>,
    mutation: Mutation,
) -> Response {
    let mutated = async {
        let unparsable = unparsable_behavior(request.uri().query())?;
        let vectors = read_vectors(&state, request, unparsable).await?;
        let mutation_id = blocking(move || match mutation {
            Mutation::Insert => state.vectors.insert(&account, &index, vectors),
            Mutation::Upsert => state.vectors.upsert(&account, &index, vectors),
        })
        .await?;
        Ok(json!({"mutationId": mutation_id}))
    };
    answer(mutated.await)
}

pub async fn query(
    State(state): State<SharedState>,
    Path((account, index)): IndexPath,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let answered = async {
        let query = query_of(&state, &headers, request_body).await?;
        run_query(state, account, index, query).await
    };
    answer(answered.await)
}

pub async fn get_by_ids(
    State(state): State<SharedState>,
    Path((account, index)): IndexPath,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let answered = async {
        let ids = ids_of(&json_body(&state, &headers, request_body).await?)?;
        let vectors = blocking(move || state.vectors.get_by_ids(&account, &index, &ids)).await?;
        Ok(json!(vectors))
    };
    answer(answered.await)
}

pub async fn delete_by_ids(
    State(state): State<SharedState>,
    Path((account, index)): IndexPath,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let answered = async {
        let ids = ids_of(&json_body(&state, &headers, request_body).await?)?;
        let mutation_id =
            blocking(move || state.vectors.delete_by_ids(&account, &index, ids)).await?;
        Ok(json!({"mutationId": mutation_id}))
    };
    answer(answered.await)
}

#[derive(serde::Deserialize)]
pub struct ListParams {
    count: Option<String>,
    cursor: Option<String>,
}

pub async fn list_vectors(
    State(state): State<SharedState>,
    Path((account, index)): IndexPath,
    Query(params): Query<ListParams>,
) -> Response {
    let count = params
        .count
        .map(|count| {
            count.parse::<usize>().map_err(|_| {
                kiln_core::KilnError::bad_input(format!("'count' must be a number, not {count:?}"))
            })
        })
        .transpose();
    answer(count.and_then(|count| {
        state
            .vectors
            .list_vectors(&account, &index, count, params.cursor.as_deref())
    }))
}

pub async fn create_metadata_index(
    State(state): State<SharedState>,
    Path((account, index)): IndexPath,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let change: MetadataIndexChange = VectorStore::create_metadata_index;
    change_metadata_index(state, (account, index), change, &headers, request_body).await
}

pub async fn list_metadata_indexes(
    State(state): State<SharedState>,
    Path((account, index)): IndexPath,
) -> Response {
    answer(state.vectors.list_metadata_indexes(&account, &index))
}

pub async fn delete_metadata_index(
    State(state): State<SharedState>,
    Path((account, index)): IndexPath,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let change: MetadataIndexChange = VectorStore::delete_metadata_index;
    change_metadata_index(state, (account, index), change, &headers, request_body).await
}

/// A metadata index change (its JSON body → `{mutationId}`), on the blocking pool.
async fn change_metadata_index(
    state: SharedState,
    (account, index): (String, String),
    change: MetadataIndexChange,
    headers: &HeaderMap,
    request_body: Body,
) -> Response {
    let answered = async {
        let input = json_body(&state, headers, request_body).await?;
        let mutation_id =
            blocking(move || change(&state.vectors, &account, &index, &input)).await?;
        Ok(json!({"mutationId": mutation_id}))
    };
    answer(answered.await)
}
