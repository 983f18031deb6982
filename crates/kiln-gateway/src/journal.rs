//! The write-ahead journal: each request's writes are appended here, in one `write` and one
//! `fdatasync` per batch (group commit), before the request is acknowledged. Appends are cheap
//! (about a kilobyte per request, no page rewrites), so acknowledging costs little; SQLite gets
//! the records later in large transactions, off the request path. After a crash or power loss
//! the unapplied tail is replayed.
//!
//! Files are segments `{seq:020}.journal` in one directory. A record is
//! `[payload length: u32][FNV-1a of payload: u64][payload]`; a torn or corrupt record ends the
//! replay of its segment (it was never acknowledged). A failed append is cut off again
//! (`set_len`) before anything else is appended, so a torn record is only ever a segment's tail.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::cache::CacheEntry;
use crate::logs::LogCap;
use crate::{LogRecord, RequestWrite};

/// A segment is closed and a new one begun past this size.
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

pub struct Journal {
    dir: PathBuf,
    file: File,
    pub segment: u64,
    pub offset: u64,
    /// Whether each append is fsync'd before it counts as done.
    sync: bool,
    /// A failed append left bytes past `offset` that could not be cut off yet.
    torn: bool,
}

impl Journal {
    /// Opens a new segment numbered after the existing ones and after `after` (the segment SQLite
    /// has applied up to: numbers must keep growing across restarts, or replay would take new
    /// records for applied ones).
    pub fn open(dir: &Path, after: u64, sync: bool) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let last = segments(dir)?.last().map_or(0, |(seq, _)| *seq);
        let segment = last.max(after) + 1;
        let file = create_segment(dir, segment)?;
        Ok(Self {
            dir: dir.to_owned(),
            file,
            segment,
            offset: 0,
            sync,
            torn: false,
        })
    }

    /// Appends already-encoded records in one write (and one fsync). On an error none of them
    /// counts: whatever part reached the file is cut off, now or before the next append.
    pub fn append(&mut self, encoded: &[u8]) -> io::Result<()> {
        if self.torn {
            self.file.set_len(self.offset)?;
            self.torn = false;
        }
        let mut written = self.file.write_all(encoded);
        if self.sync {
            written = written.and_then(|()| self.file.sync_data());
        }
        if let Err(error) = written {
            self.torn = self.file.set_len(self.offset).is_err();
            return Err(error);
        }
        self.offset += encoded.len() as u64;
        Ok(())
    }

    /// Starts the next segment when this one is full; returns the closed segment's number.
    pub fn rotate_if_full(&mut self) -> io::Result<Option<u64>> {
        if self.offset < SEGMENT_BYTES {
            return Ok(None);
        }
        let closed = self.segment;
        self.file = create_segment(&self.dir, closed + 1)?;
        self.segment = closed + 1;
        self.offset = 0;
        Ok(Some(closed))
    }
}

fn create_segment(dir: &Path, seq: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, seq))?;
    // The new name must be durable too, or a power cut could lose a segment of fsync'd records.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.journal"))
}

/// Existing segments, oldest first.
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let seq = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".journal"))
            .and_then(|seq| seq.parse::<u64>().ok());
        if let Some(seq) = seq {
            found.push((seq, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Records of a segment with the offset just past each, up to the first torn one.
pub fn read_segment(path: &Path) -> io::Result<Vec<(u64, RequestWrite)>> {
    let bytes = fs::read(path)?;
    let mut records = Vec::new();
    let mut at = 0usize;
    while at + 12 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) as usize;
        let checksum = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().unwrap_or_default());
        let start = at + 12;
        let Some(payload) = bytes.get(start..start + len) else {
            break;
        };
        if fnv1a(payload) != checksum {
            break;
        }
        let Some(write) = decode(payload) else {
            break;
        };
        at = start + len;
        records.push((at as u64, write));
    }
    Ok(records)
}

/// Appends `write` as one framed record to `out`.
pub fn encode_into(out: &mut Vec<u8>, write: &RequestWrite) {
    let mut payload = Encoder(Vec::with_capacity(512));
    payload.record(&write.record);
    match write.log {
        None => payload.u8(0),
        Some(LogCap::Unlimited) => payload.u8(1),
        Some(LogCap::StopInserting(cap)) => {
            payload.u8(2);
            payload.u64(cap);
        }
        Some(LogCap::DeleteOldest(cap)) => {
            payload.u8(3);
            payload.u64(cap);
        }
    }
    match &write.cache {
        None => payload.u8(0),
        Some(entry) => {
            payload.u8(1);
            payload.cache_entry(entry);
        }
    }
    let payload = payload.0;
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&fnv1a(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// A cache entry alone, as the Redis cache stores it.
pub fn encode_cache_entry(entry: &CacheEntry) -> Vec<u8> {
    let mut encoder = Encoder(Vec::with_capacity(entry.body.len() + 128));
    encoder.cache_entry(entry);
    encoder.0
}

/// The inverse of [`encode_cache_entry`]; `None` for anything else.
pub fn decode_cache_entry(bytes: &[u8]) -> Option<CacheEntry> {
    let mut decoder = Decoder { bytes, at: 0 };
    let entry = decoder.cache_entry()?;
    (decoder.at == bytes.len()).then_some(entry)
}

/// This journal's name, kept in the directory (`ID`), so that a shared database can record
/// how far it has applied each node's journal.
pub fn identity(dir: &Path) -> io::Result<String> {
    let path = dir.join("ID");
    match fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let temporary = dir.join("ID.new");
    let mut file = File::create(&temporary)?;
    file.write_all(id.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temporary, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(id)
}

fn decode(payload: &[u8]) -> Option<RequestWrite> {
    let mut decoder = Decoder {
        bytes: payload,
        at: 0,
    };
    let record = decoder.record()?;
    let log = match decoder.u8()? {
        0 => None,
        1 => Some(LogCap::Unlimited),
        2 => Some(LogCap::StopInserting(decoder.u64()?)),
        3 => Some(LogCap::DeleteOldest(decoder.u64()?)),
        _ => return None,
    };
    let cache = match decoder.u8()? {
        0 => None,
        1 => Some(decoder.cache_entry()?),
        _ => return None,
    };
    (decoder.at == payload.len()).then_some(RequestWrite { record, log, cache })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

struct Encoder(Vec<u8>);

impl Encoder {
    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }
    fn bytes(&mut self, value: &[u8]) {
        self.u64(value.len() as u64);
        self.0.extend_from_slice(value);
    }
    fn text(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }
    fn optional_text(&mut self, value: Option<&str>) {
        match value {
            None => self.u8(0),
            Some(text) => {
                self.u8(1);
                self.text(text);
            }
        }
    }
    fn optional_u64(&mut self, value: Option<u64>) {
        match value {
            None => self.u8(0),
            Some(number) => {
                self.u8(1);
                self.u64(number);
            }
        }
    }

    fn record(&mut self, r: &LogRecord) {
        for text in [
            &r.id,
            &r.account,
            &r.gateway,
            &r.provider,
            &r.model,
            &r.path,
            &r.request_type,
        ] {
            self.text(text);
        }
        self.u64(r.created_at_ms as u64);
        for number in [
            r.duration_ms,
            u64::from(r.status_code),
            r.tokens_in,
            r.tokens_out,
        ] {
            self.u64(number);
        }
        self.u8(u8::from(r.success)
            | u8::from(r.cached) << 1
            | u8::from(r.custom_cost) << 2
            | u8::from(r.authentication) << 3);
        self.optional_u64(r.cost.map(f64::to_bits));
        self.optional_u64(r.step.map(u64::from));
        let metadata = r
            .metadata
            .as_ref()
            .map(|m| Value::Object(m.clone()).to_string());
        for text in [
            r.model_type.as_deref(),
            metadata.as_deref(),
            r.event_id.as_deref(),
            r.request_content_type.as_deref(),
            r.response_content_type.as_deref(),
            r.user_agent.as_deref(),
        ] {
            self.optional_text(text);
        }
        self.bytes(&r.request_body);
        self.bytes(&r.response_body);
        self.u64(r.request_size);
        self.u64(r.response_size);
    }

    fn cache_entry(&mut self, entry: &CacheEntry) {
        self.0.extend_from_slice(&entry.key);
        self.text(&entry.account);
        self.text(&entry.gateway);
        self.u64(u64::from(entry.status));
        self.optional_text(entry.content_type.as_deref());
        self.u8(u8::from(entry.streamed));
        self.bytes(&entry.body);
        self.u64(entry.created_at_ms as u64);
        self.u64(entry.expires_at_ms as u64);
    }
}

struct Decoder<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Decoder<'_> {
    fn take(&mut self, len: usize) -> Option<&[u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(slice)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = usize::try_from(self.u64()?).ok()?;
        self.take(len).map(<[u8]>::to_vec)
    }
    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?).ok()
    }
    fn optional_text(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.text().map(Some),
            _ => None,
        }
    }
    fn optional_u64(&mut self) -> Option<Option<u64>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.u64().map(Some),
            _ => None,
        }
    }

    fn record(&mut self) -> Option<LogRecord> {
        let mut texts = Vec::with_capacity(7);
        for _ in 0..7 {
            texts.push(self.text()?);
        }
        let [id, account, gateway, provider, model, path, request_type]: [String; 7] =
            texts.try_into().ok()?;
        let created_at_ms = self.u64()? as i64;
        let (duration_ms, status_code, tokens_in, tokens_out) =
            (self.u64()?, self.u64()?, self.u64()?, self.u64()?);
        let flags = self.u8()?;
        let cost = self.optional_u64()?.map(f64::from_bits);
        let step = self.optional_u64()?.and_then(|s| u32::try_from(s).ok());
        let model_type = self.optional_text()?;
        let metadata = self.optional_text()?;
        let metadata = match metadata {
            None => None,
            Some(text) => match serde_json::from_str::<Value>(&text).ok()? {
                Value::Object(map) => Some(map),
                _ => Some(Map::new()),
            },
        };
        Some(LogRecord {
            id,
            account,
            gateway,
            created_at_ms,
            provider,
            model,
            model_type,
            path,
            request_type,
            duration_ms,
            status_code: u16::try_from(status_code).ok()?,
            success: flags & 1 != 0,
            cached: flags & 2 != 0,
            tokens_in,
            tokens_out,
            cost,
            custom_cost: flags & 4 != 0,
            metadata,
            step,
            event_id: self.optional_text()?,
            request_content_type: self.optional_text()?,
            response_content_type: self.optional_text()?,
            user_agent: self.optional_text()?,
            authentication: flags & 8 != 0,
            request_body: self.bytes()?,
            response_body: self.bytes()?,
            request_size: self.u64()?,
            response_size: self.u64()?,
        })
    }

    fn cache_entry(&mut self) -> Option<CacheEntry> {
        let key: [u8; 32] = self.take(32)?.try_into().ok()?;
        Some(CacheEntry {
            key,
            account: self.text()?,
            gateway: self.text()?,
            status: u16::try_from(self.u64()?).ok()?,
            content_type: self.optional_text()?,
            streamed: self.u8()? != 0,
            body: self.bytes()?,
            created_at_ms: self.u64()? as i64,
            expires_at_ms: self.u64()? as i64,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> RequestWrite {
        let mut metadata = Map::new();
        metadata.insert("user".into(), Value::String("u1".into()));
        RequestWrite {
            record: LogRecord {
                id: "01JADMCQQQBWH3NXZ5GCRN98DP".into(),
                account: "a".into(),
                gateway: "g".into(),
                created_at_ms: 1_795_000_000_000,
                provider: "workers-ai".into(),
                model: "@cf/x".into(),
                model_type: Some("Text Generation".into()),
                path: "workers-ai/@cf/x".into(),
                request_type: "workers-ai".into(),
                duration_ms: 12,
                status_code: 200,
                success: true,
                cached: false,
                tokens_in: 5,
                tokens_out: 7,
                cost: Some(0.25),
                custom_cost: true,
                metadata: Some(metadata),
                step: Some(1),
                event_id: None,
                request_content_type: Some("application/json".into()),
                response_content_type: None,
                user_agent: Some("ua".into()),
                authentication: true,
                request_body: b"{}".to_vec(),
                response_body: vec![0, 1, 2],
                request_size: 2,
                response_size: 3,
            },
            log: Some(LogCap::DeleteOldest(9)),
            cache: Some(CacheEntry {
                key: [7; 32],
                account: "a".into(),
                gateway: "g".into(),
                status: 200,
                content_type: Some("text/event-stream".into()),
                streamed: true,
                body: b"data: x\n\n".to_vec(),
                created_at_ms: 1,
                expires_at_ms: 2,
            }),
        }
    }

    #[test]
    fn records_round_trip_and_torn_tails_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), 0, true).unwrap();
        let mut encoded = Vec::new();
        encode_into(&mut encoded, &sample());
        encode_into(&mut encoded, &sample());
        journal.append(&encoded).unwrap();
        // A crash in the middle of the third record's write.
        let mut torn = Vec::new();
        encode_into(&mut torn, &sample());
        std::fs::OpenOptions::new()
            .append(true)
            .open(segment_path(dir.path(), journal.segment))
            .unwrap()
            .write_all(&torn[..torn.len() / 2])
            .unwrap();
        let path = segment_path(dir.path(), journal.segment);
        let records = read_segment(&path).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].0, encoded.len() as u64);
        let write = &records[0].1;
        let expected = sample();
        assert_eq!(write.record, expected.record);
        assert_eq!(write.log, expected.log);
        assert_eq!(write.cache, expected.cache);
        // The next journal opened starts a new segment after this one, and after the segment
        // SQLite says it applied.
        assert_eq!(
            Journal::open(dir.path(), 0, true).unwrap().segment,
            journal.segment + 1
        );
        assert_eq!(Journal::open(dir.path(), 40, true).unwrap().segment, 41);
    }

    /// A torn tail left by a failed append is cut off before the next append, so the records
    /// after it are replayed.
    #[test]
    fn a_failed_append_never_hides_later_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), 0, true).unwrap();
        let mut one = Vec::new();
        encode_into(&mut one, &sample());
        journal.append(&one).unwrap();
        // What a write cut short by ENOSPC leaves, with the cut not yet made.
        std::fs::OpenOptions::new()
            .append(true)
            .open(segment_path(dir.path(), journal.segment))
            .unwrap()
            .write_all(&one[..10])
            .unwrap();
        journal.torn = true;
        journal.append(&one).unwrap();
        let records = read_segment(&segment_path(dir.path(), journal.segment)).unwrap();
        assert_eq!(records.len(), 2);
    }
}
