//! Speech recognition, speech synthesis and image classification through real HTTP against the real server and
//! real weights (spec §3.7, §3.8, §3.11): Workers AI's shapes, OpenAI's audio route, and bad input.

#[path = "../common/mod.rs"]
mod common;

mod deepgram;
mod image;
mod live;
mod speech;
mod voice;
mod voice_options;
mod whisper_options;

use common::*;

/// The shared server, after the media models it serves are installed (the registry lists what
/// is installed when it starts).
pub fn media_url(path: &str) -> String {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        for model in [
            "efficientnet-lite0",
            "piper-en-us-joe-medium",
            "skimage-test-images",
        ] {
            kiln_store::ensure_for_tests(model);
        }
    });
    url(path)
}

pub fn media_run_url(model: &str) -> String {
    media_url(&format!("/client/v4/accounts/{ACCOUNT}/ai/run/{model}"))
}

/// POSTs `body` to an Aura model; answers the status, content type and the audio bytes.
pub async fn aura(model: &str, body: serde_json::Value) -> (u16, String, Vec<u8>) {
    let response = client()
        .post(media_run_url(model))
        .bearer_auth("sk-test")
        .json(&body)
        .send()
        .await
        .expect("sent");
    let (status, content_type) = status_and_content_type(&response);
    (
        status,
        content_type,
        response.bytes().await.unwrap().to_vec(),
    )
}

/// A response's status and `content-type` (which every media answer carries).
pub fn status_and_content_type(response: &reqwest::Response) -> (u16, String) {
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ASCII content-type")
        .to_owned();
    (response.status().as_u16(), content_type)
}
