//! Text-to-speech for Kiln: Piper (VITS) voices run on ONNX Runtime through `ort`, loading the
//! runtime library at run time (`load-dynamic`; see [`kiln_ort`]), with IPA phonemes from the
//! `espeak-ng` program (run as a separate process: it is GPL and never linked).
//!
//! A voice directory holds `<name>.onnx` and `<name>.onnx.json` (Piper's config: phoneme id map,
//! sample rate, inference scales, espeak-ng voice). Output is mono f32 audio at the voice's rate;
//! [`encode_wav`], [`encode_mp3`] and [`resample`] turn it into what a caller asked for.

mod audio;
mod phonemize;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;
use serde::Deserialize;

pub use audio::{encode_mp3, encode_wav, resample};

/// Silence put between two sentences, in seconds (Piper's default).
const SENTENCE_SILENCE_SECONDS: f32 = 0.2;

/// Phoneme characters synthesized in one run of the voice: a longer sentence is cut at a
/// word boundary, because the model's memory grows with the length of what it speaks at once
/// (a 4096-character sentence would need gigabytes; 400 phonemes, about 30 s of speech, took
/// 450 MB that ONNX Runtime's arena then keeps), and a deadline is checked between pieces.
/// 160 is a long spoken sentence.
const MAX_PHONEMES_PER_RUN: usize = 160;

/// What one request may ask a voice for (Kiln's `[limits.speech_synthesis]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechLimits {
    /// Longest text spoken in one request, in characters.
    pub max_characters: usize,
}

impl Default for SpeechLimits {
    fn default() -> Self {
        Self {
            max_characters: 4096,
        }
    }
}

/// Sets how many `espeak-ng` processes may run at once in this process, over all voices and
/// requests (`limits.speech_synthesis.max_phonemizer_processes`).
pub fn set_max_phonemizer_processes(max: usize) {
    phonemize::set_max_processes(max);
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtsError {
    #[error("no text to speak")]
    EmptyText,
    /// Over one of [`SpeechLimits`]; the message names the limit (the caller's fault).
    #[error("{0}")]
    Limit(String),
    /// The caller's `keep_going` said stop (deadline passed, client gone).
    #[error("the synthesis was stopped")]
    Stopped,
    #[error("phonemizer: {0}")]
    Phonemizer(String),
    #[error("onnx runtime: {0}")]
    Runtime(String),
    #[error("encoding: {0}")]
    Encode(String),
}

impl From<ort::Error> for TtsError {
    fn from(e: ort::Error) -> Self {
        TtsError::Runtime(e.to_string())
    }
}

#[derive(Debug, Deserialize)]
struct VoiceConfig {
    audio: AudioConfig,
    #[serde(default)]
    espeak: EspeakConfig,
    #[serde(default)]
    inference: InferenceConfig,
    #[serde(default)]
    num_speakers: u32,
    phoneme_id_map: HashMap<String, Vec<i64>>,
}

#[derive(Debug, Deserialize)]
struct AudioConfig {
    sample_rate: u32,
}

#[derive(Debug, Deserialize)]
struct EspeakConfig {
    voice: String,
}

impl Default for EspeakConfig {
    fn default() -> Self {
        Self {
            voice: "en-us".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct InferenceConfig {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            noise_scale: 0.667,
            length_scale: 1.0,
            noise_w: 0.8,
        }
    }
}

/// A loaded Piper voice. `Send + Sync`; one synthesis runs at a time (ONNX Runtime's own threads
/// parallelize each run).
pub struct Synthesizer {
    session: Mutex<Session>,
    ids: phonemize::PhonemeIds,
    espeak_voice: String,
    sample_rate: u32,
    scales: [f32; 3],
    has_speaker_input: bool,
}

/// The voice's model and config files: `<dir>/*.onnx` and the same name + `.json`.
fn voice_files(voice_dir: &Path) -> Result<(PathBuf, PathBuf), TtsError> {
    let entries = std::fs::read_dir(voice_dir).map_err(|e| {
        TtsError::Runtime(format!(
            "cannot read voice dir {}: {e}",
            voice_dir.display()
        ))
    })?;
    let mut models: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    models.sort();
    let model = models
        .into_iter()
        .next()
        .ok_or_else(|| TtsError::Runtime(format!("no .onnx voice in {}", voice_dir.display())))?;
    let mut config = model.clone().into_os_string();
    config.push(".json");
    let config = PathBuf::from(config);
    if !config.is_file() {
        return Err(TtsError::Runtime(format!(
            "voice config {} is missing",
            config.display()
        )));
    }
    Ok((model, config))
}

impl Synthesizer {
    /// Loads the Piper voice in `voice_dir` with ONNX Runtime's default thread count.
    pub fn load(voice_dir: &Path) -> Result<Self, TtsError> {
        Self::load_with_threads(voice_dir, 0)
    }

    /// Loads the voice, running each synthesis on `threads` threads (0: ONNX Runtime's default,
    /// one per physical core).
    pub fn load_with_threads(voice_dir: &Path, threads: usize) -> Result<Self, TtsError> {
        let (model_path, config_path) = voice_files(voice_dir)?;
        let config_text = std::fs::read_to_string(&config_path).map_err(|e| {
            TtsError::Runtime(format!("cannot read {}: {e}", config_path.display()))
        })?;
        let config: VoiceConfig = serde_json::from_str(&config_text)
            .map_err(|e| TtsError::Runtime(format!("bad {}: {e}", config_path.display())))?;
        let ids = phonemize::PhonemeIds::new(config.phoneme_id_map)?;
        let espeak_voice = config.espeak.voice;
        if espeak_voice.is_empty()
            || !espeak_voice
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+'))
        {
            return Err(TtsError::Runtime(format!(
                "unexpected espeak voice name {espeak_voice:?}"
            )));
        }

        kiln_ort::ensure_loaded().map_err(TtsError::Runtime)?;
        let mut builder = Session::builder()?;
        if threads > 0 {
            builder = builder.with_intra_threads(threads)?;
        }
        let session = builder
            .commit_from_file(&model_path)
            .map_err(|e| TtsError::Runtime(format!("cannot load {}: {e}", model_path.display())))?;
        let names: Vec<&str> = session.inputs.iter().map(|i| i.name.as_str()).collect();
        for needed in ["input", "input_lengths", "scales"] {
            if !names.contains(&needed) {
                return Err(TtsError::Runtime(format!(
                    "{} is not a Piper voice: no `{needed}` input (inputs: {names:?})",
                    model_path.display()
                )));
            }
        }
        let has_speaker_input = names.contains(&"sid");
        if config.num_speakers > 1 && !has_speaker_input {
            tracing::warn!("multi-speaker voice without a `sid` input");
        }
        let inference = config.inference;
        tracing::info!(
            model = %model_path.display(),
            sample_rate = config.audio.sample_rate,
            "loaded Piper voice"
        );
        Ok(Self {
            session: Mutex::new(session),
            ids,
            espeak_voice,
            sample_rate: config.audio.sample_rate,
            scales: [
                inference.noise_scale,
                inference.length_scale,
                inference.noise_w,
            ],
            has_speaker_input,
        })
    }

    /// The rate of the audio [`Synthesizer::speak`] returns, in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Mono f32 samples in [-1, 1] for `text` (sentences synthesized one after another, short
    /// silence between).
    pub fn speak(&self, text: &str) -> Result<Vec<f32>, TtsError> {
        self.speak_within(text, &SpeechLimits::default(), &|| true)
    }

    /// [`Synthesizer::speak`] within `limits`, asking `keep_going` before each piece of each
    /// sentence (and while the phonemizer runs): `TtsError::Stopped` when it says no.
    pub fn speak_within(
        &self,
        text: &str,
        limits: &SpeechLimits,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<Vec<f32>, TtsError> {
        if text.trim().is_empty() {
            return Err(TtsError::EmptyText);
        }
        // Counted without walking past the limit: the text may be megabytes.
        if text.chars().nth(limits.max_characters).is_some() {
            return Err(TtsError::Limit(format!(
                "the text is {} characters, more than {} (limits.speech_synthesis.max_characters)",
                text.chars().count(),
                limits.max_characters
            )));
        }
        let sentences = phonemize::phonemize(&self.espeak_voice, text, keep_going)?;
        let silence = (SENTENCE_SILENCE_SECONDS * self.sample_rate as f32) as usize;
        let mut audio = Vec::new();
        for (i, sentence) in sentences.iter().enumerate() {
            if i > 0 {
                audio.resize(audio.len() + silence, 0.0);
            }
            for phonemes in pieces(sentence, MAX_PHONEMES_PER_RUN) {
                if !keep_going() {
                    return Err(TtsError::Stopped);
                }
                let ids = self.ids.encode(phonemes);
                tracing::debug!(%phonemes, ids = ids.len(), "synthesizing sentence");
                self.synthesize_ids(ids, &mut audio)?;
            }
        }
        Ok(audio)
    }

    /// Runs the VITS model on one sentence's phoneme ids and appends the audio to `out`.
    fn synthesize_ids(&self, ids: Vec<i64>, out: &mut Vec<f32>) -> Result<(), TtsError> {
        let len = ids.len();
        let input = Tensor::from_array(([1usize, len], ids))?;
        let lengths = Tensor::from_array(([1usize], vec![len as i64]))?;
        let scales = Tensor::from_array(([3usize], self.scales.to_vec()))?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| TtsError::Runtime("session poisoned by an earlier panic".into()))?;
        let outputs = if self.has_speaker_input {
            let sid = Tensor::from_array(([1usize], vec![0i64]))?;
            session.run(ort::inputs![
                "input" => input,
                "input_lengths" => lengths,
                "scales" => scales,
                "sid" => sid,
            ])?
        } else {
            session.run(ort::inputs![
                "input" => input,
                "input_lengths" => lengths,
                "scales" => scales,
            ])?
        };
        let (_, samples) = outputs[0].try_extract_tensor::<f32>()?;
        out.extend(samples.iter().map(|&s| {
            if s.is_finite() {
                s.clamp(-1.0, 1.0)
            } else {
                0.0
            }
        }));
        Ok(())
    }
}

/// `text` cut into pieces of at most `max` characters, at the last space of each when there
/// is one.
fn pieces(text: &str, max: usize) -> Vec<&str> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((cut, _)) = rest.char_indices().nth(max) else {
            out.push(rest);
            break;
        };
        // The last space at or before the cut; a piece with none is cut mid-word.
        let at = if rest[cut..].starts_with(' ') {
            cut
        } else {
            match rest[..cut].rfind(' ') {
                Some(space) if space > 0 => space,
                _ => cut,
            }
        };
        out.push(rest[..at].trim_end());
        rest = rest[at..].trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_sentences_are_cut_at_spaces() {
        assert_eq!(pieces("ab cd ef", 5), vec!["ab cd", "ef"]);
        assert_eq!(pieces("abcdefgh", 3), vec!["abc", "def", "gh"]);
        assert_eq!(pieces("  ab  ", 5), vec!["ab"]);
        assert!(pieces("", 5).is_empty());
        let long = "wˈɜːld ".repeat(500);
        let cut = pieces(&long, MAX_PHONEMES_PER_RUN);
        assert!(cut
            .iter()
            .all(|p| p.chars().count() <= MAX_PHONEMES_PER_RUN));
        assert_eq!(cut.concat().chars().filter(|c| *c == 'w').count(), 500);
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn synthesizer_is_send_and_sync() {
        assert_send_sync::<Synthesizer>();
    }

    #[test]
    fn missing_voice_dir_is_an_error() {
        let err = Synthesizer::load(Path::new("/nonexistent/voice")).err();
        assert!(matches!(err, Some(TtsError::Runtime(_))), "{err:?}");
    }
}
