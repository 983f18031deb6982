//! The energy voice-activity gate shared by live transcription (which cuts a stream into
//! utterances with it) and Whisper's `vad_filter` (which drops the non-speech of a file): a
//! 20 ms frame is speech when it is 12 dB over an adaptive noise floor and over -50 dBFS.

/// Length of one frame.
pub const FRAME_MS: u32 = 20;

/// Decides frame by frame whether a stream is speech, learning its noise floor as it goes.
#[derive(Debug, Clone)]
pub struct EnergyGate {
    noise_db: f32,
}

impl Default for EnergyGate {
    fn default() -> Self {
        Self { noise_db: -60.0 }
    }
}

impl EnergyGate {
    /// Whether the next frame, of root-mean-square level `rms` (1.0 is full scale), is speech.
    pub fn is_speech(&mut self, rms: f64) -> bool {
        let db = (20.0 * rms.max(1e-9).log10()) as f32;
        let speech = db > (self.noise_db + 12.0).max(-50.0);
        if !speech {
            // The floor follows quiet frames quickly down and slowly up.
            let rate = if db < self.noise_db { 0.5 } else { 0.05 };
            self.noise_db += (db - self.noise_db) * rate;
        }
        speech
    }
}

/// Root-mean-square level of 16-bit samples, 1.0 being full scale.
pub fn rms_i16(frame: &[i16]) -> f64 {
    let energy = frame
        .iter()
        .map(|&s| f64::from(s) * f64::from(s))
        .sum::<f64>();
    (energy / frame.len().max(1) as f64).sqrt() / 32768.0
}

/// Root-mean-square level of float samples in -1..1.
pub fn rms_f32(frame: &[f32]) -> f64 {
    let energy = frame
        .iter()
        .map(|&s| f64::from(s) * f64::from(s))
        .sum::<f64>();
    (energy / frame.len().max(1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_stands_out_of_the_noise_floor() {
        let mut gate = EnergyGate::default();
        // A quiet room (-60 dBFS) is not speech, and neither is a level just above it.
        for _ in 0..50 {
            assert!(!gate.is_speech(0.001));
        }
        assert!(!gate.is_speech(0.002));
        // Speech at -20 dBFS is.
        assert!(gate.is_speech(0.1));
        // Digital silence: the floor drops, but -50 dBFS still bounds what counts as speech.
        let mut gate = EnergyGate::default();
        for _ in 0..50 {
            assert!(!gate.is_speech(0.0));
        }
        assert!(!gate.is_speech(0.003));
        assert!(gate.is_speech(0.01));
        assert!((rms_i16(&[16384, -16384]) - 0.5).abs() < 1e-9);
        assert!((rms_f32(&[0.5, -0.5]) - 0.5).abs() < 1e-9);
        assert_eq!(rms_f32(&[]), 0.0);
    }
}
