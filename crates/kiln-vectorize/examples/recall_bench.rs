//! Recall@10 and queries per second of the ANN graph (Kiln's HNSW, as the store configures it)
//! against exact search, on clustered synthetic data, for each metric:
//!
//! ```sh
//! cargo run --release -p kiln-vectorize --example recall_bench [COUNT] [OUT_DIR] [EFS]
//! ```
//!
//! COUNT defaults to 100,000 vectors of 384 dimensions (plus 1,000 queries), from
//! `kiln_vectorize::bench::clustered_vectors` (100 clusters, normalised for cosine). Queries
//! run one at a time on one thread, as the store runs them: the graph proposes 2 × topK
//! candidates, which are rescored exactly (f64, from the f32 vectors) and the best topK kept.
//! Building uses every core. EFS is a comma-separated list of search ef values to sweep
//! (default `16,32,64,128,256`, plus the store's own choice for topK 10, marked `default`);
//! each gets one output line.
//!
//! `recall_bench serve FILE` loads a data file written by a previous run, builds the graph,
//! prints `ready: build S s, default ef E`, then answers each line `EF` on stdin with one line
//! `ef EF: recall R, Q q/s, C q/s of CPU time` (a pass over all queries after 100 warm-up
//! ones), so that a harness can alternate it with another library's runs under the same load
//! (`benches/vector_bench.py` does).
//!
//! Each metric's data is written to `OUT_DIR/recall-{metric}.bin` (default OUT_DIR: the system
//! temporary directory) so that other libraries (hnswlib, faiss) can be measured on the same
//! set: one line of JSON ending in `\n`,
//! `{"metric","dimensions","count","queries","k","base_offset","queries_offset","truth_offset"}`
//! (offsets in bytes from the start of the file), then `count × dimensions` f32 little-endian
//! (the base vectors, row by row), then `queries × dimensions` f32 (the queries), then
//! `queries × k` u32 little-endian (the exact top-k base rows per query, best first).
//! In Python: `header = f.readline(); np.frombuffer(data, '<f4', count*dims, base_offset)`.

use std::io::{BufRead, Write};
use std::time::Instant;

use kiln_vectorize::bench::{
    clustered_vectors, expansion_for, AnnIndex, CONNECTIVITY, EXPANSION_ADD,
};
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

/// CPU time of this thread so far (Linux), to report throughput net of time other processes
/// took from the CPU.
fn thread_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(nanos as f64 / 1e9)
}

struct Measured {
    recall: f64,
    qps: f64,
    cpu_qps: Option<f64>,
}

/// One pass over the queries as the store answers them (see the module comment).
fn measure(
    graph: &AnnIndex,
    metric: Metric,
    base: &[f32],
    queries: &[f32],
    truth: &[u32],
    ef: usize,
) -> Measured {
    let row = |n: usize| &base[n * DIMENSIONS..(n + 1) * DIMENSIONS];
    let answer = |query: &[f32]| -> Vec<u32> {
        let keys = graph.search_with(query, 2 * K, ef.max(2 * K));
        let mut scored: Vec<(f32, u32)> = keys
            .iter()
            .map(|key| (metric.score(query, row(*key as usize)), *key as u32))
            .collect();
        scored.sort_by(|a, b| metric.best_first(a.0, b.0));
        scored.truncate(K);
        scored.into_iter().map(|(_, n)| n).collect()
    };
    for query in queries.chunks_exact(DIMENSIONS).take(100) {
        std::hint::black_box(answer(query));
    }
    let cpu_started = thread_cpu_seconds();
    let started = Instant::now();
    let mut hits = 0;
    let count = queries.len() / DIMENSIONS;
    for (query, truth) in queries.chunks_exact(DIMENSIONS).zip(truth.chunks_exact(K)) {
        hits += answer(query).iter().filter(|n| truth.contains(n)).count();
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_seconds()
        .zip(cpu_started)
        .map(|(end, start)| end - start);
    Measured {
        recall: hits as f64 / (count * K) as f64,
        qps: count as f64 / wall,
        cpu_qps: cpu.filter(|cpu| *cpu > 0.0).map(|cpu| count as f64 / cpu),
    }
}

fn build(metric: Metric, base: &[f32]) -> (AnnIndex, f64) {
    let started = Instant::now();
    let items: Vec<(u64, &[f32])> = base
        .chunks_exact(DIMENSIONS)
        .enumerate()
        .map(|(n, v)| (n as u64, v))
        .collect();
    let graph = AnnIndex::build(DIMENSIONS, metric, &items);
    (graph, started.elapsed().as_secs_f64())
}

/// `recall_bench serve FILE`: see the module comment.
fn serve(path: &str) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|error| format!("{path}: {error}"))?;
    let newline = bytes
        .iter()
        .position(|byte| *byte == b'\n')
        .ok_or("no header line")?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[..newline]).map_err(|error| error.to_string())?;
    let field = |name: &str| {
        header[name]
            .as_u64()
            .map(|value| value as usize)
            .ok_or(format!("header field {name}"))
    };
    if field("dimensions")? != DIMENSIONS || field("k")? != K {
        return Err("the file has other dimensions or k".into());
    }
    let (count, queries) = (field("count")?, field("queries")?);
    let words = |offset: usize, n: usize| -> Result<Vec<[u8; 4]>, String> {
        bytes
            .get(offset..offset + n * 4)
            .ok_or("the file is too short".to_owned())
            .map(|slice| {
                slice
                    .chunks_exact(4)
                    .map(|word| [word[0], word[1], word[2], word[3]])
                    .collect()
            })
    };
    let floats = |offset: usize, n: usize| -> Result<Vec<f32>, String> {
        Ok(words(offset, n)?
            .into_iter()
            .map(f32::from_le_bytes)
            .collect())
    };
    let base = floats(field("base_offset")?, count * DIMENSIONS)?;
    let query_rows = floats(field("queries_offset")?, queries * DIMENSIONS)?;
    let truth: Vec<u32> = words(field("truth_offset")?, queries * K)?
        .into_iter()
        .map(u32::from_le_bytes)
        .collect();
    let metric = Metric::parse(header["metric"].as_str().unwrap_or_default())
        .map_err(|error| error.message)?;
    drop(bytes);
    let (graph, build_seconds) = build(metric, &base);
    println!(
        "ready: build {build_seconds:.1} s, default ef {}",
        expansion_for(K)
    );
    let mut out = std::io::stdout();
    out.flush().map_err(|error| error.to_string())?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|error| error.to_string())?;
        let Ok(ef) = line.trim().parse::<usize>() else {
            break;
        };
        let result = measure(&graph, metric, &base, &query_rows, &truth, ef);
        writeln!(
            out,
            "ef {ef}: recall {:.4}, {:.0} q/s, {} q/s of CPU time",
            result.recall,
            result.qps,
            result.cpu_qps.map_or("-".into(), |qps| format!("{qps:.0}"))
        )
        .and_then(|()| out.flush())
        .map_err(|error| error.to_string())?;
    }
    Ok(())
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        let path = std::env::args().nth(2).unwrap_or_default();
        if let Err(reason) = serve(&path) {
            eprintln!("recall_bench serve: {reason}");
            std::process::exit(1);
        }
        return;
    }
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(100_000);
    let out_dir = std::env::args()
        .nth(2)
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let default_ef = expansion_for(K);
    let mut efs: Vec<usize> = std::env::args()
        .nth(3)
        .unwrap_or_else(|| "16,32,64,128,256".into())
        .split(',')
        .filter_map(|ef| ef.trim().parse().ok())
        .chain([default_ef])
        .collect();
    efs.sort_unstable();
    efs.dedup();
    println!(
        "{count} × {DIMENSIONS} clustered vectors, {QUERIES} queries, recall@{K}, ef sweep {efs:?} (store default for topK {K}: {default_ef})"
    );
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

        let base: Vec<f32> = base.concat();
        let queries: Vec<f32> = queries.concat();
        let truth: Vec<u32> = truth.concat();
        drop(data);
        let (graph, build_seconds) = build(metric, &base);
        for &ef in &efs {
            let result = measure(&graph, metric, &base, &queries, &truth, ef);
            let marker = if ef == default_ef { ", default" } else { "" };
            println!(
                "{:<11} exact: recall 1.0000, {exact_qps:>7.1} q/s | Kiln HNSW (M {CONNECTIVITY}, ef_add {EXPANSION_ADD}, ef {ef}{marker}): recall {:.4}, {:>7.0} q/s, build {build_seconds:.1} s | data: {}",
                metric.as_str(),
                result.recall,
                result.qps,
                path.display()
            );
        }
    }
}
