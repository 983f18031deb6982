//! Served schemas compile, and validation accepts good inputs and names the bad field.

use kiln_catalog::{compile_schema, schema_for, validate_input, Catalog, CatalogEntry};
use kiln_core::ErrorKind;
use proptest::prelude::*;
use serde_json::{json, Value};

const LLAMA: &str = "@cf/meta/llama-3.1-8b-instruct";
const LLAMA_BATCH: &str = "@cf/meta/llama-3.3-70b-instruct-fp8-fast";
const BGE: &str = "@cf/baai/bge-base-en-v1.5";

fn model(name: &str) -> &'static CatalogEntry {
    Catalog::builtin()
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing"))
}

fn accepts(name: &str, input: Value) {
    if let Err(error) = validate_input(model(name), &input) {
        panic!("{name} rejected {input}: {}", error.message);
    }
}

/// Rejects with BadInput and returns the message.
fn rejects(name: &str, input: Value) -> String {
    match validate_input(model(name), &input) {
        Ok(()) => panic!("{name} accepted {input}"),
        Err(error) => {
            assert_eq!(error.kind, ErrorKind::BadInput, "{}", error.message);
            assert!(
                error.message.starts_with("AiError: Bad input: "),
                "{}",
                error.message
            );
            error.message
        }
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

#[test]
fn every_served_schema_compiles() {
    for entry in Catalog::builtin().entries() {
        let schema = schema_for(entry);
        for side in ["input", "output"] {
            assert!(schema[side].is_object(), "{} {side}", entry.name);
            jsonschema::meta::validate(&schema[side]).unwrap_or_else(|e| {
                panic!("{} {side} is not a valid JSON Schema: {e}", entry.name)
            });
            compile_schema(&schema[side]).unwrap_or_else(|e| panic!("{} {side}: {e}", entry.name));
        }
        // Every model validates without an internal error.
        let outcome = validate_input(entry, &json!({}));
        assert!(
            outcome
                .as_ref()
                .map_or_else(|e| e.kind == ErrorKind::BadInput, |_| true),
            "{}",
            entry.name
        );
    }
}

#[test]
fn batch_branch_only_for_async_queue_models() {
    let has_requests_branch =
        |name: &str| schema_for(model(name)).to_string().contains("Async Batch");
    assert!(has_requests_branch(LLAMA_BATCH));
    assert!(has_requests_branch(BGE));
    assert!(!has_requests_branch(LLAMA));
}

#[test]
fn text_generation_accepts_good_inputs() {
    accepts(LLAMA, json!({"prompt": "hi"}));
    accepts(
        LLAMA,
        json!({"prompt": "hi", "raw": true, "lora": "my-adapter", "unknown_option": 1}),
    );
    accepts(
        LLAMA,
        json!({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}),
    );
    accepts(
        LLAMA,
        json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}),
    );
    accepts(
        LLAMA,
        json!({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [{"id": "000000001", "type": "function",
            "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "000000001", "name": "weather", "content": "sunny"}
    ], "tools": [
        {"name": "weather", "description": "get weather", "parameters": {"type": "object", "properties": {}}},
        {"type": "function", "function": {"name": "time", "parameters": {"type": "object"}}}
    ], "functions": [{"name": "f", "code": "return 1"}]}),
    );
    for bound in [
        json!({"max_tokens": 1, "temperature": 0, "top_p": 0, "top_k": 1, "seed": 1,
               "repetition_penalty": 0, "frequency_penalty": -2, "presence_penalty": -2}),
        json!({"max_tokens": 131072, "temperature": 5, "top_p": 2, "top_k": 50, "seed": 9_999_999_999u64,
               "repetition_penalty": 2, "frequency_penalty": 2, "presence_penalty": 2}),
    ] {
        let mut input = bound.clone();
        input["prompt"] = json!("hi");
        input["stream"] = json!(true);
        input["stop"] = json!(["\n", "END"]);
        input["response_format"] =
            json!({"type": "json_schema", "json_schema": {"type": "object"}});
        input["options"] = json!({"rejectIfBusy": true});
        accepts(LLAMA, input);
        let mut input = bound;
        input["messages"] = json!([{"role": "user", "content": "hi"}]);
        input["stop"] = json!("END");
        accepts(LLAMA, input);
    }
    // Both keys: the input passes if either branch accepts it.
    accepts(
        LLAMA,
        json!({"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]}),
    );
}

#[test]
fn text_generation_names_the_bad_field() {
    let empty = rejects(LLAMA, json!({}));
    assert_mentions(
        &empty,
        &[
            "Error: oneOf at '/' not met, 0 matches",
            "required properties at '/' are 'prompt'",
            "required properties at '/' are 'messages'",
        ],
    );
    assert_eq!(
        rejects(LLAMA, json!({"prompt": 5})),
        "AiError: Bad input: Error: Type mismatch of '/prompt', 'integer' not in 'string'"
    );
    assert_mentions(
        &rejects(LLAMA, json!({"prompt": ""})),
        &["'/prompt'", "minimum length of 1"],
    );
    assert_mentions(
        &rejects(LLAMA, json!({"messages": "x"})),
        &["'/messages'", "'string' not in 'array'"],
    );
    assert_mentions(
        &rejects(LLAMA, json!({"prompt": "hi", "max_tokens": -1})),
        &["'/max_tokens'", "minimum of 1"],
    );
    assert_mentions(
        &rejects(LLAMA, json!({"prompt": "hi", "temperature": 99})),
        &["'/temperature'", "maximum of 5"],
    );

    assert_mentions(
        &rejects(LLAMA, json!({"prompt": "hi", "max_tokens": 1.5})),
        &["'/max_tokens'", "'number' not in 'integer'"],
    );
    assert_mentions(
        &rejects(LLAMA, json!({"prompt": "hi", "top_k": 51})),
        &["'/top_k'", "maximum of 50"],
    );
    assert_mentions(
        &rejects(LLAMA, json!({"prompt": "hi", "seed": 0})),
        &["'/seed'", "minimum of 1"],
    );
    assert_mentions(
        &rejects(LLAMA, json!({"prompt": "hi", "frequency_penalty": -2.5})),
        &["'/frequency_penalty'"],
    );
    assert_mentions(
        &rejects(LLAMA, json!({"prompt": "hi", "stream": "yes"})),
        &["'/stream'", "'boolean'"],
    );
    assert_mentions(
        &rejects(LLAMA, json!({"prompt": "hi", "stop": 3})),
        &["'/stop'"],
    );
    assert_mentions(
        &rejects(
            LLAMA,
            json!({"prompt": "hi", "response_format": {"type": "xml"}}),
        ),
        &["'/response_format/type'"],
    );
    assert_mentions(
        &rejects(LLAMA, json!({"messages": []})),
        &["'/messages'", "minimum of 1 items"],
    );
    assert_mentions(
        &rejects(LLAMA, json!({"messages": [{"content": "hi"}]})),
        &["required properties at '/messages/0' are 'role'"],
    );
    assert_mentions(
        &rejects(LLAMA, json!({"messages": [{"role": "user"}]})),
        &["required properties at '/messages/0' are 'content'"],
    );
    assert_mentions(
        &rejects(LLAMA, json!({"messages": [{"role": "assistant"}]})),
        &["'/messages/0' are 'content'"],
    );
    assert_mentions(
        &rejects(LLAMA, json!({"messages": [{"role": "user", "content": 7}]})),
        &["Type mismatch of '/messages/0/content', 'integer' not in 'array', 'null', 'string'"],
    );
    assert_mentions(
        &rejects(
            LLAMA,
            json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
        ),
        &["'/messages/0/content/0' are 'text'"],
    );
    assert_mentions(
        &rejects(
            LLAMA,
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [{}]}),
        ),
        &["anyOf at '/tools/0'"],
    );
    assert_mentions(
        &rejects(LLAMA, json!("hello")),
        &["Type mismatch of '/', 'string' not in 'object'"],
    );
    assert_mentions(
        &rejects(LLAMA, json!([1])),
        &["'/'", "'array' not in 'object'"],
    );
}

#[test]
fn async_batch_items_are_validated_one_by_one() {
    accepts(
        LLAMA_BATCH,
        json!({"requests": [
            {"prompt": "a", "external_reference": "ref-1"},
            {"messages": [{"role": "user", "content": "b"}], "max_tokens": 10}
        ]}),
    );
    assert_mentions(
        &rejects(LLAMA_BATCH, json!({"requests": []})),
        &["'/requests'", "minimum of 1 items"],
    );
    assert_mentions(
        &rejects(
            LLAMA_BATCH,
            json!({"requests": [{"prompt": "ok"}, {"prompt": "x", "temperature": 9}]}),
        ),
        &["'/requests/1/temperature'", "maximum of 5"],
    );
    assert_mentions(
        &rejects(LLAMA_BATCH, json!({"requests": [{"nothing": 1}]})),
        &[
            "oneOf at '/requests/0' not met",
            "required properties at '/requests/0' are 'prompt'",
        ],
    );
    let without_queue = rejects(LLAMA, json!({"requests": [{"prompt": "a"}]}));
    assert_mentions(&without_queue, &["'prompt'", "'messages'"]);
    assert!(!without_queue.contains("requests"), "{without_queue}");
}

#[test]
fn embeddings_validation() {
    accepts(BGE, json!({"text": "hello"}));
    accepts(BGE, json!({"text": ["a", "b"], "pooling": "cls"}));
    accepts(BGE, json!({"text": vec!["x"; 100]}));
    accepts(
        BGE,
        json!({"requests": [{"text": "a"}, {"text": ["b"], "pooling": "mean"}]}),
    );
    assert_mentions(
        &rejects(BGE, json!({"text": ""})),
        &["'/text'", "minimum length of 1"],
    );
    assert_mentions(
        &rejects(BGE, json!({"text": vec!["x"; 101]})),
        &["'/text'", "maximum of 100 items"],
    );
    assert_mentions(
        &rejects(BGE, json!({"text": []})),
        &["'/text'", "minimum of 1 items"],
    );
    assert_mentions(&rejects(BGE, json!({"text": ["ok", ""]})), &["'/text/1'"]);
    assert_mentions(
        &rejects(BGE, json!({"text": "a", "pooling": "max"})),
        &["'/pooling'", "\"max\"", "\"mean\", \"cls\""],
    );
    assert_mentions(&rejects(BGE, json!({})), &["'text'"]);

    let m3 = "@cf/baai/bge-m3";
    accepts(m3, json!({"text": ["a"], "truncate_inputs": true}));
    accepts(m3, json!({"query": "q", "contexts": [{"text": "c"}]}));
    assert_mentions(
        &rejects(m3, json!({"query": "q", "contexts": [{}]})),
        &["'/contexts/0' are 'text'"],
    );
    assert_mentions(
        &rejects(m3, json!({"query": "q"})),
        &["'text'", "'contexts'"],
    );

    let qwen = "@cf/qwen/qwen3-embedding-0.6b";
    accepts(qwen, json!({"queries": "q", "documents": ["d1", "d2"]}));
    assert_mentions(
        &rejects(qwen, json!({"instruction": "x"})),
        &["anyOf at '/'", "'queries'", "'documents'"],
    );
    accepts(
        "@cf/google/embeddinggemma-300m",
        json!({"text": ["a", "b"]}),
    );
}

#[test]
fn other_tasks_validation() {
    let reranker = "@cf/baai/bge-reranker-base";
    accepts(
        reranker,
        json!({"query": "q", "contexts": [{"text": "a"}], "top_k": 1}),
    );
    assert_mentions(
        &rejects(reranker, json!({"contexts": [{"text": "a"}]})),
        &["are 'query'"],
    );

    accepts(
        "@cf/huggingface/distilbert-sst-2-int8",
        json!({"text": "great"}),
    );
    accepts(
        "@cf/facebook/bart-large-cnn",
        json!({"input_text": "long text", "max_length": 50}),
    );
    assert_mentions(
        &rejects("@cf/facebook/bart-large-cnn", json!({"input_text": ""})),
        &["'/input_text'"],
    );

    accepts(
        "@cf/meta/m2m100-1.2b",
        json!({"text": "hi", "source_lang": "en", "target_lang": "fr"}),
    );
    assert_mentions(
        &rejects("@cf/meta/m2m100-1.2b", json!({"text": "hi"})),
        &["are 'target_lang'"],
    );
    let indic = "@cf/ai4bharat/indictrans2-en-indic-1B";
    accepts(
        indic,
        json!({"text": ["hi"], "target_language": "hin_Deva"}),
    );
    assert_mentions(
        &rejects(indic, json!({"text": "hi", "target_language": "xx"})),
        &["'/target_language'"],
    );

    accepts("@cf/openai/whisper", json!({"audio": [0, 1, 255]}));
    accepts("@cf/openai/whisper", json!("raw-bytes-as-binary-body"));
    assert_mentions(
        &rejects("@cf/openai/whisper", json!({"audio": [256]})),
        &["'/audio/0'", "maximum of 255"],
    );
    accepts(
        "@cf/openai/whisper-large-v3-turbo",
        json!({"audio": "UklGRg==", "task": "translate"}),
    );
    assert_mentions(
        &rejects(
            "@cf/openai/whisper-large-v3-turbo",
            json!({"audio": "x", "task": "sing"}),
        ),
        &["'/task'"],
    );
    accepts(
        "@cf/pipecat-ai/smart-turn-v2",
        json!({"audio": "AAAA", "dtype": "float32"}),
    );

    accepts(
        "@cf/myshell-ai/melotts",
        json!({"prompt": "hello", "lang": "en"}),
    );
    accepts(
        "@cf/deepgram/aura-1",
        json!({"text": "hello", "speaker": "luna"}),
    );
    assert_mentions(
        &rejects(
            "@cf/deepgram/aura-1",
            json!({"text": "hello", "speaker": "bob"}),
        ),
        &["'/speaker'"],
    );

    accepts(
        "@cf/stabilityai/stable-diffusion-xl-base-1.0",
        json!({"prompt": "cat", "width": 512, "num_steps": 20}),
    );
    assert_mentions(
        &rejects(
            "@cf/stabilityai/stable-diffusion-xl-base-1.0",
            json!({"prompt": "cat", "num_steps": 21}),
        ),
        &["'/num_steps'", "maximum of 20"],
    );
    let schnell = "@cf/black-forest-labs/flux-1-schnell";
    accepts(schnell, json!({"prompt": "cat", "steps": 8}));
    assert_eq!(
        rejects(schnell, json!({"prompt": "cat", "width": 512, "height": 512})),
        "AiError: Bad input: Error: Additional or unevaluated properties '/height, /width' at '/' not allowed"
    );
    accepts("@cf/black-forest-labs/flux-2-dev", json!({"prompt": "cat"}));

    accepts(
        "@cf/llava-hf/llava-1.5-7b-hf",
        json!({"image": [1, 2, 3], "prompt": "describe"}),
    );
    assert_mentions(
        &rejects(
            "@cf/llava-hf/llava-1.5-7b-hf",
            json!({"prompt": "describe"}),
        ),
        &["are 'image'"],
    );
    accepts("@cf/microsoft/resnet-50", json!({"image": [1, 2, 3]}));
    accepts("@cf/facebook/detr-resnet-50", json!({"image": "base64"}));
    accepts("@cf/cloudflare/clef", json!({"anything": true}));
}

#[test]
fn long_values_are_shortened_in_messages() {
    let long = "m".repeat(10_000);
    let message = rejects(BGE, json!({"text": "a", "pooling": long}));
    assert!(message.len() < 300, "{message}");
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop_oneof![
            Just("prompt".to_owned()),
            Just("messages".to_owned()),
            Just("requests".to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            Just("prompt".to_owned()),
            Just("messages".to_owned()),
            Just("requests".to_owned()),
            Just("role".to_owned()),
            Just("content".to_owned()),
            Just("text".to_owned()),
            Just("max_tokens".to_owned()),
            "[a-z_]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn validate_input_never_panics(input in arbitrary_json(), model_index in 0usize..200) {
        let entries = Catalog::builtin().entries();
        let entry = &entries[model_index % entries.len()];
        match validate_input(entry, &input) {
            Ok(()) => {}
            Err(error) => {
                prop_assert_eq!(error.kind, ErrorKind::BadInput);
                prop_assert!(error.message.starts_with("AiError: Bad input: "));
            }
        }
        let llama = Catalog::builtin().get(LLAMA_BATCH).expect("model");
        let _ = validate_input(llama, &input);
    }
}
