//! Kiln's DistilBERT classifier and XLM-R cross-encoder against `transformers` on the same files:
//! small random models of the real architectures with reference outputs, made by
//! `scripts/reference/text_models.py`. Token ids must be equal, logits within the fixture's
//! tolerance (1e-4 absolute), rankings exactly equal; a batch must give each input what it gets
//! alone.

use std::path::PathBuf;

use kiln_core::classify::softmax;
use kiln_core::{ClassifierHead, ClassifierInput, SequenceClassifier};
use kiln_engine_text::{inspect, Architecture, TextClassifier};
use serde_json::Value;

/// Padding changes the summation order of nothing that matters; batched logits agree with
/// single ones this closely.
const BATCH_TOLERANCE: f32 = 1e-5;

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

/// Asserts every value is within `tolerance`; returns the largest difference seen.
fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32, what: &str) -> f32 {
    assert_eq!(actual.len(), expected.len(), "{what}");
    let mut largest = 0f32;
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            (a - e).abs() <= tolerance,
            "{what}: {actual:?} vs reference {expected:?} (tolerance {tolerance})"
        );
        largest = largest.max((a - e).abs());
    }
    largest
}

#[test]
fn distilbert_classifier_matches_transformers() {
    let reference = reference("distilbert-sst2-tiny");
    let tolerance = reference["tolerance"].as_f64().expect("tolerance") as f32;
    let dir = fixture("distilbert-sst2-tiny");
    assert_eq!(
        inspect(&dir).expect("config").architecture,
        Architecture::DistilBert
    );
    let mut model = TextClassifier::load(&dir).expect("loads");
    assert_eq!(
        model.head(),
        &ClassifierHead::Labels(vec!["NEGATIVE".into(), "POSITIVE".into()])
    );
    assert_eq!(model.max_input_tokens(), 128);

    let cases = reference["cases"].as_array().expect("cases");
    let mut tokenized = Vec::new();
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let token_ids = model
            .tokenize(&ClassifierInput::single(text))
            .expect("tokenizes");
        assert_eq!(token_ids, ids(&case["token_ids"]), "token ids of {text:?}");
        tokenized.push(token_ids);
    }
    let batch: Vec<&[u32]> = tokenized.iter().map(Vec::as_slice).collect();
    let batched = model.forward(&batch).expect("forward");
    let mut largest = 0f32;
    for ((case, token_ids), together) in cases.iter().zip(&tokenized).zip(&batched) {
        let text = case["text"].as_str().expect("text");
        let alone = model.forward(&[token_ids]).expect("forward").remove(0);
        largest = largest.max(assert_close(
            &alone,
            &floats(&case["logits"]),
            tolerance,
            text,
        ));
        assert_close(
            together,
            &alone,
            BATCH_TOLERANCE,
            &format!("{text} in a batch"),
        );

        let probabilities = softmax(&alone);
        let mut ranked: Vec<(usize, f32)> = probabilities.into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let expected = case["scores"].as_array().expect("scores");
        for ((label, score), reference) in ranked.iter().zip(expected) {
            let labels = ["NEGATIVE", "POSITIVE"];
            assert_eq!(labels[*label], reference["label"], "{text}");
            let reference_score = reference["score"].as_f64().expect("score") as f32;
            assert!((score - reference_score).abs() <= tolerance, "{text}");
        }
    }
    eprintln!("DistilBERT: largest logit difference from transformers {largest:e}");
}

#[test]
fn xlm_roberta_cross_encoder_matches_transformers_and_ranks_the_same() {
    let reference = reference("bge-reranker-tiny");
    let tolerance = reference["tolerance"].as_f64().expect("tolerance") as f32;
    let dir = fixture("bge-reranker-tiny");
    assert_eq!(
        inspect(&dir).expect("config").architecture,
        Architecture::XlmRoberta
    );
    let mut model = TextClassifier::load(&dir).expect("loads");
    assert_eq!(model.head(), &ClassifierHead::Relevance);
    assert_eq!(model.max_input_tokens(), 128);

    let mut largest = 0f32;
    for case in reference["cases"].as_array().expect("cases") {
        let query = case["query"].as_str().expect("query");
        let contexts = case["contexts"].as_array().expect("contexts");
        let expected_ids = case["token_ids"].as_array().expect("ids");
        let tokenized: Vec<Vec<u32>> = contexts
            .iter()
            .zip(expected_ids)
            .map(|(context, expected)| {
                let input = ClassifierInput::pair(query, context.as_str().expect("text"));
                let token_ids = model.tokenize(&input).expect("tokenizes");
                assert_eq!(
                    token_ids,
                    ids(expected),
                    "token ids of {query:?} / {context}"
                );
                token_ids
            })
            .collect();
        let batch: Vec<&[u32]> = tokenized.iter().map(Vec::as_slice).collect();
        let scores: Vec<f32> = model
            .forward(&batch)
            .expect("forward")
            .into_iter()
            .map(|logits| logits[0])
            .collect();
        largest = largest.max(assert_close(
            &scores,
            &floats(&case["logits"]),
            tolerance,
            query,
        ));
        for (token_ids, together) in tokenized.iter().zip(&scores) {
            let alone = model.forward(&[token_ids]).expect("forward")[0][0];
            assert!(
                (alone - together).abs() <= BATCH_TOLERANCE,
                "{query}: batch vs alone"
            );
        }
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let expected_order: Vec<usize> = ids(&case["order"])
            .into_iter()
            .map(|i| i as usize)
            .collect();
        assert_eq!(order, expected_order, "ranking for {query:?}");
    }
    eprintln!("XLM-R: largest logit difference from transformers {largest:e}");
}

#[test]
fn overlong_inputs_and_wrong_shapes_are_the_callers_errors() {
    for name in ["distilbert-sst2-tiny", "bge-reranker-tiny"] {
        let reference = reference(name);
        let overlong = reference["overlong_text"].as_str().expect("text");
        let model = TextClassifier::load(&fixture(name)).expect("loads");
        let input = match model.head() {
            ClassifierHead::Relevance => ClassifierInput::pair("a query", overlong),
            ClassifierHead::Labels(_) => ClassifierInput::single(overlong),
        };
        let error = model.tokenize(&input).expect_err("too long");
        assert_eq!((error.status(), error.code()), (400, 5006), "{name}");
        assert!(error.message.contains("at most 128"), "{}", error.message);
    }
    let reranker = TextClassifier::load(&fixture("bge-reranker-tiny")).expect("loads");
    let error = reranker
        .tokenize(&ClassifierInput::single("no passage"))
        .expect_err("a reranker needs pairs");
    assert_eq!(error.code(), 5006);
}

#[test]
fn a_directory_without_weights_names_the_missing_file() {
    let dir = std::env::temp_dir().join(format!("kiln-text-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(
        fixture("distilbert-sst2-tiny").join("config.json"),
        dir.join("config.json"),
    )
    .expect("copy");
    let error = TextClassifier::load(&dir).err().expect("no weights");
    assert!(
        error.message.contains("model.safetensors"),
        "{}",
        error.message
    );
    let _ = std::fs::remove_dir_all(&dir);
}
