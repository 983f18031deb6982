//! Persistence: the structure (levels, neighbour lists, deleted flags, entry point) and the vectors of deleted nodes; the vectors of live nodes come from the caller (the snapshot).

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering as Atomic;

use super::*;

impl Graph {
    /// Writes everything but live nodes' vectors. `write_vector(node)` decides per node whether
    /// its vector is written (the caller can restore the others).
    pub fn write_structure(
        &self,
        out: &mut impl Write,
        mut write_vector: impl FnMut(u32) -> bool,
    ) -> io::Result<()> {
        let header = [
            self.dimensions as u64,
            u64::from(self.space == Space::L2),
            u64::from(self.normalized),
            self.m as u64,
            self.ef_construction as u64,
            self.len() as u64,
            self.entry.load(Atomic::Acquire),
            self.rng,
        ];
        for value in header {
            out.write_all(&value.to_le_bytes())?;
        }
        let mut buffer = Vec::with_capacity((self.m0 + 2) * 4);
        for node in 0..self.len() as u32 {
            buffer.clear();
            let level = self.levels[node as usize];
            buffer.push(level);
            buffer.push(u8::from(self.deleted[node as usize]));
            let own_vector = write_vector(node);
            buffer.push(u8::from(own_vector));
            for at in 0..=level as usize {
                let list = self.list(node, at);
                let neighbours: Vec<u32> = Self::neighbours(list).collect();
                buffer.extend_from_slice(&(neighbours.len() as u32).to_le_bytes());
                for id in neighbours {
                    buffer.extend_from_slice(&id.to_le_bytes());
                }
            }
            if own_vector {
                for half in self.vector(node) {
                    buffer.extend_from_slice(&half.to_le_bytes());
                }
            }
            out.write_all(&buffer)?;
        }
        Ok(())
    }

    /// Reads what [`Self::write_structure`] wrote; `vector_of(node)` supplies the vectors that
    /// were not written (as originally given: they are normalised again here if need be).
    pub fn read_structure(
        input: &mut impl Read,
        dimensions: usize,
        space: Space,
        normalized: bool,
        mut vector_of: impl FnMut(u32) -> Option<Vec<f32>>,
    ) -> io::Result<Self> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let mut word = [0u8; 8];
        let mut header = [0u64; 8];
        for value in &mut header {
            input.read_exact(&mut word)?;
            *value = u64::from_le_bytes(word);
        }
        let [dims, is_l2, is_normalized, m, ef_construction, nodes, entry, rng] = header;
        if dims as usize != dimensions
            || (is_l2 == 1) != (space == Space::L2)
            || (is_normalized == 1) != normalized
        {
            return Err(invalid("the graph was built for another configuration"));
        }
        let mut graph = Graph::new(
            dimensions,
            space,
            normalized,
            m as usize,
            ef_construction as usize,
        );
        if graph.m as u64 != m {
            return Err(invalid("bad M"));
        }
        let nodes = usize::try_from(nodes).map_err(|_| invalid("bad node count"))?;
        graph.reserve(nodes.min(1 << 24));
        let mut u32_buffer = [0u8; 4];
        let mut read_u32 = |input: &mut dyn Read| -> io::Result<u32> {
            input.read_exact(&mut u32_buffer)?;
            Ok(u32::from_le_bytes(u32_buffer))
        };
        let mut lists: Vec<u32> = Vec::new();
        let mut vector = vec![0u16; dimensions];
        let mut half = [0u8; 2];
        for node in 0..nodes as u32 {
            let mut flags = [0u8; 3];
            input.read_exact(&mut flags)?;
            let [level, deleted, own_vector] = flags;
            if level as usize > MAX_LEVEL {
                return Err(invalid("bad level"));
            }
            lists.clear();
            for at in 0..=level as usize {
                let count = read_u32(input)? as usize;
                if count > graph.capacity_at(at) {
                    return Err(invalid("bad neighbour count"));
                }
                lists.push(count as u32);
                for _ in 0..count {
                    let id = read_u32(input)?;
                    if id as usize >= nodes {
                        return Err(invalid("bad neighbour"));
                    }
                    lists.push(id);
                }
            }
            let values = if own_vector == 1 {
                for value in vector.iter_mut() {
                    input.read_exact(&mut half)?;
                    *value = u16::from_le_bytes(half);
                }
                let pushed = graph.push_raw(&vector, level as usize);
                debug_assert_eq!(pushed, node);
                None
            } else {
                Some(vector_of(node).ok_or_else(|| invalid("a live node has no vector"))?)
            };
            if let Some(values) = values {
                if values.len() != dimensions {
                    return Err(invalid("a vector has the wrong length"));
                }
                graph.push_with_level(&values, level as usize);
            }
            let mut position = 0;
            for at in 0..=level as usize {
                let count = lists[position] as usize;
                let list = graph.list(node, at);
                list[0].store(count as u32, Atomic::Relaxed);
                for (slot, id) in lists[position + 1..position + 1 + count].iter().enumerate() {
                    list[1 + slot].store(*id, Atomic::Relaxed);
                }
                position += 1 + count;
            }
            if deleted == 1 {
                graph.mark_deleted(node);
            }
        }
        if entry != NO_ENTRY {
            let (level, node) = ((entry >> 32) as usize, entry as u32);
            if node as usize >= nodes || graph.levels[node as usize] as usize != level {
                return Err(invalid("bad entry point"));
            }
        }
        graph.entry.store(entry, Atomic::Release);
        graph.rng = rng;
        Ok(graph)
    }

    /// Like `push_with_level` for a vector as stored (bfloat16, normalised if need be).
    fn push_raw(&mut self, values: &[u16], level: usize) -> u32 {
        let node = self.push_with_level(&vec![0.0; self.dimensions], level);
        let start = node as usize * self.dimensions;
        self.vectors[start..start + self.dimensions].copy_from_slice(values);
        node
    }
}
