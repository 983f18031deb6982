//! Bounds on every input that drives work or memory, checked before the work starts.
//!
//! One table per class of input, each a `[limits.<class>]` table of `kiln.toml`; a field left
//! out keeps its default. A request over a bound gets 400 / 5006 (413 / 3006 for sizes) with a
//! message naming the limit, so an operator can find the setting that refused it.

use serde::{Deserialize, Serialize};

/// Every input bound, by class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputLimits {
    pub audio: AudioLimits,
    pub image: ImageLimits,
    pub speech_synthesis: SpeechSynthesisLimits,
    pub schema: SchemaLimits,
    pub batch: BatchLimits,
    pub vectorize: VectorizeLimits,
    pub lora: LoraLimits,
    pub text_classification: TextClassificationLimits,
}

/// Audio uploads (speech recognition): what a header may declare and how much is decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioLimits {
    /// Decoding stops here; longer audio is refused rather than decoded first and checked after.
    pub max_seconds: f64,
    /// Lowest sample rate a header may declare (Hz).
    pub min_sample_rate: u32,
    /// Highest sample rate a header may declare (Hz).
    pub max_sample_rate: u32,
    /// Most channels a header may declare.
    pub max_channels: u32,
    /// Largest decoded size of audio sent inside JSON (a byte array or base64), in bytes.
    pub max_decoded_bytes: usize,
}

impl Default for AudioLimits {
    fn default() -> Self {
        Self {
            max_seconds: 1800.0,
            min_sample_rate: 1000,
            max_sample_rate: 384_000,
            max_channels: 16,
            max_decoded_bytes: 25 * 1024 * 1024,
        }
    }
}

/// Images (classification, image-to-text): checked from the header, before pixels are decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageLimits {
    /// Widest or tallest image accepted, in pixels.
    pub max_dimension: u32,
    /// Most pixels (width × height) accepted.
    pub max_pixels: u64,
    /// Largest decoded size of a binary input sent inside JSON (a byte array or base64).
    pub max_decoded_bytes: usize,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_dimension: 16_384,
            max_pixels: 40_000_000,
            max_decoded_bytes: 25 * 1024 * 1024,
        }
    }
}

/// Text-to-speech input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpeechSynthesisLimits {
    /// Longest text spoken in one request, in characters.
    pub max_characters: usize,
    /// Phonemizer (`espeak-ng`) processes that may run at once, over all requests.
    pub max_phonemizer_processes: usize,
}

impl Default for SpeechSynthesisLimits {
    fn default() -> Self {
        Self {
            max_characters: 4096,
            max_phonemizer_processes: 2,
        }
    }
}

/// JSON Schemas a client sends (JSON mode, tool parameters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchemaLimits {
    /// Largest schema, serialized, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of objects and arrays in a schema.
    pub max_depth: usize,
    /// Most tools in one request.
    pub max_tools: usize,
    /// Most `$ref`s in one schema: a chain of them nests definitions inside the compilers.
    pub max_refs: usize,
    /// Most subschemas (objects and booleans in schema positions) in one schema. The compilers
    /// recurse at most once per subschema on a path, using up to ~8 KiB of stack each: keep
    /// this × 8 KiB well under the 64 MiB their threads get.
    pub max_subschemas: usize,
}

impl Default for SchemaLimits {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024,
            max_depth: 32,
            max_tools: 128,
            max_refs: 128,
            max_subschemas: 4096,
        }
    }
}

/// Asynchronous batches (`?queueRequest=true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchLimits {
    /// Most requests in one batch.
    pub max_requests: usize,
    /// Most bytes one batch may store (its items' inputs, as stored).
    pub max_stored_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_requests: 1000,
            max_stored_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Vectorize writes and open indexes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VectorizeLimits {
    /// Most vectors in one insert or upsert (JSON or NDJSON).
    pub max_vectors_per_write: usize,
    /// Indexes kept open (a thread and files each); idle ones beyond this are closed.
    pub max_open_indexes: usize,
    /// Most memory one insert or upsert may take once parsed (values, ids, namespaces and
    /// metadata as held in memory), in bytes; 5000 vectors of 1536 dimensions take 31 MB.
    pub max_write_bytes: usize,
}

impl Default for VectorizeLimits {
    fn default() -> Self {
        Self {
            max_vectors_per_write: 5000,
            max_open_indexes: 64,
            max_write_bytes: 128 * 1024 * 1024,
        }
    }
}

/// LoRA adapter uploads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraLimits {
    /// Most tensors in one adapter file.
    pub max_tensors: usize,
    /// Most elements in one adapter tensor.
    pub max_tensor_elements: u64,
}

impl Default for LoraLimits {
    fn default() -> Self {
        Self {
            max_tensors: 4096,
            max_tensor_elements: 64 * 1024 * 1024,
        }
    }
}

/// Text classification and reranking: the work a request asks for grows with its contexts and
/// the length of its texts (each is tokenized whole before its token count can be checked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextClassificationLimits {
    /// Most contexts (documents) one rerank request may score; also the largest `top_k`.
    pub max_contexts: usize,
    /// Longest text, query or context, in bytes (the model's own token limit applies too).
    pub max_text_bytes: usize,
}

impl Default for TextClassificationLimits {
    fn default() -> Self {
        Self {
            max_contexts: 1000,
            max_text_bytes: 64 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_table_keeps_the_other_defaults() {
        let limits: InputLimits = serde_json::from_value(serde_json::json!({
            "audio": {"max_seconds": 60.0}
        }))
        .expect("parses");
        assert_eq!(limits.audio.max_seconds, 60.0);
        assert_eq!(
            limits.audio.max_sample_rate,
            AudioLimits::default().max_sample_rate
        );
        assert_eq!(limits.image, ImageLimits::default());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let result: Result<InputLimits, _> =
            serde_json::from_value(serde_json::json!({"audio": {"max_secs": 1}}));
        assert!(result.is_err());
    }
}
