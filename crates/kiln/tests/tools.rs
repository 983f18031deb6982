//! Tool calling on the real Qwen2.5-Coder-0.5B (Hermes `<tool_call>` syntax): native and
//! OpenAI shapes, streamed and not, every `tool_choice`, and the tool result fed back.

mod common;

use common::*;
use serde_json::{json, Value};

const QWEN: &str = "qwen2.5-coder-0.5b-instruct";

fn weather_tool_legacy() -> Value {
    json!({"name": "get_weather", "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "The city name"}}, "required": ["city"]}})
}

fn weather_tool_openai() -> Value {
    json!({"type": "function", "function": weather_tool_legacy()})
}

fn time_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_time", "description": "Current time in a timezone",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}}})
}

fn question() -> Value {
    json!([{"role": "user", "content": "What is the weather in Paris?"}])
}

async fn native(body: Value) -> Value {
    kiln_store::ensure_for_tests(QWEN);
    let (status, _, body) = run(QWEN, &body).await;
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

#[tokio::test]
async fn native_tool_call_in_both_tool_forms() {
    for tool in [weather_tool_legacy(), weather_tool_openai()] {
        let result =
            native(json!({"messages": question(), "tools": [tool], "temperature": 0})).await;
        assert_eq!(
            result["tool_calls"],
            json!([{"name": "get_weather", "arguments": {"city": "Paris"}}]),
            "{result}"
        );
    }
}

#[tokio::test]
async fn the_tool_result_fed_back_is_used_in_the_answer() {
    let messages = json!([
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"role": "tool", "content": "{\"city\": \"Paris\", \"temperature_c\": 23, \"condition\": \"sunny\"}"}
    ]);
    // Offered the tool again, a 0.5B model calls it again (echoing the result as arguments);
    // `tool_choice: "none"` asks for the answer, with the call and its result still in the
    // conversation.
    let result = native(
        json!({"messages": messages, "tools": [weather_tool_legacy()],
        "tool_choice": "none", "temperature": 0, "max_tokens": 80}),
    )
    .await;
    assert_eq!(result["tool_calls"], json!([]), "{result}");
    let answer = result["response"].as_str().expect("text answer");
    assert!(
        answer.contains("23") || answer.to_lowercase().contains("sunny"),
        "the answer ignores the tool result: {answer:?}"
    );
}

#[tokio::test]
async fn tool_choice_none_required_and_named() {
    let hello = json!([{"role": "user", "content": "Say hello to me."}]);
    let tools = json!([weather_tool_openai(), time_tool()]);
    let none = native(
        json!({"messages": question(), "tools": tools, "tool_choice": "none",
        "temperature": 0, "max_tokens": 30}),
    )
    .await;
    assert_eq!(none["tool_calls"], json!([]), "{none}");
    assert!(
        !none["response"].as_str().unwrap_or_default().is_empty(),
        "{none}"
    );

    // Required: a call even where the model would rather talk.
    let required = native(
        json!({"messages": hello, "tools": tools, "tool_choice": "required",
        "temperature": 0, "max_tokens": 60}),
    )
    .await;
    let calls = required["tool_calls"].as_array().expect("calls");
    assert!(!calls.is_empty(), "{required}");
    for call in calls {
        assert!(["get_weather", "get_time"].contains(&call["name"].as_str().unwrap_or_default()));
        assert!(call["arguments"].is_object(), "{call}");
    }

    let named = native(
        json!({"messages": question(), "tools": tools, "max_tokens": 60,
        "tool_choice": {"type": "function", "function": {"name": "get_time"}}, "temperature": 0}),
    )
    .await;
    let calls = named["tool_calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 1, "{named}");
    assert_eq!(calls[0]["name"], "get_time");
    assert!(calls[0]["arguments"]["timezone"].is_string(), "{named}");
}

#[tokio::test]
async fn native_stream_sends_the_calls_as_one_event() {
    kiln_store::ensure_for_tests(QWEN);
    let body = json!({"messages": question(), "tools": [weather_tool_legacy()], "temperature": 0,
        "stream": true});
    let (status, _, text) = post_text(&run_url(QWEN), &body).await;
    assert_eq!(status, 200, "{text}");
    let events: Vec<Value> = sse_data(&text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect();
    let streamed: String = events
        .iter()
        .filter_map(|e| e["response"].as_str())
        .collect();
    assert!(
        !streamed.contains("<tool_call>"),
        "call syntax leaked: {streamed:?}"
    );
    let calls: Vec<&Value> = events.iter().filter_map(|e| e.get("tool_calls")).collect();
    assert_eq!(
        calls,
        [&json!([{"name": "get_weather", "arguments": {"city": "Paris"}}])]
    );
    assert!(
        events.last().is_some_and(|e| e.get("usage").is_some()),
        "{text}"
    );
}

#[tokio::test]
async fn openai_tool_calls_streamed_and_not() {
    kiln_store::ensure_for_tests(QWEN);
    let request = json!({"model": QWEN, "messages": question(), "tools": [weather_tool_openai()],
        "temperature": 0});
    let (status, _, body) = post_json(&url("/v1/chat/completions"), &request).await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    let call = &choice["message"]["tool_calls"][0];
    assert!(
        call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_")),
        "{call}"
    );
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("string"))
            .expect("JSON");
    assert_eq!(arguments, json!({"city": "Paris"}));

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    let (status, _, text) = post_text(&url("/v1/chat/completions"), &streaming).await;
    assert_eq!(status, 200, "{text}");
    let chunks: Vec<Value> = sse_data(&text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk JSON"))
        .collect();
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
    let call_deltas: Vec<&Value> = deltas.iter().filter_map(|d| d.get("tool_calls")).collect();
    assert_eq!(call_deltas.len(), 1, "{text}");
    assert_eq!(call_deltas[0][0]["index"], 0);
    assert_eq!(call_deltas[0][0]["function"]["name"], "get_weather");
    assert!(deltas.iter().all(|d| !d["content"]
        .as_str()
        .unwrap_or_default()
        .contains("<tool_call>")));
    let last = chunks.last().expect("chunks");
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls", "{text}");
}

#[tokio::test]
async fn models_without_tool_support_are_refused() {
    // The catalog says llama-3.1-8b-instruct has no function calling.
    let body = json!({"messages": question(), "tools": [weather_tool_legacy()]});
    let (status, _, answer) = run("@cf/meta/llama-3.1-8b-instruct", &body).await;
    assert_eq!(status, 400, "{answer}");
    let (code, message) = assert_error_envelope(&answer);
    assert_eq!(code, 5006);
    assert!(message.contains("function calling"), "{message}");
    // SmolLM2's template has no tool syntax.
    let (status, _, answer) = run("smollm2-135m-instruct", &body).await;
    assert_eq!(status, 400, "{answer}");
    let (_, message) = assert_error_envelope(&answer);
    assert!(message.contains("no tool support"), "{message}");
}
