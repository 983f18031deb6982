//! Recall@10 and queries per second of the ANN graph (usearch HNSW, as the store configures it)
//! against exact search, on clustered synthetic data, for each metric:
//!
//! ```sh
//! cargo run --release -p kiln-vectorize --example recall_bench [COUNT] [OUT_DIR]
//! ```
//!
//! COUNT defaults to 100,000 vectors of 384 dimensions (plus 1,000 queries), from
//! `kiln_vectorize::bench::clustered_vectors` (100 clusters, normalised for cosine). Queries
//! run one at a time on one thread; building uses every core.
//!
//! Each metric's data is written to `OUT_DIR/recall-{metric}.bin` (default OUT_DIR: the system
//! temporary directory) so that other libraries (hnswlib, faiss) can be measured on the same
//! set: one line of JSON ending in `\n`,
//! `{"metric","dimensions","count","queries","k","base_offset","queries_offset","truth_offset"}`
//! (offsets in bytes from the start of the file), then `count × dimensions` f32 little-endian
//! (the base vectors, row by row), then `queries × dimensions` f32 (the queries), then
//! `queries × k` u32 little-endian (the exact top-k base rows per query, best first).
//! In Python: `header = f.readline(); np.frombuffer(data, '<f4', count*dims, base_offset)`.

use std::io::Write;
use std::time::Instant;

use kiln_vectorize::bench::{clustered_vectors, AnnIndex, EXPANSION_SEARCH};
use kiln_vectorize::Metric;

const DIMENSIONS: usize = 384;
const QUERIES: usize = 1000;
const K: usize = 10;

fn exact_top_k(metric: Metric, base: &[Vec<f32>], query: &[f32]) -> Vec<u32> {
    let mut scored: Vec<(f32, u32)> = base
        .iter()
        .enumerate()
        .map(|(n, v)| (metric.score(query, v), n as u32))
        .collect();
    scored.select_nth_unstable_by(K, |a, b| metric.best_first(a.0, b.0));
    scored.truncate(K);
    scored.sort_by(|a, b| metric.best_first(a.0, b.0));
    scored.into_iter().map(|(_, n)| n).collect()
}

fn parallel_truth(metric: Metric, base: &[Vec<f32>], queries: &[Vec<f32>]) -> Vec<Vec<u32>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = queries.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = queries
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|q| exact_top_k(metric, base, q))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|part| part.join().expect("exact search thread"))
            .collect()
    })
}

fn write_dataset(
    path: &std::path::Path,
    metric: Metric,
    base: &[Vec<f32>],
    queries: &[Vec<f32>],
    truth: &[Vec<u32>],
) -> std::io::Result<()> {
    let header_without_offsets = 256; // generous room, padded below
    let base_offset = header_without_offsets;
    let queries_offset = base_offset + base.len() * DIMENSIONS * 4;
    let truth_offset = queries_offset + queries.len() * DIMENSIONS * 4;
    let mut header = serde_json::json!({
        "metric": metric.as_str(), "dimensions": DIMENSIONS, "count": base.len(), "queries": queries.len(), "k": K,
        "base_offset": base_offset, "queries_offset": queries_offset, "truth_offset": truth_offset,
    })
    .to_string();
    header.push_str(&" ".repeat(header_without_offsets - 1 - header.len()));
    header.push('\n');
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    out.write_all(header.as_bytes())?;
    for row in base.iter().chain(queries) {
        for value in row {
            out.write_all(&value.to_le_bytes())?;
        }
    }
    for row in truth {
        for n in row {
            out.write_all(&n.to_le_bytes())?;
        }
    }
    out.flush()
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(100_000);
    let out_dir = std::env::args()
        .nth(2)
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    println!("{count} × {DIMENSIONS} clustered vectors, {QUERIES} queries, recall@{K}, ef = {EXPANSION_SEARCH}");
    for metric in [Metric::Cosine, Metric::Euclidean, Metric::DotProduct] {
        let data = clustered_vectors(
            count + QUERIES,
            DIMENSIONS,
            100,
            metric == Metric::Cosine,
            7,
        );
        let (base, queries) = data.split_at(count);
        let truth = parallel_truth(metric, base, queries);
        let path = out_dir.join(format!("recall-{}.bin", metric.as_str()));
        if let Err(error) = write_dataset(&path, metric, base, queries, &truth) {
            eprintln!("could not write {}: {error}", path.display());
        }

        let started = Instant::now();
        let exact_queries = QUERIES.min(100);
        for query in &queries[..exact_queries] {
            std::hint::black_box(exact_top_k(metric, base, query));
        }
        let exact_qps = exact_queries as f64 / started.elapsed().as_secs_f64();

        let started = Instant::now();
        let items: Vec<(u64, &[f32])> = base
            .iter()
            .enumerate()
            .map(|(n, v)| (n as u64, v.as_slice()))
            .collect();
        let graph = AnnIndex::build(DIMENSIONS, metric, &items).expect("building the graph");
        let build_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let mut hits = 0;
        for (query, truth) in queries.iter().zip(&truth) {
            let found = graph.search(query, K).expect("search");
            hits += found
                .iter()
                .filter(|key| truth.contains(&(**key as u32)))
                .count();
        }
        let ann_qps = QUERIES as f64 / started.elapsed().as_secs_f64();
        let recall = hits as f64 / (QUERIES * K) as f64;
        println!(
            "{:<11} exact: recall 1.0000, {exact_qps:>7.1} q/s | usearch HNSW (M 16, ef_add 128, ef {EXPANSION_SEARCH}): recall {recall:.4}, {ann_qps:>7.0} q/s, build {build_seconds:.1} s | data: {}",
            metric.as_str(),
            path.display()
        );
    }
}
