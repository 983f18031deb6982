//! LoRA fine-tune assets: `adapter_config.json` and `adapter_model.safetensors` through their
//! validation, and, when both pass, the conversion to a llama.cpp GGUF adapter against a tiny
//! llama-architecture base GGUF written once at start-up.
//!
//! Input: the config bytes, a 0xFF byte, the safetensors bytes (no 0xFF: the weights alone,
//! checked against a fixed valid config).
#![no_main]
use std::path::PathBuf;
use std::sync::LazyLock;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use kiln_core::limits::LoraLimits;
use kiln_core::ErrorKind;
use kiln_finetune::{gguf_adapter, validate_config, validate_weights, Finetune, ReadyAdapter};
use libfuzzer_sys::fuzz_target;

const DEFAULT_CONFIG: &[u8] = br#"{"model_type": "llama", "r": 2, "lora_alpha": 4}"#;

struct Fixture {
    base: PathBuf,
    adapter_dir: PathBuf,
}

/// A base "model" with one layer: q [8, 4], k and v [4, 4] (2 heads, 1 KV head), o [4, 8].
static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = kiln_fuzz::scratch_dir("finetune");
    let base = dir.join("base.gguf");
    let shapes = [("attn_q", (8, 4)), ("attn_k", (4, 4)), ("attn_v", (4, 4)), ("attn_output", (4, 8))];
    let tensors: Vec<(String, QTensor)> = shapes
        .iter()
        .map(|(name, (out, input))| {
            let t = Tensor::zeros((*out, *input), candle_core::DType::F32, &Device::Cpu).unwrap();
            (format!("blk.0.{name}.weight"), QTensor::quantize(&t, GgmlDType::F32).unwrap())
        })
        .collect();
    let metadata = [
        ("general.architecture", Value::String("llama".into())),
        ("llama.attention.head_count", Value::U32(2)),
        ("llama.attention.head_count_kv", Value::U32(1)),
    ];
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file = std::fs::File::create(&base).unwrap();
    gguf_file::write(&mut file, &metadata, &tensor_refs).unwrap();
    let adapter_dir = dir.join("adapter");
    std::fs::create_dir_all(&adapter_dir).unwrap();
    Fixture { base, adapter_dir }
});

fn expect_client_error(result: Result<impl Sized, kiln_core::KilnError>) -> bool {
    match result {
        Ok(_) => true,
        Err(error) => {
            assert!(
                matches!(error.kind, ErrorKind::BadInput | ErrorKind::InvalidFinetune),
                "{:?}: {}",
                error.kind,
                error.message
            );
            false
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (config_bytes, weights) = match data.iter().position(|&b| b == 0xFF) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (DEFAULT_CONFIG, data),
    };
    let limits = LoraLimits::default();
    let config = validate_config(config_bytes);
    let rank = config.as_ref().ok().map(|c| c.rank);
    let weights_ok = expect_client_error(validate_weights(weights, &limits, rank));
    let _ = expect_client_error(validate_weights(weights, &limits, None));
    let Ok(config) = config else {
        return;
    };
    if !weights_ok {
        return;
    }
    let fixture = &*FIXTURE;
    std::fs::write(fixture.adapter_dir.join("adapter_model.safetensors"), weights).unwrap();
    let adapter = ReadyAdapter {
        finetune: Finetune {
            id: "fuzz".into(),
            name: "fuzz".into(),
            model: "@cf/meta/llama-2-7b-chat-hf-lora".into(),
            description: String::new(),
            public: false,
            created_at: String::new(),
            modified_at: String::new(),
        },
        config,
        dir: fixture.adapter_dir.clone(),
        limits,
    };
    if let Ok(path) = gguf_adapter(&adapter, &fixture.base) {
        let mut reader = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
        gguf_file::Content::read(&mut reader).expect("Kiln's own GGUF adapter reads back");
        std::fs::remove_file(&path).unwrap();
    }
});
