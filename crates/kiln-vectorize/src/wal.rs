//! The per-index mutation log: every mutation is appended and fsync'd here before its
//! mutationId is returned, so an acknowledged mutation survives `kill -9`.
//!
//! Files are segments `<index>/log/{segment:020}.log`, numbered upwards; each start of the store
//! writes to a new segment, and an append that fails (a full disk) is cut off again before the
//! next one, so nothing is ever appended after a torn record. A record is
//! `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`, the payload being a
//! [`Mutation`](crate::codec::Mutation) in the encoding of `codec`. Replay reads each segment
//! up to a torn tail (a crash mid-write: never acknowledged). A bad record with more records
//! after it is not a torn tail but damage, and opening fails (`InvalidData`: the store then
//! quarantines the index) rather than silently dropping acknowledged mutations. A segment whose
//! mutations are all in a snapshot is deleted.

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
    /// A failed append left bytes past `segment_bytes` that could not be cut off: no append
    /// may follow them until the cut succeeds.
    poisoned: bool,
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
            for mutation in intact_records(&bytes, &path)? {
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
            poisoned: false,
        })
    }

    /// Appends one mutation and waits for it to reach the disk. On an error whatever part of
    /// the record reached the file is cut off (`set_len`), so it can never end a replay before
    /// later, acknowledged records; if even that fails, appends fail until it succeeds.
    pub fn append(&mut self, seq: u64, payload: &[u8]) -> io::Result<()> {
        if self.poisoned {
            self.file.set_len(self.segment_bytes).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("the log has a torn record that cannot be cut off: {error}"),
                )
            })?;
            self.poisoned = false;
        }
        let record = frame(payload);
        let written = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            self.poisoned = self.file.set_len(self.segment_bytes).is_err();
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
        if self.segment_bytes == 0 || self.poisoned {
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

/// Decodes the segment's records up to a torn tail: a record cut short by the end of the file,
/// or a bad last record, or zeros to the end (what a power cut can leave). A bad record with
/// anything else after it is damage: `InvalidData`.
fn intact_records(bytes: &[u8], path: &Path) -> io::Result<Vec<Mutation>> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let start = offset + HEADER_BYTES;
        let Some(header) = bytes.get(offset..start) else {
            break;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let end = start.saturating_add(len);
        let Some(payload) = bytes.get(start..end) else {
            break;
        };
        let problem = if crc32fast::hash(payload) != crc {
            "fails its checksum".to_owned()
        } else {
            match decode_mutation(payload) {
                Ok(mutation) => {
                    records.push(mutation);
                    offset = end;
                    continue;
                }
                Err(reason) => format!("cannot be decoded ({reason})"),
            }
        };
        if end == bytes.len() || bytes[offset..].iter().all(|byte| *byte == 0) {
            tracing::warn!(path = %path.display(), offset, "mutation log: torn last record ({problem}), never acknowledged");
            break;
        }
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: the record at byte {offset} {problem} and {} bytes follow it",
                path.display(),
                bytes.len() - end
            ),
        ));
    }
    Ok(records)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_mutation, MutationOp};

    fn mutation(seq: u64) -> Vec<u8> {
        encode_mutation(&Mutation {
            seq,
            unix_millis: 1,
            mutation_id: format!("m{seq}"),
            op: MutationOp::Delete(vec![format!("id{seq}")]),
        })
    }

    fn replayed(dir: &Path) -> io::Result<Vec<u64>> {
        let mut seqs = Vec::new();
        MutationLog::open(dir, |m| seqs.push(m.seq))?;
        Ok(seqs)
    }

    /// A failed append's partial record is cut off before the next append (here the cut is
    /// made to fail once, as if the disk refused it too): later records still replay.
    #[test]
    fn a_torn_record_never_hides_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MutationLog::open(dir.path(), |_| {}).unwrap();
        log.append(1, &mutation(1)).unwrap();
        log.file.write_all(&frame(&mutation(2))[..5]).unwrap();
        log.poisoned = true;
        log.append(3, &mutation(3)).unwrap();
        drop(log);
        assert_eq!(replayed(dir.path()).unwrap(), [1, 3]);
    }

    /// Torn tails end a segment quietly; a bad record in the middle is an error.
    #[test]
    fn only_a_tail_may_be_torn() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        let (one, two) = (frame(&mutation(1)), frame(&mutation(2)));
        let mut damaged = two.clone();
        damaged[HEADER_BYTES] ^= 0xff;
        for tail in [&two[..3], &two[..two.len() - 1], &damaged, &[0u8; 64][..]] {
            fs::create_dir_all(dir.path()).unwrap();
            fs::write(&path, [&one[..], tail].concat()).unwrap();
            assert_eq!(replayed(dir.path()).unwrap(), [1]);
            fs::remove_dir_all(dir.path()).unwrap();
        }
        fs::create_dir_all(dir.path()).unwrap();
        fs::write(&path, [&one[..], &damaged, &frame(&mutation(3))].concat()).unwrap();
        let error = replayed(dir.path()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    }
}
