//! [`VectorizeLog`]: the [`ChangeLog`] of a Vectorize shared by several nodes, on one
//! JetStream stream (file storage, kept whole: it is the source of truth every node, a new one
//! included, builds its indexes from).
//!
//! Reading is a loop on a thread of its own: ask the stream for its last position, fetch each
//! message after this node's position by its sequence number, apply it, repeat. A plain NATS
//! subscription to the stream's subject wakes the loop as soon as anything is published, and
//! a poll every second covers a missed wake-up. Fetching by sequence (rather than a consumer)
//! keeps the position entirely this node's: nothing on the server to create, expire or lose.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::{self, RawMessageErrorKind, Stream};
use kiln_core::{KilnError, KilnResult};
use kiln_vectorize::{Change, ChangeLog, VectorStore};

use crate::bus::{unavailable, Bus};
use crate::parts::{part_of, split, Assembler};
use crate::position::PositionFile;

/// The stream's name unless `--nats-stream` says otherwise.
pub const DEFAULT_STREAM: &str = "KILN_VECTORIZE";
/// How often the reader looks for new messages when no wake-up came.
const POLL: Duration = Duration::from_secs(1);
/// Longest a request waits for this node to apply what it (or another node) appended.
const WAIT_APPLIED: Duration = Duration::from_secs(10);
/// Room left in each message for its headers.
const HEADER_ROOM: usize = 4096;
/// How long the server remembers a message id to drop a re-sent duplicate.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The position file is saved at least every this many messages during a long replay.
const SAVE_EVERY: u64 = 256;

pub struct VectorizeLogOptions {
    /// The JetStream stream: letters, digits, `-` and `_`. Nodes sharing indexes name the same.
    pub stream: String,
    /// Where this node keeps its position in the stream (next to its indexes).
    pub position_file: PathBuf,
    /// Largest message payload; `None`: the server's limit less room for headers.
    pub max_part_bytes: Option<usize>,
}

pub struct VectorizeLog {
    bus: Arc<Bus>,
    stream: Stream,
    subject: String,
    part_bytes: usize,
    applied: Mutex<u64>,
    applied_changed: Condvar,
    /// Wakes the reader (a sender may be shared between threads).
    wake: Sender<()>,
}

impl VectorizeLog {
    /// Creates the stream on `bus` if it is missing, makes `store` share through it, starts
    /// applying it, and returns once this node has applied everything the stream held at
    /// start.
    pub fn start(
        bus: Arc<Bus>,
        options: VectorizeLogOptions,
        store: &Arc<VectorStore>,
    ) -> KilnResult<Arc<Self>> {
        validate_stream_name(&options.stream)?;
        let subject = format!("kiln.vectorize.{}", options.stream.to_lowercase());
        let config = stream::Config {
            name: options.stream.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        let jetstream = bus.jetstream().clone();
        let (stream, info) = bus.call("opening the stream", async move {
            let mut stream = jetstream
                .get_or_create_stream(config)
                .await
                .map_err(|error| error.to_string())?;
            let info = stream
                .info()
                .await
                .map_err(|error| error.to_string())?
                .clone();
            Ok((stream, info))
        })?;
        if info.config.subjects != [subject.clone()] {
            return Err(KilnError::bad_input(format!(
                "NATS stream {:?} exists with subjects {:?}, not {subject:?}: name another with --nats-stream",
                options.stream, info.config.subjects
            )));
        }
        let position = PositionFile::new(&options.position_file, info.created.to_string());
        let mut applied = position.load();
        if applied > info.state.last_sequence {
            tracing::warn!(
                saved = applied,
                last = info.state.last_sequence,
                "vectorize log: the saved position is past the stream's end; reading it from its start"
            );
            applied = 0;
        }
        let part_bytes = options
            .max_part_bytes
            .unwrap_or_else(|| bus.max_payload().saturating_sub(HEADER_ROOM))
            .max(1);
        let (wake, woken) = mpsc::channel();
        let log = Arc::new(Self {
            bus,
            stream,
            subject,
            part_bytes,
            applied: Mutex::new(applied),
            applied_changed: Condvar::new(),
            wake,
        });
        log.wake_on_publish()?;
        if !store.share_through(log.clone()) {
            return Err(KilnError::internal(
                "the vector store already has a shared log",
            ));
        }
        let reader = Arc::clone(&log);
        let store = Arc::downgrade(store);
        thread::Builder::new()
            .name("kiln-vectorize-log".into())
            .spawn(move || reader.read(store, woken, position))
            .map_err(|error| KilnError::internal(format!("starting the log reader: {error}")))?;
        log.catch_up_at_start(info.state.last_sequence);
        Ok(log)
    }

    /// Where this node is in the stream.
    pub fn applied(&self) -> u64 {
        *self.applied.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits however long replaying the stream takes, saying how it goes.
    fn catch_up_at_start(&self, head: u64) {
        let started = Instant::now();
        let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        while *applied < head {
            tracing::info!(
                applied = *applied,
                head,
                "vectorize log: applying the shared log"
            );
            applied = self
                .applied_changed
                .wait_timeout(applied, Duration::from_secs(5))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        tracing::info!(head, elapsed = ?started.elapsed(), "vectorize log: caught up");
    }

    /// A plain subscription to the stream's subject: each message wakes the reader at once.
    fn wake_on_publish(&self) -> KilnResult<()> {
        let wake = self.wake.clone();
        self.bus.subscribe(&self.subject, move |_| {
            let _ = wake.send(());
        })
    }

    fn fetch(&self, position: u64) -> KilnResult<Option<(async_nats::HeaderMap, Vec<u8>)>> {
        let stream = self.stream.clone();
        self.bus.call("reading the stream", async move {
            match stream.get_raw_message(position).await {
                Ok(message) => Ok(Some((message.headers, message.payload.to_vec()))),
                // Removed from the stream (by an operator): nothing to apply there.
                Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
                Err(error) => Err(error.to_string()),
            }
        })
    }

    fn advance_to(&self, position: u64) {
        *self.applied.lock().unwrap_or_else(PoisonError::into_inner) = position;
        self.applied_changed.notify_all();
    }

    /// The reader thread: applies the stream in order until the store is gone.
    fn read(
        self: Arc<Self>,
        store: Weak<VectorStore>,
        woken: Receiver<()>,
        position: PositionFile,
    ) {
        let mut assembler = Assembler::default();
        let mut saved = self.applied();
        loop {
            let head = match self.head() {
                Ok(head) => head,
                Err(error) => {
                    tracing::warn!(%error, "vectorize log: reading the stream's end; retrying");
                    let _ = woken.recv_timeout(POLL);
                    continue;
                }
            };
            let mut next = self.applied() + 1;
            while next <= head {
                let Some(store) = store.upgrade() else {
                    return;
                };
                match self.fetch(next) {
                    Ok(Some((headers, payload))) => {
                        apply_message(&store, &mut assembler, next, &headers, payload)
                    }
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%error, position = next, "vectorize log: reading a message; retrying");
                        break;
                    }
                }
                assembler.drop_abandoned(next);
                self.advance_to(next);
                next += 1;
                if next - saved > SAVE_EVERY {
                    saved = self.save(&position, &assembler);
                }
            }
            if self.applied() != saved {
                saved = self.save(&position, &assembler);
            }
            if store.strong_count() == 0 {
                return;
            }
            match woken.recv_timeout(POLL) {
                Ok(()) => while woken.try_recv().is_ok() {},
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => thread::sleep(POLL),
            }
        }
    }

    /// Saves where a restart must resume: before any change still missing parts.
    fn save(&self, position: &PositionFile, assembler: &Assembler) -> u64 {
        let applied = self.applied();
        position.save(assembler.resume_before().unwrap_or(applied).min(applied));
        applied
    }
}

fn apply_message(
    store: &VectorStore,
    assembler: &mut Assembler,
    position: u64,
    headers: &async_nats::HeaderMap,
    payload: Vec<u8>,
) {
    let place = match part_of(Some(headers)) {
        Ok(place) => place,
        Err(reason) => {
            tracing::warn!(position, %reason, "vectorize log: a message that is not a change; skipped");
            return;
        }
    };
    let Some(bytes) = assembler.add(position, place, payload) else {
        return;
    };
    match Change::decode(&bytes) {
        Ok(change) => {
            if let Err(error) = store.apply_change(change) {
                // Refused on every node alike (see kiln_vectorize's replica module).
                tracing::debug!(position, %error, "vectorize log: a change was refused");
            }
        }
        Err(reason) => {
            tracing::warn!(position, %reason, "vectorize log: a change this build cannot read; skipped");
        }
    }
}

impl ChangeLog for VectorizeLog {
    fn append(&self, change: &Change) -> KilnResult<u64> {
        let parts = split(change.id(), &change.encode(), self.part_bytes);
        let jetstream = self.bus.jetstream().clone();
        let subject = self.subject.clone();
        self.bus.call("appending a change", async move {
            let mut last = 0;
            for (headers, bytes) in parts {
                let acknowledged = jetstream
                    .publish_with_headers(subject.clone(), headers, bytes.into())
                    .await
                    .map_err(|error| error.to_string())?
                    .await
                    .map_err(|error| error.to_string())?;
                last = acknowledged.sequence;
            }
            Ok(last)
        })
    }

    fn head(&self) -> KilnResult<u64> {
        let stream = self.stream.clone();
        self.bus.call("reading the stream's end", async move {
            stream
                .get_info()
                .await
                .map(|info| info.state.last_sequence)
                .map_err(|error| error.to_string())
        })
    }

    fn wait_applied(&self, position: u64) -> KilnResult<()> {
        let _ = self.wake.send(());
        let deadline = Instant::now() + WAIT_APPLIED;
        let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        while *applied < position {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(unavailable(&format!(
                    "this node has applied the vectorize log up to {}, not yet {position}, after {WAIT_APPLIED:?}",
                    *applied
                )));
            }
            applied = self
                .applied_changed
                .wait_timeout(applied, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(())
    }
}

fn validate_stream_name(name: &str) -> KilnResult<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(KilnError::bad_input(format!(
            "NATS stream name {name:?}: use 1–64 letters, digits, '-' and '_'"
        )))
    }
}
