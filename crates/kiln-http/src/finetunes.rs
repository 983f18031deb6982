//! `/accounts/{account_id}/ai/finetunes`: create, list, and upload the two assets of a LoRA
//! fine-tune (spec §6).

use axum::body::Bytes;
use axum::extract::{Multipart, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kiln_core::{ErrorKind, KilnError};
use serde_json::{json, Value};

use crate::envelope::{success, ApiError};
use crate::offload::off_runtime;
use crate::{body, SharedState};

/// `POST …/ai/finetunes` `{model, name, description?}`.
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
        let store = state.finetunes.clone();
        let (account, name, model) = (account.clone(), name.to_owned(), model.to_owned());
        let description = text("description").map(str::to_owned);
        off_runtime("fine-tune creation", move || {
            store.create(&account, &name, &model, description.as_deref())
        })
        .await
    };
    match created.await {
        Ok(finetune) => success(json!(finetune)).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// `GET …/ai/finetunes`: reads every fine-tune's metadata file.
pub async fn list(State(state): State<SharedState>, Path(account): Path<String>) -> Response {
    let store = state.finetunes.clone();
    let listed = off_runtime("listing fine-tunes", move || store.list(&account)).await;
    match listed {
        Ok(finetunes) => success(json!(finetunes)).into_response(),
        Err(error) => ApiError::from(error).into_response(),
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
