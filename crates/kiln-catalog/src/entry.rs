//! One model of the catalog, as Workers AI describes it (spec §1.5).

use kiln_core::Task;
use serde::Serialize;
use serde_json::{json, Value};

use crate::schema::SchemaKind;

/// One `{property_id, value}` pair. Values are strings except `price` (an array) and
/// `reasoning_effort` (an object), exactly as Workers AI reports them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Property {
    pub property_id: String,
    pub value: Value,
}

impl Property {
    pub fn text(property_id: &str, value: impl Into<String>) -> Self {
        Self {
            property_id: property_id.to_owned(),
            value: Value::String(value.into()),
        }
    }
}

/// One line of a model's price list, with its neuron equivalent.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitRate {
    /// Workers AI's wording, e.g. `per M input tokens`, `per audio minute`, `per step`.
    pub unit: String,
    /// US dollars per unit.
    pub price_usd: f64,
    /// Neurons per unit (dollars / $0.000011).
    pub neurons: f64,
}

/// Neuron rates for cost accounting (spec §7).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NeuronRates {
    pub input_per_million_tokens: Option<f64>,
    pub cached_input_per_million_tokens: Option<f64>,
    pub output_per_million_tokens: Option<f64>,
    /// Every priced unit, token-based ones included (audio minutes, image tiles, steps...).
    pub units: Vec<UnitRate>,
}

pub(crate) const UNIT_INPUT_TOKENS: &str = "per M input tokens";
pub(crate) const UNIT_CACHED_INPUT_TOKENS: &str = "per M cached input tokens";
pub(crate) const UNIT_OUTPUT_TOKENS: &str = "per M output tokens";

impl NeuronRates {
    pub(crate) fn from_units(units: Vec<UnitRate>) -> Self {
        let find = |unit: &str| {
            units
                .iter()
                .find(|rate| rate.unit == unit)
                .map(|rate| rate.neurons)
        };
        Self {
            input_per_million_tokens: find(UNIT_INPUT_TOKENS),
            cached_input_per_million_tokens: find(UNIT_CACHED_INPUT_TOKENS),
            output_per_million_tokens: find(UNIT_OUTPUT_TOKENS),
            units,
        }
    }

    /// US dollars a text request costs at the public price (AI Gateway's cost estimate).
    pub fn usd_for_tokens(&self, prompt_tokens: u64, output_tokens: u64) -> f64 {
        let price = |unit: &str| {
            self.units
                .iter()
                .find(|rate| rate.unit == unit)
                .map_or(0.0, |rate| rate.price_usd)
        };
        (prompt_tokens as f64 * price(UNIT_INPUT_TOKENS)
            + output_tokens as f64 * price(UNIT_OUTPUT_TOKENS))
            / 1_000_000.0
    }

    /// Neurons a text request costs. Cached prompt tokens use the cached rate where the model
    /// has one and the plain input rate otherwise.
    pub fn neurons_for_tokens(
        &self,
        prompt_tokens: u64,
        cached_tokens: u64,
        output_tokens: u64,
    ) -> f64 {
        let cached = cached_tokens.min(prompt_tokens);
        let input_rate = self.input_per_million_tokens.unwrap_or(0.0);
        let cached_rate = self.cached_input_per_million_tokens.unwrap_or(input_rate);
        let output_rate = self.output_per_million_tokens.unwrap_or(0.0);
        ((prompt_tokens - cached) as f64 * input_rate
            + cached as f64 * cached_rate
            + output_tokens as f64 * output_rate)
            / 1_000_000.0
    }
}

/// A catalog model.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    /// The model id, e.g. `@cf/meta/llama-3.1-8b-instruct`.
    pub name: String,
    /// Stable uuid-shaped id derived from `name`.
    pub id: String,
    pub task: Task,
    pub description: String,
    pub properties: Vec<Property>,
    pub deprecated: bool,
    pub beta: bool,
    pub neurons: Option<NeuronRates>,
    /// Always 1 (Workers AI's "Cloudflare-hosted" source).
    pub source: u32,
    pub created_at: String,
    pub tags: Vec<String>,
    /// Which input/output schema the model speaks.
    pub schema: SchemaKind,
}

impl CatalogEntry {
    pub fn property(&self, id: &str) -> Option<&Value> {
        self.properties
            .iter()
            .find(|p| p.property_id == id)
            .map(|p| &p.value)
    }

    pub fn context_window(&self) -> Option<u32> {
        self.numeric_property("context_window")
    }

    pub fn max_input_tokens(&self) -> Option<u32> {
        self.numeric_property("max_input_tokens")
    }

    pub fn output_dimensions(&self) -> Option<u32> {
        self.numeric_property("output_dimensions")
    }

    /// True when the model carries a boolean property set to `"true"`, e.g. `lora`.
    pub fn has_property(&self, id: &str) -> bool {
        self.property(id).and_then(Value::as_str) == Some("true")
    }

    /// The author segment: `meta` for `@cf/meta/llama-3.1-8b-instruct`.
    pub fn author(&self) -> &str {
        self.name.split('/').nth(1).unwrap_or("")
    }

    /// The `AiModelsSearchObject` of spec §1.5.
    pub fn to_search_object(&self) -> Value {
        json!({
            "id": self.id,
            "source": self.source,
            "name": self.name,
            "description": self.description,
            "task": task_object(self.task),
            "created_at": self.created_at,
            "tags": self.tags,
            "properties": self.properties,
        })
    }

    fn numeric_property(&self, id: &str) -> Option<u32> {
        self.property(id)?.as_str()?.parse().ok()
    }
}

/// `{id, name, description}` of a task, as search results and `/ai/tasks/search` show it.
pub fn task_object(task: Task) -> Value {
    json!({"id": task.id(), "name": task.name(), "description": task_description(task)})
}

pub fn task_description(task: Task) -> &'static str {
    match task {
        Task::TextGeneration => "Family of generative text models, such as large language models (LLM), that can be adapted for a variety of natural language tasks.",
        Task::TextEmbeddings => "Feature extraction models transform raw data into numerical features that can be processed while preserving the information in the original dataset. These models are ideal as part of building vector search applications or Retrieval Augmented Generation workflows with Large Language Models (LLM).",
        Task::TextClassification => "Sentiment analysis or text classification is a common NLP task that classifies a text input into labels or classes.",
        Task::TextToImage => "Generates images from input text. These models can be used to generate and modify images based on text prompts.",
        Task::SpeechRecognition => "Automatic speech recognition (ASR) models convert a speech signal, typically an audio input, to text.",
        Task::TextToSpeech => "Text-to-Speech (TTS) is the task of generating natural sounding speech given text input. TTS models can be extended to have a single model that generates speech for multiple speakers and multiple languages.",
        Task::Translation => "Translation models convert a sequence of text from one language to another.",
        Task::Summarization => "Summarization is the task of producing a shorter version of a document while preserving its important information. Some models can extract text from the original input, while other models can generate entirely new text.",
        Task::ImageToText => "Image to text models output a text from a given image. Image captioning or optical character recognition can be considered as the most common applications of image to text.",
        Task::ImageClassification => "Image classification models take an image input and assigns it labels or classes.",
        Task::ObjectDetection => "Object detection models can detect instances of objects like persons, faces, license plates, or others in an image. This task takes an image as input and returns a list of detected objects, each one containing a label, a probability score, and its surrounding box coordinates.",
        Task::VoiceActivityDetection => "Voice activity and turn detection models decide from audio whether a speaker is talking or has finished their turn.",
    }
}

/// A uuid-shaped id that depends only on `seed`: two FNV-1a 64-bit hashes with different
/// offsets give 128 bits, stamped as a version-8 (custom) uuid. FNV is fixed by definition,
/// so the id survives compiler and platform changes, unlike `std`'s hasher.
pub fn stable_id(seed: &str) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let fnv = |offset: u64| {
        seed.bytes().fold(offset, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        })
    };
    let high = fnv(0xcbf2_9ce4_8422_2325);
    let low = fnv(0x6c62_272e_07bb_0142);
    let high = (high & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_8000;
    let low = (low & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_id_is_uuid_shaped_and_deterministic() {
        let id = stable_id("@cf/meta/llama-3.1-8b-instruct");
        assert_eq!(id, stable_id("@cf/meta/llama-3.1-8b-instruct"));
        assert_ne!(id, stable_id("@cf/meta/llama-3.1-8b-instruct-fp8"));
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, vec![8, 4, 4, 4, 12]);
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(&id[14..15], "8", "version nibble");
    }

    #[test]
    fn neurons_for_tokens_uses_cached_rate() {
        let rates = NeuronRates::from_units(vec![
            UnitRate {
                unit: UNIT_INPUT_TOKENS.into(),
                price_usd: 0.95,
                neurons: 86364.0,
            },
            UnitRate {
                unit: UNIT_CACHED_INPUT_TOKENS.into(),
                price_usd: 0.16,
                neurons: 14545.0,
            },
            UnitRate {
                unit: UNIT_OUTPUT_TOKENS.into(),
                price_usd: 4.0,
                neurons: 363636.0,
            },
        ]);
        let cost = rates.neurons_for_tokens(1_000_000, 500_000, 1_000_000);
        assert!(
            (cost - (43182.0 + 7272.5 + 363636.0)).abs() < 1e-6,
            "{cost}"
        );
    }
}
