//! Snapshots: the whole state of an index as of one mutation, so that a restart replays only
//! the log written after it.
//!
//! `<index>/snapshot.bin`, written to `snapshot.tmp`, fsync'd and renamed over the old one (a
//! crash leaves either the old or the new snapshot, never a mix). Encoding as in `codec`:
//!
//! ```text
//! "KVSNAP01"
//! [last seq: u64][last unix millis: i64][last mutation id: optional str]
//! [metadata index count: u32] ([property: str][type: u8])…
//! [vector count: u64] ([vector][indexed count: u32] ([property: str][tag: u8][value])…)…
//! [CRC-32 of everything before: u32]
//! ```
//! Indexed value tags: 1 string (str), 2 number (f64), 3 boolean (u8). A vector's indexed
//! values are stored, not recomputed, because they depend on which metadata indexes existed
//! when it was written.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::codec::{index_type_code, index_type_from_code, ByteReader, ByteWriter, DecodeResult};
use crate::filter::IndexedValue;
use crate::record::VectorRecord;
use crate::state::{IndexState, LastMutation, StoredVector};
use crate::wal::sync_dir;

const MAGIC: &[u8; 8] = b"KVSNAP01";
pub const SNAPSHOT_FILE: &str = "snapshot.bin";
const TEMPORARY_FILE: &str = "snapshot.tmp";

/// Streams bytes to the file while keeping their CRC.
struct ChecksummedWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> ChecksummedWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.written += bytes.len() as u64;
        self.inner.write_all(bytes)
    }
}

/// Writes the state atomically; returns the snapshot's size in bytes.
pub fn write_snapshot(dir: &Path, state: &IndexState) -> io::Result<u64> {
    let temporary = dir.join(TEMPORARY_FILE);
    let file = File::create(&temporary)?;
    let mut out = ChecksummedWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
        written: 0,
    };
    let mut header = ByteWriter::default();
    header.bytes.extend_from_slice(MAGIC);
    let last = state.last.as_ref();
    header.u64(last.map_or(0, |last| last.seq));
    header.i64(last.map_or(0, |last| last.unix_millis));
    header.optional_str(last.map(|last| last.mutation_id.as_str()));
    header.len(state.metadata_indexes.len());
    for (property, index_type) in &state.metadata_indexes {
        header.str(property);
        header.u8(index_type_code(*index_type));
    }
    header.u64(state.vector_count() as u64);
    out.put(&header.bytes)?;
    for slot in state.ids.values() {
        let Some(vector) = state.vector(*slot) else {
            continue;
        };
        out.put(&encode_vector(vector))?;
    }
    let crc = out.crc.clone().finalize();
    out.inner.write_all(&crc.to_le_bytes())?;
    let size = out.written + 4;
    let file = out.inner.into_inner().map_err(|error| error.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, dir.join(SNAPSHOT_FILE))?;
    sync_dir(dir)?;
    Ok(size)
}

fn encode_vector(vector: &StoredVector) -> Vec<u8> {
    let mut out = ByteWriter::default();
    out.vector(&VectorRecord {
        id: vector.id.clone(),
        values: Vec::new(),
        namespace: vector.namespace.clone(),
        metadata: vector.metadata.clone(),
    });
    // `vector` above wrote an empty values list last; replace it with the real one.
    out.bytes.truncate(out.bytes.len() - 4);
    out.f32s(&vector.values);
    out.len(vector.indexed.len());
    for (property, value) in &vector.indexed {
        out.str(property);
        match value {
            IndexedValue::String(text) => {
                out.u8(1);
                out.str(text);
            }
            IndexedValue::Number(number) => {
                out.u8(2);
                out.f64(*number);
            }
            IndexedValue::Boolean(flag) => {
                out.u8(3);
                out.u8(u8::from(*flag));
            }
        }
    }
    out.bytes
}

/// Loads `snapshot.bin` into `state`, if there is one. A snapshot that fails its checksum is an
/// error (`InvalidData`: the index is damaged): the log before it is gone, so silently starting
/// empty would lose data. Other errors are the disk's (reading failed).
pub fn load_snapshot(dir: &Path, state: &mut IndexState) -> io::Result<bool> {
    let _ = fs::remove_file(dir.join(TEMPORARY_FILE));
    let bytes = match fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    let damaged = |reason: String| io::Error::new(io::ErrorKind::InvalidData, reason);
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(damaged("the snapshot has no valid header".into()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(damaged("the snapshot fails its checksum".into()));
    }
    decode_into(&body[MAGIC.len()..], state)
        .map_err(|reason| damaged(format!("the snapshot is corrupt: {reason}")))?;
    Ok(true)
}

fn decode_into(body: &[u8], state: &mut IndexState) -> DecodeResult<()> {
    let mut input = ByteReader::new(body);
    let seq = input.u64()?;
    let unix_millis = input.i64()?;
    state.last = input.optional_str()?.map(|mutation_id| LastMutation {
        seq,
        mutation_id,
        unix_millis,
    });
    for _ in 0..input.len()? {
        let property = input.str()?;
        state
            .metadata_indexes
            .push((property, index_type_from_code(input.u8()?)?));
    }
    for _ in 0..input.u64()? {
        let record = input.vector()?;
        let mut indexed = Vec::new();
        for _ in 0..input.len()? {
            let property = input.str()?;
            let value = match input.u8()? {
                1 => IndexedValue::String(input.str()?),
                2 => IndexedValue::Number(input.f64()?),
                3 => IndexedValue::Boolean(input.u8()? != 0),
                tag => return Err(format!("unknown indexed value tag {tag}")),
            };
            indexed.push((property, value));
        }
        if record.values.len() != state.dimensions {
            return Err(format!(
                "vector {:?} has {} dimensions",
                record.id,
                record.values.len()
            ));
        }
        state.add_stored(StoredVector {
            id: record.id,
            values: record.values,
            namespace: record.namespace,
            metadata: record.metadata,
            indexed,
        });
    }
    if !input.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The ANN graph beside the snapshot, so that a restart does not rebuild it.
//
// `<index>/graph.bin`, written after `snapshot.bin` under the same read lock (so of the same
// state), to `graph.tmp` then renamed:
//
// ```text
// "KVGRAPH1" [snapshot seq: u64] [vector count: u64] [graph: see AnnIndex::write] [CRC-32: u32]
// ```
// Keys are written as the vectors' positions in the snapshot, which are the slots they get when
// it is loaded. A graph file that does not match the snapshot (a crash between the two renames,
// corruption) is ignored: the graph is then rebuilt, as it was before graphs were saved.

const GRAPH_MAGIC: &[u8; 8] = b"KVGRAPH1";
pub const GRAPH_FILE: &str = "graph.bin";
const GRAPH_TEMPORARY_FILE: &str = "graph.tmp";

/// Writes the state's graph (or removes a stale file when there is none).
pub fn write_graph(dir: &Path, state: &IndexState) -> io::Result<()> {
    let Some(ann) = &state.ann else {
        return match fs::remove_file(dir.join(GRAPH_FILE)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        };
    };
    let mut position = vec![u64::MAX; state.slots.len()];
    for (ordinal, slot) in state.ids.values().enumerate() {
        position[*slot as usize] = ordinal as u64;
    }
    let temporary = dir.join(GRAPH_TEMPORARY_FILE);
    let file = File::create(&temporary)?;
    let mut out = ChecksummedWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
        written: 0,
    };
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(GRAPH_MAGIC);
    header.extend_from_slice(&state.last.as_ref().map_or(0, |last| last.seq).to_le_bytes());
    header.extend_from_slice(&(state.vector_count() as u64).to_le_bytes());
    out.put(&header)?;
    ann.write(&mut out, |key| {
        position
            .get(key as usize)
            .copied()
            .filter(|ordinal| *ordinal != u64::MAX)
    })?;
    let crc = out.crc.clone().finalize();
    out.inner.write_all(&crc.to_le_bytes())?;
    let file = out.inner.into_inner().map_err(|error| error.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, dir.join(GRAPH_FILE))?;
    sync_dir(dir)
}

impl<W: Write> Write for ChecksummedWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.put(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Loads `graph.bin` into a state just loaded from the snapshot, if it belongs to that
/// snapshot; `Err` says why it was not used (the caller rebuilds).
pub fn load_graph(dir: &Path, state: &mut IndexState) -> Result<bool, String> {
    let _ = fs::remove_file(dir.join(GRAPH_TEMPORARY_FILE));
    let bytes = match fs::read(dir.join(GRAPH_FILE)) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(format!("reading the graph: {error}")),
    };
    if bytes.len() < 28 || &bytes[..8] != GRAPH_MAGIC {
        return Err("the graph file has no valid header".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err("the graph file fails its checksum".into());
    }
    let word = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or_default());
    let seq = state.last.as_ref().map_or(0, |last| last.seq);
    if word(8) != seq || word(16) != state.vector_count() as u64 {
        return Err("the graph file belongs to another snapshot".into());
    }
    let slots = &state.slots;
    let ann = crate::ann::AnnIndex::read(&mut &body[24..], state.dimensions, state.metric, |key| {
        slots
            .get(usize::try_from(key).ok()?)
            .and_then(Option::as_ref)
            .map(|vector| vector.values.as_slice())
    })
    .map_err(|error| format!("the graph file is corrupt: {error}"))?;
    if ann.live() != state.vector_count() {
        return Err("the graph file does not cover every vector".into());
    }
    state.install_ann(ann);
    state.ann_from_disk = true;
    Ok(true)
}
