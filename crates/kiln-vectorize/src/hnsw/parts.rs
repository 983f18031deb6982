//! The small pieces a search works with: a scored node, the per-search scratch space, and the
//! per-node lock that writers of a neighbour list take.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering as Atomic};

/// A node and its distance to whatever is being searched for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Near {
    pub distance: f32,
    pub node: u32,
}

impl Eq for Near {}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Per-search working memory, pooled so that searches do not allocate.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) marks: Vec<u16>,
    pub(super) epoch: u16,
    pub(super) candidates: BinaryHeap<Reverse<Near>>,
    pub(super) top: BinaryHeap<Near>,
}

impl Scratch {
    /// Forgets every visit, for a graph of `nodes` nodes.
    pub(super) fn begin(&mut self, nodes: usize) {
        if self.marks.len() < nodes {
            self.marks.resize(nodes, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.iter_mut().for_each(|mark| *mark = 0);
            self.epoch = 1;
        }
        self.candidates.clear();
        self.top.clear();
    }

    /// Marks `node` visited; whether it already was.
    #[inline(always)]
    pub(super) fn visit(&mut self, node: u32) -> bool {
        let mark = &mut self.marks[node as usize];
        let seen = *mark == self.epoch;
        *mark = self.epoch;
        seen
    }
}

/// A spin lock (writers of one node's neighbour lists hold it for microseconds).
pub(super) struct NodeLock<'a>(&'a AtomicBool);

impl<'a> NodeLock<'a> {
    pub(super) fn acquire(flag: &'a AtomicBool) -> Self {
        let mut spins = 0u32;
        while flag
            .compare_exchange_weak(false, true, Atomic::Acquire, Atomic::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        Self(flag)
    }
}

impl Drop for NodeLock<'_> {
    fn drop(&mut self) {
        self.0.store(false, Atomic::Release);
    }
}
