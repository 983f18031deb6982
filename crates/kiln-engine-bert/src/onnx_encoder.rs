//! The BERT encoder as an ONNX graph on ONNX Runtime. Kiln uses it for int8-quantized exports
//! (all-MiniLM-L6-v2's `model.onnx`): their integer matrix multiplies run on the CPU's int8 dot
//! product instructions (VNNI, AMX where present), which candle has no kernels for.

use std::path::Path;

use candle_core::{Device, Tensor};
use ort::session::Session;
use ort::value::Tensor as OrtTensor;

/// One padded batch, row-major `batch × len`, as the graph's int64 inputs want it.
pub(crate) struct PaddedBatch {
    pub batch_size: usize,
    pub padded_len: usize,
    pub token_ids: Vec<i64>,
    pub type_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
}

pub(crate) struct OnnxBertEncoder {
    session: Session,
    takes_token_type_ids: bool,
    hidden_size: usize,
}

impl OnnxBertEncoder {
    /// Loads `path`, running each forward pass on `threads` threads (0: ONNX Runtime's default,
    /// one per physical core). The graph must take `input_ids` and `attention_mask` (and may
    /// take `token_type_ids`) and answer `last_hidden_state` of width `hidden_size`.
    pub fn load(path: &Path, threads: usize, hidden_size: usize) -> Result<Self, String> {
        kiln_ort::ensure_loaded()?;
        let mut builder = Session::builder().map_err(|e| e.to_string())?;
        if threads > 0 {
            builder = builder
                .with_intra_threads(threads)
                .map_err(|e| e.to_string())?;
        }
        let session = builder.commit_from_file(path).map_err(|e| e.to_string())?;
        let inputs: Vec<&str> = session.inputs.iter().map(|i| i.name.as_str()).collect();
        for needed in ["input_ids", "attention_mask"] {
            if !inputs.contains(&needed) {
                return Err(format!(
                    "not a BERT encoder graph: no `{needed}` input (inputs: {inputs:?})"
                ));
            }
        }
        let takes_token_type_ids = inputs.contains(&"token_type_ids");
        if !session
            .outputs
            .iter()
            .any(|output| output.name == "last_hidden_state")
        {
            return Err("not a BERT encoder graph: no `last_hidden_state` output".into());
        }
        Ok(Self {
            session,
            takes_token_type_ids,
            hidden_size,
        })
    }

    /// `batch × len × hidden` hidden states, as a candle tensor for the shared pooling code.
    pub fn forward(&mut self, batch: PaddedBatch) -> Result<Tensor, String> {
        let shape = [batch.batch_size, batch.padded_len];
        let to_ort = |values: Vec<i64>| OrtTensor::from_array((shape, values));
        let ids = to_ort(batch.token_ids).map_err(|e| e.to_string())?;
        let mask = to_ort(batch.attention_mask).map_err(|e| e.to_string())?;
        let outputs = if self.takes_token_type_ids {
            let types = to_ort(batch.type_ids).map_err(|e| e.to_string())?;
            self.session.run(ort::inputs![
                "input_ids" => ids,
                "attention_mask" => mask,
                "token_type_ids" => types,
            ])
        } else {
            self.session.run(ort::inputs![
                "input_ids" => ids,
                "attention_mask" => mask,
            ])
        }
        .map_err(|e| e.to_string())?;
        let (out_shape, hidden) = outputs["last_hidden_state"]
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        let expected = [
            batch.batch_size as i64,
            batch.padded_len as i64,
            self.hidden_size as i64,
        ];
        if out_shape.as_ref() != expected {
            return Err(format!(
                "last_hidden_state has shape {out_shape:?}, expected {expected:?}"
            ));
        }
        Tensor::from_slice(
            hidden,
            (batch.batch_size, batch.padded_len, self.hidden_size),
            &Device::Cpu,
        )
        .map_err(|e| e.to_string())
    }
}
