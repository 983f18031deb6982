//! End-to-end generation against the real SmolLM2-135M-Instruct GGUF.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

use kiln_core::{
    ChatMessage, ErrorKind, FinishReason, GenerationEvent, GenerationRequest, KilnResult,
    PromptInput, SamplingParams, TextGenerator, Usage,
};
use kiln_engine_llama::{LlamaGenerator, LlamaOptions};

/// Small enough that every chat prompt is prefilled over several batches.
const TEST_BATCH_SIZE: u32 = 16;

fn model_path() -> PathBuf {
    kiln_store::ensure_for_tests("smollm2-135m-instruct").primary_file
}

/// One model per test binary; tests take turns on it.
fn generator() -> MutexGuard<'static, LlamaGenerator> {
    static GENERATOR: OnceLock<Mutex<LlamaGenerator>> = OnceLock::new();
    GENERATOR
        .get_or_init(|| {
            let options = LlamaOptions {
                context_size: None,
                threads: 2,
                batch_size: TEST_BATCH_SIZE,
                parallel: 1,
                prefill_chunk: TEST_BATCH_SIZE,
                reproducible: false,
            };
            Mutex::new(LlamaGenerator::load(&model_path(), &options).expect("load SmolLM2"))
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn small_context_generator() -> MutexGuard<'static, LlamaGenerator> {
    static GENERATOR: OnceLock<Mutex<LlamaGenerator>> = OnceLock::new();
    GENERATOR
        .get_or_init(|| {
            let options = LlamaOptions {
                context_size: Some(256),
                threads: 2,
                batch_size: 64,
                parallel: 1,
                prefill_chunk: 64,
                reproducible: false,
            };
            Mutex::new(LlamaGenerator::load(&model_path(), &options).expect("load SmolLM2"))
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const CAPITAL_QUESTION: &str = "What is the capital of France? Answer in one word.";

fn ask(question: &str) -> PromptInput {
    PromptInput::Messages(vec![ChatMessage {
        role: "user".into(),
        content: question.into(),
        ..Default::default()
    }])
}

fn request(input: PromptInput, max_tokens: u32, temperature: f32) -> GenerationRequest {
    GenerationRequest {
        input,
        max_tokens,
        sampling: SamplingParams {
            temperature,
            ..SamplingParams::default()
        },
        stop: Vec::new(),
        constraint: None,
        tools: Vec::new(),
        lora: None,
    }
}

#[derive(Debug)]
struct Output {
    pieces: Vec<String>,
    usage: Usage,
    finish_reason: FinishReason,
}

impl Output {
    fn text(&self) -> String {
        self.pieces.concat()
    }
}

/// Runs a request to completion, checking the event protocol: text events, then exactly one Done.
fn run(generator: &mut LlamaGenerator, request: &GenerationRequest) -> KilnResult<Output> {
    let mut events = Vec::new();
    generator.generate(request, &mut |event| {
        events.push(event);
        true
    })?;
    let Some(GenerationEvent::Done {
        usage,
        finish_reason,
    }) = events.pop()
    else {
        panic!("the last event must be Done: {events:?}");
    };
    let pieces = events
        .into_iter()
        .map(|event| match event {
            GenerationEvent::Text(text) => {
                assert!(!text.is_empty(), "empty Text event");
                text
            }
            GenerationEvent::Done { .. } => panic!("Done before the end"),
        })
        .collect();
    Ok(Output {
        pieces,
        usage,
        finish_reason,
    })
}

#[test]
fn greedy_answer_names_paris_with_consistent_usage() {
    let mut generator = generator();
    // SmolLM2-135M at Q4_1 rambles about French symbols for the bare question; asking for a
    // short answer makes it answer.
    let question = request(ask(CAPITAL_QUESTION), 48, 0.0);
    let output = run(&mut generator, &question).unwrap();
    let text = output.text();
    assert!(text.contains("Paris"), "{text:?}");
    let usage = output.usage;
    assert!(usage.prompt_tokens > 10, "{usage:?}");
    assert!(
        usage.completion_tokens > 0 && usage.completion_tokens <= 48,
        "{usage:?}"
    );
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );

    // Greedy decoding is deterministic, so capping max_tokens at the reported completion length
    // must reproduce the same text token for token: the count is exactly what was generated.
    let capped = request(ask(CAPITAL_QUESTION), usage.completion_tokens, 0.0);
    let replay = run(&mut generator, &capped).unwrap();
    assert_eq!(replay.text(), text);
    // The replay finds its prompt in the prefix cache: all but the last token, which is
    // evaluated again for its logits.
    assert_eq!(
        replay.usage,
        Usage::with_cached(
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.prompt_tokens - 1
        )
    );
    assert_eq!(replay.finish_reason, FinishReason::Length);
}

#[test]
fn unwrapped_prompt_is_templated_as_one_user_turn() {
    let mut generator = generator();
    let as_prompt = PromptInput::Prompt {
        text: CAPITAL_QUESTION.into(),
        raw: false,
    };
    let from_prompt = run(&mut generator, &request(as_prompt, 24, 0.0)).unwrap();
    let from_messages = run(&mut generator, &request(ask(CAPITAL_QUESTION), 24, 0.0)).unwrap();
    assert!(
        from_prompt.text().contains("Paris"),
        "{:?}",
        from_prompt.text()
    );
    assert_eq!(from_prompt.text(), from_messages.text());
    assert_eq!(
        (
            from_prompt.usage.prompt_tokens,
            from_prompt.usage.completion_tokens
        ),
        (
            from_messages.usage.prompt_tokens,
            from_messages.usage.completion_tokens
        )
    );
}

#[test]
fn raw_prompts_are_used_verbatim() {
    let mut generator = generator();
    let chatml =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let raw = PromptInput::Prompt {
        text: chatml.into(),
        raw: true,
    };
    let output = run(&mut generator, &request(raw, 32, 0.0)).unwrap();
    assert!(output.text().contains("Paris"), "{:?}", output.text());
    // The special-token markup is parsed as tokens, not spelled out character by character.
    assert!(output.usage.prompt_tokens < 20, "{:?}", output.usage);

    let plain = PromptInput::Prompt {
        text: "The capital of France is".into(),
        raw: true,
    };
    let output = run(&mut generator, &request(plain, 8, 0.0)).unwrap();
    assert!(output.text().contains("Paris"), "{:?}", output.text());
}

#[test]
fn same_seed_gives_the_same_text() {
    let mut generator = generator();
    let seeded = |seed| GenerationRequest {
        input: ask("Write a short poem about the sea."),
        max_tokens: 40,
        sampling: SamplingParams {
            temperature: 0.8,
            seed: Some(seed),
            ..SamplingParams::default()
        },
        stop: Vec::new(),
        constraint: None,
        tools: Vec::new(),
        lora: None,
    };
    let first = run(&mut generator, &seeded(42)).unwrap().text();
    let second = run(&mut generator, &seeded(42)).unwrap().text();
    assert!(!first.is_empty());
    assert_eq!(first, second);
    let others: Vec<String> = [7, 1234, 99_999]
        .iter()
        .map(|&seed| run(&mut generator, &seeded(seed)).unwrap().text())
        .collect();
    assert!(
        others.iter().any(|text| *text != first),
        "the seed changes nothing: {others:?}"
    );
}

#[test]
fn sampling_options_are_accepted() {
    let mut generator = generator();
    let request = GenerationRequest {
        input: ask("List three colours."),
        max_tokens: 30,
        sampling: SamplingParams {
            temperature: 0.7,
            top_p: Some(0.9),
            top_k: Some(40),
            seed: Some(5),
            repetition_penalty: Some(1.3),
            frequency_penalty: Some(0.5),
            presence_penalty: Some(0.5),
        },
        stop: Vec::new(),
        constraint: None,
        tools: Vec::new(),
        lora: None,
    };
    let output = run(&mut generator, &request).unwrap();
    assert!(!output.text().trim().is_empty());
}

#[test]
fn max_tokens_ends_with_length() {
    let mut generator = generator();
    let output = run(
        &mut generator,
        &request(ask("Tell me a long story."), 5, 0.0),
    )
    .unwrap();
    assert_eq!(output.finish_reason, FinishReason::Length);
    assert_eq!(output.usage.completion_tokens, 5);
    assert!(!output.text().is_empty());
}

/// About 600 tokens of English.
fn long_text() -> String {
    "The quick brown fox jumps over the lazy dog near the quiet river bank. ".repeat(40)
}

#[test]
fn prompt_longer_than_the_context_is_bad_input() {
    let mut generator = small_context_generator();
    assert_eq!(generator.context_window(), 256);
    let error = run(&mut generator, &request(ask(&long_text()), 16, 0.0)).unwrap_err();
    assert_eq!(error.kind, ErrorKind::BadInput);
    assert!(
        error.message.contains("context window"),
        "{}",
        error.message
    );
    assert!(error.message.contains("256"), "{}", error.message);

    // The generator is still usable after the rejection.
    let output = run(&mut generator, &request(ask("Say hi."), 4, 0.0)).unwrap();
    assert!(output.usage.completion_tokens > 0);
}

#[test]
fn completion_is_cut_at_the_end_of_the_context() {
    let mut generator = small_context_generator();
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    let raw = PromptInput::Prompt { text, raw: true };
    let output = run(&mut generator, &request(raw, 500, 0.0)).unwrap();
    let usage = output.usage;
    assert!(
        usage.prompt_tokens > 200 && usage.prompt_tokens < 256,
        "{usage:?}"
    );
    // The model keeps repeating the sentence, so only the context window stops it.
    assert_eq!(output.finish_reason, FinishReason::Length);
    assert_eq!(usage.total_tokens, 256, "{usage:?}");
}

#[test]
fn stop_strings_end_generation_and_are_not_emitted() {
    let mut generator = generator();
    let question = || ask("Count from 1 to 10, separated by commas.");
    let unstopped = run(&mut generator, &request(question(), 48, 0.0))
        .unwrap()
        .text();
    let stop = "5";
    let Some(cut) = unstopped.find(stop) else {
        panic!("the model did not count: {unstopped:?}");
    };

    let mut stopped_request = request(question(), 48, 0.0);
    stopped_request.stop = vec!["never appears".into(), stop.into()];
    let stopped = run(&mut generator, &stopped_request).unwrap();
    assert_eq!(stopped.text(), unstopped[..cut]);
    assert!(!stopped.text().contains(stop));
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
}

#[test]
fn a_gone_client_stops_generation_after_its_first_event() {
    let mut generator = generator();
    let mut events = Vec::new();
    generator
        .generate(
            &request(ask("Tell me a long story."), 64, 0.0),
            &mut |event| {
                events.push(event);
                false
            },
        )
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(matches!(events[0], GenerationEvent::Text(_)));
}

#[test]
fn non_ascii_text_streams_as_whole_characters() {
    let mut generator = generator();
    // SmolLM2-135M cannot repeat "héllo wörld ✓ 日本" (it answers "Hell, wot wot?"), but it
    // quotes Japanese characters back when asked about them. Each CJK character is 3 bytes that
    // byte-level BPE may spread over several tokens.
    let prompt = ask("What does the Japanese word 日本 mean?");
    let output = run(&mut generator, &request(prompt, 40, 0.0)).unwrap();
    let text = output.text();
    assert!(text.contains("日本"), "{text:?}");
    assert!(!text.contains('\u{FFFD}'), "{text:?}");
    // Every event is non-empty (checked in `run`) and whole characters (each is a `String`).
    assert!(
        output.pieces.iter().any(|piece| !piece.is_ascii()),
        "{:?}",
        output.pieces
    );

    // A cut in the middle of a Japanese character drops the incomplete bytes: no U+FFFD.
    let japanese = ask("Say \"thank you\" in Japanese.");
    for max_tokens in 1..=12 {
        let output = run(&mut generator, &request(japanese.clone(), max_tokens, 0.0)).unwrap();
        assert!(
            !output.text().contains('\u{FFFD}'),
            "{max_tokens}: {:?}",
            output.text()
        );
    }
}

#[test]
fn description_names_the_architecture() {
    let generator = generator();
    let description = generator.model_description();
    assert!(description.contains("llama"), "{description}");
    assert_eq!(
        generator.context_window(),
        kiln_engine_llama::DEFAULT_CONTEXT_CAP
    );
}
