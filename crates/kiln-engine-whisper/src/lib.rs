//! Whisper speech recognition for Kiln.
//!
//! Runs candle's Whisper implementation on CTranslate2 (faster-whisper) weights: [`ct2`] reads the
//! `model.bin` container, splits the fused attention projections and renames the tensors to the
//! Hugging Face layout candle expects. [`audio`] turns wav/mp3/flac/ogg bytes into 16 kHz mono
//! samples, and [`Transcriber`] does log-mel, encoding and greedy timestamped decoding in 30 s
//! windows.

pub mod audio;
pub mod ct2;
pub mod mel;
mod output;
mod rules;
mod transcribe;

pub use audio::{decode_audio, decode_audio_within, pcm_i16_to_f32, resample_to_16k, AudioLimits};
pub use output::{to_vtt, Segment, Transcript, Word};
pub use transcribe::{Task, TranscribeOptions, Transcriber};

/// Errors of the speech-recognition engine. The first four are the caller's fault (HTTP 400,
/// Workers AI code 5006 upstream); `Stopped` is the caller's `keep_going` saying stop (deadline,
/// client gone); `Model` is an internal failure.
#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("the audio input is empty")]
    EmptyAudio,
    #[error("unsupported audio format: {0}")]
    UnsupportedFormat(String),
    #[error("corrupt audio: {0}")]
    CorruptAudio(String),
    /// Over one of [`AudioLimits`]; the message names the limit.
    #[error("{0}")]
    Limit(String),
    #[error("the transcription was stopped")]
    Stopped,
    #[error("speech model error: {0}")]
    Model(String),
}

impl From<candle_core::Error> for AsrError {
    fn from(err: candle_core::Error) -> Self {
        AsrError::Model(err.to_string())
    }
}
