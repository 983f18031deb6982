//! Bad input, limits and routing errors: right status, right code, a message naming the
//! problem, and the server keeps serving.

mod common;

use common::*;
use serde_json::json;

const LLAMA: &str = "@cf/meta/llama-3.1-8b-instruct";

async fn expect_error(model: &str, body: serde_json::Value, status: u16, code: u64, needle: &str) {
    let (got_status, _, response) = run(model, &body).await;
    assert_eq!(got_status, status, "{body} → {response}");
    let (got_code, message) = assert_error_envelope(&response);
    assert_eq!(got_code, code, "{body} → {message}");
    assert!(
        message.contains(needle),
        "{body}: message {message:?} should mention {needle:?}"
    );
}

#[tokio::test]
async fn schema_violations_name_the_field() {
    expect_error(LLAMA, json!({}), 400, 5006, "prompt").await;
    expect_error(LLAMA, json!({}), 400, 5006, "messages").await;
    expect_error(LLAMA, json!({"prompt": ""}), 400, 5006, "/prompt").await;
    expect_error(LLAMA, json!({"prompt": 5}), 400, 5006, "/prompt").await;
    expect_error(LLAMA, json!({"messages": "x"}), 400, 5006, "/messages").await;
    expect_error(
        LLAMA,
        json!({"prompt": "hi", "max_tokens": -1}),
        400,
        5006,
        "/max_tokens",
    )
    .await;
    expect_error(
        LLAMA,
        json!({"prompt": "hi", "temperature": 99}),
        400,
        5006,
        "/temperature",
    )
    .await;
    expect_error(
        "@cf/baai/bge-small-en-v1.5",
        json!({"text": ""}),
        400,
        5006,
        "/text",
    )
    .await;
    let too_many: Vec<String> = (0..101).map(|i| format!("text {i}")).collect();
    expect_error(
        "@cf/baai/bge-small-en-v1.5",
        json!({"text": too_many}),
        400,
        5006,
        "/text",
    )
    .await;
    expect_error(
        "@cf/baai/bge-small-en-v1.5",
        json!({"text": "x", "pooling": "max"}),
        400,
        5006,
        "/pooling",
    )
    .await;
}

#[tokio::test]
async fn invalid_json_is_bad_input() {
    let response = client()
        .post(run_url(LLAMA))
        .header("content-type", "application/json")
        .body("{\"prompt\": ")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.expect("JSON envelope");
    let (code, message) = assert_error_envelope(&body);
    assert_eq!(code, 5006);
    assert!(message.contains("JSON"), "{message}");
}

/// Sends a request over a raw socket and returns the status line and body. The server may answer
/// before it has read the whole body (that is the point of an early 413), so write errors after
/// the headers are expected and ignored.
async fn raw_post(path: &str, headers: &str, body_len: usize) -> (String, serde_json::Value) {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(server())
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: kiln\r\ncontent-type: application/json\r\n{headers}\r\n"
    );
    socket
        .write_all(head.as_bytes())
        .await
        .expect("write headers");
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0;
    while sent < body_len {
        if socket.write_all(&chunk).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let text = read_raw_response(&mut socket).await;
    let status_line = text.lines().next().unwrap_or_default().to_owned();
    let json_start = text.find('{').expect("a JSON body");
    let json_end = text.rfind('}').expect("a JSON body") + 1;
    (
        status_line,
        serde_json::from_str(&text[json_start..json_end]).expect("JSON envelope"),
    )
}

#[tokio::test]
async fn oversized_body_is_413_before_it_is_read() {
    let path = format!("/client/v4/accounts/{ACCOUNT}/ai/run/{LLAMA}");
    let length = 20 * 1024 * 1024;
    let (status, body) = raw_post(
        &path,
        &format!("content-length: {length}\r\nconnection: close\r\n"),
        length,
    )
    .await;
    assert!(status.contains("413"), "{status}");
    let (code, message) = assert_error_envelope(&body);
    assert_eq!(code, 3006);
    assert!(message.contains("too large"), "{message}");
}

#[tokio::test]
async fn oversized_chunked_body_is_413() {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(server())
        .await
        .expect("connect");
    let head = format!(
        "POST /client/v4/accounts/{ACCOUNT}/ai/run/{LLAMA} HTTP/1.1\r\nhost: kiln\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    socket
        .write_all(head.as_bytes())
        .await
        .expect("write headers");
    let chunk = vec![b'a'; 1024 * 1024];
    for _ in 0..20 {
        let frame = format!("{:x}\r\n", chunk.len());
        if socket.write_all(frame.as_bytes()).await.is_err()
            || socket.write_all(&chunk).await.is_err()
            || socket.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let text = read_raw_response(&mut socket).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("3006"), "{text}");
}

#[tokio::test]
async fn unknown_model_is_5007() {
    expect_error(
        "@cf/nobody/no-such-model",
        json!({"prompt": "hi"}),
        400,
        5007,
        "@cf/nobody/no-such-model",
    )
    .await;
}

/// A catalog id of a task no engine of Kiln's runs says so, rather than suggesting an install
/// that cannot help.
#[tokio::test]
async fn catalog_model_of_a_task_kiln_cannot_run_is_5007_and_says_so() {
    for (model, body, task) in [
        (
            "@cf/stabilityai/stable-diffusion-xl-base-1.0",
            json!({"prompt": "a kiln"}),
            "Text-to-Image",
        ),
        // Translation runs on m2m100's schema only (kiln-engine-seq2seq), not IndicTrans2's.
        (
            "@cf/ai4bharat/indictrans2-en-indic-1B",
            json!({"text": "a kiln", "target_language": "hin_Deva"}),
            "Translation",
        ),
    ] {
        expect_error(
            model,
            body,
            400,
            5007,
            &format!("no engine for {task} models like it"),
        )
        .await;
    }
}

/// An alias names the one model that serves an id: when it is missing the id is refused with
/// what to pull, never answered by the task's default model (other dimensions, other shapes).
#[tokio::test]
async fn an_id_aliased_to_a_missing_model_names_it_and_does_not_fall_back() {
    let mut config = test_config();
    config.aliases.insert(
        "@cf/baai/bge-large-en-v1.5".into(),
        "bge-large-not-installed".into(),
    );
    let addr = spawn_server(config);
    let url =
        format!("http://{addr}/client/v4/accounts/{ACCOUNT}/ai/run/@cf/baai/bge-large-en-v1.5");
    let (status, _, response) = post_json(&url, &json!({"text": "a kiln"})).await;
    assert_eq!(status, 400, "{response}");
    let (code, message) = assert_error_envelope(&response);
    assert_eq!(code, 5007, "{message}");
    assert!(
        message.contains("kiln models pull bge-large-not-installed"),
        "{message}"
    );
}

#[tokio::test]
async fn unknown_route_is_cloudflare_404() {
    let response = client()
        .get(url("/client/v4/nothing/here"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.expect("JSON envelope");
    assert_eq!(body["errors"][0]["code"], 7003);
    assert_eq!(body["errors"][1]["code"], 7000);
    assert_eq!(body["success"], false);
}

#[tokio::test]
async fn server_keeps_serving_after_bad_input() {
    for bad in [
        json!({"prompt": 5}),
        json!([1, 2]),
        json!(null),
        json!("text"),
    ] {
        let (status, _, _) = run(LLAMA, &bad).await;
        assert_eq!(status, 400);
    }
    let (status, _, body) = run(LLAMA, &json!({"prompt": "Hi", "max_tokens": 2})).await;
    assert_eq!(status, 200, "{body}");
}
