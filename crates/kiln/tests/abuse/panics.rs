//! A panic inside any engine costs one 500 and nothing else: the server's test hook makes each
//! worker kind's engine panic on a marked request, and the next request to the same model is
//! served (issue #15).

use serde_json::json;

use crate::*;

/// Sends `body` to `model` on the panicking server: the status and the parsed body.
async fn post_to_panicking(model: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let response = crate::common::client()
        .post(format!(
            "{}/client/v4/accounts/{}/ai/run/{model}",
            panic_target().base,
            crate::common::ACCOUNT
        ))
        .json(body)
        .timeout(std::time::Duration::from_secs(120))
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// The marked request gets 500 / 5000 in the envelope; then the model serves `normal`, twice.
async fn one_panic_costs_one_request(
    model: &str,
    poisoned: serde_json::Value,
    normal: &serde_json::Value,
) {
    let (status, body) = post_to_panicking(model, &poisoned).await;
    assert_eq!(status, 500, "{model}: {body}");
    let (code, message) = envelope_error(&body);
    assert_eq!(code, 5000, "{body}");
    assert!(message.contains("failed while serving"), "{message}");
    // The rebuilt engine serves, and is as good the second time as the first.
    for _ in 0..2 {
        assert_serves(panic_target(), model, normal).await;
    }
    assert!(
        std::path::Path::new(&format!("/proc/{}", panic_target().pid)).exists(),
        "the same process serves"
    );
}

#[tokio::test]
async fn a_panic_in_a_forward_pass_costs_one_request() {
    let _serial = crate::one_attack_at_a_time().await;
    one_panic_costs_one_request(
        "@cf/meta/llama-3.1-8b-instruct",
        json!({"prompt": format!("Repeat {PANIC_MARKER}"), "max_tokens": 4}),
        &normal_generation(),
    )
    .await;
}

#[tokio::test]
async fn a_panic_while_embedding_costs_one_request() {
    let _serial = crate::one_attack_at_a_time().await;
    one_panic_costs_one_request(
        "@cf/baai/bge-base-en-v1.5",
        json!({"text": [format!("text {PANIC_MARKER}")]}),
        &normal_embedding(),
    )
    .await;
}

#[tokio::test]
async fn a_panic_while_speaking_costs_one_request() {
    let _serial = crate::one_attack_at_a_time().await;
    one_panic_costs_one_request(
        "@cf/deepgram/aura-1",
        json!({"text": format!("Say {PANIC_MARKER}"), "encoding": "linear16", "container": "wav"}),
        &normal_speech(),
    )
    .await;
}

#[tokio::test]
async fn a_panic_while_classifying_costs_one_request() {
    let _serial = crate::one_attack_at_a_time().await;
    let mut image = photo("chelsea.png");
    image.extend_from_slice(PANIC_MARKER.as_bytes());
    one_panic_costs_one_request(
        "@cf/microsoft/resnet-50",
        json!({"image": image}),
        &normal_image(),
    )
    .await;
}

#[tokio::test]
async fn a_panic_while_transcribing_costs_one_request() {
    let _serial = crate::one_attack_at_a_time().await;
    let normal = normal_transcription().await;
    let mut audio = spoken_wav("Hello.").await;
    audio.extend_from_slice(PANIC_MARKER.as_bytes());
    one_panic_costs_one_request(
        "@cf/openai/whisper-tiny-en",
        json!({"audio": audio}),
        &normal,
    )
    .await;
}
