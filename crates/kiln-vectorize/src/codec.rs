//! The binary encoding shared by the mutation log and snapshots. All integers are
//! little-endian; a string is `[len: u32][UTF-8 bytes]`; an optional value is a `u8` flag (0/1)
//! followed by the value; vector values are `[count: u32][count × f32]`; metadata is its
//! compact JSON as a string.
//!
//! A mutation (one log record's payload) is
//! `[seq: u64][unix millis: i64][mutation id: str][op: u8][body]` where op/body are
//! 1 insert / 2 upsert: `[count: u32][vector…]`, vector = `[id][namespace?][metadata?][values]`;
//! 3 delete: `[count: u32][id…]`;
//! 4 create metadata index: `[property][type: u8 (1 string, 2 number, 3 boolean)]`;
//! 5 delete metadata index: `[property]`.

use serde_json::{Map, Value};

use crate::filter::MetadataIndexType;
use crate::record::VectorRecord;

pub type DecodeResult<T> = Result<T, String>;

#[derive(Debug, Clone, PartialEq)]
pub enum MutationOp {
    Insert(Vec<VectorRecord>),
    Upsert(Vec<VectorRecord>),
    Delete(Vec<String>),
    CreateMetadataIndex {
        property: String,
        index_type: MetadataIndexType,
    },
    DeleteMetadataIndex {
        property: String,
    },
}

/// One acknowledged change to an index, in log order.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// 1, 2, 3… per index; the snapshot records the last one it contains.
    pub seq: u64,
    pub unix_millis: i64,
    pub mutation_id: String,
    pub op: MutationOp,
}

/// Who a mutation is to its caller: its id and when it was accepted. A mutation applied from
/// the shared log keeps the identity the accepting node gave it, so every node reports the
/// same `processedUpToMutation` and time.
#[derive(Debug, Clone, PartialEq)]
pub struct MutationIdentity {
    pub mutation_id: String,
    pub unix_millis: i64,
}

impl MutationIdentity {
    pub fn fresh() -> Self {
        Self {
            mutation_id: uuid::Uuid::new_v4().to_string(),
            unix_millis: kiln_core::time::unix_millis(),
        }
    }
}

#[derive(Default)]
pub struct ByteWriter {
    pub bytes: Vec<u8>,
}

impl ByteWriter {
    pub fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }
    pub fn u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub fn f64(&mut self, value: f64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }
    pub fn len(&mut self, len: usize) {
        // Every length here is bounded far below 4 GiB by the API limits.
        self.u32(u32::try_from(len).unwrap_or(u32::MAX));
    }
    pub fn str(&mut self, text: &str) {
        self.len(text.len());
        self.bytes.extend_from_slice(text.as_bytes());
    }
    pub fn optional_str(&mut self, text: Option<&str>) {
        match text {
            Some(text) => {
                self.u8(1);
                self.str(text);
            }
            None => self.u8(0),
        }
    }
    pub fn f32s(&mut self, values: &[f32]) {
        self.len(values.len());
        self.bytes.reserve(values.len() * 4);
        for value in values {
            self.bytes.extend_from_slice(&value.to_le_bytes());
        }
    }
    pub fn vector(&mut self, record: &VectorRecord) {
        self.str(&record.id);
        self.optional_str(record.namespace.as_deref());
        let metadata = record
            .metadata
            .as_ref()
            .map(|metadata| Value::Object(metadata.clone()).to_string());
        self.optional_str(metadata.as_deref());
        self.f32s(&record.values);
    }
}

pub struct ByteReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> ByteReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }
    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.position..];
        self.position = self.bytes.len();
        rest
    }

    pub fn is_empty(&self) -> bool {
        self.position >= self.bytes.len()
    }
    fn take(&mut self, count: usize) -> DecodeResult<&'a [u8]> {
        let end = self
            .position
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {}", self.position))?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }
    fn array<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }
    pub fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> DecodeResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> DecodeResult<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub fn f64(&mut self) -> DecodeResult<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    pub fn len(&mut self) -> DecodeResult<usize> {
        Ok(self.u32()? as usize)
    }
    pub fn str(&mut self) -> DecodeResult<String> {
        let len = self.len()?;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }
    pub fn optional_str(&mut self) -> DecodeResult<Option<String>> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            flag => Err(format!("bad optional flag {flag}")),
        }
    }
    pub fn f32s(&mut self) -> DecodeResult<Vec<f32>> {
        let count = self.len()?;
        let raw = self.take(count.checked_mul(4).ok_or("vector too long")?)?;
        Ok(raw
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect())
    }
    pub fn vector(&mut self) -> DecodeResult<VectorRecord> {
        let id = self.str()?;
        let namespace = self.optional_str()?;
        let metadata = match self.optional_str()? {
            None => None,
            Some(json) => match serde_json::from_str::<Value>(&json) {
                Ok(Value::Object(map)) => Some(map),
                _ => return Err(format!("metadata of {id:?} is not a JSON object")),
            },
        };
        let values = self.f32s()?;
        Ok(VectorRecord {
            id,
            values,
            namespace,
            metadata,
        })
    }
}

pub fn index_type_code(index_type: MetadataIndexType) -> u8 {
    match index_type {
        MetadataIndexType::String => 1,
        MetadataIndexType::Number => 2,
        MetadataIndexType::Boolean => 3,
    }
}

pub fn index_type_from_code(code: u8) -> DecodeResult<MetadataIndexType> {
    match code {
        1 => Ok(MetadataIndexType::String),
        2 => Ok(MetadataIndexType::Number),
        3 => Ok(MetadataIndexType::Boolean),
        other => Err(format!("unknown metadata index type {other}")),
    }
}

pub fn encode_mutation(mutation: &Mutation) -> Vec<u8> {
    let mut out = ByteWriter::default();
    write_mutation(
        &mut out,
        mutation.seq,
        mutation.unix_millis,
        &mutation.mutation_id,
        &mutation.op,
    );
    out.bytes
}

/// A mutation in [`encode_mutation`]'s format, from its parts (no copy of the op needed).
pub fn write_mutation(
    out: &mut ByteWriter,
    seq: u64,
    unix_millis: i64,
    mutation_id: &str,
    op: &MutationOp,
) {
    out.u64(seq);
    out.i64(unix_millis);
    out.str(mutation_id);
    match op {
        MutationOp::Insert(vectors) | MutationOp::Upsert(vectors) => {
            out.u8(if matches!(op, MutationOp::Insert(_)) {
                1
            } else {
                2
            });
            out.len(vectors.len());
            vectors.iter().for_each(|vector| out.vector(vector));
        }
        MutationOp::Delete(ids) => {
            out.u8(3);
            out.len(ids.len());
            ids.iter().for_each(|id| out.str(id));
        }
        MutationOp::CreateMetadataIndex {
            property,
            index_type,
        } => {
            out.u8(4);
            out.str(property);
            out.u8(index_type_code(*index_type));
        }
        MutationOp::DeleteMetadataIndex { property } => {
            out.u8(5);
            out.str(property);
        }
    }
}

pub fn decode_mutation(payload: &[u8]) -> DecodeResult<Mutation> {
    let mut input = ByteReader::new(payload);
    let seq = input.u64()?;
    let unix_millis = input.i64()?;
    let mutation_id = input.str()?;
    let op = match input.u8()? {
        code @ (1 | 2) => {
            let count = input.len()?;
            let vectors = (0..count)
                .map(|_| input.vector())
                .collect::<DecodeResult<Vec<_>>>()?;
            if code == 1 {
                MutationOp::Insert(vectors)
            } else {
                MutationOp::Upsert(vectors)
            }
        }
        3 => {
            let count = input.len()?;
            MutationOp::Delete(
                (0..count)
                    .map(|_| input.str())
                    .collect::<DecodeResult<_>>()?,
            )
        }
        4 => MutationOp::CreateMetadataIndex {
            property: input.str()?,
            index_type: index_type_from_code(input.u8()?)?,
        },
        5 => MutationOp::DeleteMetadataIndex {
            property: input.str()?,
        },
        other => return Err(format!("unknown mutation op {other}")),
    };
    if !input.is_empty() {
        return Err("trailing bytes after a mutation".into());
    }
    Ok(Mutation {
        seq,
        unix_millis,
        mutation_id,
        op,
    })
}

/// Metadata as it is kept in memory.
pub type Metadata = Map<String, Value>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mutations_round_trip() {
        let vector = VectorRecord {
            id: "a".into(),
            values: vec![1.5, -2.0, f32::MIN_POSITIVE],
            namespace: Some("ns".into()),
            metadata: json!({"k": {"n": [1, "x"]}}).as_object().cloned(),
        };
        let ops = [
            MutationOp::Insert(vec![vector.clone()]),
            MutationOp::Upsert(vec![
                vector,
                VectorRecord {
                    id: "b".into(),
                    values: vec![0.0],
                    namespace: None,
                    metadata: None,
                },
            ]),
            MutationOp::Delete(vec!["a".into(), "b".into()]),
            MutationOp::CreateMetadataIndex {
                property: "k.n".into(),
                index_type: MetadataIndexType::Number,
            },
            MutationOp::DeleteMetadataIndex {
                property: "k.n".into(),
            },
        ];
        for (seq, op) in ops.into_iter().enumerate() {
            let mutation = Mutation {
                seq: seq as u64,
                unix_millis: -5,
                mutation_id: "m".into(),
                op,
            };
            assert_eq!(
                decode_mutation(&encode_mutation(&mutation)).unwrap(),
                mutation
            );
        }
    }

    #[test]
    fn truncated_payloads_are_errors_not_panics() {
        let mutation = Mutation {
            seq: 1,
            unix_millis: 0,
            mutation_id: "m".into(),
            op: MutationOp::Delete(vec!["abc".into()]),
        };
        let bytes = encode_mutation(&mutation);
        for cut in 0..bytes.len() {
            assert!(decode_mutation(&bytes[..cut]).is_err());
        }
    }
}
