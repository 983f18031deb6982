//! What a transcription is asked to do: the task, the language, and faster-whisper's decoding
//! options.

/// The most beams a window is searched with (more is clamped to this).
pub const MAX_BEAM_SIZE: usize = 10;
/// The most samples drawn per window at a temperature above 0.
pub(crate) const MAX_BEST_OF: usize = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Task {
    #[default]
    Transcribe,
    /// Translate to English (multilingual models only; ignored by `.en` models).
    Translate,
}

/// How to transcribe. The default is Kiln's fast path: greedy, each window on its own, one
/// temperature; faster-whisper's defaults are `beam_size: 5`, `condition_on_previous_text:
/// true` and `temperatures: FALLBACK_TEMPERATURES.to_vec()`.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscribeOptions {
    /// ISO code such as "en"; `None` detects it (multilingual models).
    pub language: Option<String>,
    pub task: Task,
    /// Text the first window is conditioned on (spelling, names, style).
    pub initial_prompt: Option<String>,
    /// Text the first window's transcript is forced to start with (it is part of the text).
    pub prefix: Option<String>,
    /// Beams of the beam search at temperature 0 (1: greedy; at most [`MAX_BEAM_SIZE`]).
    pub beam_size: usize,
    /// Conditions each window on the text of the windows before it.
    pub condition_on_previous_text: bool,
    /// Temperatures tried in turn while a window fails the thresholds below.
    pub temperatures: Vec<f32>,
    /// Samples drawn per window at a temperature above 0; the likeliest is kept.
    pub best_of: usize,
    /// A window whose text compresses better than this (zlib) is a repetition loop.
    pub compression_ratio_threshold: Option<f32>,
    /// A window whose mean token log probability is below this is unlikely.
    pub log_prob_threshold: Option<f32>,
    /// A window whose no-speech probability is above this (and is unlikely) is silence.
    pub no_speech_threshold: Option<f32>,
    /// Transcribes only what the voice-activity detector hears as speech (times stay those of
    /// the whole recording).
    pub vad_filter: bool,
    /// Seeds the sampling at temperatures above 0: the same request decodes the same way.
    pub seed: u64,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            language: None,
            task: Task::Transcribe,
            initial_prompt: None,
            prefix: None,
            beam_size: 1,
            condition_on_previous_text: false,
            temperatures: vec![0.0],
            best_of: 5,
            compression_ratio_threshold: Some(2.4),
            log_prob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            vad_filter: false,
            seed: 0x6b69_6c6e,
        }
    }
}
