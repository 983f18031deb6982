//! Translation (spec §3.6, m2m100: `{text, source_lang = "en", target_lang}` →
//! `{translated_text}`) and summarization (§3.5: `{input_text, max_length = 1024}` →
//! `{summary}`) on an encoder-decoder's worker (`kiln-engine-seq2seq`).

use axum::response::{IntoResponse, Response};
use kiln_catalog::{CatalogEntry, SchemaKind};
use kiln_core::media::MediaOutput;
use kiln_core::{KilnError, KilnResult, MediaRequest, Task, Usage};
use kiln_scheduler::{Admission, MediaWorker};
use serde_json::{json, Value};

use super::MediaInput;
use crate::envelope::success;
use crate::platform::Meter;

/// New tokens at most for a translation (the schema has no length); the model's positions
/// bound it further. m2m100's own generation config stops at 200.
const TRANSLATION_MAX_NEW_TOKENS: usize = 256;

/// Summarization's `max_length` when the request has none (the schema's default).
const SUMMARY_MAX_LENGTH: usize = 1024;

/// Language names the Workers AI docs list for m2m100 (and a few more), to M2M100's codes.
const LANGUAGE_NAMES: &[(&str, &str)] = &[
    ("english", "en"),
    ("chinese", "zh"),
    ("french", "fr"),
    ("spanish", "es"),
    ("arabic", "ar"),
    ("russian", "ru"),
    ("german", "de"),
    ("japanese", "ja"),
    ("portuguese", "pt"),
    ("hindi", "hi"),
    ("italian", "it"),
    ("dutch", "nl"),
    ("korean", "ko"),
    ("polish", "pl"),
    ("turkish", "tr"),
    ("ukrainian", "uk"),
    ("vietnamese", "vi"),
    ("swedish", "sv"),
    ("greek", "el"),
    ("czech", "cs"),
    ("indonesian", "id"),
    ("hebrew", "he"),
    ("persian", "fa"),
    ("bengali", "bn"),
];

/// What to install to serve a translation or summarization id (`None` for other ids).
pub fn install_hint(entry: &CatalogEntry) -> Option<&'static str> {
    Some(match entry.schema {
        SchemaKind::M2m100 => {
            "install an M2M100ForConditionalGeneration (or MarianMTModel) model from a Hugging \
             Face directory with a tokenizer.json: `kiln models pull NAME --hf DIR` (it then \
             serves this id)"
        }
        SchemaKind::Summarization => {
            "install a BartForConditionalGeneration model from a Hugging Face directory or \
             repository: `kiln models pull NAME --hf DIR_OR_ORG/REPO` (it then serves this id)"
        }
        _ => return None,
    })
}

/// M2M100's token for a language given as Workers AI takes it: a name (`french`) or a code
/// (`fr`, `FR`); `__fr__` itself is taken as is.
pub fn language_token(language: &str, field: &str) -> KilnResult<String> {
    let language = language.trim().to_ascii_lowercase();
    if language.starts_with("__") && language.ends_with("__") && language.len() > 4 {
        return Ok(language);
    }
    let code = LANGUAGE_NAMES
        .iter()
        .find(|(name, _)| *name == language)
        .map_or(language.as_str(), |(_, code)| code);
    let is_code = (2..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase());
    if !is_code {
        return Err(KilnError::bad_input(format!(
            "'{field}' must be a language code such as \"fr\" or a name such as \"french\", \
             not {language:?}"
        )));
    }
    Ok(format!("__{code}__"))
}

fn text_field(value: &Value, field: &str) -> KilnResult<String> {
    value
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| KilnError::bad_input(format!("'{field}' is required: a string")))
}

/// The engine request for a validated translation or summarization input.
fn request(task: Task, value: &Value) -> KilnResult<MediaRequest> {
    match task {
        Task::Translation => {
            let source = value
                .get("source_lang")
                .and_then(Value::as_str)
                .unwrap_or("en");
            Ok(MediaRequest::Translate {
                text: text_field(value, "text")?,
                source_lang: language_token(source, "source_lang")?,
                target_lang: language_token(&text_field(value, "target_lang")?, "target_lang")?,
                max_new_tokens: TRANSLATION_MAX_NEW_TOKENS,
            })
        }
        Task::Summarization => {
            let max_length = match value.get("max_length") {
                None => SUMMARY_MAX_LENGTH,
                Some(length) => length
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| {
                        KilnError::bad_input("'max_length' must be a positive integer")
                    })?,
            };
            Ok(MediaRequest::Summarize {
                text: text_field(value, "input_text")?,
                max_new_tokens: max_length,
            })
        }
        task => Err(KilnError::internal(format!(
            "no text route for task {}",
            task.name()
        ))),
    }
}

pub async fn run(
    worker: &MediaWorker,
    input: MediaInput,
    admission: Admission,
    meter: &Meter,
) -> KilnResult<Response> {
    let MediaInput::Json(value) = input else {
        return Err(KilnError::bad_input("send a JSON object"));
    };
    let task = worker.task();
    let output = worker.run(request(task, &value)?, admission).await?;
    let MediaOutput::Text {
        text,
        input_tokens,
        output_tokens,
    } = output
    else {
        return Err(KilnError::internal(
            "the model answered with something else",
        ));
    };
    meter.charge_tokens(&Usage::new(input_tokens, output_tokens));
    let result = match task {
        Task::Summarization => json!({"summary": text}),
        _ => json!({"translated_text": text}),
    };
    Ok(success(result).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_are_names_or_codes() {
        assert_eq!(language_token("french", "t").unwrap(), "__fr__");
        assert_eq!(language_token("English", "t").unwrap(), "__en__");
        assert_eq!(language_token("de", "t").unwrap(), "__de__");
        assert_eq!(language_token("__ja__", "t").unwrap(), "__ja__");
        assert_eq!(language_token("ast", "t").unwrap(), "__ast__");
        let error = language_token("klingon", "target_lang").unwrap_err();
        assert!(error.message.contains("target_lang"), "{}", error.message);
    }

    #[test]
    fn requests_take_the_schema_defaults() {
        let translate = request(
            Task::Translation,
            &json!({"text": "hi", "target_lang": "fr"}),
        );
        assert_eq!(
            translate.unwrap(),
            MediaRequest::Translate {
                text: "hi".into(),
                source_lang: "__en__".into(),
                target_lang: "__fr__".into(),
                max_new_tokens: TRANSLATION_MAX_NEW_TOKENS,
            }
        );
        let summarize = request(Task::Summarization, &json!({"input_text": "long"}));
        assert_eq!(
            summarize.unwrap(),
            MediaRequest::Summarize {
                text: "long".into(),
                max_new_tokens: SUMMARY_MAX_LENGTH,
            }
        );
    }
}
