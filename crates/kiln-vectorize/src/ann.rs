//! Approximate nearest-neighbour search over one index's vectors: an HNSW graph (`hnsw`) whose
//! keys are the state's slot numbers.
//!
//! # Why an own graph
//!
//! Until this version the graph was usearch 2.26 (C++, through `cxx`). On 100,000 × 384
//! clustered vectors (`examples/recall_bench.rs`), one query at a time on one thread, it did
//! 0.43–0.51× the queries per second of hnswlib at the same ef and recall. Two causes were
//! measured: its f32 kernels (NumKong) widen every product to f64 with one accumulator chain
//! (a custom f32 kernel through `change_metric` gave +20–60%), and its search loop (a hash set
//! of visited nodes, a pointer per vector, no prefetching) — with the fast kernel it was still
//! about 0.6–0.7× hnswlib. `hnsw` has hnswlib's algorithm with a flat layout, an epoch-tagged
//! visited list, prefetching, AVX2 + FMA kernels and bfloat16 vectors for traversal (with exact
//! rescoring of 2 × topK candidates): 1.2–1.5× hnswlib at equal recall, figures in
//! docs/benchmarks.md ("Vectorize").
//!
//! # How it is used
//!
//! The graph is built once an index holds [`StoreOptions::ann_min_vectors`](crate::StoreOptions)
//! vectors (below that, exact search is as fast and simpler), then kept up to date on every
//! applied batch of mutations in three steps (see `index`): under the state's write lock the
//! new vectors are copied in as hidden nodes ([`AnnIndex::push_hidden`]); under the read lock,
//! queries going on, they are linked ([`AnnIndex::link`], on every core); under the write lock
//! again the mutations are applied to the state and the graph together, revealing the new nodes
//! ([`AnnIndex::reveal`]) and marking removed or replaced ones deleted, so that a query sees a
//! mutation wholly or not at all while the write lock is only held for copying. Once deleted
//! nodes outnumber live ones the graph is rebuilt from scratch, off the query path. Scores are
//! never taken from the graph: candidates are rescored exactly from the stored vectors (see
//! `search`). The graph is saved beside each snapshot and loaded at start (see `snapshot`).

use std::io::{self, Read, Write};
use std::sync::Mutex;

use crate::hnsw::Graph;
use crate::kernels::Space;
use crate::metric::Metric;

/// HNSW `M`: links per node (2·M at level 0).
pub const CONNECTIVITY: usize = 16;
/// Candidates explored while inserting.
pub const EXPANSION_ADD: usize = 128;
/// Candidates explored while searching (for topK up to 64; see [`expansion_for`]). 128
/// keeps recall@10 ≥ 0.99 on the benchmark's 100,000 clustered vectors for every metric, what
/// the store promised with usearch; it is also fast enough to beat hnswlib at equal recall
/// (docs/benchmarks.md), so there was no reason to trade recall for speed.
pub const EXPANSION_SEARCH: usize = 128;

/// The ef a query for `top_k` results searches with: [`EXPANSION_SEARCH`], or 2 × topK when that
/// is more, so that recall holds up for large topK.
pub fn expansion_for(top_k: usize) -> usize {
    EXPANSION_SEARCH.max(top_k.saturating_mul(2))
}

const NO_NODE: u32 = u32::MAX;

pub struct AnnIndex {
    graph: Graph,
    /// Node → key.
    keys: Vec<u64>,
    /// Key (a state slot) → node, `NO_NODE` when the key has none.
    nodes: Vec<u32>,
    /// Pushed but not linked yet.
    pending: Mutex<Vec<u32>>,
}

fn space_of(metric: Metric) -> (Space, bool) {
    match metric {
        // Unit vectors: the dot product orders exactly as cosine similarity.
        Metric::Cosine => (Space::Dot, true),
        Metric::Euclidean => (Space::L2, false),
        Metric::DotProduct => (Space::Dot, false),
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |count| count.get())
}

impl AnnIndex {
    pub fn new(dimensions: usize, metric: Metric, capacity: usize) -> Self {
        let (space, normalized) = space_of(metric);
        let mut graph = Graph::new(dimensions, space, normalized, CONNECTIVITY, EXPANSION_ADD);
        graph.reserve(capacity);
        Self {
            graph,
            keys: Vec::with_capacity(capacity),
            nodes: Vec::new(),
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Builds a graph of `items` using every core.
    pub fn build(dimensions: usize, metric: Metric, items: &[(u64, &[f32])]) -> Self {
        let mut ann = Self::new(dimensions, metric, items.len() + items.len() / 4);
        for (key, values) in items {
            ann.stage(*key, values);
        }
        ann.link_pending();
        ann
    }

    /// Live keys.
    pub fn live(&self) -> usize {
        self.graph.len() - self.graph.deleted_count()
    }

    /// Deleted nodes (they still route searches until the graph is rebuilt).
    pub fn deleted(&self) -> usize {
        self.graph.deleted_count()
    }

    /// Copies in the vector of `key` (replacing any it had); searchable after `link_pending`.
    pub fn stage(&mut self, key: u64, values: &[f32]) {
        let node = self.push_hidden(values);
        self.reveal(key, node);
        self.pending
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(node);
    }

    /// Copies in a vector that no key has yet: it is never returned until [`Self::reveal`]
    /// gives it one, but can be linked before that ([`Self::link`]).
    pub fn push_hidden(&mut self, values: &[f32]) -> u32 {
        let node = self.graph.push(values);
        self.graph.set_deleted(node, true);
        self.keys.push(u64::MAX);
        node
    }

    /// Links nodes from [`Self::push_hidden`], on every core; searches may run meanwhile.
    pub fn link(&self, nodes: &[u32]) {
        self.graph.link_all(nodes, threads());
    }

    /// Makes a hidden node `key`'s (replacing any node it had).
    pub fn reveal(&mut self, key: u64, node: u32) {
        self.remove(key);
        self.keys[node as usize] = key;
        let index = key as usize;
        if self.nodes.len() <= index {
            self.nodes.resize(index + 1, NO_NODE);
        }
        self.nodes[index] = node;
        self.graph.set_deleted(node, false);
    }

    pub fn remove(&mut self, key: u64) {
        if let Some(node) = self.nodes.get_mut(key as usize) {
            if *node != NO_NODE {
                self.graph.mark_deleted(*node);
                *node = NO_NODE;
            }
        }
    }

    /// Links every staged node, on every core; searches may run meanwhile.
    pub fn link_pending(&self) {
        let pending = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let live: Vec<u32> = pending
            .into_iter()
            .filter(|node| !self.graph.is_deleted(*node))
            .collect();
        self.link(&live);
    }

    /// The `count` nearest keys for a query of `top_k` results (`count` ≥ `top_k` candidates to
    /// rescore), best first by the graph's approximate order.
    pub fn search(&self, query: &[f32], top_k: usize, count: usize) -> Vec<u64> {
        self.search_with(query, count, expansion_for(top_k).max(count))
    }

    /// The `count` nearest keys searching with `ef` (benchmarks sweep it).
    pub fn search_with(&self, query: &[f32], count: usize, ef: usize) -> Vec<u64> {
        self.graph
            .search(query, count, ef, None)
            .into_iter()
            .map(|near| self.keys[near.node as usize])
            .collect()
    }

    /// Like [`Self::search`] but only keys for which `allowed` holds are returned.
    pub fn filtered_search(
        &self,
        query: &[f32],
        top_k: usize,
        count: usize,
        allowed: impl Fn(u64) -> bool,
    ) -> Vec<u64> {
        let keys = &self.keys;
        let allowed = |node: u32| allowed(keys[node as usize]);
        let ef = expansion_for(top_k).max(count);
        self.graph
            .search(query, count, ef, Some(&allowed))
            .into_iter()
            .map(|near| self.keys[near.node as usize])
            .collect()
    }

    /// Writes the graph with its keys translated by `key_map` (a key that maps to `None` is
    /// written as deleted, with its vector). Nodes whose key maps to `Some` are restored by
    /// [`Self::read`] from the vector store.
    pub fn write(
        &self,
        out: &mut impl Write,
        key_map: impl Fn(u64) -> Option<u64>,
    ) -> io::Result<()> {
        if !self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_empty()
        {
            return Err(io::Error::other("the graph has nodes not linked yet"));
        }
        let mapped: Vec<Option<u64>> = (0..self.graph.len())
            .map(|node| {
                if self.graph.is_deleted(node as u32) {
                    None
                } else {
                    key_map(self.keys[node])
                }
            })
            .collect();
        out.write_all(&(mapped.len() as u64).to_le_bytes())?;
        for key in &mapped {
            out.write_all(&key.unwrap_or(u64::MAX).to_le_bytes())?;
        }
        self.graph
            .write_structure(out, |node| mapped[node as usize].is_none())
    }

    /// Reads what [`Self::write`] wrote; `vector_of(key)` gives a live key's (original) vector.
    pub fn read<'a>(
        input: &mut impl Read,
        dimensions: usize,
        metric: Metric,
        vector_of: impl Fn(u64) -> Option<&'a [f32]>,
    ) -> io::Result<Self> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let mut word = [0u8; 8];
        input.read_exact(&mut word)?;
        let count =
            usize::try_from(u64::from_le_bytes(word)).map_err(|_| invalid("bad node count"))?;
        let mut keys = Vec::with_capacity(count.min(1 << 24));
        for _ in 0..count {
            input.read_exact(&mut word)?;
            keys.push(u64::from_le_bytes(word));
        }
        let (space, normalized) = space_of(metric);
        let mut graph = Graph::read_structure(input, dimensions, space, normalized, |node| {
            keys.get(node as usize)
                .filter(|key| **key != u64::MAX)
                .and_then(|key| vector_of(*key))
                .map(<[f32]>::to_vec)
        })?;
        if graph.len() != count {
            return Err(invalid("the node count does not match"));
        }
        let mut nodes = Vec::new();
        for (node, key) in keys.iter().enumerate() {
            if *key == u64::MAX {
                graph.mark_deleted(node as u32);
                continue;
            }
            if graph.is_deleted(node as u32) {
                continue;
            }
            let index = usize::try_from(*key).map_err(|_| invalid("bad key"))?;
            if nodes.len() <= index {
                nodes.resize(index + 1, NO_NODE);
            }
            if nodes[index] != NO_NODE {
                return Err(invalid("a key has two live nodes"));
            }
            nodes[index] = node as u32;
        }
        Ok(Self {
            graph,
            keys,
            nodes,
            pending: Mutex::new(Vec::new()),
        })
    }
}
