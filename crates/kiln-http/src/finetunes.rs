//! `/accounts/{account_id}/ai/finetunes`: create, list, and upload the two assets of a LoRA
//! fine-tune (spec §6).

use axum::body::Bytes;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kiln_core::{ErrorKind, KilnError};
use serde_json::{json, Value};

use crate::envelope::{success, ApiError};
use crate::offload::off_runtime;
use crate::paging::{paged, ResultInfo, Unasked, MAX_PER_PAGE};
use crate::{body, SharedState};

/// `POST …/ai/finetunes` `{model, name, description?, public?}`.
pub async fn create(
    State(state): State<SharedState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    request_body: axum::body::Body,
) -> Response {
    let created = async {
        let input = body::read_json(&headers, request_body, state.config.max_body_bytes).await?;
        let text = |key: &str| input.get(key).and_then(Value::as_str);
        let model = text("model")
            .ok_or_else(|| KilnError::bad_input("'model' (the base model's id) is required"))?;
        let name = text("name").ok_or_else(|| KilnError::bad_input("'name' is required"))?;
        let entry = state
            .catalog
            .get(model)
            .ok_or_else(|| KilnError::no_such_model(model))?;
        if !entry.has_property("lora") {
            return Err(KilnError::new(
                ErrorKind::LoraUnsupported,
                format!("The model {model} does not support LoRa inference"),
            ));
        }
        let public = match input.get("public") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(public)) => *public,
            Some(other) => {
                return Err(KilnError::bad_input(format!(
                    "'public' must be true or false, got {other}"
                )))
            }
        };
        let store = state.finetunes.clone();
        let (account, name, model) = (account.clone(), name.to_owned(), model.to_owned());
        let description = text("description").map(str::to_owned);
        off_runtime("fine-tune creation", move || {
            store.create(&account, &name, &model, description.as_deref(), public)
        })
        .await
    };
    match created.await {
        Ok(finetune) => success(json!(finetune)).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// `GET …/ai/finetunes`: reads every fine-tune's metadata file. One page unless the client
/// asks for `page`/`per_page`.
pub async fn list(
    State(state): State<SharedState>,
    Path(account): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    paged(
        "listing fine-tunes",
        &pairs,
        Unasked::Everything,
        move || {
            Ok(state
                .finetunes
                .list(&account)?
                .iter()
                .map(|f| json!(f))
                .collect())
        },
    )
    .await
}

/// `GET …/ai/finetunes/public?limit&offset&orderBy`: fine-tunes any account created with
/// `public: true` (Kiln ships no `cf-public-*` adapters of its own). `page`/`per_page` work too.
pub async fn list_public(
    State(state): State<SharedState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let window = match PublicWindow::from_pairs(&pairs) {
        Ok(window) => window,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let Some((offset, limit)) = window.offset_limit else {
        return paged(
            "listing public fine-tunes",
            &pairs,
            Unasked::Everything,
            move || Ok(window.ordered(state.finetunes.list_public()?)),
        )
        .await;
    };
    let listed = off_runtime("listing public fine-tunes", move || {
        let all = window.ordered(state.finetunes.list_public()?);
        let total_count = all.len() as u64;
        let page: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
        Ok(ResultInfo {
            page: (offset / limit.max(1)) as u64 + 1,
            per_page: limit as u64,
            count: page.len() as u64,
            total_count,
        }
        .envelope(Value::Array(page)))
    });
    listed
        .await
        .unwrap_or_else(|error| ApiError::from(error).into_response())
}

/// The public list's `orderBy` and `limit`/`offset`.
struct PublicWindow {
    order_by: &'static str,
    offset_limit: Option<(usize, usize)>,
}

impl PublicWindow {
    const ORDERS: [&'static str; 4] = ["created_at", "modified_at", "name", "model"];

    fn from_pairs(pairs: &[(String, String)]) -> kiln_core::KilnResult<Self> {
        let value = |name: &str| pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
        let order_by = match value("orderBy") {
            None => "created_at",
            Some(asked) => Self::ORDERS
                .into_iter()
                .find(|order| order == asked)
                .ok_or_else(|| {
                    KilnError::bad_input(format!(
                        "'orderBy' must be one of {:?}, got {asked:?}",
                        Self::ORDERS
                    ))
                })?,
        };
        let number = |name: &str, min: usize, max: usize| {
            value(name)
                .map(|text| {
                    text.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (min..=max).contains(n))
                        .ok_or_else(|| {
                            KilnError::bad_input(format!(
                                "'{name}' must be a whole number from {min} to {max}, got {text:?}"
                            ))
                        })
                })
                .transpose()
        };
        let limit = number("limit", 1, MAX_PER_PAGE)?;
        let offset = number("offset", 0, usize::MAX)?;
        let offset_limit = match (offset, limit) {
            (None, None) => None,
            (offset, limit) => Some((offset.unwrap_or(0), limit.unwrap_or(MAX_PER_PAGE))),
        };
        Ok(Self {
            order_by,
            offset_limit,
        })
    }

    fn ordered(&self, mut finetunes: Vec<kiln_finetune::Finetune>) -> Vec<Value> {
        // Creation order already; the sort is stable so ties keep it.
        match self.order_by {
            "modified_at" => finetunes.sort_by(|a, b| a.modified_at.cmp(&b.modified_at)),
            "name" => finetunes.sort_by(|a, b| a.name.cmp(&b.name)),
            "model" => finetunes.sort_by(|a, b| a.model.cmp(&b.model)),
            _ => {}
        }
        finetunes.iter().map(|f| json!(f)).collect()
    }
}

/// `POST …/ai/finetunes/{id or name}/finetune-assets`, multipart `file_name` and `file`.
pub async fn upload_asset(
    State(state): State<SharedState>,
    Path((account, finetune)): Path<(String, String)>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    let uploaded = async {
        let mut multipart = multipart.map_err(|rejection| {
            KilnError::bad_input(format!(
                "finetune-assets takes a multipart/form-data body: {}",
                rejection.body_text()
            ))
        })?;
        let (file_name, contents) = read_fields(&mut multipart).await?;
        let store = state.finetunes.clone();
        off_runtime("upload", move || {
            store.upload(&account, &finetune, &file_name, &contents)
        })
        .await
    };
    match uploaded.await {
        Ok(()) => success(json!({"success": true})).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// The `file_name` and `file` fields; `file_name` defaults to the file part's own name.
async fn read_fields(multipart: &mut Multipart) -> Result<(String, Bytes), KilnError> {
    let mut file_name = None;
    let mut contents = None;
    let multipart_error =
        |e: axum::extract::multipart::MultipartError| KilnError::bad_input(e.body_text());
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("file_name") => file_name = Some(field.text().await.map_err(multipart_error)?),
            Some("file") => {
                let part_name = field.file_name().map(str::to_owned);
                let bytes = field.bytes().await.map_err(multipart_error)?;
                file_name = file_name.or(part_name);
                // Up to 300 MB: kept as received, not copied.
                contents = Some(bytes);
            }
            _ => {}
        }
    }
    let missing = |what: &str| {
        KilnError::new(
            ErrorKind::InvalidFinetune,
            format!("finetune-assets needs a '{what}' field"),
        )
    };
    Ok((
        file_name.ok_or_else(|| missing("file_name"))?,
        contents.ok_or_else(|| missing("file"))?,
    ))
}
