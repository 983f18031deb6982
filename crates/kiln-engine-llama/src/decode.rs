//! One forward pass over every running slot: a token for each decoding sequence, then prompt
//! chunks of sequences still prefilling, within the batch budget. Long prompts therefore advance
//! a chunk at a time between other sequences' tokens instead of stalling them.

use kiln_core::engine::{SequenceEvent, StepReport};
use kiln_core::{FinishReason, GenerationEvent, KilnError, KilnResult, Usage};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;

use crate::lora::AdapterGroup;
use crate::slots::{PassGroup, Phase, Running, Slot};
use crate::text_stream::Filtered;

/// Batch limits for one pass.
pub struct Budget {
    /// Tokens the batch holds (llama.cpp's `n_batch`).
    pub batch_tokens: usize,
    /// At most this many prompt tokens per pass, so decoding sequences keep a steady pace.
    pub prefill_chunk: usize,
}

/// A token in the batch whose logits are sampled after the pass.
struct SampleAt {
    slot: usize,
    logits_index: i32,
}

/// What a slot put into the batch, to be recorded once the pass succeeds.
struct Planned {
    slot: usize,
    tokens: usize,
}

pub fn step(
    context: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    model: &LlamaModel,
    slots: &mut [Slot],
    budget: &Budget,
    group: PassGroup,
) -> StepReport {
    let mut report = StepReport::default();
    let (planned, sample_at) = match plan_batch(batch, slots, budget, group) {
        Ok(plan) => plan,
        Err(error) => {
            fail_all(context, slots, &error, &mut report);
            return report;
        }
    };
    if planned.is_empty() {
        return report;
    }
    report.batch_sequences = planned.len();
    report.batch_tokens = usize::try_from(batch.n_tokens()).unwrap_or(0);

    if let Err(error) = context.decode(batch) {
        let error = KilnError::internal(format!("llama.cpp decode failed: {error}"));
        for planned in &planned {
            fail_slot(context, &mut slots[planned.slot], &error, &mut report);
        }
        return report;
    }
    for planned in &planned {
        record_evaluated(&mut slots[planned.slot], planned.tokens, budget);
    }
    for sample in sample_at {
        sample_next(
            context,
            model,
            &mut slots[sample.slot],
            sample.logits_index,
            &mut report,
        );
    }
    report
}

/// Fills the batch with the sequences of `group`: decoding sequences first (one token each),
/// then prompt chunks, oldest request first.
fn plan_batch(
    batch: &mut LlamaBatch<'_>,
    slots: &[Slot],
    budget: &Budget,
    group: PassGroup,
) -> KilnResult<(Vec<Planned>, Vec<SampleAt>)> {
    batch.clear();
    let mut planned = Vec::new();
    let mut sample_at = Vec::new();
    for (index, slot) in slots.iter().enumerate() {
        let Some(
            running @ Running {
                phase: Phase::Decode { pending },
                ..
            },
        ) = &slot.running
        else {
            continue;
        };
        if running.pass_group() != group {
            continue;
        }
        if batch_len(batch) >= budget.batch_tokens {
            break;
        }
        sample_at.push(SampleAt {
            slot: index,
            logits_index: batch.n_tokens(),
        });
        add(batch, *pending, slot.cached.len(), slot.sequence, true)?;
        planned.push(Planned {
            slot: index,
            tokens: 1,
        });
    }

    let mut prefilling: Vec<(usize, u64)> = slots
        .iter()
        .enumerate()
        .filter_map(|(index, slot)| match &slot.running {
            Some(running)
                if matches!(running.phase, Phase::Prefill { .. })
                    && running.pass_group() == group =>
            {
                Some((index, running.admitted))
            }
            _ => None,
        })
        .collect();
    prefilling.sort_by_key(|&(_, admitted)| admitted);
    let mut prefill_left = budget
        .prefill_chunk
        .min(budget.batch_tokens.saturating_sub(batch_len(batch)));
    for (index, _) in prefilling {
        if prefill_left == 0 {
            break;
        }
        let slot = &slots[index];
        let Some(running) = &slot.running else {
            continue;
        };
        let Phase::Prefill { next } = running.phase else {
            continue;
        };
        let chunk = &running.prompt[next..running.prompt.len().min(next + prefill_left)];
        for (offset, &token) in chunk.iter().enumerate() {
            let position = next + offset;
            let last = position + 1 == running.prompt.len();
            if last {
                sample_at.push(SampleAt {
                    slot: index,
                    logits_index: batch.n_tokens(),
                });
            }
            add(batch, token, position, slot.sequence, last)?;
        }
        prefill_left -= chunk.len();
        planned.push(Planned {
            slot: index,
            tokens: chunk.len(),
        });
    }
    Ok((planned, sample_at))
}

fn batch_len(batch: &LlamaBatch<'_>) -> usize {
    usize::try_from(batch.n_tokens()).unwrap_or(0)
}

fn add(
    batch: &mut LlamaBatch<'_>,
    token: llama_cpp_2::token::LlamaToken,
    position: usize,
    sequence: i32,
    logits: bool,
) -> KilnResult<()> {
    let position =
        i32::try_from(position).map_err(|_| KilnError::internal("token position out of range"))?;
    batch
        .add(token, position, &[sequence], logits)
        .map_err(|error| KilnError::internal(format!("building the batch: {error}")))
}

/// The evaluated tokens are now in the slot's KV cache. A lone sequence's whole prefill chunk
/// that continues the canonical prefix extends it (a pass of its own always prefills a chunk of
/// `prefill_chunk` tokens while the prompt has that many left).
fn record_evaluated(slot: &mut Slot, tokens: usize, budget: &Budget) {
    let Some(running) = &mut slot.running else {
        return;
    };
    match &mut running.phase {
        Phase::Decode { pending } => slot.cached.push(*pending),
        Phase::Prefill { next } => {
            let end = *next + tokens;
            slot.cached.extend_from_slice(&running.prompt[*next..end]);
            if running.alone && slot.canonical == *next && tokens == budget.prefill_chunk {
                slot.canonical = end;
            }
            *next = end;
        }
    }
}

/// Samples the slot's next token, streams its text, and ends the sequence on an
/// end-of-generation token, a stop string or `max_new_tokens`.
fn sample_next(
    context: &LlamaContext<'_>,
    model: &LlamaModel,
    slot: &mut Slot,
    logits_index: i32,
    report: &mut StepReport,
) {
    let Some(running) = &mut slot.running else {
        return;
    };
    let vocab = model.vocab();
    // `sample` also feeds the token to the chain, so penalties see it next time.
    let token = running.sampler.sample(context, logits_index);
    if vocab.is_eog(token) {
        finish(slot, FinishReason::Stop, report);
        return;
    }
    running.generated += 1;
    let mut piece = Vec::with_capacity(32);
    // Control tokens render as nothing unless asked for; user-defined special tokens keep
    // their text.
    vocab.token_to_piece_into(token, &mut piece, running.render_special, None);
    let (text, stopped) = match running.text.push(&piece) {
        Filtered::Continue(text) => (text, false),
        Filtered::Stopped(text) => (text, true),
    };
    push_text(report, running.id, text);
    if stopped {
        finish(slot, FinishReason::Stop, report);
    } else if running.generated >= running.max_new_tokens {
        finish(slot, FinishReason::Length, report);
    } else {
        running.phase = Phase::Decode { pending: token };
    }
}

fn push_text(report: &mut StepReport, id: u64, text: String) {
    if !text.is_empty() {
        report.events.push(SequenceEvent {
            id,
            event: Ok(GenerationEvent::Text(text)),
        });
    }
}

/// Ends the slot's request with `Done`; the slot keeps its KV cache for later prefix reuse.
pub fn finish(slot: &mut Slot, finish_reason: FinishReason, report: &mut StepReport) {
    let Some(mut running) = slot.running.take() else {
        return;
    };
    // After a stop string nothing is withheld; otherwise a partial stop-string match is released.
    push_text(report, running.id, running.text.finish());
    let prompt_tokens = u32::try_from(running.prompt.len()).unwrap_or(u32::MAX);
    report.events.push(SequenceEvent {
        id: running.id,
        event: Ok(GenerationEvent::Done {
            usage: Usage::with_cached(prompt_tokens, running.generated, running.cached_tokens),
            finish_reason,
        }),
    });
}

/// Ends the slot's request with `error` and forgets its KV cache, whose state is unknown.
fn fail_slot(
    context: &mut LlamaContext<'_>,
    slot: &mut Slot,
    error: &KilnError,
    report: &mut StepReport,
) {
    if let Some(running) = slot.running.take() {
        report.events.push(SequenceEvent {
            id: running.id,
            event: Err(error.clone()),
        });
    }
    forget_cache(context, slot);
}

fn fail_all(
    context: &mut LlamaContext<'_>,
    slots: &mut [Slot],
    error: &KilnError,
    report: &mut StepReport,
) {
    for slot in slots.iter_mut().filter(|slot| !slot.is_idle()) {
        fail_slot(context, slot, error, report);
    }
}

/// Ends every sequence of adapter `group` with `error` (its adapter could not be set).
pub fn fail_group(
    context: &mut LlamaContext<'_>,
    slots: &mut [Slot],
    group: AdapterGroup,
    error: &KilnError,
    report: &mut StepReport,
) {
    let in_group = |slot: &&mut Slot| slot.running.as_ref().is_some_and(|r| r.adapter == group);
    for slot in slots.iter_mut().filter(in_group) {
        fail_slot(context, slot, error, report);
    }
}

/// Drops every KV entry of the slot's sequence.
pub fn forget_cache(context: &mut LlamaContext<'_>, slot: &mut Slot) {
    if let Ok(sequence) = u32::try_from(slot.sequence) {
        // Removing a whole sequence cannot fail in llama.cpp.
        let _ = context.clear_kv_cache_seq(Some(sequence), None, None);
    }
    slot.cached.clear();
    slot.canonical = 0;
}
