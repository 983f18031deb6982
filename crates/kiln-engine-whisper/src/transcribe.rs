//! Log-mel → encoder → timestamped decoding, in 30 s windows that advance to the last
//! complete timestamp (OpenAI's `transcribe()` loop, with faster-whisper's options): each window
//! is decoded greedily or by beam search (`decode`), again at higher temperatures while the
//! result looks like a hallucination (`fallback`), optionally conditioned on the text before
//! it; `vad_filter` first keeps only the speech (`vad`).

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use candle_transformers::models::whisper as w;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::ct2::Ct2Model;
use crate::decode::{Prompt, Rng, Strategy, WindowDecoder, WindowResult};
use crate::fallback::{self, Attempt, Quality, Thresholds, PROMPT_RESET_TEMPERATURE};
use crate::model::{Precision, WhisperModel};
use crate::options::{Task, TranscribeOptions, MAX_BEAM_SIZE, MAX_BEST_OF};
use crate::output::{round2, words_of, Segment, Transcript};
use crate::rules::{log_softmax, LogitRules, SpecialTokens, TIME_PRECISION};
use crate::AsrError;

/// Mel frames per timestamp step.
const INPUT_STRIDE: usize = 2;
/// Characters of an initial prompt that are tokenized (its end; far more than the ~220
/// tokens a window can be conditioned on), and of a prefix (its start).
const PROMPT_TAIL_CHARS: usize = 4096;
#[derive(Deserialize, Default)]
struct Ct2Config {
    #[serde(default)]
    suppress_ids: Vec<i64>,
    #[serde(default)]
    suppress_ids_begin: Vec<i64>,
    #[serde(default)]
    lang_ids: Vec<u32>,
    /// (decoder layer, head) pairs whose cross-attention follows the speech.
    #[serde(default)]
    alignment_heads: Vec<(usize, usize)>,
}

/// A loaded Whisper model. `Send`, not `Sync`: one transcription at a time.
pub struct Transcriber {
    model: WhisperModel,
    tokenizer: Tokenizer,
    tokens: SpecialTokens,
    suppress: Vec<u32>,
    suppress_begin: Vec<u32>,
    filters: Vec<f32>,
    multilingual: bool,
    alignment_heads: Vec<(usize, usize)>,
    /// The threads a transcription runs on: the whole transcription runs inside this pool, so
    /// the kernels' parallel loops are work-stealing among its threads rather than jobs sent
    /// from an outside thread (a decoder step makes dozens of them).
    pool: Arc<rayon::ThreadPool>,
}

/// How every window's decoder prompt starts.
struct StartOfTranscript {
    language: String,
    /// How sure detection was of `language` (1 when given).
    probability: f32,
    /// `<|startoftranscript|>`, and on multilingual models the language and the task.
    sot_seq: Vec<u32>,
    /// The first window's encoding, when language detection computed it.
    first_features: Option<Tensor>,
}

fn model_err(context: &str) -> impl Fn(String) -> AsrError + '_ {
    move |e| AsrError::Model(format!("{context}: {e}"))
}

impl Transcriber {
    /// Loads `model.bin` (CTranslate2), `config.json` and `tokenizer.json` from `model_dir`,
    /// int8 where the CPU runs it ([`Precision::Auto`]).
    pub fn load(model_dir: &Path) -> Result<Self, AsrError> {
        Self::load_with_precision(model_dir, Precision::Auto)
    }

    /// As [`Self::load`], with the linear layers' precision chosen.
    pub fn load_with_precision(model_dir: &Path, precision: Precision) -> Result<Self, AsrError> {
        let ct2 = Ct2Model::read(&model_dir.join("model.bin"))?;
        let cfg: Ct2Config = match std::fs::read(model_dir.join("config.json")) {
            Ok(raw) => {
                serde_json::from_slice(&raw).map_err(|e| model_err("config.json")(e.to_string()))?
            }
            Err(_) => Ct2Config::default(),
        };
        let tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json"))
            .map_err(|e| model_err("tokenizer.json")(e.to_string()))?;
        let to_u32 = |v: &[i64]| v.iter().filter_map(|&x| u32::try_from(x).ok()).collect();
        let suppress: Vec<u32> = to_u32(&cfg.suppress_ids);
        let config = ct2.whisper_config(suppress.clone())?;
        let tensors = ct2.to_hf_tensors(&config)?;
        drop(ct2);
        let filters = crate::mel::mel_filters(config.num_mel_bins);
        let multilingual = config.vocab_size >= 51865;
        let model = WhisperModel::load(tensors, config, precision)?;
        let (layers, heads) = (model.decoder.layers(), model.decoder.heads());
        let mut alignment_heads: Vec<(usize, usize)> = cfg
            .alignment_heads
            .iter()
            .copied()
            .filter(|&(l, h)| l < layers && h < heads)
            .collect();
        if alignment_heads.is_empty() {
            alignment_heads = crate::words::known_alignment_heads(layers, heads, multilingual);
        }
        let tokens = SpecialTokens::from_tokenizer(&tokenizer, &cfg.lang_ids)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|index| format!("kiln-whisper-{index}"))
            .build()
            .map_err(|e| model_err("threads")(e.to_string()))?;
        Ok(Self {
            pool: Arc::new(pool),
            model,
            tokenizer,
            tokens,
            suppress,
            suppress_begin: to_u32(&cfg.suppress_ids_begin),
            filters,
            multilingual,
            alignment_heads,
        })
    }

    pub fn is_multilingual(&self) -> bool {
        self.multilingual
    }

    /// Transcribes 16 kHz mono samples (see [`crate::decode_audio`]).
    pub fn transcribe(
        &mut self,
        samples_16k: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Transcript, AsrError> {
        self.transcribe_within(samples_16k, options, &|| true)
    }

    /// [`Transcriber::transcribe`], asking `keep_going` before each 30 s window (and every few
    /// decoded tokens): when it returns false the work stops with `AsrError::Stopped`, so a
    /// request past its deadline holds the model for at most one more window step.
    pub fn transcribe_within(
        &mut self,
        samples_16k: &[f32],
        options: &TranscribeOptions,
        keep_going: &(dyn Fn() -> bool + Sync),
    ) -> Result<Transcript, AsrError> {
        let pool = Arc::clone(&self.pool);
        pool.install(|| self.transcribe_in_pool(samples_16k, options, keep_going))
    }

    fn transcribe_in_pool(
        &mut self,
        samples_16k: &[f32],
        options: &TranscribeOptions,
        keep_going: &(dyn Fn() -> bool + Sync),
    ) -> Result<Transcript, AsrError> {
        if samples_16k.is_empty() {
            return Err(AsrError::EmptyAudio);
        }
        let duration = samples_16k.len() as f32 / w::SAMPLE_RATE as f32;
        if !options.vad_filter {
            return self.transcribe_samples(samples_16k, options, keep_going);
        }
        let chunks = crate::vad::speech_chunks(samples_16k);
        let speech = crate::vad::collect(samples_16k, &chunks);
        if speech.is_empty() {
            let language = options.language.clone().unwrap_or_else(|| "en".into());
            return Ok(Transcript {
                text: String::new(),
                language,
                language_probability: 1.0,
                duration,
                duration_after_vad: 0.0,
                segments: Vec::new(),
                words: Vec::new(),
            });
        }
        let mut transcript = self.transcribe_samples(&speech, options, keep_going)?;
        crate::vad::TimeMap::new(&chunks).restore(&mut transcript);
        transcript.duration = duration;
        Ok(transcript)
    }

    fn transcribe_samples(
        &mut self,
        samples_16k: &[f32],
        options: &TranscribeOptions,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<Transcript, AsrError> {
        let duration = samples_16k.len() as f32 / w::SAMPLE_RATE as f32;
        // Mel of the whole recording plus 30 s of silence, so every window is full length.
        let cfg = self.model.config.clone();
        let n_ctx = cfg.max_target_positions;
        let (mel, n_frames) =
            crate::mel::log_mel(samples_16k, cfg.num_mel_bins, &self.filters, keep_going)?;
        let mel = Tensor::from_vec(mel, (1, cfg.num_mel_bins, n_frames), &Device::Cpu)?;
        let content_frames = samples_16k.len() / w::HOP_LENGTH;

        let StartOfTranscript {
            language,
            probability: language_probability,
            sot_seq,
            mut first_features,
        } = self.start_of_transcript(&mel, options, keep_going)?;
        // Text tokens a window may be conditioned on: the initial prompt's, then (with
        // `condition_on_previous_text`) each window's, from `prompt_reset_since` on.
        let (mut all_tokens, forced_first) = self.prompt_and_prefix(options)?;
        let mut prompt_reset_since = 0;
        let thresholds = thresholds_of(options);
        let mut rng = Rng::new(options.seed);

        let mut segments = Vec::new();
        let mut words = Vec::new();
        let mut last_speech = 0f32;
        let mut seek = 0usize;
        while seek < content_frames {
            if !keep_going() {
                return Err(AsrError::Stopped);
            }
            let time_offset = (seek * w::HOP_LENGTH) as f32 / w::SAMPLE_RATE as f32;
            let segment_size = w::N_FRAMES.min(content_frames - seek);
            let window_secs = (segment_size * w::HOP_LENGTH) as f32 / w::SAMPLE_RATE as f32;
            let features = match first_features.take() {
                Some(f) if seek == 0 => f,
                _ => self.encode(&mel, seek, keep_going)?,
            };
            self.model.decoder.set_audio(&features)?;
            let mut previous = Vec::new();
            if let (Some(sot_prev), Some(earlier)) =
                (self.tokens.sot_prev, all_tokens.get(prompt_reset_since..))
            {
                if !earlier.is_empty() {
                    let keep = earlier.len().min((n_ctx / 2).saturating_sub(1));
                    previous.push(sot_prev);
                    previous.extend_from_slice(&earlier[earlier.len() - keep..]);
                }
            }
            let prompt = Prompt {
                previous: &previous,
                sot_seq: &sot_seq,
                forced: if seek == 0 { &forced_first } else { &[] },
            };
            let attempt = self.decode_with_fallback(&prompt, options, &mut rng, keep_going)?;
            if thresholds.is_silence(&attempt.quality) {
                seek += segment_size;
                continue;
            }
            let result = attempt.value;
            let first_new = segments.len();
            let mut ranges = Vec::new();
            let advance = self.split_segments(
                &result,
                time_offset,
                window_secs,
                &mut segments,
                &mut ranges,
            )?;
            for segment in &mut segments[first_new..] {
                segment.temperature = attempt.temperature;
                segment.avg_logprob = attempt.quality.avg_logprob;
                segment.compression_ratio = attempt.quality.compression_ratio;
                segment.no_speech_prob = attempt.quality.no_speech_prob;
            }
            for range in &ranges {
                all_tokens.extend(result.tokens.get(range.clone()).unwrap_or_default());
            }
            // Text decoded hot is likely poor: it prompts nothing.
            if !options.condition_on_previous_text || attempt.temperature > PROMPT_RESET_TEMPERATURE
            {
                prompt_reset_since = all_tokens.len();
            }
            {
                let mut aligner = crate::words::Aligner {
                    decoder: &mut self.model.decoder,
                    tokenizer: &self.tokenizer,
                    special: &self.tokens,
                    heads: &self.alignment_heads,
                    language: &language,
                };
                let window_audio = &samples_16k[(seek * w::HOP_LENGTH).min(samples_16k.len())..];
                let window_audio =
                    &window_audio[..window_audio.len().min(segment_size * w::HOP_LENGTH)];
                let aligned = aligner.align_window(
                    window_audio,
                    &sot_seq,
                    &result.tokens,
                    &result.token_probs,
                    &ranges,
                    &mut segments[first_new..],
                    segment_size,
                    time_offset,
                    &mut last_speech,
                )?;
                // No alignment (no text tokens, or too many to re-read): shared-out times.
                if aligned.is_empty() {
                    words.extend(words_of(&segments[first_new..]));
                }
                words.extend(aligned);
            }
            let advance = advance.unwrap_or(segment_size);
            seek += if advance == 0 { segment_size } else { advance };
        }
        for seg in &mut segments {
            seg.end = round2(seg.end.min(duration));
            seg.start = round2(seg.start.min(seg.end));
        }
        for word in &mut words {
            word.end = round2(word.end.min(duration));
            word.start = round2(word.start.min(word.end));
        }
        segments.retain(|s| !s.text.trim().is_empty());
        let text = segments
            .iter()
            .map(|s| s.text.as_str())
            .collect::<String>()
            .trim()
            .to_string();
        Ok(Transcript {
            text,
            language,
            language_probability,
            duration,
            duration_after_vad: duration,
            segments,
            words,
        })
    }

    /// The start-of-transcript sequence (with the language, given or detected, and the task
    /// on multilingual models).
    fn start_of_transcript(
        &mut self,
        mel: &Tensor,
        options: &TranscribeOptions,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<StartOfTranscript, AsrError> {
        let mut sot_seq = vec![self.tokens.sot];
        if !self.multilingual {
            return Ok(StartOfTranscript {
                language: "en".into(),
                probability: 1.0,
                sot_seq,
                first_features: None,
            });
        }
        let (mut probability, mut features) = (1.0, None);
        let lang = match &options.language {
            Some(code) => self.tokens.language_token(code).ok_or_else(|| {
                AsrError::UnsupportedFormat(format!("unsupported language `{code}`"))
            })?,
            None => {
                let encoded = self.encode(mel, 0, keep_going)?;
                let (lang, p) = self.detect_language(&encoded)?;
                (probability, features) = (p, Some(encoded));
                lang
            }
        };
        let language = self.tokens.language_code(lang).unwrap_or("en").to_string();
        sot_seq.push(lang);
        sot_seq.extend(match options.task {
            Task::Transcribe => self.tokens.transcribe,
            Task::Translate => self.tokens.translate,
        });
        Ok(StartOfTranscript {
            language,
            probability,
            sot_seq,
            first_features: features,
        })
    }

    /// The initial prompt's tokens, and the tokens the first window is forced to start with
    /// (the first timestamp and the prefix's text; at most a quarter of the context, so that
    /// the prompt and the transcript still fit).
    fn prompt_and_prefix(
        &self,
        options: &TranscribeOptions,
    ) -> Result<(Vec<u32>, Vec<u32>), AsrError> {
        let mut prompt = Vec::new();
        if let Some(text) = &options.initial_prompt {
            // Only the prompt's last tokens are kept, so only its tail is tokenized: a huge
            // prompt costs nothing more than a short one.
            let text = text.trim();
            let tail_start = text
                .char_indices()
                .rev()
                .nth(PROMPT_TAIL_CHARS)
                .map_or(0, |(at, _)| at);
            prompt = self.encode_text(&text[tail_start..])?;
        }
        let mut forced = Vec::new();
        if let Some(text) = options.prefix.as_deref().map(str::trim) {
            if !text.is_empty() {
                let head: String = text.chars().take(PROMPT_TAIL_CHARS).collect();
                let mut ids = self.encode_text(&head)?;
                ids.truncate((self.model.config.max_target_positions / 4).saturating_sub(1));
                forced.push(self.tokens.timestamp_begin);
                forced.extend(ids);
            }
        }
        Ok((prompt, forced))
    }

    /// Decodes the window the decoder holds: at temperature 0 (greedy, or beam search), then
    /// by sampling at the fallback temperatures while the result fails the thresholds.
    fn decode_with_fallback(
        &mut self,
        prompt: &Prompt,
        options: &TranscribeOptions,
        rng: &mut Rng,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<Attempt<WindowResult>, AsrError> {
        let beams = options.beam_size.clamp(1, MAX_BEAM_SIZE);
        let best_of = options.best_of.clamp(1, MAX_BEST_OF);
        let (tokenizer, eot) = (&self.tokenizer, self.tokens.eot);
        let mut window = WindowDecoder {
            decoder: &mut self.model.decoder,
            rules: LogitRules {
                tokens: &self.tokens,
                suppress: &self.suppress,
                suppress_begin: &self.suppress_begin,
            },
            keep_going,
        };
        let thresholds = thresholds_of(options);
        fallback::with_fallback(&options.temperatures, &thresholds, |temperature| {
            let strategy = if temperature > 0.0 {
                Strategy::Sample {
                    temperature,
                    best_of,
                }
            } else if beams > 1 {
                Strategy::Beam(beams)
            } else {
                Strategy::Greedy
            };
            let result = window.decode(prompt, strategy, rng)?;
            let text = text_of(tokenizer, eot, &result.tokens)?;
            let quality = Quality {
                avg_logprob: result.avg_logprob,
                compression_ratio: fallback::compression_ratio(text.trim()),
                no_speech_prob: result.no_speech_prob,
            };
            Ok((result, quality))
        })
    }

    /// The tokens of `text` as the model reads running text (after a space).
    fn encode_text(&self, text: &str) -> Result<Vec<u32>, AsrError> {
        let enc = self
            .tokenizer
            .encode(format!(" {}", text.trim()), false)
            .map_err(|e| model_err("tokenizer")(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    fn encode(
        &mut self,
        mel: &Tensor,
        seek: usize,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<Tensor, AsrError> {
        let window = mel.narrow(2, seek, w::N_FRAMES)?;
        self.model.encoder.forward(&window, keep_going)
    }

    /// The likeliest language token and its probability among the languages.
    fn detect_language(&mut self, features: &Tensor) -> Result<(u32, f32), AsrError> {
        let decoder = &mut self.model.decoder;
        decoder.set_audio(features)?;
        let out = decoder.forward(&[self.tokens.sot], &[])?;
        let logits = decoder.logits(&out.hidden, 0)?;
        let languages: Vec<(u32, f32)> = self
            .tokens
            .languages
            .iter()
            .filter_map(|&(_, t)| logits.get(t as usize).map(|&l| (t, l)))
            .collect();
        let values: Vec<f32> = languages.iter().map(|&(_, l)| l).collect();
        let probabilities = log_softmax(&values);
        languages
            .iter()
            .zip(probabilities)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(&(t, _), logprob)| (t, logprob.exp()))
            .ok_or_else(|| AsrError::Model("model has no language tokens".into()))
    }

    /// Cuts a window's tokens into timestamped segments; returns how many mel frames to advance
    /// (`None`: the whole window).
    fn split_segments(
        &self,
        window: &WindowResult,
        time_offset: f32,
        window_secs: f32,
        segments: &mut Vec<Segment>,
        ranges: &mut Vec<std::ops::Range<usize>>,
    ) -> Result<Option<usize>, AsrError> {
        let tokens = window.tokens.as_slice();
        let ts_begin = self.tokens.timestamp_begin;
        let is_ts = |t: u32| t >= ts_begin;
        let time_of = |t: u32| (t - ts_begin) as f32 * TIME_PRECISION;
        let n = tokens.len();
        let single_timestamp_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
        let mut slices: Vec<usize> = (1..n)
            .filter(|&i| is_ts(tokens[i - 1]) && is_ts(tokens[i]))
            .collect();
        if slices.is_empty() {
            let mut end = window_secs;
            if let Some(&last) = tokens.iter().rev().find(|&&t| is_ts(t)) {
                if last != ts_begin {
                    end = time_of(last);
                }
            }
            let text = self.text_of(tokens)?;
            segments.push(Segment {
                start: time_offset,
                end: time_offset + end,
                text,
                word_probabilities: self.word_probabilities(tokens, &window.token_probs),
                ..Segment::default()
            });
            ranges.push(0..n);
            return Ok(None);
        }
        if single_timestamp_ending {
            slices.push(n);
        }
        let mut last_slice = 0;
        for &cut in &slices {
            let part = &tokens[last_slice..cut];
            if let (Some(&first), Some(&last)) = (part.first(), part.last()) {
                let start = if is_ts(first) { time_of(first) } else { 0.0 };
                let end = if is_ts(last) { time_of(last) } else { start };
                segments.push(Segment {
                    start: time_offset + start,
                    end: time_offset + end,
                    text: self.text_of(part)?,
                    word_probabilities: self.word_probabilities(
                        part,
                        window.token_probs.get(last_slice..cut).unwrap_or_default(),
                    ),
                    ..Segment::default()
                });
                ranges.push(last_slice..cut);
            }
            last_slice = cut;
        }
        if single_timestamp_ending {
            return Ok(None);
        }
        let last_ts = tokens[last_slice - 1];
        Ok(Some(
            (last_ts.saturating_sub(ts_begin)) as usize * INPUT_STRIDE,
        ))
    }

    /// Each word's probability, the mean over its text tokens (as openai-whisper's word
    /// timestamps do); a token that starts with a space (`Ġ`) starts a word.
    fn word_probabilities(&self, tokens: &[u32], probs: &[f32]) -> Vec<f32> {
        let mut words: Vec<(f32, usize)> = Vec::new();
        for (&token, &prob) in tokens.iter().zip(probs) {
            if token >= self.tokens.eot {
                continue;
            }
            let piece = self.tokenizer.id_to_token(token).unwrap_or_default();
            match words.last_mut() {
                Some((sum, count)) if !piece.starts_with('Ġ') => {
                    *sum += prob;
                    *count += 1;
                }
                _ => words.push((prob, 1)),
            }
        }
        words
            .into_iter()
            .map(|(sum, count)| sum / count as f32)
            .collect()
    }

    fn text_of(&self, tokens: &[u32]) -> Result<String, AsrError> {
        text_of(&self.tokenizer, self.tokens.eot, tokens)
    }
}

fn thresholds_of(options: &TranscribeOptions) -> Thresholds {
    Thresholds {
        compression_ratio: options.compression_ratio_threshold,
        log_prob: options.log_prob_threshold,
        no_speech: options.no_speech_threshold,
    }
}

/// The text of `tokens` (special tokens and timestamps left out).
fn text_of(tokenizer: &Tokenizer, eot: u32, tokens: &[u32]) -> Result<String, AsrError> {
    let text: Vec<u32> = tokens.iter().copied().filter(|&t| t < eot).collect();
    tokenizer
        .decode(&text, true)
        .map_err(|e| model_err("tokenizer")(e.to_string()))
}
