//! The forward passes: prompt prefill and the token-by-token completion loop.

use kiln_core::{EventSink, FinishReason, GenerationEvent, KilnError, KilnResult};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use crate::text_stream::{Filtered, StopFilter, Utf8Stream};

/// Every request runs as sequence 0 of the context.
const SEQUENCE: i32 = 0;

/// Evaluates `prompt` from position 0 in chunks of `batch_size`, asking for logits of the last
/// prompt token only. Returns that token's index within the final batch.
pub fn prefill(
    context: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    prompt: &[LlamaToken],
    batch_size: usize,
) -> KilnResult<i32> {
    let last = prompt.len().saturating_sub(1);
    for (chunk_index, chunk) in prompt.chunks(batch_size.max(1)).enumerate() {
        batch.clear();
        let start = chunk_index * batch_size;
        for (offset, &token) in chunk.iter().enumerate() {
            let position = start + offset;
            batch
                .add(token, to_position(position)?, &[SEQUENCE], position == last)
                .map_err(|error| {
                    KilnError::internal(format!("building the prompt batch: {error}"))
                })?;
        }
        context
            .decode(batch)
            .map_err(|error| KilnError::internal(format!("evaluating the prompt: {error}")))?;
    }
    Ok(batch.n_tokens() - 1)
}

/// What the completion loop needs to know about the request.
pub struct Completion<'a> {
    pub model: &'a LlamaModel,
    /// Tokens already in the KV cache; the first generated token goes at this position.
    pub prompt_length: usize,
    /// Where in the last evaluated batch the logits for the next token are.
    pub first_logits_index: i32,
    pub max_new_tokens: u32,
    pub stop: &'a [String],
}

/// Samples, streams and evaluates tokens until an end-of-generation token, a stop string or
/// `max_new_tokens`. Returns the finish reason and the number of tokens generated, or `None` when
/// the sink reported the client gone (no further decode happened).
pub fn decode_completion(
    context: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    sampler: &mut LlamaSampler,
    completion: &Completion<'_>,
    sink: &mut dyn EventSink,
) -> KilnResult<Option<(FinishReason, u32)>> {
    let vocab = completion.model.vocab();
    let mut text = TextPipeline::new(completion.stop);
    let mut piece = Vec::with_capacity(32);
    let mut logits_index = completion.first_logits_index;
    let mut generated: u32 = 0;

    let finish_reason = loop {
        // `sample` also feeds the token to the chain, so penalties see it next time.
        let token = sampler.sample(context, logits_index);
        if vocab.is_eog(token) {
            break FinishReason::Stop;
        }
        generated += 1;

        piece.clear();
        // Control tokens render as nothing; user-defined special tokens keep their text.
        vocab.token_to_piece_into(token, &mut piece, false, None);
        let (new_text, stopped) = match text.push(&piece) {
            Filtered::Continue(new_text) => (new_text, false),
            Filtered::Stopped(new_text) => (new_text, true),
        };
        if !send_text(sink, new_text) {
            return Ok(None);
        }
        if stopped {
            break FinishReason::Stop;
        }
        if generated >= completion.max_new_tokens {
            break FinishReason::Length;
        }

        batch.clear();
        let position = to_position(completion.prompt_length + generated as usize - 1)?;
        batch
            .add(token, position, &[SEQUENCE], true)
            .map_err(|error| KilnError::internal(format!("building the decode batch: {error}")))?;
        context
            .decode(batch)
            .map_err(|error| KilnError::internal(format!("generating a token: {error}")))?;
        logits_index = 0;
    };

    // After a stop string nothing is withheld; otherwise a partial stop-string match is released.
    if !send_text(sink, text.finish()) {
        return Ok(None);
    }
    Ok(Some((finish_reason, generated)))
}

/// Sends non-empty text; returns whether the client is still there.
fn send_text(sink: &mut dyn EventSink, text: String) -> bool {
    text.is_empty() || sink.send(GenerationEvent::Text(text))
}

fn to_position(position: usize) -> KilnResult<i32> {
    i32::try_from(position).map_err(|_| KilnError::internal("token position out of range"))
}

/// Token bytes → whole characters → text with stop strings cut out.
struct TextPipeline {
    utf8: Utf8Stream,
    stop: StopFilter,
}

impl TextPipeline {
    fn new(stop_strings: &[String]) -> Self {
        Self {
            utf8: Utf8Stream::default(),
            stop: StopFilter::new(stop_strings),
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Filtered {
        let decoded = self.utf8.push(bytes);
        self.stop.push(&decoded)
    }

    /// The text withheld as a possible stop-string start, released at the end of generation.
    fn finish(&mut self) -> String {
        self.stop.finish()
    }
}
