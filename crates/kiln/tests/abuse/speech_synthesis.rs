//! Text-to-speech (`@cf/myshell-ai/melotts`, served by a Piper voice): text over
//! `limits.speech_synthesis.max_characters` is refused (400 / 5006 naming the limit), and
//! texts that split into thousands of clauses neither start a process per clause nor hold the
//! voice for long.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{assert_refused, assert_still_serving, post};

const VOICE: &str = "@cf/myshell-ai/melotts";

#[tokio::test]
async fn text_over_the_cap_is_refused() {
    let _serial = crate::one_attack_at_a_time().await;
    let started = Instant::now();
    let (status, body) = post(VOICE, &json!({"prompt": "word ".repeat(1000)})).await;
    assert_refused(
        status,
        &body,
        5006,
        "5000 characters, more than 4096 (limits.speech_synthesis.max_characters)",
    );
    // Multi-byte characters are counted as characters, and a megabyte is refused as fast.
    let (status, body) = post(VOICE, &json!({"prompt": "é".repeat(1_000_000)})).await;
    assert_refused(
        status,
        &body,
        5006,
        "limits.speech_synthesis.max_characters",
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_still_serving(VOICE, &json!({"prompt": "Hello."})).await;
}

#[tokio::test]
async fn pathological_texts_are_bounded() {
    let _serial = crate::one_attack_at_a_time().await;
    // 1300 clauses that espeak-ng gives no phonemes for: once one process per clause.
    let started = Instant::now();
    let (status, body) = post(VOICE, &json!({"prompt": "-. ".repeat(1300)})).await;
    assert!(status == 200 || status == 400, "{status}: {body}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    // One 1200-character sentence with no punctuation, espeak-ng markup and control characters.
    let long = format!("{}[[h@'loU]]\u{7}\u{0}", "and ".repeat(300));
    let (status, body) = post(VOICE, &json!({"prompt": long})).await;
    assert_eq!(status, 200, "{body}");
    assert_still_serving(VOICE, &json!({"prompt": "Hello."})).await;
}
