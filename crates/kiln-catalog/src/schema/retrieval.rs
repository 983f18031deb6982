//! Text-in schemas: embeddings (spec §3.2), classification and reranking (§3.3, §3.4),
//! summarization (§3.5) and translation (§3.6).

use serde_json::{json, Value};

use super::text_or_texts;

/// bge accepts at most 100 texts per call.
const MAX_EMBEDDING_TEXTS: u64 = 100;
/// qwen3-embedding accepts at most 32 queries and 32 documents.
const MAX_QWEN3_TEXTS: u64 = 32;

pub(super) fn embeddings_input() -> Value {
    json!({
        "type": "object",
        "properties": {"text": text_or_texts(MAX_EMBEDDING_TEXTS)},
        "required": ["text"]
    })
}

pub(super) fn bge_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "text": text_or_texts(MAX_EMBEDDING_TEXTS),
            "pooling": {
                "type": "string",
                "enum": ["mean", "cls"],
                "default": "mean",
                "description": "cls pooling is more accurate on long inputs but its vectors are not comparable with mean-pooled ones."
            }
        },
        "required": ["text"]
    })
}

pub(super) fn bge_m3_input() -> Value {
    let truncate = json!({"type": "boolean", "default": false});
    json!({
        "type": "object",
        "oneOf": [
            {
                "type": "object",
                "title": "Embedding",
                "properties": {"text": text_or_texts(MAX_EMBEDDING_TEXTS), "truncate_inputs": truncate},
                "required": ["text"]
            },
            {
                "type": "object",
                "title": "Query and Contexts",
                "properties": {
                    "query": {"type": "string", "minLength": 1},
                    "contexts": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "properties": {"text": {"type": "string", "minLength": 1}},
                            "required": ["text"]
                        }
                    },
                    "truncate_inputs": truncate
                },
                "required": ["contexts"]
            }
        ]
    })
}

pub(super) fn qwen3_embedding_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "queries": text_or_texts(MAX_QWEN3_TEXTS),
            "instruction": {
                "type": "string",
                "default": "Given a web search query, retrieve relevant passages that answer the query"
            },
            "documents": text_or_texts(MAX_QWEN3_TEXTS),
            "text": text_or_texts(MAX_QWEN3_TEXTS)
        },
        "anyOf": [{"required": ["queries"]}, {"required": ["documents"]}, {"required": ["text"]}]
    })
}

pub(super) fn embeddings_output() -> Value {
    json!({
        "type": "object",
        "contentType": "application/json",
        "properties": {
            "shape": {"type": "array", "items": {"type": "number"}},
            "data": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            "pooling": {"type": "string", "enum": ["mean", "cls"]}
        },
        "required": ["shape", "data"]
    })
}

pub(super) fn bge_m3_output() -> Value {
    json!({
        "oneOf": [
            embeddings_output(),
            {
                "type": "object",
                "title": "Query",
                "properties": {"response": ranked_results()},
                "required": ["response"]
            },
            {
                "type": "object",
                "title": "Contexts",
                "properties": {
                    "response": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                    "shape": {"type": "array", "items": {"type": "number"}},
                    "pooling": {"type": "string", "enum": ["mean", "cls"]}
                },
                "required": ["response"]
            }
        ]
    })
}

pub(super) fn text_classification_input() -> Value {
    json!({
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 1}},
        "required": ["text"]
    })
}

pub(super) fn text_classification_output() -> Value {
    json!({
        "type": "array",
        "contentType": "application/json",
        "items": {
            "type": "object",
            "properties": {
                "label": {"type": "string"},
                "score": {"type": "number", "minimum": 0, "maximum": 1}
            }
        }
    })
}

pub(super) fn reranker_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1},
            "contexts": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {"text": {"type": "string", "minLength": 1}},
                    "required": ["text"]
                }
            },
            "top_k": {"type": "integer", "minimum": 1}
        },
        "required": ["query", "contexts"]
    })
}

/// `[{id, score}]`, best first; `id` indexes the request's contexts.
fn ranked_results() -> Value {
    json!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"id": {"type": "integer"}, "score": {"type": "number"}}
        }
    })
}

pub(super) fn reranker_output() -> Value {
    json!({
        "type": "object",
        "contentType": "application/json",
        "properties": {"response": ranked_results()},
        "required": ["response"]
    })
}

pub(super) fn summarization_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "input_text": {"type": "string", "minLength": 1},
            "max_length": {"type": "integer", "minimum": 1, "default": 1024}
        },
        "required": ["input_text"]
    })
}

pub(super) fn summarization_output() -> Value {
    json!({
        "type": "object",
        "contentType": "application/json",
        "properties": {"summary": {"type": "string"}},
        "required": ["summary"]
    })
}

pub(super) fn m2m100_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1},
            "source_lang": {"type": "string", "minLength": 1, "default": "en"},
            "target_lang": {"type": "string", "minLength": 1}
        },
        "required": ["text", "target_lang"]
    })
}

pub(super) fn m2m100_output() -> Value {
    json!({
        "type": "object",
        "contentType": "application/json",
        "properties": {"translated_text": {"type": "string"}}
    })
}

/// FLORES-200 codes IndicTrans2 en→indic translates into.
const INDIC_LANGUAGES: &[&str] = &[
    "asm_Beng", "awa_Deva", "ben_Beng", "bho_Deva", "brx_Deva", "doi_Deva", "eng_Latn", "gom_Deva",
    "gon_Deva", "guj_Gujr", "hin_Deva", "hne_Deva", "kan_Knda", "kas_Arab", "kas_Deva", "kha_Latn",
    "lus_Latn", "mag_Deva", "mai_Deva", "mal_Mlym", "mar_Deva", "mni_Beng", "mni_Mtei", "npi_Deva",
    "ory_Orya", "pan_Guru", "san_Deva", "sat_Olck", "snd_Arab", "snd_Deva", "tam_Taml", "tel_Telu",
    "urd_Arab", "unr_Deva",
];

pub(super) fn indictrans2_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "text": text_or_texts(MAX_EMBEDDING_TEXTS),
            "target_language": {"type": "string", "enum": INDIC_LANGUAGES, "default": "hin_Deva"}
        },
        "required": ["text", "target_language"]
    })
}

pub(super) fn indictrans2_output() -> Value {
    json!({
        "type": "object",
        "contentType": "application/json",
        "properties": {"translations": {"type": "array", "items": {"type": "string"}}},
        "required": ["translations"]
    })
}
