//! Text embeddings in the input shapes of spec §3.2 (each id's schema has admitted its own):
//!
//! - `{text, pooling?}` → `{shape, data, pooling}` (every embeddings id);
//! - bge-m3's `{query?, contexts: [{text}]}` → contexts only: `{response: vectors, shape,
//!   pooling}`; with a query: `{response: [{id, score}]}`, contexts ranked by cosine similarity;
//! - qwen3-embedding's `{queries?, documents?, text?, instruction?}` → `{shape, data}`, the
//!   queries' vectors first, then the documents' (`text` is another name for `documents`).
//!
//! Queries are embedded with the serving model's query convention (EmbeddingGemma's query
//! prompt); `instruction` belongs to instruction-tuned embedders (Qwen3-Embedding), and no
//! model Kiln serves takes one, so it is checked by the schema and not prepended.

use axum::response::{IntoResponse, Response};
use kiln_core::{KilnError, KilnResult, Pooling, Usage};
use kiln_scheduler::{Admission, EmbeddingInput, EmbeddingWorker};
use serde_json::{json, Value};

use crate::envelope::success;
use crate::offload::{off_runtime_if, INLINE_BYTES};
use crate::platform::{Meter, ReportedUsage};

/// What a request asks for, once its shape is known.
enum Request {
    /// `text`: vectors in `data`.
    Texts(Vec<String>),
    /// bge-m3 `contexts` without a query: vectors in `response`.
    Contexts(Vec<String>),
    /// bge-m3 `query` + `contexts`: the contexts ranked against the query.
    Ranking {
        query: String,
        contexts: Vec<String>,
    },
    /// qwen3-embedding `queries` and `documents`: vectors in `data`, queries first.
    QueriesAndDocuments {
        queries: Vec<String>,
        documents: Vec<String>,
    },
}

pub async fn run(
    worker: &EmbeddingWorker,
    input: &Value,
    admission: Admission,
    meter: &Meter,
) -> KilnResult<Response> {
    let request = request_of(input)?;
    let pooling = match input.get("pooling").and_then(Value::as_str) {
        None | Some("mean") => Pooling::Mean,
        Some("cls") => Pooling::Cls,
        Some(other) => {
            return Err(KilnError::bad_input(format!(
                "'/pooling' must be \"mean\" or \"cls\", not {other:?}"
            )))
        }
    };
    let dimensions = worker.dimensions();
    let mut tokens = 0u32;
    let embed = |input: EmbeddingInput| worker.embed_input(input, pooling, admission);
    let result = match request {
        Request::Texts(texts) => {
            let output = embed(EmbeddingInput::Texts(texts)).await?;
            tokens = tokens.saturating_add(output.prompt_tokens);
            Answer::Vectors {
                field: "data",
                vectors: output.vectors,
            }
        }
        Request::Contexts(contexts) => {
            let output = embed(EmbeddingInput::Texts(contexts)).await?;
            tokens = tokens.saturating_add(output.prompt_tokens);
            Answer::Vectors {
                field: "response",
                vectors: output.vectors,
            }
        }
        Request::Ranking { query, contexts } => {
            let asked = embed(EmbeddingInput::Queries(vec![query])).await?;
            let found = embed(EmbeddingInput::Texts(contexts)).await?;
            tokens = tokens
                .saturating_add(asked.prompt_tokens)
                .saturating_add(found.prompt_tokens);
            let query = asked.vectors.into_iter().next().unwrap_or_default();
            Answer::Ranked(rank(&query, &found.vectors))
        }
        Request::QueriesAndDocuments { queries, documents } => {
            let mut vectors = Vec::with_capacity(queries.len() + documents.len());
            for input in [
                EmbeddingInput::Queries(queries),
                EmbeddingInput::Texts(documents),
            ] {
                if input.is_empty() {
                    continue;
                }
                let output = embed(input).await?;
                tokens = tokens.saturating_add(output.prompt_tokens);
                vectors.extend(output.vectors);
            }
            Answer::Vectors {
                field: "data",
                vectors,
            }
        }
    };
    let usage = Usage::new(tokens, 0);
    meter.charge_tokens(&usage);
    // Each float is about ten bytes of JSON: many texts make megabytes to write.
    let floats = result.floats();
    let written = off_runtime_if(floats * 10 > INLINE_BYTES, "embedding output", move || {
        Ok(success(result.into_json(dimensions, pooling)).into_response())
    });
    let mut response = written.await?;
    response.extensions_mut().insert(ReportedUsage(usage));
    Ok(response)
}

enum Answer {
    Vectors {
        field: &'static str,
        vectors: Vec<Vec<f32>>,
    },
    /// `(context index, score)`, best first.
    Ranked(Vec<(usize, f32)>),
}

impl Answer {
    fn floats(&self) -> usize {
        match self {
            Answer::Vectors { vectors, .. } => vectors.iter().map(Vec::len).sum(),
            Answer::Ranked(ranked) => ranked.len(),
        }
    }

    fn into_json(self, dimensions: usize, pooling: Pooling) -> Value {
        match self {
            Answer::Vectors { field, vectors } => {
                let shape = [vectors.len(), dimensions];
                let mut answer = json!({"shape": shape, "pooling": pooling.as_str()});
                answer[field] = json!(vectors);
                answer
            }
            Answer::Ranked(ranked) => json!({
                "response": ranked
                    .into_iter()
                    .map(|(id, score)| json!({"id": id, "score": score}))
                    .collect::<Vec<_>>()
            }),
        }
    }
}

/// Contexts by cosine similarity to the query, best first (ties keep the contexts' order).
fn rank(query: &[f32], contexts: &[Vec<f32>]) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = contexts
        .iter()
        .enumerate()
        .map(|(id, context)| (id, cosine(query, context)))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let denominator = norm(a) * norm(b);
    if denominator > 0.0 {
        dot / denominator
    } else {
        0.0
    }
}

/// The request's shape, from the fields its schema admitted.
fn request_of(input: &Value) -> KilnResult<Request> {
    if let Some(contexts) = input.get("contexts") {
        let contexts = context_texts(contexts)?;
        return Ok(match input.get("query").and_then(Value::as_str) {
            Some(query) => Request::Ranking {
                query: query.to_owned(),
                contexts,
            },
            None => Request::Contexts(contexts),
        });
    }
    if input.get("queries").is_some() || input.get("documents").is_some() {
        let queries = optional_texts(input, "queries")?;
        let mut documents = optional_texts(input, "documents")?;
        documents.extend(optional_texts(input, "text")?);
        return Ok(Request::QueriesAndDocuments { queries, documents });
    }
    match input.get("text") {
        Some(_) => Ok(Request::Texts(optional_texts(input, "text")?)),
        None => Err(KilnError::bad_input(
            "required properties at '/' are 'text'",
        )),
    }
}

/// `field` as a string or an array of strings; absent is none.
fn optional_texts(input: &Value, field: &str) -> KilnResult<Vec<String>> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    KilnError::bad_input(format!(
                        "Type mismatch of '/{field}/{i}', expected 'string'"
                    ))
                })
            })
            .collect(),
        Some(_) => Err(KilnError::bad_input(format!(
            "Type mismatch of '/{field}', expected 'string' or 'array'"
        ))),
    }
}

/// bge-m3's `contexts: [{text}]`.
fn context_texts(contexts: &Value) -> KilnResult<Vec<String>> {
    let items = contexts
        .as_array()
        .filter(|items| !items.is_empty())
        .ok_or_else(|| KilnError::bad_input("'/contexts' must be a non-empty array of {text}"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.get("text")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    KilnError::bad_input(format!("'/contexts/{i}/text' must be a string"))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_rank_by_cosine_best_first() {
        let query = [1.0, 0.0];
        let contexts = vec![vec![0.0, 1.0], vec![2.0, 0.1], vec![1.0, 1.0]];
        let ranked = rank(&query, &contexts);
        let order: Vec<usize> = ranked.iter().map(|(id, _)| *id).collect();
        assert_eq!(order, [1, 2, 0]);
        assert!((ranked[0].1 - 0.99875).abs() < 1e-4, "{ranked:?}");
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn each_schema_shape_is_told_apart() {
        let shape = |input: Value| match request_of(&input).expect("a shape") {
            Request::Texts(texts) => format!("texts {}", texts.len()),
            Request::Contexts(contexts) => format!("contexts {}", contexts.len()),
            Request::Ranking { contexts, .. } => format!("ranking {}", contexts.len()),
            Request::QueriesAndDocuments { queries, documents } => {
                format!("qd {} {}", queries.len(), documents.len())
            }
        };
        assert_eq!(shape(json!({"text": ["a", "b"]})), "texts 2");
        assert_eq!(shape(json!({"contexts": [{"text": "a"}]})), "contexts 1");
        assert_eq!(
            shape(json!({"query": "q", "contexts": [{"text": "a"}, {"text": "b"}]})),
            "ranking 2"
        );
        assert_eq!(
            shape(json!({"queries": "q", "documents": ["a", "b"], "text": "c"})),
            "qd 1 3"
        );
        assert!(request_of(&json!({"contexts": []})).is_err());
        assert!(request_of(&json!({})).is_err());
    }
}
