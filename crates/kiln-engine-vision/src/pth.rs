//! Reader for the legacy (pre-zip, PyTorch < 1.6) `torch.save` format.
//!
//! candle's own `pickle` module only understands the zip container, but some checkpoints that
//! Kiln serves (EfficientNet-Lite0) were written before it existed. The legacy layout is a chain
//! of pickles followed by raw storages:
//!
//! 1. pickle(magic number `0x1950a86a20f9469cfc6c`)
//! 2. pickle(protocol version, 1001)
//! 3. pickle(sys_info dict)
//! 4. pickle(the object: here a state dict, name → `_rebuild_tensor_v2(...)`)
//! 5. pickle(list of storage keys, in the order their data follows)
//! 6. per key: `u64` element count, then the raw little-endian elements.
//!
//! We reuse candle's pickle VM (`Stack`) for pickles 2–5. Tensors may be stored with any
//! strides (this checkpoint is channels-last), so each one is rebuilt from its storage,
//! offset, size and stride and then made contiguous in its logical order.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{bail, DType, Device, Result, Tensor};

/// The first pickle written by legacy `torch.save`: protocol 2, `LONG1` with 10 bytes holding
/// the magic number, `STOP`. Compared byte for byte because candle's `LONG1` decoder only
/// handles values that fit an `i64`, and this one is 80 bits wide.
const MAGIC_PICKLE: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];

const PROTOCOL_VERSION: i64 = 1001;

/// Guards against a corrupt header asking for an absurd allocation.
const MAX_STORAGE_BYTES: u64 = 16 << 30;

/// Where a tensor's elements live inside a storage, as `_rebuild_tensor_v2` describes them.
#[derive(Debug, Clone)]
struct TensorRef {
    name: String,
    storage_key: String,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// Reads every tensor of a legacy `.pth` state dict into memory, contiguous and on the CPU.
pub fn read_legacy_pth(path: &Path) -> Result<HashMap<String, Tensor>> {
    let file = std::fs::File::open(path)?;
    read_legacy_pth_from(&mut BufReader::new(file))
}

/// As [`read_legacy_pth`], from any buffered reader positioned at the start of the file.
pub fn read_legacy_pth_from<R: BufRead>(r: &mut R) -> Result<HashMap<String, Tensor>> {
    let mut magic = [0u8; MAGIC_PICKLE.len()];
    r.read_exact(&mut magic)?;
    if magic != MAGIC_PICKLE {
        bail!("not a legacy PyTorch file (bad magic number; zip-format .pth needs candle's reader)")
    }
    let version = read_pickle(r)?
        .int_or_long()
        .map_err(|o| candle_core::Error::Msg(format!("bad protocol version {o:?}")))?;
    if version != PROTOCOL_VERSION {
        bail!("unsupported legacy PyTorch protocol version {version}")
    }
    check_sys_info(read_pickle(r)?)?;
    let refs = tensor_refs(read_pickle(r)?)?;
    let keys = match read_pickle(r)? {
        Object::List(keys) | Object::Tuple(keys) => keys
            .into_iter()
            .map(|k| {
                k.unicode()
                    .map_err(|o| candle_core::Error::Msg(format!("bad storage key {o:?}")))
            })
            .collect::<Result<Vec<_>>>()?,
        other => bail!("expected the list of storage keys, got {other:?}"),
    };

    // Each storage's dtype comes from the persistent id that references it.
    let mut dtypes: HashMap<&str, DType> = HashMap::new();
    for (key, dtype) in refs.iter().map(|(t, d)| (t.storage_key.as_str(), *d)) {
        dtypes.insert(key, dtype);
    }
    let mut storages: HashMap<String, Tensor> = HashMap::with_capacity(keys.len());
    for key in keys {
        let mut numel = [0u8; 8];
        r.read_exact(&mut numel)?;
        let numel = u64::from_le_bytes(numel);
        // A storage nobody references still has to be skipped; f32 is as good a guess as any.
        let dtype = dtypes.get(key.as_str()).copied().unwrap_or(DType::F32);
        let n_bytes = numel
            .checked_mul(dtype.size_in_bytes() as u64)
            .filter(|n| *n <= MAX_STORAGE_BYTES)
            .ok_or_else(|| candle_core::Error::Msg(format!("storage {key} is too large")))?;
        // Read before allocating: a header may declare far more than the file holds.
        let mut bytes = Vec::new();
        r.by_ref().take(n_bytes).read_to_end(&mut bytes)?;
        if bytes.len() as u64 != n_bytes {
            bail!("storage {key} declares {n_bytes} bytes but the file ends first");
        }
        let storage = Tensor::from_raw_buffer(&bytes, dtype, &[numel as usize], &Device::Cpu)?;
        storages.insert(key, storage);
    }

    let mut tensors = HashMap::with_capacity(refs.len());
    for (t, _) in refs {
        let Some(storage) = storages.get(&t.storage_key) else {
            bail!(
                "tensor {} refers to missing storage {}",
                t.name,
                t.storage_key
            )
        };
        let tensor = materialize(storage, &t)?;
        tensors.insert(t.name, tensor);
    }
    Ok(tensors)
}

fn read_pickle<R: BufRead>(r: &mut R) -> Result<Object> {
    let mut stack = Stack::empty();
    stack.read_loop(r)?;
    stack.finalize()
}

/// Only little-endian files can be read as raw bytes on the machines Kiln runs on.
fn check_sys_info(info: Object) -> Result<()> {
    if let Object::Dict(entries) = info {
        for (k, v) in entries {
            if k == Object::Unicode("little_endian".into()) && v == Object::Bool(false) {
                bail!("big-endian PyTorch files are not supported")
            }
        }
    }
    Ok(())
}

/// Extracts the tensor references from the saved object, which must be a (possibly ordered)
/// dict of tensors; entries that are not tensors are skipped.
fn tensor_refs(obj: Object) -> Result<Vec<(TensorRef, DType)>> {
    let entries = match obj {
        Object::Dict(entries) => entries,
        // An `OrderedDict` whose items were added with `BUILD` rather than `SETITEMS`.
        Object::Build { args, .. } => match *args {
            Object::Dict(entries) => entries,
            other => bail!("expected a state dict, got {other:?}"),
        },
        other => bail!("expected a state dict, got {other:?}"),
    };
    let mut refs = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        let Ok(name) = name.unicode() else { continue };
        if let Some(r) = tensor_ref(name, value)? {
            refs.push(r);
        }
    }
    Ok(refs)
}

fn msg(what: &str, name: &str, o: Object) -> candle_core::Error {
    candle_core::Error::Msg(format!("{name}: bad {what}: {o:?}"))
}

fn tensor_ref(name: String, value: Object) -> Result<Option<(TensorRef, DType)>> {
    let Ok((callable, args)) = value.reduce() else {
        return Ok(None);
    };
    let (callable, args) = match callable {
        // `nn.Parameter`s wrap the tensor: `_rebuild_parameter(tensor, requires_grad, hooks)`.
        Object::Class {
            module_name,
            class_name,
        } if module_name == "torch._utils" && class_name == "_rebuild_parameter" => {
            let mut args = args.tuple().map_err(|o| msg("parameter", &name, o))?;
            if args.is_empty() {
                bail!("{name}: empty _rebuild_parameter arguments")
            }
            args.remove(0)
                .reduce()
                .map_err(|o| msg("parameter", &name, o))?
        }
        other => (other, args),
    };
    match &callable {
        Object::Class {
            module_name,
            class_name,
        } if module_name == "torch._utils" && class_name == "_rebuild_tensor_v2" => {}
        _ => return Ok(None),
    }
    // `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks, ...)`
    let mut args = args.tuple().map_err(|o| msg("arguments", &name, o))?;
    if args.len() < 4 {
        bail!("{name}: _rebuild_tensor_v2 has {} arguments", args.len())
    }
    let stride = usizes(args.remove(3)).map_err(|o| msg("stride", &name, o))?;
    let size = usizes(args.remove(2)).map_err(|o| msg("size", &name, o))?;
    let offset = args
        .remove(1)
        .int_or_long()
        .map_err(|o| msg("offset", &name, o))?;
    // Persistent id: ('storage', storage_type, key, location, numel[, view_metadata])
    let mut pid = args
        .remove(0)
        .persistent_load()
        .and_then(Object::tuple)
        .map_err(|o| msg("storage reference", &name, o))?;
    if pid.len() < 5 {
        bail!("{name}: storage reference has {} fields", pid.len())
    }
    let key = pid
        .remove(2)
        .unicode()
        .map_err(|o| msg("storage key", &name, o))?;
    let (_, class_name) = pid
        .remove(1)
        .class()
        .map_err(|o| msg("storage type", &name, o))?;
    let dtype = match class_name.as_str() {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "ByteStorage" => DType::U8,
        "LongStorage" => DType::I64,
        other => bail!("{name}: unsupported storage type {other}"),
    };
    if size.len() != stride.len() || offset < 0 {
        bail!("{name}: inconsistent size {size:?} / stride {stride:?} / offset {offset}")
    }
    let tensor_ref = TensorRef {
        name,
        storage_key: key,
        offset: offset as usize,
        size,
        stride,
    };
    Ok(Some((tensor_ref, dtype)))
}

fn usizes(o: Object) -> std::result::Result<Vec<usize>, Object> {
    let items = match o {
        Object::Tuple(items) | Object::List(items) => items,
        other => return Err(other),
    };
    items
        .into_iter()
        .map(|i| match i.int_or_long() {
            Ok(v) if v >= 0 => Ok(v as usize),
            Ok(v) => Err(Object::Long(v)),
            Err(o) => Err(o),
        })
        .collect()
}

/// Builds a contiguous tensor of shape `size` from `storage` read with `stride` from `offset`.
fn materialize(storage: &Tensor, t: &TensorRef) -> Result<Tensor> {
    let numel: usize = t.size.iter().product();
    let available = storage.dim(0)?;
    if numel == 0 {
        return Tensor::zeros(t.size.as_slice(), storage.dtype(), &Device::Cpu);
    }
    // The furthest element read must lie inside the storage.
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |acc, (&n, &s)| {
            acc.checked_add((n - 1).checked_mul(s)?)
        });
    match last {
        Some(last) if last < available => {}
        _ => bail!("{}: size/stride run past its storage", t.name),
    }
    if let Some(order) = dense_order(&t.size, &t.stride) {
        // The elements form a dense block whose memory order is a permutation of the logical
        // dims (e.g. channels-last): read it in memory order, then permute back.
        let mem_shape: Vec<usize> = order.iter().map(|&d| t.size[d]).collect();
        let mut inverse = vec![0; order.len()];
        for (pos, &d) in order.iter().enumerate() {
            inverse[d] = pos;
        }
        let block = storage.narrow(0, t.offset, numel)?.reshape(mem_shape)?;
        return block.permute(inverse)?.contiguous();
    }
    // Overlapping or gappy views: gather element by element.
    let mut index = Vec::with_capacity(numel);
    let mut pos = vec![0usize; t.size.len()];
    for _ in 0..numel {
        let off = t.offset + pos.iter().zip(&t.stride).map(|(p, s)| p * s).sum::<usize>();
        index.push(off as u32);
        for d in (0..pos.len()).rev() {
            pos[d] += 1;
            if pos[d] < t.size[d] {
                break;
            }
            pos[d] = 0;
        }
    }
    let index = Tensor::from_vec(index, numel, &Device::Cpu)?;
    storage.index_select(&index, 0)?.reshape(t.size.as_slice())
}

/// If `size`/`stride` describe a dense block, the dims ordered from slowest to fastest in memory.
fn dense_order(size: &[usize], stride: &[usize]) -> Option<Vec<usize>> {
    let mut order: Vec<usize> = (0..size.len()).collect();
    // Stable sort keeps the logical order among ties, which only size-1 dims can produce here.
    order.sort_by(|&a, &b| stride[b].cmp(&stride[a]));
    let mut expected = 1;
    for &d in order.iter().rev() {
        if size[d] != 1 && stride[d] != expected {
            return None;
        }
        expected *= size[d];
    }
    Some(order)
}

#[cfg(test)]
#[path = "pth_tests.rs"]
mod tests;
