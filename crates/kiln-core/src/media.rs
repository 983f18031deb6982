//! The contract for engines that take one request and give one answer: speech recognition,
//! speech synthesis and image classification. Each runs on its own worker thread
//! (`kiln_scheduler::MediaWorker`); nothing here is async.

use crate::{KilnResult, Task};

/// Speech recognition options (Workers AI's whisper inputs, spec §3.7).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TranscribeOptions {
    /// Spoken language; `None` detects it (multilingual models) or assumes English.
    pub language: Option<String>,
    /// Translate to English instead of transcribing.
    pub translate: bool,
    pub initial_prompt: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimedWord {
    pub word: String,
    pub start: f32,
    pub end: f32,
    /// How sure the recognizer is of the word, 0–1 (Deepgram's word `confidence`).
    pub confidence: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimedSegment {
    pub start: f32,
    pub end: f32,
    pub text: String,
    pub words: Vec<TimedWord>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transcription {
    pub text: String,
    pub language: String,
    /// Seconds of audio.
    pub duration: f32,
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
