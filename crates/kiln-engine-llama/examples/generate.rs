//! Streams one chat completion from a GGUF model and reports timings on stderr.
//!
//! `[SYSTEM="system prompt"] cargo run --release -p kiln-engine-llama --example generate -- MODEL.gguf "question" [max_tokens] [batch_size]`

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use kiln_core::{
    ChatMessage, GenerationEvent, GenerationRequest, PromptInput, SamplingParams, TextGenerator,
};
use kiln_engine_llama::{LlamaGenerator, LlamaOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: generate MODEL.gguf QUESTION [MAX_TOKENS] [BATCH_SIZE]";
    let model = PathBuf::from(args.next().ok_or(usage)?);
    let question = args.next().ok_or(usage)?;
    let max_tokens = args.next().map(|n| n.parse()).transpose()?.unwrap_or(128);
    let mut options = LlamaOptions::default();
    if let Some(batch_size) = args.next() {
        options.batch_size = batch_size.parse()?;
    }

    let started = Instant::now();
    let mut generator = LlamaGenerator::load(&model, &options)?;
    eprintln!(
        "loaded {} in {:?}",
        generator.model_description(),
        started.elapsed()
    );

    let request = GenerationRequest {
        input: match std::env::var("SYSTEM") {
            Ok(system) => PromptInput::Messages(vec![
                ChatMessage {
                    role: "system".into(),
                    content: system,
                    ..Default::default()
                },
                ChatMessage {
                    role: "user".into(),
                    content: question,
                    ..Default::default()
                },
            ]),
            Err(_) => PromptInput::Messages(vec![ChatMessage {
                role: "user".into(),
                content: question,
                ..Default::default()
            }]),
        },
        max_tokens,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        stop: Vec::new(),
        constraint: None,
        tools: Vec::new(),
        lora: None,
    };
    let started = Instant::now();
    let mut first_text = None;
    let mut stdout = std::io::stdout();
    generator.generate(&request, &mut |event| {
        match event {
            GenerationEvent::Text(text) => {
                first_text.get_or_insert_with(|| started.elapsed());
                let _ = write!(stdout, "{text}");
                let _ = stdout.flush();
            }
            GenerationEvent::Done {
                usage,
                finish_reason,
            } => {
                let total = started.elapsed();
                let first = first_text.unwrap_or(total);
                let decoded = usage.completion_tokens.saturating_sub(1).max(1);
                eprintln!(
                    "\n{usage:?} {finish_reason:?}; first text after {first:?}; \
                     {:.1} tok/s after it",
                    f64::from(decoded) / (total - first).as_secs_f64().max(1e-9)
                );
            }
        }
        true
    })?;
    Ok(())
}
