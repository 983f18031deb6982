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
