//! Turning a stream of token bytes into whole-character text, holding back what might be the
//! start of a stop string.

use encoding_rs::{CoderResult, Decoder, UTF_8};

/// Decodes token bytes incrementally: a character split across tokens comes out whole, once its
/// last byte arrives.
pub struct Utf8Stream {
    decoder: Decoder,
}

impl Default for Utf8Stream {
    fn default() -> Self {
        Self {
            decoder: UTF_8.new_decoder_without_bom_handling(),
        }
    }
}

impl Utf8Stream {
    /// Decodes `bytes`, returning the characters completed so far (possibly empty). Invalid
    /// sequences become U+FFFD. Bytes of a character that never completes (generation ended
    /// mid-character) are simply never returned, rather than shown as U+FFFD.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.decode(bytes, false)
    }

    fn decode(&mut self, bytes: &[u8], last: bool) -> String {
        let capacity = self
            .decoder
            .max_utf8_buffer_length(bytes.len())
            .unwrap_or(bytes.len() * 3 + 4);
        let mut text = String::with_capacity(capacity);
        let (result, read, _had_errors) = self.decoder.decode_to_string(bytes, &mut text, last);
        // The buffer was sized by the decoder's own bound, so it always consumes everything.
        debug_assert!(matches!(result, CoderResult::InputEmpty) && read == bytes.len());
        text
    }
}

/// What [`StopFilter::push`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Text that can safely be emitted (possibly empty); generation goes on.
    Continue(String),
    /// A stop string matched: emit this text (everything before the stop string) and stop.
    Stopped(String),
}

/// Withholds only the text that could still turn out to be the start of a stop string.
pub struct StopFilter {
    stop_strings: Vec<String>,
    pending: String,
}

impl StopFilter {
    pub fn new(stop_strings: &[String]) -> Self {
        // An empty stop string would match everywhere; it means nothing useful.
        let stop_strings = stop_strings
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        Self {
            stop_strings,
            pending: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> Filtered {
        self.pending.push_str(text);
        if let Some(position) = self.earliest_match() {
            self.pending.truncate(position);
            return Filtered::Stopped(std::mem::take(&mut self.pending));
        }
        let held = self.held_back_start();
        let rest = self.pending.split_off(held);
        Filtered::Continue(std::mem::replace(&mut self.pending, rest))
    }

    /// Releases the withheld text at the end of generation: no stop string completed.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    fn earliest_match(&self) -> Option<usize> {
        self.stop_strings
            .iter()
            .filter_map(|stop| self.pending.find(stop.as_str()))
            .min()
    }

    /// The byte offset of the longest suffix of `pending` that is a proper prefix of a stop
    /// string; `pending.len()` when there is none.
    fn held_back_start(&self) -> usize {
        self.pending
            .char_indices()
            .map(|(index, _)| index)
            .find(|&index| {
                let suffix = &self.pending[index..];
                self.stop_strings
                    .iter()
                    .any(|stop| stop.starts_with(suffix))
            })
            .unwrap_or(self.pending.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multibyte_characters_split_across_pushes_come_out_whole() {
        let bytes = "é✓日".as_bytes();
        let mut stream = Utf8Stream::default();
        let mut pieces = Vec::new();
        for byte in bytes {
            pieces.push(stream.push(std::slice::from_ref(byte)));
        }
        let non_empty: Vec<_> = pieces.into_iter().filter(|p| !p.is_empty()).collect();
        assert_eq!(non_empty, ["é", "✓", "日"]);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut stream = Utf8Stream::default();
        assert_eq!(stream.push(&[b'a', 0xFF, b'b']), "a\u{FFFD}b");
        assert_eq!(stream.push(&"✓".as_bytes()[..2]), "");
        assert_eq!(stream.push(b"c"), "\u{FFFD}c");
    }

    #[test]
    fn stop_string_within_one_push_cuts_the_text() {
        let mut filter = StopFilter::new(&["END".to_owned()]);
        assert_eq!(
            filter.push("abc END def"),
            Filtered::Stopped("abc ".to_owned())
        );
    }

    #[test]
    fn stop_string_across_pushes_is_withheld_then_cut() {
        let mut filter = StopFilter::new(&["<stop>".to_owned()]);
        assert_eq!(
            filter.push("hello <s"),
            Filtered::Continue("hello ".to_owned())
        );
        assert_eq!(filter.push("to"), Filtered::Continue(String::new()));
        assert_eq!(filter.push("p> tail"), Filtered::Stopped(String::new()));
    }

    #[test]
    fn a_false_start_is_released_once_it_cannot_match() {
        let mut filter = StopFilter::new(&["<stop>".to_owned()]);
        assert_eq!(filter.push("a <st"), Filtered::Continue("a ".to_owned()));
        assert_eq!(filter.push("ar>"), Filtered::Continue("<star>".to_owned()));
        assert_eq!(filter.push("x <"), Filtered::Continue("x ".to_owned()));
        assert_eq!(filter.finish(), "<");
    }

    #[test]
    fn earliest_of_several_stop_strings_wins() {
        let mut filter = StopFilter::new(&["world".to_owned(), "lo".to_owned()]);
        assert_eq!(
            filter.push("hello world"),
            Filtered::Stopped("hel".to_owned())
        );
    }

    #[test]
    fn non_ascii_stop_strings_hold_back_on_character_boundaries() {
        let mut filter = StopFilter::new(&["日本語".to_owned()]);
        assert_eq!(filter.push("é日本"), Filtered::Continue("é".to_owned()));
        assert_eq!(filter.push("人"), Filtered::Continue("日本人".to_owned()));
    }

    #[test]
    fn no_stop_strings_passes_everything_through() {
        let mut filter = StopFilter::new(&[String::new()]);
        assert_eq!(
            filter.push("anything"),
            Filtered::Continue("anything".to_owned())
        );
        assert_eq!(filter.finish(), "");
    }
}
