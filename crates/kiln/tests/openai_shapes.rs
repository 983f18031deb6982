//! OpenAI-style catalog models (spec §1.2, §1.7, §3.1.3) against the real SmolLM2 model: gpt-oss
//! takes Responses `input` on `/ai/run` and the binding and answers a Responses object; chat
//! messages get `chat.completion`, a prompt `text_completion`; `/v1/responses` serves the
//! Responses API. Streams included.

mod common;

use common::*;
use serde_json::{json, Value};

const GPT_OSS: &str = "@cf/openai/gpt-oss-20b";
const LLAMA: &str = "@cf/meta/llama-3.1-8b-instruct";
const SYSTEM: &str = "You are a helpful assistant.";
const QUESTION: &str = "What is the capital of France?";

/// The Responses form of text_generation.rs's capital question.
fn responses_question() -> Value {
    json!({"instructions": SYSTEM, "input": QUESTION, "temperature": 0, "max_output_tokens": 48})
}

fn chat_question() -> Value {
    json!({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
           "temperature": 0, "max_tokens": 48})
}

/// The text a classic model gives for the same conversation: the reference every shape must carry.
async fn native_answer() -> String {
    let (status, _, body) = run(LLAMA, &chat_question()).await;
    assert_eq!(status, 200, "{body}");
    body["result"]["response"]
        .as_str()
        .expect("response")
        .to_owned()
}

fn assert_response_object(object: &Value, model: &str) -> String {
    assert_eq!(object["object"], "response", "{object}");
    assert!(
        object["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("resp_")),
        "{object}"
    );
    assert_eq!(object["model"], model);
    assert!(object["created_at"]
        .as_u64()
        .is_some_and(|t| t > 1_700_000_000));
    assert!(["completed", "incomplete"].contains(&object["status"].as_str().unwrap_or("")));
    let message = &object["output"][0];
    assert_eq!(message["type"], "message", "{object}");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"][0]["type"], "output_text");
    let text = message["content"][0]["text"].as_str().expect("text");
    assert_eq!(object["output_text"], text);
    let usage = &object["usage"];
    let (input, output) = (
        usage["input_tokens"].as_u64(),
        usage["output_tokens"].as_u64(),
    );
    assert!(input > Some(10) && output > Some(0), "{usage}");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(input.unwrap_or(0) + output.unwrap_or(0))
    );
    text.to_owned()
}

/// `(event type, data)` of each event of a stream, `[DONE]` as type "[DONE]".
fn typed_events(body: &str) -> Vec<(String, Value)> {
    sse_data(body)
        .into_iter()
        .map(|data| match data.as_str() {
            "[DONE]" => ("[DONE]".to_owned(), Value::Null),
            _ => {
                let value: Value = serde_json::from_str(&data).expect("JSON event");
                (value["type"].as_str().unwrap_or("").to_owned(), value)
            }
        })
        .collect()
}

/// Checks a Responses event stream and returns the streamed text and the final object.
fn responses_stream(body: &str, with_done: bool) -> (String, Value) {
    let events = typed_events(body);
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    let tail = if with_done { 2 } else { 1 };
    assert_eq!(
        kinds[..2],
        ["response.created", "response.in_progress"],
        "{kinds:?}"
    );
    assert!(
        ["response.completed", "response.incomplete"].contains(&kinds[kinds.len() - tail]),
        "{kinds:?}"
    );
    assert_eq!(kinds.last() == Some(&"[DONE]"), with_done, "{kinds:?}");
    for kind in [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.output_item.done",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
    let sequence: Vec<u64> = events
        .iter()
        .filter_map(|(_, data)| data["sequence_number"].as_u64())
        .collect();
    assert_eq!(sequence, (0..sequence.len() as u64).collect::<Vec<_>>());
    assert!(
        body.contains("event: response.output_text.delta\n"),
        "named events"
    );
    let text: String = events
        .iter()
        .filter(|(kind, _)| kind == "response.output_text.delta")
        .filter_map(|(_, data)| data["delta"].as_str())
        .collect();
    (text, events[events.len() - tail].1["response"].clone())
}

#[tokio::test]
async fn gpt_oss_takes_responses_input_and_answers_a_response_object() {
    let expected = native_answer().await;
    assert!(expected.contains("Paris"), "{expected}");
    let (status, headers, body) = run(GPT_OSS, &responses_question()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(headers["x-kiln-model"], "smollm2-135m-instruct");
    let text = assert_response_object(&body["result"], GPT_OSS);
    assert_eq!(
        text, expected,
        "instructions + input are the same conversation"
    );
    assert_eq!(body["result"]["instructions"], SYSTEM);
    assert!(body["result"]["usage"]["neurons"].as_f64() > Some(0.0));

    // Items instead of text, and the stream: the same answer, as Responses events and [DONE].
    let mut items = responses_question();
    items["input"] = json!([{"type": "message", "role": "user",
                             "content": [{"type": "input_text", "text": QUESTION}]}]);
    items["stream"] = json!(true);
    let (status, headers, raw) = post_text(&run_url(GPT_OSS), &items).await;
    assert_eq!(status, 200, "{raw}");
    assert!(headers["content-type"]
        .to_str()
        .is_ok_and(|ct| ct.starts_with("text/event-stream")));
    let (streamed, last) = responses_stream(&raw, true);
    assert_eq!(streamed, expected);
    assert_eq!(assert_response_object(&last, GPT_OSS), expected);
}

#[tokio::test]
async fn openai_style_models_answer_chat_and_text_completions_on_ai_run() {
    let expected = native_answer().await;
    let (status, _, body) = run(GPT_OSS, &chat_question()).await;
    assert_eq!(status, 200, "{body}");
    let completion = &body["result"];
    assert_eq!(completion["object"], "chat.completion", "{body}");
    assert!(completion["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("chatcmpl-")));
    assert_eq!(completion["model"], GPT_OSS);
    assert_eq!(completion["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        expected.as_str()
    );
    let usage = &completion["usage"];
    assert!(usage["prompt_tokens"].as_u64() > Some(10), "{usage}");

    // Streamed: chunks, a usage chunk, Workers AI's usage trailer, [DONE] (spec §1.4).
    let mut streaming = chat_question();
    streaming["stream"] = json!(true);
    let (status, _, raw) = post_text(&run_url("@cf/zai-org/glm-4.7-flash"), &streaming).await;
    assert_eq!(status, 200, "{raw}");
    let events = sse_data(&raw);
    let (done, rest) = events.split_last().expect("events");
    assert_eq!(done, "[DONE]");
    let parsed: Vec<Value> = rest
        .iter()
        .map(|e| serde_json::from_str(e).expect("JSON"))
        .collect();
    let (trailer, rest) = parsed.split_last().expect("trailer");
    assert_eq!(trailer["response"], "");
    assert_eq!(
        trailer["usage"]["completion_tokens"],
        usage["completion_tokens"]
    );
    let (usage_chunk, chunks) = rest.split_last().expect("usage chunk");
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["total_tokens"], usage["total_tokens"]);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, expected);
    let finishes: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes.len(), 1);

    // A prompt gets a text_completion.
    let prompt = json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0});
    let (status, _, body) = run("@cf/qwen/qwen3-30b-a3b-fp8", &prompt).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["object"], "text_completion", "{body}");
    assert_eq!(body["result"]["usage"]["completion_tokens"], 4);
    assert!(body["result"]["choices"][0]["text"].is_string());
}

#[tokio::test]
async fn the_binding_gets_the_bare_objects() {
    let call = |inputs: Value| async move {
        let response = client()
            .post(url("/run?version=3"))
            .header("cf-consn-model-id", GPT_OSS)
            .json(&json!({"inputs": inputs, "options": {}}))
            .send()
            .await
            .expect("sent");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .to_owned();
        (
            response.status().as_u16(),
            content_type,
            response.text().await.expect("body"),
        )
    };
    let (status, content_type, body) = call(responses_question()).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/json"),
        "{body}"
    );
    let object: Value = serde_json::from_str(&body).expect("JSON");
    let text = assert_response_object(&object, GPT_OSS);

    let mut streaming = responses_question();
    streaming["stream"] = json!(true);
    let (status, content_type, body) = call(streaming).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    assert_eq!(responses_stream(&body, true).0, text);

    let (status, _, body) = call(chat_question()).await;
    assert_eq!(status, 200, "{body}");
    let completion: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(completion["object"], "chat.completion");

    let (status, _, body) = call(json!({"input": 5})).await;
    assert_eq!(status, 400, "{body}");
    let error: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(error["internalCode"], 5006);
}

#[tokio::test]
async fn v1_responses_serves_the_responses_api_on_every_base() {
    let bases = [
        url("/v1"),
        url(&format!("/client/v4/accounts/{ACCOUNT}/ai/v1")),
        url(&format!("/accounts/{ACCOUNT}/ai/v1")),
    ];
    let mut request = responses_question();
    request["model"] = json!(GPT_OSS);
    let mut texts = Vec::new();
    for base in &bases {
        let (status, headers, body) = post_json(&format!("{base}/responses"), &request).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-kiln-model"], "smollm2-135m-instruct");
        assert!(body.get("success").is_none(), "no envelope: {body}");
        texts.push(assert_response_object(&body, GPT_OSS));
    }
    assert!(texts.iter().all(|t| t == &texts[0]), "{texts:?}");
    assert!(texts[0].contains("Paris"), "{texts:?}");

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    let (status, _, raw) = post_text(&format!("{}/responses", bases[0]), &streaming).await;
    assert_eq!(status, 200, "{raw}");
    let (streamed, last) = responses_stream(&raw, false);
    assert_eq!(streamed, texts[0]);
    assert_eq!(assert_response_object(&last, GPT_OSS), texts[0]);

    // A local model named directly is served too.
    let local =
        json!({"model": "smollm2-135m-instruct", "input": "Say hi", "max_output_tokens": 3});
    let (status, _, body) = post_json(&format!("{}/responses", bases[0]), &local).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "incomplete", "{body}");
    assert_eq!(body["incomplete_details"]["reason"], "max_output_tokens");
}

#[tokio::test]
async fn unsupported_models_and_fields_get_clear_400s() {
    let responses = url("/v1/responses");
    let cases = [
        (json!({"model": LLAMA, "input": "Hi"}), 400, "Responses API"),
        (json!({"model": "gpt-4o", "input": "Hi"}), 404, "gpt-4o"),
        (json!({"model": GPT_OSS}), 400, "'input' is required"),
        (json!({"model": GPT_OSS, "input": 5}), 400, "'input'"),
        (
            json!({"model": GPT_OSS, "input": "Hi", "previous_response_id": "resp_1"}),
            400,
            "previous_response_id",
        ),
        (
            json!({"model": GPT_OSS, "input": "Hi", "tools": [{"type": "web_search"}]}),
            400,
            "tools[0].type",
        ),
        (
            json!({"model": GPT_OSS, "input": "Hi", "max_output_tokens": "many"}),
            400,
            "max_output_tokens",
        ),
        (
            json!({"model": GPT_OSS, "input": "Hi", "stream": "yes"}),
            400,
            "stream",
        ),
    ];
    for (body, status, words) in cases {
        let (got, _, answer) = post_json(&responses, &body).await;
        assert_eq!(got, status, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().expect("OpenAI error");
        assert!(message.contains(words), "{body}: {message}");
    }

    // On /ai/run the same mistakes get the Workers AI envelope.
    let cases = [
        (json!({"input": 5}), "/input"),
        (
            json!({"input": "Hi", "messages": [{"role": "user", "content": "Hi"}]}),
            "messages",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
            "input_image",
        ),
        (
            json!({"input": "Hi", "reasoning": {"effort": "extreme"}}),
            "effort",
        ),
        (
            json!({"input": "Hi", "max_output_tokens": 0}),
            "max_output_tokens",
        ),
    ];
    for (body, words) in cases {
        let (status, _, answer) = run(GPT_OSS, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let (code, message) = assert_error_envelope(&answer);
        assert_eq!(code, 5006, "{answer}");
        assert!(message.contains(words), "{body}: {message}");
    }
    // Classic models do not take Responses input.
    let (status, _, answer) = run(LLAMA, &json!({"input": "Hi"})).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(assert_error_envelope(&answer).0, 5006);
}
