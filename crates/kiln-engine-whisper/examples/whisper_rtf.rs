//! Transcribes audio files with a model directory and prints the text, the words and the
//! real-time factor of each run (for profiling: `perf record` this).
//!
//! `cargo run --release -p kiln-engine-whisper --example whisper_rtf -- MODEL_DIR FILE...
//! [--runs N] [--beam N] [--fallback] [--condition] [--vad] [--f32]
//! [--language CODE] [--translate]`
//!
//! Without options it runs Kiln's default (greedy) path; `--beam 5 --fallback --condition` is
//! what whisper-large-v3-turbo runs by default.

use std::time::Instant;

use kiln_engine_whisper::{
    decode_audio, Precision, Task, TranscribeOptions, Transcriber, FALLBACK_TEMPERATURES,
};

/// Removes `--name` from `args`, and its value when `takes_value`.
fn take_flag(args: &mut Vec<String>, name: &str, takes_value: bool) -> Option<String> {
    let at = args.iter().position(|a| a == name)?;
    let value = takes_value.then(|| args.get(at + 1).cloned()).flatten();
    let end = if takes_value { at + 2 } else { at + 1 };
    args.drain(at..end.min(args.len()));
    Some(value.unwrap_or_default())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let runs = take_flag(&mut args, "--runs", true).map_or(1, |n| n.parse().unwrap_or(1));
    let mut options = TranscribeOptions::default();
    if let Some(beams) = take_flag(&mut args, "--beam", true) {
        options.beam_size = beams.parse().unwrap_or(1);
    }
    if take_flag(&mut args, "--fallback", false).is_some() {
        options.temperatures = FALLBACK_TEMPERATURES.to_vec();
    }
    options.condition_on_previous_text = take_flag(&mut args, "--condition", false).is_some();
    options.vad_filter = take_flag(&mut args, "--vad", false).is_some();
    options.language = take_flag(&mut args, "--language", true);
    if take_flag(&mut args, "--translate", false).is_some() {
        options.task = Task::Translate;
    }
    let precision = match take_flag(&mut args, "--f32", false) {
        Some(_) => Precision::Float,
        None => Precision::Auto,
    };
    let Some((model_dir, files)) = args.split_first() else {
        eprintln!("usage: whisper_rtf MODEL_DIR FILE... [--runs N] [--beam N] [--fallback] [--condition] [--vad] [--f32] [--language CODE] [--translate]");
        std::process::exit(2);
    };
    let started = Instant::now();
    let mut asr = Transcriber::load_with_precision(std::path::Path::new(model_dir), precision)?;
    eprintln!("load {:.2} s", started.elapsed().as_secs_f32());
    for file in files {
        let samples = decode_audio(&std::fs::read(file)?)?;
        let secs = samples.len() as f32 / 16_000.0;
        for run in 0..runs {
            let started = Instant::now();
            let t = asr.transcribe(&samples, &options)?;
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
