//! EmbeddingGemma-300m with its real weights from Kiln's model store, against golden vectors that
//! sentence-transformers computed from the same files (`scripts/reference/embeddinggemma_golden.py`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use kiln_core::{Embedder, ErrorKind, Pooling};
use kiln_engine_bert::GemmaEmbedder;
use serde::Deserialize;

/// The reference's vectors are rounded to 6 decimals and computed by another f32 implementation.
const MIN_COSINE: f32 = 0.999;

#[derive(Deserialize)]
struct Golden {
    prompts: Prompts,
    dimensions: usize,
    items: Vec<GoldenItem>,
}

#[derive(Deserialize)]
struct Prompts {
    document: String,
    query: String,
}

#[derive(Deserialize)]
struct GoldenItem {
    prompt: String,
    text: String,
    tokens: u32,
    vector: Vec<f32>,
}

fn golden() -> Golden {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/embeddinggemma_golden.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture present");
    serde_json::from_str(&text).expect("fixture parses")
}

/// Resolved once so parallel tests don't race to install the model.
fn gemma_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| kiln_store::ensure_for_tests("embeddinggemma-300m").dir)
}

/// One loaded model shared by the tests (1.2 GB of f32 weights); each test takes it in turn.
fn gemma() -> std::sync::MutexGuard<'static, GemmaEmbedder> {
    static MODEL: OnceLock<Mutex<GemmaEmbedder>> = OnceLock::new();
    MODEL
        .get_or_init(|| Mutex::new(GemmaEmbedder::load(gemma_dir()).expect("model loads")))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn texts(items: &[&GoldenItem]) -> Vec<String> {
    items.iter().map(|item| item.text.clone()).collect()
}

#[test]
fn matches_sentence_transformers_on_every_golden_sentence() {
    let golden = golden();
    assert!(golden.items.len() >= 20);
    let mut model = gemma();
    assert_eq!(model.dimensions(), golden.dimensions);
    assert_eq!(model.dimensions(), 768);
    assert_eq!(model.max_input_tokens(), 2048);
    assert_eq!(
        model.prompt("document"),
        Some(golden.prompts.document.as_str())
    );
    assert_eq!(model.prompt("query"), Some(golden.prompts.query.as_str()));

    // Documents through the Embedder trait (the document prompt is the default), in one batch.
    let documents: Vec<&GoldenItem> = golden
        .items
        .iter()
        .filter(|item| item.prompt == "document")
        .collect();
    let queries: Vec<&GoldenItem> = golden
        .items
        .iter()
        .filter(|item| item.prompt == "query")
        .collect();
    assert!(!queries.is_empty());
    let document_output = model.embed(&texts(&documents), Pooling::Mean).unwrap();
    let query_output = model.embed_with_prompt(&texts(&queries), "query").unwrap();

    let outputs = documents
        .iter()
        .zip(
            document_output
                .vectors
                .iter()
                .zip(&document_output.token_counts),
        )
        .chain(
            queries
                .iter()
                .zip(query_output.vectors.iter().zip(&query_output.token_counts)),
        );
    let mut lowest = f32::MAX;
    for (item, (vector, &tokens)) in outputs {
        assert_eq!(tokens, item.tokens, "token count of {:?}", item.text);
        assert_eq!(vector.len(), 768);
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        let similarity = cosine(vector, &item.vector);
        assert!(
            similarity >= MIN_COSINE,
            "{} {:?}: cosine {similarity} to the reference",
            item.prompt,
            item.text
        );
        lowest = lowest.min(similarity);
    }
    eprintln!("lowest cosine to the reference: {lowest}");
    // The reference covers an input past the sliding window's reach (256 tokens each way).
    assert!(golden.items.iter().any(|item| item.tokens > 600));
}

#[test]
fn batched_vectors_equal_single_vectors() {
    let golden = golden();
    let chosen: Vec<&GoldenItem> = golden
        .items
        .iter()
        .filter(|item| item.prompt == "document" && item.tokens < 64)
        .take(6)
        .collect();
    let mut model = gemma();
    let batched = model.embed(&texts(&chosen), Pooling::Mean).unwrap();
    for (index, item) in chosen.iter().enumerate() {
        let single = model
            .embed(std::slice::from_ref(&item.text), Pooling::Mean)
            .unwrap();
        assert_eq!(single.token_counts[0], batched.token_counts[index]);
        let max_difference = single.vectors[0]
            .iter()
            .zip(&batched.vectors[index])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max_difference < 1e-5,
            "{:?}: batched and single differ by {max_difference}",
            item.text
        );
    }
}

#[test]
fn long_inputs_are_truncated_and_other_requests_refused() {
    let mut model = gemma();
    let long = "word ".repeat(5_000);
    let output = model.embed(&[long], Pooling::Mean).unwrap();
    assert_eq!(output.token_counts, vec![2048]);
    assert_eq!(output.vectors[0].len(), 768);

    let err = model
        .embed(&["hello".to_string()], Pooling::Cls)
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadInput);
    assert!(err.message.contains("mean"), "{}", err.message);
    let err = model
        .embed_with_prompt(&["hello".to_string()], "no-such-task")
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadInput);
    assert!(err.message.contains("query"), "{}", err.message);

    let empty = model.embed(&[], Pooling::Mean).unwrap();
    assert!(empty.vectors.is_empty());
}

#[test]
fn token_id_input_embeds_like_its_text() {
    let mut model = gemma();
    let text = "Kiln serves models on your own machine.";
    let from_text = model.embed(&[text.to_string()], Pooling::Mean).unwrap();
    // Ids of the text alone, as an OpenAI client would send them (no prompt, no <bos>/<eos>).
    let tokenizer =
        tokenizers::Tokenizer::from_file(gemma_dir().join("tokenizer.json")).expect("tokenizer");
    let ids = tokenizer
        .encode(text, false)
        .expect("encodes")
        .get_ids()
        .to_vec();
    let from_ids = model.embed_token_ids(&[ids], Pooling::Mean).unwrap();
    assert_eq!(from_ids.token_counts, from_text.token_counts);
    assert!(cosine(&from_ids.vectors[0], &from_text.vectors[0]) > 0.99999);
}

/// `cargo test -p kiln-engine-bert --test embeddinggemma -- --ignored --nocapture` prints how
/// long one sentence and a batch of 32 take on this machine (the best of several runs, since
/// other work on the machine only ever slows a run down).
#[test]
#[ignore = "a measurement, not a check"]
fn embedding_times() {
    let mut model = gemma();
    let mut fastest = |texts: &[String], runs: usize| {
        (0..runs)
            .map(|_| {
                let started = Instant::now();
                let output = model.embed(texts, Pooling::Mean).unwrap();
                (started.elapsed(), output.prompt_tokens)
            })
            .min()
            .unwrap_or_default()
    };
    let sentence = ["The quick brown fox jumps over the lazy dog near the river bank.".to_string()];
    let (elapsed, tokens) = fastest(&sentence, 10);
    eprintln!("one sentence ({tokens} tokens): {elapsed:?}");
    let batch: Vec<String> = golden()
        .items
        .iter()
        .filter(|item| item.tokens < 64)
        .map(|item| item.text.clone())
        .cycle()
        .take(32)
        .collect();
    let (elapsed, tokens) = fastest(&batch, 3);
    eprintln!("batch of 32 ({tokens} tokens): {elapsed:?}");
}
