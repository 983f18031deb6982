//! PEFT → GGUF LoRA conversion against the real SmolLM2-135M GGUF (llama architecture: 9 query
//! heads, 3 KV heads, hidden size 576).

use std::fs::File;
use std::io::BufReader;

use candle_core::quantized::gguf_file;
use candle_core::Device;
use kiln_finetune::{gguf_adapter, FinetuneStore, CONFIG_FILE, WEIGHTS_FILE};
use rand::Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const HIDDEN: usize = 576;
const KV: usize = 192;
const RANK: usize = 8;

fn random_bytes(count: usize) -> Vec<u8> {
    let mut rng = rand::rng();
    (0..count)
        .flat_map(|_| rng.random_range(-0.1f32..0.1).to_le_bytes())
        .collect()
}

fn peft(module: &str, kind: &str) -> String {
    format!("base_model.model.model.layers.0.{module}.lora_{kind}.weight")
}

#[test]
fn a_smollm2_adapter_converts_with_permuted_query_rows() {
    let base = kiln_store::ensure_for_tests("smollm2-135m-instruct");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FinetuneStore::new(dir.path());
    store
        .create(
            "acct",
            "smol",
            "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
            None,
            false,
        )
        .expect("created");
    let config = serde_json::json!({"model_type": "llama", "r": RANK, "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"]});
    store
        .upload("acct", "smol", CONFIG_FILE, config.to_string().as_bytes())
        .expect("config");

    let q_a = random_bytes(RANK * HIDDEN);
    let q_b = random_bytes(HIDDEN * RANK);
    let v_a = random_bytes(RANK * HIDDEN);
    let v_b = random_bytes(KV * RANK);
    let tensors = [
        (
            peft("self_attn.q_proj", "A"),
            TensorView::new(Dtype::F32, vec![RANK, HIDDEN], &q_a).unwrap(),
        ),
        (
            peft("self_attn.q_proj", "B"),
            TensorView::new(Dtype::F32, vec![HIDDEN, RANK], &q_b).unwrap(),
        ),
        (
            peft("self_attn.v_proj", "A"),
            TensorView::new(Dtype::F32, vec![RANK, HIDDEN], &v_a).unwrap(),
        ),
        (
            peft("self_attn.v_proj", "B"),
            TensorView::new(Dtype::F32, vec![KV, RANK], &v_b).unwrap(),
        ),
    ];
    let weights = safetensors::serialize(tensors, None).expect("safetensors");
    store
        .upload("acct", "smol", WEIGHTS_FILE, &weights)
        .expect("weights");

    let ready = store.ready("acct", "smol").expect("ready");
    let path = gguf_adapter(&ready, &base.primary_file).expect("converted");
    assert_eq!(
        gguf_adapter(&ready, &base.primary_file).expect("cached"),
        path,
        "converted once, then reused"
    );

    let mut reader = BufReader::new(File::open(&path).expect("adapter file"));
    let content = gguf_file::Content::read(&mut reader).expect("valid GGUF");
    let text = |key: &str| content.metadata[key].to_string().expect("string").clone();
    assert_eq!(text("general.type"), "adapter");
    assert_eq!(text("adapter.type"), "lora");
    assert_eq!(text("general.architecture"), "llama");
    assert_eq!(
        content.metadata["adapter.lora.alpha"]
            .to_f32()
            .expect("alpha"),
        16.0
    );
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "blk.0.attn_q.weight.lora_a",
            "blk.0.attn_q.weight.lora_b",
            "blk.0.attn_v.weight.lora_a",
            "blk.0.attn_v.weight.lora_b"
        ]
    );
    let mut read = |name: &str| {
        content
            .tensor(&mut reader, name, &Device::Cpu)
            .expect("tensor")
            .dequantize(&Device::Cpu)
            .expect("f32")
    };
    assert_eq!(read("blk.0.attn_q.weight.lora_a").dims(), [RANK, HIDDEN]);
    assert_eq!(read("blk.0.attn_v.weight.lora_b").dims(), [KV, RANK]);

    // V is stored as given; Q's rows are interleaved per head (64-dim heads): GGUF row 1 is
    // PEFT row 32 (the first row of the head's second rotary half).
    let as_rows = |bytes: &[u8]| -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let v_b_gguf: Vec<f32> = read("blk.0.attn_v.weight.lora_b")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(v_b_gguf, as_rows(&v_b));
    let q_b_peft = as_rows(&q_b);
    let q_b_gguf: Vec<f32> = read("blk.0.attn_q.weight.lora_b")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let row = |values: &[f32], index: usize| values[index * RANK..(index + 1) * RANK].to_vec();
    assert_eq!(row(&q_b_gguf, 0), row(&q_b_peft, 0));
    assert_eq!(row(&q_b_gguf, 1), row(&q_b_peft, 32));
    assert_eq!(row(&q_b_gguf, 2), row(&q_b_peft, 1));
    assert_eq!(row(&q_b_gguf, 64 + 1), row(&q_b_peft, 64 + 32));
}

#[test]
fn an_adapter_that_does_not_fit_the_base_is_refused() {
    let base = kiln_store::ensure_for_tests("smollm2-135m-instruct");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FinetuneStore::new(dir.path());
    store
        .create("acct", "wrong", "m", None, false)
        .expect("created");
    let config = serde_json::json!({"model_type": "llama", "r": 4});
    store
        .upload("acct", "wrong", CONFIG_FILE, config.to_string().as_bytes())
        .expect("config");
    // A 4096-wide projection: a Llama 7B adapter, not SmolLM2's.
    let (a, b) = (random_bytes(4 * 4096), random_bytes(4096 * 4));
    let tensors = [
        (
            peft("self_attn.q_proj", "A"),
            TensorView::new(Dtype::F32, vec![4, 4096], &a).unwrap(),
        ),
        (
            peft("self_attn.q_proj", "B"),
            TensorView::new(Dtype::F32, vec![4096, 4], &b).unwrap(),
        ),
    ];
    let weights = safetensors::serialize(tensors, None).expect("safetensors");
    store
        .upload("acct", "wrong", WEIGHTS_FILE, &weights)
        .expect("weights");
    let ready = store.ready("acct", "wrong").expect("ready");
    let error = gguf_adapter(&ready, &base.primary_file).expect_err("does not fit");
    assert_eq!(error.kind, kiln_core::ErrorKind::InvalidFinetune);
    assert!(error.message.contains("do not fit"), "{}", error.message);
    let leftovers: Vec<_> = std::fs::read_dir(&ready.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("lora-for"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
