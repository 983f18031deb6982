//! The per-index mutation log: every mutation is appended and fsync'd here before its
//! mutationId is returned, so an acknowledged mutation survives `kill -9`.
//!
//! Files are segments `<index>/log/{segment:020}.log`, numbered upwards; each start of the store
//! writes to a new segment, so nothing is ever appended after a torn record. A record is
//! `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`, the payload being a
//! [`Mutation`](crate::codec::Mutation) in the encoding of `codec`. Replay reads each segment
//! up to its first torn or corrupt record (a crash mid-write: never acknowledged). A segment
//! whose mutations are all in a snapshot is deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::codec::{decode_mutation, Mutation};

/// A segment is closed and the next begun past this size.
pub const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;
const HEADER_BYTES: usize = 8;

pub struct MutationLog {
    dir: PathBuf,
    file: File,
    segment: u64,
    segment_bytes: u64,
    /// Highest seq written to the current segment (0: none).
    segment_max_seq: u64,
    /// Closed segments and the highest seq in each.
    closed: Vec<(u64, u64)>,
}

/// Frames a payload as one log record.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER_BYTES + payload.len());
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    record.extend_from_slice(payload);
    record
}

impl MutationLog {
    /// Replays every intact record of every segment, in order, then opens a fresh segment.
    pub fn open(dir: &Path, mut replay: impl FnMut(Mutation)) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut closed = Vec::new();
        for (segment, path) in segments(dir)? {
            let bytes = fs::read(&path)?;
            // Each open starts a segment; those of opens that wrote nothing (an index closed
            // while idle and reopened) would otherwise pile up until the next snapshot.
            if bytes.is_empty() {
                fs::remove_file(&path)?;
                continue;
            }
            let mut max_seq = 0;
            for mutation in intact_records(&bytes, &path) {
                max_seq = max_seq.max(mutation.seq);
                replay(mutation);
            }
            closed.push((segment, max_seq));
        }
        let segment = closed.last().map_or(1, |(segment, _)| segment + 1);
        let file = create_segment(dir, segment)?;
        Ok(Self {
            dir: dir.to_owned(),
            file,
            segment,
            segment_bytes: 0,
            segment_max_seq: 0,
            closed,
        })
    }

    /// Appends one mutation and waits for it to reach the disk. On an error the segment is
    /// abandoned (a partial record may be in it), so the next append starts a clean one.
    pub fn append(&mut self, seq: u64, payload: &[u8]) -> io::Result<()> {
        let record = frame(payload);
        let written = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            let _ = self.rotate();
            return Err(error);
        }
        self.segment_bytes += record.len() as u64;
        self.segment_max_seq = self.segment_max_seq.max(seq);
        if self.segment_bytes >= SEGMENT_BYTES {
            self.rotate()?;
        }
        Ok(())
    }

    /// Closes the current segment (if it holds anything) and starts the next one.
    pub fn rotate(&mut self) -> io::Result<()> {
        if self.segment_bytes == 0 {
            return Ok(());
        }
        let next = self.segment + 1;
        self.file = create_segment(&self.dir, next)?;
        self.closed.push((self.segment, self.segment_max_seq));
        self.segment = next;
        self.segment_bytes = 0;
        self.segment_max_seq = 0;
        Ok(())
    }

    /// Deletes closed segments whose every mutation is in a snapshot up to `snapshot_seq`.
    pub fn delete_covered(&mut self, snapshot_seq: u64) -> io::Result<()> {
        let mut first_error = None;
        self.closed.retain(|(segment, max_seq)| {
            if *max_seq > snapshot_seq {
                return true;
            }
            match fs::remove_file(segment_path(&self.dir, *segment)) {
                Ok(()) => false,
                Err(error) if error.kind() == io::ErrorKind::NotFound => false,
                Err(error) => {
                    first_error.get_or_insert(error);
                    true
                }
            }
        });
        first_error.map_or(Ok(()), Err)
    }
}

/// Decodes records up to the first torn or corrupt one.
fn intact_records<'a>(bytes: &'a [u8], path: &'a Path) -> impl Iterator<Item = Mutation> + 'a {
    let mut offset = 0usize;
    std::iter::from_fn(move || {
        let header = bytes.get(offset..offset + HEADER_BYTES)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let start = offset + HEADER_BYTES;
        let payload = bytes.get(start..start.checked_add(len)?)?;
        if crc32fast::hash(payload) != crc {
            tracing::warn!(path = %path.display(), offset, "mutation log: corrupt record, ignoring the rest of the segment");
            return None;
        }
        match decode_mutation(payload) {
            Ok(mutation) => {
                offset = start + len;
                Some(mutation)
            }
            Err(reason) => {
                tracing::warn!(path = %path.display(), offset, %reason, "mutation log: undecodable record");
                None
            }
        }
    })
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.log"))
}

fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".log"))
            .and_then(|stem| stem.parse::<u64>().ok());
        if let Some(number) = number {
            found.push((number, path));
        }
    }
    found.sort();
    Ok(found)
}

fn create_segment(dir: &Path, segment: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, segment))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Makes a file's creation, rename or removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
