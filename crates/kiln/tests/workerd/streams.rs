//! Stream inputs through the genuine AI binding: a Worker passes audio as `{body: ReadableStream,
//! contentType}`, which the binding sends as the raw body of `/run?userInputs=…` (spec §2.3).
//! Whisper's transcript is the one REST gives for the same file.

use base64::Engine;

use super::*;

/// Kiln's own voice saying `text`, as 16 kHz 16-bit WAV.
async fn speech(text: &str) -> Vec<u8> {
    let response = client()
        .post(run_url("@cf/deepgram/aura-1"))
        .bearer_auth("sk-test")
        .json(
            &json!({"text": text, "encoding": "linear16", "container": "wav",
                      "sample_rate": 16000}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    response.bytes().await.expect("audio").to_vec()
}

/// `env.AI.run(model, {...inputs, audio: {body: <stream of wav>, contentType}})`.
async fn streamed(workerd: &Workerd, model: &str, wav: &[u8], inputs: Value) -> Value {
    let file = base64::engine::general_purpose::STANDARD.encode(wav);
    let seen = workerd
        .ok(
            "/run/stream",
            json!({"model": model, "field": "audio", "file": file,
                   "contentType": "audio/wav", "inputs": inputs}),
        )
        .await;
    seen["result"].clone()
}

#[tokio::test]
async fn audio_streams_reach_whisper_through_the_binding() {
    let kiln = kiln();
    let workerd = Workerd::start(kiln).await;
    let wav = speech("The quick brown fox jumps over the lazy dog.").await;

    // The stream alone: the raw body, as REST's `--data-binary` upload.
    let model = "@cf/openai/whisper";
    let seen = streamed(&workerd, model, &wav, json!({})).await;
    let response = client()
        .post(run_url(model))
        .bearer_auth("sk-test")
        .body(wav.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let rest: Value = response.json().await.expect("JSON");
    let text = seen["text"]
        .as_str()
        .unwrap_or_else(|| panic!("text: {seen}"));
    assert!(text.to_lowercase().contains("fox"), "{text}");
    assert_eq!(numbers_as_f64(&seen), numbers_as_f64(&rest["result"]));

    // With other inputs (in `?userInputs=`): the file joins them as base64.
    let model = "@cf/openai/whisper-large-v3-turbo";
    let seen = streamed(&workerd, model, &wav, json!({"language": "en"})).await;
    let audio = base64::engine::general_purpose::STANDARD.encode(&wav);
    let rest = rest_result(model, &json!({"audio": audio, "language": "en"})).await;
    assert_eq!(seen["text"], rest["text"], "{seen}");
    assert_eq!(seen["transcription_info"]["language"], "en", "{seen}");

    // A bad other input: the REST error, as the binding throws it.
    let body = json!({"model": model, "field": "audio", "file": "AAAA",
                      "contentType": "audio/wav", "inputs": {"task": "dance"}});
    let (name, message) = workerd.thrown("/run/stream", body).await;
    assert_eq!(name, "InferenceUpstreamError");
    assert!(message.starts_with("5006: "), "{message}");
    // A model that takes no file: refused, naming it.
    let body = json!({"model": "@cf/meta/llama-3.1-8b-instruct", "field": "prompt",
                      "file": "AAAA", "contentType": "text/plain", "inputs": {"max_tokens": 4}});
    let (_, message) = workerd.thrown("/run/stream", body).await;
    assert!(
        message.contains("takes no audio or image input"),
        "{message}"
    );
}
