//! Text embeddings: `{text, pooling}` → `{shape, data, pooling}`.

use axum::response::{IntoResponse, Response};
use kiln_core::{KilnError, KilnResult, Pooling};
use kiln_scheduler::{Admission, EmbeddingWorker};
use serde_json::{json, Value};

use crate::envelope::success;
use crate::offload::{off_runtime_if, INLINE_BYTES};
use crate::platform::{Meter, ReportedUsage};

pub async fn run(
    worker: &EmbeddingWorker,
    input: &Value,
    admission: Admission,
    meter: &Meter,
) -> KilnResult<Response> {
    let texts = texts_of(input)?;
    let pooling = match input.get("pooling").and_then(Value::as_str) {
        None | Some("mean") => Pooling::Mean,
        Some("cls") => Pooling::Cls,
        Some(other) => {
            return Err(KilnError::bad_input(format!(
                "'/pooling' must be \"mean\" or \"cls\", not {other:?}"
            )))
        }
    };
    let count = texts.len();
    let output = worker.embed(texts, pooling, admission).await?;
    let usage = kiln_core::Usage::new(output.prompt_tokens, 0);
    meter.charge_tokens(&usage);
    let shape = [count, worker.dimensions()];
    // Each float is about ten bytes of JSON: many texts make megabytes to write.
    let floats: usize = output.vectors.iter().map(Vec::len).sum();
    let vectors = output.vectors;
    let written = off_runtime_if(floats * 10 > INLINE_BYTES, "embedding output", move || {
        let result = json!({"shape": shape, "data": vectors, "pooling": pooling.as_str()});
        Ok(success(result).into_response())
    });
    let mut response = written.await?;
    response.extensions_mut().insert(ReportedUsage(usage));
    Ok(response)
}

/// `text` is a string or an array of strings (the schema has checked lengths and types).
fn texts_of(input: &Value) -> KilnResult<Vec<String>> {
    match input.get("text") {
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    KilnError::bad_input(format!("Type mismatch of '/text/{i}', expected 'string'"))
                })
            })
            .collect(),
        _ => Err(KilnError::bad_input(
            "required properties at '/' are 'text'",
        )),
    }
}
