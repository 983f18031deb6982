//! Log-mel → encoder → greedy timestamped decoding, in 30 s windows that advance to the last
//! complete timestamp (OpenAI's `transcribe()` loop).

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_transformers::models::whisper as w;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::ct2::Ct2Model;
use crate::model::WhisperModel;
use crate::output::{round2, words_of, Segment, Transcript};
use crate::rules::{argmax, log_softmax, LogitRules, SpecialTokens, TIME_PRECISION};
use crate::AsrError;

const NO_SPEECH_THRESHOLD: f32 = 0.6;
const LOGPROB_THRESHOLD: f32 = -1.0;
/// Mel frames per timestamp step.
const INPUT_STRIDE: usize = 2;
/// Characters of an initial prompt that are tokenized (its end; far more than the ~220
/// tokens a window can be conditioned on).
const PROMPT_TAIL_CHARS: usize = 4096;
/// Decoder steps between two progress checks inside a window.
const TOKENS_PER_CHECK: usize = 32;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Task {
    #[default]
    Transcribe,
    /// Translate to English (multilingual models only; ignored by `.en` models).
    Translate,
}

#[derive(Debug, Clone, Default)]
pub struct TranscribeOptions {
    /// ISO code such as "en"; `None` detects it (multilingual models).
    pub language: Option<String>,
    pub task: Task,
    /// Text the first window is conditioned on (spelling, names, style).
    pub initial_prompt: Option<String>,
}

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
}

struct WindowResult {
    tokens: Vec<u32>,
    /// The probability the decoder gave each of `tokens`.
    token_probs: Vec<f32>,
    avg_logprob: f32,
    no_speech_prob: f32,
}

fn model_err(context: &str) -> impl Fn(String) -> AsrError + '_ {
    move |e| AsrError::Model(format!("{context}: {e}"))
}

impl Transcriber {
    /// Loads `model.bin` (CTranslate2), `config.json` and `tokenizer.json` from `model_dir`.
    pub fn load(model_dir: &Path) -> Result<Self, AsrError> {
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
        let model = WhisperModel::load(tensors, config)?;
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
        Ok(Self {
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
        keep_going: &dyn Fn() -> bool,
    ) -> Result<Transcript, AsrError> {
        if samples_16k.is_empty() {
            return Err(AsrError::EmptyAudio);
        }
        let duration = samples_16k.len() as f32 / w::SAMPLE_RATE as f32;
        // Mel of the whole recording plus 30 s of silence, so every window is full length.
        let cfg = self.model.config.clone();
        let (mel, n_frames) =
            crate::mel::log_mel(samples_16k, cfg.num_mel_bins, &self.filters, keep_going)?;
        let mel = Tensor::from_vec(mel, (1, cfg.num_mel_bins, n_frames), &Device::Cpu)?;
        let content_frames = samples_16k.len() / w::HOP_LENGTH;

        let mut language = "en".to_string();
        let mut sot_seq = vec![self.tokens.sot];
        // The first window's encoding, when language detection already computed it.
        let mut first_features = None;
        if self.multilingual {
            let lang = match &options.language {
                Some(code) => self.tokens.language_token(code).ok_or_else(|| {
                    AsrError::UnsupportedFormat(format!("unsupported language `{code}`"))
                })?,
                None => {
                    let features = self.encode(&mel, 0)?;
                    let lang = self.detect_language(&features)?;
                    first_features = Some(features);
                    lang
                }
            };
            language = self.tokens.language_code(lang).unwrap_or("en").to_string();
            sot_seq.push(lang);
            let task = match options.task {
                Task::Transcribe => self.tokens.transcribe,
                Task::Translate => self.tokens.translate,
            };
            sot_seq.extend(task);
        }
        let mut prompt: Vec<u32> = Vec::new();
        if let (Some(text), Some(sot_prev)) = (&options.initial_prompt, self.tokens.sot_prev) {
            // Only the prompt's last tokens are kept, so only its tail is tokenized: a huge
            // prompt costs nothing more than a short one.
            let text = text.trim();
            let tail_start = text
                .char_indices()
                .rev()
                .nth(PROMPT_TAIL_CHARS)
                .map_or(0, |(at, _)| at);
            let text = format!(" {}", &text[tail_start..]);
            let enc = self
                .tokenizer
                .encode(text, false)
                .map_err(|e| model_err("tokenizer")(e.to_string()))?;
            let ids = enc.get_ids();
            let keep = ids.len().min(cfg.max_target_positions / 2 - 1);
            prompt.push(sot_prev);
            prompt.extend_from_slice(&ids[ids.len() - keep..]);
        }

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
                _ => self.encode(&mel, seek)?,
            };
            let result = self.decode_window(&features, &prompt, &sot_seq, keep_going)?;
            // The initial prompt conditions the first window only (no conditioning on
            // previous text: it costs decoder time and feeds repetition loops).
            prompt.clear();
            if result.no_speech_prob > NO_SPEECH_THRESHOLD && result.avg_logprob < LOGPROB_THRESHOLD
            {
                seek += segment_size;
                continue;
            }
            let first_new = segments.len();
            let mut ranges = Vec::new();
            let advance = self.split_segments(
                &result,
                time_offset,
                window_secs,
                &mut segments,
                &mut ranges,
            )?;
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
            duration,
            segments,
            words,
        })
    }

    fn encode(&mut self, mel: &Tensor, seek: usize) -> Result<Tensor, AsrError> {
        let window = mel.narrow(2, seek, w::N_FRAMES)?;
        Ok(self.model.encoder.forward(&window)?)
    }

    fn detect_language(&mut self, features: &Tensor) -> Result<u32, AsrError> {
        let decoder = &mut self.model.decoder;
        decoder.set_audio(features)?;
        let out = decoder.forward(&[self.tokens.sot], &[])?;
        let logits = decoder.logits(&out.hidden, 0)?;
        self.tokens
            .languages
            .iter()
            .filter(|(_, t)| (*t as usize) < logits.len())
            .max_by(|a, b| logits[a.1 as usize].total_cmp(&logits[b.1 as usize]))
            .map(|(_, t)| *t)
            .ok_or_else(|| AsrError::Model("model has no language tokens".into()))
    }

    fn decode_window(
        &mut self,
        features: &Tensor,
        prompt: &[u32],
        sot_seq: &[u32],
        keep_going: &dyn Fn() -> bool,
    ) -> Result<WindowResult, AsrError> {
        let rules = LogitRules {
            tokens: &self.tokens,
            suppress: &self.suppress,
            suppress_begin: &self.suppress_begin,
        };
        let n_ctx = self.model.config.max_target_positions;
        let mut tokens: Vec<u32> = prompt.iter().chain(sot_seq).copied().collect();
        let sample_begin = tokens.len();
        let sot_index = prompt.len();
        let max_len = (sample_begin + n_ctx / 2).min(n_ctx);
        let mut sum_logprob = 0f32;
        let mut token_probs = Vec::new();
        let mut no_speech_prob = 0f32;
        let mut step = 0;
        self.model.decoder.set_audio(features)?;
        while tokens.len() < max_len {
            if step % TOKENS_PER_CHECK == TOKENS_PER_CHECK - 1 && !keep_going() {
                return Err(AsrError::Stopped);
            }
            let decoder = &mut self.model.decoder;
            // The first step runs the whole prompt; later ones only the newest token.
            let new = if step == 0 {
                &tokens[..]
            } else {
                &tokens[tokens.len() - 1..]
            };
            let out = decoder.forward(new, &[])?;
            if step == 0 {
                if let Some(ns) = self.tokens.no_speech {
                    let at_sot = log_softmax(&decoder.logits(&out.hidden, sot_index)?);
                    no_speech_prob = at_sot.get(ns as usize).map_or(0.0, |x| x.exp());
                }
            }
            let mut logits = decoder.logits(&out.hidden, out.hidden.dim(0)? - 1)?;
            rules.apply(&mut logits, &tokens[sample_begin..]);
            let logprobs = log_softmax(&logits);
            let next = argmax(&logits) as u32;
            sum_logprob += logprobs[next as usize];
            token_probs.push(logprobs[next as usize].exp());
            step += 1;
            if next == self.tokens.eot {
                break;
            }
            tokens.push(next);
        }
        let sampled = tokens.split_off(sample_begin);
        Ok(WindowResult {
            avg_logprob: sum_logprob / (sampled.len() + 1) as f32,
            tokens: sampled,
            token_probs,
            no_speech_prob,
        })
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
        let text: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|&t| t < self.tokens.eot)
            .collect();
        self.tokenizer
            .decode(&text, true)
            .map_err(|e| model_err("tokenizer")(e.to_string()))
    }
}
