//! Audio containers and codecs that need no encoder library: WAV (16-bit PCM, G.711 µ-law and
//! A-law), the G.711 formulas themselves, and a small FLAC encoder (fixed predictors, Rice
//! coding). Deepgram's `encoding`/`container` options are made from these and the voice's
//! 16-bit PCM; MP3 comes from the TTS engine (LAME).

/// A WAV file's sample format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavFormat {
    Pcm16,
    Mulaw,
    Alaw,
}

impl WavFormat {
    fn tag_and_bits(self) -> (u16, u16) {
        match self {
            WavFormat::Pcm16 => (1, 16),
            WavFormat::Alaw => (6, 8),
            WavFormat::Mulaw => (7, 8),
        }
    }
}

/// `data` (interleaved samples in `format`) in a WAV container. PCM gets the plain 44-byte
/// header; G.711 gets the 18-byte `fmt ` and the `fact` chunk that non-PCM formats carry.
pub fn wav(data: &[u8], format: WavFormat, sample_rate: u32, channels: u16) -> Vec<u8> {
    let (tag, bits) = format.tag_and_bits();
    let pcm = format == WavFormat::Pcm16;
    let block_align = channels.saturating_mul(bits / 8);
    // A RIFF file holds at most 4 GiB; TTS output is far below that.
    let data_len = u32::try_from(data.len()).unwrap_or(u32::MAX - 64) & !1;
    let header_len: u32 = if pcm { 44 } else { 58 };
    let mut out = Vec::with_capacity(header_len as usize + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(header_len - 8 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&(if pcm { 16u32 } else { 18 }).to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(
        &sample_rate
            .saturating_mul(u32::from(block_align))
            .to_le_bytes(),
    );
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    if !pcm {
        out.extend_from_slice(&0u16.to_le_bytes()); // cbSize
        out.extend_from_slice(b"fact");
        out.extend_from_slice(&4u32.to_le_bytes());
        let frames = data_len / u32::from(block_align.max(1));
        out.extend_from_slice(&frames.to_le_bytes());
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend_from_slice(&data[..data_len as usize]);
    out
}

/// Little-endian 16-bit PCM bytes → samples (a trailing odd byte is dropped).
pub fn pcm16(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
        .collect()
}

/// G.711 µ-law of one sample (ITU-T G.711, as Sun's reference `linear2ulaw`).
pub fn mulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut value = i32::from(sample);
    let sign = if value < 0 {
        value = -value;
        0x80
    } else {
        0
    };
    let value = value.min(CLIP) + BIAS;
    // value is 132..=32767: its top bit is bit 7..=14.
    let exponent = (31 - (value as u32).leading_zeros())
        .saturating_sub(7)
        .min(7) as i32;
    let mantissa = (value >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// G.711 A-law of one sample (Sun's reference `linear2alaw`).
pub fn alaw(sample: i16) -> u8 {
    const SEGMENT_ENDS: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut value = i32::from(sample) >> 3;
    let mask = if value >= 0 {
        0xD5
    } else {
        value = -value - 1;
        0x55
    };
    let Some(segment) = SEGMENT_ENDS.iter().position(|&end| value <= end) else {
        return (0x7F ^ mask) as u8;
    };
    let shift = if segment < 2 { 1 } else { segment };
    let code = ((segment as i32) << 4) | ((value >> shift) & 0x0F);
    (code ^ mask) as u8
}

/// A G.711 µ-law code as a 16-bit sample (Sun's reference `ulaw2linear`).
pub fn mulaw_to_linear(code: u8) -> i16 {
    let code = !code;
    let t = ((i32::from(code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4);
    (if code & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// A G.711 A-law code as a 16-bit sample (Sun's reference `alaw2linear`).
pub fn alaw_to_linear(code: u8) -> i16 {
    let code = code ^ 0x55;
    let mut t = i32::from(code & 0x0F) << 4;
    let segment = (code & 0x70) >> 4;
    match segment {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (segment - 1),
    }
    (if code & 0x80 != 0 { t } else { -t }) as i16
}

/// Samples per FLAC frame (libFLAC's default for 16-bit audio).
const FLAC_BLOCK: usize = 4096;

/// A mono 16-bit FLAC file. Each frame uses the fixed predictor (order 0–2) with the smallest
/// residual and one Rice partition: simple, lossless, about half the size of WAV for speech.
pub fn flac(samples: &[i16], sample_rate: u32) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.bytes(b"fLaC");
    // STREAMINFO, the only (so last) metadata block.
    w.put(1, 1);
    w.put(0, 7);
    w.put(34, 24);
    w.put(FLAC_BLOCK as u64, 16);
    w.put(FLAC_BLOCK as u64, 16);
    w.put(0, 24); // frame sizes: unknown
    w.put(0, 24);
    w.put(u64::from(sample_rate.min(655_350)), 20);
    w.put(0, 3); // one channel
    w.put(15, 5); // 16 bits per sample
    w.put(samples.len() as u64 >> 32, 4);
    w.put(samples.len() as u64 & 0xFFFF_FFFF, 32);
    for _ in 0..4 {
        w.put(0, 32); // MD5 unknown
    }
    for (number, block) in samples.chunks(FLAC_BLOCK).enumerate() {
        flac_frame(&mut w, number as u32, block);
    }
    w.out
}

fn flac_frame(w: &mut BitWriter, number: u32, block: &[i16]) {
    let start = w.out.len();
    w.put(0b11_1111_1111_1110, 14);
    w.put(0, 1);
    w.put(0, 1); // fixed block size
    w.put(0b0111, 4); // block size - 1 follows in 16 bits
    w.put(0, 4); // sample rate from STREAMINFO
    w.put(0, 4); // mono
    w.put(0b100, 3); // 16 bits per sample
    w.put(0, 1);
    utf8_number(w, number);
    w.put(block.len() as u64 - 1, 16);
    let crc = crc8(&w.out[start..]);
    w.put(u64::from(crc), 8);

    let x: Vec<i32> = block.iter().map(|&s| i32::from(s)).collect();
    w.put(0, 1);
    if x.len() < 3 {
        w.put(0b000001, 6); // verbatim
        w.put(0, 1);
        for &s in &x {
            w.put(s as u16 as u64, 16);
        }
    } else {
        let residual = |order: usize| -> Vec<i32> {
            (order..x.len())
                .map(|i| match order {
                    0 => x[i],
                    1 => x[i] - x[i - 1],
                    _ => x[i] - 2 * x[i - 1] + x[i - 2],
                })
                .collect()
        };
        let cost = |r: &[i32]| r.iter().map(|v| u64::from(v.unsigned_abs())).sum::<u64>();
        let (order, residuals) = (0..=2)
            .map(|order| (order, residual(order)))
            .min_by_key(|(_, r)| cost(r))
            .unwrap_or_else(|| (0, residual(0)));
        w.put(0b001000 | order as u64, 6);
        w.put(0, 1);
        for &s in &x[..order] {
            w.put(s as u16 as u64, 16);
        }
        let zigzag: Vec<u32> = residuals
            .iter()
            .map(|&r| ((r << 1) ^ (r >> 31)) as u32)
            .collect();
        let sum: u64 = zigzag.iter().map(|&u| u64::from(u)).sum();
        let count = zigzag.len().max(1) as u64;
        let mut k = 0u32;
        // Rice parameter near log2 of the mean; 15 would mean "escaped".
        while k < 14 && (count << (k + 1)) < sum {
            k += 1;
        }
        w.put(0, 2); // Rice, 4-bit parameters
        w.put(0, 4); // one partition
        w.put(u64::from(k), 4);
        for &u in &zigzag {
            w.unary(u >> k);
            w.put(u64::from(u), k);
        }
    }
    w.align();
    let crc = crc16(&w.out[start..]);
    w.put(u64::from(crc), 16);
}

/// FLAC's frame number: UTF-8's variable-length coding of the number.
fn utf8_number(w: &mut BitWriter, value: u32) {
    if value < 0x80 {
        w.put(u64::from(value), 8);
        return;
    }
    let len: u32 = match value {
        0..=0x7FF => 2,
        0x800..=0xFFFF => 3,
        0x1_0000..=0x1F_FFFF => 4,
        0x20_0000..=0x3FF_FFFF => 5,
        _ => 6,
    };
    let prefix = (0xFF00u32 >> len) & 0xFF;
    w.put(u64::from(prefix | (value >> (6 * (len - 1)))), 8);
    for i in (0..len - 1).rev() {
        w.put(u64::from(0x80 | ((value >> (6 * i)) & 0x3F)), 8);
    }
}

fn crc8(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |mut crc, &b| {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
        crc
    })
}

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |mut crc, &b| {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x8005
            } else {
                crc << 1
            };
        }
        crc
    })
}

/// Most significant bit first, as FLAC is written.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    bits: u32,
}

impl BitWriter {
    /// The low `count` (≤ 32) bits of `value`.
    fn put(&mut self, value: u64, count: u32) {
        if count == 0 {
            return;
        }
        self.acc = (self.acc << count) | (value & ((1u64 << count) - 1));
        self.bits += count;
        while self.bits >= 8 {
            self.bits -= 8;
            self.out.push((self.acc >> self.bits) as u8);
        }
        self.acc &= (1u64 << self.bits) - 1;
    }

    /// `zeros` zero bits, then a one.
    fn unary(&mut self, mut zeros: u32) {
        while zeros >= 32 {
            self.put(0, 32);
            zeros -= 32;
        }
        self.put(1, zeros + 1);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.put(u64::from(b), 8);
        }
    }

    fn align(&mut self) {
        if self.bits > 0 {
            self.put(0, 8 - self.bits);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_round_trips_within_its_step() {
        assert_eq!(mulaw(0), 0xFF);
        assert_eq!(alaw(0), 0xD5);
        for sample in (i16::MIN..=i16::MAX).step_by(7) {
            let s = i32::from(sample);
            // The quantization step grows with the magnitude: 1/16 of it, plus a little.
            let allowed = s.abs() / 16 + 40;
            let u = i32::from(mulaw_to_linear(mulaw(sample)));
            assert!((u - s).abs() <= allowed, "µ {sample} → {u}");
            let a = i32::from(alaw_to_linear(alaw(sample)));
            assert!((a - s).abs() <= allowed, "A {sample} → {a}");
        }
    }

    #[test]
    fn wav_headers_describe_their_data() {
        let file = wav(&[1, 2, 3, 4], WavFormat::Pcm16, 24_000, 1);
        assert_eq!(file.len(), 48);
        assert_eq!(&file[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(file[4..8].try_into().unwrap()), 40);
        assert_eq!(u32::from_le_bytes(file[24..28].try_into().unwrap()), 24_000);
        assert_eq!(u32::from_le_bytes(file[28..32].try_into().unwrap()), 48_000);
        let file = wav(&[1, 2, 3, 4], WavFormat::Mulaw, 8_000, 1);
        assert_eq!(file.len(), 62);
        assert_eq!(u16::from_le_bytes(file[20..22].try_into().unwrap()), 7);
        assert_eq!(&file[38..42], b"fact");
        assert_eq!(u32::from_le_bytes(file[46..50].try_into().unwrap()), 4);
        assert_eq!(&file[50..54], b"data");
    }

    #[test]
    fn flac_frames_are_well_formed_and_smaller_than_pcm() {
        let samples: Vec<i16> = (0..10_000)
            .map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16)
            .collect();
        let file = flac(&samples, 16_000);
        assert_eq!(&file[..4], b"fLaC");
        assert_eq!(file[4], 0x80, "last block, STREAMINFO");
        // The first frame starts with the sync code right after STREAMINFO.
        assert_eq!((file[42], file[43] & 0xFE), (0xFF, 0xF8));
        assert!(file.len() < samples.len(), "{} bytes", file.len());
        // A frame number past one byte is UTF-8 coded.
        let mut w = BitWriter::default();
        utf8_number(&mut w, 0x800);
        assert_eq!(w.out, [0xE0, 0xA0, 0x80]);
        assert_eq!(crc8(b"123456789"), 0xF4);
        assert_eq!(crc16(b"123456789"), 0xFEE8);
    }
}
