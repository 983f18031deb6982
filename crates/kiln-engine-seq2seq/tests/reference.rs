//! Kiln's encoder-decoder against `transformers` on the same files: small random M2M100, Marian
//! and BART models with reference outputs, made by `scripts/reference/seq2seq_models.py`. Source
//! token ids must be equal, encoder outputs and decoder logits (first step, and the last step
//! reached through the cache) within the fixture's tolerance (1e-4 absolute), greedy
//! continuations exactly equal.

use std::path::PathBuf;

use kiln_engine_seq2seq::{inspect, Architecture, GenerateOptions, Seq2SeqModel};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).expect("reference");
    serde_json::from_str(&text).expect("reference JSON")
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Asserts `actual` starts with values within `tolerance` of `expected`; returns the largest
/// difference seen.
fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32, what: &str) -> f32 {
    assert!(actual.len() >= expected.len(), "{what}: too few values");
    let mut largest = 0f32;
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            (a - e).abs() <= tolerance,
            "{what}: {:?} vs reference {expected:?} (tolerance {tolerance})",
            &actual[..expected.len()]
        );
        largest = largest.max((a - e).abs());
    }
    largest
}

fn options(case: &Value, max_new_tokens: usize) -> GenerateOptions {
    let token = |key: &str| {
        case.get(key)
            .and_then(Value::as_str)
            .map(|c| format!("__{c}__"))
    };
    GenerateOptions {
        target_lang_token: token("target_lang"),
        source_lang_token: token("source_lang"),
        max_new_tokens,
    }
}

/// Every case of one fixture: tokens, encoder output, first and last decoder logits, and the
/// greedy continuation.
fn check_fixture(name: &str, architecture: Architecture) {
    let reference = reference(name);
    let tolerance = reference["tolerance"].as_f64().expect("tolerance") as f32;
    let max_new_tokens = reference["max_new_tokens"].as_u64().expect("max") as usize;
    let dir = fixture(name);
    assert_eq!(inspect(&dir).expect("config"), architecture);
    let model = Seq2SeqModel::load(&dir).expect("loads");
    assert_eq!(model.architecture(), architecture);
    assert_eq!(
        model.max_input_tokens() as u64,
        reference["max_positions"].as_u64().expect("positions")
    );

    let mut largest = 0f32;
    for case in reference["cases"].as_array().expect("cases") {
        let text = case["text"].as_str().expect("text");
        let what = format!("{name} {text:?} → {:?}", case.get("target_lang"));
        let options = options(case, max_new_tokens);
        let source = model.tokenize(text, &options).expect("tokenizes");
        assert_eq!(source, ids(&case["source_ids"]), "source ids of {what}");

        let encoded = model.encoder_output(&source).expect("encodes");
        largest = largest.max(assert_close(
            &encoded[0],
            &floats(&case["encoder_output_first_token"]),
            tolerance,
            &format!("encoder output, first token, {what}"),
        ));
        largest = largest.max(assert_close(
            &encoded[encoded.len() - 1],
            &floats(&case["encoder_output_last_token"]),
            tolerance,
            &format!("encoder output, last token, {what}"),
        ));

        let start = reference["generation"]["decoder_start_token_id"]
            .as_u64()
            .expect("start") as u32;
        let first = model.decoder_logits(&source, &[start]).expect("decodes");
        largest = largest.max(assert_close(
            &first,
            &floats(&case["first_step_logits"]),
            tolerance,
            &format!("first-step logits, {what}"),
        ));
        let argmax = (0..first.len())
            .reduce(|best, i| if first[i] > first[best] { i } else { best })
            .expect("logits");
        assert_eq!(argmax as u64, case["first_step_argmax"], "{what}");

        let prefix = ids(&case["last_step_decoder_ids"]);
        let last = model.decoder_logits(&source, &prefix).expect("decodes");
        largest = largest.max(assert_close(
            &last,
            &floats(&case["last_step_logits"]),
            tolerance,
            &format!("logits after {} cached steps, {what}", prefix.len()),
        ));

        let generated = model.generate(text, &options).expect("generates");
        assert_eq!(
            generated.token_ids,
            ids(&case["generated_ids"]),
            "greedy continuation of {what}"
        );
        assert_eq!(generated.text, case["generated_text"], "{what}");
        assert_eq!(generated.input_tokens, source.len());
    }
    eprintln!("{name}: largest difference from transformers {largest:e}");
}

#[test]
fn m2m100_matches_transformers() {
    check_fixture("m2m100-tiny", Architecture::M2m100);
}

#[test]
fn marian_matches_transformers() {
    check_fixture("marian-tiny", Architecture::Marian);
}

#[test]
fn bart_matches_transformers() {
    check_fixture("bart-tiny", Architecture::Bart);
}

#[test]
fn m2m100_decodes_until_its_positions_run_out() {
    let reference = reference("m2m100-tiny");
    let served = &reference["served_translation"];
    let model = Seq2SeqModel::load(&fixture("m2m100-tiny")).expect("loads");
    // More than the decoder's positions allow: generation stops after 63 new tokens.
    let generated = model
        .generate(
            served["text"].as_str().expect("text"),
            &options(served, 1000),
        )
        .expect("generates");
    assert_eq!(generated.token_ids, ids(&served["generated_ids"]));
    assert_eq!(generated.text, served["generated_text"]);
}

#[test]
fn overlong_sources_are_the_callers_error() {
    for name in ["m2m100-tiny", "marian-tiny", "bart-tiny"] {
        let reference = reference(name);
        let overlong = reference["overlong_text"].as_str().expect("text");
        let model = Seq2SeqModel::load(&fixture(name)).expect("loads");
        let options = GenerateOptions {
            target_lang_token: Some("__fr__".into()),
            ..GenerateOptions::default()
        };
        let error = model.generate(overlong, &options).expect_err("too long");
        assert_eq!((error.status(), error.code()), (400, 5006), "{name}");
        assert!(error.message.contains("at most 64"), "{}", error.message);
    }
}

#[test]
fn m2m100_needs_known_language_tokens() {
    let model = Seq2SeqModel::load(&fixture("m2m100-tiny")).expect("loads");
    let no_target = model
        .generate("Cats sleep.", &GenerateOptions::default())
        .expect_err("no target");
    assert_eq!(no_target.code(), 5006);
    assert!(
        no_target.message.contains("target language"),
        "{}",
        no_target.message
    );
    let unknown = GenerateOptions {
        target_lang_token: Some("__xx__".into()),
        ..GenerateOptions::default()
    };
    let error = model
        .generate("Cats sleep.", &unknown)
        .expect_err("unknown");
    assert!(error.message.contains("__xx__"), "{}", error.message);
    // transformers' M2M100Tokenizer reads English when no source language is given.
    let implicit = model
        .tokenize("Cats sleep.", &GenerateOptions::default())
        .expect("tokenizes");
    assert_eq!(Some(implicit[0]), model.token_id("__en__"));
}

#[test]
fn generation_stops_at_the_token_limit_and_the_positions() {
    let model = Seq2SeqModel::load(&fixture("bart-tiny")).expect("loads");
    let mut options = GenerateOptions {
        max_new_tokens: 0,
        ..GenerateOptions::default()
    };
    let none = model.generate("Cats sleep.", &options).expect("generates");
    assert!(none.token_ids.is_empty() && none.text.is_empty());
    // BART forces <s> first and </s> at the limit.
    options.max_new_tokens = 3;
    let short = model.generate("Cats sleep.", &options).expect("generates");
    assert_eq!(short.token_ids.len(), 3);
    assert_eq!((short.token_ids[0], short.token_ids[2]), (0, 2));
    // The decoder has 64 positions, the start token takes one.
    options.max_new_tokens = 1000;
    let long = model.generate("Cats sleep.", &options).expect("generates");
    assert!(long.token_ids.len() <= 63, "{}", long.token_ids.len());
}

#[test]
fn a_directory_without_weights_names_the_missing_file() {
    let dir = std::env::temp_dir().join(format!("kiln-seq2seq-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(
        fixture("bart-tiny").join("config.json"),
        dir.join("config.json"),
    )
    .expect("copy");
    let error = Seq2SeqModel::load(&dir).err().expect("no weights");
    assert!(
        error.message.contains("model.safetensors"),
        "{}",
        error.message
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_check_stops_generation_between_steps() {
    use kiln_core::{ErrorKind, KilnError};
    let model = Seq2SeqModel::load(&fixture("bart-tiny")).expect("loads");
    let calls = std::cell::Cell::new(0);
    let check = || {
        calls.set(calls.get() + 1);
        if calls.get() > 3 {
            Err(KilnError::new(ErrorKind::Timeout, "late"))
        } else {
            Ok(())
        }
    };
    let options = GenerateOptions {
        max_new_tokens: 12,
        ..GenerateOptions::default()
    };
    let error = model
        .generate_checked("Cats sleep.", &options, &check)
        .expect_err("stopped");
    assert_eq!(error.kind, ErrorKind::Timeout);
    // Once before the encoder, then before each decoder step: the fourth call stops it.
    assert_eq!(calls.get(), 4);
}
