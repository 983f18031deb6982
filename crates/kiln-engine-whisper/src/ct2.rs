//! Reader for CTranslate2's `model.bin` and the mapping of its Whisper variables to the Hugging
//! Face names candle's `whisper::model` loads.
//!
//! Container layout (little endian, `python/ctranslate2/specs/model_spec.py::_serialize`):
//! `u32 binary_version`, `str spec_name`, `u32 spec_revision`, `u32 n_variables`, then per
//! variable `str name, u8 rank, u32 dims[rank], u8 dtype, u32 n_bytes, data`, then
//! `u32 n_aliases` and per alias `str alias, str variable`. A `str` is a `u16` byte length that
//! counts a trailing NUL, followed by the bytes.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::whisper::Config;

use crate::AsrError;

/// One variable of the container, still in its stored type.
pub struct Variable {
    pub dims: Vec<usize>,
    pub dtype: DType,
    pub data: Vec<u8>,
}

/// The parsed container.
pub struct Ct2Model {
    pub spec: String,
    pub variables: HashMap<String, Variable>,
    pub aliases: HashMap<String, String>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AsrError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| bad(format!("truncated at byte {}", self.pos)))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, AsrError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, AsrError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, AsrError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String, AsrError> {
        let n = self.u16()? as usize;
        let raw = self.take(n)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|_| bad("variable name is not UTF-8".into()))
    }
}

fn bad(msg: String) -> AsrError {
    AsrError::Model(format!("invalid CTranslate2 model.bin: {msg}"))
}

fn dtype_of(id: u8) -> Result<DType, AsrError> {
    // ctranslate2::DataType: FLOAT32, INT8, INT16, INT32, FLOAT16, BFLOAT16.
    Ok(match id {
        0 => DType::F32,
        1 => DType::I64, // int8, widened to i64 on read
        2 => DType::I64, // int16
        3 => DType::I64, // int32
        4 => DType::F16,
        5 => DType::BF16,
        other => return Err(bad(format!("unknown dtype id {other}"))),
    })
}

impl Ct2Model {
    pub fn read(path: &Path) -> Result<Self, AsrError> {
        let bytes = std::fs::read(path)
            .map_err(|e| AsrError::Model(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&bytes)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, AsrError> {
        let mut c = Cursor { bytes, pos: 0 };
        let version = c.u32()?;
        if !(2..=6).contains(&version) {
            return Err(bad(format!("unsupported binary version {version}")));
        }
        let spec = c.string()?;
        let _revision = c.u32()?;
        let n_vars = c.u32()? as usize;
        // Each variable takes at least 8 bytes (name length, rank, dtype, size), so a count the
        // file cannot hold does not reserve memory up front.
        let mut variables = HashMap::with_capacity(n_vars.min(bytes.len() / 8));
        for _ in 0..n_vars {
            let name = c.string()?;
            let rank = c.u8()? as usize;
            let dims = (0..rank)
                .map(|_| c.u32().map(|d| d as usize))
                .collect::<Result<Vec<_>, _>>()?;
            let id = c.u8()?;
            let dtype = dtype_of(id)?;
            let n_bytes = c.u32()? as usize;
            let raw = c.take(n_bytes)?;
            let data = if dtype == DType::I64 {
                widen_int(raw, id)?
            } else {
                raw.to_vec()
            };
            variables.insert(name, Variable { dims, dtype, data });
        }
        let mut aliases = HashMap::new();
        if c.pos < bytes.len() {
            let n_aliases = c.u32()?;
            for _ in 0..n_aliases {
                let alias = c.string()?;
                let target = c.string()?;
                aliases.insert(alias, target);
            }
        }
        Ok(Self {
            spec,
            variables,
            aliases,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Variable> {
        self.variables
            .get(name)
            .or_else(|| self.aliases.get(name).and_then(|t| self.variables.get(t)))
    }

    fn tensor(&self, name: &str) -> Result<Tensor, AsrError> {
        let var = self
            .get(name)
            .ok_or_else(|| bad(format!("missing variable `{name}`")))?;
        let t = Tensor::from_raw_buffer(&var.data, var.dtype, &var.dims, &Device::Cpu)?;
        Ok(t.to_dtype(DType::F32)?)
    }

    fn scalar(&self, name: &str) -> Result<i64, AsrError> {
        let var = self
            .get(name)
            .ok_or_else(|| bad(format!("missing variable `{name}`")))?;
        match var.data.get(..8) {
            Some(b) if var.dtype == DType::I64 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Ok(i64::from_le_bytes(a))
            }
            _ => Err(bad(format!("`{name}` is not an integer"))),
        }
    }

    fn count_layers(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|i| {
                let p = format!("{prefix}/layer_{i}/ffn/linear_0/weight");
                self.variables.contains_key(&p)
            })
            .count()
    }

    /// candle's Whisper config, read off the weights.
    pub fn whisper_config(&self, suppress_tokens: Vec<u32>) -> Result<Config, AsrError> {
        let dims = |name: &str| -> Result<Vec<usize>, AsrError> {
            self.get(name)
                .map(|v| v.dims.clone())
                .ok_or_else(|| bad(format!("missing variable `{name}`")))
        };
        let emb = dims("decoder/embeddings/weight")?;
        let conv1 = dims("encoder/conv1/weight")?;
        let enc_pos = dims("encoder/position_encodings/encodings")?;
        let dec_pos = dims("decoder/position_encodings/encodings")?;
        if emb.len() != 2 || conv1.len() != 3 || enc_pos.len() != 2 || dec_pos.len() != 2 {
            return Err(bad("unexpected embedding/conv ranks".into()));
        }
        let heads = |name: &str| -> Result<usize, AsrError> {
            let n = self.scalar(name)?;
            usize::try_from(n).map_err(|_| bad(format!("bad head count {n}")))
        };
        Ok(Config {
            num_mel_bins: conv1[1],
            max_source_positions: enc_pos[0],
            d_model: emb[1],
            encoder_attention_heads: heads("encoder/num_heads")?,
            encoder_layers: self.count_layers("encoder"),
            vocab_size: emb[0],
            max_target_positions: dec_pos[0],
            decoder_attention_heads: heads("decoder/num_heads")?,
            decoder_layers: self.count_layers("decoder"),
            suppress_tokens,
        })
    }

    /// All weights under candle's (Hugging Face) names, as f32, fused projections split.
    pub fn to_hf_tensors(&self, cfg: &Config) -> Result<HashMap<String, Tensor>, AsrError> {
        let mut out = HashMap::new();
        let mut put = |hf: String, ct2: &str| -> Result<(), AsrError> {
            out.insert(hf, self.tensor(ct2)?);
            Ok(())
        };
        for side in ["encoder", "decoder"] {
            let hf = format!("model.{side}");
            put(
                format!("{hf}.layer_norm.weight"),
                &format!("{side}/layer_norm/gamma"),
            )?;
            put(
                format!("{hf}.layer_norm.bias"),
                &format!("{side}/layer_norm/beta"),
            )?;
            put(
                format!("{hf}.embed_positions.weight"),
                &format!("{side}/position_encodings/encodings"),
            )?;
        }
        for conv in ["conv1", "conv2"] {
            for p in ["weight", "bias"] {
                put(
                    format!("model.encoder.{conv}.{p}"),
                    &format!("encoder/{conv}/{p}"),
                )?;
            }
        }
        put(
            "model.decoder.embed_tokens.weight".into(),
            "decoder/embeddings/weight",
        )?;
        let layers = [
            ("encoder", cfg.encoder_layers),
            ("decoder", cfg.decoder_layers),
        ];
        for (side, n) in layers {
            for i in 0..n {
                let src = format!("{side}/layer_{i}");
                let dst = format!("model.{side}.layers.{i}");
                self.map_layer(&src, &dst, side == "decoder", &mut out)?;
            }
        }
        Ok(out)
    }

    fn map_layer(
        &self,
        src: &str,
        dst: &str,
        cross: bool,
        out: &mut HashMap<String, Tensor>,
    ) -> Result<(), AsrError> {
        let mut put = |hf: &str, t: Tensor| {
            out.insert(format!("{dst}.{hf}"), t);
        };
        let get = |ct2: &str| self.tensor(&format!("{src}/{ct2}"));
        for (ct2, hf) in [
            ("self_attention/layer_norm", "self_attn_layer_norm"),
            ("ffn/layer_norm", "final_layer_norm"),
            ("attention/layer_norm", "encoder_attn_layer_norm"),
        ] {
            if hf.starts_with("encoder_attn") && !cross {
                continue;
            }
            put(&format!("{hf}.weight"), get(&format!("{ct2}/gamma"))?);
            put(&format!("{hf}.bias"), get(&format!("{ct2}/beta"))?);
        }
        let mut linears = vec![
            ("self_attention/linear_1", "self_attn.out_proj"),
            ("ffn/linear_0", "fc1"),
            ("ffn/linear_1", "fc2"),
        ];
        if cross {
            linears.push(("attention/linear_0", "encoder_attn.q_proj"));
            linears.push(("attention/linear_2", "encoder_attn.out_proj"));
        }
        for (ct2, hf) in linears {
            put(&format!("{hf}.weight"), get(&format!("{ct2}/weight"))?);
            put(&format!("{hf}.bias"), get(&format!("{ct2}/bias"))?);
        }
        // Fused projections: rows are [q; k; v] (self-attention) and [k; v] (cross-attention).
        // Whisper's key projection has no bias (CTranslate2 stores zeros there).
        let mut fused = vec![("self_attention/linear_0", "self_attn", &["q", "k", "v"][..])];
        if cross {
            fused.push(("attention/linear_1", "encoder_attn", &["k", "v"][..]));
        }
        for (ct2, hf, parts) in fused {
            let w = get(&format!("{ct2}/weight"))?;
            let b = get(&format!("{ct2}/bias"))?;
            let rows = w.dim(0)? / parts.len();
            for (i, part) in parts.iter().enumerate() {
                put(
                    &format!("{hf}.{part}_proj.weight"),
                    w.narrow(0, i * rows, rows)?.contiguous()?,
                );
                if *part != "k" {
                    put(
                        &format!("{hf}.{part}_proj.bias"),
                        b.narrow(0, i * rows, rows)?.contiguous()?,
                    );
                }
            }
        }
        Ok(())
    }
}

fn widen_int(raw: &[u8], id: u8) -> Result<Vec<u8>, AsrError> {
    let width = match id {
        1 => 1,
        2 => 2,
        _ => 4,
    };
    if !raw.len().is_multiple_of(width) {
        return Err(bad("integer variable has a partial element".into()));
    }
    let mut out = Vec::with_capacity(raw.len() / width * 8);
    for chunk in raw.chunks_exact(width) {
        let v: i64 = match width {
            1 => chunk[0] as i8 as i64,
            2 => i16::from_le_bytes([chunk[0], chunk[1]]) as i64,
            _ => i32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as i64,
        };
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by reading the fuzz target's input space (`fuzz/fuzz_targets/ct2_reader.rs`): a
    /// header declaring u32::MAX variables reserved ~700 GB before reading the first one.
    #[test]
    fn a_huge_variable_count_is_truncation_not_an_allocation() {
        let mut file = 6u32.to_le_bytes().to_vec();
        file.extend(1u16.to_le_bytes());
        file.push(0);
        file.extend(1u32.to_le_bytes());
        file.extend(u32::MAX.to_le_bytes());
        let error = Ct2Model::parse(&file).err().expect("a truncated file");
        assert!(error.to_string().contains("truncated"), "{error}");
    }
}
