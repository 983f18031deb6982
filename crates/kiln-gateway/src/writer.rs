//! The gateway's one writer: log records, analytics and cache entries reach SQLite through a
//! bounded queue drained by one OS thread that commits them in batches (group commit).
//!
//! A request never waits for room in the queue: when the queue or its byte budget is full the
//! write is dropped and counted (`kiln_gateway_writes_dropped_total`). A request that was
//! queued gets an acknowledgement once its batch has committed; the HTTP layer releases the
//! response's last byte only then, so every `cf-aig-log-id` a client has seen survives a
//! `kill -9` (WAL with `synchronous = NORMAL`: committed pages are in the OS before the ack).

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::cache::{self, CacheEntry};
use crate::logs::{self, LogCap};
use crate::LogRecord;

/// Most records committed in one transaction.
const MAX_BATCH: usize = 1024;

/// How the writer is bounded.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    /// Queued writes.
    pub queue_len: usize,
    /// Bytes of bodies queued.
    pub queue_bytes: usize,
    /// The cache is trimmed to this size, oldest entries first.
    pub cache_bytes: i64,
}

impl Default for WriterLimits {
    fn default() -> Self {
        Self {
            queue_len: 16 * 1024,
            queue_bytes: 256 * 1024 * 1024,
            cache_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// One request's writes.
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

struct Job {
    write: RequestWrite,
    bytes: usize,
    committed: oneshot::Sender<()>,
}

pub struct Writer {
    queue: SyncSender<Job>,
    queued_bytes: Arc<AtomicUsize>,
    limits: WriterLimits,
    cache_size: Arc<AtomicI64>,
}

impl Writer {
    /// Opens its own connection to the database at `path` (whose schema must exist) and starts
    /// the writer thread.
    pub fn start(path: &Path, limits: WriterLimits) -> rusqlite::Result<Self> {
        let db = Connection::open(path)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
        let cache_size = Arc::new(AtomicI64::new(cache::total_size(&db)?));
        // Shown in /metrics from the start, so a dashboard sees 0 rather than nothing.
        metrics::counter!("kiln_gateway_writes_dropped_total").absolute(0);
        let (queue, jobs) = sync_channel(limits.queue_len);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let thread_state = WriterThread {
            db,
            queued_bytes: queued_bytes.clone(),
            cache_size: cache_size.clone(),
            cache_limit: limits.cache_bytes,
        };
        thread::Builder::new()
            .name("kiln-gateway-writer".into())
            .spawn(move || thread_state.run(jobs))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Self {
            queue,
            queued_bytes,
            limits,
            cache_size,
        })
    }

    /// Queues `write`; the receiver resolves once it is committed. `None` when it was dropped
    /// because the writer is behind.
    pub fn submit(&self, write: RequestWrite) -> Option<oneshot::Receiver<()>> {
        let bytes = write.bytes();
        let before = self.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes > self.limits.queue_bytes {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            dropped();
            return None;
        }
        let (committed, acknowledged) = oneshot::channel();
        let job = Job {
            write,
            bytes,
            committed,
        };
        match self.queue.try_send(job) {
            Ok(()) => Some(acknowledged),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                dropped();
                None
            }
        }
    }

    /// Bytes the cache holds now.
    pub fn cache_size(&self) -> i64 {
        self.cache_size.load(Ordering::Relaxed)
    }
}

fn dropped() {
    metrics::counter!("kiln_gateway_writes_dropped_total").increment(1);
}

struct WriterThread {
    db: Connection,
    queued_bytes: Arc<AtomicUsize>,
    cache_size: Arc<AtomicI64>,
    cache_limit: i64,
}

impl WriterThread {
    fn run(mut self, jobs: Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Ok(first) = jobs.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if let Err(error) = self.commit(&batch) {
                // Nothing was stored: the requests keep their answers, the records are lost.
                tracing::error!("gateway writer: {error}");
                metrics::counter!("kiln_gateway_writes_dropped_total")
                    .increment(batch.len() as u64);
            }
            let bytes: usize = batch.iter().map(|job| job.bytes).sum();
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            metrics::counter!("kiln_gateway_writes_committed_total").increment(batch.len() as u64);
            for job in batch.drain(..) {
                let _ = job.committed.send(());
            }
        }
    }

    fn commit(&mut self, batch: &[Job]) -> rusqlite::Result<()> {
        let transaction = self.db.transaction()?;
        let mut grown = 0;
        for job in batch {
            let write = &job.write;
            crate::analytics::record(&transaction, &write.record)?;
            if let Some(cap) = write.log {
                if !logs::insert(&transaction, &write.record, cap)? {
                    metrics::counter!("kiln_gateway_logs_capped_total").increment(1);
                }
            }
            if let Some(entry) = &write.cache {
                grown += cache::insert(&transaction, entry)?;
            }
        }
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
}
