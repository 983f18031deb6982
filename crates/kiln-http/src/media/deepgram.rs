//! Deepgram's pre-recorded speech recognition (spec §3.7: `@cf/deepgram/nova-3`, and `flux`
//! leniently) on the local Whisper engine. The audio comes as a binary body (a file, or raw
//! `linear16`/`mulaw`/`alaw` with `encoding` and `sample_rate`) or as JSON `{audio, ...}` where
//! `audio` is `{body, contentType}`, base64 or bytes. Deepgram's query options come as URL
//! query parameters (REST) or as fields beside `audio` (the binding, JSON); fields win. The
//! answer is Deepgram's `{metadata, results: {channels: [{alternatives: [...]}]}}`.

use kiln_core::media::{TranscribeOptions, Transcription};
use kiln_core::{KilnError, KilnResult};
use serde_json::{json, Map, Value};

use super::encode::{self, WavFormat};

/// Deepgram's options that change Kiln's answer; the others are accepted and ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct NovaOptions {
    /// `punctuate` or `smart_format`: punctuation and capitals in `transcript` and each
    /// word's `punctuated_word` (Whisper formats numbers itself, so the two are the same here).
    pub punctuate: bool,
    /// Whisper's language code; `None` (absent, `multi`, `detect_language`) detects it.
    pub language: Option<String>,
    pub paragraphs: bool,
    pub utterances: bool,
    /// Seconds of silence that end an utterance (`utt_split`, default 0.8).
    pub utt_split: f32,
    /// Every word is speaker 0: Kiln does not tell voices apart.
    pub diarize: bool,
    /// `keyterm`s, given to Whisper as its initial prompt.
    pub keyterms: Vec<String>,
    /// How raw (headerless) audio is encoded.
    pub raw: Option<RawAudio>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawAudio {
    pub format: WavFormat,
    pub sample_rate: u32,
    pub channels: u16,
}

/// The options from `fields` (the JSON input, when there is one) over `query`.
pub fn options(
    fields: Option<&Map<String, Value>>,
    query: Option<&str>,
) -> KilnResult<NovaOptions> {
    let query: Vec<(String, String)> = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let get = |name: &str| -> Option<Value> {
        fields
            .and_then(|f| f.get(name).cloned())
            .filter(|v| !v.is_null())
            .or_else(|| {
                query
                    .iter()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| Value::String(value.clone()))
            })
    };
    let flag = |name: &str| -> KilnResult<bool> {
        match get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
            Some(other) => Err(KilnError::bad_input(format!(
                "'{name}' must be true or false, not {other}"
            ))),
        }
    };
    let number =
        |name: &str| -> KilnResult<Option<f64>> {
            match get(name) {
                None => Ok(None),
                Some(Value::Number(n)) => Ok(n.as_f64()),
                Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
                    KilnError::bad_input(format!("'{name}' must be a number, not {s:?}"))
                }),
                Some(other) => Err(KilnError::bad_input(format!(
                    "'{name}' must be a number, not {other}"
                ))),
            }
        };
    let text = |name: &str| -> KilnResult<Option<String>> {
        match get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(KilnError::bad_input(format!(
                "'{name}' must be text, not {other}"
            ))),
        }
    };

    let language = match text("language")? {
        _ if flag("detect_language")? => None,
        None => None,
        Some(code) if code.eq_ignore_ascii_case("multi") => None,
        // `en-US`, `pt-BR`: Whisper knows the language, not the region.
        Some(code) => Some(
            code.split(['-', '_'])
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase(),
        ),
    };
    let utt_split = number("utt_split")?.unwrap_or(0.8);
    if !(0.0..=60.0).contains(&utt_split) {
        return Err(KilnError::bad_input(format!(
            "'utt_split' must be 0–60 seconds, not {utt_split}"
        )));
    }
    let mut keyterms: Vec<String> = query
        .iter()
        .filter(|(key, _)| key == "keyterm" || key == "keywords")
        .map(|(_, value)| value.clone())
        .collect();
    match fields.and_then(|f| f.get("keyterm")) {
        Some(Value::String(term)) => keyterms = vec![term.clone()],
        Some(Value::Array(terms)) => {
            keyterms = terms
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        }
        _ => {}
    }
    Ok(NovaOptions {
        punctuate: flag("punctuate")? || flag("smart_format")? || flag("paragraphs")?,
        language,
        paragraphs: flag("paragraphs")?,
        utterances: flag("utterances")?,
        utt_split: utt_split as f32,
        diarize: flag("diarize")?,
        keyterms,
        raw: raw_audio(
            text("encoding")?,
            number("sample_rate")?,
            number("channels")?,
        )?,
    })
}

fn raw_audio(
    encoding: Option<String>,
    sample_rate: Option<f64>,
    channels: Option<f64>,
) -> KilnResult<Option<RawAudio>> {
    let Some(encoding) = encoding else {
        return Ok(None);
    };
    let format = match encoding.as_str() {
        "linear16" => WavFormat::Pcm16,
        "mulaw" => WavFormat::Mulaw,
        "alaw" => WavFormat::Alaw,
        // Files say what they are; the decoder reads these from their headers.
        "flac" | "opus" | "ogg-opus" | "mp3" | "wav" => return Ok(None),
        other => {
            return Err(KilnError::bad_input(format!(
                "encoding {other:?} is not decoded here: send raw linear16, mulaw or alaw \
                 audio, or a file (wav, mp3, flac, ogg)"
            )))
        }
    };
    let sample_rate = sample_rate
        .filter(|r| r.fract() == 0.0 && (1_000.0..=384_000.0).contains(r))
        .ok_or_else(|| {
            KilnError::bad_input(format!(
                "raw {encoding} audio needs 'sample_rate' (Hz, 1000–384000)"
            ))
        })? as u32;
    let channels = channels.unwrap_or(1.0);
    if channels.fract() != 0.0 || !(1.0..=16.0).contains(&channels) {
        return Err(KilnError::bad_input(format!(
            "'channels' must be 1–16, not {channels}"
        )));
    }
    Ok(Some(RawAudio {
        format,
        sample_rate,
        channels: channels as u16,
    }))
}

/// `audio` as a file the decoder reads: raw samples get a WAV header; files (which say what
/// they are) pass as they are, whatever `encoding` said.
pub fn as_file(audio: Vec<u8>, raw: Option<RawAudio>) -> Vec<u8> {
    let Some(raw) = raw.filter(|_| !is_file(&audio)) else {
        return audio;
    };
    encode::wav(&audio, raw.format, raw.sample_rate, raw.channels)
}

fn is_file(audio: &[u8]) -> bool {
    let magic = |m: &[u8]| audio.starts_with(m);
    magic(b"RIFF")
        || magic(b"fLaC")
        || magic(b"OggS")
        || magic(b"ID3")
        || magic(&[0x1A, 0x45, 0xDF, 0xA3])
        || audio.get(4..8) == Some(b"ftyp")
        || (audio.len() > 2 && audio[0] == 0xFF && audio[1] & 0xE0 == 0xE0)
}

/// What Whisper is asked.
pub fn transcribe_options(options: &NovaOptions) -> TranscribeOptions {
    TranscribeOptions {
        language: options.language.clone(),
        translate: false,
        initial_prompt: (!options.keyterms.is_empty()).then(|| options.keyterms.join(", ")),
        ..TranscribeOptions::default()
    }
}

/// One word as Deepgram gives it.
struct Word<'a> {
    /// Lower case, without punctuation.
    word: String,
    /// As Whisper wrote it.
    punctuated: &'a str,
    start: f32,
    end: f32,
    confidence: f32,
}

/// f32 seconds and probabilities as JSON numbers without f32's tail (0.9, not 0.8999999761).
fn round(x: f32, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (f64::from(x) * scale).round() / scale
}

impl Word<'_> {
    fn json(&self, options: &NovaOptions) -> Value {
        let mut word = json!({
            "word": self.word, "start": round(self.start, 3), "end": round(self.end, 3),
            "confidence": round(self.confidence, 4),
        });
        if options.punctuate {
            word["punctuated_word"] = json!(self.punctuated);
        }
        if options.diarize {
            word["speaker"] = json!(0);
            word["speaker_confidence"] = json!(1.0);
        }
        word
    }
}

fn transcript(words: &[Word], options: &NovaOptions) -> String {
    let texts: Vec<&str> = words
        .iter()
        .map(|w| {
            if options.punctuate {
                w.punctuated
            } else {
                w.word.as_str()
            }
        })
        .collect();
    texts.join(" ")
}

fn mean_confidence(words: &[Word]) -> f64 {
    if words.is_empty() {
        return 0.0;
    }
    round(
        words.iter().map(|w| w.confidence).sum::<f32>() / words.len() as f32,
        4,
    )
}

/// Runs of words with less than `gap` seconds of silence between them.
fn runs<'w, 'a>(words: &'w [Word<'a>], gap: f32) -> Vec<&'w [Word<'a>]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=words.len() {
        if i == words.len() || words[i].start - words[i - 1].end >= gap {
            if i > start {
                out.push(&words[start..i]);
            }
            start = i;
        }
    }
    out
}

/// Deepgram's `paragraphs`: paragraphs split at pauses of a second or more, sentences at
/// `.`, `?` and `!`.
fn paragraphs(words: &[Word]) -> Value {
    let mut text = String::new();
    let mut list = Vec::new();
    for paragraph in runs(words, 1.0) {
        let mut sentences = Vec::new();
        let mut from = 0;
        for (i, word) in paragraph.iter().enumerate() {
            let ends = word.punctuated.ends_with(['.', '?', '!']);
            if ends || i + 1 == paragraph.len() {
                let sentence = &paragraph[from..=i];
                let words: Vec<&str> = sentence.iter().map(|w| w.punctuated).collect();
                sentences.push(json!({
                    "text": words.join(" "),
                    "start": round(sentence[0].start, 3),
                    "end": round(word.end, 3),
                }));
                from = i + 1;
            }
        }
        let sentence_texts: Vec<&str> = sentences
            .iter()
            .filter_map(|s| s["text"].as_str())
            .collect();
        text.push('\n');
        text.push_str(&sentence_texts.join(" "));
        text.push('\n');
        list.push(json!({
            "sentences": sentences,
            "num_words": paragraph.len(),
            "start": round(paragraph[0].start, 3),
            "end": round(paragraph[paragraph.len() - 1].end, 3),
        }));
    }
    json!({"transcript": text, "paragraphs": list})
}

/// The transcription's words, `offset` seconds later (a live utterance's start).
fn words_of(transcription: &Transcription, offset: f32) -> Vec<Word<'_>> {
    transcription
        .segments
        .iter()
        .flat_map(|segment| &segment.words)
        .filter_map(|w| {
            let punctuated = w.word.trim();
            let word = punctuated
                .trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase();
            (!word.is_empty()).then_some(Word {
                word,
                punctuated,
                start: w.start + offset,
                end: w.end + offset,
                confidence: w.confidence.clamp(0.0, 1.0),
            })
        })
        .collect()
}

/// One alternative: `{transcript, confidence, words}`.
fn alternative(words: &[Word], options: &NovaOptions) -> Value {
    json!({
        "transcript": transcript(words, options),
        "confidence": mean_confidence(words),
        "words": words.iter().map(|w| w.json(options)).collect::<Vec<_>>(),
    })
}

/// The alternative for a live utterance that starts `offset` seconds into the stream.
pub fn live_alternative(
    transcription: &Transcription,
    options: &NovaOptions,
    offset: f32,
) -> Value {
    alternative(&words_of(transcription, offset), options)
}

/// Deepgram's model id and `model_info` for the local model `served` standing in for `arch`.
pub fn model_info(arch: &str, served: &str) -> (String, Value) {
    let id = uuid(model_key(served));
    let info = json!({"name": format!("general-{arch}"), "version": served, "arch": arch});
    (id, info)
}

/// Deepgram's answer for `transcription`. `arch` is the model asked for (`nova-3`), `served`
/// the local model that listened.
pub fn result(
    transcription: &Transcription,
    options: &NovaOptions,
    arch: &str,
    served: &str,
) -> Value {
    let words = words_of(transcription, 0.0);
    let mut best = alternative(&words, options);
    if options.paragraphs {
        best["paragraphs"] = paragraphs(&words);
    }
    let mut channel = json!({"alternatives": [best]});
    if options.language.is_none() {
        channel["detected_language"] = json!(transcription.language);
    }
    let mut results = json!({"channels": [channel]});
    if options.utterances {
        let utterances: Vec<Value> = runs(&words, options.utt_split)
            .into_iter()
            .map(|run| {
                let mut utterance = json!({
                    "start": round(run[0].start, 3),
                    "end": round(run[run.len() - 1].end, 3),
                    "confidence": mean_confidence(run),
                    "channel": 0,
                    "transcript": transcript(run, options),
                    "words": run.iter().map(|w| w.json(options)).collect::<Vec<_>>(),
                    "id": uuid(rand::random()),
                });
                if options.diarize {
                    utterance["speaker"] = json!(0);
                }
                utterance
            })
            .collect();
        results["utterances"] = json!(utterances);
    }
    let (model_id, info) = model_info(arch, served);
    json!({
        "metadata": {
            "transaction_key": "deprecated",
            "request_id": uuid(rand::random()),
            "created": kiln_core::time::utc_timestamp(),
            "duration": round(transcription.duration, 3),
            "channels": 1,
            "models": [model_id],
            "model_info": {model_id.clone(): info},
        },
        "results": results,
    })
}

/// A stable 128-bit key for a local model's name (FNV-1a).
fn model_key(name: &str) -> u128 {
    name.bytes()
        .fold(0x6c62272e07bb014262b821756295c58d, |hash, b| {
            (hash ^ u128::from(b)).wrapping_mul(0x0000000001000000000000000000013B)
        })
}

/// `bits` as a version-4 UUID string.
pub fn uuid(bits: u128) -> String {
    let bits = (bits & !(0xF << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::media::{TimedSegment, TimedWord};

    fn timed(word: &str, start: f32, end: f32) -> TimedWord {
        TimedWord {
            word: word.into(),
            start,
            end,
            confidence: 0.9,
        }
    }

    fn sample() -> Transcription {
        let words = vec![
            timed("Hello,", 0.0, 0.4),
            timed("world.", 0.4, 0.9),
            timed("Bye!", 2.5, 2.9),
        ];
        Transcription {
            text: "Hello, world. Bye!".into(),
            language: "en".into(),
            duration: 3.0,
            segments: vec![TimedSegment {
                start: 0.0,
                end: 2.9,
                text: "Hello, world. Bye!".into(),
                words,
                ..TimedSegment::default()
            }],
            vtt: String::new(),
            ..Transcription::default()
        }
    }

    #[test]
    fn options_come_from_fields_over_the_query() {
        let fields = json!({"punctuate": "true", "language": "en-US"});
        let query = "punctuate=false&utterances=true&keyterm=Kiln&keyterm=Piper";
        let options = options(fields.as_object(), Some(query)).unwrap();
        assert!(options.punctuate && options.utterances && !options.paragraphs);
        assert_eq!(options.language.as_deref(), Some("en"));
        assert_eq!(options.keyterms, ["Kiln", "Piper"]);
        let detect = super::options(None, Some("language=multi&smart_format=true")).unwrap();
        assert!(detect.punctuate && detect.language.is_none());
        assert!(super::options(None, Some("punctuate=maybe")).is_err());
        assert!(super::options(None, Some("encoding=linear16")).is_err());
        assert!(super::options(None, Some("encoding=g729&sample_rate=8000")).is_err());
        let raw = super::options(None, Some("encoding=mulaw&sample_rate=8000"))
            .unwrap()
            .raw;
        assert_eq!(raw.map(|r| r.format), Some(WavFormat::Mulaw));
    }

    #[test]
    fn raw_audio_gets_a_header_and_files_do_not() {
        let raw = Some(RawAudio {
            format: WavFormat::Pcm16,
            sample_rate: 16_000,
            channels: 1,
        });
        assert_eq!(&as_file(vec![0; 32], raw)[..4], b"RIFF");
        let flac = b"fLaC....".to_vec();
        assert_eq!(as_file(flac.clone(), raw), flac);
    }

    #[test]
    fn deepgram_shape_with_and_without_punctuation() {
        let plain = options(None, Some("utterances=true")).unwrap();
        let answer = result(&sample(), &plain, "nova-3", "whisper-base");
        let alternative = &answer["results"]["channels"][0]["alternatives"][0];
        assert_eq!(alternative["transcript"], "hello world bye");
        assert_eq!(alternative["words"][0]["word"], "hello");
        assert!(alternative["words"][0].get("punctuated_word").is_none());
        assert_eq!(alternative["confidence"], 0.9);
        assert_eq!(alternative["words"][1]["end"], 0.9);
        assert_eq!(answer["results"]["channels"][0]["detected_language"], "en");
        // A 1.6 s pause splits the utterances.
        assert_eq!(answer["results"]["utterances"].as_array().unwrap().len(), 2);
        let model = answer["metadata"]["models"][0].as_str().unwrap();
        assert_eq!(answer["metadata"]["model_info"][model]["arch"], "nova-3");
        assert_eq!(answer["metadata"]["request_id"].as_str().unwrap().len(), 36);

        let punctuated = options(None, Some("punctuate=true&paragraphs=true&language=en")).unwrap();
        let answer = result(&sample(), &punctuated, "nova-3", "whisper-base");
        let alternative = &answer["results"]["channels"][0]["alternatives"][0];
        assert_eq!(alternative["transcript"], "Hello, world. Bye!");
        assert_eq!(alternative["words"][1]["punctuated_word"], "world.");
        let paragraphs = &alternative["paragraphs"];
        assert_eq!(paragraphs["transcript"], "\nHello, world.\n\nBye!\n");
        assert_eq!(paragraphs["paragraphs"][0]["sentences"][0]["end"], 0.9);
        assert!(answer["results"]["channels"][0]
            .get("detected_language")
            .is_none());
    }
}
