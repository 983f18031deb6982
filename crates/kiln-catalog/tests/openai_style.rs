//! The catalog marks the OpenAI-style models (spec §1.2, §3.1.3): gpt-oss takes the Responses
//! API's `input` as well as prompt/messages; the others answer `chat.completion` objects.

use kiln_catalog::{schema_for, validate_input, Catalog, CatalogEntry, SchemaKind};
use serde_json::json;

fn model(name: &str) -> &'static CatalogEntry {
    Catalog::builtin()
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[test]
fn openai_style_models_are_marked() {
    for name in ["@cf/openai/gpt-oss-120b", "@cf/openai/gpt-oss-20b"] {
        assert_eq!(model(name).schema, SchemaKind::Responses, "{name}");
    }
    for name in [
        "@cf/zai-org/glm-4.7-flash",
        "@cf/moonshotai/kimi-k2.6",
        "@cf/google/gemma-4-26b-a4b-it",
        "@cf/nvidia/nemotron-3-120b-a12b",
        "@cf/qwen/qwen3-30b-a3b-fp8",
    ] {
        let kind = model(name).schema;
        assert_eq!(kind, SchemaKind::ChatCompletions, "{name}");
        assert!(kind.answers_openai_objects() && !kind.takes_responses_input());
    }
    let classic = model("@cf/meta/llama-3.1-8b-instruct").schema;
    assert_eq!(classic, SchemaKind::TextGeneration);
    assert!(!classic.answers_openai_objects());
}

#[test]
fn gpt_oss_validates_responses_input_and_the_classic_branches() {
    let gpt_oss = model("@cf/openai/gpt-oss-120b");
    let good = [
        json!({"input": "Hi", "instructions": "Be brief.", "reasoning": {"effort": "low"}}),
        json!({"input": [{"role": "user", "content": "Hi"}], "max_output_tokens": 64}),
        json!({"messages": [{"role": "user", "content": "Hi"}]}),
        json!({"prompt": "Hi"}),
        json!({"requests": [{"input": "Hi"}, {"prompt": "Hi"}]}),
    ];
    for input in good {
        validate_input(gpt_oss, &input).unwrap_or_else(|e| panic!("{input}: {}", e.message));
    }
    let bad = [
        (json!({"input": 5}), "/input"),
        (json!({"input": ""}), "/input"),
        (json!({"input": []}), "/input"),
        (
            json!({"input": "Hi", "reasoning": {"effort": "max"}}),
            "/reasoning/effort",
        ),
        (
            json!({"input": "Hi", "max_output_tokens": 0}),
            "/max_output_tokens",
        ),
        (json!({"requests": [{"input": 5}]}), "/requests/0/input"),
    ];
    for (input, field) in bad {
        let error = validate_input(gpt_oss, &input).expect_err("refused");
        assert!(error.message.contains(field), "{input}: {}", error.message);
    }
    // Only gpt-oss takes `input`.
    let classic = model("@cf/meta/llama-3.1-8b-instruct");
    assert!(validate_input(classic, &json!({"input": "Hi"})).is_err());
    assert!(validate_input(model("@cf/zai-org/glm-4.7-flash"), &json!({"input": "Hi"})).is_err());
}

#[test]
fn served_output_schemas_name_the_openai_objects() {
    let titles = |name: &str| -> Vec<String> {
        let output = &schema_for(model(name))["output"];
        output["oneOf"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|branch| branch["title"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        titles("@cf/openai/gpt-oss-20b"),
        ["Response", "Chat Completion", "Text Completion"]
    );
    assert_eq!(
        titles("@cf/moonshotai/kimi-k2.5"),
        ["Chat Completion", "Text Completion"]
    );
}
