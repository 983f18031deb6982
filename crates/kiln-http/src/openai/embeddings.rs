//! `POST /v1/embeddings`: text or token-id input, float or base64 output, exact usage.

use axum::body::Body;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use kiln_core::{EmbeddingOutput, Pooling, Task};
use kiln_scheduler::{Admission, EmbeddingInput, Worker};
use serde_json::{json, Value};

use super::error::OpenAiError;
use super::request::{type_error, Fields};
use super::{admit, read_request, resolve, wrong_task};
use crate::envelope::with_model_header;
use crate::offload::{off_runtime_if, INLINE_BYTES};
use crate::platform::Caller;
use crate::SharedState;

/// OpenAI's limit on inputs per request.
const MAX_INPUTS: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EncodingFormat {
    Float,
    /// Little-endian f32 bytes, base64: what the SDKs ask for by default.
    Base64,
}

pub async fn embeddings(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    serve(&state, &caller, uri, &headers, request_body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn serve(
    state: &SharedState,
    caller: &Caller,
    uri: Uri,
    headers: &HeaderMap,
    request_body: Body,
) -> Result<Response, OpenAiError> {
    let body = read_request(state, headers, request_body).await?;
    let fields = Fields::of(&body)?;
    let requested = fields.model()?;
    if let Some(answer) =
        crate::forward::json_elsewhere(state, &requested, uri, headers, &body).await?
    {
        return Ok(answer);
    }
    let route = "/v1/embeddings";
    let served = resolve(state, &requested, Task::TextEmbeddings, route).await?;
    let Worker::Embedding(worker) = &served.worker else {
        return Err(wrong_task(
            &requested,
            &served.name,
            served.worker.task(),
            route,
        ));
    };
    let name = served.name.as_str();
    let parsed = parse(&fields, worker.dimensions()).map_err(|e| e.served_by(name))?;
    let (input, format) = parsed;
    let meter =
        admit(state, caller, &requested, Task::TextEmbeddings).map_err(|e| e.served_by(name))?;
    let output = worker
        .embed_input(input, Pooling::Mean, Admission::default())
        .await
        .map_err(|e| OpenAiError::from(e).served_by(name))?;
    meter.charge_tokens(&kiln_core::Usage::new(output.prompt_tokens, 0));
    // Floats as text (about ten bytes each) or base64: many inputs make megabytes to write.
    let floats: usize = output.vectors.iter().map(Vec::len).sum();
    let written = off_runtime_if(floats * 10 > INLINE_BYTES, "embedding output", move || {
        Ok(Json(list(output, format, requested)).into_response())
    });
    let response = written
        .await
        .map_err(|e| OpenAiError::from(e).served_by(name))?;
    Ok(with_model_header(response, name))
}

/// The `list` object of every input's embedding.
fn list(output: EmbeddingOutput, format: EncodingFormat, requested: String) -> Value {
    let data: Vec<Value> = output
        .vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = match format {
                EncodingFormat::Float => json!(vector),
                EncodingFormat::Base64 => json!(encode_base64(vector)),
            };
            json!({"object": "embedding", "embedding": embedding, "index": index})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": requested,
        "usage": {"prompt_tokens": output.prompt_tokens, "total_tokens": output.prompt_tokens},
    })
}

pub fn encode_base64(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    BASE64.encode(bytes)
}

fn parse(
    fields: &Fields<'_>,
    dimensions: usize,
) -> Result<(EmbeddingInput, EncodingFormat), OpenAiError> {
    fields.string("user")?;
    let format = match fields.string("encoding_format")? {
        None | Some("float") => EncodingFormat::Float,
        Some("base64") => EncodingFormat::Base64,
        Some(other) => {
            return Err(OpenAiError::invalid(
                "encoding_format",
                format!("'encoding_format' is '{other}'; expected 'float' or 'base64'"),
            ))
        }
    };
    if let Some(requested) = fields.integer("dimensions", 1, i64::MAX)? {
        if requested as u64 != dimensions as u64 {
            return Err(OpenAiError::invalid(
                "dimensions",
                format!(
                    "'dimensions' is {requested}, but this model only produces {dimensions}-dimensional \
                     embeddings; omit 'dimensions' or set it to {dimensions}"
                ),
            ));
        }
    }
    Ok((parse_input(fields.get("input"))?, format))
}

/// A string, an array of strings, an array of token ids, or an array of such arrays.
fn parse_input(input: Option<&Value>) -> Result<EmbeddingInput, OpenAiError> {
    let items = match input {
        None => return Err(OpenAiError::invalid("input", "'input' is required")),
        Some(Value::String(text)) => {
            return Ok(EmbeddingInput::Texts(vec![non_empty_text(text, "input")?]))
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(type_error(
                "input",
                "a string, an array of strings, or token-id arrays",
                other,
            ))
        }
    };
    if items.is_empty() {
        return Err(OpenAiError::invalid(
            "input",
            "'input' must not be an empty array",
        ));
    }
    if items.len() > MAX_INPUTS {
        return Err(OpenAiError::invalid(
            "input",
            format!(
                "'input' has {} items; at most {MAX_INPUTS} are allowed",
                items.len()
            ),
        ));
    }
    match &items[0] {
        Value::String(_) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(text) => non_empty_text(text, &format!("input[{i}]")),
                other => Err(type_error(&format!("input[{i}]"), "a string", other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(EmbeddingInput::Texts),
        Value::Number(_) => Ok(EmbeddingInput::TokenIds(vec![token_ids(items, "input")?])),
        Value::Array(_) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let param = format!("input[{i}]");
                match item {
                    Value::Array(ids) if !ids.is_empty() => token_ids(ids, &param),
                    Value::Array(_) => {
                        Err(OpenAiError::invalid(&param, format!("'{param}' is empty")))
                    }
                    other => Err(type_error(&param, "an array of token ids", other)),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(EmbeddingInput::TokenIds),
        other => Err(type_error(
            "input[0]",
            "a string, a token id, or an array of token ids",
            other,
        )),
    }
}

fn non_empty_text(text: &str, param: &str) -> Result<String, OpenAiError> {
    if text.is_empty() {
        return Err(OpenAiError::invalid(
            param,
            format!("'{param}' is an empty string"),
        ));
    }
    Ok(text.to_owned())
}

fn token_ids(items: &[Value], param: &str) -> Result<Vec<u32>, OpenAiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    OpenAiError::invalid(
                        param,
                        format!(
                            "'{param}[{i}]' must be a non-negative integer token id, not {item}"
                        ),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        let encoded = encode_base64(&[1.0, -2.5]);
        let bytes = BASE64.decode(encoded).unwrap();
        assert_eq!(&bytes[..4], &1.0f32.to_le_bytes());
        assert_eq!(&bytes[4..], &(-2.5f32).to_le_bytes());
    }

    #[test]
    fn input_forms() {
        assert_eq!(
            parse_input(Some(&json!("a"))).unwrap(),
            EmbeddingInput::Texts(vec!["a".into()])
        );
        assert_eq!(
            parse_input(Some(&json!([1, 2]))).unwrap(),
            EmbeddingInput::TokenIds(vec![vec![1, 2]])
        );
        assert_eq!(
            parse_input(Some(&json!([[1], [2, 3]]))).unwrap(),
            EmbeddingInput::TokenIds(vec![vec![1], vec![2, 3]])
        );
        for bad in [
            json!([]),
            json!(""),
            json!([1, "a"]),
            json!(["a", 1]),
            json!([-1]),
            json!(5),
        ] {
            let error = parse_input(Some(&bad)).unwrap_err();
            assert_eq!(error.status(), 400, "{bad}");
            assert!(
                error
                    .param
                    .as_deref()
                    .is_some_and(|p| p.starts_with("input")),
                "{bad}"
            );
        }
    }
}
