//! Validation of PEFT LoRA assets: `adapter_config.json` and `adapter_model.safetensors`.

use kiln_core::KilnResult;
use safetensors::SafeTensors;
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

/// The safetensors file parses, and its tensors are LoRA A/B pairs.
pub fn validate_weights(bytes: &[u8]) -> KilnResult<()> {
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| {
        invalid(format!(
            "adapter_model.safetensors is not a valid safetensors file: {e}"
        ))
    })?;
    let names = tensors.names();
    if names.is_empty() {
        return Err(invalid(
            "adapter_model.safetensors holds no tensors".to_owned(),
        ));
    }
    for name in &names {
        let Some(b_name) = name
            .contains("lora_A")
            .then(|| name.replace("lora_A", "lora_B"))
        else {
            continue;
        };
        let a = tensors
            .tensor(name)
            .map_err(|e| invalid(format!("tensor {name}: {e}")))?;
        let b = tensors.tensor(&b_name).map_err(|_| {
            invalid(format!(
                "adapter_model.safetensors has {name} but no {b_name}"
            ))
        })?;
        let (a_shape, b_shape) = (a.shape(), b.shape());
        if a_shape.len() != 2 || b_shape.len() != 2 || a_shape[0] != b_shape[1] {
            return Err(invalid(format!(
                "{name} {a_shape:?} and {b_name} {b_shape:?} are not a rank-r pair ([r, in] and [out, r])"
            )));
        }
    }
    if !names.iter().any(|name| name.contains("lora_A")) {
        return Err(invalid(
            "adapter_model.safetensors has no lora_A/lora_B tensors".to_owned(),
        ));
    }
    Ok(())
}
