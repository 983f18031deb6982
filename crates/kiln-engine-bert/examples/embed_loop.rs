//! Embeds batches of benchmark-like sentences in a loop and prints sentences per second: the
//! engine alone, without HTTP, for profiling (`perf record`) and quick before/after checks.
//!
//! `cargo run --release -p kiln-engine-bert --example embed_loop -- MODEL_DIR [BATCH] [SECONDS] [onnx]`

use std::time::{Duration, Instant};

use kiln_core::{Embedder, Pooling};
use kiln_engine_bert::BertEmbedder;

const WORDS: &[&str] = &[
    "the",
    "model",
    "server",
    "runs",
    "quickly",
    "on",
    "small",
    "machines",
    "with",
    "vectors",
    "search",
    "index",
    "query",
    "answer",
    "token",
    "batch",
    "memory",
    "latency",
    "throughput",
    "language",
    "sentence",
    "embedding",
    "cosine",
    "nearest",
    "neighbor",
    "document",
    "retrieval",
];

/// Sentences of 8 to 24 words, deterministic (like benches/embeddings_bench.py's).
fn sentences(count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            let length = 8 + (n * 7) % 17;
            let words: Vec<&str> = (0..length)
                .map(|i| WORDS[(n * 31 + i * 17 + i * i) % WORDS.len()])
                .collect();
            format!("{}.", words.join(" "))
        })
        .collect()
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or("usage: embed_loop MODEL_DIR [BATCH] [SECONDS] [onnx]")?;
    let batch: usize = args.get(2).and_then(|b| b.parse().ok()).unwrap_or(32);
    let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let onnx = args.get(4).is_some_and(|a| a == "onnx");
    let dir = std::path::Path::new(dir);
    let mut embedder = if onnx {
        BertEmbedder::load_onnx(dir, 0)
    } else {
        BertEmbedder::load(dir)
    }
    .map_err(|e| e.message)?;
    let texts = sentences(batch);
    embedder
        .embed(&texts, Pooling::Mean)
        .map_err(|e| e.message)?;
    let started = Instant::now();
    let mut done = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        embedder
            .embed(&texts, Pooling::Mean)
            .map_err(|e| e.message)?;
        done += texts.len();
    }
    let rate = done as f64 / started.elapsed().as_secs_f64();
    println!("batch {batch}: {rate:.1} sentences/s");
    Ok(())
}
