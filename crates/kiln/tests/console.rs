//! The browser console at `/` (issue #20), driven in headless Chromium by playwright-core
//! (`sdk-tests/node/console/run.mjs`): chat streams token by token, the microphone (Chromium's
//! fake device playing a WAV of Kiln's own voice) is transcribed, a model is pulled from the
//! models page and then used, and every page renders. The screenshots go to
//! `$KILN_CONSOLE_SCREENSHOTS` when set (`docs/console/` holds the committed ones), else to a
//! temporary directory.
//!
//! One server for the whole binary, on a temporary data dir whose `models/` links the shared
//! cache's verified default models, except whisper-tiny-en: the models page pulls that one,
//! and the store copies it from the shared cache (`model_mirrors`), so nothing is downloaded
//! while the test runs and nothing but 127.0.0.1 is reached.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use serde_json::json;

/// Linked into the server's data dir (the defaults the pages use).
const LINKED: [&str; 5] = [
    "smollm2-135m-instruct",
    "all-minilm-l6-v2",
    "whisper-base",
    "piper-en-us-joe-medium",
    "efficientnet-lite0",
];
/// Pulled through the models page.
const PULLED: &str = "whisper-tiny-en";
/// What the fake microphone says, and the words its transcript must hold.
const SENTENCE: &str = "The quick brown fox jumps over the lazy dog.";
const HEARD: &str = "quick,brown,fox,lazy,dog";
/// The fake microphone's sample rate and the WAV's whole length (it loops).
const RATE: u32 = 48_000;
const WAV_SECONDS: f32 = 5.0;
/// One scenario's limit (the runner's own watchdog is a little shorter).
const SCENARIO_SECONDS: u64 = 420;

struct Setup {
    addr: SocketAddr,
    screenshots: PathBuf,
    fake_audio: PathBuf,
    _temp: tempfile::TempDir,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        // Statics are never dropped: the directory (with a pulled model in it) lives in the
        // target dir, and a later run removes those of runs before it.
        let parent = Path::new(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(entries) = std::fs::read_dir(parent) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600));
                if name.to_string_lossy().starts_with("kiln-console-") && stale {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let temp = tempfile::Builder::new()
            .prefix("kiln-console-")
            .tempdir_in(parent)
            .expect("temp dir");
        let models = temp.path().join("data").join("models");
        std::fs::create_dir_all(&models).expect("models dir");
        for name in LINKED {
            let installed = kiln_store::ensure_for_tests(name);
            std::os::unix::fs::symlink(&installed.dir, models.join(name)).expect("link a model");
        }
        // In the shared cache (the mirror), not in this server's store.
        kiln_store::ensure_for_tests(PULLED);
        let addr = spawn_server(kiln::ServeConfig {
            data_dir: Some(temp.path().join("data")),
            model_mirrors: Some(vec![kiln_store::default_data_dir()]),
            models: None,
            fetch: Some(Vec::new()),
            batch_db: Some(temp.path().join("batches.db")),
            ..test_config()
        });
        let screenshots = match std::env::var_os("KILN_CONSOLE_SCREENSHOTS") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => temp.path().join("screenshots"),
        };
        let fake_audio = temp.path().join("microphone.wav");
        Setup {
            addr,
            screenshots,
            fake_audio,
            _temp: temp,
        }
    })
}

/// The sentence in Kiln's own voice (Piper), 16-bit mono at [`RATE`], with a little silence
/// before it and enough after it that a recording of a few seconds hears it once.
async fn write_fake_audio(setup: &Setup) {
    if setup.fake_audio.exists() {
        return;
    }
    let url = format!(
        "http://{}/client/v4/accounts/{ACCOUNT}/ai/run/@cf/deepgram/aura-1",
        setup.addr
    );
    let response = client()
        .post(url)
        .json(&json!({
            "text": SENTENCE,
            "encoding": "linear16",
            "container": "none",
            "sample_rate": RATE,
        }))
        .send()
        .await
        .expect("speech requested");
    assert_eq!(response.status(), 200, "Kiln's voice speaks");
    let speech = response.bytes().await.expect("speech");
    let lead = (RATE as f32 * 0.3) as usize * 2;
    let total = ((RATE as f32 * WAV_SECONDS) as usize * 2).max(lead + speech.len() + RATE as usize);
    let mut pcm = vec![0u8; total];
    pcm[lead..lead + speech.len()].copy_from_slice(&speech);
    let mut wav = Vec::with_capacity(44 + pcm.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(&pcm);
    let part = setup.fake_audio.with_extension("part");
    std::fs::write(&part, wav).expect("write the WAV");
    std::fs::rename(&part, &setup.fake_audio).expect("WAV in place");
}

fn runner() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk-tests/node/console/run.mjs")
}

/// Runs one scenario of `sdk-tests/node/console/scenarios/` against the server; panics with
/// node's output unless it passes. Scenarios run one at a time: they share the server, and
/// two browsers and the models on the same few cores make timings meaningless.
async fn scenario(name: &str) {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let setup = setup();
    let _turn = ONE_AT_A_TIME.lock().await;
    write_fake_audio(setup).await;
    let node_modules = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../sdk-tests/node/node_modules/playwright-core");
    assert!(
        node_modules.exists(),
        "playwright-core is not installed: run scripts/install-deps (npm ci in sdk-tests/node)"
    );
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("Chromium is installed by scripts/install-deps (Debian package chromium)");
    let mut command = std::process::Command::new("timeout");
    command
        .args(["--kill-after=10", &SCENARIO_SECONDS.to_string(), "node"])
        .arg(runner())
        .arg(name)
        .arg(format!("http://{}", setup.addr))
        .arg(&setup.screenshots)
        .env("KILN_CHROMIUM", chromium)
        .env("KILN_FAKE_AUDIO", &setup.fake_audio)
        .env("KILN_FAKE_AUDIO_WORDS", HEARD)
        .env(
            "KILN_CONSOLE_TIMEOUT_MS",
            ((SCENARIO_SECONDS - 20) * 1000).to_string(),
        );
    // node (and its browser) die with this test process.
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = std::time::Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("runner thread")
        .expect("node runs (nodejs is installed by scripts/install-deps)");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "console scenario {name} failed ({}) after {:?}:\n{log}",
        output.status,
        started.elapsed()
    );
    println!("{log}");
    assert!(started.elapsed() < Duration::from_secs(SCENARIO_SECONDS));
}

#[tokio::test]
async fn chat_streams_the_answer_token_by_token() {
    scenario("chat").await;
}

#[tokio::test]
async fn the_microphone_is_recorded_and_transcribed() {
    scenario("speech").await;
}

#[tokio::test]
async fn a_model_pulled_on_the_models_page_is_then_used() {
    scenario("pull").await;
}

#[tokio::test]
async fn embeddings_speech_images_and_the_api_reference_render() {
    scenario("pages").await;
}

#[tokio::test]
async fn gateway() {
    scenario("gateway").await;
}

#[tokio::test]
async fn vectorize() {
    scenario("vectorize").await;
}
