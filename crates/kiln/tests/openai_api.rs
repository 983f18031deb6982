//! The OpenAI-compatible text routes over plain HTTP, against the real SmolLM2 model: the exact
//! shapes of `chat.completion`, its chunks, `text_completion`, and `/v1/models`.

mod common;

use common::*;
use serde_json::{json, Value};

const LLAMA: &str = "@cf/meta/llama-3.1-8b-instruct";

/// Both bases an SDK may be pointed at.
fn bases() -> [String; 2] {
    [
        url("/v1"),
        url(&format!("/client/v4/accounts/{ACCOUNT}/ai/v1")),
    ]
}

fn capital_chat() -> Value {
    json!({
        "model": LLAMA,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"}
        ],
        "temperature": 0,
        "max_tokens": 48,
        "seed": 7
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn assert_usage_adds_up(usage: &Value) -> (u64, u64) {
    let prompt = usage["prompt_tokens"].as_u64().expect("prompt_tokens");
    let completion = usage["completion_tokens"]
        .as_u64()
        .expect("completion_tokens");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(prompt + completion),
        "{usage}"
    );
    (prompt, completion)
}

#[tokio::test]
async fn chat_completion_has_openai_shape_on_both_bases() {
    for base in bases() {
        let (status, headers, body) =
            post_json(&format!("{base}/chat/completions"), &capital_chat()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-kiln-model"], "smollm2-135m-instruct");
        for phase in ["x-kiln-queue-ms", "x-kiln-prefill-ms", "x-kiln-decode-ms"] {
            assert!(headers.contains_key(phase), "{phase} missing: {headers:?}");
        }
        assert!(
            body["id"].as_str().unwrap().starts_with("chatcmpl-"),
            "{body}"
        );
        assert_eq!(body["object"], "chat.completion");
        let created = body["created"].as_u64().expect("created");
        assert!(created.abs_diff(now()) < 120, "{created}");
        assert_eq!(body["model"], LLAMA);
        assert!(body["system_fingerprint"]
            .as_str()
            .is_some_and(|f| !f.is_empty()));
        let choices = body["choices"].as_array().expect("choices");
        assert_eq!(choices.len(), 1);
        let choice = &choices[0];
        assert_eq!(choice["index"], 0);
        assert_eq!(choice["message"]["role"], "assistant");
        assert!(choice["message"]["refusal"].is_null(), "{choice}");
        assert!(
            choice.get("logprobs").is_some_and(Value::is_null),
            "{choice}"
        );
        let content = choice["message"]["content"].as_str().expect("content");
        assert!(content.contains("Paris"), "answer was {content:?}");
        assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap()));
        let (prompt, completion) = assert_usage_adds_up(&body["usage"]);
        assert!(prompt > 10 && completion > 0, "{}", body["usage"]);
    }
}

#[tokio::test]
async fn max_tokens_limits_and_reports_length() {
    for field in ["max_tokens", "max_completion_tokens"] {
        let mut request = capital_chat();
        request["max_tokens"] = Value::Null;
        request[field] = json!(3);
        let (status, _, body) = post_json(&url("/v1/chat/completions"), &request).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
        assert_eq!(body["usage"]["completion_tokens"], 3, "{body}");
    }
}

#[tokio::test]
async fn text_parts_and_developer_role_are_accepted() {
    let request = json!({
        "model": "smollm2-135m-instruct",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "You are a helpful assistant."}]},
            {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}
        ],
        "temperature": 0, "max_tokens": 48, "user": "someone", "response_format": {"type": "text"},
        "presence_penalty": 0, "frequency_penalty": 0, "top_p": 1, "logprobs": false, "stop": []
    });
    let (status, _, body) = post_json(&url("/v1/chat/completions"), &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "smollm2-135m-instruct");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("Paris"), "answer was {content:?}");
}

#[tokio::test]
async fn n_choices_are_indexed_and_billed_together() {
    let mut request = capital_chat();
    request["n"] = json!(2);
    request["max_tokens"] = json!(8);
    let (status, _, body) = post_json(&url("/v1/chat/completions"), &request).await;
    assert_eq!(status, 200, "{body}");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[1]["index"], 1);
    let (_, completion) = assert_usage_adds_up(&body["usage"]);
    assert!((2..=16).contains(&completion), "{}", body["usage"]);
}

/// Parses an OpenAI stream: JSON chunks, and whether it ended with `[DONE]`.
fn chunks_of(text: &str) -> (Vec<Value>, bool) {
    let data = sse_data(text);
    let done = data.last().is_some_and(|d| d == "[DONE]");
    let chunks = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| panic!("chunk {d}")))
        .collect();
    (chunks, done)
}

#[tokio::test]
async fn chat_stream_has_openai_chunk_sequence_and_same_text() {
    let (_, _, whole) = post_json(&url("/v1/chat/completions"), &capital_chat()).await;
    let expected = whole["choices"][0]["message"]["content"].as_str().unwrap();

    let mut request = capital_chat();
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let (status, headers, text) = post_text(&url("/v1/chat/completions"), &request).await;
    assert_eq!(status, 200, "{text}");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert_eq!(headers["x-kiln-model"], "smollm2-135m-instruct");
    let (chunks, done) = chunks_of(&text);
    assert!(done, "stream must end with [DONE]: {text}");
    assert!(chunks.len() >= 4, "{text}");

    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], id, "one id for the whole stream");
        assert_eq!(chunk["model"], LLAMA);
        assert!(chunk["created"].is_u64());
    }
    let first = &chunks[0]["choices"][0];
    assert_eq!(first["delta"], json!({"role": "assistant", "content": ""}));
    assert!(first["finish_reason"].is_null());

    let (usage_chunk, rest) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    let (prompt, completion) = assert_usage_adds_up(&usage_chunk["usage"]);
    assert_eq!(
        (prompt, completion),
        (
            whole["usage"]["prompt_tokens"].as_u64().unwrap(),
            whole["usage"]["completion_tokens"].as_u64().unwrap()
        )
    );
    let (finish, content_chunks) = rest.split_last().unwrap();
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(
        finish["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    let streamed: String = content_chunks[1..]
        .iter()
        .map(|chunk| {
            assert!(chunk["usage"].is_null(), "usage is null until the trailer");
            assert!(chunk["choices"][0]["finish_reason"].is_null());
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(streamed, expected);
}

#[tokio::test]
async fn chat_stream_without_usage_has_no_usage_chunk() {
    let mut request = capital_chat();
    request["stream"] = json!(true);
    request["max_tokens"] = json!(4);
    let (status, _, text) = post_text(&url("/v1/chat/completions"), &request).await;
    assert_eq!(status, 200, "{text}");
    let (chunks, done) = chunks_of(&text);
    assert!(done);
    for chunk in &chunks {
        assert!(chunk.get("usage").is_none(), "{chunk}");
        assert_eq!(chunk["choices"].as_array().map(Vec::len), Some(1));
    }
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
}

#[tokio::test]
async fn completions_treat_the_prompt_as_raw_text() {
    let prompt = "The capital of France is the city of";
    for base in bases() {
        let request =
            json!({"model": LLAMA, "prompt": [prompt], "temperature": 0, "max_tokens": 6});
        let (status, headers, body) = post_json(&format!("{base}/completions"), &request).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-kiln-model"], "smollm2-135m-instruct");
        assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["model"], LLAMA);
        let choice = &body["choices"][0];
        assert_eq!(choice["index"], 0);
        assert!(choice.get("logprobs").is_some_and(Value::is_null));
        let text = choice["text"].as_str().unwrap();
        assert!(text.contains("Paris"), "continuation was {text:?}");
        let (prompt_tokens, completion) = assert_usage_adds_up(&body["usage"]);
        // Raw text: no chat template around the prompt, so only a handful of tokens.
        assert!(prompt_tokens < 15, "prompt_tokens {prompt_tokens}");
        assert!(completion <= 6);
    }
}

#[tokio::test]
async fn completion_stream_matches_the_whole_answer() {
    let request = json!({"model": LLAMA, "prompt": "The capital of France is the city of", "temperature": 0, "max_tokens": 6});
    let (_, _, whole) = post_json(&url("/v1/completions"), &request).await;
    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let (status, _, text) = post_text(&url("/v1/completions"), &streaming).await;
    assert_eq!(status, 200, "{text}");
    let (chunks, done) = chunks_of(&text);
    assert!(done);
    let (usage_chunk, rest) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    // The streamed run reuses the first run's prompt from the prefix cache; the counts match.
    for field in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(
            usage_chunk["usage"][field], whole["usage"][field],
            "{field}"
        );
    }
    let cached = usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64();
    assert!(cached.is_some_and(|c| c < 15), "{}", usage_chunk["usage"]);
    let streamed: String = rest
        .iter()
        .map(|chunk| {
            assert_eq!(chunk["object"], "text_completion");
            chunk["choices"][0]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(streamed, whole["choices"][0]["text"].as_str().unwrap());
    assert_eq!(
        rest.last().unwrap()["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
}

#[tokio::test]
async fn models_lists_local_names_aliases_and_catalog_ids() {
    for base in bases() {
        let response = client().get(format!("{base}/models")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["object"], "list");
        let data = body["data"].as_array().unwrap();
        for model in data {
            assert_eq!(model["object"], "model");
            assert!(
                model["created"].is_u64() && model["owned_by"].is_string(),
                "{model}"
            );
        }
        let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
        for expected in [
            "smollm2-135m-instruct",
            "all-minilm-l6-v2",
            LLAMA,
            "@cf/baai/bge-base-en-v1.5",
        ] {
            assert!(ids.contains(&expected), "{expected} missing from {ids:?}");
        }
        let llama = data.iter().find(|m| m["id"] == LLAMA).unwrap();
        assert_eq!(llama["owned_by"], "meta");
    }
}

#[tokio::test]
async fn one_model_is_retrievable_by_id() {
    let response = client()
        .get(url(&format!("/v1/models/{LLAMA}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], LLAMA);
    assert_eq!(body["object"], "model");

    let response = client()
        .get(url("/v1/models/no-such-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
}
