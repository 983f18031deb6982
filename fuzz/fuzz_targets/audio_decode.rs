//! Speech-recognition input: any bytes as an audio file (wav/mp3/flac/ogg probed by content).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(samples) = kiln_engine_whisper::decode_audio(data) {
        assert!(!samples.is_empty());
    }
});
