//! [`LlamaGenerator`]: a GGUF model plus one reusable llama.cpp context.

use std::num::NonZeroU32;
use std::path::Path;
use std::time::Instant;

use kiln_core::{
    ChatMessage, EventSink, FinishReason, GenerationEvent, GenerationRequest, KilnError,
    KilnResult, PromptInput, TextGenerator, Usage,
};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::backend::backend;
use crate::chat_template::{ChatTemplate, CHATML_TEMPLATE};
use crate::decode::{decode_completion, prefill, Completion};
use crate::sampling::{build_sampler, sampler_seed, PENALTY_WINDOW};

/// The context window used when the caller does not choose one and the model allows more.
pub const DEFAULT_CONTEXT_CAP: u32 = 8192;

/// How to load a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlamaOptions {
    /// Tokens of context (prompt plus completion). `None`: the model's training context, capped
    /// at [`DEFAULT_CONTEXT_CAP`].
    pub context_size: Option<u32>,
    /// Threads for both prompt processing and token generation.
    pub threads: u32,
    /// Prompt tokens evaluated per forward pass.
    pub batch_size: u32,
}

impl Default for LlamaOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get() as u32);
        Self {
            context_size: None,
            threads,
            batch_size: 512,
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

/// A loaded GGUF text-generation model.
pub struct LlamaGenerator {
    loaded: ModelWithContext,
    template: ChatTemplate,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    model_name: String,
    description: String,
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
        let context_size = NonZeroU32::new(context_size)
            .ok_or_else(|| KilnError::internal("the context window must be at least one token"))?;
        let batch_size = options.batch_size.max(1).min(context_size.get());
        let threads = i32::try_from(options.threads.max(1)).unwrap_or(i32::MAX);

        let model_name = model_name(&model, gguf);
        let template = load_chat_template(&model, &model_name)?;

        let params = LlamaContextParams::default()
            .with_n_ctx(Some(context_size))
            .with_n_batch(batch_size)
            .with_n_ubatch(batch_size)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let context_started = Instant::now();
        let loaded = ModelWithContext::new(model, params)?;
        let description = describe(&loaded.model, &model_name, loaded.context.n_ctx());
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
            batch_size: batch_size as usize,
            model_name,
            description,
        })
    }

    /// Architecture, size and context window, for logs.
    pub fn model_description(&self) -> String {
        self.description.clone()
    }

    /// The prompt as the model sees it: templated unless raw, then tokenized.
    fn prompt_tokens(&self, input: &PromptInput) -> KilnResult<Vec<LlamaToken>> {
        let text = match input {
            PromptInput::Prompt { text, raw: true } => text.clone(),
            PromptInput::Prompt { text, raw: false } => self.template.render(&[ChatMessage {
                role: "user".to_owned(),
                content: text.clone(),
            }])?,
            PromptInput::Messages(messages) => self.template.render(messages)?,
        };
        let tokens = tokenize(&self.loaded.model, &text);
        if tokens.is_empty() {
            return Err(KilnError::bad_input("the prompt is empty"));
        }
        Ok(tokens)
    }
}

impl TextGenerator for LlamaGenerator {
    fn context_window(&self) -> u32 {
        self.loaded.context.n_ctx()
    }

    fn generate(
        &mut self,
        request: &GenerationRequest,
        sink: &mut dyn EventSink,
    ) -> KilnResult<()> {
        let prompt = self.prompt_tokens(&request.input)?;
        let context_window = self.context_window();
        let prompt_tokens = u32::try_from(prompt.len()).unwrap_or(u32::MAX);
        if prompt_tokens >= context_window {
            return Err(KilnError::bad_input(format!(
                "prompt is {prompt_tokens} tokens but the context window of {} is {context_window}",
                self.model_name
            )));
        }
        let max_new_tokens = request.max_tokens.min(context_window - prompt_tokens);

        let ModelWithContext { context, model } = &mut self.loaded;
        let vocabulary_size = model.n_vocab();
        let mut sampler = build_sampler(
            &request.sampling,
            sampler_seed(request.sampling.seed),
            vocabulary_size,
        );
        // Penalties look back over the prompt too, as they do in transformers.
        sampler.accept_many(&prompt[prompt.len().saturating_sub(PENALTY_WINDOW)..]);

        if max_new_tokens == 0 {
            let usage = Usage::new(prompt_tokens, 0);
            sink.send(GenerationEvent::Done {
                usage,
                finish_reason: FinishReason::Length,
            });
            return Ok(());
        }

        // Dropping the previous request's cells (metadata only) is enough to reuse the context.
        context
            .clear_kv_cache_seq(Some(0), None, None)
            .map_err(|error| KilnError::internal(format!("clearing the KV cache: {error}")))?;
        let logits_index = prefill(context, &mut self.batch, &prompt, self.batch_size)?;
        let completion = Completion {
            model,
            prompt_length: prompt.len(),
            first_logits_index: logits_index,
            max_new_tokens,
            stop: &request.stop,
        };
        let Some((finish_reason, completion_tokens)) =
            decode_completion(context, &mut self.batch, &mut sampler, &completion, sink)?
        else {
            // The client went away; nobody is left to receive `Done`.
            return Ok(());
        };
        let usage = Usage::new(prompt_tokens, completion_tokens);
        sink.send(GenerationEvent::Done {
            usage,
            finish_reason,
        });
        Ok(())
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

fn describe(model: &LlamaModel, name: &str, context_window: u32) -> String {
    let architecture = model
        .meta_val_str("general.architecture")
        .unwrap_or_else(|_| "unknown".to_owned());
    format!(
        "{name} ({architecture}, {:.1}M params, {} layers, {:.1} MiB, context {context_window} of {} trained)",
        model.n_params() as f64 / 1e6,
        model.n_layer(),
        model.size() as f64 / (1024.0 * 1024.0),
        model.n_ctx_train(),
    )
}
