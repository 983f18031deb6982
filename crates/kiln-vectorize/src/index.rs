//! One index on disk and in memory: the log writer (callers append and fsync under a mutex),
//! the state (queries read it under an `RwLock`), and the apply thread that moves logged
//! mutations into the state in order, keeps the ANN graph and writes snapshots.
//!
//! Directory: `config.json` (the [`IndexConfig`]), `snapshot.bin` and `graph.bin` (see
//! `snapshot`), `log/` (see `wal`).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kiln_core::{ErrorKind, KilnError, KilnResult};

use crate::codec::{encode_mutation, Mutation, MutationIdentity, MutationOp};
use crate::config::IndexConfig;
use crate::filter::MetadataIndexType;
use crate::snapshot::{load_graph, load_snapshot, write_graph, write_snapshot};
use crate::state::IndexState;
use crate::wal::MutationLog;
use crate::StoreOptions;

struct Writer {
    /// `None` once the index is deleted: appends then fail with 404.
    log: Option<MutationLog>,
    next_seq: u64,
    to_apply: Option<Sender<(Mutation, usize)>>,
    /// Metadata indexes including those logged but not applied yet, so that create/delete
    /// are checked against what the caller has already been told.
    metadata_indexes: Vec<(String, MetadataIndexType)>,
}

#[derive(Default)]
struct Progress {
    written_seq: u64,
    applied_seq: u64,
}

struct Shared {
    dir: PathBuf,
    options: StoreOptions,
    writer: Mutex<Writer>,
    state: RwLock<IndexState>,
    progress: Mutex<Progress>,
    progressed: Condvar,
}

/// Why an index could not be opened.
pub enum OpenError {
    /// Its files are damaged (config, snapshot or log): the store quarantines it.
    Damaged(String),
    /// Anything else (the disk, the OS): nothing is moved, the next use tries again.
    Failed(KilnError),
}

impl OpenError {
    fn from_io(what: &str, error: std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::InvalidData {
            Self::Damaged(format!("{what}: {error}"))
        } else {
            Self::Failed(KilnError::internal(format!("{what}: {error}")))
        }
    }
}

pub struct IndexHandle {
    pub config: IndexConfig,
    shared: Arc<Shared>,
    apply_thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not make the index unusable: the data is still consistent
    // because every change is made by one thread, one mutation at a time.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl IndexHandle {
    /// Loads the snapshot, replays the log after it and starts the apply thread.
    pub fn open(dir: &Path, config: IndexConfig, options: StoreOptions) -> Result<Self, OpenError> {
        let metric = config
            .metric()
            .map_err(|error| OpenError::Damaged(format!("config.json: {}", error.message)))?;
        let mut state = IndexState::new(config.dimensions, metric);
        let from_snapshot = load_snapshot(dir, &mut state)
            .map_err(|error| OpenError::from_io(&format!("index {:?}", config.name), error))?;
        if from_snapshot {
            if let Err(reason) = load_graph(dir, &mut state) {
                tracing::warn!(index = %config.name, %reason, "vectorize: rebuilding the ANN graph");
            }
        }
        let snapshot_seq = state.last.as_ref().map_or(0, |last| last.seq);
        let mut last_seq = snapshot_seq;
        let log = MutationLog::open(&dir.join("log"), |mutation| {
            // Sequence numbers only grow; anything at or below is in the snapshot already.
            if mutation.seq > last_seq {
                last_seq = mutation.seq;
                state.apply(mutation);
            }
        })
        .map_err(|error| {
            OpenError::from_io(&format!("index {:?}: mutation log", config.name), error)
        })?;
        // Vectors replayed into a graph loaded from disk.
        state.link_ann();
        let (sender, receiver) = mpsc::channel();
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            options,
            writer: Mutex::new(Writer {
                log: Some(log),
                next_seq: last_seq + 1,
                to_apply: Some(sender),
                metadata_indexes: state.metadata_indexes.clone(),
            }),
            state: RwLock::new(state),
            progress: Mutex::new(Progress {
                written_seq: last_seq,
                applied_seq: last_seq,
            }),
            progressed: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let replayed_bytes = if last_seq > snapshot_seq {
            options.snapshot_min_log_bytes
        } else {
            0
        };
        let apply_thread = std::thread::Builder::new()
            .name(format!("vectorize-{}", config.name))
            .spawn(move || apply_loop(&worker, &receiver, replayed_bytes))
            .map_err(|error| {
                OpenError::Failed(KilnError::internal(format!(
                    "starting the apply thread: {error}"
                )))
            })?;
        Ok(Self {
            config,
            shared,
            apply_thread: Mutex::new(Some(apply_thread)),
        })
    }

    pub fn read_state(&self) -> RwLockReadGuard<'_, IndexState> {
        self.shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state if no writer holds it now (see `VectorStore::try_query_now`).
    pub fn try_read_state(&self) -> Option<RwLockReadGuard<'_, IndexState>> {
        match self.shared.state.try_read() {
            Ok(state) => Some(state),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The metadata indexes the caller has been told about (applied or not).
    pub fn declared_metadata_indexes(&self) -> Vec<(String, MetadataIndexType)> {
        lock(&self.shared.writer).metadata_indexes.clone()
    }

    /// Logs a mutation durably and hands it to the apply thread; returns its mutationId.
    /// `check` sees the declared metadata indexes under the writer lock (for create/delete).
    /// `identity` is fresh for a mutation accepted here, the accepting node's for one applied
    /// from a shared log.
    pub fn submit_as(
        &self,
        identity: MutationIdentity,
        op: MutationOp,
        check: impl FnOnce(&[(String, MetadataIndexType)]) -> KilnResult<()>,
    ) -> KilnResult<String> {
        let mut writer = lock(&self.shared.writer);
        check(&writer.metadata_indexes)?;
        let seq = writer.next_seq;
        let mutation = Mutation {
            seq,
            unix_millis: identity.unix_millis,
            mutation_id: identity.mutation_id,
            op,
        };
        let payload = encode_mutation(&mutation);
        let name = &self.config.name;
        let log = writer.log.as_mut().ok_or_else(|| {
            KilnError::new(ErrorKind::NotFound, format!("index {name:?} was deleted"))
        })?;
        log.append(seq, &payload).map_err(|error| {
            KilnError::internal(format!("index {name:?}: writing the mutation log: {error}"))
        })?;
        writer.next_seq += 1;
        match &mutation.op {
            MutationOp::CreateMetadataIndex {
                property,
                index_type,
            } => {
                writer
                    .metadata_indexes
                    .push((property.clone(), *index_type));
            }
            MutationOp::DeleteMetadataIndex { property } => {
                writer.metadata_indexes.retain(|(name, _)| name != property);
            }
            _ => {}
        }
        let mutation_id = mutation.mutation_id.clone();
        lock(&self.shared.progress).written_seq = seq;
        if let Some(sender) = &writer.to_apply {
            // The apply thread only stops when the index is deleted or dropped.
            let _ = sender.send((mutation, payload.len()));
        }
        Ok(mutation_id)
    }

    /// Runs `check` on the declared metadata indexes as [`Self::submit`] would, without
    /// submitting anything (a node validating a mutation before it goes to the shared log).
    pub fn check(
        &self,
        check: impl FnOnce(&[(String, MetadataIndexType)]) -> KilnResult<()>,
    ) -> KilnResult<()> {
        check(&lock(&self.shared.writer).metadata_indexes)
    }

    /// Blocks until everything acknowledged before the call is visible to queries.
    pub fn wait_until_processed(&self, timeout: Duration) -> KilnResult<()> {
        let deadline = Instant::now() + timeout;
        let mut progress = lock(&self.shared.progress);
        let target = progress.written_seq;
        while progress.applied_seq < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(KilnError::new(
                    ErrorKind::Timeout,
                    format!(
                        "index {:?}: mutations up to {target} not applied within {timeout:?} (applied up to {})",
                        self.config.name, progress.applied_seq
                    ),
                ));
            }
            progress = self
                .shared
                .progressed
                .wait_timeout(progress, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        Ok(())
    }

    /// Stops accepting mutations and stops the apply thread (after it drains its queue).
    pub fn shut_down(&self) {
        {
            let mut writer = lock(&self.shared.writer);
            writer.log = None;
            writer.to_apply = None;
        }
        if let Some(thread) = lock(&self.apply_thread).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for IndexHandle {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Applies mutations in order; between batches, (re)builds the graph and writes snapshots.
fn apply_loop(
    shared: &Shared,
    receiver: &Receiver<(Mutation, usize)>,
    mut log_bytes_since_snapshot: u64,
) {
    let mut last_snapshot_bytes = 0u64;
    maintain_ann(shared);
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        // Apply whatever else is queued under the same write lock, up to a bound so that
        // queries are not held off for long.
        while batch.len() < 64 {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let last_seq = batch.last().map_or(0, |(mutation, _)| mutation.seq);
        // Linking new vectors into the graph is the slow part of applying: the write lock is
        // held only to copy them in (hidden) and, once they are linked beside queries, to apply
        // the batch, which reveals them — queries see each mutation wholly or not at all.
        let prestaged: Vec<Vec<u32>> = {
            let mut state = write(shared);
            batch
                .iter()
                .map(|(mutation, _)| state.prestage(mutation))
                .collect()
        };
        if prestaged.iter().any(|nodes| !nodes.is_empty()) {
            read(shared).link_nodes(&prestaged.concat());
        }
        {
            let mut state = write(shared);
            for ((mutation, bytes), nodes) in batch.into_iter().zip(&prestaged) {
                log_bytes_since_snapshot += bytes as u64;
                state.apply_prestaged(mutation, nodes);
            }
        }
        lock(&shared.progress).applied_seq = last_seq;
        shared.progressed.notify_all();
        maintain_ann(shared);
        let threshold = shared
            .options
            .snapshot_min_log_bytes
            .max(last_snapshot_bytes / 2);
        if log_bytes_since_snapshot >= threshold {
            match snapshot(shared) {
                Ok(size) => {
                    last_snapshot_bytes = size;
                    log_bytes_since_snapshot = 0;
                }
                // The log still has everything: a failed snapshot only costs replay time.
                Err(reason) => {
                    tracing::warn!(dir = %shared.dir.display(), %reason, "vectorize: snapshot failed")
                }
            }
        }
    }
}

/// Builds the graph under the read lock (queries continue with exact search meanwhile; only
/// this thread changes the state, so nothing changes under it) and installs it.
fn maintain_ann(shared: &Shared) {
    let built = {
        let state = read(shared);
        if !state.wants_ann_build(shared.options.ann_min_vectors) {
            return;
        }
        state.build_ann()
    };
    write(shared).install_ann(built);
}

fn write(shared: &Shared) -> RwLockWriteGuard<'_, IndexState> {
    shared
        .state
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read(shared: &Shared) -> RwLockReadGuard<'_, IndexState> {
    shared
        .state
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Rotates the log (later mutations go to a new segment), writes the snapshot, then deletes
/// the segments it covers.
fn snapshot(shared: &Shared) -> Result<u64, String> {
    if let Some(log) = lock(&shared.writer).log.as_mut() {
        log.rotate()
            .map_err(|error| format!("rotating the log: {error}"))?;
    } else {
        return Ok(0);
    }
    let (size, seq) = {
        let state = shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let size =
            write_snapshot(&shared.dir, &state).map_err(|error| format!("writing: {error}"))?;
        // Best effort: without it a restart only rebuilds the graph.
        if let Err(error) = write_graph(&shared.dir, &state) {
            tracing::warn!(dir = %shared.dir.display(), %error, "vectorize: saving the ANN graph failed");
            let _ = std::fs::remove_file(shared.dir.join(crate::snapshot::GRAPH_FILE));
        }
        (size, state.last.as_ref().map_or(0, |last| last.seq))
    };
    if let Some(log) = lock(&shared.writer).log.as_mut() {
        log.delete_covered(seq)
            .map_err(|error| format!("deleting covered log segments: {error}"))?;
    }
    Ok(size)
}
