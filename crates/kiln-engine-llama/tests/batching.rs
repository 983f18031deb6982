//! Continuous batching, chunked prefill and the prefix cache against the real
//! Qwen2.5-Coder-0.5B-Instruct GGUF, driven through the engine's step interface (no HTTP).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use kiln_core::engine::{BatchGenerator, SequenceId, SequenceOptions};
use kiln_core::{
    ChatMessage, GenerationEvent, GenerationRequest, PromptInput, SamplingParams, Usage,
};
use kiln_engine_llama::{LlamaGenerator, LlamaOptions};

const PARALLEL: u32 = 8;
const MAX_TOKENS: u32 = 64;

/// One model per test binary; tests take turns on it.
fn generator() -> MutexGuard<'static, LlamaGenerator> {
    static GENERATOR: OnceLock<Mutex<LlamaGenerator>> = OnceLock::new();
    GENERATOR
        .get_or_init(|| {
            let model = kiln_store::ensure_for_tests("qwen2.5-coder-0.5b-instruct");
            let options = LlamaOptions {
                context_size: Some(2048),
                threads: 2,
                batch_size: 512,
                parallel: PARALLEL,
                prefill_chunk: 128,
                reproducible: false,
            };
            Mutex::new(LlamaGenerator::load(&model.primary_file, &options).expect("load Qwen"))
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn chat(system: Option<&str>, user: &str, max_tokens: u32) -> GenerationRequest {
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(ChatMessage {
            role: "system".into(),
            content: system.into(),
            ..Default::default()
        });
    }
    messages.push(ChatMessage {
        role: "user".into(),
        content: user.into(),
        ..Default::default()
    });
    GenerationRequest {
        input: PromptInput::Messages(messages),
        max_tokens,
        sampling: SamplingParams {
            temperature: 0.0,
            seed: Some(7),
            ..SamplingParams::default()
        },
        stop: Vec::new(),
        constraint: None,
        tools: Vec::new(),
        lora: None,
    }
}

/// What one sequence produced, with the step numbers and times it happened at.
#[derive(Debug, Default)]
struct Trace {
    text: String,
    usage: Option<Usage>,
    first_text_step: Option<usize>,
    first_text_at: Option<Duration>,
    done_step: Option<usize>,
}

/// Steps until every listed sequence is done. Also returns the time spent in passes where
/// exactly `decoding_width` sequences each decoded one token (a pure decode pass) and how many
/// such passes ran, so decode throughput can be compared without prefill.
struct Run {
    traces: HashMap<SequenceId, Trace>,
    pure_decode_time: Duration,
    pure_decode_passes: usize,
    wall: Duration,
}

fn run_until_done(generator: &mut LlamaGenerator, ids: &[SequenceId], started: Instant) -> Run {
    let mut traces: HashMap<SequenceId, Trace> =
        ids.iter().map(|&id| (id, Trace::default())).collect();
    let mut pure_decode_time = Duration::ZERO;
    let mut pure_decode_passes = 0;
    let mut step = 0;
    while traces.values().any(|trace| trace.usage.is_none()) {
        step += 1;
        let pass_started = Instant::now();
        let report = generator.step();
        let pass_time = pass_started.elapsed();
        assert!(report.batch_sequences > 0, "a step made no progress");
        if report.batch_tokens == report.batch_sequences && report.batch_sequences == ids.len() {
            pure_decode_time += pass_time;
            pure_decode_passes += 1;
        }
        for event in report.events {
            let trace = traces.get_mut(&event.id).expect("known sequence");
            match event.event.expect("no engine error") {
                GenerationEvent::Text(text) => {
                    trace.first_text_step.get_or_insert(step);
                    trace.first_text_at.get_or_insert(started.elapsed());
                    trace.text.push_str(&text);
                }
                GenerationEvent::Done { usage, .. } => {
                    trace.usage = Some(usage);
                    trace.done_step = Some(step);
                }
            }
        }
    }
    Run {
        traces,
        pure_decode_time,
        pure_decode_passes,
        wall: started.elapsed(),
    }
}

const TASKS: [&str; 8] = [
    "Write a Python function that checks whether a string is a palindrome, with a docstring and tests.",
    "Write a Rust function that parses a comma-separated list of integers, with error handling.",
    "Write a JavaScript function that debounces another function, and explain how it works.",
    "Write a SQL query that finds the top five customers by total order value, and explain it.",
    "Write a Bash script that renames every .jpeg file in a directory to .jpg, with comments.",
    "Write a Go function that merges two sorted slices of ints into one sorted slice.",
    "Write a C function that reverses a singly linked list in place, with a test in main.",
    "Write a Python class for a bounded LRU cache with get and put methods.",
];

#[test]
fn eight_streams_progress_together_and_match_solo_runs() {
    let mut generator = generator();
    let requests: Vec<GenerationRequest> = TASKS
        .iter()
        .map(|task| chat(None, task, MAX_TOKENS))
        .collect();

    // Each request alone, as the only sequence in the batch.
    let mut solo_texts = Vec::new();
    let mut solo_time = Duration::ZERO;
    let mut solo_passes = 0;
    for (index, request) in requests.iter().enumerate() {
        let id = 100 + index as SequenceId;
        generator
            .add_sequence(id, request, &SequenceOptions::default())
            .expect("admitted");
        let run = run_until_done(&mut generator, &[id], Instant::now());
        solo_time += run.pure_decode_time;
        solo_passes += run.pure_decode_passes;
        solo_texts.push(run.traces[&id].text.clone());
    }
    let single_stream_rate = solo_passes as f64 / solo_time.as_secs_f64();

    // All eight at once.
    let started = Instant::now();
    let ids: Vec<SequenceId> = (0..requests.len() as SequenceId).collect();
    for (&id, request) in ids.iter().zip(&requests) {
        generator
            .add_sequence(id, request, &SequenceOptions::default())
            .expect("admitted");
    }
    let run = run_until_done(&mut generator, &ids, started);
    let aggregate_rate =
        (run.pure_decode_passes * ids.len()) as f64 / run.pure_decode_time.as_secs_f64();
    let total_tokens: u32 = run
        .traces
        .values()
        .map(|trace| trace.usage.expect("done").completion_tokens)
        .sum();
    eprintln!(
        "single stream: {single_stream_rate:.1} tok/s; {} streams: {aggregate_rate:.1} tok/s \
         aggregate decode ({:.2}x), {total_tokens} tokens in {:?} end to end",
        ids.len(),
        aggregate_rate / single_stream_rate,
        run.wall
    );

    // Interleaving: every stream had text before any stream finished.
    let last_first_text = run
        .traces
        .values()
        .map(|trace| trace.first_text_step.expect("every stream produced text"))
        .max()
        .expect("streams");
    let first_done = run
        .traces
        .values()
        .map(|trace| trace.done_step.expect("done"))
        .min()
        .expect("streams");
    assert!(
        last_first_text < first_done,
        "a stream finished (step {first_done}) before another started (step {last_first_text})"
    );

    // Greedy output is not bit-for-bit independent of the batch: llama.cpp sizes each pass's
    // attention over the longest KV cache in the batch, and a longer dot product moves elements
    // between SIMD lanes and the scalar tail, so logits can differ in the last bits and a
    // near-tie can flip a later token. What holds: every stream starts with its solo text, and
    // the same batch composition gives the same output (checked below).
    for (id, solo) in ids.iter().zip(&solo_texts) {
        let together = &run.traces[id].text;
        let shared = together
            .chars()
            .zip(solo.chars())
            .take_while(|(a, b)| a == b)
            .count();
        assert!(
            shared >= 24.min(solo.chars().count()),
            "sequence {id} left its solo text after {shared} characters:\n{together:?}\n{solo:?}"
        );
    }
    let identical = ids
        .iter()
        .zip(&solo_texts)
        .filter(|(id, solo)| &&run.traces[id].text == solo)
        .count();
    eprintln!(
        "{identical} of {} streams identical to their solo run",
        ids.len()
    );

    // Same requests, same cached prompts, same batch: the same tokens. The first batch found
    // only the solo runs' caches (the shared chat-template preamble), so it is run once more to
    // give both compared batches every prompt cached in its own slot.
    let mut batch_again = |offset: SequenceId| {
        let again_ids: Vec<SequenceId> = ids.iter().map(|id| id + offset).collect();
        for (&id, request) in again_ids.iter().zip(&requests) {
            generator
                .add_sequence(id, request, &SequenceOptions::default())
                .expect("admitted");
        }
        run_until_done(&mut generator, &again_ids, Instant::now())
    };
    let second = batch_again(50);
    let third = batch_again(100);
    for &id in &ids {
        assert_eq!(
            third.traces[&(id + 100)].text,
            second.traces[&(id + 50)].text,
            "sequence {id} changed in an identical batch"
        );
    }

    // Throughput is measured by the benchmark harness (`scripts/bench`), not asserted here: a
    // timed assertion fails on a busy machine and proves nothing on an idle one. The figure is
    // printed so that a test run still shows it.
    eprintln!(
        "8-stream aggregate decode {aggregate_rate:.1} tok/s = {:.2}x one stream's {single_stream_rate:.1} tok/s",
        aggregate_rate / single_stream_rate
    );
}

/// About 1,000 tokens of system prompt, unique per call so the first use is a cache miss.
fn long_system_prompt(tag: &str) -> String {
    let mut prompt = format!("Session {tag}. You are a careful assistant for a software team.\n");
    for rule in 0..60 {
        prompt.push_str(&format!(
            "Rule {rule}: when asked about module number {rule}, answer politely and briefly.\n"
        ));
    }
    prompt
}

/// Runs one request alone and returns its time to first text and its usage.
fn time_to_first_text(
    generator: &mut LlamaGenerator,
    id: SequenceId,
    request: &GenerationRequest,
) -> (Duration, Usage) {
    let started = Instant::now();
    generator
        .add_sequence(id, request, &SequenceOptions::default())
        .expect("admitted");
    let run = run_until_done(generator, &[id], started);
    let trace = &run.traces[&id];
    (
        trace.first_text_at.expect("text"),
        trace.usage.expect("done"),
    )
}

#[test]
fn a_shared_system_prompt_is_prefilled_once() {
    let mut generator = generator();
    let tag = format!("{:?}", Instant::now());
    let system = long_system_prompt(&tag);
    let first = chat(Some(&system), "What does rule 3 say?", 8);
    let second = chat(Some(&system), "And what about rule 41?", 8);

    let (cold, cold_usage) = time_to_first_text(&mut generator, 1, &first);
    let (warm, warm_usage) = time_to_first_text(&mut generator, 2, &second);
    eprintln!(
        "prompt {} tokens: first token after {cold:?} cold, {warm:?} with {} cached tokens",
        warm_usage.prompt_tokens, warm_usage.cached_tokens
    );
    assert!(cold_usage.prompt_tokens >= 900, "{cold_usage:?}");
    // Cold: at most the chat template's preamble, left by an earlier request, is reused.
    assert!(cold_usage.cached_tokens < 20, "{cold_usage:?}");
    // Everything up to the user turn is shared.
    assert!(
        warm_usage.cached_tokens + 20 >= warm_usage.prompt_tokens
            && warm_usage.cached_tokens < warm_usage.prompt_tokens,
        "{warm_usage:?}"
    );
    assert!(
        warm.as_secs_f64() <= 0.15 * cold.as_secs_f64(),
        "warm TTFT {warm:?} is over 15% of cold {cold:?}"
    );
}

#[test]
fn a_long_prompt_is_prefilled_between_other_streams_tokens() {
    let mut generator = generator();
    let streaming = chat(None, TASKS[0], 48);
    generator
        .add_sequence(10, &streaming, &SequenceOptions::default())
        .expect("admitted");
    // Let the first stream start decoding.
    let mut streamed_before = 0;
    while streamed_before == 0 {
        streamed_before += generator.step().events.len();
    }

    let tag = format!("{:?}", Instant::now());
    let long = chat(Some(&long_system_prompt(&tag)), "Summarize rule 7.", 4);
    generator
        .add_sequence(11, &long, &SequenceOptions::default())
        .expect("admitted");
    let mut prefill_steps = 0;
    loop {
        let report = generator.step();
        let long_started = report.events.iter().any(|event| event.id == 11);
        let stream_events = report.events.iter().filter(|event| event.id == 10).count();
        // A decode token for the running stream rides along with every prefill chunk (a step
        // may carry only its final, empty-text token when the stream ends).
        assert!(
            stream_events > 0 || generator.running_sequences() < 2,
            "the running stream got nothing while the long prompt was prefilled"
        );
        if long_started {
            break;
        }
        prefill_steps += 1;
    }
    assert!(
        prefill_steps >= 5,
        "a ~1,000-token prompt took {prefill_steps} chunked steps"
    );
    // Finish both and leave the generator idle for the other tests.
    generator.cancel(10);
    generator.cancel(11);
    assert_eq!(generator.running_sequences(), 0);
}
