//! Image classification (spec §3.11): a binary body or `{image: number[]}` → `[{label, score}]`.

use axum::response::{IntoResponse, Response};
use kiln_core::media::MediaOutput;
use kiln_core::{KilnError, KilnResult, MediaRequest};
use kiln_scheduler::{Admission, MediaWorker};
use serde_json::json;

use super::{bytes_field, MediaInput};
use crate::envelope::success;
use crate::platform::Meter;

/// Workers AI answers with the top classes; five, as the model card shows.
const TOP_K: usize = 5;

pub async fn run(
    worker: &MediaWorker,
    input: MediaInput,
    max_decoded_bytes: usize,
    admission: Admission,
    meter: &Meter,
) -> KilnResult<Response> {
    let image = match input {
        MediaInput::Binary(bytes) => bytes.to_vec(),
        MediaInput::Json(value) => bytes_field(
            &value,
            "image",
            max_decoded_bytes,
            "limits.image.max_decoded_bytes",
        )?,
    };
    let output = worker
        .run(
            MediaRequest::Classify {
                image,
                top_k: TOP_K,
            },
            admission,
        )
        .await?;
    let MediaOutput::Labels(labels) = output else {
        return Err(KilnError::internal(
            "the classifier answered with something else",
        ));
    };
    meter.charge_units("images", 1.0);
    let result: Vec<_> = labels
        .iter()
        .map(|l| json!({"label": l.label, "score": l.score}))
        .collect();
    Ok(success(json!(result)).into_response())
}
