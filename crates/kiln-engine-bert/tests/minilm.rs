//! End-to-end tests against the real all-MiniLM-L6-v2 weights from Kiln's model store.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln_core::{Embedder, ErrorKind, Pooling};
use kiln_engine_bert::BertEmbedder;

/// Resolved once so parallel tests don't race to install the model.
fn minilm_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| kiln_store::ensure_for_tests("all-minilm-l6-v2").dir)
}

fn minilm() -> BertEmbedder {
    BertEmbedder::load(minilm_dir()).expect("all-minilm-l6-v2 loads")
}

fn texts(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn embed_one(embedder: &mut BertEmbedder, text: &str, pooling: Pooling) -> Vec<f32> {
    let mut output = embedder.embed(&texts(&[text]), pooling).unwrap();
    assert_eq!(output.vectors.len(), 1);
    output.vectors.remove(0)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn vectors_have_model_dimensions_and_unit_norm() {
    let mut embedder = minilm();
    assert_eq!(embedder.dimensions(), 384);
    assert_eq!(embedder.max_input_tokens(), 512);
    assert_eq!(embedder.default_pooling(), Pooling::Mean);

    for pooling in [Pooling::Mean, Pooling::Cls] {
        let output = embedder
            .embed(&texts(&["Hello world.", "Kiln serves models."]), pooling)
            .unwrap();
        assert_eq!(output.vectors.len(), 2);
        // [CLS] hello world . [SEP] + [CLS] kiln serves models . [SEP]; "kiln" may split.
        assert!(
            output.prompt_tokens >= 11,
            "prompt_tokens {}",
            output.prompt_tokens
        );
        for vector in &output.vectors {
            assert_eq!(vector.len(), 384);
            assert!((dot(vector, vector).sqrt() - 1.0).abs() < 1e-5);
        }
    }
}

#[test]
fn similar_sentences_are_close_and_unrelated_ones_are_not() {
    let mut embedder = minilm();
    let output = embedder
        .embed(
            &texts(&[
                "A man is eating food.",
                "A man is eating a piece of bread.",
                "The stock market fell today.",
            ]),
            Pooling::Mean,
        )
        .unwrap();
    let [food, bread, stocks] = &output.vectors[..] else {
        panic!("three vectors")
    };
    let related = dot(food, bread);
    let unrelated = dot(food, stocks);
    assert!(related > 0.7, "related cosine {related}");
    assert!(unrelated < 0.3, "unrelated cosine {unrelated}");
}

/// Values from an independent float64 numpy implementation of the BERT forward pass over the same
/// weights and tokenizer (sentence-transformers' mean pooling, then L2 normalization).
#[test]
fn matches_reference_implementation() {
    let mut embedder = minilm();
    let output = embedder
        .embed(&texts(&["This is a test sentence."]), Pooling::Mean)
        .unwrap();
    assert_eq!(output.prompt_tokens, 8);
    let expected_mean_prefix = [
        0.084296, 0.057954, 0.004493, 0.105821, 0.007083, -0.017845, -0.016888, -0.015228,
    ];
    assert!(
        max_abs_difference(&output.vectors[0][..8], &expected_mean_prefix) < 1e-4,
        "mean prefix {:?}",
        &output.vectors[0][..8]
    );
    let mean_sum: f32 = output.vectors[0].iter().sum();
    assert!(
        (mean_sum - 0.162_109_7).abs() < 1e-3,
        "mean component sum {mean_sum}"
    );

    let cls = embed_one(&mut embedder, "This is a test sentence.", Pooling::Cls);
    let expected_cls_prefix = [
        0.013717, -0.019334, 0.006248, 0.030293, 0.017929, -0.015379, -0.00866, 0.013289,
    ];
    assert!(
        max_abs_difference(&cls[..8], &expected_cls_prefix) < 1e-4,
        "cls prefix {:?}",
        &cls[..8]
    );
}

#[test]
fn cls_and_mean_pooling_differ() {
    let mut embedder = minilm();
    let mean = embed_one(&mut embedder, "Pooling strategies matter.", Pooling::Mean);
    let cls = embed_one(&mut embedder, "Pooling strategies matter.", Pooling::Cls);
    assert!(max_abs_difference(&mean, &cls) > 1e-2);
}

#[test]
fn batched_vectors_equal_single_vectors_in_input_order() {
    let mut embedder = minilm();
    let long = "The quick brown fox jumps over the lazy dog near the riverbank. ".repeat(15);
    // Enough inputs for more than one sub-batch, in an order unlike their length order.
    let mut inputs = vec![long.clone(), "Hi".to_string(), String::new()];
    for i in 0..30 {
        inputs.push(format!(
            "Sentence number {i} {}",
            "with extra words ".repeat(i % 7)
        ));
    }
    inputs.push("A medium-length sentence about embeddings and padding.".to_string());

    for pooling in [Pooling::Mean, Pooling::Cls] {
        let batched = embedder.embed(&inputs, pooling).unwrap();
        assert_eq!(batched.vectors.len(), inputs.len());
        let mut single_tokens = 0;
        for (text, batched_vector) in inputs.iter().zip(&batched.vectors) {
            let single = embedder.embed(std::slice::from_ref(text), pooling).unwrap();
            single_tokens += single.prompt_tokens;
            let difference = max_abs_difference(&single.vectors[0], batched_vector);
            assert!(
                difference < 1e-5,
                "{pooling:?} {text:.30?}: differs by {difference}"
            );
        }
        assert_eq!(batched.prompt_tokens, single_tokens);
    }
}

#[test]
fn inputs_past_the_limit_are_truncated() {
    let mut embedder = minilm();
    let very_long = "tokens ".repeat(2000);
    let output = embedder
        .embed(&texts(&[&very_long, "short"]), Pooling::Mean)
        .unwrap();
    // 512 for the truncated input, [CLS] short [SEP] for the other.
    assert_eq!(output.prompt_tokens, 512 + 3);
    let norm = dot(&output.vectors[0], &output.vectors[0]).sqrt();
    assert!((norm - 1.0).abs() < 1e-5);

    // Text past the limit has no effect on the result.
    let longer = format!("{very_long} and then something completely different");
    let truncated_again = embed_one(&mut embedder, &longer, Pooling::Mean);
    assert!(max_abs_difference(&output.vectors[0], &truncated_again) < 1e-5);
}

#[test]
fn empty_and_unusual_inputs_never_fail() {
    let mut embedder = minilm();
    let empty = embedder.embed(&[], Pooling::Mean).unwrap();
    assert!(empty.vectors.is_empty());
    assert_eq!(empty.prompt_tokens, 0);

    let odd = texts(&[
        "",
        "   ",
        "\u{0}\u{7}\u{1b}",
        "🦀🔥 ∑ 漢字",
        "\u{feff}\u{200b}",
    ]);
    let output = embedder.embed(&odd, Pooling::Cls).unwrap();
    assert_eq!(output.vectors.len(), odd.len());
    for vector in &output.vectors {
        assert!(vector.iter().all(|x| x.is_finite()));
        assert!((dot(vector, vector).sqrt() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn weights_nested_under_bert_prefix_load_identically() {
    let source = minilm_dir();
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "tokenizer.json"] {
        std::fs::copy(source.join(file), dir.path().join(file)).unwrap();
    }
    let tensors =
        candle_core::safetensors::load(source.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let prefixed: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .map(|(name, tensor)| (format!("bert.{name}"), tensor))
        .collect();
    candle_core::safetensors::save(&prefixed, dir.path().join("model.safetensors")).unwrap();

    let mut prefixed_model = BertEmbedder::load(dir.path()).unwrap();
    let mut plain_model = minilm();
    let text = "Weight names differ between exports.";
    let difference = max_abs_difference(
        &embed_one(&mut prefixed_model, text, Pooling::Mean),
        &embed_one(&mut plain_model, text, Pooling::Mean),
    );
    assert_eq!(difference, 0.0);
}

#[test]
fn load_errors_are_internal_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let error = BertEmbedder::load(dir.path())
        .err()
        .expect("empty dir fails");
    assert_eq!(error.kind, ErrorKind::Internal);
    assert!(error.message.contains("config.json"), "{}", error.message);

    std::fs::copy(
        minilm_dir().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let error = BertEmbedder::load(dir.path())
        .err()
        .expect("missing tokenizer fails");
    assert!(
        error.message.contains("tokenizer.json"),
        "{}",
        error.message
    );

    std::fs::copy(
        minilm_dir().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let error = BertEmbedder::load(dir.path())
        .err()
        .expect("missing weights fail");
    assert!(
        error.message.contains("model.safetensors"),
        "{}",
        error.message
    );

    std::fs::write(dir.path().join("model.safetensors"), b"not safetensors").unwrap();
    let error = BertEmbedder::load(dir.path())
        .err()
        .expect("corrupt weights fail");
    assert_eq!(error.kind, ErrorKind::Internal);
    assert!(
        error.message.contains("model.safetensors"),
        "{}",
        error.message
    );
}

#[test]
fn token_counts_are_per_input_and_sum_to_prompt_tokens() {
    let mut embedder = minilm();
    let output = embedder
        .embed(
            &texts(&["This is a test sentence.", "", "hello world"]),
            Pooling::Mean,
        )
        .unwrap();
    // [CLS] this is a test sentence . [SEP]; [CLS] [SEP]; [CLS] hello world [SEP].
    assert_eq!(output.token_counts, vec![8, 2, 4]);
    assert_eq!(output.prompt_tokens, 14);
}

/// bert-base-uncased's vocabulary (MiniLM's): "hello" is 7592, "world" is 2088.
#[test]
fn token_id_input_embeds_like_the_same_text() {
    let mut embedder = minilm();
    let from_text = embedder
        .embed(&texts(&["hello world", "world"]), Pooling::Mean)
        .unwrap();
    let from_ids = embedder
        .embed_token_ids(&[vec![7592, 2088], vec![2088]], Pooling::Mean)
        .unwrap();
    assert_eq!(from_ids.token_counts, from_text.token_counts);
    for (a, b) in from_ids.vectors.iter().zip(&from_text.vectors) {
        assert!(max_abs_difference(a, b) < 1e-6);
    }

    let error = embedder
        .embed_token_ids(&[vec![7592, 4_000_000]], Pooling::Mean)
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::BadInput);
    assert!(error.message.contains("4000000"), "{}", error.message);
}
