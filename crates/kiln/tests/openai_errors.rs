//! Every bad input on the OpenAI routes gets a 4xx in OpenAI's error shape that names the field;
//! the native routes keep the Workers AI envelope.

mod common;

use common::*;
use serde_json::{json, Value};

const LLAMA: &str = "@cf/meta/llama-3.1-8b-instruct";
const BGE: &str = "@cf/baai/bge-base-en-v1.5";

fn chat(extra: Value) -> Value {
    let mut body =
        json!({"model": LLAMA, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

/// Asserts OpenAI's `{"error":{message,type,param,code}}` and returns the error object.
fn assert_openai_error(body: &Value) -> &Value {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    let fields: Vec<&String> = error.as_object().unwrap().keys().collect();
    for key in ["message", "type", "param", "code"] {
        assert!(error.get(key).is_some(), "missing {key}: {body}");
    }
    assert_eq!(fields.len(), 4, "{body}");
    assert!(
        body.get("success").is_none(),
        "no Workers AI envelope: {body}"
    );
    error
}

async fn post_raw(path: &str, body: &str) -> (u16, Value) {
    let response = client()
        .post(url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON error body: {text}"));
    (status, body)
}

#[tokio::test]
async fn bad_chat_inputs_are_400_naming_the_field() {
    let cases = [
        (chat(json!({"messages": "Hi"})), "messages"),
        (chat(json!({"messages": []})), "messages"),
        (
            chat(json!({"messages": [{"content": "Hi"}]})),
            "messages[0].role",
        ),
        (
            chat(json!({"messages": [{"role": "robot", "content": "Hi"}]})),
            "messages[0].role",
        ),
        (
            chat(json!({"messages": [{"role": "user", "content": 5}]})),
            "messages[0].content",
        ),
        (
            chat(
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            ),
            "messages[0].content",
        ),
        (chat(json!({"temperature": "hot"})), "temperature"),
        (chat(json!({"temperature": 3})), "temperature"),
        (chat(json!({"top_p": 1.5})), "top_p"),
        (chat(json!({"max_tokens": -1})), "max_tokens"),
        (chat(json!({"max_tokens": 1.5})), "max_tokens"),
        (
            chat(json!({"max_completion_tokens": 0})),
            "max_completion_tokens",
        ),
        (chat(json!({"seed": "one"})), "seed"),
        (chat(json!({"stop": 5})), "stop"),
        (chat(json!({"stop": ["a", "b", "c", "d", "e"]})), "stop"),
        (chat(json!({"n": 0})), "n"),
        (chat(json!({"n": 2, "stream": true})), "n"),
        (chat(json!({"stream": "yes"})), "stream"),
        (
            chat(json!({"stream_options": {"include_usage": true}})),
            "stream_options",
        ),
        (chat(json!({"presence_penalty": 5})), "presence_penalty"),
        (chat(json!({"logprobs": true})), "logprobs"),
        (chat(json!({"top_logprobs": 3})), "top_logprobs"),
        (
            chat(json!({"tools": [{"type": "function", "function": {"name": "f"}}]})),
            "tools",
        ),
        (
            chat(json!({"response_format": {"type": "yaml"}})),
            "response_format",
        ),
        (
            chat(json!({"response_format": {"type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": 5}}}})),
            "response_format",
        ),
        (chat(json!({"model": 5})), "model"),
        (chat(json!({"model": BGE})), "model"),
    ];
    for (body, param) in cases {
        let (status, answer) = post_raw("/v1/chat/completions", &body.to_string()).await;
        assert_eq!(status, 400, "{body} → {answer}");
        let error = assert_openai_error(&answer);
        assert_eq!(error["type"], "invalid_request_error", "{answer}");
        assert_eq!(error["param"], param, "{body} → {answer}");
        let message = error["message"].as_str().unwrap();
        let field = param.split(['[', '.']).next().unwrap();
        assert!(
            message.contains(field),
            "message should name {field}: {message}"
        );
    }
}

#[tokio::test]
async fn missing_model_field_and_unknown_model() {
    let (status, body) = post_raw(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}]}).to_string(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(assert_openai_error(&body)["param"], "model");

    for path in [
        "/v1/chat/completions".to_owned(),
        format!("/client/v4/accounts/{ACCOUNT}/ai/v1/completions"),
        "/v1/embeddings".to_owned(),
    ] {
        let request = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "prompt": "Hi", "input": "Hi"});
        let (status, body) = post_raw(&path, &request.to_string()).await;
        assert_eq!(status, 404, "{path}: {body}");
        let error = assert_openai_error(&body);
        assert_eq!(error["code"], "model_not_found");
        assert_eq!(error["type"], "invalid_request_error");
        assert!(error["message"].as_str().unwrap().contains("gpt-4o"));
    }
}

#[tokio::test]
async fn broken_bodies_are_400() {
    for (body, what) in [
        ("{\"model\": ", "invalid JSON"),
        ("", "empty body"),
        ("[1, 2]", "not an object"),
    ] {
        let (status, answer) = post_raw("/v1/chat/completions", body).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert_openai_error(&answer);
    }
}

#[tokio::test]
async fn bad_completion_and_embedding_inputs_are_400() {
    let cases = [
        ("/v1/completions", json!({"model": LLAMA}), "prompt"),
        (
            "/v1/completions",
            json!({"model": LLAMA, "prompt": 5}),
            "prompt",
        ),
        (
            "/v1/completions",
            json!({"model": LLAMA, "prompt": ["a", "b"]}),
            "prompt",
        ),
        (
            "/v1/completions",
            json!({"model": LLAMA, "prompt": [1, 2]}),
            "prompt",
        ),
        (
            "/v1/completions",
            json!({"model": LLAMA, "prompt": "a", "echo": true}),
            "echo",
        ),
        (
            "/v1/completions",
            json!({"model": LLAMA, "prompt": "a", "logprobs": 2}),
            "logprobs",
        ),
        (
            "/v1/completions",
            json!({"model": BGE, "prompt": "a"}),
            "model",
        ),
        ("/v1/embeddings", json!({"model": BGE}), "input"),
        (
            "/v1/embeddings",
            json!({"model": BGE, "input": []}),
            "input",
        ),
        (
            "/v1/embeddings",
            json!({"model": BGE, "input": ""}),
            "input",
        ),
        (
            "/v1/embeddings",
            json!({"model": BGE, "input": {"text": "a"}}),
            "input",
        ),
        (
            "/v1/embeddings",
            json!({"model": BGE, "input": ["a", 5]}),
            "input[1]",
        ),
        (
            "/v1/embeddings",
            json!({"model": BGE, "input": [1, -2]}),
            "input",
        ),
        (
            "/v1/embeddings",
            json!({"model": BGE, "input": "a", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (
            "/v1/embeddings",
            json!({"model": BGE, "input": "a", "dimensions": "384"}),
            "dimensions",
        ),
        (
            "/v1/embeddings",
            json!({"model": LLAMA, "input": "a"}),
            "model",
        ),
    ];
    for (path, body, param) in cases {
        let (status, answer) = post_raw(path, &body.to_string()).await;
        assert_eq!(status, 400, "{path} {body} → {answer}");
        let error = assert_openai_error(&answer);
        assert_eq!(error["param"], param, "{path} {body} → {answer}");
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_openai_shape() {
    let response = client().get(url("/v1/nothing-here")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_openai_error(&response.json().await.unwrap());
    let response = client()
        .get(url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_openai_error(&response.json().await.unwrap());
}

#[tokio::test]
async fn oversized_body_is_413_in_openai_shape() {
    use tokio::io::AsyncWriteExt;
    let length = 20 * 1024 * 1024;
    let mut socket = tokio::net::TcpStream::connect(server()).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: kiln\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    // The server answers from the declared length, before the body arrives.
    let text = read_raw_response(&mut socket).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let error = assert_openai_error(&body);
    assert_eq!(error["code"], "request_too_large");
}

#[tokio::test]
async fn native_route_keeps_the_workers_ai_envelope() {
    let (status, _, body) = run(LLAMA, &json!({"prompt": 5})).await;
    assert_eq!(status, 400);
    let (code, _) = assert_error_envelope(&body);
    assert_eq!(code, 5006);
}
