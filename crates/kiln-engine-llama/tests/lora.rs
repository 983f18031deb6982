//! LoRA adapters on the real SmolLM2-135M (llama architecture, 9 query / 3 KV heads, hidden
//! 576): a PEFT adapter made here with random rank-8 A/B on q_proj and v_proj is converted by
//! `kiln-finetune` and applied by the engine. The independent computation is the adapter
//! merged into the dequantized weights (written as a new GGUF with candle), run without any
//! adapter: logits and greedy tokens must agree.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use kiln_core::engine::{BatchGenerator, SequenceId, SequenceOptions};
use kiln_core::{
    ChatMessage, GenerationEvent, GenerationRequest, PromptInput, SamplingParams, TextGenerator,
};
use kiln_engine_llama::{LlamaGenerator, LlamaOptions};
use kiln_finetune::{gguf_adapter, FinetuneStore, CONFIG_FILE, WEIGHTS_FILE};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const HIDDEN: usize = 576;
const HEADS: usize = 9;
const KV_WIDTH: usize = 192;
const RANK: usize = 8;
const ALPHA: f64 = 16.0;
/// Layers the adapter touches.
const LAYERS: [usize; 3] = [0, 7, 15];

fn base_model() -> PathBuf {
    kiln_store::ensure_for_tests("smollm2-135m-instruct").primary_file
}

/// Deterministic pseudo-random values in [-scale, scale] (no RNG state shared between runs).
fn values(count: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

struct Pair {
    module: &'static str,
    layer: usize,
    out: usize,
    a: Vec<f32>,
    b: Vec<f32>,
}

/// `magnitude` bounds every A and B entry; `zero_b` makes B all zeros.
fn adapter_pairs(zero_b: bool, magnitude: f32) -> Vec<Pair> {
    let mut pairs = Vec::new();
    for (index, &layer) in LAYERS.iter().enumerate() {
        for (module, out) in [("q_proj", HIDDEN), ("v_proj", KV_WIDTH)] {
            let seed = (index * 10 + out) as u64;
            pairs.push(Pair {
                module,
                layer,
                out,
                a: values(RANK * HIDDEN, seed, magnitude),
                b: if zero_b {
                    vec![0.0; out * RANK]
                } else {
                    values(out * RANK, seed + 1, magnitude)
                },
            });
        }
    }
    pairs
}

fn bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Stores the adapter as a fine-tune and returns its converted GGUF.
fn converted_adapter(dir: &Path, pairs: &[Pair]) -> PathBuf {
    let store = FinetuneStore::new(dir);
    store
        .create(
            "acct",
            "test",
            "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
            None,
            false,
        )
        .expect("created");
    let config = serde_json::json!({"model_type": "llama", "r": RANK, "lora_alpha": ALPHA,
        "target_modules": ["q_proj", "v_proj"]});
    store
        .upload("acct", "test", CONFIG_FILE, config.to_string().as_bytes())
        .expect("config");
    let data: Vec<(String, Vec<u8>, Vec<usize>)> = pairs
        .iter()
        .flat_map(|p| {
            let name = |kind: &str| {
                format!(
                    "base_model.model.model.layers.{}.self_attn.{}.lora_{kind}.weight",
                    p.layer, p.module
                )
            };
            [
                (name("A"), bytes(&p.a), vec![RANK, HIDDEN]),
                (name("B"), bytes(&p.b), vec![p.out, RANK]),
            ]
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(name, raw, shape)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), raw).expect("view"),
            )
        })
        .collect();
    let weights = safetensors::serialize(views, None).expect("safetensors");
    store
        .upload("acct", "test", WEIGHTS_FILE, &weights)
        .expect("weights");
    let ready = store.ready("acct", "test").expect("ready");
    gguf_adapter(&ready, &base_model()).expect("converted")
}

/// The base GGUF with `W + (alpha / r)·B·A` in place of each adapted weight, as F32. Q rows go
/// through the reordering `convert_hf_to_gguf.py` applies to llama Q weights, written here with
/// tensor operations exactly as that script writes it.
fn merged_model(dir: &Path, pairs: &[Pair]) -> PathBuf {
    let device = Device::Cpu;
    let mut reader = BufReader::new(File::open(base_model()).expect("base"));
    let content = gguf_file::Content::read(&mut reader).expect("GGUF");
    let scale = ALPHA / RANK as f64;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort_by_key(|name| content.tensor_infos[*name].offset);
    for name in names {
        let tensor = content.tensor(&mut reader, name, &device).expect("tensor");
        let pair = pairs.iter().find(|p| {
            let target = if p.module == "q_proj" {
                "attn_q"
            } else {
                "attn_v"
            };
            *name == format!("blk.{}.{target}.weight", p.layer)
        });
        let Some(pair) = pair else {
            tensors.push((name.clone(), tensor));
            continue;
        };
        let weight = tensor.dequantize(&device).expect("dequantize");
        let a = Tensor::from_vec(pair.a.clone(), (RANK, HIDDEN), &device).unwrap();
        let b = Tensor::from_vec(pair.b.clone(), (pair.out, RANK), &device).unwrap();
        let mut delta = (b.matmul(&a).unwrap() * scale).unwrap();
        if pair.module == "q_proj" {
            let head_dim = HIDDEN / HEADS;
            delta = delta
                .reshape((HEADS, 2, head_dim / 2, HIDDEN))
                .and_then(|d| d.transpose(1, 2))
                .and_then(|d| d.contiguous())
                .and_then(|d| d.reshape((HIDDEN, HIDDEN)))
                .expect("permute");
        }
        let merged = (weight + delta).unwrap().to_dtype(DType::F32).unwrap();
        tensors.push((
            name.clone(),
            QTensor::quantize(&merged, GgmlDType::F32).expect("f32"),
        ));
    }
    let path = dir.join("merged.gguf");
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut writer = BufWriter::new(File::create(&path).expect("merged file"));
    gguf_file::write(&mut writer, &metadata, &refs).expect("write merged");
    path
}

fn generator(model: &Path) -> LlamaGenerator {
    let options = LlamaOptions {
        context_size: Some(512),
        threads: 2,
        parallel: 2,
        ..LlamaOptions::default()
    };
    LlamaGenerator::load(model, &options).expect("load")
}

fn request(lora: Option<PathBuf>) -> GenerationRequest {
    GenerationRequest {
        input: PromptInput::Messages(vec![ChatMessage {
            role: "user".into(),
            content: "Write one sentence about the sea.".into(),
            ..Default::default()
        }]),
        max_tokens: 16,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        stop: Vec::new(),
        constraint: None,
        tools: Vec::new(),
        lora,
    }
}

fn text(generator: &mut LlamaGenerator, request: &GenerationRequest) -> String {
    let mut text = String::new();
    generator
        .generate(request, &mut |event| {
            if let GenerationEvent::Text(piece) = event {
                text.push_str(&piece);
            }
            true
        })
        .expect("generates");
    text
}

#[test]
fn an_adapter_with_b_zero_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let adapter = converted_adapter(dir.path(), &adapter_pairs(true, 0.05));
    let mut generator = generator(&base_model());
    let plain = text(&mut generator, &request(None));
    let adapted = text(&mut generator, &request(Some(adapter)));
    assert!(!plain.is_empty());
    assert_eq!(adapted, plain);
}

#[test]
fn the_adapter_gives_the_merged_weights_output_alone_and_beside_a_plain_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pairs = adapter_pairs(false, 0.05);
    let adapter = converted_adapter(dir.path(), &pairs);
    let merged = merged_model(dir.path(), &pairs);

    let mut base = generator(&base_model());
    let plain = text(&mut base, &request(None));
    let adapted = text(&mut base, &request(Some(adapter.clone())));
    let expected = text(&mut generator(&merged), &request(None));
    eprintln!("plain:   {plain:?}\nadapted: {adapted:?}\nmerged:  {expected:?}");
    assert_ne!(adapted, plain, "the adapter must change the output");
    assert_eq!(
        adapted, expected,
        "16 greedy tokens: runtime adapter vs merged weights"
    );

    // Together in one generator: passes alternate between the adapter's group and the base.
    let requests = [request(Some(adapter)), request(None)];
    for (id, request) in requests.iter().enumerate() {
        base.add_sequence(id as SequenceId + 10, request, &SequenceOptions::default())
            .expect("admitted");
    }
    let mut outputs = [String::new(), String::new()];
    let mut done = 0;
    while done < 2 {
        for event in base.step().events {
            let index = (event.id - 10) as usize;
            match event.event.expect("no error") {
                GenerationEvent::Text(piece) => outputs[index].push_str(&piece),
                GenerationEvent::Done { .. } => done += 1,
            }
        }
    }
    assert_eq!(
        outputs[0], adapted,
        "with the adapter, beside a plain request"
    );
    assert_eq!(outputs[1], plain, "plain, beside an adapted request");
}

/// Logits of the token after `prompt`, from llama.cpp directly: the base model with the
/// adapter set on its context, or a model without one.
fn next_token_logits(model_path: &Path, adapter: Option<&Path>, prompt: &str) -> Vec<f32> {
    use llama_cpp_2::context::params::LlamaContextParams;
    use llama_cpp_2::llama_batch::LlamaBatch;
    use llama_cpp_2::model::params::LlamaModelParams;
    use llama_cpp_2::model::LlamaModel;
    use std::num::NonZeroU32;

    let backend = kiln_engine_llama::llama_backend().expect("backend");
    let mut model = LlamaModel::load_from_file(backend, model_path, &LlamaModelParams::default())
        .expect("model");
    let mut lora = adapter.map(|path| model.lora_adapter_init(path).expect("adapter"));
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(256))
        .with_n_threads(2)
        .with_n_threads_batch(2);
    let mut context = model.new_context(backend, params).expect("context");
    if let Some(lora) = lora.as_mut() {
        context.lora_adapter_set(lora, 1.0).expect("set adapter");
    }
    let tokens = model.vocab().tokenize(prompt.as_bytes(), false, true);
    let mut batch = LlamaBatch::new(256, 1);
    let last = tokens.len() - 1;
    for (position, token) in tokens.into_iter().enumerate() {
        batch
            .add(token, position as i32, &[0], position == last)
            .expect("batch");
    }
    context.decode(&mut batch).expect("decode");
    context.get_logits_ith(last as i32).to_vec()
}

/// Largest logit difference allowed between the runtime adapter and the merged weights. They
/// differ only in how the adapted projections are computed: Q4_1 weights × 8-bit quantized
/// activations plus the F32 low-rank path, against F32 merged weights × F32 activations.
/// Measured here: 0.94 at most over the 49,152 logits, while this adapter moves them by 14; an
/// adapter applied wrongly (missing, unscaled, Q rows not permuted) misses by several units.
const LOGIT_TOLERANCE: f32 = 1.5;

#[test]
fn logits_with_the_adapter_match_the_merged_weights() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Larger than the generation test's adapter, so that its effect on the logits stands well
    // above the rounding difference between quantized and F32 projections.
    let pairs = adapter_pairs(false, 0.2);
    let adapter = converted_adapter(dir.path(), &pairs);
    let merged = merged_model(dir.path(), &pairs);
    let prompt = "The lighthouse keeper looked at the sea and";
    let base = next_token_logits(&base_model(), None, prompt);
    let adapted = next_token_logits(&base_model(), Some(&adapter), prompt);
    let expected = next_token_logits(&merged, None, prompt);
    let max_difference = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    };
    let mean_difference = |x: &[f32], y: &[f32]| {
        x.iter().zip(y).map(|(a, b)| (a - b).abs()).sum::<f32>() / x.len() as f32
    };
    let to_merged = max_difference(&adapted, &expected);
    let to_base = max_difference(&base, &expected);
    eprintln!(
        "max |logit difference|: adapter vs merged {to_merged}, base vs merged {to_base}; \
         mean: {} vs {}",
        mean_difference(&adapted, &expected),
        mean_difference(&base, &expected)
    );
    assert!(to_merged <= LOGIT_TOLERANCE, "{to_merged}");
    assert!(
        to_base > 10.0 * to_merged,
        "the adapter must matter: base differs by {to_base}"
    );
    // On average the runtime adapter lands 25× closer to the merged logits than the base does.
    // (This adapter is strong enough to flatten the distribution, so the top token is a
    // near-tie; greedy tokens are compared with the milder adapter above.)
    assert!(
        mean_difference(&base, &expected) > 10.0 * mean_difference(&adapted, &expected),
        "mean differences"
    );
}
