//! Transcribes audio files with a model directory and prints the text, the words and the
//! real-time factor of each run (for profiling: `perf record` this).
//!
//! `cargo run --release -p kiln-engine-whisper --example whisper_rtf -- MODEL_DIR FILE... [--runs N]`

use std::time::Instant;

use kiln_engine_whisper::{decode_audio, TranscribeOptions, Transcriber};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = 1;
    if let Some(at) = args.iter().position(|a| a == "--runs") {
        runs = args.get(at + 1).and_then(|n| n.parse().ok()).unwrap_or(1);
        args.drain(at..(at + 2).min(args.len()));
    }
    let Some((model_dir, files)) = args.split_first() else {
        eprintln!("usage: whisper_rtf MODEL_DIR FILE... [--runs N]");
        std::process::exit(2);
    };
    let started = Instant::now();
    let mut asr = Transcriber::load(std::path::Path::new(model_dir))?;
    eprintln!("load {:.2} s", started.elapsed().as_secs_f32());
    for file in files {
        let samples = decode_audio(&std::fs::read(file)?)?;
        let secs = samples.len() as f32 / 16_000.0;
        for run in 0..runs {
            let started = Instant::now();
            let t = asr.transcribe(&samples, &TranscribeOptions::default())?;
            let wall = started.elapsed().as_secs_f32();
            println!(
                "{file} run {run}: {wall:.2} s for {secs:.1} s, RTF {:.3}",
                wall / secs
            );
            if run == 0 {
                println!("TEXT {}", t.text);
                for w in &t.words {
                    println!("WORD {:7.2} {:7.2} {}", w.start, w.end, w.word);
                }
            }
        }
    }
    Ok(())
}
