//! Whisper speech recognition for Kiln.
//!
//! Kiln's own Whisper forward pass (`model`: 2-D encoder, decoder with a KV cache) on
//! CTranslate2 (faster-whisper) weights: [`ct2`] reads the `model.bin` container, splits the
//! fused attention projections and renames the tensors to the Hugging Face layout. [`audio`]
//! turns wav/mp3/flac/ogg bytes into 16 kHz mono samples, and [`Transcriber`] does log-mel,
//! encoding and timestamped decoding in 30 s windows (greedy or beam search, temperature
//! fallback: `decode`, `fallback`; voice-activity filtering: `vad`), then word timestamps from
//! the decoder's cross-attention (`words`, `timing`).

pub mod audio;
pub mod ct2;
mod decode;
mod fallback;
pub mod mel;
pub(crate) mod model;
mod options;
mod output;
mod rules;
mod timing;
mod transcribe;
mod vad;
mod words;

pub use audio::{decode_audio, decode_audio_within, pcm_i16_to_f32, resample_to_16k, AudioLimits};
pub use fallback::FALLBACK_TEMPERATURES;
pub use model::Precision;
pub use options::{Task, TranscribeOptions, MAX_BEAM_SIZE};
pub use output::{to_vtt, Segment, Transcript, Word};
pub use transcribe::Transcriber;

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
