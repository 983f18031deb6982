//! The in-memory state of one index: what queries see. Only the apply thread changes it, one
//! logged mutation at a time, in log order.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::ann::AnnIndex;
use crate::codec::{Metadata, Mutation, MutationOp};
use crate::filter::{indexed_properties, IndexedProperties, MetadataIndexType};
use crate::metric::Metric;
use crate::record::VectorRecord;

pub struct StoredVector {
    pub id: String,
    pub values: Vec<f32>,
    pub namespace: Option<String>,
    pub metadata: Option<Metadata>,
    /// The metadata-index values taken when this vector was written (see `filter`).
    pub indexed: IndexedProperties,
}

/// The last applied mutation, for `info`.
#[derive(Debug, Clone, PartialEq)]
pub struct LastMutation {
    pub seq: u64,
    pub mutation_id: String,
    pub unix_millis: i64,
}

pub struct IndexState {
    pub dimensions: usize,
    pub metric: Metric,
    /// Slot number = ANN key. Freed slots are reused, so slots stay about as many as vectors.
    pub slots: Vec<Option<StoredVector>>,
    free_slots: Vec<u32>,
    /// id → slot, ordered so that `list` pages through ids in order.
    pub ids: BTreeMap<String, u32>,
    pub namespaces: HashMap<String, BTreeSet<u32>>,
    /// In creation order.
    pub metadata_indexes: Vec<(String, MetadataIndexType)>,
    pub last: Option<LastMutation>,
    pub ann: Option<AnnIndex>,
    /// Vectors added or removed since the graph was built; past the graph's size it is rebuilt.
    pub changes_since_ann_build: usize,
    pub ann_built_with: usize,
}

impl IndexState {
    pub fn new(dimensions: usize, metric: Metric) -> Self {
        Self {
            dimensions,
            metric,
            slots: Vec::new(),
            free_slots: Vec::new(),
            ids: BTreeMap::new(),
            namespaces: HashMap::new(),
            metadata_indexes: Vec::new(),
            last: None,
            ann: None,
            changes_since_ann_build: 0,
            ann_built_with: 0,
        }
    }

    pub fn vector_count(&self) -> usize {
        self.ids.len()
    }

    pub fn vector(&self, slot: u32) -> Option<&StoredVector> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    pub fn by_id(&self, id: &str) -> Option<&StoredVector> {
        self.ids.get(id).and_then(|slot| self.vector(*slot))
    }

    pub fn metadata_index_map(&self) -> BTreeMap<String, MetadataIndexType> {
        self.metadata_indexes.iter().cloned().collect()
    }

    /// Applies one mutation, to the vectors and to the graph (if there is one).
    pub fn apply(&mut self, mutation: Mutation) {
        let mut added = Vec::new();
        match mutation.op {
            MutationOp::Insert(vectors) => {
                for vector in vectors {
                    // First write wins, including within one batch.
                    if !self.ids.contains_key(&vector.id) {
                        added.push(self.add(vector));
                    }
                }
            }
            MutationOp::Upsert(vectors) => {
                for vector in vectors {
                    self.remove(&vector.id);
                    added.push(self.add(vector));
                }
                // An id given twice in one batch frees its first slot, which the second may
                // reuse: keep each live slot once.
                added.sort_unstable();
                added.dedup();
                added.retain(|slot| self.vector(*slot).is_some());
            }
            MutationOp::Delete(ids) => {
                for id in ids {
                    self.remove(&id);
                }
            }
            MutationOp::CreateMetadataIndex {
                property,
                index_type,
            } => {
                // Vectors already stored are not indexed (spec §5.3): nothing to backfill.
                if !self
                    .metadata_indexes
                    .iter()
                    .any(|(name, _)| *name == property)
                {
                    self.metadata_indexes.push((property, index_type));
                }
            }
            MutationOp::DeleteMetadataIndex { property } => {
                self.metadata_indexes.retain(|(name, _)| *name != property);
                // If it is created again, vectors written before then must not be in it.
                for vector in self.slots.iter_mut().flatten() {
                    vector.indexed.retain(|(name, _)| *name != property);
                }
            }
        }
        self.last = Some(LastMutation {
            seq: mutation.seq,
            mutation_id: mutation.mutation_id,
            unix_millis: mutation.unix_millis,
        });
        // Added now, before the next mutation can remove any of them again.
        self.add_to_ann(&added);
    }

    /// Stores a vector as written now (its indexed properties taken from today's indexes).
    fn add(&mut self, record: VectorRecord) -> u32 {
        let indexed = indexed_properties(record.metadata.as_ref(), &self.metadata_indexes);
        self.add_stored(StoredVector {
            id: record.id,
            values: record.values,
            namespace: record.namespace,
            metadata: record.metadata,
            indexed,
        })
    }

    /// Stores a vector exactly as given (snapshot load keeps its historical indexed values).
    pub fn add_stored(&mut self, vector: StoredVector) -> u32 {
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(None);
            (self.slots.len() - 1) as u32
        });
        self.ids.insert(vector.id.clone(), slot);
        if let Some(namespace) = &vector.namespace {
            self.namespaces
                .entry(namespace.clone())
                .or_default()
                .insert(slot);
        }
        self.slots[slot as usize] = Some(vector);
        self.changes_since_ann_build += 1;
        slot
    }

    fn remove(&mut self, id: &str) {
        let Some(slot) = self.ids.remove(id) else {
            return;
        };
        let Some(vector) = self.slots[slot as usize].take() else {
            return;
        };
        if let Some(namespace) = &vector.namespace {
            if let Some(members) = self.namespaces.get_mut(namespace) {
                members.remove(&slot);
                if members.is_empty() {
                    self.namespaces.remove(namespace);
                }
            }
        }
        if let Some(ann) = &self.ann {
            if let Err(reason) = ann.remove(u64::from(slot)) {
                tracing::warn!(%reason, "vectorize: dropping the ANN graph after a failed removal");
                self.ann = None;
            }
        }
        self.free_slots.push(slot);
        self.changes_since_ann_build += 1;
    }

    /// Puts freshly added slots into the graph, if there is one.
    fn add_to_ann(&mut self, slots: &[u32]) {
        let Some(ann) = &self.ann else {
            return;
        };
        let items: Vec<(u64, &[f32])> = slots
            .iter()
            .filter_map(|slot| {
                self.vector(*slot)
                    .map(|v| (u64::from(*slot), v.values.as_slice()))
            })
            .collect();
        if let Err(reason) = ann.add_parallel(&items) {
            tracing::warn!(%reason, "vectorize: dropping the ANN graph after a failed insert");
            self.ann = None;
        }
    }

    /// Whether the graph should be (re)built: none yet and enough vectors, or as many changes
    /// as it had vectors when built (deleted nodes degrade a graph).
    pub fn wants_ann_build(&self, ann_min_vectors: usize) -> bool {
        let enough = self.vector_count() >= ann_min_vectors;
        match &self.ann {
            None => enough,
            Some(_) => {
                enough && self.changes_since_ann_build > self.ann_built_with.max(ann_min_vectors)
            }
        }
    }

    /// Builds a graph of the current vectors (read access only: queries go on meanwhile).
    pub fn build_ann(&self) -> Result<AnnIndex, String> {
        let items: Vec<(u64, &[f32])> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, vector)| {
                vector.as_ref().map(|v| (slot as u64, v.values.as_slice()))
            })
            .collect();
        AnnIndex::build(self.dimensions, self.metric, &items)
    }

    pub fn install_ann(&mut self, ann: AnnIndex) {
        self.ann = Some(ann);
        self.ann_built_with = self.vector_count();
        self.changes_since_ann_build = 0;
    }
}
