//! Per-model input/output JSON Schemas (spec §3), served by `/ai/models/schema` and used by
//! [`crate::validate_input`].

mod media;
mod retrieval;
mod text;

pub use media::{AURA_1_SPEAKERS, AURA_2_EN_SPEAKERS, AURA_2_ES_SPEAKERS};

use kiln_core::Task;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::entry::CatalogEntry;

/// Which schema family a model speaks. data/catalog.json names it per model (kebab-case);
/// models without one get their task's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemaKind {
    TextGeneration,
    /// Newer OpenAI-style models: classic input, `chat.completion` / `text_completion` answers.
    ChatCompletions,
    /// gpt-oss: also takes the Responses API's `input` and answers with a Responses object.
    Responses,
    /// Evaluation models whose input shape is not public: any object.
    Clef,
    /// Generic `{text: string | string[]}` embedders.
    Embeddings,
    Bge,
    BgeM3,
    Qwen3Embedding,
    TextClassification,
    Reranker,
    Summarization,
    M2m100,
    Indictrans2,
    Whisper,
    WhisperTurbo,
    DeepgramNova,
    DeepgramFlux,
    SmartTurn,
    Melotts,
    #[serde(rename = "aura-1")]
    Aura1,
    #[serde(rename = "aura-2-en")]
    Aura2En,
    #[serde(rename = "aura-2-es")]
    Aura2Es,
    StableDiffusion,
    #[serde(rename = "flux-1-schnell")]
    Flux1Schnell,
    LucidOrigin,
    Phoenix,
    #[serde(rename = "flux-2")]
    Flux2,
    ImageToText,
    ImageClassification,
    ObjectDetection,
}

impl SchemaKind {
    pub const ALL: [SchemaKind; 30] = [
        SchemaKind::TextGeneration,
        SchemaKind::ChatCompletions,
        SchemaKind::Responses,
        SchemaKind::Clef,
        SchemaKind::Embeddings,
        SchemaKind::Bge,
        SchemaKind::BgeM3,
        SchemaKind::Qwen3Embedding,
        SchemaKind::TextClassification,
        SchemaKind::Reranker,
        SchemaKind::Summarization,
        SchemaKind::M2m100,
        SchemaKind::Indictrans2,
        SchemaKind::Whisper,
        SchemaKind::WhisperTurbo,
        SchemaKind::DeepgramNova,
        SchemaKind::DeepgramFlux,
        SchemaKind::SmartTurn,
        SchemaKind::Melotts,
        SchemaKind::Aura1,
        SchemaKind::Aura2En,
        SchemaKind::Aura2Es,
        SchemaKind::StableDiffusion,
        SchemaKind::Flux1Schnell,
        SchemaKind::LucidOrigin,
        SchemaKind::Phoenix,
        SchemaKind::Flux2,
        SchemaKind::ImageToText,
        SchemaKind::ImageClassification,
        SchemaKind::ObjectDetection,
    ];

    pub fn default_for(task: Task) -> SchemaKind {
        match task {
            Task::TextGeneration => SchemaKind::TextGeneration,
            Task::TextEmbeddings => SchemaKind::Embeddings,
            Task::TextClassification => SchemaKind::TextClassification,
            Task::TextToImage => SchemaKind::StableDiffusion,
            Task::SpeechRecognition => SchemaKind::Whisper,
            Task::TextToSpeech => SchemaKind::Melotts,
            Task::Translation => SchemaKind::M2m100,
            Task::Summarization => SchemaKind::Summarization,
            Task::ImageToText => SchemaKind::ImageToText,
            Task::ImageClassification => SchemaKind::ImageClassification,
            Task::ObjectDetection => SchemaKind::ObjectDetection,
            Task::VoiceActivityDetection => SchemaKind::SmartTurn,
        }
    }

    /// Whether the schema has an Async Batch `{requests:[...]}` branch when the model is
    /// `async_queue`-capable (spec §1.6).
    pub(crate) fn has_batch_form(self) -> bool {
        matches!(
            self,
            SchemaKind::TextGeneration
                | SchemaKind::ChatCompletions
                | SchemaKind::Responses
                | SchemaKind::Bge
                | SchemaKind::BgeM3
                | SchemaKind::M2m100
        )
    }

    /// Whether the model answers with OpenAI objects (`chat.completion`, `text_completion`,
    /// `response`) instead of `{response, usage}`.
    pub fn answers_openai_objects(self) -> bool {
        matches!(self, SchemaKind::ChatCompletions | SchemaKind::Responses)
    }

    /// Whether the model takes the Responses API's `input`/`instructions` (gpt-oss).
    pub fn takes_responses_input(self) -> bool {
        self == SchemaKind::Responses
    }

    /// The input schema; `batch` adds the Async Batch branch where the family has one.
    pub fn input_schema(self, batch: bool) -> Value {
        let single = match self {
            SchemaKind::TextGeneration | SchemaKind::ChatCompletions => text::generation_input(),
            SchemaKind::Responses => text::responses_input(),
            SchemaKind::Clef => json!({"type": "object"}),
            SchemaKind::ImageToText => text::image_to_text_input(),
            SchemaKind::Embeddings => retrieval::embeddings_input(),
            SchemaKind::Bge => retrieval::bge_input(),
            SchemaKind::BgeM3 => retrieval::bge_m3_input(),
            SchemaKind::Qwen3Embedding => retrieval::qwen3_embedding_input(),
            SchemaKind::TextClassification => retrieval::text_classification_input(),
            SchemaKind::Reranker => retrieval::reranker_input(),
            SchemaKind::Summarization => retrieval::summarization_input(),
            SchemaKind::M2m100 => retrieval::m2m100_input(),
            SchemaKind::Indictrans2 => retrieval::indictrans2_input(),
            SchemaKind::Whisper => media::whisper_input(),
            SchemaKind::WhisperTurbo => media::whisper_turbo_input(),
            SchemaKind::DeepgramNova => media::deepgram_nova_input(),
            SchemaKind::DeepgramFlux => media::deepgram_flux_input(),
            SchemaKind::SmartTurn => media::smart_turn_input(),
            SchemaKind::Melotts => media::melotts_input(),
            SchemaKind::Aura1 => media::aura_input(Some(media::AURA_1_SPEAKERS)),
            SchemaKind::Aura2En => media::aura_input(None),
            SchemaKind::Aura2Es => media::aura_input(Some(media::AURA_2_ES_SPEAKERS)),
            SchemaKind::StableDiffusion => media::stable_diffusion_input(),
            SchemaKind::Flux1Schnell => media::flux_1_schnell_input(),
            SchemaKind::LucidOrigin => media::lucid_origin_input(),
            SchemaKind::Phoenix => media::phoenix_input(),
            SchemaKind::Flux2 => media::flux_2_input(),
            SchemaKind::ImageClassification | SchemaKind::ObjectDetection => media::image_input(),
        };
        if batch && self.has_batch_form() {
            with_batch_branch(single)
        } else {
            single
        }
    }

    pub fn output_schema(self) -> Value {
        match self {
            SchemaKind::TextGeneration => text::generation_output(),
            SchemaKind::ChatCompletions => text::openai_style_output(false),
            SchemaKind::Responses => text::openai_style_output(true),
            SchemaKind::Clef => json!({"type": "object"}),
            SchemaKind::ImageToText => text::image_to_text_output(),
            SchemaKind::Embeddings | SchemaKind::Bge | SchemaKind::Qwen3Embedding => {
                retrieval::embeddings_output()
            }
            SchemaKind::BgeM3 => retrieval::bge_m3_output(),
            SchemaKind::TextClassification => retrieval::text_classification_output(),
            SchemaKind::Reranker => retrieval::reranker_output(),
            SchemaKind::Summarization => retrieval::summarization_output(),
            SchemaKind::M2m100 => retrieval::m2m100_output(),
            SchemaKind::Indictrans2 => retrieval::indictrans2_output(),
            SchemaKind::Whisper => media::whisper_output(),
            SchemaKind::WhisperTurbo => media::whisper_turbo_output(),
            SchemaKind::DeepgramNova | SchemaKind::DeepgramFlux => media::deepgram_output(),
            SchemaKind::SmartTurn => media::smart_turn_output(),
            SchemaKind::Melotts => media::melotts_output(),
            SchemaKind::Aura1 | SchemaKind::Aura2En | SchemaKind::Aura2Es => {
                media::binary_output("audio/mpeg")
            }
            SchemaKind::StableDiffusion => media::binary_output("image/png"),
            SchemaKind::Phoenix => media::binary_output("image/jpeg"),
            SchemaKind::Flux1Schnell | SchemaKind::LucidOrigin | SchemaKind::Flux2 => {
                media::base64_image_output()
            }
            SchemaKind::ImageClassification => media::image_classification_output(),
            SchemaKind::ObjectDetection => media::object_detection_output(),
        }
    }
}

/// Whether a model's served schema includes the Async Batch branch.
pub(crate) fn batch_enabled(entry: &CatalogEntry) -> bool {
    entry.schema.has_batch_form() && entry.has_property("async_queue")
}

/// `{"input": <JSON Schema>, "output": <JSON Schema>}` for `/ai/models/schema?model=`.
pub fn schema_for(entry: &CatalogEntry) -> Value {
    json!({
        // Optional properties take `null` too: it is accepted as absent (see `nulls`).
        "input": crate::with_nullable_optionals(&entry.schema.input_schema(batch_enabled(entry))),
        "output": entry.schema.output_schema(),
    })
}

/// Adds `{requests:[<single input>...]}` as a further `oneOf` branch. Batch items may carry an
/// `external_reference` that is echoed back.
fn with_batch_branch(single: Value) -> Value {
    let mut items: Vec<Value> = match &single {
        Value::Object(map) => match map.get("oneOf") {
            Some(Value::Array(branches)) => branches.clone(),
            _ => vec![single.clone()],
        },
        _ => vec![single.clone()],
    };
    // Raw binary bodies cannot appear inside a JSON batch.
    items.retain(|branch| branch.get("type") == Some(&json!("object")));
    for item in &mut items {
        if let Some(Value::Object(properties)) = item.get_mut("properties") {
            properties.insert("external_reference".into(), json!({"type": "string"}));
        }
    }
    let batch = json!({
        "type": "object",
        "title": "Async Batch",
        "properties": {
            "requests": {"type": "array", "minItems": 1, "items": {"type": "object", "oneOf": items}}
        },
        "required": ["requests"]
    });
    let mut branches = match single {
        Value::Object(mut map) => match map.remove("oneOf") {
            Some(Value::Array(branches)) => branches,
            Some(other) => vec![other],
            None => vec![Value::Object(map)],
        },
        other => vec![other],
    };
    branches.push(batch);
    json!({"type": "object", "oneOf": branches})
}

/// Number limits shared by several families.
pub(crate) fn integer(minimum: i64, maximum: i64) -> Value {
    json!({"type": "integer", "minimum": minimum, "maximum": maximum})
}

pub(crate) fn number(minimum: f64, maximum: f64) -> Value {
    json!({"type": "number", "minimum": minimum, "maximum": maximum})
}

/// A non-empty string, or a non-empty array of at most `max_items` non-empty strings.
pub(crate) fn text_or_texts(max_items: u64) -> Value {
    json!({
        "type": ["string", "array"],
        "minLength": 1,
        "minItems": 1,
        "maxItems": max_items,
        "items": {"type": "string", "minLength": 1}
    })
}

/// Image or audio bytes: an array of uint8 values or a (base64) string.
pub(crate) fn bytes() -> Value {
    json!({
        "type": ["array", "string"],
        "items": {"type": "integer", "minimum": 0, "maximum": 255}
    })
}

/// The raw-body alternative (`--data-binary @file`).
pub(crate) fn binary_body() -> Value {
    json!({"type": "string", "format": "binary"})
}
