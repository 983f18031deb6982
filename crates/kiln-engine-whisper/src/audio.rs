//! Audio input: any wav/mp3/flac/ogg(vorbis) file as bytes → 16 kHz mono f32 samples.
//!
//! The bytes are hostile until proven otherwise: header fields are checked against
//! [`AudioLimits`] before anything is allocated from them, decoding stops as soon as the audio
//! passes `max_seconds` (it is not decoded whole and measured after), and samples are resampled
//! to 16 kHz as they are decoded, so a long file at a high rate never sits in memory at that
//! rate.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL, CODEC_TYPE_VORBIS};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::AsrError;

/// The sample rate Whisper consumes.
pub const TARGET_RATE: u32 = 16_000;

/// Input chunk of the FFT resampler, in frames.
const RESAMPLER_CHUNK: usize = 1024;
/// Largest FFT the resampler may plan (its size follows the input rate's ratio to 16 kHz; a
/// rate coprime to 16000 makes it as large as the rate itself).
const MAX_RESAMPLER_FFT: usize = 1 << 20;
/// Packets decoded between two progress checks.
const PACKETS_PER_CHECK: usize = 64;

/// What an audio upload may declare and how much of it is decoded (Kiln's
/// `[limits.audio]`, named in every refusal).
#[derive(Debug, Clone, PartialEq)]
pub struct AudioLimits {
    /// Decoding stops once the audio is longer than this.
    pub max_seconds: f64,
    pub min_sample_rate: u32,
    pub max_sample_rate: u32,
    pub max_channels: u32,
}

impl Default for AudioLimits {
    fn default() -> Self {
        Self {
            max_seconds: 1800.0,
            min_sample_rate: 1000,
            max_sample_rate: 384_000,
            max_channels: 16,
        }
    }
}

impl AudioLimits {
    fn check_rate(&self, rate: u32) -> Result<(), AsrError> {
        if (self.min_sample_rate..=self.max_sample_rate).contains(&rate) {
            return Ok(());
        }
        let limit = if rate < self.min_sample_rate {
            "min_sample_rate"
        } else {
            "max_sample_rate"
        };
        Err(AsrError::Limit(format!(
            "audio sample rate {rate} Hz is outside [{}, {}] Hz (limits.audio.{limit})",
            self.min_sample_rate, self.max_sample_rate
        )))
    }

    fn check_channels(&self, channels: u64) -> Result<(), AsrError> {
        if (1..=u64::from(self.max_channels)).contains(&channels) {
            return Ok(());
        }
        Err(AsrError::Limit(format!(
            "audio with {channels} channels is outside [1, {}] channels (limits.audio.max_channels)",
            self.max_channels
        )))
    }

    fn too_long(&self) -> AsrError {
        AsrError::Limit(format!(
            "the audio is longer than {} s (limits.audio.max_seconds)",
            self.max_seconds
        ))
    }

    /// Most frames at `rate` that fit in `max_seconds`.
    fn max_frames(&self, rate: u32) -> u64 {
        (self.max_seconds.max(0.0) * f64::from(rate)).floor() as u64
    }
}

/// Decodes an audio file (format probed from its content) to 16 kHz mono samples in [-1, 1],
/// within the default [`AudioLimits`].
///
/// Workers AI's `{audio: number[]}` input is the file's bytes as an array of u8, so it goes
/// through here too.
pub fn decode_audio(bytes: &[u8]) -> Result<Vec<f32>, AsrError> {
    decode_audio_within(bytes.to_vec(), &AudioLimits::default(), &|| true)
}

/// [`decode_audio`] within `limits`; `keep_going` is asked between packets and returns false
/// when the work should stop (deadline passed, caller gone): then `AsrError::Stopped`.
pub fn decode_audio_within(
    bytes: Vec<u8>,
    limits: &AudioLimits,
    keep_going: &dyn Fn() -> bool,
) -> Result<Vec<f32>, AsrError> {
    if bytes.is_empty() {
        return Err(AsrError::EmptyAudio);
    }
    // Symphonia's probe opens the container at the first marker it finds, wherever it is: the
    // header checks look there too.
    let container = &bytes[probed_container_start(&bytes)..];
    check_riff_header(container, limits)?;
    check_flac_metadata(container, limits)?;
    // The header checks above and in `decode` keep hostile fields away from the decoders; a
    // decoder that still panics on a malformed stream must fail this request, not the worker.
    catch_unwind(AssertUnwindSafe(|| decode(bytes, limits, keep_going))).unwrap_or_else(|_| {
        Err(AsrError::CorruptAudio(
            "the audio decoder failed on this input".into(),
        ))
    })
}

/// Where symphonia's probe will open a container: the first offset holding one of the markers
/// of the readers Kiln enables (WAV, AIFF, FLAC, Ogg, an MPEG audio frame), after skipping ID3v2
/// tags as the probe does. A file with junk before `fLaC` is read as FLAC from there. 0 when
/// none is found (the probe then refuses the file).
fn probed_container_start(bytes: &[u8]) -> usize {
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let window = &bytes[at..at + 4];
        if window.starts_with(b"ID3") && at + 10 <= bytes.len() {
            // Synchsafe size (7 bits a byte) after a 10-byte header, plus a footer if flagged.
            let size = bytes[at + 6..at + 10]
                .iter()
                .fold(0usize, |n, b| (n << 7) | usize::from(b & 0x7F));
            let footer = if bytes[at + 5] & 0x10 != 0 { 10 } else { 0 };
            at += 10 + size + footer;
            continue;
        }
        let mpeg_frame = window[0] == 0xFF
            && window[1] >= 0xE0
            && (window[1] >> 3) & 0x03 != 0x01
            && (window[1] >> 1) & 0x03 != 0x00;
        let marker = [window[0], window[1], window[2], window[3]];
        if mpeg_frame || matches!(&marker, b"RIFF" | b"FORM" | b"fLaC" | b"OggS") {
            return at;
        }
        at += 1;
    }
    0
}

/// Checks a RIFF/WAVE file's chunk table and `fmt ` fields before symphonia reads them: every
/// chunk before the audio data must fit in the file, and the format's rate and channel count
/// must be within `limits`. Other containers are checked from their parsed parameters.
fn check_riff_header(bytes: &[u8], limits: &AudioLimits) -> Result<(), AsrError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Ok(());
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let mut pos = 12usize;
    while bytes.len().saturating_sub(pos) >= 8 {
        let tag = &bytes[pos..pos + 4];
        let declared = u32_at(pos + 4) as usize;
        let body = pos + 8;
        // The data chunk may declare more than the file holds (streaming writers declare
        // 2^32 - 1); nothing is allocated from its length, and decoding stops at the cap.
        if tag == b"data" {
            return Ok(());
        }
        if declared > bytes.len() - body {
            return Err(AsrError::CorruptAudio(format!(
                "WAV chunk {:?} declares {declared} bytes but the file has {} left",
                String::from_utf8_lossy(tag),
                bytes.len() - body
            )));
        }
        if tag == b"fmt " {
            if declared < 16 {
                return Err(AsrError::CorruptAudio(format!(
                    "WAV fmt chunk is {declared} bytes, shorter than 16"
                )));
            }
            let channels = u16_at(body + 2);
            let rate = u32_at(body + 4);
            let block_align = u16_at(body + 12);
            limits.check_rate(rate)?;
            limits.check_channels(u64::from(channels))?;
            // ADPCM blocks start with a per-channel header (7 bytes MS, 4 bytes IMA) that the
            // reader subtracts from the block size unchecked.
            let header_bytes = match u16_at(body) {
                0x0002 => 7,
                0x0011 => 4,
                _ => 0,
            };
            if block_align == 0 || u32::from(block_align) <= header_bytes * u32::from(channels) {
                return Err(AsrError::CorruptAudio(format!(
                    "WAV block align {block_align} is too small for {channels} channels"
                )));
            }
        }
        pos = body + declared + (declared & 1);
    }
    Ok(())
}

/// Checks a native FLAC file's metadata blocks before symphonia reads them: each block must fit
/// in the file, and the lengths inside picture and comment blocks (32-bit each, which the
/// reader allocates before reading) must fit in their block.
fn check_flac_metadata(bytes: &[u8], limits: &AudioLimits) -> Result<(), AsrError> {
    if !bytes.starts_with(b"fLaC") {
        return Ok(());
    }
    let corrupt = |what: &str| AsrError::CorruptAudio(format!("FLAC metadata: {what}"));
    let mut pos = 4usize;
    loop {
        let Some(header) = bytes.get(pos..pos + 4) else {
            return Ok(());
        };
        let (last, kind) = (header[0] & 0x80 != 0, header[0] & 0x7F);
        let len = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
        let Some(block) = bytes.get(pos + 4..pos + 4 + len) else {
            return Err(corrupt(&format!(
                "a block declares {len} bytes but the file has {} left",
                bytes.len() - pos - 4
            )));
        };
        let mut fields = Fields { block, at: 0 };
        match kind {
            // STREAMINFO: the stream's rate (20 bits) and channels (3 bits, minus one) at byte
            // 10, checked before the reader sizes anything from them.
            0 if block.len() >= 13 => {
                let rate = (u32::from(block[10]) << 12)
                    | (u32::from(block[11]) << 4)
                    | (u32::from(block[12]) >> 4);
                limits.check_rate(rate)?;
                limits.check_channels(u64::from((block[12] >> 1) & 0x07) + 1)?;
            }
            // PICTURE: type, then (length, bytes) media type and description, four u32s, data.
            6 => {
                let fits = (|| {
                    fields.u32(true)?;
                    for _ in 0..2 {
                        let n = fields.u32(true)?;
                        fields.skip(n)?;
                    }
                    for _ in 0..4 {
                        fields.u32(true)?;
                    }
                    let n = fields.u32(true)?;
                    fields.skip(n)
                })();
                if fits.is_none() {
                    return Err(corrupt("a picture declares more bytes than its block"));
                }
            }
            // VORBIS_COMMENT (little-endian): vendor string, count, (length, bytes) each.
            4 => {
                let fits = (|| {
                    let n = fields.u32(false)?;
                    fields.skip(n)?;
                    let count = fields.u32(false)?;
                    for _ in 0..count {
                        let n = fields.u32(false)?;
                        fields.skip(n)?;
                    }
                    Some(())
                })();
                if fits.is_none() {
                    return Err(corrupt("a comment declares more bytes than its block"));
                }
            }
            _ => {}
        }
        if last {
            return Ok(());
        }
        pos += 4 + len;
    }
}

/// Fields of one metadata block, read with bounds.
struct Fields<'a> {
    block: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    fn u32(&mut self, big_endian: bool) -> Option<usize> {
        let field = self.block.get(self.at..self.at + 4)?;
        self.at += 4;
        let raw = [field[0], field[1], field[2], field[3]];
        Some(if big_endian {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        } as usize)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.at = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.block.len())?;
        Some(())
    }
}

fn decode(
    bytes: Vec<u8>,
    limits: &AudioLimits,
    keep_going: &dyn Fn() -> bool,
) -> Result<Vec<f32>, AsrError> {
    let source = MediaSourceStream::new(
        Box::new(Cursor::new(bytes)),
        MediaSourceStreamOptions::default(),
    );
    let probed = symphonia::default::get_probe()
        .format(
            &Hint::new(),
            source,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| match e {
            SymError::Unsupported(what) => AsrError::UnsupportedFormat(what.to_string()),
            SymError::IoError(_) => {
                AsrError::UnsupportedFormat("unrecognised or truncated audio container".into())
            }
            other => AsrError::CorruptAudio(other.to_string()),
        })?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| AsrError::UnsupportedFormat("no audio track".into()))?;
    let track_id = track.id;
    let params = &track.codec_params;
    // What the container declares is checked before a decoder sizes its buffers from it.
    if let Some(rate) = params.sample_rate {
        limits.check_rate(rate)?;
    }
    if let Some(channels) = params.channels {
        limits.check_channels(channels.count() as u64)?;
    }
    if params.codec == CODEC_TYPE_VORBIS {
        if let Some(headers) = &params.extra_data {
            check_vorbis_setup(headers)?;
        }
    }
    let mut decoder = symphonia::default::get_codecs()
        .make(params, &DecoderOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(what) => AsrError::UnsupportedFormat(what.to_string()),
            other => AsrError::CorruptAudio(other.to_string()),
        })?;

    let mut to_16k: Option<To16k> = None;
    let mut buf: Option<SampleBuffer<f32>> = None;
    let mut mono = Vec::new();
    let mut frames = 0u64;
    let mut decoded_packets = 0usize;
    let mut last_error = None;
    let mut packets = 0usize;
    loop {
        packets += 1;
        if packets.is_multiple_of(PACKETS_PER_CHECK) && !keep_going() {
            return Err(AsrError::Stopped);
        }
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => {
                last_error = Some(e.to_string());
                break;
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A damaged packet is skipped, as players do; the whole file failing is reported.
            Err(SymError::DecodeError(e)) => {
                last_error = Some(e.to_string());
                continue;
            }
            Err(SymError::IoError(e)) => {
                last_error = Some(e.to_string());
                continue;
            }
            Err(e) => return Err(AsrError::CorruptAudio(e.to_string())),
        };
        decoded_packets += 1;
        let spec = *decoded.spec();
        // Every packet's own rate and channel count: a stream may change them midway.
        limits.check_rate(spec.rate)?;
        let channels = spec.channels.count();
        limits.check_channels(channels as u64)?;
        let resampler = match &mut to_16k {
            Some(r) if r.rate == spec.rate => r,
            Some(r) => {
                return Err(AsrError::CorruptAudio(format!(
                    "the sample rate changes from {} Hz to {} Hz midway",
                    r.rate, spec.rate
                )))
            }
            None => to_16k.insert(To16k::new(spec.rate)?),
        };
        frames += decoded.frames() as u64;
        if frames > limits.max_frames(spec.rate) {
            return Err(limits.too_long());
        }
        let capacity = decoded.capacity() as u64;
        let buf = match &mut buf {
            Some(b) if b.capacity() as u64 >= capacity * channels as u64 => b,
            _ => buf.insert(SampleBuffer::<f32>::new(capacity, spec)),
        };
        buf.copy_interleaved_ref(decoded);
        mono.clear();
        mono.extend(
            buf.samples()
                .chunks(channels)
                .map(|frame| frame.iter().sum::<f32>() / channels as f32),
        );
        resampler.push(&mono)?;
    }
    if decoded_packets == 0 {
        return Err(match last_error {
            Some(e) => AsrError::CorruptAudio(e),
            None => AsrError::EmptyAudio,
        });
    }
    // A few frames at a high rate can resample to nothing: that is empty audio too.
    match to_16k.map(To16k::finish).transpose()? {
        Some(samples) if frames > 0 && !samples.is_empty() => Ok(samples),
        _ => Err(AsrError::EmptyAudio),
    }
}

/// Most codebook entries, over all codebooks of a Vorbis stream, and most vector-quantization
/// values: the decoder allocates tables of these sizes, and 24-bit entry counts times 16-bit
/// dimensions could ask for terabytes. Real encoders stay far below (tens of thousands).
const MAX_VORBIS_CODEBOOK_ENTRIES: u64 = 1 << 21;
const MAX_VORBIS_LOOKUP_VALUES: u64 = 1 << 22;

/// Reads a Vorbis setup header's codebooks (the first part of it) without building them, and
/// refuses codebooks whose tables would be too large to allocate. `headers` is what symphonia's
/// Ogg reader hands the decoder: the 30-byte identification header, then the setup header.
/// Anything malformed is left for the decoder to report.
fn check_vorbis_setup(headers: &[u8]) -> Result<(), AsrError> {
    const IDENT_LEN: usize = 30;
    let Some(setup) = headers.get(IDENT_LEN..) else {
        return Ok(());
    };
    if setup.len() < 7 || setup[0] != 5 || &setup[1..7] != b"vorbis" {
        return Ok(());
    }
    let mut bits = BitsLsbFirst::new(&setup[7..]);
    let too_big = |what: &str, n: u64, max: u64| {
        AsrError::CorruptAudio(format!(
            "Vorbis codebooks declare {n} {what}, more than {max}"
        ))
    };
    let (mut entries_total, mut values_total) = (0u64, 0u64);
    let Some(count) = bits.read(8) else {
        return Ok(());
    };
    for _ in 0..=count {
        let (Some(0x56_4342), Some(dimensions), Some(entries), Some(ordered)) =
            (bits.read(24), bits.read(16), bits.read(24), bits.read(1))
        else {
            return Ok(());
        };
        entries_total += u64::from(entries);
        if entries_total > MAX_VORBIS_CODEBOOK_ENTRIES {
            return Err(too_big(
                "entries",
                entries_total,
                MAX_VORBIS_CODEBOOK_ENTRIES,
            ));
        }
        // Code lengths.
        if ordered == 0 {
            let Some(sparse) = bits.read(1) else {
                return Ok(());
            };
            for _ in 0..entries {
                let used = if sparse == 1 { bits.read(1) } else { Some(1) };
                match used {
                    Some(1) if bits.read(5).is_none() => return Ok(()),
                    None => return Ok(()),
                    _ => {}
                }
            }
        } else {
            if bits.read(5).is_none() {
                return Ok(());
            }
            let mut entry = 0u32;
            while entry < entries {
                let width = 32 - (entries - entry).leading_zeros();
                let Some(run) = bits.read(width) else {
                    return Ok(());
                };
                entry = entry.saturating_add(run);
            }
        }
        let Some(lookup_type) = bits.read(4) else {
            return Ok(());
        };
        if lookup_type == 0 {
            continue;
        }
        if lookup_type > 2 {
            return Ok(());
        }
        let (Some(_minimum), Some(_delta), Some(value_bits), Some(_sequence)) =
            (bits.read(32), bits.read(32), bits.read(4), bits.read(1))
        else {
            return Ok(());
        };
        if dimensions == 0 {
            return Err(AsrError::CorruptAudio(
                "a Vorbis codebook with a lookup table has 0 dimensions".into(),
            ));
        }
        // The decoder's table holds entries × dimensions values, whichever the lookup type.
        values_total += u64::from(entries) * u64::from(dimensions);
        if values_total > MAX_VORBIS_LOOKUP_VALUES {
            return Err(too_big(
                "lookup values",
                values_total,
                MAX_VORBIS_LOOKUP_VALUES,
            ));
        }
        let stored = if lookup_type == 1 {
            // The largest v with v^dimensions <= entries.
            let mut v = (f64::from(entries).powf(1.0 / f64::from(dimensions))).floor() as u64;
            while v > 0
                && v.checked_pow(dimensions)
                    .is_none_or(|p| p > u64::from(entries))
            {
                v -= 1;
            }
            v
        } else {
            u64::from(entries) * u64::from(dimensions)
        };
        if !bits.skip(stored * (u64::from(value_bits) + 1)) {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads bits least-significant first, as Vorbis packs them.
struct BitsLsbFirst<'a> {
    bytes: &'a [u8],
    /// Position in bits.
    pos: u64,
}

impl<'a> BitsLsbFirst<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// The next `n` (≤ 32) bits, or `None` past the end.
    fn read(&mut self, n: u32) -> Option<u32> {
        if self.pos + u64::from(n) > self.bytes.len() as u64 * 8 {
            return None;
        }
        let mut value = 0u64;
        for i in 0..u64::from(n) {
            let at = self.pos + i;
            let bit = (self.bytes[(at / 8) as usize] >> (at % 8)) & 1;
            value |= u64::from(bit) << i;
        }
        self.pos += u64::from(n);
        u32::try_from(value).ok()
    }

    /// Skips `n` bits; false when that passes the end.
    fn skip(&mut self, n: u64) -> bool {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.bytes.len() as u64 * 8 => {
                self.pos = end;
                true
            }
            _ => false,
        }
    }
}

/// Converts signed 16-bit PCM to f32 in [-1, 1].
pub fn pcm_i16_to_f32(samples: &[i16]) -> Vec<f32> {
    samples.iter().map(|&s| s as f32 / 32768.0).collect()
}

/// Resamples mono samples at `rate` Hz to 16 kHz (band-limited FFT resampler).
pub fn resample_to_16k(samples: &[f32], rate: u32) -> Result<Vec<f32>, AsrError> {
    if samples.is_empty() {
        return Err(AsrError::EmptyAudio);
    }
    let mut resampler = To16k::new(rate)?;
    resampler.push(samples)?;
    resampler.finish()
}

/// A streaming resampler to 16 kHz: samples go in as they are decoded.
struct To16k {
    rate: u32,
    /// `None` when the input is already at 16 kHz.
    fft: Option<FftFixedIn<f32>>,
    /// Input frames of one of its FFTs.
    fft_in: usize,
    /// Input not yet a whole resampler chunk.
    pending: Vec<f32>,
    out: Vec<f32>,
    frames_in: u64,
}

fn resample_err(e: impl std::fmt::Display) -> AsrError {
    AsrError::CorruptAudio(format!("resampling failed: {e}"))
}

impl To16k {
    fn new(rate: u32) -> Result<Self, AsrError> {
        if rate == 0 {
            return Err(AsrError::CorruptAudio("sample rate 0".into()));
        }
        let mut fft_in = 0;
        let fft = if rate == TARGET_RATE {
            None
        } else {
            // rubato's FftFixedIn plans FFTs of `ceil(512 / (rate / g)) · rate / g` input frames
            // (g = gcd(rate, 16000)); computed here first because it allocates them unchecked.
            let g = gcd(rate as usize, TARGET_RATE as usize);
            let min_chunk = rate as usize / g;
            fft_in = (RESAMPLER_CHUNK / 2).div_ceil(min_chunk) * min_chunk;
            if fft_in > MAX_RESAMPLER_FFT {
                return Err(AsrError::Limit(format!(
                    "resampling {rate} Hz audio needs an FFT of {fft_in} points, more than \
                     {MAX_RESAMPLER_FFT}"
                )));
            }
            Some(
                FftFixedIn::<f32>::new(rate as usize, TARGET_RATE as usize, RESAMPLER_CHUNK, 2, 1)
                    .map_err(resample_err)?,
            )
        };
        Ok(Self {
            rate,
            fft,
            fft_in,
            pending: Vec::new(),
            out: Vec::new(),
            frames_in: 0,
        })
    }

    fn push(&mut self, samples: &[f32]) -> Result<(), AsrError> {
        self.frames_in += samples.len() as u64;
        let Some(fft) = &mut self.fft else {
            self.out.extend_from_slice(samples);
            return Ok(());
        };
        self.pending.extend_from_slice(samples);
        let mut pos = 0;
        while self.pending.len() - pos >= fft.input_frames_next() {
            let n = fft.input_frames_next();
            let chunk = fft
                .process(&[&self.pending[pos..pos + n]], None)
                .map_err(resample_err)?;
            self.out.extend_from_slice(&chunk[0]);
            pos += n;
        }
        self.pending.drain(..pos);
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<f32>, AsrError> {
        let Some(fft) = &mut self.fft else {
            return Ok(self.out);
        };
        if !self.pending.is_empty() {
            let chunk = fft
                .process_partial(Some(&[&self.pending[..]]), None)
                .map_err(resample_err)?;
            self.out.extend_from_slice(&chunk[0]);
        }
        let expected = (self.frames_in * u64::from(TARGET_RATE) / u64::from(self.rate)) as usize;
        let delay = fft.output_delay();
        // Silence flushes the resampler; it answers nothing until a whole FFT of input is in,
        // so only that many empty answers in a row mean it is drained.
        let mut empty = 0;
        while self.out.len() < expected + delay && empty <= self.fft_in / RESAMPLER_CHUNK + 2 {
            let chunk = fft
                .process_partial::<&[f32]>(None, None)
                .map_err(resample_err)?;
            if chunk[0].is_empty() {
                empty += 1;
            } else {
                empty = 0;
            }
            self.out.extend_from_slice(&chunk[0]);
        }
        let end = (delay + expected).min(self.out.len());
        self.out.truncate(end);
        self.out.drain(..delay.min(end));
        Ok(self.out)
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 16-bit PCM WAV file.
    pub(crate) fn wav_bytes(samples: &[i16], rate: u32, channels: u16) -> Vec<u8> {
        let data_len = (samples.len() * 2) as u32;
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(36 + data_len).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&(rate * channels as u32 * 2).to_le_bytes());
        v.extend_from_slice(&(channels * 2).to_le_bytes());
        v.extend_from_slice(&16u16.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&data_len.to_le_bytes());
        for s in samples {
            v.extend_from_slice(&s.to_le_bytes());
        }
        v
    }

    fn sine(rate: u32, secs: f32, hz: f32) -> Vec<i16> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| ((i as f32 * hz * std::f32::consts::TAU / rate as f32).sin() * 16000.0) as i16)
            .collect()
    }

    #[test]
    fn decodes_and_resamples_wav() {
        let wav = wav_bytes(&sine(44_100, 1.5, 440.0), 44_100, 1);
        let out = decode_audio(&wav).expect("decode");
        assert!((out.len() as i64 - 24_000).abs() <= 2, "{}", out.len());
        let peak = out.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!((peak - 16000.0 / 32768.0).abs() < 0.05, "{peak}");
    }

    #[test]
    fn mixes_stereo_to_mono() {
        let left = sine(16_000, 0.5, 300.0);
        let inter: Vec<i16> = left.iter().flat_map(|&s| [s, 0]).collect();
        let out = decode_audio(&wav_bytes(&inter, 16_000, 2)).expect("decode");
        assert_eq!(out.len(), 8_000);
        assert!((out[100] - left[100] as f32 / 65536.0).abs() < 1e-4);
    }

    #[test]
    fn rejects_empty_and_garbage() {
        assert!(matches!(decode_audio(&[]), Err(AsrError::EmptyAudio)));
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        assert!(matches!(
            decode_audio(&garbage),
            Err(AsrError::UnsupportedFormat(_))
        ));
        let empty_wav = wav_bytes(&[], 16_000, 1);
        assert!(matches!(
            decode_audio(&empty_wav),
            Err(AsrError::EmptyAudio | AsrError::CorruptAudio(_))
        ));
        let mut truncated = wav_bytes(&sine(16_000, 1.0, 200.0), 16_000, 1);
        truncated.truncate(30);
        assert!(decode_audio(&truncated).is_err());
    }

    /// A WAV header with any field values (16-bit PCM unless `bits` says otherwise), then `data`.
    fn raw_wav(format: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let block_align = channels.wrapping_mul(bits / 8);
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&format.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&rate.wrapping_mul(u32::from(block_align)).to_le_bytes());
        v.extend_from_slice(&block_align.to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    fn limit_message(result: Result<Vec<f32>, AsrError>) -> String {
        match result {
            Err(AsrError::Limit(message)) => message,
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    #[test]
    fn refuses_hostile_sample_rates_before_allocating() {
        // 60 bytes: 24 bytes of PCM after a 36-byte header; the rate once made the resampler
        // ask for 17 GB and abort the process.
        let wav = raw_wav(1, 1, 4_294_967_291, 16, &[0; 24]);
        assert_eq!(wav.len(), 68);
        let message = limit_message(decode_audio(&wav));
        assert!(
            message.contains("sample rate 4294967291 Hz is outside [1000, 384000] Hz")
                && message.contains("limits.audio.max_sample_rate"),
            "{message}"
        );
        let message = limit_message(decode_audio(&raw_wav(1, 1, 0, 16, &[0; 24])));
        assert!(
            message.contains("limits.audio.min_sample_rate"),
            "{message}"
        );
        // Within the bound but coprime with 16 kHz: the largest resampler FFT there is.
        let wav = raw_wav(1, 1, 383_999, 16, &[0; 2000]);
        assert_eq!(decode_audio(&wav).expect("decodes").len(), 41);
    }

    #[test]
    fn refuses_hostile_channel_counts() {
        let message = limit_message(decode_audio(&raw_wav(1, u16::MAX, 16_000, 16, &[0; 64])));
        assert!(
            message.contains("65535 channels") && message.contains("limits.audio.max_channels"),
            "{message}"
        );
        let message = limit_message(decode_audio(&raw_wav(1, 0, 16_000, 16, &[0; 64])));
        assert!(message.contains("0 channels"), "{message}");
        // WAVE_FORMAT_EXTENSIBLE with every channel-mask bit set: refused, never a panic.
        let mut wav = wav_bytes(&[0; 64], 16_000, 2);
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&0xFFFEu16.to_le_bytes());
        fmt.extend_from_slice(&2u16.to_le_bytes());
        fmt.extend_from_slice(&16_000u32.to_le_bytes());
        fmt.extend_from_slice(&64_000u32.to_le_bytes());
        fmt.extend_from_slice(&4u16.to_le_bytes());
        fmt.extend_from_slice(&16u16.to_le_bytes());
        fmt.extend_from_slice(&22u16.to_le_bytes());
        fmt.extend_from_slice(&16u16.to_le_bytes());
        fmt.extend_from_slice(&u32::MAX.to_le_bytes());
        fmt.extend_from_slice(&[
            1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71,
        ]);
        wav.splice(16..36, [&40u32.to_le_bytes()[..], &fmt].concat());
        assert!(decode_audio(&wav).is_err());
    }

    #[test]
    fn refuses_chunks_longer_than_the_file() {
        let mut wav = wav_bytes(&[0; 64], 16_000, 1);
        // The fmt chunk declares 4 GB.
        wav[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_audio(&wav), Err(AsrError::CorruptAudio(_))));
        // A LIST chunk before the data declares 2 GB.
        let mut wav = wav_bytes(&[0; 64], 16_000, 1);
        let list = [&b"LIST"[..], &0x8000_0000u32.to_le_bytes(), b"INFO"].concat();
        wav.splice(36..36, list);
        wav[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_audio(&wav), Err(AsrError::CorruptAudio(_))));
        // A data chunk declaring more than is there is what streaming writers produce: fine.
        let mut wav = wav_bytes(&sine(16_000, 0.5, 300.0), 16_000, 1);
        wav[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        wav[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_audio(&wav).expect("decodes").len(), 8_000);
        // ADPCM whose block is smaller than its header.
        let mut adpcm = raw_wav(0x11, 2, 16_000, 4, &[0; 64]);
        adpcm[32..34].copy_from_slice(&4u16.to_le_bytes());
        assert!(matches!(
            decode_audio(&adpcm),
            Err(AsrError::CorruptAudio(_))
        ));
        // A zero block align would divide by zero further in.
        let mut wav = wav_bytes(&[0; 64], 16_000, 1);
        wav[32..34].copy_from_slice(&0u16.to_le_bytes());
        assert!(decode_audio(&wav).is_err());
    }

    #[test]
    fn decoding_stops_at_max_seconds() {
        let limits = AudioLimits {
            max_seconds: 2.0,
            ..AudioLimits::default()
        };
        let two = wav_bytes(&vec![0; 2 * 8_000], 8_000, 1);
        let out = decode_audio_within(two, &limits, &|| true).expect("exactly the cap");
        assert_eq!(out.len(), 32_000);
        // 2 hours declared and present at 1 kHz 8-bit: refused as soon as 2 s are passed,
        // which the progress callback shows (it would be asked every 64 packets).
        let long = raw_wav(1, 1, 1_000, 8, &vec![128; 7_200_000]);
        let asked = std::cell::Cell::new(0);
        let message = limit_message(decode_audio_within(long, &limits, &|| {
            asked.set(asked.get() + 1);
            true
        }));
        assert!(
            message.contains("longer than 2 s (limits.audio.max_seconds)"),
            "{message}"
        );
        assert_eq!(asked.get(), 0);
    }

    #[test]
    fn decoding_stops_when_told() {
        let long = raw_wav(1, 1, 8_000, 16, &vec![0; 8_000 * 2 * 600]);
        assert!(matches!(
            decode_audio_within(long, &AudioLimits::default(), &|| false),
            Err(AsrError::Stopped)
        ));
    }

    /// Found by `scripts/fuzz` (audio_decode, 2026-12-03): 8 frames of 5-channel 48 kHz audio
    /// resampled to no samples at all, and were answered as a success.
    #[test]
    fn audio_that_resamples_to_nothing_is_empty() {
        use base64::Engine;
        let input = base64::engine::general_purpose::STANDARD
            .decode(
                "UklGRqQCAABXQVZFZm10IBAAAAABAAUAgLsAAAB3AQACABAAZGF0YYAAAAAAEAD/3///EC0AEAAQABAAEAAQ\
                 ABAAEAAQABA=",
            )
            .expect("base64");
        assert!(matches!(decode_audio(&input), Err(AsrError::EmptyAudio)));
    }

    /// Found by `scripts/fuzz` (audio_decode, 2026-12-03): an odd-sized `fmt ` chunk whose pad
    /// byte is past the end of the file made the chunk walk subtract past zero.
    #[test]
    fn a_padded_last_chunk_past_the_end_is_not_an_overflow() {
        use base64::Engine;
        let input = base64::engine::general_purpose::STANDARD
            .decode("UklGRkQAAABXQVZFZm10IBkAAAABAAEAQB8AAIA+/wAAIgAAAAAAAAAA0wAA")
            .expect("base64");
        assert!(decode_audio(&input).is_err());
    }

    /// Found by `scripts/fuzz` (audio_decode, 2026-12-03): junk, then `fLaC` 93 bytes in, then
    /// a picture block whose lengths made symphonia's FLAC reader allocate 2.2 GB. The probe
    /// opens FLAC wherever the marker is, so the metadata is checked there.
    #[test]
    fn flac_metadata_after_junk_is_checked_where_the_probe_finds_it() {
        use base64::Engine;
        let input = base64::engine::general_purpose::STANDARD
            .decode(
                "T2dnBoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhobhhoaGhoaGhoaGhoaGhoaGhoaGhoa\
                 GhoahAAAAhoaGhoaGhoaGhoaGhj2GhoaGhoaGRoaGZkxhQ4aGhoaGhoaGhoaGhobhhoaGhoaGhoaGhoaG\
                 hoaGhoaGhgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIaGhoaGhoaGhoaGhoaGhoaGho\
                 aGhoaGhoaGhoaG//OGhoaGhoaGhoaGhv/zhoaGhoaGhoaGhoYAAgAAAAAAAAAAAQAAAAD/4gAAAA==",
            )
            .expect("base64");
        assert_eq!(probed_container_start(&input), 93);
        let error = decode_audio(&input).expect_err("refused");
        assert!(
            matches!(&error, AsrError::CorruptAudio(m) if m.contains("FLAC metadata")),
            "{error:?}"
        );
    }

    /// Silent MPEG-1 Layer III frames: 32 kb/s at 32 kHz, 144 bytes and 1152 samples each.
    fn silent_mp3(frames: usize) -> Vec<u8> {
        let mut frame = [0u8; 144];
        frame[..4].copy_from_slice(&[0xFF, 0xFB, 0x18, 0xC4]);
        frame.repeat(frames)
    }

    #[test]
    fn mp3_decoding_stops_at_max_seconds() {
        let limits = AudioLimits {
            max_seconds: 5.0,
            ..AudioLimits::default()
        };
        let short = decode_audio_within(silent_mp3(100), &limits, &|| true).expect("3.6 s");
        assert!(
            (short.len() as i64 - 57_600).abs() < 1_200,
            "{}",
            short.len()
        );
        let message = limit_message(decode_audio_within(silent_mp3(100_000), &limits, &|| true));
        assert!(message.contains("limits.audio.max_seconds"), "{message}");
    }

    /// A FLAC stream header (STREAMINFO only) declaring `rate` and `channels`.
    fn flac_header(rate: u32, channels: u8) -> Vec<u8> {
        let mut v = b"fLaC".to_vec();
        v.extend_from_slice(&[0x80, 0, 0, 34]);
        v.extend_from_slice(&4096u16.to_be_bytes());
        v.extend_from_slice(&4096u16.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        // 20 bits rate, 3 bits channels - 1, 5 bits bits-per-sample - 1, 36 bits samples.
        let packed: u64 = (u64::from(rate & 0xF_FFFF) << 44)
            | (u64::from(channels.saturating_sub(1) & 7) << 41)
            | (15u64 << 36)
            | 0xF_FFFF_FFFF;
        v.extend_from_slice(&packed.to_be_bytes());
        v.extend_from_slice(&[0; 16]);
        v.extend_from_slice(&[0; 64]);
        v
    }

    #[test]
    fn refuses_hostile_flac_headers() {
        let message = limit_message(decode_audio(&flac_header(655_350, 2)));
        assert!(
            message.contains("limits.audio.max_sample_rate"),
            "{message}"
        );
        let limits = AudioLimits {
            max_channels: 2,
            ..AudioLimits::default()
        };
        let message = limit_message(decode_audio_within(
            flac_header(44_100, 8),
            &limits,
            &|| true,
        ));
        assert!(message.contains("8 channels"), "{message}");
        assert!(decode_audio(&flac_header(0, 2)).is_err());
    }

    #[test]
    fn flac_metadata_lengths_must_fit_their_block() {
        // A PICTURE block whose media type claims 4 GB.
        let mut flac = flac_header(44_100, 2);
        flac[4] = 0; // STREAMINFO is no longer the last block
        let mut picture = vec![0x86, 0, 0, 16];
        picture.extend_from_slice(&3u32.to_be_bytes());
        picture.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        picture.extend_from_slice(&[0; 8]);
        flac.splice(42..42, picture);
        let result = decode_audio(&flac);
        assert!(
            matches!(&result, Err(AsrError::CorruptAudio(m)) if m.contains("picture")),
            "{result:?}"
        );
        // A comment block claiming 4 billion comments.
        let mut flac = flac_header(44_100, 2);
        flac[4] = 0;
        let mut comment = vec![0x84, 0, 0, 8];
        comment.extend_from_slice(&0u32.to_le_bytes());
        comment.extend_from_slice(&u32::MAX.to_le_bytes());
        flac.splice(42..42, comment);
        let result = decode_audio(&flac);
        assert!(
            matches!(&result, Err(AsrError::CorruptAudio(m)) if m.contains("comment")),
            "{result:?}"
        );
        // A block longer than the file.
        let mut flac = flac_header(44_100, 2);
        flac[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        assert!(matches!(
            decode_audio(&flac),
            Err(AsrError::CorruptAudio(_))
        ));
    }

    #[test]
    fn resampler_refuses_what_it_cannot_plan() {
        assert!(matches!(
            resample_to_16k(&[0.0; 10], 4_294_967_291),
            Err(AsrError::Limit(_))
        ));
        assert!(matches!(
            resample_to_16k(&[0.0; 10], 0),
            Err(AsrError::CorruptAudio(_))
        ));
    }

    #[test]
    fn mangled_files_never_panic() {
        // Every byte of real WAV, MP3 and FLAC headers set to hostile values, one at a time.
        let files = [
            wav_bytes(&sine(8_000, 0.3, 440.0), 8_000, 1),
            silent_mp3(20),
            flac_header(44_100, 2),
        ];
        for file in files {
            for at in 0..file.len().min(64) {
                for value in [0x00, 0x7F, 0x80, 0xFF] {
                    let mut bytes = file.clone();
                    bytes[at] = value;
                    let _ = decode_audio(&bytes);
                }
            }
        }
    }

    /// A Vorbis setup header (after the 30-byte identification header) holding `books`
    /// codebooks of `entries` entries and `dimensions` dimensions, length-ordered, with a
    /// type-2 lookup table of 1-bit values.
    fn vorbis_headers(books: u32, entries: u32, dimensions: u32) -> Vec<u8> {
        let mut bits: Vec<bool> = Vec::new();
        let mut put = |value: u64, n: u32| {
            for i in 0..n {
                bits.push((value >> i) & 1 == 1);
            }
        };
        put(u64::from(books - 1), 8);
        for _ in 0..books {
            put(0x56_4342, 24);
            put(u64::from(dimensions), 16);
            put(u64::from(entries), 24);
            put(1, 1); // ordered
            put(0, 5); // first length
            put(u64::from(entries), 32 - entries.leading_zeros());
            put(2, 4); // lookup type 2
            put(0, 32);
            put(0, 32);
            put(0, 4);
            put(0, 1);
            // Only the first few values; a real table would follow.
            put(0, 64);
        }
        let mut out = vec![0u8; 30];
        out.push(5);
        out.extend_from_slice(b"vorbis");
        for byte in bits.chunks(8) {
            out.push(
                byte.iter()
                    .enumerate()
                    .map(|(i, b)| u8::from(*b) << i)
                    .sum(),
            );
        }
        out
    }

    #[test]
    fn vorbis_codebooks_that_would_take_terabytes_are_refused() {
        // 2^24 - 1 entries of 65535 dimensions: 4 TB of lookup values.
        let result = check_vorbis_setup(&vorbis_headers(1, (1 << 24) - 1, 65_535));
        assert!(
            matches!(&result, Err(AsrError::CorruptAudio(m)) if m.contains("entries")),
            "{result:?}"
        );
        let result = check_vorbis_setup(&vorbis_headers(1, 100_000, 1000));
        assert!(
            matches!(&result, Err(AsrError::CorruptAudio(m)) if m.contains("lookup values")),
            "{result:?}"
        );
        // 256 books of a million entries each, without lookup tables, cost bytes to declare.
        let result = check_vorbis_setup(&vorbis_headers(256, 1 << 20, 0));
        assert!(result.is_err(), "{result:?}");
        // Small books pass this check (the truncated table is the decoder's to report).
        assert!(check_vorbis_setup(&vorbis_headers(4, 81, 4)).is_ok());
        assert!(check_vorbis_setup(&[]).is_ok());
    }

    #[test]
    fn i16_conversion() {
        assert_eq!(pcm_i16_to_f32(&[0, 16384, -32768]), vec![0.0, 0.5, -1.0]);
    }
}
