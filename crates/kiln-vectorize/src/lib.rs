//! Vectorize v2 (spec §5): durable vector indexes, metadata filtering and approximate search,
//! behind the synchronous [`VectorStore`] API that `kiln-http` serves.
//!
//! - Every mutation (insert, upsert, delete, metadata index create/delete) is appended to the
//!   index's log and fsync'd before its mutationId is returned (`wal`).
//! - An apply thread per index moves logged mutations into the in-memory state in order;
//!   queries read that state under an `RwLock` and so see applied mutations only. `info`
//!   reports how far applying has got.
//! - Snapshots (`snapshot`) bound replay time; on open, snapshot + log tail restore the state.
//! - Search (`search`): exact for small indexes and selective filters, an HNSW graph (`ann`,
//!   `hnsw`) otherwise; scores are always recomputed exactly from the stored vectors.
//!
//! All methods block; callers on an async runtime use `spawn_blocking`.

mod ann;
mod checks;
mod codec;
mod config;
mod filter;
mod hnsw;
mod index;
mod kernels;
mod metric;
mod quarantine;
mod query;
mod record;
mod replica;
mod search;
mod snapshot;
mod state;
mod store;
mod wal;

use kiln_core::limits::VectorizeLimits;

pub use config::{IndexConfig, MAX_DIMENSIONS, MAX_INDEXES_PER_ACCOUNT, MAX_INDEX_NAME_BYTES};
pub use filter::{MetadataIndexType, INDEXED_STRING_BYTES, MAX_FILTER_BYTES, MAX_METADATA_INDEXES};
pub use metric::Metric;
pub use query::{
    Query, ReturnMetadata, DEFAULT_TOP_K, MAX_TOP_K, MAX_TOP_K_WITH_VALUES_OR_METADATA,
};
pub use record::{
    parse_ndjson, parse_vectors, Unparsable, VectorRecord, WriteLimits, MAX_VECTOR_JSON_BYTES,
};
pub use replica::{Change, ChangeLog};
pub use store::{VectorStore, MAX_LIST_COUNT, MAX_VECTORS_PER_MUTATION};

/// Tuning knobs; the defaults suit a server, tests make them small to exercise every path.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Below this many vectors an index is searched exactly and has no ANN graph.
    pub ann_min_vectors: usize,
    /// A snapshot is written once this many bytes of log (and at least half the previous
    /// snapshot's size) have been applied since the last one.
    pub snapshot_min_log_bytes: u64,
    /// Indexes kept open at once (an apply thread and a log file each); the least recently
    /// used idle ones beyond this are closed and reopened on their next use.
    pub max_open_indexes: usize,
    /// Most vectors one insert or upsert may carry.
    pub max_vectors_per_write: usize,
}

impl StoreOptions {
    /// The defaults with the operator's `[limits.vectorize]`.
    pub fn with_limits(limits: &VectorizeLimits) -> Self {
        Self {
            max_open_indexes: limits.max_open_indexes,
            max_vectors_per_write: limits.max_vectors_per_write,
            ..Self::default()
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        let limits = VectorizeLimits::default();
        Self {
            ann_min_vectors: 2000,
            snapshot_min_log_bytes: 16 * 1024 * 1024,
            max_open_indexes: limits.max_open_indexes,
            max_vectors_per_write: limits.max_vectors_per_write,
        }
    }
}

/// The graph and the synthetic data of the recall measurements, public for
/// `examples/recall_bench.rs` and the recall tests.
pub mod bench {
    pub use crate::ann::{expansion_for, AnnIndex, CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH};

    /// Deterministic clustered Gaussian data: `clusters` centres drawn from N(0, 1) per
    /// coordinate, each point a random centre plus N(0, 0.6²) noise per coordinate; optionally
    /// L2-normalised (the cosine set). A xorshift generator keeps it dependency-free and the
    /// same on every machine.
    pub fn clustered_vectors(
        count: usize,
        dimensions: usize,
        clusters: usize,
        normalize: bool,
        seed: u64,
    ) -> Vec<Vec<f32>> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        let mut gaussian = move || {
            let (u1, u2) = (uniform(), uniform());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        };
        let centres: Vec<Vec<f32>> = (0..clusters.max(1))
            .map(|_| (0..dimensions).map(|_| gaussian()).collect())
            .collect();
        (0..count)
            .map(|_| {
                let pick = ((gaussian().abs() * 1e6) as usize) % centres.len();
                let mut point: Vec<f32> =
                    centres[pick].iter().map(|c| c + 0.6 * gaussian()).collect();
                if normalize {
                    let norm = point
                        .iter()
                        .map(|x| x * x)
                        .sum::<f32>()
                        .sqrt()
                        .max(f32::MIN_POSITIVE);
                    point.iter_mut().for_each(|x| *x /= norm);
                }
                point
            })
            .collect()
    }
}
