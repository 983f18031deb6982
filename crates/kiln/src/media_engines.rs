//! Kiln's media engines behind the one [`MediaEngine`] contract: each adapter turns a
//! `MediaRequest` into its engine's calls, and the engine's errors into Kiln's (bad audio or
//! images are the caller's 400 / 5006, anything else is the server's).

use std::path::Path;

use kiln_core::media::{AudioFormat, LabelScore, TimedSegment, TimedWord, Transcription};
use kiln_core::{KilnError, KilnResult, MediaEngine, MediaOutput, MediaRequest, Task};

fn wrong_request(task: Task) -> KilnError {
    KilnError::bad_input(format!("this model serves {} requests only", task.name()))
}

/// Image classification on EfficientNet-Lite0 (`kiln-engine-vision`).
pub struct VisionEngine(kiln_engine_vision::ImageClassifier);

impl VisionEngine {
    pub fn load(dir: &Path) -> KilnResult<Self> {
        kiln_engine_vision::ImageClassifier::load_efficientnet_lite0(dir)
            .map(Self)
            .map_err(|e| KilnError::internal(format!("cannot load the image classifier: {e}")))
    }
}

impl MediaEngine for VisionEngine {
    fn task(&self) -> Task {
        Task::ImageClassification
    }

    fn run(&mut self, request: MediaRequest, _progress: &WorkProgress) -> KilnResult<MediaOutput> {
        let MediaRequest::Classify { image, top_k } = request else {
            return Err(wrong_request(self.task()));
        };
        let classes = self.0.classify(&image, top_k).map_err(|error| {
            if error.is_bad_input() {
                KilnError::bad_input(error.to_string())
            } else {
                KilnError::internal(error.to_string())
            }
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
pub struct VoiceEngine(kiln_engine_tts::Synthesizer);

impl VoiceEngine {
    pub fn load(dir: &Path) -> KilnResult<Self> {
        kiln_engine_tts::Synthesizer::load(dir)
            .map(Self)
            .map_err(|e| KilnError::internal(format!("cannot load the voice: {e}")))
    }
}

impl MediaEngine for VoiceEngine {
    fn task(&self) -> Task {
        Task::TextToSpeech
    }

    fn run(&mut self, request: MediaRequest, _progress: &WorkProgress) -> KilnResult<MediaOutput> {
        let MediaRequest::Speak {
            text,
            format,
            sample_rate,
        } = request
        else {
            return Err(wrong_request(self.task()));
        };
        use kiln_engine_tts::TtsError;
        let mut samples = self.0.speak(&text).map_err(|error| match error {
            TtsError::EmptyText => KilnError::bad_input("the text is empty"),
            other => KilnError::internal(other.to_string()),
        })?;
        let mut rate = self.0.sample_rate();
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
pub struct WhisperEngine(kiln_engine_whisper::Transcriber);

impl WhisperEngine {
    pub fn load(dir: &Path) -> KilnResult<Self> {
        kiln_engine_whisper::Transcriber::load(dir)
            .map(Self)
            .map_err(|e| KilnError::internal(format!("cannot load Whisper: {e}")))
    }
}

fn asr_error(error: kiln_engine_whisper::AsrError) -> KilnError {
    use kiln_engine_whisper::AsrError;
    match error {
        AsrError::Model(detail) => KilnError::internal(detail),
        input_error => KilnError::bad_input(input_error.to_string()),
    }
}

impl MediaEngine for WhisperEngine {
    fn task(&self) -> Task {
        Task::SpeechRecognition
    }

    fn run(&mut self, request: MediaRequest, _progress: &WorkProgress) -> KilnResult<MediaOutput> {
        let MediaRequest::Transcribe { audio, options } = request else {
            return Err(wrong_request(self.task()));
        };
        let samples = kiln_engine_whisper::decode_audio(&audio).map_err(asr_error)?;
        let whisper_options = kiln_engine_whisper::TranscribeOptions {
            language: options.language,
            task: if options.translate {
                kiln_engine_whisper::Task::Translate
            } else {
                kiln_engine_whisper::Task::Transcribe
            },
            initial_prompt: options.initial_prompt,
        };
        let transcript = self
            .0
            .transcribe(&samples, &whisper_options)
            .map_err(asr_error)?;
        let vtt = kiln_engine_whisper::to_vtt(&transcript);
        // Words belong to the segment they start in.
        let segments = transcript
            .segments
            .iter()
            .map(|segment| TimedSegment {
                start: segment.start,
                end: segment.end,
                text: segment.text.clone(),
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
                    })
                    .collect(),
            })
            .collect();
        Ok(MediaOutput::Transcription(Transcription {
            text: transcript.text,
            language: transcript.language,
            duration: transcript.duration,
            segments,
            vtt,
        }))
    }
}
