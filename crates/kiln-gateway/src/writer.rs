//! The gateway's writes: log records, analytics and cache entries.
//!
//! Two OS threads, so no request ever waits on SQLite:
//! - the *journal thread* drains a bounded queue, appends each batch to the write-ahead
//!   [`Journal`] in one `write` and one `fdatasync` (group commit: every write that queued while
//!   the previous batch synced shares the next sync), makes new cache entries visible in memory,
//!   and acknowledges;
//! - the *apply thread* moves journaled writes into SQLite in large transactions
//!   (`synchronous = FULL`, so a segment is deleted only after its records are durable there),
//!   then drops the journal segments it has applied.
//!
//! A request never waits for room in the queue: when the queue or its byte budget is full the
//! write is dropped and counted (`kiln_gateway_writes_dropped_total`). A queued write is
//! acknowledged once it is in the journal and on disk; the HTTP layer releases the response's
//! last byte only then, so every `cf-aig-log-id` whose response completed survives a `kill -9`
//! or a power cut: on start, the journal's unapplied records are replayed. A batch whose append
//! fails (a full disk) is not acknowledged, and is dropped and counted like a full queue's. A
//! transaction that fails is retried (with everything after it) until it commits; until then
//! its records stay in the journal and their bytes in the queue's budget.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{
    self, sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError,
};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use crate::cache::{self, CacheEntry};
use crate::journal::{self, Journal};
use crate::logs::{self, LogCap};
use crate::LogRecord;

/// Most writes taken from the queue into one journal append.
const MAX_BATCH: usize = 1024;
/// Most writes applied to SQLite in one transaction.
const MAX_APPLY: usize = 8192;
/// How long the apply thread gathers writes before a transaction, so that many share one.
const APPLY_GATHER: Duration = Duration::from_millis(50);
/// How long the apply thread waits before retrying a transaction that failed.
const APPLY_RETRY: Duration = Duration::from_secs(1);

/// How the writer is bounded.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    /// Queued writes.
    pub queue_len: usize,
    /// Bytes queued or journaled but not yet in SQLite.
    pub queue_bytes: usize,
    /// The cache is trimmed to this size, oldest entries first.
    pub cache_bytes: i64,
    /// fsync each journal batch before acknowledging it (survives power loss). Without it a
    /// `kill -9` still loses nothing acknowledged, a power cut may lose the last moments.
    pub sync_journal: bool,
}

impl Default for WriterLimits {
    fn default() -> Self {
        Self {
            queue_len: 16 * 1024,
            queue_bytes: 256 * 1024 * 1024,
            cache_bytes: 1024 * 1024 * 1024,
            sync_journal: true,
        }
    }
}

/// One request's writes.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestWrite {
    /// Always counted in analytics; stored as a log when `log` is set.
    pub record: LogRecord,
    pub log: Option<LogCap>,
    pub cache: Option<CacheEntry>,
}

impl RequestWrite {
    fn bytes(&self) -> usize {
        self.record.request_body.len()
            + self.record.response_body.len()
            + self.cache.as_ref().map_or(0, |entry| entry.body.len())
            + 512
    }
}

// Writes are the common case; boxing them would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Job {
    Write {
        write: RequestWrite,
        bytes: usize,
        journaled: oneshot::Sender<()>,
    },
    /// Answered once everything queued before it is in SQLite.
    Flush(Sender<()>),
}

enum Apply {
    Writes {
        writes: Vec<(RequestWrite, usize)>,
        /// The journal position just past these writes.
        segment: u64,
        offset: u64,
    },
    SegmentClosed(u64),
    Flush(Sender<()>),
}

/// Cache entries journaled but not yet in SQLite, so a hit follows its miss at once.
type PendingCache = Arc<RwLock<HashMap<[u8; 32], CacheEntry>>>;

pub struct Writer {
    queue: SyncSender<Job>,
    queued_bytes: Arc<AtomicUsize>,
    limits: WriterLimits,
    cache_size: Arc<AtomicI64>,
    pending_cache: PendingCache,
    /// Joined on drop, so the journal's lock is free once the store is gone.
    threads: Vec<thread::JoinHandle<()>>,
}

impl Writer {
    /// Replays what the journal holds beyond what SQLite has, then starts both threads. The
    /// database's schema must exist.
    pub fn start(path: &Path, limits: WriterLimits) -> rusqlite::Result<Self> {
        let db = kiln_sqlite::open(path, kiln_sqlite::Durability::Full)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS journal_applied (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 segment INTEGER NOT NULL,
                 offset INTEGER NOT NULL
             );",
        )?;
        let journal_dir = journal_dir(path);
        let journal_lock = lock_journal(&journal_dir)?;
        replay(&db, &journal_dir)?;
        let (applied_segment, _) = applied_position(&db)?;
        let journal =
            Journal::open(&journal_dir, applied_segment, limits.sync_journal).map_err(io_error)?;
        // Shown in /metrics from the start, so a dashboard sees 0 rather than nothing.
        metrics::counter!("kiln_gateway_writes_dropped_total").absolute(0);
        let cache_size = Arc::new(AtomicI64::new(cache::total_size(&db)?));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let pending_cache = PendingCache::default();
        let (queue, jobs) = sync_channel(limits.queue_len);
        let (to_apply, applies) = mpsc::channel();
        let journal_thread = JournalThread {
            journal,
            pending_cache: pending_cache.clone(),
            queued_bytes: queued_bytes.clone(),
            to_apply,
        };
        let apply_thread = ApplyThread {
            db,
            journal_dir,
            _journal_lock: journal_lock,
            queued_bytes: queued_bytes.clone(),
            cache_size: cache_size.clone(),
            cache_limit: limits.cache_bytes,
            pending_cache: pending_cache.clone(),
            failed: None,
        };
        let threads = vec![
            spawn("kiln-gateway-journal", move || journal_thread.run(jobs))?,
            spawn("kiln-gateway-apply", move || apply_thread.run(applies))?,
        ];
        Ok(Self {
            queue,
            queued_bytes,
            limits,
            cache_size,
            pending_cache,
            threads,
        })
    }

    /// Queues `write`; the receiver resolves `Ok` once it is journaled, `Err` when the journal
    /// could not take it (then it is dropped). `None` when it was dropped because the writer is
    /// behind.
    pub fn submit(&self, write: RequestWrite) -> Option<oneshot::Receiver<()>> {
        let bytes = write.bytes();
        let before = self.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes > self.limits.queue_bytes {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            dropped(1);
            return None;
        }
        let (journaled, acknowledged) = oneshot::channel();
        let job = Job::Write {
            write,
            bytes,
            journaled,
        };
        match self.queue.try_send(job) {
            Ok(()) => Some(acknowledged),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                dropped(1);
                None
            }
        }
    }

    /// Waits until everything submitted so far is in SQLite (for reads of the logs API).
    pub fn flush(&self) {
        let (reply, applied) = mpsc::channel();
        if self.queue.send(Job::Flush(reply)).is_ok() {
            let _ = applied.recv_timeout(Duration::from_secs(30));
        }
    }

    /// A cache entry journaled but not yet applied.
    pub fn pending_cache_entry(&self, key: &[u8; 32]) -> Option<CacheEntry> {
        self.pending_cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Bytes the cache holds now.
    pub fn cache_size(&self) -> i64 {
        self.cache_size.load(Ordering::Relaxed)
    }
}

/// `gateway.db` → `gateway.db.journal.d/`.
/// One server per journal: a second one replaying or removing segments under a running
/// server would lose or double-apply writes, so it is refused with a message that says why.
fn lock_journal(dir: &Path) -> rusqlite::Result<std::fs::File> {
    std::fs::create_dir_all(dir).map_err(io_error)?;
    let lock_path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_error)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(io_error(std::io::Error::other(format!(
            "{} is in use by another Kiln server; give this one its own --gateway-db or --data-dir",
            dir.display()
        )))),
        Err(std::fs::TryLockError::Error(error)) => Err(io_error(error)),
    }
}

pub(crate) fn journal_dir(db_path: &Path) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push(".journal.d");
    db_path.with_file_name(name)
}

impl Drop for Writer {
    /// Closes the queue and waits for both threads to drain it: what was queued reaches the
    /// journal, and a store opened next on the same file finds the journal free.
    fn drop(&mut self) {
        let (closed, _) = sync_channel(0);
        drop(std::mem::replace(&mut self.queue, closed));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn spawn(
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> rusqlite::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map_err(io_error)
}

fn io_error(error: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(error))
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

fn dropped(count: u64) {
    metrics::counter!("kiln_gateway_writes_dropped_total").increment(count);
}

/// Applies the journal's records that SQLite does not have yet, then removes the segments.
fn replay(db: &Connection, dir: &Path) -> rusqlite::Result<()> {
    std::fs::create_dir_all(dir).map_err(io_error)?;
    let (applied_segment, applied_offset) = applied_position(db)?;
    for (segment, path) in journal::segments(dir).map_err(io_error)? {
        if segment >= applied_segment {
            let records = journal::read_segment(&path).map_err(io_error)?;
            let fresh: Vec<_> = records
                .into_iter()
                .filter(|(end, _)| segment > applied_segment || *end > applied_offset)
                .collect();
            if let Some((end, _)) = fresh.last() {
                let transaction = db.unchecked_transaction()?;
                for (_, write) in &fresh {
                    apply_write(&transaction, write)?;
                }
                set_applied_position(&transaction, segment, *end)?;
                transaction.commit()?;
                tracing::info!(segment, records = fresh.len(), "gateway journal replayed");
            }
        }
        std::fs::remove_file(&path).map_err(io_error)?;
    }
    Ok(())
}

fn applied_position(db: &Connection) -> rusqlite::Result<(u64, u64)> {
    let position: Option<(i64, i64)> = db
        .query_row(
            "SELECT segment, offset FROM journal_applied WHERE id = 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    Ok(position.map_or((0, 0), |(s, o)| (s as u64, o as u64)))
}

fn set_applied_position(db: &Connection, segment: u64, offset: u64) -> rusqlite::Result<()> {
    db.prepare_cached(
        "INSERT INTO journal_applied (id, segment, offset) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET segment = excluded.segment, offset = excluded.offset",
    )?
    .execute(params![segment as i64, offset as i64])?;
    Ok(())
}

fn apply_write(db: &Connection, write: &RequestWrite) -> rusqlite::Result<i64> {
    crate::analytics::record(db, &write.record)?;
    if let Some(cap) = write.log {
        if !logs::insert(db, &write.record, cap)? {
            metrics::counter!("kiln_gateway_logs_capped_total").increment(1);
        }
    }
    match &write.cache {
        Some(entry) => cache::insert(db, entry),
        None => Ok(0),
    }
}

struct JournalThread {
    journal: Journal,
    pending_cache: PendingCache,
    queued_bytes: Arc<AtomicUsize>,
    to_apply: Sender<Apply>,
}

impl JournalThread {
    fn run(mut self, jobs: Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut encoded = Vec::new();
        while let Ok(first) = jobs.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            encoded.clear();
            let mut writes = Vec::with_capacity(batch.len());
            let mut acknowledgements = Vec::with_capacity(batch.len());
            let mut flushes = Vec::new();
            for job in batch.drain(..) {
                match job {
                    Job::Write {
                        write,
                        bytes,
                        journaled,
                    } => {
                        journal::encode_into(&mut encoded, &write);
                        writes.push((write, bytes));
                        acknowledgements.push(journaled);
                    }
                    Job::Flush(reply) => flushes.push(reply),
                }
            }
            if !encoded.is_empty() {
                if let Err(error) = self.journal.append(&encoded) {
                    // Not acknowledged (dropping the senders tells each request) and not
                    // applied: a write SQLite got but the journal lost would be a log the
                    // client was told failed.
                    tracing::error!(writes = writes.len(), "gateway journal: {error}");
                    metrics::counter!("kiln_gateway_journal_errors_total").increment(1);
                    dropped(writes.len() as u64);
                    let bytes: usize = writes.iter().map(|(_, bytes)| bytes).sum();
                    self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                    drop(acknowledgements);
                    for reply in flushes {
                        let _ = self.to_apply.send(Apply::Flush(reply));
                    }
                    continue;
                }
            }
            self.publish_cache_entries(&writes);
            for acknowledgement in acknowledgements {
                let _ = acknowledgement.send(());
            }
            if !writes.is_empty() {
                let _ = self.to_apply.send(Apply::Writes {
                    writes,
                    segment: self.journal.segment,
                    offset: self.journal.offset,
                });
            }
            for reply in flushes {
                let _ = self.to_apply.send(Apply::Flush(reply));
            }
            match self.journal.rotate_if_full() {
                Ok(Some(closed)) => {
                    let _ = self.to_apply.send(Apply::SegmentClosed(closed));
                }
                Ok(None) => {}
                Err(error) => tracing::error!("gateway journal rotation: {error}"),
            }
        }
    }

    fn publish_cache_entries(&self, writes: &[(RequestWrite, usize)]) {
        with_cache_entries(&self.pending_cache, writes, |pending, entry| {
            pending.insert(entry.key, entry.clone());
        });
    }
}

/// Writes whose transaction failed, kept to be committed before anything after them.
#[derive(Default)]
struct Unapplied {
    writes: Vec<(RequestWrite, usize)>,
    /// The journal position just past `writes`.
    position: Option<(u64, u64)>,
    /// Segments to delete once `writes` are committed.
    closed: Vec<u64>,
}

struct ApplyThread {
    db: Connection,
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
    fn run(mut self, applies: Receiver<Apply>) {
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
                if let Apply::Writes { writes, .. } = &item {
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
                Apply::Writes {
                    writes,
                    segment,
                    offset,
                } => {
                    batch.writes.extend(writes);
                    batch.position = Some((segment, offset));
                }
                Apply::SegmentClosed(segment) => batch.closed.push(segment),
                Apply::Flush(reply) => flushes.push(reply),
            }
        }
        match self.commit(&batch.writes, batch.position) {
            Ok(()) => {
                for segment in &batch.closed {
                    let _ =
                        std::fs::remove_file(journal::segment_path(&self.journal_dir, *segment));
                }
                self.retire_cache_entries(&batch.writes);
                let bytes: usize = batch.writes.iter().map(|(_, bytes)| bytes).sum();
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
                    "gateway writer: {error}; retrying"
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

    fn commit(
        &mut self,
        writes: &[(RequestWrite, usize)],
        position: Option<(u64, u64)>,
    ) -> rusqlite::Result<()> {
        let Some((segment, offset)) = position else {
            return Ok(());
        };
        let transaction = self.db.transaction()?;
        let mut grown = 0;
        for (write, _) in writes {
            grown += apply_write(&transaction, write)?;
        }
        set_applied_position(&transaction, segment, offset)?;
        let mut size = self.cache_size.load(Ordering::Relaxed) + grown;
        if size > self.cache_limit {
            // Trim to 90% so eviction runs once per many inserts, not on each.
            size = cache::evict(
                &transaction,
                kiln_core::time::unix_millis(),
                self.cache_limit / 10 * 9,
            )?;
        }
        transaction.commit()?;
        self.cache_size.store(size, Ordering::Relaxed);
        Ok(())
    }

    /// Entries now in SQLite leave the in-memory map (unless a newer one replaced them).
    fn retire_cache_entries(&self, writes: &[(RequestWrite, usize)]) {
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

/// Calls `change` on the pending-cache map for each write's cache entry, locking only when
/// there is one (most writes are cache hits' logs, with none).
fn with_cache_entries(
    pending: &PendingCache,
    writes: &[(RequestWrite, usize)],
    mut change: impl FnMut(&mut HashMap<[u8; 32], CacheEntry>, &CacheEntry),
) {
    let mut entries = writes
        .iter()
        .filter_map(|(write, _)| write.cache.as_ref())
        .peekable();
    if entries.peek().is_none() {
        return;
    }
    let mut pending = pending.write().unwrap_or_else(PoisonError::into_inner);
    for entry in entries {
        change(&mut pending, entry);
    }
}
