//! `POST /v1/rerank` (also `/rerank` and `…/ai/v1/rerank`): reranking in the shapes other
//! servers use, beside Workers AI's `{query, contexts}`.
//!
//! - llama-server, Jina and Cohere: `{model?, query, documents: [string | {text}], top_n?,
//!   return_documents?}` → `{model, object: "list", usage, results: [{index, relevance_score,
//!   document?}]}`, best first. `relevance_score` is the cross-encoder's logit through a sigmoid,
//!   in [0, 1] as Jina and Cohere answer (llama-server answers the bare logit).
//! - text-embeddings-inference: `{query, texts: [string], raw_scores?, return_text?}` →
//!   `[{index, score, text?}]`, best first; `score` is the sigmoid unless `raw_scores`.
//!
//! `model` defaults to `@cf/baai/bge-reranker-base`, so clients that send none (TEI's) reach
//! whatever serves that id. Inputs longer than the model's window are refused, never cut.

use axum::body::Body;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use kiln_core::classify::sigmoid;
use kiln_core::{Task, Usage};
use kiln_scheduler::{Admission, Worker};
use serde_json::{json, Value};

use super::error::OpenAiError;
use super::request::{type_error, Fields};
use super::{read_request, resolve};
use crate::classification::{check_context_count, check_head, check_text, pairs, ranked, Shape};
use crate::envelope::with_model_header;
use crate::platform::{Caller, ReportedUsage};
use crate::SharedState;

const DEFAULT_MODEL: &str = "@cf/baai/bge-reranker-base";

/// Which peer's shape the request came in, and so which the answer takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// `documents` → `{results: [{index, relevance_score}]}`.
    Documents { return_documents: bool },
    /// `texts` → `[{index, score}]`.
    Texts { raw_scores: bool, return_text: bool },
}

struct RerankRequest {
    model: String,
    query: String,
    documents: Vec<String>,
    top: Option<usize>,
    dialect: Dialect,
}

pub async fn rerank(
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
    let request = parse(&body, &state.config.limits.text_classification)?;
    if let Some(answer) =
        crate::forward::json_elsewhere(state, &request.model, uri, headers, &body).await?
    {
        return Ok(answer);
    }
    let route = "/v1/rerank";
    let served = resolve(state, &request.model, Task::TextClassification, route).await?;
    let name = served.name.as_str();
    let Worker::Classifier(worker) = &served.worker else {
        return Err(OpenAiError::invalid(
            "model",
            format!(
                "The model `{}` is not a reranker (served by {name})",
                request.model
            ),
        )
        .served_by(name));
    };
    check_head(worker, Shape::Rerank, &request.model, name)
        .map_err(|e| OpenAiError::invalid("model", e.message).served_by(name))?;
    // Priced as the catalog id, or for a local model named directly, as its kind's id.
    let task = Task::TextClassification;
    let priced = state
        .catalog
        .get(&request.model)
        .or_else(|| state.catalog.get(&state.registry.schema_id(name)?))
        .filter(|entry| entry.task == task);
    let meter = state
        .platform
        .admit(caller, task, &request.model, priced)
        .map_err(|e| OpenAiError::from(e).served_by(name))?;
    let output = worker
        .classify(
            pairs(&request.query, &request.documents),
            Admission::default(),
        )
        .await
        .map_err(|e| OpenAiError::from(e).served_by(name))?;
    let usage = Usage::new(output.prompt_tokens(), 0);
    meter.charge_tokens(&usage);
    let best = ranked(&output.logits, request.top);
    let answer = match request.dialect {
        Dialect::Documents { return_documents } => {
            let results: Vec<Value> = best
                .iter()
                .map(|&(index, logit)| {
                    let mut result = json!({"index": index, "relevance_score": sigmoid(logit)});
                    if return_documents {
                        result["document"] = json!({"text": request.documents[index]});
                    }
                    result
                })
                .collect();
            json!({
                "model": request.model,
                "object": "list",
                "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
                "results": results,
            })
        }
        Dialect::Texts {
            raw_scores,
            return_text,
        } => Value::Array(
            best.iter()
                .map(|&(index, logit)| {
                    let score = if raw_scores { logit } else { sigmoid(logit) };
                    let mut result = json!({"index": index, "score": score});
                    if return_text {
                        result["text"] = json!(request.documents[index]);
                    }
                    result
                })
                .collect(),
        ),
    };
    let mut response = Json(answer).into_response();
    response.extensions_mut().insert(ReportedUsage(usage));
    Ok(with_model_header(response, name))
}

fn parse(
    body: &Value,
    limits: &kiln_core::limits::TextClassificationLimits,
) -> Result<RerankRequest, OpenAiError> {
    let fields = Fields::of(body)?;
    let model = match fields.get("model") {
        None => DEFAULT_MODEL.to_owned(),
        Some(_) => fields.model()?,
    };
    let invalid =
        |param: &str, error: kiln_core::KilnError| OpenAiError::invalid(param, error.message);
    let query = fields
        .string("query")?
        .ok_or_else(|| OpenAiError::invalid("query", "'query' is required"))?;
    if query.is_empty() {
        return Err(OpenAiError::invalid("query", "'query' is empty"));
    }
    check_text("query", query, limits).map_err(|e| invalid("query", e))?;
    let (field, dialect) = match (fields.get("documents"), fields.get("texts")) {
        (Some(_), Some(_)) => {
            return Err(OpenAiError::invalid(
                "documents",
                "send 'documents' or 'texts', not both",
            ))
        }
        (Some(_), None) => (
            "documents",
            Dialect::Documents {
                return_documents: fields.bool("return_documents")?.unwrap_or(false),
            },
        ),
        (None, Some(_)) => {
            if fields.bool("truncate")? == Some(true) {
                return Err(OpenAiError::invalid(
                    "truncate",
                    "'truncate' is not supported: inputs longer than the model's window are \
                     refused",
                ));
            }
            (
                "texts",
                Dialect::Texts {
                    raw_scores: fields.bool("raw_scores")?.unwrap_or(false),
                    return_text: fields.bool("return_text")?.unwrap_or(false),
                },
            )
        }
        (None, None) => {
            return Err(OpenAiError::invalid(
                "documents",
                "'documents' (or TEI's 'texts') is required",
            ))
        }
    };
    let Some(Value::Array(items)) = fields.get(field) else {
        let got = fields.get(field).unwrap_or(&Value::Null);
        return Err(type_error(field, "an array", got));
    };
    check_context_count(field, items.len(), limits).map_err(|e| invalid(field, e))?;
    let documents = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let text = match item {
                Value::String(text) => Some(text.as_str()),
                // Jina and Cohere also take `{text}` objects.
                Value::Object(object) if field == "documents" => {
                    object.get("text").and_then(Value::as_str)
                }
                _ => None,
            };
            let name = format!("{field}[{index}]");
            let text = text.ok_or_else(|| type_error(&name, "a string", item))?;
            check_text(&name, text, limits).map_err(|e| invalid(field, e))?;
            Ok(text.to_owned())
        })
        .collect::<Result<Vec<String>, OpenAiError>>()?;
    let top = crate::classification::top_count("top_n", fields.get("top_n"), limits)
        .map_err(|e| invalid("top_n", e))?;
    Ok(RerankRequest {
        model,
        query: query.to_owned(),
        documents,
        top,
        dialect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::limits::TextClassificationLimits;

    #[test]
    fn both_dialects_parse_and_bad_fields_name_themselves() {
        let limits = TextClassificationLimits::default();
        let llama = parse(
            &json!({"query": "q", "documents": ["a", {"text": "b"}], "top_n": 1}),
            &limits,
        )
        .unwrap();
        assert_eq!(llama.model, DEFAULT_MODEL);
        assert_eq!(llama.documents, ["a", "b"]);
        assert_eq!(llama.top, Some(1));
        let tei = parse(
            &json!({"query": "q", "texts": ["a"], "raw_scores": true, "model": "m"}),
            &limits,
        )
        .unwrap();
        assert_eq!(tei.model, "m");
        assert_eq!(
            tei.dialect,
            Dialect::Texts {
                raw_scores: true,
                return_text: false
            }
        );
        for (body, param) in [
            (json!({"documents": ["a"]}), "query"),
            (json!({"query": "", "documents": ["a"]}), "query"),
            (json!({"query": "q"}), "documents"),
            (json!({"query": "q", "documents": []}), "documents"),
            (json!({"query": "q", "documents": [3]}), "documents[0]"),
            (
                json!({"query": "q", "documents": ["a"], "top_n": 0}),
                "top_n",
            ),
            (
                json!({"query": "q", "texts": ["a"], "truncate": true}),
                "truncate",
            ),
        ] {
            let error = parse(&body, &limits).err().expect("refused");
            assert_eq!(error.status(), 400, "{body}");
            assert_eq!(error.body()["error"]["param"], param, "{body}");
        }
    }
}
