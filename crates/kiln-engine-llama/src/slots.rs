//! Sequence slots: one llama.cpp sequence each, with the KV cache it holds and, while a request
//! runs in it, that request's sampling and text state. Idle slots keep their KV cache so a later
//! request that shares a prompt prefix starts from there (the prefix cache).

use kiln_core::engine::SequenceId;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use crate::lora::AdapterGroup;
use crate::text_stream::{Filtered, StopFilter, Utf8Stream};

/// Where a running sequence is.
pub enum Phase {
    /// Prompt tokens from `next` on still have to be evaluated.
    Prefill { next: usize },
    /// `pending` was sampled and goes into the next forward pass.
    Decode { pending: LlamaToken },
}

/// A request running in a slot.
pub struct Running {
    pub id: SequenceId,
    pub prompt: Vec<LlamaToken>,
    /// Prompt tokens found in the slot's KV cache at admission.
    pub cached_tokens: u32,
    pub sampler: LlamaSampler,
    /// The adapter this sequence runs with; a pass only holds sequences of one group.
    pub adapter: AdapterGroup,
    pub text: TextPipeline,
    /// Render control tokens as text: tool calls open with them (`<tool_call>`), and the
    /// transport has to see the call syntax to parse it.
    pub render_special: bool,
    pub max_new_tokens: u32,
    pub generated: u32,
    pub phase: Phase,
    /// Admission order, so the oldest prompt is prefilled first.
    pub admitted: u64,
    /// Runs in forward passes of its own, from an empty KV cache (see [`PassGroup`]).
    pub alone: bool,
}

impl Running {
    pub fn pass_group(&self) -> PassGroup {
        PassGroup {
            adapter: self.adapter,
            alone: self.alone.then_some(self.admitted),
        }
    }
}

/// Which sequences share a forward pass. llama.cpp's arithmetic depends on the batch's shape:
/// how many tokens of how many sequences a ubatch holds picks the matmul and attention kernels
/// and their summation order, and the longest KV cache in it sets the attention width. So a
/// sequence whose output must not depend on other traffic runs alone (keyed by its admission),
/// and sequences of different adapters never share a pass (the adapter is set per context).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PassGroup {
    pub adapter: AdapterGroup,
    pub alone: Option<u64>,
}

/// The group to run next among those with work: the first one after `last` (wrapping round),
/// so that every group gets passes.
pub fn next_turn(waiting: &[PassGroup], last: &mut Option<PassGroup>) -> Option<PassGroup> {
    let mut groups = waiting.to_vec();
    groups.sort();
    groups.dedup();
    let next = last
        .and_then(|last| groups.iter().copied().find(|&group| group > last))
        .or_else(|| groups.first().copied())?;
    *last = Some(next);
    Some(next)
}

/// One llama.cpp sequence.
pub struct Slot {
    /// The llama.cpp sequence id.
    pub sequence: i32,
    /// Tokens whose KV entries are in this sequence, from position 0.
    pub cached: Vec<LlamaToken>,
    /// How many of `cached` lone sequences computed in whole prefill chunks from an empty cache:
    /// the part a lone sequence may reuse, since a fresh run computes it the same way.
    pub canonical: usize,
    /// The adapter those KV entries were computed with: they are only reusable with it.
    pub cached_adapter: AdapterGroup,
    /// Last time a request used this slot (a counter, for LRU).
    pub last_used: u64,
    /// The conversation that last ran here.
    pub session: Option<String>,
    /// The tenant whose prompt the cached KV entries are: only that tenant may reuse them.
    pub tenant: Option<String>,
    pub running: Option<Running>,
}

impl Slot {
    pub fn new(sequence: i32) -> Self {
        Self {
            sequence,
            cached: Vec::new(),
            canonical: 0,
            cached_adapter: None,
            last_used: 0,
            session: None,
            tenant: None,
            running: None,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_none()
    }
}

/// A slot whose cache is no longer than this beyond the shared prefix is cheap to overwrite.
const CHEAP_TO_DISCARD: usize = 256;

/// The idle slot a new prompt should run in: the slot pinned to `session` if it is idle; else
/// the idle slot sharing the longest prefix with `prompt`, if at least half of what that slot
/// holds is reused or what it would discard is short (so a shared chat-template preamble is
/// reused, but does not evict a long conversation); else the least recently used idle slot.
pub fn choose_slot(
    slots: &[Slot],
    prompt: &[LlamaToken],
    reuse: Reuse<'_>,
    session: Option<&str>,
) -> Option<usize> {
    if let Some(session) = session {
        let pinned = slots.iter().position(|slot| {
            slot.is_idle()
                && slot.session.as_deref() == Some(session)
                && slot.tenant.as_deref() == reuse.tenant
        });
        if pinned.is_some() {
            return pinned;
        }
    }
    let idle = || slots.iter().enumerate().filter(|(_, slot)| slot.is_idle());
    let best_match = idle()
        .map(|(index, slot)| (index, reusable_prefix(slot, prompt, reuse), slot))
        .filter(|&(_, shared, slot)| {
            let discarded = slot.cached.len() - shared;
            shared > 0 && (shared >= discarded || discarded <= CHEAP_TO_DISCARD)
        })
        .max_by_key(|&(_, shared, slot)| (shared, std::cmp::Reverse(slot.last_used)))
        .map(|(index, _, _)| index);
    best_match.or_else(|| least_recently_used(slots))
}

/// The idle slot for a lone sequence and how much of `prompt` it reuses there: the slot holding
/// the most whole canonical chunks of it, else the least recently used one.
pub fn choose_lone_slot(
    slots: &[Slot],
    prompt: &[LlamaToken],
    reuse: Reuse<'_>,
    chunk: usize,
) -> Option<(usize, usize)> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, slot)| slot.is_idle())
        .map(|(index, slot)| (index, canonical_prefix(slot, prompt, reuse, chunk)))
        .filter(|&(_, shared)| shared > 0)
        .max_by_key(|&(index, shared)| (shared, slots[index].last_used))
        .or_else(|| least_recently_used(slots).map(|index| (index, 0)))
}

/// The part of `prompt` a lone sequence may take from `slot`: whole chunks of the slot's
/// canonical prefix, and only those before the chunk holding the prompt's last token, whose
/// logits must come from a pass of the same shape as in a fresh run.
pub fn canonical_prefix(
    slot: &Slot,
    prompt: &[LlamaToken],
    reuse: Reuse<'_>,
    chunk: usize,
) -> usize {
    let chunk = chunk.max(1);
    let shared = reusable_prefix(slot, prompt, reuse).min(slot.canonical);
    let last_chunk_start = prompt.len().saturating_sub(1) / chunk * chunk;
    (shared / chunk * chunk).min(last_chunk_start)
}

/// The idle slot used longest ago: where a sequence that reuses no cache does least harm.
pub fn least_recently_used(slots: &[Slot]) -> Option<usize> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, slot)| slot.is_idle())
        .min_by_key(|(_, slot)| slot.last_used)
        .map(|(index, _)| index)
}

/// Whose KV entries a new sequence may start from: computed with its adapter, for its tenant.
#[derive(Debug, Clone, Copy)]
pub struct Reuse<'a> {
    pub adapter: AdapterGroup,
    pub tenant: Option<&'a str>,
}

/// The part of `prompt` whose KV entries the slot holds, computed with the same adapter from
/// the same tenant's prompts.
pub fn reusable_prefix(slot: &Slot, prompt: &[LlamaToken], reuse: Reuse<'_>) -> usize {
    if slot.cached_adapter == reuse.adapter && slot.tenant.as_deref() == reuse.tenant {
        common_prefix(&slot.cached, prompt)
    } else {
        0
    }
}

pub fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Token bytes → whole characters → text with stop strings cut out.
pub struct TextPipeline {
    utf8: Utf8Stream,
    stop: StopFilter,
}

impl TextPipeline {
    pub fn new(stop_strings: &[String]) -> Self {
        Self {
            utf8: Utf8Stream::default(),
            stop: StopFilter::new(stop_strings),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) -> Filtered {
        let decoded = self.utf8.push(bytes);
        self.stop.push(&decoded)
    }

    /// The text withheld as a possible stop-string start, released at the end of generation.
    pub fn finish(&mut self) -> String {
        self.stop.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose_slot_for_base(
        slots: &[Slot],
        prompt: &[LlamaToken],
        session: Option<&str>,
    ) -> Option<usize> {
        choose_slot(slots, prompt, base(None), session)
    }

    fn base(tenant: Option<&str>) -> Reuse<'_> {
        Reuse {
            adapter: None,
            tenant,
        }
    }

    #[test]
    fn a_cache_computed_with_another_adapter_is_not_reused() {
        let mut slots = vec![slot(0, &[1, 2, 3], 5), slot(1, &[], 1)];
        slots[0].cached_adapter = Some(0);
        let with_adapter = Reuse {
            adapter: Some(0),
            tenant: None,
        };
        assert_eq!(
            choose_slot(&slots, &tokens(&[1, 2, 3, 4]), with_adapter, None),
            Some(0)
        );
        assert_eq!(
            choose_slot(&slots, &tokens(&[1, 2, 3, 4]), base(None), None),
            Some(1)
        );
    }

    #[test]
    fn another_tenants_cache_is_never_reused_nor_its_session_slot() {
        let mut slots = vec![slot(0, &[1, 2, 3], 5), slot(1, &[], 1)];
        slots[0].tenant = Some("account-a".into());
        slots[0].session = Some("chat".into());
        let prompt = tokens(&[1, 2, 3, 4]);
        assert_eq!(
            reusable_prefix(&slots[0], &prompt, base(Some("account-a"))),
            3
        );
        assert_eq!(
            reusable_prefix(&slots[0], &prompt, base(Some("account-b"))),
            0
        );
        assert_eq!(
            choose_slot(&slots, &prompt, base(Some("account-a")), Some("chat")),
            Some(0)
        );
        assert_eq!(
            choose_slot(&slots, &prompt, base(Some("account-b")), Some("chat")),
            Some(1),
            "B names A's session: it gets the least recently used slot, not A's cache"
        );
    }

    fn tokens(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&id| LlamaToken(id)).collect()
    }

    fn slot(sequence: i32, cached: &[i32], last_used: u64) -> Slot {
        Slot {
            cached: tokens(cached),
            last_used,
            ..Slot::new(sequence)
        }
    }

    #[test]
    fn longest_prefix_then_least_recently_used() {
        let slots = vec![slot(0, &[1, 2], 5), slot(1, &[1, 2, 3], 9), slot(2, &[], 1)];
        assert_eq!(
            choose_slot_for_base(&slots, &tokens(&[1, 2, 3, 4]), None),
            Some(1)
        );
        // Nothing shared: the slot used longest ago.
        assert_eq!(choose_slot_for_base(&slots, &tokens(&[7]), None), Some(2));
    }

    #[test]
    fn a_short_shared_preamble_does_not_evict_a_long_cache() {
        let conversation: Vec<i32> = (1..=600).collect();
        let slots = vec![slot(0, &conversation, 5), slot(1, &[8, 9], 1)];
        assert_eq!(
            choose_slot_for_base(&slots, &tokens(&[1, 2, 7]), None),
            Some(1)
        );
        // Reusing half of what a slot holds is worth it.
        let half: Vec<i32> = (1..=300).chain([7]).collect();
        assert_eq!(choose_slot_for_base(&slots, &tokens(&half), None), Some(0));
    }

    #[test]
    fn a_slot_worth_reusing_wins_over_a_longer_match_that_is_not() {
        // Slot 0 shares one more token but would throw away a long conversation.
        let long: Vec<i32> = [1, 2, 3, 4].into_iter().chain(100..700).collect();
        let slots = vec![
            slot(0, &long, 1),
            slot(1, &[1, 2, 3, 50, 51], 2),
            slot(2, &[], 0),
        ];
        assert_eq!(
            choose_slot_for_base(&slots, &tokens(&[1, 2, 3, 4, 9]), None),
            Some(1)
        );
    }

    #[test]
    fn a_shared_preamble_is_reused_when_little_is_discarded() {
        // A finished short request holds the chat template's preamble plus a short answer.
        let slots = vec![slot(0, &[1, 2, 3, 40, 41, 42, 43, 44], 5), slot(1, &[], 0)];
        assert_eq!(
            choose_slot_for_base(&slots, &tokens(&[1, 2, 3, 50]), None),
            Some(0)
        );
    }

    #[test]
    fn groups_take_turns_and_a_lone_sequence_gets_its_own() {
        let shared = PassGroup {
            adapter: None,
            alone: None,
        };
        let lone = |admitted| PassGroup {
            adapter: None,
            alone: Some(admitted),
        };
        let waiting = [shared, lone(7), shared, lone(3)];
        let mut last = None;
        let turns: Vec<_> = (0..4)
            .filter_map(|_| next_turn(&waiting, &mut last))
            .collect();
        assert_eq!(turns, [shared, lone(3), lone(7), shared]);
        assert_eq!(next_turn(&[], &mut last), None);
    }

    #[test]
    fn a_lone_sequence_reuses_only_whole_canonical_chunks() {
        let prompt: Vec<i32> = (1..=20).collect();
        let mut slots = vec![
            slot(0, &prompt, 1),
            slot(1, &prompt[..9], 2),
            slot(2, &[], 0),
        ];
        slots[0].canonical = 8;
        // Slot 1 holds more of the prompt, but none of it canonical: the LRU slot, from empty.
        assert_eq!(
            choose_lone_slot(&slots[1..], &tokens(&prompt), base(None), 4),
            Some((1, 0))
        );
        assert_eq!(
            choose_lone_slot(&slots, &tokens(&prompt), base(None), 4),
            Some((0, 8))
        );
        // The chunk holding the last prompt token is always computed again.
        assert_eq!(
            canonical_prefix(&slots[0], &tokens(&prompt[..8]), base(None), 4),
            4
        );
        assert_eq!(
            canonical_prefix(&slots[0], &tokens(&prompt[..9]), base(None), 4),
            8
        );
        // Only whole chunks: 8 canonical tokens are one chunk of 5.
        assert_eq!(
            canonical_prefix(&slots[0], &tokens(&prompt), base(None), 5),
            5
        );
        assert_eq!(
            canonical_prefix(&slots[0], &tokens(&prompt), base(Some("b")), 4),
            0
        );
    }

    #[test]
    fn a_session_goes_back_to_its_slot() {
        let mut slots = vec![slot(0, &[1, 2, 3], 5), slot(1, &[9], 9)];
        slots[1].session = Some("chat-a".into());
        assert_eq!(
            choose_slot_for_base(&slots, &tokens(&[1, 2, 3]), Some("chat-a")),
            Some(1)
        );
        // An unknown session falls back to the prefix match.
        assert_eq!(
            choose_slot_for_base(&slots, &tokens(&[1, 2]), Some("other")),
            Some(0)
        );
    }
}
