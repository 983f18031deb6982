//! `cargo run --release -p kiln-engine-tts --example speak -- VOICE_DIR OUT.{wav,mp3} TEXT...`
//! Synthesizes TEXT, writes it and prints the real-time factor (synthesis time / audio time).

use std::path::Path;
use std::time::Instant;

use kiln_engine_tts::{encode_mp3, encode_wav, Synthesizer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [voice, out, words @ ..] = args.as_slice() else {
        return Err("usage: speak VOICE_DIR OUT.{wav,mp3} TEXT...".into());
    };
    let text = words.join(" ");
    let tts = Synthesizer::load(Path::new(voice))?;
    // The first run warms ONNX Runtime up; time the second.
    tts.speak(&text)?;
    let start = Instant::now();
    let audio = tts.speak(&text)?;
    let took = start.elapsed().as_secs_f64();
    let secs = audio.len() as f64 / f64::from(tts.sample_rate());
    println!(
        "{secs:.2} s of audio in {took:.3} s: real-time factor {:.3}",
        took / secs
    );
    let bytes = if out.ends_with(".mp3") {
        encode_mp3(&audio, tts.sample_rate())?
    } else {
        encode_wav(&audio, tts.sample_rate())
    };
    std::fs::write(out, bytes)?;
    Ok(())
}
