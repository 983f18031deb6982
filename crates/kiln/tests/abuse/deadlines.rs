//! Deadlines reach the work (issue #15): a request past its deadline stops using its model
//! within one chunk, so a long upload cannot hold a model for everyone after it has timed out.

use std::time::Duration;

use serde_json::Value;

use crate::audio::wav;
use crate::common::{client, KilnProcess, ACCOUNT};
use crate::{assert_refused, spoken_wav};

const WHISPER: &str = "@cf/openai/whisper-tiny-en";
/// The request timeout of the server this test starts.
const TIMEOUT_SECS: u64 = 15;

/// The PCM samples of a 16-bit WAV (its `data` chunk).
fn pcm_of(wav_bytes: &[u8]) -> Vec<u8> {
    let at = wav_bytes
        .windows(4)
        .position(|w| w == b"data")
        .expect("a data chunk");
    wav_bytes[at + 8..].to_vec()
}

async fn transcribe(base: &str, audio: Vec<u8>) -> (u16, Value) {
    let response = client()
        .post(format!(
            "{base}/client/v4/accounts/{ACCOUNT}/ai/run/{WHISPER}"
        ))
        .header("content-type", "audio/wav")
        .body(audio)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// 25 minutes of real speech (fifty 30 s windows, far more work than the timeout allows)
/// get 408 at the deadline. The model must then be free: the next request, which has the same
/// short deadline and would time out too if it queued behind the abandoned work, succeeds.
#[tokio::test]
async fn a_timed_out_transcription_frees_its_model_within_one_chunk() {
    let _serial = crate::one_attack_at_a_time().await;
    let sentence = pcm_of(&spoken_wav("The meeting will start at nine, please be on time.").await);
    let twenty_minutes = 20 * 60 * 16_000 * 2;
    let long_pcm: Vec<u8> = sentence
        .iter()
        .copied()
        .cycle()
        .take(twenty_minutes)
        .collect();
    let long_audio = wav(1, 16_000, 16, &long_pcm);
    let short_audio = wav(1, 16_000, 16, &sentence);

    let state = tempfile::tempdir().expect("state dir");
    let shared_models = kiln_store::default_data_dir().join("models");
    std::os::unix::fs::symlink(&shared_models, state.path().join("models")).expect("link");
    let timeout = TIMEOUT_SECS.to_string();
    let server = KilnProcess::start(&[
        "--data-dir".as_ref(),
        state.path().as_os_str(),
        "--request-timeout-secs".as_ref(),
        timeout.as_ref(),
        "--max-body-bytes".as_ref(),
        "67108864".as_ref(),
    ])
    .await;

    // Loads the model, so that the long request's time goes to transcription (a first request
    // on a busy machine may itself time out while the model loads).
    let mut warm = false;
    for _ in 0..3 {
        let (status, _) = transcribe(&server.base, short_audio.clone()).await;
        warm |= status == 200;
        if warm {
            break;
        }
    }
    assert!(warm, "the model answers a short request");

    let (status, body) = transcribe(&server.base, long_audio).await;
    assert_eq!(status, 408, "{body}");
    assert_refused(status, &body, 3007, "");

    for _ in 0..2 {
        let (status, body) = transcribe(&server.base, short_audio.clone()).await;
        assert_eq!(status, 200, "the model is free again: {body}");
        let text = body["result"]["text"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        assert!(text.contains("meeting"), "{body}");
    }
}
