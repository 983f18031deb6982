//! all-MiniLM-L6-v2's int8 ONNX export (real weights from Kiln's model store) on ONNX Runtime,
//! checked against the f32 safetensors model it was quantized from.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln_core::{Embedder, Pooling};
use kiln_engine_bert::BertEmbedder;

/// Dynamic int8 quantization moves each vector slightly (0.999 measured on these sentences).
const MIN_COSINE_TO_F32: f32 = 0.995;

fn model_dir(name: &str) -> PathBuf {
    kiln_store::ensure_for_tests(name).dir
}

/// Resolved once so parallel tests don't race to install the models.
fn int8_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| model_dir("all-minilm-l6-v2-int8"))
}

fn f32_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| model_dir("all-minilm-l6-v2"))
}

fn sentences() -> Vec<String> {
    [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The stock market fell sharply today after the announcement.",
        "Kiln serves models on your own machine.",
        "How do I reset my password?",
        "Vectors of similar sentences point the same way.",
        "short",
        "The quick brown fox jumps over the lazy dog, then runs into the forest to hide from the hunters who chase it.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn int8_vectors_agree_with_the_f32_model() {
    let texts = sentences();
    let mut int8 = BertEmbedder::load_onnx(int8_dir(), 2).expect("int8 model loads");
    let mut full = BertEmbedder::load(f32_dir()).expect("f32 model loads");
    assert_eq!(int8.dimensions(), 384);
    assert_eq!(int8.default_pooling(), Pooling::Mean);

    let quantized = int8.embed(&texts, Pooling::Mean).unwrap();
    let reference = full.embed(&texts, Pooling::Mean).unwrap();
    assert_eq!(quantized.token_counts, reference.token_counts);
    let lowest = quantized
        .vectors
        .iter()
        .zip(&reference.vectors)
        .map(|(q, r)| dot(q, r))
        .fold(f32::INFINITY, f32::min);
    eprintln!("lowest cosine of an int8 vector to its f32 vector: {lowest:.5}");
    for (index, (q, r)) in quantized.vectors.iter().zip(&reference.vectors).enumerate() {
        assert_eq!(q.len(), 384);
        assert!((dot(q, q).sqrt() - 1.0).abs() < 1e-4);
        let cosine = dot(q, r);
        assert!(
            cosine >= MIN_COSINE_TO_F32,
            "sentence {index}: cosine {cosine} to the f32 vector"
        );
    }
    // The quantized model keeps the ranking that matters: paraphrases beat unrelated text.
    let [food, bread, stocks, ..] = &quantized.vectors[..] else {
        panic!("vectors")
    };
    assert!(dot(food, bread) > dot(food, stocks) + 0.3);
}

#[test]
fn a_batched_vector_equals_the_vector_embedded_alone() {
    let texts = sentences();
    let mut int8 = BertEmbedder::load_onnx(int8_dir(), 2).expect("int8 model loads");
    let batched = int8.embed(&texts, Pooling::Mean).unwrap();
    for (text, together) in texts.iter().zip(&batched.vectors) {
        let alone = int8
            .embed(std::slice::from_ref(text), Pooling::Mean)
            .unwrap();
        // Padding is masked out of attention and pooling, so only float rounding differs.
        let cosine = dot(&alone.vectors[0], together);
        assert!(
            cosine > 0.9999,
            "{text:?}: cosine {cosine} alone vs batched"
        );
    }
}

#[test]
fn a_missing_graph_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(f32_dir().join(file), dir.path().join(file)).unwrap();
    }
    let error = match BertEmbedder::load_onnx(dir.path(), 1) {
        Ok(_) => panic!("loads without model.onnx"),
        Err(error) => error,
    };
    assert!(error.message.contains("model.onnx"), "{}", error.message);
}
