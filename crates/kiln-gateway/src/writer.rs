//! The gateway's writes: log records, analytics and cache entries.
//!
//! Two OS threads (three with the cache in Redis), so no request ever waits on the database:
//! - the *journal thread* drains a bounded queue, appends each batch to the write-ahead
//!   [`Journal`] in one `write` and one `fdatasync` (group commit: every write that queued while
//!   the previous batch synced shares the next sync), makes new cache entries visible, and
//!   acknowledges;
//! - the *apply thread* ([`apply`]) moves journaled writes into the database (SQLite or
//!   PostgreSQL, through a [`Sink`]) in large transactions, then drops the journal segments it
//!   has applied;
//! - with the cache in Redis, the *publish thread* ([`publish`]) stores each new cache entry
//!   there and only then acknowledges its request, so that once a response has completed, its
//!   entry is a hit on every node.
//!
//! A request never waits for room in the queue: when the queue or its byte budget is full the
//! write is dropped and counted (`kiln_gateway_writes_dropped_total`). A queued write is
//! acknowledged once it is in the journal and on disk; the HTTP layer releases the response's
//! last byte only then, so every `cf-aig-log-id` whose response completed survives a `kill -9`
//! or a power cut: on start, the journal's unapplied records are replayed. A batch whose append
//! fails (a full disk) is not acknowledged, and is dropped and counted like a full queue's. A
//! transaction that fails is retried (with everything after it) until it commits; until then
//! its records stay in the journal and their bytes in the queue's budget.

mod apply;
mod publish;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, sync_channel, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use kiln_core::KilnResult;
use tokio::sync::oneshot;

use crate::cache::redis::RedisCache;
use crate::cache::CacheEntry;
use crate::journal::{self, Journal};
use crate::logs::LogCap;
use crate::{storage, LogRecord};

use apply::{Apply, ApplyThread};
pub(crate) use apply::{CacheBudget, Journaled, Position, Sink};
use publish::Publish;

/// Most writes taken from the queue into one journal append.
const MAX_BATCH: usize = 1024;
/// The longest a flush waits for the threads to catch up.
const FLUSH_WAIT: Duration = Duration::from_secs(30);

/// How the writer is bounded.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    /// Queued writes.
    pub queue_len: usize,
    /// Bytes queued or journaled but not yet in the database.
    pub queue_bytes: usize,
    /// The cache is trimmed to this size, oldest entries first (in SQLite or PostgreSQL; Redis
    /// bounds its own memory).
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
    /// Answered once everything queued before it is in the database (and in Redis).
    Flush(Sender<()>),
}

/// Cache entries journaled but not yet in the cache table, so a hit follows its miss at once.
type PendingCache = Arc<RwLock<HashMap<[u8; 32], CacheEntry>>>;

pub struct Writer {
    queue: SyncSender<Job>,
    queued_bytes: Arc<AtomicUsize>,
    limits: WriterLimits,
    cache_size: Arc<AtomicI64>,
    pending_cache: PendingCache,
    /// Answers a flush waits for: the apply thread's, and the publish thread's.
    flush_answers: usize,
    /// Joined on drop, so the journal's lock is free once the store is gone.
    threads: Vec<thread::JoinHandle<()>>,
}

impl Writer {
    /// Replays what the journal in `journal_dir` (locked by `journal_lock`, see
    /// [`lock_journal`]) holds beyond what `sink` has, then starts the threads. With `redis`,
    /// cache entries go there rather than to the sink.
    pub(crate) fn start(
        mut sink: Box<dyn Sink>,
        journal_dir: &Path,
        journal_lock: std::fs::File,
        limits: WriterLimits,
        redis: Option<Arc<RedisCache>>,
    ) -> KilnResult<Self> {
        apply::replay(sink.as_mut(), journal_dir)?;
        let (applied_segment, _) = sink.applied_position()?;
        let journal =
            Journal::open(journal_dir, applied_segment, limits.sync_journal).map_err(io_error)?;
        // Shown in /metrics from the start, so a dashboard sees 0 rather than nothing.
        metrics::counter!("kiln_gateway_writes_dropped_total").absolute(0);
        let cache_size = Arc::new(AtomicI64::new(if redis.is_some() {
            0
        } else {
            sink.cache_size()?
        }));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let pending_cache = PendingCache::default();
        let (queue, jobs) = sync_channel(limits.queue_len);
        let (to_apply, applies) = mpsc::channel();
        let mut threads = Vec::new();
        let to_publish = match redis {
            Some(cache) => {
                let (to_publish, publishes) = mpsc::channel();
                threads.push(spawn("kiln-gateway-publish", move || {
                    publish::run(&cache, publishes)
                })?);
                Some(to_publish)
            }
            None => None,
        };
        let flush_answers = 1 + usize::from(to_publish.is_some());
        let journal_thread = JournalThread {
            journal,
            pending_cache: pending_cache.clone(),
            queued_bytes: queued_bytes.clone(),
            to_apply,
            to_publish,
        };
        let apply_thread = ApplyThread::new(
            sink,
            journal_dir.to_owned(),
            journal_lock,
            queued_bytes.clone(),
            cache_size.clone(),
            limits.cache_bytes,
            pending_cache.clone(),
        );
        threads.push(spawn("kiln-gateway-journal", move || {
            journal_thread.run(jobs)
        })?);
        threads.push(spawn("kiln-gateway-apply", move || {
            apply_thread.run(applies)
        })?);
        Ok(Self {
            queue,
            queued_bytes,
            limits,
            cache_size,
            pending_cache,
            flush_answers,
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

    /// Waits until everything submitted so far is in the database and its cache entries are
    /// in Redis (for reads of the logs API, and before a cache purge).
    pub fn flush(&self) {
        let (reply, answered) = mpsc::channel();
        if self.queue.send(Job::Flush(reply)).is_ok() {
            let deadline = Instant::now() + FLUSH_WAIT;
            for _ in 0..self.flush_answers {
                let left = deadline.saturating_duration_since(Instant::now());
                if answered.recv_timeout(left).is_err() {
                    break;
                }
            }
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

    /// Bytes the cache table holds now (0 with the cache in Redis).
    pub fn cache_size(&self) -> i64 {
        self.cache_size.load(Ordering::Relaxed)
    }
}

/// One server per journal: a second one replaying or removing segments under a running
/// server would lose or double-apply writes, so it is refused with a message that says why.
/// The lock is held until the writer (given it by [`Writer::start`]) stops.
pub(crate) fn lock_journal(dir: &Path) -> KilnResult<std::fs::File> {
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
        Err(std::fs::TryLockError::WouldBlock) => Err(storage(format!(
            "{} is in use by another Kiln server; give this one its own --gateway-db or --data-dir",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(error)) => Err(io_error(error)),
    }
}

/// `gateway.db` → `gateway.db.journal.d/`.
pub(crate) fn journal_dir(db_path: &Path) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push(".journal.d");
    db_path.with_file_name(name)
}

impl Drop for Writer {
    /// Closes the queue and waits for the threads to drain it: what was queued reaches the
    /// journal, and a store opened next on the same journal finds it free.
    fn drop(&mut self) {
        let (closed, _) = sync_channel(0);
        drop(std::mem::replace(&mut self.queue, closed));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> KilnResult<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map_err(io_error)
}

pub(crate) fn io_error(error: std::io::Error) -> kiln_core::KilnError {
    storage(error.to_string())
}

fn dropped(count: u64) {
    metrics::counter!("kiln_gateway_writes_dropped_total").increment(count);
}

struct JournalThread {
    journal: Journal,
    pending_cache: PendingCache,
    queued_bytes: Arc<AtomicUsize>,
    to_apply: Sender<Apply>,
    /// With the cache in Redis: where new entries go, with their requests' acknowledgements.
    to_publish: Option<Sender<Publish>>,
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
                        // Where the journal will end after this record, once appended.
                        let end = (
                            self.journal.segment,
                            self.journal.offset + encoded.len() as u64,
                        );
                        writes.push(Journaled { end, write, bytes });
                        acknowledgements.push(journaled);
                    }
                    Job::Flush(reply) => flushes.push(reply),
                }
            }
            if !encoded.is_empty() {
                if let Err(error) = self.journal.append(&encoded) {
                    // Not acknowledged (dropping the senders tells each request) and not
                    // applied: a write the database got but the journal lost would be a log
                    // the client was told failed.
                    tracing::error!(writes = writes.len(), "gateway journal: {error}");
                    metrics::counter!("kiln_gateway_journal_errors_total").increment(1);
                    dropped(writes.len() as u64);
                    let bytes: usize = writes.iter().map(|journaled| journaled.bytes).sum();
                    self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                    drop(acknowledgements);
                    self.forward_flushes(flushes);
                    continue;
                }
            }
            self.acknowledge(&mut writes, acknowledgements);
            if !writes.is_empty() {
                let writes = writes.into_iter().map(Arc::new).collect();
                let _ = self.to_apply.send(Apply::Writes(writes));
            }
            self.forward_flushes(flushes);
            match self.journal.rotate_if_full() {
                Ok(Some(closed)) => {
                    let _ = self.to_apply.send(Apply::SegmentClosed(closed));
                }
                Ok(None) => {}
                Err(error) => tracing::error!("gateway journal rotation: {error}"),
            }
        }
    }

    /// Makes the batch's cache entries visible and acknowledges its writes: at once, with the
    /// entries in the in-memory map until the apply thread has them in the cache table; or,
    /// with the cache in Redis, each write with an entry once the publish thread stored it.
    fn acknowledge(&self, writes: &mut [Journaled], acknowledgements: Vec<oneshot::Sender<()>>) {
        let Some(publisher) = &self.to_publish else {
            with_cache_entries(&self.pending_cache, writes.iter(), |pending, entry| {
                pending.insert(entry.key, entry.clone());
            });
            for acknowledgement in acknowledgements {
                let _ = acknowledgement.send(());
            }
            return;
        };
        let mut entries = Vec::new();
        for (journaled, acknowledgement) in writes.iter_mut().zip(acknowledgements) {
            match journaled.write.cache.take() {
                Some(entry) => entries.push((entry, acknowledgement)),
                None => {
                    let _ = acknowledgement.send(());
                }
            }
        }
        if entries.is_empty() {
            return;
        }
        if let Err(mpsc::SendError(Publish::Entries(entries))) =
            publisher.send(Publish::Entries(entries))
        {
            // The publish thread is gone: the writes are journaled, their entries are lost.
            for (_, acknowledgement) in entries {
                let _ = acknowledgement.send(());
            }
        }
    }

    fn forward_flushes(&self, flushes: Vec<Sender<()>>) {
        for reply in flushes {
            if let Some(publisher) = &self.to_publish {
                let _ = publisher.send(Publish::Flush(reply.clone()));
            }
            let _ = self.to_apply.send(Apply::Flush(reply));
        }
    }
}

/// Calls `change` on the pending-cache map for each write's cache entry, locking only when
/// there is one (most writes are cache hits' logs, with none).
fn with_cache_entries<'a>(
    pending: &PendingCache,
    writes: impl IntoIterator<Item = &'a Journaled>,
    mut change: impl FnMut(&mut HashMap<[u8; 32], CacheEntry>, &CacheEntry),
) {
    let mut entries = writes
        .into_iter()
        .filter_map(|journaled| journaled.write.cache.as_ref())
        .peekable();
    if entries.peek().is_none() {
        return;
    }
    let mut pending = pending.write().unwrap_or_else(PoisonError::into_inner);
    for entry in entries {
        change(&mut pending, entry);
    }
}
