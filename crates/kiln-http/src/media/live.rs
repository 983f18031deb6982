//! The core of live transcription (`@cf/deepgram/nova-3` over a WebSocket): Deepgram's
//! streaming options, an energy VAD that cuts the stream into utterances, and Deepgram's
//! `Results` message. The transport (the upgrade, frames, `CloseStream`) is not wired yet:
//! see the design in docs/speech.md, "Live transcription".

use kiln_core::media::Transcription;
use kiln_core::vad::{rms_i16, EnergyGate, FRAME_MS};
use kiln_core::{KilnError, KilnResult};
use serde_json::{json, Value};

use super::deepgram::{self, NovaOptions, RawAudio};

/// Audio kept from before speech starts, so the utterance has its onset.
const PRE_ROLL_MS: u32 = 200;
/// Speech shorter than this is a click, not an utterance.
const MIN_SPEECH_MS: u32 = 100;
/// An interim result every this much new speech.
const INTERIM_EVERY_MS: u32 = 1_000;
/// An utterance this long is finalized even without a pause (Whisper hears 30 s at a time).
const MAX_UTTERANCE_MS: u32 = 25_000;

/// What a live session was asked for: the stream's raw encoding and Deepgram's options.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveOptions {
    pub nova: NovaOptions,
    pub audio: RawAudio,
    pub interim_results: bool,
    /// Silence that ends an utterance (`endpointing`, default 500 ms here; at least 100).
    pub endpointing_ms: u32,
    /// Send `SpeechStarted` messages.
    pub vad_events: bool,
}

/// The options from a live request's query (REST) or the binding's `inputs`.
pub fn live_options(
    fields: Option<&serde_json::Map<String, Value>>,
    query: Option<&str>,
) -> KilnResult<LiveOptions> {
    let nova = deepgram::options(fields, query)?;
    let audio = nova.raw.ok_or_else(|| {
        KilnError::bad_input(
            "live audio must be raw: give encoding (linear16, mulaw or alaw) and sample_rate",
        )
    })?;
    // The few streaming options the pre-recorded reader does not keep.
    let lookup = |name: &str| -> Option<String> {
        let field = fields.and_then(|f| f.get(name)).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        field.or_else(|| {
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        })
    };
    let flag = |name: &str| lookup(name).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let endpointing_ms = match lookup("endpointing").as_deref() {
        None | Some("true") => 500,
        // `false` turns endpointing off: utterances end at the length limit or on request.
        Some("false") => MAX_UTTERANCE_MS,
        Some(ms) => ms.trim().parse::<u32>().map_err(|_| {
            KilnError::bad_input(format!(
                "'endpointing' must be milliseconds or false, not {ms:?}"
            ))
        })?,
    }
    .clamp(100, MAX_UTTERANCE_MS);
    Ok(LiveOptions {
        nova,
        audio,
        interim_results: flag("interim_results"),
        endpointing_ms,
        vad_events: flag("vad_events"),
    })
}

/// What the segmenter saw in the audio it was given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Speech began, this many seconds into the stream.
    SpeechStarted(f32),
    /// Time for an interim result of the utterance so far.
    Interim,
    /// The utterance is complete: after a pause (`speech_final`) or at the length limit.
    Final { speech_final: bool },
}

/// Cuts a mono 16-bit stream into utterances by frame energy ([`EnergyGate`]): `endpointing_ms`
/// of non-speech after at least `MIN_SPEECH_MS` of speech ends the utterance.
pub struct Segmenter {
    rate: u32,
    frame_len: usize,
    /// Samples of the frame being filled.
    pending: Vec<i16>,
    gate: EnergyGate,
    /// Samples seen so far, over the whole stream.
    position: u64,
    /// The utterance (with pre-roll) while speech goes on; else the last `PRE_ROLL_MS`.
    audio: Vec<i16>,
    start: u64,
    in_speech: bool,
    speech_ms: u32,
    silence_ms: u32,
    since_interim_ms: u32,
    endpointing_ms: u32,
    /// Utterances that ended, with their start, oldest first.
    done: std::collections::VecDeque<(Vec<i16>, f32)>,
}

impl Segmenter {
    pub fn new(rate: u32, endpointing_ms: u32) -> Self {
        Self {
            rate,
            frame_len: (rate * FRAME_MS / 1000).max(1) as usize,
            pending: Vec::new(),
            gate: EnergyGate::default(),
            position: 0,
            audio: Vec::new(),
            start: 0,
            in_speech: false,
            speech_ms: 0,
            silence_ms: 0,
            since_interim_ms: 0,
            endpointing_ms,
            done: std::collections::VecDeque::new(),
        }
    }

    /// Feeds samples; says what happened, in order.
    pub fn push(&mut self, samples: &[i16]) -> Vec<Step> {
        let mut steps = Vec::new();
        for &sample in samples {
            self.pending.push(sample);
            if self.pending.len() == self.frame_len {
                let frame = std::mem::take(&mut self.pending);
                self.frame(&frame, &mut steps);
            }
        }
        steps
    }

    fn frame(&mut self, frame: &[i16], steps: &mut Vec<Step>) {
        let speech = self.gate.is_speech(rms_i16(frame));
        let frame_start = self.position;
        self.position += frame.len() as u64;
        if !self.in_speech {
            self.audio.extend_from_slice(frame);
            let keep = (self.rate * PRE_ROLL_MS / 1000) as usize;
            if self.audio.len() > keep {
                self.audio.drain(..self.audio.len() - keep);
            }
            if speech {
                self.in_speech = true;
                self.start = self.position - self.audio.len() as u64;
                self.speech_ms = FRAME_MS;
                self.silence_ms = 0;
                self.since_interim_ms = 0;
                steps.push(Step::SpeechStarted(self.seconds(frame_start)));
            }
            return;
        }
        self.audio.extend_from_slice(frame);
        self.since_interim_ms += FRAME_MS;
        if speech {
            self.speech_ms += FRAME_MS;
            self.silence_ms = 0;
        } else {
            self.silence_ms += FRAME_MS;
        }
        let length_ms = (self.audio.len() as u64 * 1000 / u64::from(self.rate)) as u32;
        if self.silence_ms >= self.endpointing_ms {
            if self.speech_ms >= MIN_SPEECH_MS {
                self.complete();
                steps.push(Step::Final { speech_final: true });
            } else {
                self.reset();
            }
        } else if length_ms >= MAX_UTTERANCE_MS {
            self.complete();
            steps.push(Step::Final {
                speech_final: false,
            });
        } else if self.since_interim_ms >= INTERIM_EVERY_MS {
            self.since_interim_ms = 0;
            steps.push(Step::Interim);
        }
    }

    fn seconds(&self, sample: u64) -> f32 {
        (sample as f64 / f64::from(self.rate)) as f32
    }

    fn reset(&mut self) {
        self.in_speech = false;
        self.audio.clear();
        self.speech_ms = 0;
        self.silence_ms = 0;
    }

    /// The utterance so far and where it starts (seconds); `None` outside speech.
    pub fn current(&self) -> Option<(&[i16], f32)> {
        self.in_speech
            .then(|| (self.audio.as_slice(), self.seconds(self.start)))
    }

    /// Moves the utterance to `done`.
    fn complete(&mut self) {
        let audio = std::mem::take(&mut self.audio);
        let start = self.seconds(self.start);
        self.done.push_back((audio, start));
        self.reset();
    }

    /// The oldest utterance that ended (one per `Final`), with its start in seconds.
    pub fn take(&mut self) -> Option<(Vec<i16>, f32)> {
        self.done.pop_front()
    }

    /// Ends the utterance now (`Finalize`, `CloseStream`), with the samples not yet framed;
    /// `None` when no speech was going on.
    pub fn finish(&mut self) -> Option<(Vec<i16>, f32)> {
        let pending = std::mem::take(&mut self.pending);
        self.position += pending.len() as u64;
        if !self.in_speech || self.speech_ms < MIN_SPEECH_MS {
            self.reset();
            return None;
        }
        self.audio.extend_from_slice(&pending);
        self.complete();
        self.done.pop_back()
    }

    /// Seconds of audio received.
    pub fn elapsed(&self) -> f32 {
        self.seconds(self.position + self.pending.len() as u64)
    }
}

/// Deepgram's `Results` message for an utterance that starts `start` seconds into the stream
/// and lasts `duration`.
#[allow(clippy::too_many_arguments)]
pub fn results_message(
    transcription: &Transcription,
    options: &LiveOptions,
    start: f32,
    duration: f32,
    is_final: bool,
    speech_final: bool,
    request_id: &str,
    (arch, served): (&str, &str),
) -> Value {
    let alternative = deepgram::live_alternative(transcription, &options.nova, start);
    let (model_uuid, model_info) = deepgram::model_info(arch, served);
    let round = |x: f32| (f64::from(x) * 1000.0).round() / 1000.0;
    json!({
        "type": "Results",
        "channel_index": [0, 1],
        "duration": round(duration),
        "start": round(start),
        "is_final": is_final,
        "speech_final": speech_final,
        "from_finalize": is_final && !speech_final,
        "channel": {"alternatives": [alternative]},
        "metadata": {"request_id": request_id, "model_info": model_info, "model_uuid": model_uuid},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ms` of a 300 Hz tone at `amplitude`, at 16 kHz.
    fn tone(ms: u32, amplitude: f32) -> Vec<i16> {
        (0..16 * ms)
            .map(|i| {
                ((i as f32 * 300.0 * std::f32::consts::TAU / 16_000.0).sin() * amplitude) as i16
            })
            .collect()
    }

    #[test]
    fn utterances_end_at_pauses_with_interims_between() {
        let mut segmenter = Segmenter::new(16_000, 300);
        let mut steps = segmenter.push(&tone(500, 20.0)); // quiet room
        assert!(steps.is_empty(), "{steps:?}");
        steps.extend(segmenter.push(&tone(2_500, 8_000.0)));
        assert!(matches!(steps[0], Step::SpeechStarted(at) if (0.49..0.53).contains(&at)));
        assert_eq!(
            steps.iter().filter(|s| **s == Step::Interim).count(),
            2,
            "{steps:?}"
        );
        let (audio, start) = segmenter.current().expect("in speech");
        assert!((0.29..0.33).contains(&start) && audio.len() > 16 * 2_500);
        // A 400 ms pause ends it.
        let steps = segmenter.push(&tone(400, 20.0));
        assert_eq!(steps, [Step::Final { speech_final: true }]);
        let (audio, start) = segmenter.take().expect("an utterance");
        assert!((0.29..0.33).contains(&start));
        assert!(audio.len() >= 16 * 2_800, "{}", audio.len());
        assert!(segmenter.current().is_none());
        // A click is no utterance.
        segmenter.push(&tone(40, 8_000.0));
        assert!(segmenter.push(&tone(400, 20.0)).is_empty());
        assert!(segmenter.take().is_none() && segmenter.finish().is_none());
        // Finalize mid-speech hands over what was heard.
        segmenter.push(&tone(500, 8_000.0));
        let (audio, _) = segmenter.finish().expect("the utterance so far");
        assert!(audio.len() >= 16 * 500, "{}", audio.len());
        assert!(
            (segmenter.elapsed() - 4.34).abs() < 0.01,
            "{}",
            segmenter.elapsed()
        );
    }

    #[test]
    fn live_options_need_raw_audio() {
        let query = "encoding=linear16&sample_rate=16000&interim_results=true&endpointing=300";
        let options = live_options(None, Some(query)).unwrap();
        assert!(options.interim_results && !options.vad_events);
        assert_eq!(
            (options.endpointing_ms, options.audio.sample_rate),
            (300, 16_000)
        );
        assert!(live_options(None, Some("interim_results=true")).is_err());
        assert!(live_options(
            None,
            Some("encoding=linear16&sample_rate=8000&endpointing=x")
        )
        .is_err());
    }
}
