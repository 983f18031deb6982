//! What the engine's integration tests share: speech from espeak-ng, the test models and the
//! word error rate.

#![allow(dead_code)]

use std::process::Command;

use kiln_engine_whisper::Transcriber;

pub fn espeak(text: &str) -> Vec<u8> {
    espeak_with(text, &[])
}

pub fn espeak_with(text: &str, extra: &[&str]) -> Vec<u8> {
    espeak_in("en-us", text, extra)
}

/// `text` spoken by espeak-ng's `voice` (a language: en-us, de, es…), as WAV.
pub fn espeak_in(voice: &str, text: &str, extra: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("speech.wav");
    let status = Command::new("espeak-ng")
        .args(["-v", voice, "-s", "130"])
        .args(extra)
        .arg("-w")
        .arg(&path)
        .arg(text)
        .status()
        .expect("espeak-ng must be installed (apt-get install espeak-ng)");
    assert!(status.success());
    std::fs::read(&path).expect("read wav")
}

pub fn tiny() -> Transcriber {
    let installed = kiln_store::ensure_for_tests("whisper-tiny-en");
    Transcriber::load(&installed.dir).expect("load whisper tiny.en")
}

pub fn normalise(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word error rate: word-level edit distance over the reference length.
pub fn wer(reference: &str, hypothesis: &str) -> f32 {
    let r = normalise(reference);
    let h = normalise(hypothesis);
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f32 / r.len().max(1) as f32
}

pub fn base() -> Transcriber {
    let installed = kiln_store::ensure_for_tests("whisper-base");
    Transcriber::load(&installed.dir).expect("load whisper base")
}
