//! Validation of PEFT LoRA assets: `adapter_config.json` and `adapter_model.safetensors`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use kiln_core::limits::LoraLimits;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use safetensors::SafeTensors;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::invalid;

/// Model families Workers AI accepts adapters for.
const MODEL_TYPES: [&str; 3] = ["mistral", "gemma", "llama"];
/// The largest rank accepted ("r ≤ 8 officially, up to 32 also accepted").
pub const MAX_RANK: u64 = 32;

/// What inference needs from `adapter_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    pub model_type: String,
    pub rank: u64,
    pub alpha: f64,
    pub target_modules: Vec<String>,
}

impl AdapterConfig {
    /// PEFT scales the update `B·A` by `lora_alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

pub fn validate_config(bytes: &[u8]) -> KilnResult<AdapterConfig> {
    let config: Value = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("adapter_config.json is not valid JSON: {e}")))?;
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid(format!(
                "adapter_config.json must name its \"model_type\" ({})",
                MODEL_TYPES.join(", ")
            ))
        })?;
    if !MODEL_TYPES.contains(&model_type) {
        return Err(invalid(format!(
            "adapter_config.json model_type {model_type:?} is not supported; use one of {}",
            MODEL_TYPES.join(", ")
        )));
    }
    let rank = config
        .get("r")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0)
        .ok_or_else(|| invalid("adapter_config.json needs a positive integer rank \"r\"".into()))?;
    if rank > MAX_RANK {
        return Err(invalid(format!(
            "adapter rank r = {rank} is larger than the maximum of {MAX_RANK}"
        )));
    }
    let alpha = config
        .get("lora_alpha")
        .and_then(Value::as_f64)
        .unwrap_or(rank as f64);
    let target_modules = match config.get("target_modules") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    Ok(AdapterConfig {
        model_type: model_type.to_owned(),
        rank,
        alpha,
        target_modules,
    })
}

/// One tensor as the safetensors header declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorHeader {
    pub name: String,
    pub shape: Vec<u64>,
}

/// Most dimensions a tensor's shape may have; LoRA tensors have two.
const MAX_DIMENSIONS: usize = 8;
/// safetensors' own bound on the header.
const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// The safetensors file parses, its tensors are within `limits`, and they are LoRA A/B pairs
/// of rank `rank` (the config's `r`, when the config is known).
pub fn validate_weights(bytes: &[u8], limits: &LoraLimits, rank: Option<u64>) -> KilnResult<()> {
    // The header is read under the limits first: safetensors itself would build a map of every
    // declared tensor before anything could be counted.
    let tensors = scan_weights_header(bytes, bytes.len() as u64, limits)?;
    SafeTensors::deserialize(bytes).map_err(|e| {
        invalid(format!(
            "adapter_model.safetensors is not a valid safetensors file: {e}"
        ))
    })?;
    check_pairs(&tensors, rank)
}

/// The tensors declared by the header of the safetensors file at `path`, reading only the
/// header (to check an adapter_config.json uploaded after its weights).
pub fn read_weights_header(path: &Path, limits: &LoraLimits) -> KilnResult<Vec<TensorHeader>> {
    let storage = |error: std::io::Error| {
        KilnError::internal(format!("fine-tune storage: {}: {error}", path.display()))
    };
    let mut file = File::open(path).map_err(storage)?;
    let file_len = file.metadata().map_err(storage)?.len();
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix).map_err(storage)?;
    let header_len = header_length(prefix, file_len)?;
    let mut bytes = prefix.to_vec();
    file.take(header_len)
        .read_to_end(&mut bytes)
        .map_err(storage)?;
    scan_weights_header(&bytes, file_len, limits)
}

/// The header's length from the file's first 8 bytes, checked against the file's length.
fn header_length(prefix: [u8; 8], file_len: u64) -> KilnResult<u64> {
    let length = u64::from_le_bytes(prefix);
    if length > file_len.saturating_sub(8) || length > MAX_HEADER_BYTES {
        return Err(invalid(format!(
            "adapter_model.safetensors is not a valid safetensors file: its header claims \
             {length} bytes of a {file_len}-byte file"
        )));
    }
    Ok(length)
}

/// Names and shapes from the JSON header of `bytes` (the file's start; `file_len` its whole
/// length), refusing more than `limits.max_tensors` tensors or a tensor of more than
/// `limits.max_tensor_elements` elements as soon as the header reaches it.
pub(crate) fn scan_weights_header(
    bytes: &[u8],
    file_len: u64,
    limits: &LoraLimits,
) -> KilnResult<Vec<TensorHeader>> {
    let not_safetensors = |why: &str| {
        invalid(format!(
            "adapter_model.safetensors is not a valid safetensors file: {why}"
        ))
    };
    let prefix = bytes
        .get(..8)
        .and_then(|prefix| <[u8; 8]>::try_from(prefix).ok())
        .ok_or_else(|| not_safetensors("shorter than its 8-byte header length"))?;
    let length = usize::try_from(header_length(prefix, file_len)?)
        .map_err(|_| not_safetensors("header too long"))?;
    let header = bytes
        .get(8..8 + length)
        .ok_or_else(|| not_safetensors("the header is cut short"))?;
    let mut failure = None;
    let mut tensors = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(header);
    let scanned = HeaderSeed {
        limits,
        tensors: &mut tensors,
        failure: &mut failure,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end());
    if let Some(error) = failure {
        return Err(error);
    }
    scanned.map_err(|e| not_safetensors(&format!("bad header: {e}")))?;
    Ok(tensors)
}

/// Visits the header object: each tensor's name and shape; everything else is skipped unread.
struct HeaderSeed<'a> {
    limits: &'a LoraLimits,
    tensors: &'a mut Vec<TensorHeader>,
    failure: &'a mut Option<KilnError>,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed<'_> {
    type Value = ();
    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a safetensors header object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<String>()? {
            if name == "__metadata__" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if self.tensors.len() >= self.limits.max_tensors {
                *self.failure = Some(KilnError::bad_input(format!(
                    "adapter_model.safetensors declares more than {} tensors; the limit is \
                     limits.lora.max_tensors",
                    self.limits.max_tensors
                )));
                return Err(de::Error::custom("too many tensors"));
            }
            let mut shape = None;
            map.next_value_seed(TensorSeed { shape: &mut shape })?;
            let shape = shape.ok_or_else(|| de::Error::custom(format!("{name} has no shape")))?;
            let elements = shape
                .iter()
                .try_fold(1u64, |product, dimension| product.checked_mul(*dimension));
            if elements.is_none_or(|elements| elements > self.limits.max_tensor_elements) {
                *self.failure = Some(KilnError::new(
                    ErrorKind::RequestTooLarge,
                    format!(
                        "tensor {name} of shape {shape:?} has more than {} elements; the limit \
                         is limits.lora.max_tensor_elements",
                        self.limits.max_tensor_elements
                    ),
                ));
                return Err(de::Error::custom("tensor too large"));
            }
            self.tensors.push(TensorHeader { name, shape });
        }
        Ok(())
    }
}

/// One tensor's entry: its `shape` (at most [`MAX_DIMENSIONS`] numbers); other fields skipped.
struct TensorSeed<'a> {
    shape: &'a mut Option<Vec<u64>>,
}

impl<'de> DeserializeSeed<'de> for TensorSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TensorSeed<'_> {
    type Value = ();
    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a tensor entry {dtype, shape, data_offsets}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "shape" {
                *self.shape = Some(map.next_value_seed(ShapeSeed)?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct ShapeSeed;

impl<'de> DeserializeSeed<'de> for ShapeSeed {
    type Value = Vec<u64>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<u64>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed {
    type Value = Vec<u64>;
    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(formatter, "a shape of at most {MAX_DIMENSIONS} dimensions")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
        let mut shape = Vec::new();
        while let Some(dimension) = seq.next_element::<u64>()? {
            if shape.len() == MAX_DIMENSIONS {
                return Err(de::Error::custom(format!(
                    "a shape has more than {MAX_DIMENSIONS} dimensions"
                )));
            }
            shape.push(dimension);
        }
        Ok(shape)
    }
}

/// Every `lora_A` has its `lora_B` and the pair is `[r, in]` and `[out, r]`, with `r` the
/// config's rank when it is known; errors name the tensor.
pub fn check_pairs(tensors: &[TensorHeader], rank: Option<u64>) -> KilnResult<()> {
    let shapes: BTreeMap<&str, &[u64]> = tensors
        .iter()
        .map(|tensor| (tensor.name.as_str(), tensor.shape.as_slice()))
        .collect();
    if shapes.is_empty() {
        return Err(invalid(
            "adapter_model.safetensors holds no tensors".to_owned(),
        ));
    }
    let declared = |name: &str, shape: &[u64], position: usize, form: &str| match rank {
        Some(rank) if shape.get(position) != Some(&rank) => Err(invalid(format!(
            "tensor {name} has shape {shape:?}, but adapter_config.json declares rank r = {rank} \
             ({form} expected)"
        ))),
        _ => Ok(()),
    };
    for (&name, &shape) in &shapes {
        if name.contains("lora_A") {
            let b_name = name.replace("lora_A", "lora_B");
            let b_shape = shapes.get(b_name.as_str()).ok_or_else(|| {
                invalid(format!(
                    "adapter_model.safetensors has {name} but no {b_name}"
                ))
            })?;
            if shape.len() != 2 || b_shape.len() != 2 || shape[0] != b_shape[1] {
                return Err(invalid(format!(
                    "{name} {shape:?} and {b_name} {b_shape:?} are not a rank-r pair ([r, in] and [out, r])"
                )));
            }
            declared(name, shape, 0, "[r, in]")?;
        } else if name.contains("lora_B") {
            let a_name = name.replace("lora_B", "lora_A");
            if !shapes.contains_key(a_name.as_str()) {
                return Err(invalid(format!(
                    "adapter_model.safetensors has {name} but no {a_name}"
                )));
            }
            if shape.len() != 2 {
                return Err(invalid(format!(
                    "tensor {name} has shape {shape:?}; expected [out, r]"
                )));
            }
            declared(name, shape, 1, "[out, r]")?;
        }
    }
    if !shapes.keys().any(|name| name.contains("lora_A")) {
        return Err(invalid(
            "adapter_model.safetensors has no lora_A/lora_B tensors".to_owned(),
        ));
    }
    Ok(())
}
