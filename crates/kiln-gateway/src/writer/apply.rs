//! The apply thread: journaled writes into the database through a [`Sink`], in large
//! transactions, and the journal's replay at start.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_core::KilnResult;

use super::{io_error, with_cache_entries, PendingCache};
use crate::journal;
use crate::RequestWrite;

/// Most writes applied in one transaction.
const MAX_APPLY: usize = 8192;
/// How long the apply thread gathers writes before a transaction, so that many share one.
const APPLY_GATHER: Duration = Duration::from_millis(50);
/// How long the apply thread waits before retrying a transaction that failed.
const APPLY_RETRY: Duration = Duration::from_secs(1);

/// A place in the journal: (segment, byte offset). Positions order as the journal's records.
pub(crate) type Position = (u64, u64);

/// A write and where the journal ends just past its record.
#[derive(Debug)]
pub(crate) struct Journaled {
    pub end: Position,
    pub write: RequestWrite,
    /// What it counts against the writer's byte budget.
    pub bytes: usize,
}

/// The cache table's size before a commit, and the size it is trimmed to stay under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheBudget {
    pub size: i64,
    pub limit: i64,
}

/// Where journaled writes are committed: SQLite, or PostgreSQL.
pub(crate) trait Sink: Send {
    /// The position up to which every journaled write is committed.
    fn applied_position(&mut self) -> KilnResult<Position>;
    /// Commits `writes` (in journal order) and the position past the last, atomically or in
    /// several transactions each recording its own position; trims the cache table when it
    /// grows past `cache.limit`. A write at or before the recorded position is skipped, so a
    /// call retried after an answer that was lost (a timeout) applies nothing twice. Returns
    /// the cache table's size after.
    fn commit(&mut self, writes: &[Arc<Journaled>], cache: CacheBudget) -> KilnResult<i64>;
    /// The cache table's size now.
    fn cache_size(&mut self) -> KilnResult<i64>;
}

pub(super) enum Apply {
    Writes(Vec<Arc<Journaled>>),
    SegmentClosed(u64),
    Flush(Sender<()>),
}

/// Commits what the journal in `dir` holds past the sink's position, then removes its
/// segments: they are all applied, and the journal starts a new one.
pub(super) fn replay(sink: &mut dyn Sink, dir: &Path) -> KilnResult<()> {
    std::fs::create_dir_all(dir).map_err(io_error)?;
    let applied = sink.applied_position()?;
    for (segment, path) in journal::segments(dir).map_err(io_error)? {
        if segment >= applied.0 {
            let fresh: Vec<Arc<Journaled>> = journal::read_segment(&path)
                .map_err(io_error)?
                .into_iter()
                .filter(|(end, _)| (segment, *end) > applied)
                .map(|(end, write)| {
                    Arc::new(Journaled {
                        end: (segment, end),
                        write,
                        bytes: 0,
                    })
                })
                .collect();
            if !fresh.is_empty() {
                let unbounded = CacheBudget {
                    size: 0,
                    limit: i64::MAX,
                };
                sink.commit(&fresh, unbounded)?;
                tracing::info!(segment, records = fresh.len(), "gateway journal replayed");
            }
        }
        std::fs::remove_file(&path).map_err(io_error)?;
    }
    Ok(())
}

/// Writes whose transaction failed, kept to be committed before anything after them.
#[derive(Default)]
struct Unapplied {
    writes: Vec<Arc<Journaled>>,
    /// Segments to delete once `writes` are committed.
    closed: Vec<u64>,
}

pub(super) struct ApplyThread {
    sink: Box<dyn Sink>,
    journal_dir: PathBuf,
    /// Held while this thread may remove segments; released when it ends.
    _journal_lock: std::fs::File,
    queued_bytes: Arc<AtomicUsize>,
    cache_size: Arc<AtomicI64>,
    cache_limit: i64,
    pending_cache: PendingCache,
    failed: Option<Unapplied>,
}

impl ApplyThread {
    pub fn new(
        sink: Box<dyn Sink>,
        journal_dir: PathBuf,
        journal_lock: std::fs::File,
        queued_bytes: Arc<AtomicUsize>,
        cache_size: Arc<AtomicI64>,
        cache_limit: i64,
        pending_cache: PendingCache,
    ) -> Self {
        ApplyThread {
            sink,
            journal_dir,
            _journal_lock: journal_lock,
            queued_bytes,
            cache_size,
            cache_limit,
            pending_cache,
            failed: None,
        }
    }

    pub fn run(mut self, applies: Receiver<Apply>) {
        lower_priority();
        loop {
            // After a failure, retry on a timer even if nothing new arrives.
            let first = if self.failed.is_some() {
                match applies.recv_timeout(APPLY_RETRY) {
                    Ok(item) => Some(item),
                    Err(RecvTimeoutError::Timeout) => None,
                    // Shutting down: what failed stays in the journal for the next start.
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match applies.recv() {
                    Ok(item) => Some(item),
                    Err(_) => return,
                }
            };
            let Some(first) = first else {
                self.apply(Vec::new());
                continue;
            };
            let mut items = vec![first];
            let deadline = Instant::now() + APPLY_GATHER;
            let mut count = 0;
            // Gather for a moment, unless a reader is waiting on a flush.
            loop {
                let flushing = items.iter().any(|item| matches!(item, Apply::Flush(_)));
                let next = if flushing {
                    applies.try_recv().ok()
                } else {
                    applies
                        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                        .ok()
                };
                let Some(item) = next else { break };
                if let Apply::Writes(writes) = &item {
                    count += writes.len();
                }
                items.push(item);
                if count >= MAX_APPLY {
                    break;
                }
            }
            self.apply(items);
        }
    }

    fn apply(&mut self, items: Vec<Apply>) {
        // What failed before goes first, so the recorded position never passes it.
        let mut batch = self.failed.take().unwrap_or_default();
        let mut flushes = Vec::new();
        for item in items {
            match item {
                Apply::Writes(writes) => batch.writes.extend(writes),
                Apply::SegmentClosed(segment) => batch.closed.push(segment),
                Apply::Flush(reply) => flushes.push(reply),
            }
        }
        match self.commit(&batch.writes) {
            Ok(()) => {
                for segment in &batch.closed {
                    let _ =
                        std::fs::remove_file(journal::segment_path(&self.journal_dir, *segment));
                }
                self.retire_cache_entries(&batch.writes);
                let bytes: usize = batch.writes.iter().map(|journaled| journaled.bytes).sum();
                self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                metrics::counter!("kiln_gateway_writes_committed_total")
                    .increment(batch.writes.len() as u64);
            }
            // Kept (in memory and in the journal) and retried; their cache entries stay
            // visible, and their bytes keep counting so that a long outage fills the budget
            // and new writes are dropped rather than piling up.
            Err(error) => {
                tracing::error!(
                    writes = batch.writes.len(),
                    "gateway writer: {}; retrying",
                    error.message
                );
                metrics::counter!("kiln_gateway_apply_errors_total").increment(1);
                self.failed = Some(batch);
            }
        }
        // A reader waiting on a flush gets what is committed; it does not wait out an outage.
        for reply in flushes {
            let _ = reply.send(());
        }
    }

    fn commit(&mut self, writes: &[Arc<Journaled>]) -> KilnResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let budget = CacheBudget {
            size: self.cache_size.load(Ordering::Relaxed),
            limit: self.cache_limit,
        };
        let size = self.sink.commit(writes, budget)?;
        self.cache_size.store(size, Ordering::Relaxed);
        Ok(())
    }

    /// Entries now in the cache table leave the in-memory map (unless a newer one replaced
    /// them).
    fn retire_cache_entries(&self, writes: &[Arc<Journaled>]) {
        let writes = writes.iter().map(Arc::as_ref);
        with_cache_entries(&self.pending_cache, writes, |pending, entry| {
            if pending
                .get(&entry.key)
                .is_some_and(|p| p.created_at_ms == entry.created_at_ms)
            {
                pending.remove(&entry.key);
            }
        });
    }
}

/// The apply thread is throughput work: at a lower scheduling priority it yields the CPU to
/// the threads answering requests (on Linux, `nice` applies per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its arguments; 0 names the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}
