//! Text classification and reranking in Workers AI's shapes (spec §3.3, §3.4):
//! `{text}` → `[{label, score}]` (softmax, best first), and `{query, contexts: [{text}], top_k}`
//! → `{response: [{id, score}]}` (the cross-encoder's logit, best first). The bounds and the
//! ranking are shared with `/v1/rerank`.

use axum::response::{IntoResponse, Response};
use kiln_catalog::{CatalogEntry, SchemaKind};
use kiln_core::classify::softmax;
use kiln_core::limits::TextClassificationLimits;
use kiln_core::{ClassifierHead, ClassifierInput, KilnError, KilnResult, Usage};
use kiln_scheduler::{Admission, ClassifierWorker};
use serde_json::{json, Value};

use crate::envelope::success;
use crate::platform::{Meter, ReportedUsage};

/// What a request for a classifier asks of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Labels with probabilities.
    Labels,
    /// Contexts ranked against a query.
    Rerank,
}

/// The shape a catalog entry's schema asks for; `None` for other schemas.
pub(crate) fn shape_of(entry: &CatalogEntry) -> Option<Shape> {
    match entry.schema {
        SchemaKind::TextClassification => Some(Shape::Labels),
        SchemaKind::Reranker => Some(Shape::Rerank),
        _ => None,
    }
}

/// What to install for a catalog id no local model serves, for the 5007 answer.
pub(crate) fn install_hint(entry: &CatalogEntry) -> Option<&'static str> {
    Some(match shape_of(entry)? {
        Shape::Labels => {
            "install a DistilBertForSequenceClassification model (the architecture of \
             distilbert-sst-2) from a Hugging Face directory or repository: `kiln models pull \
             NAME --hf DIR_OR_ORG/REPO` (it then serves this id)"
        }
        Shape::Rerank => {
            "install a cross-encoder (XLMRobertaForSequenceClassification with one label, the \
             architecture of bge-reranker-base) from a Hugging Face directory or repository: \
             `kiln models pull NAME --hf DIR_OR_ORG/REPO` (it then serves this id)"
        }
    })
}

/// Refuses a request whose shape the serving model does not have (a sentiment classifier asked
/// to rerank, say), naming both.
pub(crate) fn check_head(
    worker: &ClassifierWorker,
    shape: Shape,
    requested: &str,
    local_model: &str,
) -> KilnResult<()> {
    match (shape, worker.head()) {
        (Shape::Labels, ClassifierHead::Labels(_)) | (Shape::Rerank, ClassifierHead::Relevance) => {
            Ok(())
        }
        (Shape::Labels, ClassifierHead::Relevance) => Err(KilnError::bad_input(format!(
            "{requested} is served by {local_model}, a reranker (cross-encoder); it cannot label \
             a text"
        ))),
        (Shape::Rerank, ClassifierHead::Labels(_)) => Err(KilnError::bad_input(format!(
            "{requested} is served by {local_model}, a text classifier; reranking needs a \
             cross-encoder (one output label)"
        ))),
    }
}

/// A text within `max_text_bytes` (the setting is named so an operator can find it). Its
/// tokens are counted, and bounded by the model, on the worker.
pub(crate) fn check_text(
    field: &str,
    text: &str,
    limits: &TextClassificationLimits,
) -> KilnResult<()> {
    if text.len() > limits.max_text_bytes {
        return Err(KilnError::bad_input(format!(
            "'{field}' is {} bytes; at most {} are accepted \
             (limits.text_classification.max_text_bytes)",
            text.len(),
            limits.max_text_bytes
        )));
    }
    Ok(())
}

/// A number of contexts within `max_contexts`.
pub(crate) fn check_context_count(
    field: &str,
    count: usize,
    limits: &TextClassificationLimits,
) -> KilnResult<()> {
    if count == 0 {
        return Err(KilnError::bad_input(format!("'{field}' is empty")));
    }
    if count > limits.max_contexts {
        return Err(KilnError::bad_input(format!(
            "'{field}' has {count} items; at most {} are accepted \
             (limits.text_classification.max_contexts)",
            limits.max_contexts
        )));
    }
    Ok(())
}

/// An optional `top_k`-like count: an integer from 1 to `max_contexts` (more than the contexts
/// returns them all). JSON numbers such as `2.0` or `1e3` count when they are whole.
pub(crate) fn top_count(
    field: &str,
    value: Option<&Value>,
    limits: &TextClassificationLimits,
) -> KilnResult<Option<usize>> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let bad = || {
        KilnError::bad_input(format!(
            "'{field}' must be an integer from 1 to {} (limits.text_classification.max_contexts), \
             not {value}",
            limits.max_contexts
        ))
    };
    let number = value.as_f64().ok_or_else(bad)?;
    if !number.is_finite() || number.fract() != 0.0 || number < 1.0 {
        return Err(bad());
    }
    if number > limits.max_contexts as f64 {
        return Err(bad());
    }
    // Whole and within 1..=max_contexts, so the conversion is exact.
    Ok(Some(number as usize))
}

/// The (query, passage) inputs of a rerank request.
pub(crate) fn pairs(query: &str, passages: &[String]) -> Vec<ClassifierInput> {
    passages
        .iter()
        .map(|passage| ClassifierInput::pair(query, passage.as_str()))
        .collect()
}

/// `(index, relevance logit)`, best first (ties keep input order), at most `top` of them.
pub(crate) fn ranked(logits: &[Vec<f32>], top: Option<usize>) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = logits
        .iter()
        .enumerate()
        .map(|(index, row)| (index, row.first().copied().unwrap_or(f32::NEG_INFINITY)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(top.unwrap_or(scored.len()));
    scored
}

/// Serves a Workers AI request (schema-validated) with a classifier.
pub(crate) async fn run(
    worker: &ClassifierWorker,
    entry: &CatalogEntry,
    (requested, local_model): (&str, &str),
    input: &Value,
    limits: &TextClassificationLimits,
    (admission, meter): (Admission, &Meter),
) -> KilnResult<Response> {
    let shape = shape_of(entry).ok_or_else(|| {
        KilnError::internal(format!("{} is not a text classification model", entry.name))
    })?;
    check_head(worker, shape, requested, local_model)?;
    let (result, usage) = match shape {
        Shape::Labels => classify(worker, input, limits, admission).await?,
        Shape::Rerank => rerank(worker, input, limits, admission).await?,
    };
    meter.charge_tokens(&usage);
    let mut response = success(result).into_response();
    response.extensions_mut().insert(ReportedUsage(usage));
    Ok(response)
}

async fn classify(
    worker: &ClassifierWorker,
    input: &Value,
    limits: &TextClassificationLimits,
    admission: Admission,
) -> KilnResult<(Value, Usage)> {
    let text = input
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| KilnError::bad_input("required properties at '/' are 'text'"))?;
    check_text("/text", text, limits)?;
    let ClassifierHead::Labels(labels) = worker.head() else {
        return Err(KilnError::internal("the classifier has no labels"));
    };
    let output = worker
        .classify(vec![ClassifierInput::single(text)], admission)
        .await?;
    let logits = output.logits.first().map(Vec::as_slice).unwrap_or_default();
    let mut scores: Vec<(&String, f32)> = labels.iter().zip(softmax(logits)).collect();
    scores.sort_by(|a, b| b.1.total_cmp(&a.1));
    let result = scores
        .into_iter()
        .map(|(label, score)| json!({"label": label, "score": score}))
        .collect();
    Ok((Value::Array(result), Usage::new(output.prompt_tokens(), 0)))
}

async fn rerank(
    worker: &ClassifierWorker,
    input: &Value,
    limits: &TextClassificationLimits,
    admission: Admission,
) -> KilnResult<(Value, Usage)> {
    let query = input
        .get("query")
        .and_then(Value::as_str)
        .ok_or_else(|| KilnError::bad_input("required properties at '/' are 'query'"))?;
    check_text("/query", query, limits)?;
    let contexts = input
        .get("contexts")
        .and_then(Value::as_array)
        .ok_or_else(|| KilnError::bad_input("required properties at '/' are 'contexts'"))?;
    check_context_count("/contexts", contexts.len(), limits)?;
    let passages = contexts
        .iter()
        .enumerate()
        .map(|(index, context)| {
            let field = format!("/contexts/{index}/text");
            let text = context.get("text").and_then(Value::as_str).ok_or_else(|| {
                KilnError::bad_input(format!("'{field}' is required and must be a string"))
            })?;
            check_text(&field, text, limits)?;
            Ok(text.to_owned())
        })
        .collect::<KilnResult<Vec<String>>>()?;
    let top_k = top_count("/top_k", input.get("top_k"), limits)?;
    let output = worker.classify(pairs(query, &passages), admission).await?;
    let response: Vec<Value> = ranked(&output.logits, top_k)
        .into_iter()
        .map(|(id, score)| json!({"id": id, "score": score}))
        .collect();
    Ok((
        json!({"response": response}),
        Usage::new(output.prompt_tokens(), 0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_counts_are_whole_numbers_within_the_limit() {
        let limits = TextClassificationLimits::default();
        let count = |value: Value| top_count("/top_k", Some(&value), &limits);
        assert_eq!(count(json!(3)).unwrap(), Some(3));
        assert_eq!(count(json!(2.0)).unwrap(), Some(2));
        assert_eq!(count(json!(1000)).unwrap(), Some(1000));
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!(1001),
            json!(1e30),
            json!("3"),
        ] {
            let error = count(bad.clone()).unwrap_err();
            assert_eq!(error.code(), 5006, "{bad}");
            assert!(error.message.contains("max_contexts"), "{}", error.message);
        }
        assert_eq!(top_count("/top_k", None, &limits).unwrap(), None);
        assert_eq!(
            top_count("/top_k", Some(&Value::Null), &limits).unwrap(),
            None
        );
    }

    #[test]
    fn ranking_is_best_first_stable_and_cut_at_top() {
        let logits = vec![vec![0.5], vec![2.0], vec![0.5], vec![-1.0]];
        assert_eq!(
            ranked(&logits, None),
            vec![(1, 2.0), (0, 0.5), (2, 0.5), (3, -1.0)]
        );
        assert_eq!(ranked(&logits, Some(2)), vec![(1, 2.0), (0, 0.5)]);
        assert_eq!(ranked(&logits, Some(10)).len(), 4);
    }

    #[test]
    fn texts_and_context_counts_are_bounded() {
        let limits = TextClassificationLimits {
            max_contexts: 2,
            max_text_bytes: 4,
        };
        assert!(check_text("/query", "abcd", &limits).is_ok());
        let error = check_text("/query", "abcde", &limits).unwrap_err();
        assert!(
            error.message.contains("max_text_bytes"),
            "{}",
            error.message
        );
        assert!(check_context_count("/contexts", 2, &limits).is_ok());
        assert!(check_context_count("/contexts", 0, &limits).is_err());
        assert!(check_context_count("/contexts", 3, &limits).is_err());
    }
}
