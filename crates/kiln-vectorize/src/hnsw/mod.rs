//! A hierarchical navigable small world graph (Malkov & Yashunin, 2016), laid out for fast
//! single-query search: every vector in one contiguous array, as bfloat16 (see `kernels`), every
//! level-0 neighbour list in one contiguous array (`count, id, id, …`, a fixed stride), a reusable
//! visited list per search (epoch-tagged, no clearing), and the vectors of a node's unvisited
//! neighbours prefetched before their distances are computed. The construction follows
//! hnswlib: level ~ ⌊-ln U / ln M⌋, `ef_construction` candidates per level, the "heuristic"
//! neighbour selection, M links per node above level 0 and 2·M at level 0.
//!
//! # Adding nodes in two steps
//!
//! [`Graph::push`] (`&mut self`) appends a node's vector and allocates its (empty) neighbour
//! lists; the node is not reachable yet. [`Graph::link`] / [`Graph::link_all`] (`&self`) then
//! connect pushed nodes, from several threads at once and while searches run: neighbour lists
//! are atomics (each entry is always some pushed node's id, so a reader that races a writer
//! sees old or new neighbours, never garbage), writers take a small per-node lock, and vectors
//! are only written by `push`, which needs exclusive access. So the store holds its write lock
//! only to push (a copy of the vectors) and links under its read lock, with queries going on.
//!
//! Removal marks a node deleted: it still routes searches but is never returned (a node can
//! also be pushed deleted — hidden — linked, and revealed later). The store rebuilds the graph
//! once deleted nodes outnumber live ones, which drops them.

use std::cmp::Reverse;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering as Atomic};
use std::sync::Mutex;

use crate::kernels::{self, DistanceFn, Space};

pub use parts::Near;
use parts::{NodeLock, Scratch};

const NO_ENTRY: u64 = u64::MAX;
const MAX_LEVEL: usize = 15;
/// Cache lines of each neighbour's vector requested ahead of computing its distance (all of a
/// 384-dimension bfloat16 vector; the hardware prefetcher follows on for longer ones).
const PREFETCH_LINES: usize = 12;
/// Nodes claimed at a time by each thread of [`Graph::link_all`].
const LINK_CHUNK: usize = 32;

pub struct Graph {
    dimensions: usize,
    space: Space,
    /// Vectors are stored (and queries searched) at unit length: cosine as a dot product.
    normalized: bool,
    distance: DistanceFn,
    m: usize,
    m0: usize,
    ef_construction: usize,
    level_scale: f64,
    /// bfloat16, `dimensions` per node.
    vectors: Vec<u16>,
    /// `m0 + 1` entries per node: the count, then the neighbours.
    links0: Vec<AtomicU32>,
    /// Levels 1..=level of each node, `m + 1` entries per level (empty for level-0 nodes).
    upper: Vec<Box<[AtomicU32]>>,
    levels: Vec<u8>,
    deleted: Vec<bool>,
    deleted_count: usize,
    locks: Vec<AtomicBool>,
    /// `level << 32 | node`, or `NO_ENTRY`.
    entry: AtomicU64,
    entry_lock: Mutex<()>,
    rng: u64,
    scratch: Mutex<Vec<Scratch>>,
}

impl Graph {
    pub fn new(
        dimensions: usize,
        space: Space,
        normalized: bool,
        m: usize,
        ef_construction: usize,
    ) -> Self {
        let m = m.clamp(2, 64);
        Self {
            dimensions,
            space,
            normalized,
            distance: space.distance_fn(),
            m,
            m0: 2 * m,
            ef_construction: ef_construction.max(m),
            level_scale: 1.0 / (m as f64).ln(),
            vectors: Vec::new(),
            links0: Vec::new(),
            upper: Vec::new(),
            levels: Vec::new(),
            deleted: Vec::new(),
            deleted_count: 0,
            locks: Vec::new(),
            entry: AtomicU64::new(NO_ENTRY),
            entry_lock: Mutex::new(()),
            rng: 0x2545_F491_4F6C_DD1D,
            scratch: Mutex::new(Vec::new()),
        }
    }

    /// Nodes, deleted ones included.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn deleted_count(&self) -> usize {
        self.deleted_count
    }

    pub fn is_deleted(&self, node: u32) -> bool {
        self.deleted[node as usize]
    }

    pub fn reserve(&mut self, additional: usize) {
        self.vectors.reserve(additional * self.dimensions);
        self.links0.reserve(additional * (self.m0 + 1));
        self.upper.reserve(additional);
        self.levels.reserve(additional);
        self.deleted.reserve(additional);
        self.locks.reserve(additional);
    }

    fn random_level(&mut self) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let uniform = ((self.rng >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-uniform.ln() * self.level_scale) as usize).min(MAX_LEVEL)
    }

    /// Appends a node (not yet reachable: see [`Self::link`]). `values` has `dimensions` values.
    pub fn push(&mut self, values: &[f32]) -> u32 {
        let level = self.random_level();
        self.push_with_level(values, level)
    }

    fn push_with_level(&mut self, values: &[f32], level: usize) -> u32 {
        debug_assert_eq!(values.len(), self.dimensions);
        let node = self.levels.len() as u32;
        if self.normalized {
            let mut unit = values.to_vec();
            kernels::normalize(&mut unit);
            self.vectors
                .extend(unit.iter().map(|x| kernels::to_bf16(*x)));
        } else {
            self.vectors
                .extend(values.iter().map(|x| kernels::to_bf16(*x)));
        }
        self.links0.extend((0..=self.m0).map(|_| AtomicU32::new(0)));
        self.upper.push(
            (0..level * (self.m + 1))
                .map(|_| AtomicU32::new(0))
                .collect(),
        );
        self.levels.push(level as u8);
        self.deleted.push(false);
        self.locks.push(AtomicBool::new(false));
        node
    }

    pub fn mark_deleted(&mut self, node: u32) {
        self.set_deleted(node, true);
    }

    /// Deleted nodes are never returned; a node can be pushed deleted (hidden), linked, and
    /// revealed later.
    pub fn set_deleted(&mut self, node: u32, deleted: bool) {
        if let Some(flag) = self.deleted.get_mut(node as usize) {
            if *flag != deleted {
                *flag = deleted;
                if deleted {
                    self.deleted_count += 1;
                } else {
                    self.deleted_count -= 1;
                }
            }
        }
    }

    #[inline(always)]
    fn vector(&self, node: u32) -> &[u16] {
        let start = node as usize * self.dimensions;
        &self.vectors[start..start + self.dimensions]
    }

    /// A stored vector as f32 (to measure from it).
    fn decode(&self, node: u32, into: &mut Vec<f32>) {
        into.clear();
        into.extend(
            self.vector(node)
                .iter()
                .map(|half| kernels::from_bf16(*half)),
        );
    }

    #[inline(always)]
    fn measure(&self, query: &[f32], node: u32) -> f32 {
        (self.distance)(query, self.vector(node))
    }

    /// The neighbour list of `node` at `level`: `[count, id…]`.
    #[inline(always)]
    fn list(&self, node: u32, level: usize) -> &[AtomicU32] {
        if level == 0 {
            let start = node as usize * (self.m0 + 1);
            &self.links0[start..start + self.m0 + 1]
        } else {
            let start = (level - 1) * (self.m + 1);
            &self.upper[node as usize][start..start + self.m + 1]
        }
    }

    fn capacity_at(&self, level: usize) -> usize {
        if level == 0 {
            self.m0
        } else {
            self.m
        }
    }

    /// The current neighbours (a racing writer may make this a mix of old and new ones).
    #[inline(always)]
    fn neighbours(list: &[AtomicU32]) -> impl Iterator<Item = u32> + '_ {
        let count = (list[0].load(Atomic::Relaxed) as usize).min(list.len() - 1);
        list[1..=count].iter().map(|id| id.load(Atomic::Relaxed))
    }

    fn entry(&self) -> Option<(usize, u32)> {
        match self.entry.load(Atomic::Acquire) {
            NO_ENTRY => None,
            packed => Some(((packed >> 32) as usize, packed as u32)),
        }
    }

    fn take_scratch(&self) -> Scratch {
        self.scratch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn return_scratch(&self, scratch: Scratch) {
        self.scratch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(scratch);
    }

    /// Greedy descent from the entry point to `down_to` (exclusive of levels below it).
    fn descend(&self, query: &[f32], from: (usize, u32), down_to: usize) -> Near {
        let (top_level, mut node) = from;
        let mut distance = self.measure(query, node);
        for level in (down_to..=top_level).rev() {
            if level == 0 {
                break;
            }
            loop {
                let mut moved = false;
                for next in Self::neighbours(self.list(node, level)) {
                    let d = self.measure(query, next);
                    if d < distance {
                        distance = d;
                        node = next;
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        Near { distance, node }
    }

    /// Best-first search of one level from `start`, keeping the `ef` closest accepted nodes in
    /// `scratch.top`. Nodes that are not accepted (deleted, filtered out) still route the search;
    /// when there are such nodes the search goes on until it has `ef` accepted ones or runs out.
    #[allow(clippy::too_many_arguments)]
    fn search_level(
        &self,
        query: &[f32],
        start: Near,
        level: usize,
        ef: usize,
        restricted: bool,
        accept: impl Fn(u32) -> bool,
        scratch: &mut Scratch,
    ) {
        scratch.begin(self.len());
        scratch.visit(start.node);
        scratch.candidates.push(Reverse(start));
        let mut bound = f32::INFINITY;
        if accept(start.node) {
            scratch.top.push(start);
            bound = start.distance;
        }
        let mut fresh = [0u32; 128];
        while let Some(Reverse(closest)) = scratch.candidates.peek().copied() {
            if closest.distance > bound && (scratch.top.len() >= ef || !restricted) {
                break;
            }
            scratch.candidates.pop();
            if let Some(Reverse(following)) = scratch.candidates.peek() {
                // Likely the next node expanded: start loading its neighbour list now.
                kernels::prefetch(self.list(following.node, level), 3);
            }
            let mut count = 0;
            for next in Self::neighbours(self.list(closest.node, level)) {
                if !scratch.visit(next) && count < fresh.len() {
                    kernels::prefetch(self.vector(next), PREFETCH_LINES);
                    fresh[count] = next;
                    count += 1;
                }
            }
            for &next in &fresh[..count] {
                let distance = self.measure(query, next);
                if scratch.top.len() < ef || distance < bound {
                    let near = Near {
                        distance,
                        node: next,
                    };
                    scratch.candidates.push(Reverse(near));
                    if accept(next) {
                        scratch.top.push(near);
                        if scratch.top.len() > ef {
                            scratch.top.pop();
                        }
                        bound = scratch.top.peek().map_or(f32::INFINITY, |far| far.distance);
                    }
                }
            }
        }
    }

    /// The `count` nearest nodes that are not deleted and pass `allowed`, nearest first,
    /// searching level 0 with `ef` (at least `count`) candidates.
    pub fn search(
        &self,
        query: &[f32],
        count: usize,
        ef: usize,
        allowed: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<Near> {
        let Some(entry) = self.entry() else {
            return Vec::new();
        };
        if count == 0 {
            return Vec::new();
        }
        let normalized;
        let query = if self.normalized {
            let mut copy = query.to_vec();
            kernels::normalize(&mut copy);
            normalized = copy;
            &normalized[..]
        } else {
            query
        };
        let start = self.descend(query, entry, 1);
        let mut scratch = self.take_scratch();
        let ef = ef.max(count);
        let restricted = self.deleted_count > 0 || allowed.is_some();
        match allowed {
            None if self.deleted_count == 0 => {
                self.search_level(query, start, 0, ef, false, |_| true, &mut scratch)
            }
            None => self.search_level(
                query,
                start,
                0,
                ef,
                true,
                |node| !self.deleted[node as usize],
                &mut scratch,
            ),
            Some(allowed) => self.search_level(
                query,
                start,
                0,
                ef,
                restricted,
                |node| !self.deleted[node as usize] && allowed(node),
                &mut scratch,
            ),
        }
        let mut found: Vec<Near> = scratch.top.drain().collect();
        found.sort_unstable();
        found.truncate(count);
        self.return_scratch(scratch);
        found
    }

    /// hnswlib's "heuristic": from `candidates` (nearest first), keep a candidate only if it is
    /// closer to the base than to every candidate already kept; at most `limit`.
    fn select(&self, candidates: &[Near], limit: usize, chosen: &mut Vec<Near>) {
        chosen.clear();
        if candidates.len() <= limit {
            chosen.extend_from_slice(candidates);
            return;
        }
        let mut vector = Vec::with_capacity(self.dimensions);
        for candidate in candidates {
            if chosen.len() >= limit {
                break;
            }
            self.decode(candidate.node, &mut vector);
            let diverse = chosen
                .iter()
                .all(|kept| self.measure(&vector, kept.node) >= candidate.distance);
            if diverse {
                chosen.push(*candidate);
            }
        }
    }

    /// Adds `links` (nearest first, distances from `node`) to `node`'s list at `level`: appended
    /// while there is room, else merged with the current neighbours and pruned by the heuristic.
    fn merge_links(&self, node: u32, level: usize, links: &[Near]) {
        let list = self.list(node, level);
        let capacity = self.capacity_at(level);
        let _lock = NodeLock::acquire(&self.locks[node as usize]);
        let count = (list[0].load(Atomic::Relaxed) as usize).min(capacity);
        let current = |position: usize| list[1 + position].load(Atomic::Relaxed);
        let mut fresh: Vec<Near> = Vec::with_capacity(links.len());
        for link in links {
            let known = (0..count).any(|position| current(position) == link.node)
                || fresh.iter().any(|added| added.node == link.node);
            if link.node != node && !known {
                fresh.push(*link);
            }
        }
        if fresh.is_empty() {
            return;
        }
        if count + fresh.len() <= capacity {
            // Entries first, then the count: a concurrent reader sees a valid prefix.
            for (offset, near) in fresh.iter().enumerate() {
                list[1 + count + offset].store(near.node, Atomic::Relaxed);
            }
            list[0].store((count + fresh.len()) as u32, Atomic::Release);
            return;
        }
        let mut vector = Vec::with_capacity(self.dimensions);
        self.decode(node, &mut vector);
        let mut merged: Vec<Near> = (0..count)
            .map(|position| {
                let id = current(position);
                Near {
                    distance: self.measure(&vector, id),
                    node: id,
                }
            })
            .collect();
        merged.extend_from_slice(&fresh);
        merged.sort_unstable();
        let mut chosen = Vec::with_capacity(capacity);
        self.select(&merged, capacity, &mut chosen);
        for (position, near) in chosen.iter().enumerate() {
            list[1 + position].store(near.node, Atomic::Relaxed);
        }
        list[0].store(chosen.len() as u32, Atomic::Release);
    }

    /// Connects a pushed node to the graph. Safe to call from several threads for different
    /// nodes, and while searches run.
    pub fn link(&self, node: u32) {
        let level = self.levels[node as usize] as usize;
        let mut entry = self.entry();
        // A node that may become the entry point holds the entry lock throughout, as in
        // hnswlib, so that two such nodes do not both take the entry from a stale view.
        let _guard = match entry {
            Some((top, _)) if top >= level => None,
            _ => {
                let guard = self
                    .entry_lock
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                entry = self.entry();
                Some(guard)
            }
        };
        let Some((top_level, _)) = entry.filter(|(_, at)| *at != node) else {
            if entry.is_none() {
                self.entry
                    .store((level as u64) << 32 | u64::from(node), Atomic::Release);
            }
            return;
        };
        let mut query = Vec::with_capacity(self.dimensions);
        self.decode(node, &mut query);
        let query = &query[..];
        let mut start = self.descend(query, entry.expect("checked above"), level + 1);
        let mut scratch = self.take_scratch();
        let mut candidates = Vec::with_capacity(self.ef_construction);
        let mut chosen = Vec::with_capacity(self.m0);
        for at in (0..=level.min(top_level)).rev() {
            self.search_level(
                query,
                start,
                at,
                self.ef_construction,
                false,
                |_| true,
                &mut scratch,
            );
            candidates.clear();
            candidates.extend(scratch.top.drain().filter(|near| near.node != node));
            candidates.sort_unstable();
            if let Some(nearest) = candidates.first() {
                start = *nearest;
            }
            self.select(&candidates, self.m, &mut chosen);
            self.merge_links(node, at, &chosen);
            for near in &chosen {
                self.merge_links(
                    near.node,
                    at,
                    &[Near {
                        distance: near.distance,
                        node,
                    }],
                );
            }
        }
        self.return_scratch(scratch);
        if level > top_level {
            self.entry
                .store((level as u64) << 32 | u64::from(node), Atomic::Release);
        }
    }

    /// Links `nodes` on up to `threads` threads.
    pub fn link_all(&self, nodes: &[u32], threads: usize) {
        if nodes.len() < 4 * LINK_CHUNK || threads <= 1 {
            nodes.iter().for_each(|node| self.link(*node));
            return;
        }
        // The first few nodes alone, so that the others start from a graph with some shape.
        let head = nodes.len().min(LINK_CHUNK);
        nodes[..head].iter().for_each(|node| self.link(*node));
        let next = AtomicUsize::new(head);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let start = next.fetch_add(LINK_CHUNK, Atomic::Relaxed);
                    if start >= nodes.len() {
                        break;
                    }
                    let end = (start + LINK_CHUNK).min(nodes.len());
                    nodes[start..end].iter().for_each(|node| self.link(*node));
                });
            }
        });
    }
}

mod parts;
mod persist;
#[cfg(test)]
mod tests;
