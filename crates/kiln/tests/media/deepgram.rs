//! `@cf/deepgram/nova-3` on Kiln's Whisper, in Deepgram's shape: REST (binary body, query
//! options, raw PCM, JSON `{audio: {body, contentType}}`) and the Worker binding's `/run`.

use base64::Engine;
use serde_json::{json, Value};

use super::speech::{speak, wer, SENTENCES};
use super::*;

const NOVA: &str = "@cf/deepgram/nova-3";

async fn nova_binary(query: &str, audio: Vec<u8>) -> (u16, Value) {
    kiln_store::ensure_for_tests("whisper-base");
    let response = client()
        .post(format!("{}{query}", media_run_url(NOVA)))
        .bearer_auth("sk-test")
        .header("content-type", "audio/wav")
        .body(audio)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// Checks Deepgram's shape and returns the first alternative.
fn alternative(result: &Value) -> &Value {
    let metadata = &result["metadata"];
    assert_eq!(
        metadata["request_id"].as_str().map(str::len),
        Some(36),
        "{result}"
    );
    assert!(metadata["duration"].as_f64() > Some(1.0), "{result}");
    assert_eq!(metadata["channels"], 1);
    let model = metadata["models"][0].as_str().expect("a model id");
    assert_eq!(metadata["model_info"][model]["arch"], "nova-3", "{result}");
    let alternative = &result["results"]["channels"][0]["alternatives"][0];
    let words = alternative["words"].as_array().expect("words");
    assert!(!words.is_empty(), "{result}");
    let mut last_start = 0.0;
    for word in words {
        let (start, end) = (
            word["start"].as_f64().unwrap(),
            word["end"].as_f64().unwrap(),
        );
        assert!(last_start <= start && start <= end, "{word}");
        last_start = start;
        let confidence = word["confidence"].as_f64().expect("confidence");
        assert!(confidence > 0.0 && confidence <= 1.0, "{word}");
        let text = word["word"].as_str().expect("word");
        assert_eq!(text, text.to_lowercase(), "{word}");
        assert!(
            text.chars().all(|c| c.is_alphanumeric() || c == '\''),
            "{word}"
        );
    }
    let confidence = alternative["confidence"].as_f64().expect("confidence");
    assert!(confidence > 0.5 && confidence <= 1.0, "{result}");
    alternative
}

#[tokio::test]
async fn nova3_rest_answers_deepgrams_shape() {
    let sentence = SENTENCES[0];
    let wav = speak(sentence).await;

    // Binary body, options in the query.
    let (status, body) = nova_binary("?punctuate=true&language=en-US", wav.clone()).await;
    assert_eq!(status, 200, "{body}");
    let result = &body["result"];
    let best = alternative(result);
    let transcript = best["transcript"].as_str().expect("transcript");
    assert!(wer(sentence, transcript) <= 0.15, "{transcript}");
    assert!(
        transcript.ends_with('.') && transcript.starts_with('T'),
        "{transcript}"
    );
    assert!(best["words"][0]["punctuated_word"].is_string(), "{result}");
    // The language was given, so nothing was detected.
    assert!(result["results"]["channels"][0]
        .get("detected_language")
        .is_none());

    // No punctuation asked for: Deepgram's lower-case words, no `punctuated_word`.
    let (status, body) = nova_binary("", wav.clone()).await;
    assert_eq!(status, 200, "{body}");
    let best = alternative(&body["result"]);
    let plain = best["transcript"].as_str().unwrap();
    assert_eq!(plain, plain.to_lowercase(), "{plain}");
    assert!(!plain.contains(['.', ',']), "{plain}");
    assert!(best["words"][0].get("punctuated_word").is_none(), "{best}");
    assert_eq!(
        body["result"]["results"]["channels"][0]["detected_language"],
        "en"
    );

    // Raw 16-bit PCM, described by the query.
    let pcm = wav[44..].to_vec();
    let (status, body) = nova_binary("?encoding=linear16&sample_rate=16000", pcm.clone()).await;
    assert_eq!(status, 200, "{body}");
    let raw = alternative(&body["result"])["transcript"].as_str().unwrap();
    assert!(wer(sentence, raw) <= 0.15, "{raw}");
    let (status, body) = nova_binary("?encoding=linear16", pcm).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        assert_error_envelope(&body).1.contains("sample_rate"),
        "{body}"
    );
    let (status, body) = nova_binary("?punctuate=perhaps", wav).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(assert_error_envelope(&body).0, 5006);
}

#[tokio::test]
async fn nova3_json_input_with_paragraphs_and_utterances() {
    kiln_store::ensure_for_tests("whisper-base");
    let wav = speak(SENTENCES[3]).await;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&wav);
    let (status, _, body) = run(
        NOVA,
        &json!({"audio": {"body": encoded, "contentType": "audio/wav"},
                "smart_format": true, "paragraphs": "true", "utterances": true,
                "diarize": true, "language": "multi"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let result = &body["result"];
    let best = alternative(result);
    assert!(
        wer(SENTENCES[3], best["transcript"].as_str().unwrap()) <= 0.15,
        "{best}"
    );
    assert_eq!(best["words"][0]["speaker"], 0, "{best}");
    let paragraphs = &best["paragraphs"];
    assert!(
        paragraphs["transcript"]
            .as_str()
            .is_some_and(|t| t.starts_with('\n')),
        "{best}"
    );
    let sentence = &paragraphs["paragraphs"][0]["sentences"][0];
    assert!(
        sentence["text"]
            .as_str()
            .is_some_and(|t| t.contains("weather")),
        "{best}"
    );
    let utterance = &result["results"]["utterances"][0];
    assert_eq!(utterance["channel"], 0, "{result}");
    assert!(
        utterance["words"].as_array().is_some_and(|w| !w.is_empty()),
        "{result}"
    );

    // The audio's other spellings: base64, and missing.
    let (status, _, body) = run(NOVA, &json!({"audio": encoded, "punctuate": false})).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = run(NOVA, &json!({"punctuate": true})).await;
    assert_eq!(status, 400, "{body}");
}

async fn binding(query: &str, content_type: &str, body: Vec<u8>) -> (u16, String, Value) {
    let response = client()
        .post(media_url(&format!("/run?version=3{query}")))
        .header("content-type", content_type)
        .header("cf-consn-model-id", NOVA)
        .header("cf-consn-sdk-version", "2.0.0")
        .body(body)
        .send()
        .await
        .expect("sent");
    let (status, content_type) = status_and_content_type(&response);
    (status, content_type, response.json().await.expect("JSON"))
}

#[tokio::test]
async fn nova3_through_the_binding_answers_deepgrams_shape_bare() {
    kiln_store::ensure_for_tests("whisper-base");
    let wav = speak(SENTENCES[2]).await;
    // `env.AI.run(nova, {audio: {body: stream, contentType}, punctuate: true})`: the stream
    // is the raw body, the other inputs are in `userInputs`.
    let user_inputs = "&userInputs=%7B%22punctuate%22%3Atrue%7D";
    let (status, content_type, answer) = binding(user_inputs, "audio/wav", wav.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(content_type, "application/json");
    let best = alternative(&answer);
    assert!(best["words"][0]["punctuated_word"].is_string(), "{answer}");
    assert!(
        wer(SENTENCES[2], best["transcript"].as_str().unwrap()) <= 0.15,
        "{answer}"
    );

    // The stream alone: the raw body as it is.
    let (status, _, answer) = binding("&userInputs=%7B%7D", "audio/wav", wav.clone()).await;
    assert_eq!(status, 200, "{answer}");
    alternative(&answer);

    // JSON inputs with the audio inline.
    let encoded = base64::engine::general_purpose::STANDARD.encode(&wav);
    let call = json!({"inputs": {"audio": {"body": encoded, "contentType": "audio/wav"},
                                 "smart_format": true}, "options": {}});
    let (status, _, answer) =
        binding("", "application/json", serde_json::to_vec(&call).unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    let transcript = alternative(&answer)["transcript"].as_str().unwrap();
    assert!(transcript.contains('.'), "{transcript}");
}
