//! Kiln's own BERT encoder against candle-transformers' `BertModel` (what `BertEmbedder` ran
//! before): on the real all-MiniLM-L6-v2 weights, the vectors must agree to float rounding, one
//! input at a time and in one padded batch.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use kiln_core::{Embedder, Pooling};
use kiln_engine_bert::BertEmbedder;
use tokenizers::Tokenizer;

const SENTENCES: [&str; 20] = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The stock market fell sharply today after the central bank raised interest rates.",
    "Hi",
    "",
    "Kiln serves models behind a Workers AI compatible API.",
    "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
    "Embeddings map sentences to vectors so that similar meanings end up close together.",
    "Où est la bibliothèque ?",
    "東京は日本の首都です。",
    "Rust's borrow checker prevents data races at compile time.",
    "She sold sea shells by the sea shore, and the shells she sold were surely sea shells.",
    "Numbers like 3.14159 and 2,718 appear in text too.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "A cat sat on the mat.",
    "Padding must never change a vector beyond rounding, whatever the other inputs are.",
    "I love programming in Rust!",
    "The weather is lovely today; let's go for a walk in the park.",
    "Transformers use self-attention to relate every token to every other token in a sequence.",
];

/// The reference: candle-transformers' `BertModel` over one right-padded batch, then the same
/// pooling and normalization as sentence-transformers.
fn reference_vectors(
    dir: &std::path::Path,
    texts: &[&str],
    pooling: Pooling,
) -> candle_core::Result<Vec<Vec<f32>>> {
    let config: Config = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)
        .map_err(candle_core::Error::wrap)?;
    // SAFETY: the test only reads the installed model's file.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )?
    };
    let model = BertModel::load(vb, &config)?;
    let mut tokenizer =
        Tokenizer::from_file(dir.join("tokenizer.json")).map_err(candle_core::Error::wrap)?;
    tokenizer.with_padding(None);
    let encodings = tokenizer
        .encode_batch(texts.to_vec(), true)
        .map_err(candle_core::Error::wrap)?;
    let len = encodings.iter().map(|e| e.len()).max().unwrap_or(1);
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for encoding in &encodings {
        ids.extend_from_slice(encoding.get_ids());
        ids.extend(std::iter::repeat_n(0u32, len - encoding.len()));
        mask.extend(std::iter::repeat_n(1.0f32, encoding.len()));
        mask.extend(std::iter::repeat_n(0.0f32, len - encoding.len()));
    }
    let shape = (encodings.len(), len);
    let ids = Tensor::from_vec(ids, shape, &Device::Cpu)?;
    let mask = Tensor::from_vec(mask, shape, &Device::Cpu)?;
    let hidden = model.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
    let pooled = match pooling {
        Pooling::Mean => hidden
            .broadcast_mul(&mask.unsqueeze(2)?)?
            .sum(1)?
            .broadcast_div(&mask.sum_keepdim(1)?)?,
        Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
    };
    let norms = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
    pooled.broadcast_div(&norms)?.to_vec2()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn vectors_match_candle_bert_model_single_and_batched() {
    let dir = kiln_store::ensure_for_tests("all-minilm-l6-v2").dir;
    let mut embedder = BertEmbedder::load(&dir).expect("all-minilm-l6-v2 loads");
    // 32 inputs: the 20 sentences, then 12 of them again, so one sub-batch holds them all.
    let texts: Vec<&str> = SENTENCES.iter().chain(&SENTENCES[..12]).copied().collect();
    let owned: Vec<String> = texts.iter().map(|s| s.to_string()).collect();
    for pooling in [Pooling::Mean, Pooling::Cls] {
        let expected = reference_vectors(&dir, &texts, pooling).expect("reference forward pass");
        let batched = embedder.embed(&owned, pooling).expect("batched embed");
        for (index, text) in owned.iter().enumerate() {
            let single = embedder
                .embed(std::slice::from_ref(text), pooling)
                .expect("single embed");
            for (what, vector) in [
                ("single", &single.vectors[0]),
                ("batched", &batched.vectors[index]),
            ] {
                let similarity = cosine(vector, &expected[index]);
                assert!(
                    similarity > 0.99999,
                    "{pooling:?} {what} input {index} ({text:?}): cosine {similarity}"
                );
            }
        }
    }
}
