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
    /// Whether `ann` was read from `graph.bin` rather than built here (tests, diagnostics).
    pub ann_from_disk: bool,
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
            ann_from_disk: false,
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

    /// Applies one mutation, to the vectors and to the graph (if there is one): vectors added to
    /// the graph are searchable once [`Self::link_ann`] has run.
    pub fn apply(&mut self, mutation: Mutation) {
        self.apply_prestaged(mutation, &[]);
    }

    /// Copies the vectors `mutation` would add into the graph, hidden (see [`Self::link_nodes`]
    /// and [`Self::apply_prestaged`]): one node per vector of an insert or upsert, none if there
    /// is no graph.
    pub fn prestage(&mut self, mutation: &Mutation) -> Vec<u32> {
        let (Some(ann), MutationOp::Insert(vectors) | MutationOp::Upsert(vectors)) =
            (&mut self.ann, &mutation.op)
        else {
            return Vec::new();
        };
        vectors
            .iter()
            .map(|vector| ann.push_hidden(&vector.values))
            .collect()
    }

    /// Links prestaged nodes into the graph, on every core (shared access: beside queries).
    pub fn link_nodes(&self, nodes: &[u32]) {
        if let Some(ann) = &self.ann {
            ann.link(nodes);
        }
    }

    /// [`Self::apply`] with the graph nodes [`Self::prestage`] made for this mutation (one per
    /// vector, in order), which the vectors that are stored take over instead of being copied.
    pub fn apply_prestaged(&mut self, mutation: Mutation, prestaged: &[u32]) {
        // (slot, position of the vector in the mutation)
        let mut added = Vec::new();
        match mutation.op {
            MutationOp::Insert(vectors) => {
                for (position, vector) in vectors.into_iter().enumerate() {
                    // First write wins, including within one batch.
                    if !self.ids.contains_key(&vector.id) {
                        added.push((self.add(vector), position));
                    }
                }
            }
            MutationOp::Upsert(vectors) => {
                for (position, vector) in vectors.into_iter().enumerate() {
                    self.remove(&vector.id);
                    added.push((self.add(vector), position));
                }
                // An id given twice in one batch frees its first slot, which the second reuses
                // at once: keep each live slot once, with its last writer.
                added.sort_unstable();
                added.dedup_by(|later, earlier| {
                    let same = later.0 == earlier.0;
                    if same {
                        earlier.1 = later.1;
                    }
                    same
                });
                added.retain(|(slot, _)| self.vector(*slot).is_some());
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
        // Into the graph now, before the next mutation can remove any of them again.
        self.add_to_ann(&added, prestaged);
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
        if let Some(ann) = &mut self.ann {
            ann.remove(u64::from(slot));
        }
        self.free_slots.push(slot);
    }

    /// Gives freshly added slots their graph nodes: the prestaged node of their vector if there
    /// is one, else a copy to link later (see [`Self::link_ann`]).
    fn add_to_ann(&mut self, added: &[(u32, usize)], prestaged: &[u32]) {
        let Some(ann) = &mut self.ann else {
            return;
        };
        for (slot, position) in added {
            if let Some(node) = prestaged.get(*position) {
                ann.reveal(u64::from(*slot), *node);
            } else if let Some(vector) = self.slots.get(*slot as usize).and_then(Option::as_ref) {
                ann.stage(u64::from(*slot), &vector.values);
            }
        }
    }

    /// Links the vectors [`Self::apply`] copied into the graph, on every core (shared access).
    pub fn link_ann(&self) {
        if let Some(ann) = &self.ann {
            ann.link_pending();
        }
    }

    /// Whether the graph should be (re)built: none yet and enough vectors, or deleted nodes
    /// (removed and replaced vectors, which still route searches) outnumber live ones.
    pub fn wants_ann_build(&self, ann_min_vectors: usize) -> bool {
        let enough = self.vector_count() >= ann_min_vectors;
        match &self.ann {
            None => enough,
            Some(ann) => enough && ann.deleted() > ann.live().max(ann_min_vectors),
        }
    }

    /// Builds a graph of the current vectors (read access only: queries go on meanwhile).
    pub fn build_ann(&self) -> AnnIndex {
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
        self.ann_from_disk = false;
    }
}
