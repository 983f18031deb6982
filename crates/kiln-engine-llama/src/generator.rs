//! [`LlamaGenerator`]: a GGUF model plus one llama.cpp context whose sequences are the slots
//! of a continuous batch.

use std::num::NonZeroU32;
use std::path::Path;
use std::time::Instant;

use kiln_core::engine::{BatchGenerator, SequenceId, SequenceOptions, StepReport};
use kiln_core::{
    ChatMessage, EventSink, FinishReason, GenerationEvent, GenerationRequest, KilnError,
    KilnResult, PromptInput, TextGenerator, ToolSpec, ToolSyntax,
};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::backend::backend;
use crate::chat_template::{ChatTemplate, CHATML_TEMPLATE};
use crate::constraint::GrammarCompiler;
use crate::decode::{self, forget_cache, Budget};
use crate::lora::Adapters;
use crate::sampling::{build_sampler, sampler_seed, PENALTY_WINDOW};
use crate::slots::{
    choose_lone_slot, choose_slot, next_turn, reusable_prefix, PassGroup, Phase, Running, Slot,
    TextPipeline,
};

/// The context window used when the caller does not choose one and the model allows more.
/// Every parallel slot holds this many KV cells, cleared (so resident) at load: 4096 keeps the
/// default models under 2 GiB together (issue #15), as Ollama's and llama.cpp server's defaults
/// do; `context_size` raises it.
pub const DEFAULT_CONTEXT_CAP: u32 = 4096;

/// How to load a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlamaOptions {
    /// Tokens of context per sequence (prompt plus completion). `None`: the model's training
    /// context, capped at [`DEFAULT_CONTEXT_CAP`].
    pub context_size: Option<u32>,
    /// Threads for both prompt processing and token generation.
    pub threads: u32,
    /// Tokens evaluated per forward pass, all sequences together.
    pub batch_size: u32,
    /// Sequences that run at once; each gets the full context window.
    pub parallel: u32,
    /// Prompt tokens evaluated per forward pass, so a long prompt does not stall running streams.
    pub prefill_chunk: u32,
    /// Greedy and seeded requests give the same text whatever else the server runs or ran:
    /// each runs in forward passes of its own from an empty KV cache (no prefix reuse), so
    /// llama.cpp computes it with the same shapes every time. Costs their batching and prefix
    /// cache (docs/benchmarks.md, "Reproducible output").
    pub reproducible: bool,
}

impl Default for LlamaOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get() as u32);
        Self {
            context_size: None,
            threads,
            batch_size: 512,
            parallel: 4,
            prefill_chunk: 256,
            reproducible: false,
        }
    }
}

/// A llama.cpp context together with the model it points into.
///
/// `LlamaContext<'a>` borrows its model; keeping both in one struct needs the borrow to be
/// extended to `'static`. That is sound here because:
/// - the model is boxed and never moved out, replaced or mutated while the context exists (no
///   method hands out `&mut` to it or the `'static` reference);
/// - fields drop in declaration order, so `context` is freed before `model`.
struct ModelWithContext {
    context: LlamaContext<'static>,
    model: Box<LlamaModel>,
}

impl ModelWithContext {
    fn new(model: LlamaModel, params: LlamaContextParams) -> KilnResult<Self> {
        let model = Box::new(model);
        // SAFETY: see the type's documentation; the box outlives the context.
        let model_ref: &'static LlamaModel = unsafe { &*(model.as_ref() as *const LlamaModel) };
        let context = model_ref
            .new_context(backend()?, params)
            .map_err(|error| KilnError::internal(format!("llama.cpp context: {error}")))?;
        Ok(Self { context, model })
    }
}

/// A loaded GGUF text-generation model running up to `parallel` sequences at once.
pub struct LlamaGenerator {
    loaded: ModelWithContext,
    template: ChatTemplate,
    batch: LlamaBatch<'static>,
    budget: Budget,
    slots: Vec<Slot>,
    /// Per-sequence context window.
    context_window: u32,
    /// Counts admissions: orders prefills and stamps slots for LRU.
    clock: u64,
    model_name: String,
    description: String,
    /// Whether this model's first forward pass has registered the exit gate (see `backend`).
    exit_gate_registered: bool,
    /// Compiles JSON Schemas and grammars for constrained requests (built on first use).
    grammar: Option<GrammarCompiler>,
    /// LoRA adapters requests asked for, and which one the context has set.
    adapters: Adapters,
    /// The group the last forward pass ran, for taking turns.
    last_pass: Option<PassGroup>,
    /// See [`LlamaOptions::reproducible`].
    reproducible: bool,
}

impl LlamaGenerator {
    /// Loads `gguf` and creates its context; the model stays in memory until this is dropped.
    pub fn load(gguf: &Path, options: &LlamaOptions) -> KilnResult<Self> {
        let backend = backend()?;
        if !gguf.is_file() {
            return Err(KilnError::internal(format!(
                "model file {} does not exist",
                gguf.display()
            )));
        }
        let started = Instant::now();
        let model = LlamaModel::load_from_file(backend, gguf, &LlamaModelParams::default())
            .map_err(|error| {
                KilnError::internal(format!("cannot load {}: {error}", gguf.display()))
            })?;
        let loaded_in = started.elapsed();

        let trained_context = model.n_ctx_train();
        let context_size = match options.context_size {
            Some(requested) => {
                if requested > trained_context {
                    tracing::warn!(
                        requested,
                        trained_context,
                        "context window is larger than the model was trained on"
                    );
                }
                requested
            }
            None => trained_context.min(DEFAULT_CONTEXT_CAP),
        };
        if context_size == 0 {
            return Err(KilnError::internal(
                "the context window must be at least one token",
            ));
        }
        let parallel = options.parallel.clamp(1, MAX_PARALLEL);
        // Every sequence gets its own `context_size` cells (llama.cpp's non-unified KV cache
        // splits `n_ctx` evenly between `n_seq_max` sequences).
        let total_context = NonZeroU32::new(context_size.saturating_mul(parallel))
            .ok_or_else(|| KilnError::internal("the context window must be at least one token"))?;
        // A pass must hold one token of every sequence.
        let batch_size = options.batch_size.max(parallel).min(total_context.get());
        let prefill_chunk = options.prefill_chunk.clamp(1, batch_size);
        let threads = i32::try_from(options.threads.max(1)).unwrap_or(i32::MAX);

        let model_name = model_name(&model, gguf);
        let template = load_chat_template(&model, &model_name)?;

        let params = LlamaContextParams::default()
            .with_n_ctx(Some(total_context))
            .with_n_seq_max(parallel)
            .with_kv_unified(false)
            .with_n_batch(batch_size)
            .with_n_ubatch(batch_size)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let context_started = Instant::now();
        let loaded = ModelWithContext::new(model, params)?;
        let context_window = loaded.context.n_ctx() / parallel;
        let description = describe(&loaded.model, &model_name, context_window, parallel);
        tracing::info!(
            model = %description,
            load_ms = loaded_in.as_millis() as u64,
            context_ms = context_started.elapsed().as_millis() as u64,
            "llama.cpp model loaded"
        );
        Ok(Self {
            loaded,
            template,
            batch: LlamaBatch::new(batch_size as usize, 1),
            budget: Budget {
                batch_tokens: batch_size as usize,
                prefill_chunk: prefill_chunk as usize,
            },
            slots: (0..parallel as i32).map(Slot::new).collect(),
            context_window,
            clock: 0,
            model_name,
            description,
            exit_gate_registered: false,
            grammar: None,
            adapters: Adapters::new(gguf),
            last_pass: None,
            reproducible: options.reproducible,
        })
    }

    /// The model's grammar compiler, built on first use.
    fn grammar_compiler(&mut self) -> KilnResult<&GrammarCompiler> {
        if self.grammar.is_none() {
            self.grammar = Some(GrammarCompiler::new(&self.loaded.model)?);
        }
        self.grammar
            .as_ref()
            .ok_or_else(|| KilnError::internal("grammar compiler missing"))
    }

    /// Memory this model holds: its weights plus the f16 KV cache of every slot (what the
    /// registry's memory budget counts; compute buffers are small beside these).
    pub fn memory_bytes(&self) -> u64 {
        let model = &self.loaded.model;
        let head_dim =
            u64::try_from(model.n_embd()).unwrap_or(0) / u64::from(model.n_head().max(1));
        let kv_width = head_dim * u64::from(model.n_head_kv());
        let cells = u64::from(self.loaded.context.n_ctx());
        let kv_cache = 2 * u64::from(model.n_layer()) * cells * kv_width * 2;
        model.size() + kv_cache
    }

    /// Architecture, size and context window, for logs.
    pub fn model_description(&self) -> String {
        self.description.clone()
    }

    /// The prompt as the model sees it: templated unless raw, then tokenized.
    fn prompt_tokens(
        &self,
        input: &PromptInput,
        tools: &[ToolSpec],
    ) -> KilnResult<Vec<LlamaToken>> {
        let text = match input {
            PromptInput::Prompt { text, raw: true } => text.clone(),
            PromptInput::Prompt { text, raw: false } => {
                let turn = ChatMessage {
                    role: "user".to_owned(),
                    content: text.clone(),
                    ..Default::default()
                };
                self.template.render(&[turn], tools)?
            }
            PromptInput::Messages(messages) => self.template.render(messages, tools)?,
        };
        let tokens = tokenize(&self.loaded.model, &text);
        if tokens.is_empty() {
            return Err(KilnError::bad_input("the prompt is empty"));
        }
        Ok(tokens)
    }

    /// Keeps the first `keep` cached tokens of the slot's sequence and drops the rest; returns
    /// how many were kept (0 when llama.cpp cannot cut this model's cache mid-sequence).
    fn trim_cache(&mut self, slot_index: usize, keep: usize) -> usize {
        let slot = &mut self.slots[slot_index];
        let context = &mut self.loaded.context;
        let (Ok(sequence), Ok(from)) = (u32::try_from(slot.sequence), u32::try_from(keep)) else {
            forget_cache(context, slot);
            return 0;
        };
        match context.clear_kv_cache_seq(Some(sequence), Some(from), None) {
            Ok(true) => {
                slot.cached.truncate(keep);
                slot.canonical = slot.canonical.min(keep);
                keep
            }
            _ => {
                forget_cache(context, slot);
                0
            }
        }
    }
}

/// llama.cpp's limit on sequences per context.
const MAX_PARALLEL: u32 = 256;

impl BatchGenerator for LlamaGenerator {
    fn context_window(&self) -> u32 {
        self.context_window
    }

    fn max_sequences(&self) -> usize {
        self.slots.len()
    }

    fn tool_syntax(&self) -> Option<ToolSyntax> {
        self.template.tool_syntax()
    }

    fn running_sequences(&self) -> usize {
        self.slots.iter().filter(|slot| !slot.is_idle()).count()
    }

    fn add_sequence(
        &mut self,
        id: SequenceId,
        request: &GenerationRequest,
        options: &SequenceOptions,
    ) -> KilnResult<()> {
        let prompt = self.prompt_tokens(&request.input, &request.tools)?;
        let prompt_tokens = u32::try_from(prompt.len()).unwrap_or(u32::MAX);
        if prompt_tokens >= self.context_window {
            return Err(KilnError::bad_input(format!(
                "prompt is {prompt_tokens} tokens but the context window of {} is {}",
                self.model_name, self.context_window
            )));
        }
        let max_new_tokens = request.max_tokens.min(self.context_window - prompt_tokens);
        let adapter = match &request.lora {
            Some(path) => self.adapters.group(path)?,
            None => None,
        };
        let reuse = crate::slots::Reuse {
            adapter,
            tenant: options.tenant.as_deref(),
        };
        // Greedy or seeded: the caller asked for the same text every time.
        let alone = self.reproducible
            && (request.sampling.temperature <= 0.0 || request.sampling.seed.is_some());
        // A lone sequence reuses only KV entries computed as a fresh run computes them (whole
        // chunks of lone prefills from an empty cache); others, any shared prefix. The last
        // prompt token is always evaluated again: its logits pick the first new token.
        let (slot_index, shared) = if alone {
            choose_lone_slot(&self.slots, &prompt, reuse, self.budget.prefill_chunk)
        } else {
            choose_slot(&self.slots, &prompt, reuse, options.session.as_deref()).map(|index| {
                let shared = reusable_prefix(&self.slots[index], &prompt, reuse);
                (index, shared)
            })
        }
        .ok_or_else(|| KilnError::internal("no free sequence slot"))?;
        let reused = self.trim_cache(slot_index, shared.min(prompt.len() - 1));
        self.slots[slot_index].cached_adapter = adapter;

        let constraint = match &request.constraint {
            Some(constraint) => Some(self.grammar_compiler()?.sampler(constraint)?),
            None => None,
        };
        // Penalties look back over the prompt too, as they do in transformers.
        let sampler = build_sampler(
            &request.sampling,
            sampler_seed(request.sampling.seed),
            self.loaded.model.n_vocab(),
            &prompt[prompt.len().saturating_sub(PENALTY_WINDOW)..],
            constraint,
        );

        self.clock += 1;
        let slot = &mut self.slots[slot_index];
        slot.last_used = self.clock;
        slot.session = options.session.clone();
        slot.tenant = options.tenant.clone();
        slot.running = Some(Running {
            id,
            prompt,
            cached_tokens: u32::try_from(reused).unwrap_or(u32::MAX),
            sampler,
            adapter,
            text: TextPipeline::new(&request.stop),
            render_special: !request.tools.is_empty(),
            max_new_tokens,
            generated: 0,
            phase: Phase::Prefill { next: reused },
            admitted: self.clock,
            alone,
        });
        Ok(())
    }

    fn cancel(&mut self, id: SequenceId) {
        // The KV cache of what was evaluated stays valid and reusable.
        for slot in &mut self.slots {
            if slot
                .running
                .as_ref()
                .is_some_and(|running| running.id == id)
            {
                slot.running = None;
            }
        }
    }

    fn step(&mut self) -> StepReport {
        let mut report = StepReport::default();
        // Requests that may generate nothing end before any compute.
        for slot in &mut self.slots {
            if slot
                .running
                .as_ref()
                .is_some_and(|running| running.max_new_tokens == 0)
            {
                decode::finish(slot, FinishReason::Length, &mut report);
            }
        }
        let ModelWithContext { context, model } = &mut self.loaded;
        // One group per pass (an adapter's sequences, or one lone sequence); groups take turns.
        let waiting: Vec<PassGroup> = self
            .slots
            .iter()
            .filter_map(|slot| slot.running.as_ref().map(Running::pass_group))
            .collect();
        let Some(group) = next_turn(&waiting, &mut self.last_pass) else {
            return report;
        };
        if let Err(error) = self.adapters.apply(context, group.adapter) {
            decode::fail_group(context, &mut self.slots, group.adapter, &error, &mut report);
            return report;
        }
        let _permit = crate::backend::decode_permit();
        let mut pass = decode::step(
            context,
            &mut self.batch,
            model,
            &mut self.slots,
            &self.budget,
            group,
        );
        report.events.append(&mut pass.events);
        if !self.exit_gate_registered && pass.batch_sequences > 0 {
            crate::backend::register_exit_gate();
            self.exit_gate_registered = true;
        }
        report.batch_sequences = pass.batch_sequences;
        report.batch_tokens = pass.batch_tokens;
        report
    }
}

/// One request at a time, as sequence `0` of the batch: for tools and tests that want a plain
/// call. The server drives [`BatchGenerator`] instead.
impl TextGenerator for LlamaGenerator {
    fn context_window(&self) -> u32 {
        self.context_window
    }

    fn generate(
        &mut self,
        request: &GenerationRequest,
        sink: &mut dyn EventSink,
    ) -> KilnResult<()> {
        const ID: SequenceId = 0;
        if self.running_sequences() > 0 {
            return Err(KilnError::internal(
                "generate() needs an idle generator; batched sequences are running",
            ));
        }
        self.add_sequence(ID, request, &SequenceOptions::default())?;
        loop {
            let report = self.step();
            if report.events.is_empty() && self.running_sequences() == 0 {
                return Err(KilnError::internal("the sequence ended without a result"));
            }
            for event in report.events {
                match event.event {
                    Ok(event) => {
                        let done = matches!(event, GenerationEvent::Done { .. });
                        if !sink.send(event) {
                            // The client went away; stop before computing another token.
                            self.cancel(ID);
                            return Ok(());
                        }
                        if done {
                            return Ok(());
                        }
                    }
                    Err(error) => return Err(error),
                }
            }
        }
    }
}

/// Tokenizes `text`, parsing special-token markup the template produced, and adds BOS when the
/// model wants one and the text does not already start with it.
fn tokenize(model: &LlamaModel, text: &str) -> Vec<LlamaToken> {
    let vocab = model.vocab();
    let mut tokens = vocab.tokenize(text.as_bytes(), false, true);
    if vocab.should_add_bos() {
        let bos = vocab.bos();
        if is_real_token(model, bos) && tokens.first() != Some(&bos) {
            tokens.insert(0, bos);
        }
    }
    tokens
}

/// llama.cpp reports "no such token" as -1; asking about it would abort inside llama.cpp.
fn is_real_token(model: &LlamaModel, token: LlamaToken) -> bool {
    (0..model.n_vocab()).contains(&token.0)
}

fn special_token_text(model: &LlamaModel, token: LlamaToken) -> String {
    if !is_real_token(model, token) {
        return String::new();
    }
    model
        .vocab()
        .text(token)
        .map(|text| text.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn load_chat_template(model: &LlamaModel, model_name: &str) -> KilnResult<ChatTemplate> {
    let source = match model
        .chat_template(None)
        .map(|template| template.to_string())
    {
        Ok(Ok(source)) => source,
        _ => {
            tracing::info!(
                model = model_name,
                "GGUF has no chat template; using ChatML"
            );
            CHATML_TEMPLATE.to_owned()
        }
    };
    let vocab = model.vocab();
    ChatTemplate::compile(
        &source,
        special_token_text(model, vocab.bos()),
        special_token_text(model, vocab.eos()),
    )
}

fn model_name(model: &LlamaModel, gguf: &Path) -> String {
    model
        .meta_val_str("general.name")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .or_else(|| {
            gguf.file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "the model".to_owned())
}

fn describe(model: &LlamaModel, name: &str, context_window: u32, parallel: u32) -> String {
    let architecture = model
        .meta_val_str("general.architecture")
        .unwrap_or_else(|_| "unknown".to_owned());
    format!(
        "{name} ({architecture}, {:.1}M params, {} layers, {:.1} MiB, context {context_window} of {} trained, {parallel} parallel sequences)",
        model.n_params() as f64 / 1e6,
        model.n_layer(),
        model.size() as f64 / (1024.0 * 1024.0),
        model.n_ctx_train(),
    )
}
