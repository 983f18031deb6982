//! A change larger than one NATS message (the server's `max_payload`, 1 MiB by default, while
//! an upsert may carry thousands of vectors) goes as several consecutive parts from one node;
//! readers put them back together. Other nodes' messages may come in between, so parts are
//! collected per change; a change takes effect, on every node, at the position of its last
//! part.

use std::collections::HashMap;

use async_nats::HeaderMap;

pub(crate) const CHANGE_HEADER: &str = "Kiln-Change";
pub(crate) const PART_HEADER: &str = "Kiln-Part";

/// Parts of a change whose publisher died before sending them all are dropped once this many
/// later messages have been read: deterministically, so every node drops the same ones.
pub(crate) const ABANDONED_AFTER: u64 = 10_000;
/// Most bytes held in unfinished changes; beyond it the oldest are dropped (never reached by
/// well-behaved nodes, whose changes are bounded by `[limits.vectorize]`).
const MAX_PENDING_BYTES: usize = 1 << 30;
/// Most parts one change may have.
pub(crate) const MAX_PARTS: usize = 4096;

/// `payload` cut into pieces of at most `part_bytes`, each with its headers.
pub(crate) fn split(
    change_id: &str,
    payload: &[u8],
    part_bytes: usize,
) -> Vec<(HeaderMap, Vec<u8>)> {
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![payload]
    } else {
        payload.chunks(part_bytes.max(1)).collect()
    };
    let count = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(index, chunk)| {
            let mut headers = HeaderMap::new();
            // JetStream's de-duplication: a retried publish of the same part is stored once.
            headers.insert("Nats-Msg-Id", format!("{change_id}/{}", index + 1).as_str());
            headers.insert(CHANGE_HEADER, change_id);
            headers.insert(PART_HEADER, format!("{}/{count}", index + 1).as_str());
            (headers, chunk.to_vec())
        })
        .collect()
}

/// One message's place in its change: `(change id, part number from 1, part count)`.
pub(crate) fn part_of(headers: Option<&HeaderMap>) -> Result<(String, usize, usize), String> {
    let headers = headers.ok_or("a message without headers")?;
    let change = headers
        .get(CHANGE_HEADER)
        .ok_or("a message without Kiln-Change")?
        .as_str()
        .to_owned();
    let part = headers
        .get(PART_HEADER)
        .ok_or("a message without Kiln-Part")?
        .as_str();
    let (number, count) = part
        .split_once('/')
        .and_then(|(number, count)| Some((number.parse().ok()?, count.parse().ok()?)))
        .ok_or_else(|| format!("Kiln-Part {part:?} is not n/count"))?;
    if number == 0 || number > count || count > MAX_PARTS {
        return Err(format!("Kiln-Part {part:?} is out of range"));
    }
    Ok((change, number, count))
}

struct Pending {
    first_position: u64,
    parts: Vec<Option<Vec<u8>>>,
    bytes: usize,
}

/// Changes whose parts are still coming.
#[derive(Default)]
pub(crate) struct Assembler {
    pending: HashMap<String, Pending>,
    bytes: usize,
}

impl Assembler {
    /// Adds the message at `position`; returns the whole change once its last part is in.
    pub(crate) fn add(
        &mut self,
        position: u64,
        (change, number, count): (String, usize, usize),
        payload: Vec<u8>,
    ) -> Option<Vec<u8>> {
        if count == 1 {
            return Some(payload);
        }
        let pending = self
            .pending
            .entry(change.clone())
            .or_insert_with(|| Pending {
                first_position: position,
                parts: vec![None; count],
                bytes: 0,
            });
        if pending.parts.len() != count {
            tracing::warn!(%change, "vectorize log: parts disagree on their count; change dropped");
            self.forget(&change);
            return None;
        }
        let size = payload.len();
        if pending.parts[number - 1].replace(payload).is_none() {
            pending.bytes += size;
            self.bytes += size;
        }
        if pending.parts.iter().all(Option::is_some) {
            let whole = self.pending.remove(&change)?;
            self.bytes -= whole.bytes;
            return Some(whole.parts.into_iter().flatten().flatten().collect());
        }
        self.drop_oldest_over_budget();
        None
    }

    /// Drops changes whose first part is more than [`ABANDONED_AFTER`] messages before
    /// `position`.
    pub(crate) fn drop_abandoned(&mut self, position: u64) {
        let abandoned: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, pending)| {
                position.saturating_sub(pending.first_position) > ABANDONED_AFTER
            })
            .map(|(change, _)| change.clone())
            .collect();
        for change in abandoned {
            tracing::warn!(%change, "vectorize log: a change's parts never all arrived; dropped");
            self.forget(&change);
        }
    }

    /// The position before the first part still waiting for the rest: where reading must
    /// start again after a restart so that no part is lost. `None` when nothing waits.
    pub(crate) fn resume_before(&self) -> Option<u64> {
        self.pending
            .values()
            .map(|pending| pending.first_position.saturating_sub(1))
            .min()
    }

    fn drop_oldest_over_budget(&mut self) {
        while self.bytes > MAX_PENDING_BYTES {
            let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, pending)| pending.first_position)
                .map(|(change, _)| change.clone())
            else {
                return;
            };
            tracing::warn!(change = %oldest, "vectorize log: too many bytes in unfinished changes; oldest dropped");
            self.forget(&oldest);
        }
    }

    fn forget(&mut self, change: &str) {
        if let Some(pending) = self.pending.remove(change) {
            self.bytes -= pending.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_put_back_together_in_any_interleaving() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let parts = split("c1", &payload, 300);
        assert_eq!(parts.len(), 4);
        let mut assembler = Assembler::default();
        let mut whole = None;
        // Another change's single part between two of ours.
        for (position, (headers, bytes)) in parts.into_iter().enumerate() {
            let place = part_of(Some(&headers)).unwrap();
            whole = assembler.add(position as u64 + 1, place, bytes);
            if position == 1 {
                assert_eq!(assembler.resume_before(), Some(0));
                let other = split("c2", b"x", 300).remove(0);
                let other_place = part_of(Some(&other.0)).unwrap();
                assert_eq!(assembler.add(9, other_place, other.1), Some(b"x".to_vec()));
            }
        }
        assert_eq!(whole, Some(payload));
        assert_eq!(assembler.resume_before(), None);
    }

    #[test]
    fn an_unfinished_change_is_dropped_after_enough_later_messages() {
        let mut assembler = Assembler::default();
        let (headers, bytes) = split("c1", &[1; 10], 4).remove(0);
        assert!(assembler
            .add(5, part_of(Some(&headers)).unwrap(), bytes)
            .is_none());
        assembler.drop_abandoned(5 + ABANDONED_AFTER);
        assert_eq!(assembler.resume_before(), Some(4));
        assembler.drop_abandoned(6 + ABANDONED_AFTER);
        assert_eq!(assembler.resume_before(), None);
    }

    #[test]
    fn malformed_part_headers_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(CHANGE_HEADER, "c");
        for bad in ["0/1", "2/1", "1", "a/b", "1/99999"] {
            headers.insert(PART_HEADER, bad);
            assert!(part_of(Some(&headers)).is_err(), "{bad}");
        }
        assert!(part_of(None).is_err());
    }
}
