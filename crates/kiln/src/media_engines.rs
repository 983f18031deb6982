//! Kiln's media engines behind the one [`MediaEngine`] contract: each adapter turns a
//! `MediaRequest` into its engine's calls, and the engine's errors into Kiln's (bad audio or
//! images are the caller's 400 / 5006, anything else is the server's).

use std::path::Path;

use kiln_core::limits::{AudioLimits, ImageLimits, InputLimits, SpeechSynthesisLimits};
use kiln_core::media::{
    AudioFormat, LabelScore, TimedSegment, TimedWord, TranscribeOptions, Transcription,
};
use kiln_core::{
    ErrorKind, KilnError, KilnResult, MediaEngine, MediaOutput, MediaRequest, Task, WorkProgress,
};

fn wrong_request(task: Task) -> KilnError {
    KilnError::bad_input(format!("this model serves {} requests only", task.name()))
}

/// The error that stopped an engine when its `keep_going` said no: what `progress` says now
/// (the deadline only passes further and a gone caller does not come back).
fn stopped(progress: &WorkProgress) -> KilnError {
    progress
        .check()
        .err()
        .unwrap_or_else(|| KilnError::new(ErrorKind::Timeout, ErrorKind::Timeout.default_message()))
}

/// Image classification on EfficientNet-Lite0 (`kiln-engine-vision`).
pub struct VisionEngine {
    classifier: kiln_engine_vision::ImageClassifier,
    limits: kiln_engine_vision::ImageLimits,
}

impl VisionEngine {
    pub fn load_with_limits(dir: &Path, limits: &InputLimits) -> KilnResult<Self> {
        let ImageLimits {
            max_dimension,
            max_pixels,
            ..
        } = limits.image;
        kiln_engine_vision::ImageClassifier::load_efficientnet_lite0(dir)
            .map(|classifier| Self {
                classifier,
                limits: kiln_engine_vision::ImageLimits {
                    max_dimension,
                    max_pixels,
                },
            })
            .map_err(|e| KilnError::internal(format!("cannot load the image classifier: {e}")))
    }
}

impl MediaEngine for VisionEngine {
    fn task(&self) -> Task {
        Task::ImageClassification
    }

    fn run(&mut self, request: MediaRequest, progress: &WorkProgress) -> KilnResult<MediaOutput> {
        let MediaRequest::Classify { image, top_k } = request else {
            return Err(wrong_request(self.task()));
        };
        let keep_going = || progress.check().is_ok();
        let classes = self
            .classifier
            .classify_within(&image, top_k, &self.limits, &keep_going)
            .map_err(|error| match error {
                kiln_engine_vision::VisionError::Stopped => stopped(progress),
                error if error.is_bad_input() => KilnError::bad_input(error.to_string()),
                error => KilnError::internal(error.to_string()),
            })?;
        Ok(MediaOutput::Labels(
            classes
                .into_iter()
                .map(|c| LabelScore {
                    label: c.label,
                    score: c.score,
                })
                .collect(),
        ))
    }
}

/// Text-to-speech with a Piper voice (`kiln-engine-tts`).
pub struct VoiceEngine {
    synthesizer: kiln_engine_tts::Synthesizer,
    limits: kiln_engine_tts::SpeechLimits,
}

impl VoiceEngine {
    /// Loads the voice; also sets the process-wide number of phonemizer processes.
    pub fn load_with_limits(dir: &Path, limits: &InputLimits) -> KilnResult<Self> {
        let SpeechSynthesisLimits {
            max_characters,
            max_phonemizer_processes,
            ..
        } = limits.speech_synthesis;
        kiln_engine_tts::set_max_phonemizer_processes(max_phonemizer_processes);
        kiln_engine_tts::Synthesizer::load(dir)
            .map(|synthesizer| Self {
                synthesizer,
                limits: kiln_engine_tts::SpeechLimits { max_characters },
            })
            .map_err(|e| KilnError::internal(format!("cannot load the voice: {e}")))
    }
}

impl MediaEngine for VoiceEngine {
    fn task(&self) -> Task {
        Task::TextToSpeech
    }

    fn run(&mut self, request: MediaRequest, progress: &WorkProgress) -> KilnResult<MediaOutput> {
        let MediaRequest::Speak {
            text,
            format,
            sample_rate,
        } = request
        else {
            return Err(wrong_request(self.task()));
        };
        use kiln_engine_tts::TtsError;
        let keep_going = || progress.check().is_ok();
        let mut samples = self
            .synthesizer
            .speak_within(&text, &self.limits, &keep_going)
            .map_err(|error| match error {
                TtsError::EmptyText => KilnError::bad_input("the text is empty"),
                TtsError::Limit(message) => KilnError::bad_input(message),
                TtsError::Stopped => stopped(progress),
                other => KilnError::internal(other.to_string()),
            })?;
        let mut rate = self.synthesizer.sample_rate();
        if let Some(target) = sample_rate.filter(|&target| target != rate) {
            if !(8_000..=48_000).contains(&target) {
                return Err(KilnError::bad_input(format!(
                    "sample_rate must be between 8000 and 48000, not {target}"
                )));
            }
            samples = kiln_engine_tts::resample(&samples, rate, target);
            rate = target;
        }
        let duration = samples.len() as f32 / rate as f32;
        let bytes = match format {
            AudioFormat::Mp3 => kiln_engine_tts::encode_mp3(&samples, rate)
                .map_err(|e| KilnError::internal(e.to_string()))?,
            AudioFormat::Wav => kiln_engine_tts::encode_wav(&samples, rate),
            AudioFormat::Linear16 => samples
                .iter()
                .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
                .collect(),
        };
        Ok(MediaOutput::Audio {
            bytes,
            content_type: format.content_type(),
            duration,
        })
    }
}

/// Speech recognition with Whisper on CTranslate2 weights (`kiln-engine-whisper`).
pub struct WhisperEngine {
    transcriber: kiln_engine_whisper::Transcriber,
    limits: kiln_engine_whisper::AudioLimits,
}

impl WhisperEngine {
    pub fn load_with_limits(dir: &Path, limits: &InputLimits) -> KilnResult<Self> {
        let AudioLimits {
            max_seconds,
            min_sample_rate,
            max_sample_rate,
            max_channels,
            ..
        } = limits.audio;
        kiln_engine_whisper::Transcriber::load(dir)
            .map(|transcriber| Self {
                transcriber,
                limits: kiln_engine_whisper::AudioLimits {
                    max_seconds,
                    min_sample_rate,
                    max_sample_rate,
                    max_channels,
                },
            })
            .map_err(|e| KilnError::internal(format!("cannot load Whisper: {e}")))
    }
}

/// The request's options in the engine's terms.
fn whisper_options(options: TranscribeOptions) -> kiln_engine_whisper::TranscribeOptions {
    use kiln_engine_whisper::{Task, FALLBACK_TEMPERATURES};
    kiln_engine_whisper::TranscribeOptions {
        language: options.language,
        task: if options.translate {
            Task::Translate
        } else {
            Task::Transcribe
        },
        initial_prompt: options.initial_prompt,
        prefix: options.prefix,
        beam_size: options.beam_size as usize,
        condition_on_previous_text: options.condition_on_previous_text,
        temperatures: if options.temperature_fallback {
            FALLBACK_TEMPERATURES.to_vec()
        } else {
            vec![0.0]
        },
        compression_ratio_threshold: Some(options.compression_ratio_threshold),
        log_prob_threshold: Some(options.log_prob_threshold),
        no_speech_threshold: Some(options.no_speech_threshold),
        vad_filter: options.vad_filter,
        ..Default::default()
    }
}

fn asr_error(error: kiln_engine_whisper::AsrError, progress: &WorkProgress) -> KilnError {
    use kiln_engine_whisper::AsrError;
    match error {
        AsrError::Model(detail) => KilnError::internal(detail),
        AsrError::Stopped => stopped(progress),
        input_error => KilnError::bad_input(input_error.to_string()),
    }
}

impl MediaEngine for WhisperEngine {
    fn task(&self) -> Task {
        Task::SpeechRecognition
    }

    fn run(&mut self, request: MediaRequest, progress: &WorkProgress) -> KilnResult<MediaOutput> {
        let MediaRequest::Transcribe { audio, options } = request else {
            return Err(wrong_request(self.task()));
        };
        let keep_going = || progress.check().is_ok();
        let asr_error = |error| asr_error(error, progress);
        let samples = kiln_engine_whisper::decode_audio_within(audio, &self.limits, &keep_going)
            .map_err(asr_error)?;
        let whisper_options = whisper_options(options);
        let transcript = self
            .transcriber
            .transcribe_within(&samples, &whisper_options, &keep_going)
            .map_err(asr_error)?;
        drop(samples);
        let vtt = kiln_engine_whisper::to_vtt(&transcript);
        // Words belong to the segment they start in.
        let segments = transcript
            .segments
            .iter()
            .map(|segment| TimedSegment {
                start: segment.start,
                end: segment.end,
                text: segment.text.clone(),
                temperature: segment.temperature,
                avg_logprob: segment.avg_logprob,
                compression_ratio: segment.compression_ratio,
                no_speech_prob: segment.no_speech_prob,
                words: transcript
                    .words
                    .iter()
                    .filter(|w| {
                        w.start >= segment.start && w.start < segment.end.max(segment.start + 1e-3)
                    })
                    .map(|w| TimedWord {
                        word: w.word.clone(),
                        start: w.start,
                        end: w.end,
                        confidence: w.probability,
                    })
                    .collect(),
            })
            .collect();
        Ok(MediaOutput::Transcription(Transcription {
            text: transcript.text,
            language: transcript.language,
            language_probability: transcript.language_probability,
            duration: transcript.duration,
            duration_after_vad: transcript.duration_after_vad,
            segments,
            vtt,
        }))
    }
}
