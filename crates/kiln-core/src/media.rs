//! The contract for engines that take one request and give one answer: speech recognition,
//! speech synthesis and image classification. Each runs on its own worker thread
//! (`kiln_scheduler::MediaWorker`); nothing here is async.

use crate::{KilnResult, Task};

/// Speech recognition options (Workers AI's whisper inputs, spec §3.7). The default is Kiln's
/// plain Whisper decoding (greedy, each window on its own, no retries); `whisper-large-v3-turbo`
/// asks for faster-whisper's defaults instead.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscribeOptions {
    /// Spoken language; `None` detects it (multilingual models) or assumes English.
    pub language: Option<String>,
    /// Translate to English instead of transcribing.
    pub translate: bool,
    pub initial_prompt: Option<String>,
    /// Text the first window's transcript is forced to start with (faster-whisper's `prefix`).
    pub prefix: Option<String>,
    /// Drop what the voice-activity detector hears as non-speech before decoding.
    pub vad_filter: bool,
    /// Beams of the beam search at temperature 0; 1 decodes greedily.
    pub beam_size: u32,
    /// Condition each 30 s window on the text decoded before it.
    pub condition_on_previous_text: bool,
    /// Retry a window at temperatures 0.2, 0.4 … 1.0 (sampling) while it fails
    /// `compression_ratio_threshold` or `log_prob_threshold`.
    pub temperature_fallback: bool,
    pub compression_ratio_threshold: f32,
    pub log_prob_threshold: f32,
    /// A window whose no-speech probability is above this (and whose text is unlikely) is silence.
    pub no_speech_threshold: f32,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            language: None,
            translate: false,
            initial_prompt: None,
            prefix: None,
            vad_filter: false,
            beam_size: 1,
            condition_on_previous_text: false,
            temperature_fallback: false,
            compression_ratio_threshold: 2.4,
            log_prob_threshold: -1.0,
            no_speech_threshold: 0.6,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimedWord {
    pub word: String,
    pub start: f32,
    pub end: f32,
    /// How sure the recognizer is of the word, 0–1 (Deepgram's word `confidence`).
    pub confidence: f32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimedSegment {
    pub start: f32,
    pub end: f32,
    pub text: String,
    pub words: Vec<TimedWord>,
    /// The decoding of the 30 s window the segment came from: the temperature that gave it,
    /// the mean log probability of its tokens, its text's zlib compression ratio and the
    /// probability that the window held no speech.
    pub temperature: f32,
    pub avg_logprob: f32,
    pub compression_ratio: f32,
    pub no_speech_prob: f32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transcription {
    pub text: String,
    pub language: String,
    /// How sure the model was of `language` (1 when it was given).
    pub language_probability: f32,
    /// Seconds of audio.
    pub duration: f32,
    /// Seconds of audio left after voice-activity filtering (`duration` without it).
    pub duration_after_vad: f32,
    pub segments: Vec<TimedSegment>,
    /// WebVTT of the segments.
    pub vtt: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// How synthesized speech is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    Mp3,
    /// 16-bit PCM in a WAV container.
    Wav,
    /// Raw 16-bit little-endian PCM, no container.
    Linear16,
}

impl AudioFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            AudioFormat::Mp3 => "audio/mpeg",
            AudioFormat::Wav => "audio/wav",
            AudioFormat::Linear16 => "audio/l16",
        }
    }
}

/// One request to a media engine.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaRequest {
    /// An encoded audio file (wav, mp3, flac, ogg).
    Transcribe {
        audio: Vec<u8>,
        options: TranscribeOptions,
    },
    /// Text to speak, and the audio format to answer in.
    Speak {
        text: String,
        format: AudioFormat,
        /// Resample to this rate; `None` keeps the voice's own.
        sample_rate: Option<u32>,
    },
    /// An encoded image (jpeg, png, webp) and how many classes to return.
    Classify { image: Vec<u8>, top_k: usize },
    /// Text to translate. The languages are the model's own tokens (M2M100: `__en__`,
    /// `__fr__`); models without language tokens ignore them.
    Translate {
        text: String,
        source_lang: String,
        target_lang: String,
        max_new_tokens: usize,
    },
    /// Text to summarize, in at most `max_new_tokens` tokens.
    Summarize { text: String, max_new_tokens: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub enum MediaOutput {
    Transcription(Transcription),
    /// Encoded audio.
    Audio {
        bytes: Vec<u8>,
        content_type: &'static str,
        /// Seconds of speech.
        duration: f32,
    },
    Labels(Vec<LabelScore>),
    /// Generated text (a translation or a summary) and the tokens read and written.
    Text {
        text: String,
        input_tokens: u32,
        output_tokens: u32,
    },
}

/// An engine for one of the media tasks. Bad input (corrupt audio, an image of an unknown
/// format) is `ErrorKind::BadInput` naming the problem.
pub trait MediaEngine: Send {
    fn task(&self) -> Task;
    /// Long work is done in chunks and calls `progress.check()` between them, so a request
    /// past its deadline, or whose client left, stops consuming CPU within one chunk.
    fn run(&mut self, request: MediaRequest, progress: &WorkProgress) -> KilnResult<MediaOutput>;
}

/// Whether a request's work should go on: its deadline, and whether anyone still waits for it.
pub struct WorkProgress<'a> {
    deadline: std::time::Instant,
    abandoned: Box<dyn Fn() -> bool + Send + Sync + 'a>,
}

impl<'a> WorkProgress<'a> {
    pub fn new(
        deadline: std::time::Instant,
        abandoned: impl Fn() -> bool + Send + Sync + 'a,
    ) -> Self {
        Self {
            deadline,
            abandoned: Box::new(abandoned),
        }
    }

    /// No deadline and never abandoned (tools, tests).
    pub fn unbounded() -> Self {
        Self::new(
            std::time::Instant::now() + std::time::Duration::from_secs(365 * 24 * 3600),
            || false,
        )
    }

    /// `Err(Timeout)` past the deadline, `Err(Aborted)` once the caller is gone; else `Ok`.
    pub fn check(&self) -> KilnResult<()> {
        if (self.abandoned)() {
            return Err(crate::KilnError::new(
                crate::ErrorKind::Aborted,
                crate::ErrorKind::Aborted.default_message(),
            ));
        }
        if std::time::Instant::now() >= self.deadline {
            return Err(crate::KilnError::new(
                crate::ErrorKind::Timeout,
                crate::ErrorKind::Timeout.default_message(),
            ));
        }
        Ok(())
    }

    pub fn deadline(&self) -> std::time::Instant {
        self.deadline
    }
}
