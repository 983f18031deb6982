//! `/accounts/{account_id}/vectorize/v2/indexes…` (spec §5.7), in the Workers AI envelope.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_core::{KilnResult, Task};
use kiln_scheduler::Worker;
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
        let mut input = json_body(&state, &headers, request_body).await?;
        let note = serve_preset_locally(&state, &mut input).await?;
        let index = blocking(move || state.vectors.create_index(&account, &input)).await?;
        Ok::<_, kiln_core::KilnError>((index, note))
    };
    match created.await {
        Ok((index, note)) => {
            let mut answer = success(index);
            if let Some(note) = note {
                answer.0["messages"] = json!([{"code": 0, "message": note}]);
            }
            (StatusCode::CREATED, answer).into_response()
        }
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// A `preset` names an embeddings id; the index takes the dimensions of the local model that
/// serves that id here (Workers AI's model may have other ones), so the RAG recipe — preset
/// index, embeddings from the same id, upsert — holds. Answers what it did, for `messages`.
async fn serve_preset_locally(
    state: &SharedState,
    input: &mut Value,
) -> KilnResult<Option<String>> {
    let Some(preset) = input
        .pointer("/config/preset")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return Ok(None);
    };
    // Only catalog embeddings ids: `openai/…` and `cohere/…` presets are no model Kiln serves.
    let Some(entry) = state
        .catalog
        .get(&preset)
        .filter(|entry| entry.task == Task::TextEmbeddings)
    else {
        return Ok(None);
    };
    let Some((local, _)) = state.registry.resolve(&preset, Some(entry.task)) else {
        return Ok(None);
    };
    let local = local.to_owned();
    let dimensions = match state.registry.output_dimensions(&local) {
        Some(dimensions) => dimensions,
        // Not stated by its files: the loaded model knows.
        None => match state.registry.acquire(&local).await?.worker {
            Worker::Embedding(worker) => worker.dimensions(),
            _ => return Ok(None),
        },
    };
    let metric = input
        .pointer("/config/metric")
        .cloned()
        .unwrap_or_else(|| json!("cosine"));
    input["config"] = json!({"dimensions": dimensions, "metric": metric});
    Ok(Some(format!(
        "preset {preset}: served here by the local model {local}, so the index takes its \
         {dimensions} dimensions"
    )))
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
    // Off the runtime: in a cluster it may wait for this node to catch up with the others.
    answer(blocking(move || state.vectors.get_index(&account, &index)).await)
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
    answer(blocking(move || state.vectors.info(&account, &index)).await)
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
    answer(blocking(move || state.vectors.list_metadata_indexes(&account, &index)).await)
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
