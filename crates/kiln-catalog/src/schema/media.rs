//! Audio and image schemas: speech recognition (spec §3.7), text-to-speech (§3.8),
//! text-to-image (§3.9), image classification and object detection (§3.11).

use serde_json::{json, Value};

use super::{binary_body, bytes, integer, number};

pub const AURA_1_SPEAKERS: &[&str] = &[
    "angus", "asteria", "arcas", "orion", "orpheus", "athena", "luna", "zeus", "perseus", "helios",
    "hera", "stella",
];

/// Deepgram's Aura 2 English voices (the 40 the spec counts, amalthea…zeus). Not pinned in
/// the schema (the list is unverified): the server checks it and names them.
pub const AURA_2_EN_SPEAKERS: &[&str] = &[
    "amalthea",
    "andromeda",
    "apollo",
    "arcas",
    "aries",
    "asteria",
    "athena",
    "atlas",
    "aurora",
    "callista",
    "cora",
    "cordelia",
    "delia",
    "draco",
    "electra",
    "harmonia",
    "helena",
    "hera",
    "hermes",
    "hyperion",
    "iris",
    "janus",
    "juno",
    "jupiter",
    "luna",
    "mars",
    "minerva",
    "neptune",
    "odysseus",
    "ophelia",
    "orion",
    "orpheus",
    "pandora",
    "phoebe",
    "pluto",
    "saturn",
    "thalia",
    "theia",
    "vesta",
    "zeus",
];

pub const AURA_2_ES_SPEAKERS: &[&str] = &[
    "sirio", "nestor", "carina", "celeste", "alvaro", "diana", "aquila", "selena", "estrella",
    "javier",
];

/// A binding stream input: `{body, contentType}`.
fn stream_input() -> Value {
    json!({
        "type": "object",
        "properties": {"body": {}, "contentType": {"type": "string"}},
        "required": ["body", "contentType"]
    })
}

pub(super) fn whisper_input() -> Value {
    json!({
        "oneOf": [
            binary_body(),
            {
                "type": "object",
                "properties": {"audio": bytes()},
                "required": ["audio"]
            }
        ]
    })
}

pub(super) fn whisper_output() -> Value {
    json!({
        "type": "object",
        "contentType": "application/json",
        "properties": {
            "text": {"type": "string"},
            "word_count": {"type": "number"},
            "words": {"type": "array", "items": word()},
            "vtt": {"type": "string"}
        },
        "required": ["text"]
    })
}

fn word() -> Value {
    json!({
        "type": "object",
        "properties": {
            "word": {"type": "string"},
            "start": {"type": "number"},
            "end": {"type": "number"}
        }
    })
}

pub(super) fn whisper_turbo_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "audio": {
                "anyOf": [{"type": "string", "minLength": 1, "description": "Base64-encoded audio."}, stream_input()]
            },
            "task": {"type": "string", "enum": ["transcribe", "translate"], "default": "transcribe"},
            "language": {"type": "string", "default": "en"},
            "vad_filter": {"type": "boolean", "default": false},
            "initial_prompt": {"type": "string"},
            "prefix": {"type": "string"},
            "beam_size": {"type": "integer", "minimum": 1, "default": 5},
            "condition_on_previous_text": {"type": "boolean", "default": true},
            "no_speech_threshold": {"type": "number", "default": 0.6},
            "compression_ratio_threshold": {"type": "number", "default": 2.4},
            "log_prob_threshold": {"type": "number", "default": -1},
            "hallucination_silence_threshold": {"type": "number"}
        },
        "required": ["audio"]
    })
}

pub(super) fn whisper_turbo_output() -> Value {
    json!({
        "type": "object",
        "contentType": "application/json",
        "properties": {
            "transcription_info": {
                "type": "object",
                "properties": {
                    "language": {"type": "string"},
                    "language_probability": {"type": "number"},
                    "duration": {"type": "number"},
                    "duration_after_vad": {"type": "number"}
                }
            },
            "text": {"type": "string"},
            "word_count": {"type": "number"},
            "segments": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "start": {"type": "number"},
                        "end": {"type": "number"},
                        "text": {"type": "string"},
                        "temperature": {"type": "number"},
                        "avg_logprob": {"type": "number"},
                        "compression_ratio": {"type": "number"},
                        "no_speech_prob": {"type": "number"},
                        "words": {"type": "array", "items": word()}
                    }
                }
            },
            "vtt": {"type": "string"}
        },
        "required": ["text"]
    })
}

/// A Deepgram boolean option: URL query values arrive as text.
fn flag() -> Value {
    json!({"anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false"]}]})
}

/// A Deepgram numeric option, as a number or as query text.
fn count() -> Value {
    json!({"type": ["number", "string"]})
}

/// Nova-3: a binary body (a file, or raw audio described by `encoding` and `sample_rate` in
/// the query), or `{audio, ...options}` where `audio` is the binding's `{body, contentType}`,
/// base64 or bytes.
pub(super) fn deepgram_nova_input() -> Value {
    json!({
        "oneOf": [
            binary_body(),
            {
                "type": "object",
                "properties": {
                    "audio": {"anyOf": [bytes(), stream_input()]},
                    "language": {"type": "string", "description": "BCP-47 code (en, en-US, es); multi or absent detects it."},
                    "punctuate": flag(),
                    "smart_format": flag(),
                    "diarize": flag(),
                    "detect_language": flag(),
                    "encoding": {"type": "string", "description": "Raw audio: linear16, mulaw or alaw (with sample_rate); files need none."},
                    "sample_rate": count(),
                    "channels": count(),
                    "utterances": flag(),
                    "utt_split": count(),
                    "paragraphs": flag(),
                    "keyterm": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                    "interim_results": flag(),
                    "endpointing": {"type": ["string", "integer", "boolean"]},
                    "vad_events": flag()
                },
                "required": ["audio"]
            }
        ]
    })
}

pub(super) fn deepgram_flux_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "encoding": {"type": "string", "enum": ["linear16"]},
            "sample_rate": {"type": ["string", "integer"]},
            "eot_threshold": number(0.5, 0.9),
            "eager_eot_threshold": number(0.3, 0.9),
            "eot_timeout_ms": {"type": ["string", "integer"]},
            "keyterm": {"type": "string"},
            "mip_opt_out": {"type": ["string", "boolean"]},
            "tag": {"type": "string"}
        }
    })
}

fn deepgram_word() -> Value {
    json!({
        "type": "object",
        "properties": {
            "word": {"type": "string"},
            "start": {"type": "number"},
            "end": {"type": "number"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "punctuated_word": {"type": "string"},
            "speaker": {"type": "integer"},
            "speaker_confidence": {"type": "number"}
        },
        "required": ["word", "start", "end", "confidence"]
    })
}

/// Deepgram's pre-recorded answer: `metadata` and `results.channels[].alternatives[]`, with
/// `paragraphs` and `results.utterances` when asked for.
pub(super) fn deepgram_output() -> Value {
    let words = json!({"type": "array", "items": deepgram_word()});
    let span = |extra: Value| {
        let mut properties = json!({"start": {"type": "number"}, "end": {"type": "number"}});
        if let (Some(fields), Value::Object(more)) = (properties.as_object_mut(), extra) {
            fields.extend(more);
        }
        json!({"type": "object", "properties": properties})
    };
    let sentence = span(json!({"text": {"type": "string"}}));
    let paragraph = span(json!({
        "sentences": {"type": "array", "items": sentence},
        "num_words": {"type": "integer"}
    }));
    let utterance = span(json!({
        "confidence": {"type": "number"},
        "channel": {"type": "integer"},
        "transcript": {"type": "string"},
        "words": words,
        "speaker": {"type": "integer"},
        "id": {"type": "string"}
    }));
    json!({
        "type": "object",
        "contentType": "application/json",
        "properties": {
            "metadata": {
                "type": "object",
                "properties": {
                    "transaction_key": {"type": "string"},
                    "request_id": {"type": "string"},
                    "created": {"type": "string"},
                    "duration": {"type": "number"},
                    "channels": {"type": "integer"},
                    "models": {"type": "array", "items": {"type": "string"}},
                    "model_info": {"type": "object"}
                }
            },
            "results": {
                "type": "object",
                "properties": {
                    "channels": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "alternatives": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "transcript": {"type": "string"},
                                            "confidence": {"type": "number"},
                                            "words": words,
                                            "paragraphs": {
                                                "type": "object",
                                                "properties": {
                                                    "transcript": {"type": "string"},
                                                    "paragraphs": {"type": "array", "items": paragraph}
                                                }
                                            }
                                        },
                                        "required": ["transcript", "confidence", "words"]
                                    }
                                },
                                "detected_language": {"type": "string"}
                            }
                        }
                    },
                    "utterances": {"type": "array", "items": utterance}
                },
                "required": ["channels"]
            }
        },
        "required": ["results"]
    })
}

pub(super) fn smart_turn_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "audio": {"anyOf": [{"type": "string", "minLength": 1}, stream_input()]},
            "dtype": {"type": "string", "enum": ["uint8", "float32", "float64"]}
        },
        "required": ["audio"]
    })
}

pub(super) fn smart_turn_output() -> Value {
    json!({
        "type": "object",
        "contentType": "application/json",
        "properties": {
            "is_complete": {"type": "boolean"},
            "probability": {"type": "number", "minimum": 0, "maximum": 1}
        }
    })
}

pub(super) fn melotts_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "minLength": 1},
            "lang": {
                "type": "string",
                "default": "en",
                "description": "en, es, fr, zh, jp or kr; Kiln speaks the ones it has a voice installed for."
            }
        },
        "required": ["prompt"]
    })
}

pub(super) fn melotts_output() -> Value {
    json!({
        "oneOf": [
            {
                "type": "object",
                "contentType": "application/json",
                "properties": {"audio": {"type": "string", "description": "Base64-encoded MP3."}},
                "required": ["audio"]
            },
            {"type": "string", "contentType": "audio/mpeg", "format": "binary"}
        ]
    })
}

/// Deepgram Aura options; `speakers` pins the voice names where the full list is known.
pub(super) fn aura_input(speakers: Option<&[&str]>) -> Value {
    let speaker = match speakers {
        Some(names) => json!({"type": "string", "enum": names, "default": names[0]}),
        None => json!({"type": "string", "minLength": 1}),
    };
    json!({
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1},
            "speaker": speaker,
            "encoding": {"type": "string", "enum": ["linear16", "flac", "mulaw", "alaw", "mp3", "opus", "aac"]},
            "container": {"type": "string", "enum": ["none", "wav", "ogg"]},
            "sample_rate": {"type": "number", "exclusiveMinimum": 0},
            "bit_rate": {"type": "number", "exclusiveMinimum": 0}
        },
        "required": ["text"]
    })
}

pub(super) fn binary_output(content_type: &str) -> Value {
    json!({"type": "string", "contentType": content_type, "format": "binary"})
}

pub(super) fn base64_image_output() -> Value {
    json!({
        "type": "object",
        "contentType": "application/json",
        "properties": {"image": {"type": "string", "description": "Base64-encoded image."}},
        "required": ["image"]
    })
}

pub(super) fn stable_diffusion_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "minLength": 1},
            "negative_prompt": {"type": "string"},
            "height": integer(256, 2048),
            "width": integer(256, 2048),
            "image": bytes(),
            "image_b64": {"type": "string"},
            "mask": bytes(),
            "num_steps": {"type": "integer", "minimum": 1, "maximum": 20, "default": 20},
            "strength": {"type": "number", "minimum": 0, "maximum": 1, "default": 1},
            "guidance": {"type": "number", "default": 7.5},
            "seed": {"type": "integer", "minimum": 0}
        },
        "required": ["prompt"]
    })
}

pub(super) fn flux_1_schnell_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "minLength": 1, "maxLength": 2048},
            "steps": {"type": "integer", "minimum": 1, "maximum": 8, "default": 4},
            "seed": {"type": "integer", "minimum": 0}
        },
        "required": ["prompt"],
        "additionalProperties": false
    })
}

pub(super) fn lucid_origin_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "minLength": 1},
            "guidance": {"type": "number", "minimum": 0, "maximum": 10, "default": 4.5},
            "seed": {"type": "integer", "minimum": 0},
            "height": integer(0, 2500),
            "width": integer(0, 2500),
            "num_steps": integer(1, 40),
            "steps": integer(1, 40)
        },
        "required": ["prompt"]
    })
}

pub(super) fn phoenix_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "minLength": 1},
            "guidance": {"type": "number", "minimum": 2, "maximum": 10, "default": 2},
            "seed": {"type": "integer", "minimum": 0},
            "height": integer(0, 2048),
            "width": integer(0, 2048),
            "num_steps": integer(1, 50),
            "negative_prompt": {"type": "string", "minLength": 1}
        },
        "required": ["prompt"]
    })
}

/// FLUX.2 takes multipart form data; as JSON either the binding's `{multipart:{body,
/// contentType}}` or the form fields themselves.
pub(super) fn flux_2_input() -> Value {
    json!({
        "type": "object",
        "properties": {
            "multipart": stream_input(),
            "prompt": {"type": "string", "minLength": 1},
            "width": integer(256, 1920),
            "height": integer(256, 1920),
            "steps": integer(1, 50),
            "seed": {"type": "integer", "minimum": 0},
            "guidance": {"type": "number"}
        },
        "anyOf": [{"required": ["prompt"]}, {"required": ["multipart"]}]
    })
}

pub(super) fn image_input() -> Value {
    json!({
        "oneOf": [
            binary_body(),
            {"type": "object", "properties": {"image": bytes()}, "required": ["image"]}
        ]
    })
}

pub(super) fn image_classification_output() -> Value {
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

pub(super) fn object_detection_output() -> Value {
    let coordinate = json!({"type": "number"});
    json!({
        "type": "array",
        "contentType": "application/json",
        "items": {
            "type": "object",
            "properties": {
                "score": {"type": "number"},
                "label": {"type": "string"},
                "box": {
                    "type": "object",
                    "properties": {
                        "xmin": coordinate, "ymin": coordinate, "xmax": coordinate, "ymax": coordinate
                    }
                }
            }
        }
    })
}
