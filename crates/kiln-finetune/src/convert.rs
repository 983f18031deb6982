//! PEFT LoRA (safetensors, Hugging Face tensor names) → llama.cpp's GGUF LoRA adapter.
//!
//! llama.cpp names the pair for `blk.{i}.attn_q.weight` `blk.{i}.attn_q.weight.lora_a` (PEFT's
//! `lora_A`, `[r, in]`) and `….lora_b` (`lora_B`, `[out, r]`), with `adapter.lora.alpha` in the
//! metadata. For the llama architecture, Hugging Face → GGUF conversion reorders the rows of the
//! Q and K projections (rotary halves interleaved per head); `lora_B` of those projections gets
//! the same reordering so that `B·A` lines up with the converted weights.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use kiln_core::{KilnError, KilnResult};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::{invalid, validate_weights, ReadyAdapter};

/// Hugging Face module name → llama.cpp tensor name inside `blk.{i}`.
const MODULES: [(&str, &str); 7] = [
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// The GGUF adapter for `base_gguf`, converted on first use and kept beside the assets.
pub fn gguf_adapter(adapter: &ReadyAdapter, base_gguf: &Path) -> KilnResult<PathBuf> {
    let stem = base_gguf
        .file_stem()
        .map_or_else(|| "base".into(), |s| s.to_string_lossy().into_owned());
    let target = adapter.dir.join(format!("lora-for-{stem}.gguf"));
    if target.is_file() {
        return Ok(target);
    }
    let temporary = adapter
        .dir
        .join(format!(".lora-for-{stem}.{}.partial", uuid::Uuid::new_v4()));
    let converted = convert(adapter, base_gguf, &temporary)
        .and_then(|()| std::fs::rename(&temporary, &target).map_err(storage_error))
        .and_then(|()| crate::backend::sync_dir(&adapter.dir));
    if let Err(error) = converted {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    Ok(target)
}

/// What the conversion needs from the base model.
struct BaseModel {
    architecture: String,
    heads: usize,
    kv_heads: usize,
    content: gguf_file::Content,
}

impl BaseModel {
    fn read(path: &Path) -> KilnResult<Self> {
        let mut reader = BufReader::new(File::open(path).map_err(storage_error)?);
        let content = gguf_file::Content::read(&mut reader)
            .map_err(|e| KilnError::internal(format!("cannot read {}: {e}", path.display())))?;
        let text = |key: &str| content.metadata.get(key).and_then(|v| v.to_string().ok());
        let architecture = text("general.architecture")
            .cloned()
            .ok_or_else(|| KilnError::internal("the base GGUF names no architecture"))?;
        let number = |key: &str| {
            content
                .metadata
                .get(&format!("{architecture}.{key}"))
                .and_then(|v| v.to_u32().ok())
                .map(|n| n as usize)
        };
        let heads = number("attention.head_count")
            .ok_or_else(|| KilnError::internal("the base GGUF has no attention.head_count"))?;
        let kv_heads = number("attention.head_count_kv").unwrap_or(heads);
        Ok(Self {
            architecture,
            heads,
            kv_heads,
            content,
        })
    }

    /// `[out, in]` of a base weight, if the model has it.
    fn shape(&self, name: &str) -> Option<(usize, usize)> {
        let dims = self.content.tensor_infos.get(name)?.shape.dims().to_vec();
        match dims.as_slice() {
            [out, input] => Some((*out, *input)),
            _ => None,
        }
    }
}

fn convert(adapter: &ReadyAdapter, base_gguf: &Path, output: &Path) -> KilnResult<()> {
    let base = BaseModel::read(base_gguf)?;
    let bytes = std::fs::read(adapter.weights_path()).map_err(storage_error)?;
    // Checked again here: the file may predate the checks, or the config may have been
    // uploaded while it was (the two uploads are not serialized).
    validate_weights(&bytes, &adapter.limits, Some(adapter.config.rank))?;
    let tensors = SafeTensors::deserialize(&bytes)
        .map_err(|e| invalid(format!("adapter_model.safetensors: {e}")))?;
    let mut converted: Vec<(String, QTensor)> = Vec::new();
    let mut names = tensors.names();
    names.sort();
    for a_name in names.into_iter().filter(|n| n.contains("lora_A")) {
        let b_name = a_name.replace("lora_A", "lora_B");
        let target = gguf_name(a_name).ok_or_else(|| {
            invalid(format!(
                "{a_name}: not a LoRA on a llama-family projection (q/k/v/o, gate/up/down)"
            ))
        })?;
        let (out, input) = base
            .shape(&target)
            .ok_or_else(|| invalid(format!("{a_name}: the base model has no {target} to adapt")))?;
        // Shapes first: nothing is decoded for a pair that does not fit the base weight.
        let (a_view, b_view) = (view(&tensors, a_name)?, view(&tensors, &b_name)?);
        let (a_shape, b_shape) = (a_view.shape(), b_view.shape());
        let rank = a_shape.first().copied().unwrap_or(0);
        if a_shape != [rank, input] || b_shape != [out, rank] {
            return Err(invalid(format!(
                "{a_name} {a_shape:?} and {b_name} {b_shape:?} do not fit {target} [{out}, {input}]"
            )));
        }
        let a = matrix(&a_view, a_name)?;
        let mut b = matrix(&b_view, &b_name)?;
        if base.architecture == "llama" {
            if target.ends_with("attn_q.weight") {
                b.0 = permute_rows(&b.0, out, rank, base.heads)?;
            } else if target.ends_with("attn_k.weight") {
                b.0 = permute_rows(&b.0, out, rank, base.kv_heads)?;
            }
        }
        converted.push((format!("{target}.lora_a"), to_qtensor(a.0, &[rank, input])?));
        converted.push((format!("{target}.lora_b"), to_qtensor(b.0, &[out, rank])?));
    }
    if converted.is_empty() {
        return Err(invalid("the adapter has no lora_A/lora_B pairs".into()));
    }
    let metadata = [
        (
            "general.architecture",
            Value::String(base.architecture.clone()),
        ),
        ("general.type", Value::String("adapter".into())),
        ("adapter.type", Value::String("lora".into())),
        (
            "adapter.lora.alpha",
            Value::F32(adapter.config.alpha as f32),
        ),
    ];
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = converted.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut writer = BufWriter::new(File::create(output).map_err(storage_error)?);
    gguf_file::write(&mut writer, &metadata, &tensors)
        .map_err(|e| KilnError::internal(format!("cannot write the GGUF adapter: {e}")))?;
    writer
        .into_inner()
        .map_err(|e| storage_error(e.into_error()))?
        .sync_all()
        .map_err(storage_error)
}

/// `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight` → `blk.3.attn_q.weight`.
pub fn gguf_name(peft_name: &str) -> Option<String> {
    let after = peft_name.split("layers.").nth(1)?;
    let (layer, rest) = after.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let module = rest.split(".lora_").next()?;
    let (_, target) = MODULES.iter().find(|(hf, _)| *hf == module)?;
    Some(format!("blk.{layer}.{target}.weight"))
}

fn view<'a>(tensors: &'a SafeTensors<'a>, name: &str) -> KilnResult<TensorView<'a>> {
    tensors
        .tensor(name)
        .map_err(|_| invalid(format!("adapter_model.safetensors has no {name}")))
}

/// A 2-D tensor as f32 values and its `[rows, cols]`.
fn matrix(view: &TensorView<'_>, name: &str) -> KilnResult<(Vec<f32>, [usize; 2])> {
    let [rows, cols] = <[usize; 2]>::try_from(view.shape().to_vec())
        .map_err(|shape| invalid(format!("{name} has shape {shape:?}; expected 2-D")))?;
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
            .collect(),
        other => {
            return Err(invalid(format!(
                "{name} is {other:?}; expected F32, F16 or BF16"
            )))
        }
    };
    Ok((values, [rows, cols]))
}

/// IEEE half → f32 (subnormals included).
fn half_to_f32(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let fraction = f32::from(bits & 0x3ff);
    match exponent {
        0 => sign * fraction * 2f32.powi(-24),
        31 if fraction == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + fraction / 1024.0) * 2f32.powi(exponent - 15),
    }
}

/// The row order `convert_hf_to_gguf.py` gives llama Q/K weights: per head, the two rotary
/// halves are interleaved (`reshape(heads, 2, d/2, …).swapaxes(1, 2)`).
pub fn permute_rows(
    values: &[f32],
    rows: usize,
    cols: usize,
    heads: usize,
) -> KilnResult<Vec<f32>> {
    if heads == 0 || !rows.is_multiple_of(heads * 2) {
        return Err(invalid(format!(
            "{rows} rows do not split into {heads} heads of rotary pairs"
        )));
    }
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut permuted = vec![0.0; values.len()];
    for head in 0..heads {
        for j in 0..half {
            for t in 0..2 {
                let from = head * head_dim + t * half + j;
                let to = head * head_dim + 2 * j + t;
                permuted[to * cols..(to + 1) * cols]
                    .copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    Ok(permuted)
}

fn to_qtensor(values: Vec<f32>, shape: &[usize]) -> KilnResult<QTensor> {
    let tensor = Tensor::from_vec(values, shape, &Device::Cpu)
        .map_err(|e| KilnError::internal(format!("adapter tensor: {e}")))?;
    QTensor::quantize(&tensor, GgmlDType::F32)
        .map_err(|e| KilnError::internal(format!("adapter tensor: {e}")))
}

fn storage_error(error: std::io::Error) -> KilnError {
    KilnError::internal(format!("fine-tune storage: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_names_map_to_llama_cpp_names() {
        assert_eq!(
            gguf_name("base_model.model.model.layers.12.self_attn.q_proj.lora_A.weight").as_deref(),
            Some("blk.12.attn_q.weight")
        );
        assert_eq!(
            gguf_name("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight").as_deref(),
            Some("blk.0.ffn_down.weight")
        );
        assert_eq!(gguf_name("base_model.model.lm_head.lora_A.weight"), None);
    }

    #[test]
    fn rows_are_interleaved_per_head() {
        // Two heads of dimension 4, one column: rows [h0: 0 1 2 3, h1: 4 5 6 7].
        let rows: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let permuted = permute_rows(&rows, 8, 1, 2).expect("permutes");
        assert_eq!(permuted, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    }

    #[test]
    fn halves_decode() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0001), 2f32.powi(-24));
    }
}
