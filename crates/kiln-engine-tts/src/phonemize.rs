//! Text → IPA phonemes → Piper phoneme ids.
//!
//! Piper phonemizes with espeak-ng's `espeak_TextToPhonemes` (IPA), clause by clause, and appends
//! each clause's terminating punctuation (`.`, `,`, `?`, `!`, `:`, `;`) to the clause's phonemes;
//! clauses inside one sentence are separated by a space, and every sentence is synthesized on its
//! own. espeak-ng is GPL, so Kiln never links it: it runs the `espeak-ng` program instead, which
//! prints one line of IPA per clause but drops the punctuation. So the clauses are found here (the
//! same way espeak-ng splits them: a terminator followed by white space, or a blank line), and the
//! punctuation is put back from the text.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::TtsError;

/// Program run for phonemes; `KILN_ESPEAK_NG` overrides it.
const ESPEAK_PROGRAM: &str = "espeak-ng";
/// A run of espeak-ng that takes longer is stuck (a 4096-character text takes well under a
/// second): it is killed.
const ESPEAK_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a waiting phonemizer looks at its child and at the caller's `keep_going`.
const POLL: Duration = Duration::from_millis(10);
/// Most bytes read from espeak-ng's stdout or stderr (IPA of the longest accepted text is a
/// small fraction of this).
const MAX_OUTPUT_BYTES: u64 = 16 << 20;
/// Most espeak-ng runs one request may start after its first (the clause-by-clause fallback);
/// with more clauses than this the fallback reads the first run's lines as sentences instead.
const MAX_FALLBACK_RUNS: usize = 32;

/// espeak-ng processes that may run at once in this process, over all voices and requests.
struct ProcessSlots {
    /// (running, most allowed)
    state: Mutex<(usize, usize)>,
    freed: Condvar,
}

static SLOTS: ProcessSlots = ProcessSlots {
    state: Mutex::new((0, 2)),
    freed: Condvar::new(),
};

/// Sets how many espeak-ng processes may run at once (`limits.speech_synthesis.
/// max_phonemizer_processes`; at least one).
pub fn set_max_processes(max: usize) {
    let mut state = SLOTS.state.lock().unwrap_or_else(|e| e.into_inner());
    state.1 = max.max(1);
    SLOTS.freed.notify_all();
}

/// A claim on one of the [`ProcessSlots`], given back on drop.
struct Slot;

impl Slot {
    /// Waits for a free slot, asking `keep_going` (without the lock held) while it waits.
    fn acquire(keep_going: &dyn Fn() -> bool) -> Result<Slot, TtsError> {
        loop {
            {
                let mut state = SLOTS.state.lock().unwrap_or_else(|e| e.into_inner());
                if state.0 < state.1 {
                    state.0 += 1;
                    return Ok(Slot);
                }
                let _ = SLOTS.freed.wait_timeout(state, POLL * 5);
            }
            if !keep_going() {
                return Err(TtsError::Stopped);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = SLOTS.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = state.0.saturating_sub(1);
        SLOTS.freed.notify_one();
    }
}

/// One clause of the input text, as espeak-ng would split it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clause {
    /// The clause's words, without the terminating punctuation.
    pub text: String,
    /// The punctuation mark Piper appends to the clause's phonemes, if any.
    pub terminator: Option<char>,
    /// Whether the clause ends a sentence (`.`, `?`, `!`, a blank line or the end of the text).
    pub ends_sentence: bool,
}

/// Characters that end a clause when white space (or the end of the text) follows them.
fn is_terminator(c: char) -> bool {
    matches!(c, '.' | ',' | '?' | '!' | ';' | ':')
}

/// Closing quotes and brackets that may sit between a terminator and the white space after it.
fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '»')
}

/// Removes what espeak-ng would read as markup (`[[phoneme input]]`) and control characters.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '[' | ']' => ' ',
            '\n' => '\n',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// Splits `text` into clauses the way espeak-ng does.
pub(crate) fn split_clauses(text: &str) -> Vec<Clause> {
    let text = sanitize(text);
    let chars: Vec<char> = text.chars().collect();
    let mut clauses = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // A blank line (paragraph break) ends a sentence without punctuation.
        if c == '\n' {
            let mut j = i + 1;
            while j < chars.len() && chars[j].is_whitespace() && chars[j] != '\n' {
                j += 1;
            }
            if j < chars.len() && chars[j] == '\n' {
                push_clause(&mut clauses, &mut current, None);
                i = j + 1;
                continue;
            }
            current.push(' ');
            i += 1;
            continue;
        }
        if is_terminator(c) {
            // A run of terminators ("?!", "...") followed by optional closers and then white space.
            let mut j = i;
            while j < chars.len() && is_terminator(chars[j]) {
                j += 1;
            }
            let run = &chars[i..j];
            let mut k = j;
            while k < chars.len() && is_closer(chars[k]) {
                k += 1;
            }
            if k == chars.len() || chars[k].is_whitespace() {
                let mark = if run.contains(&'?') {
                    '?'
                } else if run.contains(&'!') {
                    '!'
                } else {
                    run[0]
                };
                current.extend(&chars[j..k]);
                push_clause(&mut clauses, &mut current, Some(mark));
                i = k;
                continue;
            }
        }
        current.push(c);
        i += 1;
    }
    push_clause(&mut clauses, &mut current, None);
    clauses
}

fn push_clause(clauses: &mut Vec<Clause>, current: &mut String, terminator: Option<char>) {
    let text = current.split_whitespace().collect::<Vec<_>>().join(" ");
    current.clear();
    let ends_sentence = !matches!(terminator, Some(',' | ';' | ':'));
    if text.is_empty() && terminator.is_none() {
        // Nothing there (trailing white space, a second blank line): only close the sentence.
        if let Some(last) = clauses.last_mut() {
            last.ends_sentence = true;
        }
        return;
    }
    clauses.push(Clause {
        text,
        terminator,
        ends_sentence,
    });
}

/// Runs espeak-ng once on `input` and returns its non-empty output lines. At most
/// `max_phonemizer_processes` of these run at once; a child that outlives [`ESPEAK_TIMEOUT`] or
/// whose caller stops waiting is killed.
fn run_espeak(
    voice: &str,
    input: &str,
    keep_going: &dyn Fn() -> bool,
) -> Result<Vec<String>, TtsError> {
    let program = std::env::var("KILN_ESPEAK_NG").unwrap_or_else(|_| ESPEAK_PROGRAM.to_owned());
    let args = ["-q", "--ipa", "-b", "1", "-v", voice];
    let stdout = run_limited(&program, &args, input, keep_going, ESPEAK_TIMEOUT)?;
    Ok(String::from_utf8_lossy(&stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Runs `program` in a [`Slot`] with `input` on its stdin and returns its stdout; kills it
/// after `timeout` or once `keep_going` says stop.
fn run_limited(
    program: &str,
    args: &[&str],
    input: &str,
    keep_going: &dyn Fn() -> bool,
    timeout: Duration,
) -> Result<Vec<u8>, TtsError> {
    let _slot = Slot::acquire(keep_going)?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            TtsError::Phonemizer(format!(
                "cannot run `{program}` ({e}); install it with `apt-get install espeak-ng` \
                 (scripts/install-deps does)"
            ))
        })?;
    let (stdin, stdout, stderr) =
        match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(stdin), Some(stdout), Some(stderr)) => (stdin, stdout, stderr),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TtsError::Phonemizer("espeak-ng has no pipes".into()));
            }
        };
    let input = input.to_owned();
    // Writing and reading happen on their own threads so that no full pipe can deadlock us,
    // and this one can watch the clock.
    let writer = std::thread::spawn(move || {
        let mut stdin = stdin;
        stdin.write_all(input.as_bytes())
    });
    let read_all = |pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            pipe.take(MAX_OUTPUT_BYTES)
                .read_to_end(&mut out)
                .map(|_| out)
        })
    };
    let out_reader = read_all(Box::new(stdout));
    let err_reader = read_all(Box::new(stderr));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(TtsError::Phonemizer(format!("espeak-ng failed: {e}"))),
        }
        let stop = if !keep_going() {
            Some(TtsError::Stopped)
        } else if started.elapsed() > timeout {
            Some(TtsError::Phonemizer(format!(
                "{program} did not finish within {} ms and was killed",
                timeout.as_millis()
            )))
        } else {
            None
        };
        if let Some(error) = stop {
            let _ = child.kill();
            let _ = child.wait();
            break Err(error);
        }
        std::thread::sleep(POLL);
    };
    // The child is gone, so its pipes are closed and these threads end.
    let written = writer.join();
    let stdout = out_reader.join();
    let stderr = err_reader.join();
    let status = status?;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(TtsError::Phonemizer(format!("writing to espeak-ng: {e}"))),
        Err(_) => return Err(TtsError::Phonemizer("espeak-ng writer panicked".into())),
    }
    let stdout = match stdout {
        Ok(Ok(bytes)) => bytes,
        _ => return Err(TtsError::Phonemizer("reading from espeak-ng failed".into())),
    };
    if !status.success() {
        let stderr = match stderr {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).trim().to_owned(),
            _ => String::new(),
        };
        return Err(TtsError::Phonemizer(format!(
            "{program} exited with {status}: {stderr}"
        )));
    }
    Ok(stdout)
}

/// Phonemizes `text` into sentences of IPA phonemes, with punctuation, as Piper does.
pub(crate) fn phonemize(
    voice: &str,
    text: &str,
    keep_going: &dyn Fn() -> bool,
) -> Result<Vec<String>, TtsError> {
    let clauses: Vec<Clause> = split_clauses(text)
        .into_iter()
        .filter(|c| !c.text.is_empty())
        .collect();
    if clauses.is_empty() {
        return Ok(Vec::new());
    }
    // One espeak-ng run for the whole text, one clause per paragraph so that espeak-ng cannot
    // merge two of them; it prints one line per clause. If the count does not match (espeak-ng
    // split a clause further, or one clause gave no phonemes), run it clause by clause.
    let batch: String = clauses
        .iter()
        .map(|c| match c.terminator {
            Some(t) => format!("{}{t}\n\n", c.text),
            None => format!("{}\n\n", c.text),
        })
        .collect();
    let mut lines = run_espeak(voice, &batch, keep_going)?;
    if lines.len() != clauses.len() {
        if clauses.len() > MAX_FALLBACK_RUNS {
            // One process per clause would be one per few characters of a hostile text; the
            // lines of the one run already made are spoken as sentences, without the
            // punctuation marks (which only shape intonation).
            tracing::debug!(
                clauses = clauses.len(),
                lines = lines.len(),
                "espeak-ng split the text differently; its lines become sentences"
            );
            return Ok(lines);
        }
        lines = clauses
            .iter()
            .map(|c| run_espeak(voice, &c.text, keep_going).map(|l| l.join(" ")))
            .collect::<Result<_, _>>()?;
    }
    let mut sentences = Vec::new();
    let mut sentence = String::new();
    for (clause, phonemes) in clauses.iter().zip(lines) {
        if phonemes.is_empty() && clause.terminator.is_none() {
            continue;
        }
        if !sentence.is_empty() && !sentence.ends_with(' ') {
            sentence.push(' ');
        }
        sentence.push_str(&phonemes);
        if let Some(t) = clause.terminator {
            sentence.push(t);
        }
        if clause.ends_sentence {
            push_sentence(&mut sentences, &mut sentence);
        }
    }
    push_sentence(&mut sentences, &mut sentence);
    Ok(sentences)
}

fn push_sentence(sentences: &mut Vec<String>, sentence: &mut String) {
    let s = sentence.trim();
    // A sentence of punctuation alone has nothing to say.
    if s.chars().any(|c| !is_terminator(c) && !c.is_whitespace()) {
        sentences.push(s.to_owned());
    }
    sentence.clear();
}

/// Piper's phoneme → id mapping: `^` (BOS), `_` (pad) after it and after every phoneme, `$` (EOS).
/// Phonemes the voice does not know are skipped, as Piper does.
#[derive(Debug, Clone)]
pub(crate) struct PhonemeIds {
    map: HashMap<char, Vec<i64>>,
    bos: Vec<i64>,
    eos: Vec<i64>,
    pad: Vec<i64>,
}

impl PhonemeIds {
    pub fn new(map: HashMap<String, Vec<i64>>) -> Result<Self, TtsError> {
        let mut by_char = HashMap::new();
        for (phoneme, ids) in map {
            let mut chars = phoneme.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                by_char.insert(c, ids);
            }
        }
        let get = |c: char| {
            by_char.get(&c).cloned().ok_or_else(|| {
                TtsError::Runtime(format!("voice phoneme_id_map has no `{c}` entry"))
            })
        };
        Ok(Self {
            bos: get('^')?,
            eos: get('$')?,
            pad: get('_')?,
            map: by_char,
        })
    }

    pub fn encode(&self, phonemes: &str) -> Vec<i64> {
        let mut ids = self.bos.clone();
        ids.extend(&self.pad);
        for c in phonemes.chars() {
            if let Some(id) = self.map.get(&c) {
                ids.extend(id);
                ids.extend(&self.pad);
            } else {
                tracing::trace!(phoneme = %c, "phoneme not in the voice's map; skipped");
            }
        }
        ids.extend(&self.eos);
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(text: &str, terminator: Option<char>, ends_sentence: bool) -> Clause {
        Clause {
            text: text.into(),
            terminator,
            ends_sentence,
        }
    }

    #[test]
    fn splits_like_espeak() {
        assert_eq!(
            split_clauses("Hello, world! How are you?"),
            vec![
                clause("Hello", Some(','), false),
                clause("world", Some('!'), true),
                clause("How are you", Some('?'), true),
            ]
        );
        assert_eq!(
            split_clauses("It costs 3.5 dollars, e.g. a lot"),
            vec![
                clause("It costs 3.5 dollars", Some(','), false),
                clause("e.g", Some('.'), true),
                clause("a lot", None, true),
            ]
        );
        assert_eq!(
            split_clauses("Wait...  \"Really?!\" Yes:\n\nno"),
            vec![
                clause("Wait", Some('.'), true),
                clause("\"Really\"", Some('?'), true),
                clause("Yes", Some(':'), true),
                clause("no", None, true),
            ]
        );
        assert_eq!(split_clauses("  ...  "), vec![clause("", Some('.'), true)]);
        assert!(split_clauses("").is_empty());
    }

    // These run the espeak-ng program (scripts/install-deps installs it).
    #[test]
    fn phonemizes_with_punctuation_per_sentence() {
        let sentences =
            phonemize("en-us", "Hello, world! How are you?", &|| true).expect("espeak-ng");
        assert_eq!(sentences, vec!["həlˈoʊ, wˈɜːld!", "hˈaʊ ɑːɹ juː?"]);
    }

    #[test]
    fn falls_back_to_one_run_per_clause() {
        // "-." gives espeak-ng no phonemes, so the batch output has a line too few.
        let sentences = phonemize("en-us", "Hello. -. World, again.", &|| true).expect("espeak-ng");
        assert_eq!(sentences, vec!["həlˈoʊ.", "wˈɜːld, ɐɡˈɛn."]);
        assert!(phonemize("en-us", "... ?! ,", &|| true)
            .expect("espeak-ng")
            .is_empty());
    }

    #[test]
    fn a_stuck_child_is_killed() {
        let started = Instant::now();
        let result = run_limited("sleep", &["30"], "", &|| true, Duration::from_millis(300));
        assert!(
            matches!(&result, Err(TtsError::Phonemizer(m)) if m.contains("killed")),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let started = Instant::now();
        let result = run_limited("sleep", &["30"], "", &|| false, Duration::from_secs(60));
        assert_eq!(result, Err(TtsError::Stopped));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn processes_wait_for_a_slot() {
        let max_running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = |max_running: &std::sync::atomic::AtomicUsize| {
            let running = SLOTS.state.lock().map(|s| s.0).unwrap_or(0);
            max_running.fetch_max(running, std::sync::atomic::Ordering::SeqCst);
        };
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let max_running = max_running.clone();
                std::thread::spawn(move || {
                    let watch = || {
                        peak(&max_running);
                        true
                    };
                    run_limited("sleep", &["0.2"], "", &watch, Duration::from_secs(10))
                })
            })
            .collect();
        for thread in threads {
            assert!(thread.join().expect("joins").is_ok());
        }
        // The limit is 2 unless a test lowered it; the other tests here run at most a few.
        let allowed = SLOTS.state.lock().map(|s| s.1).unwrap_or(0);
        assert!(max_running.load(std::sync::atomic::Ordering::SeqCst) <= allowed);
    }

    #[test]
    fn many_clauses_do_not_start_many_processes() {
        // "-." gives espeak-ng no phonemes, so line counts never match; 500 clauses must not
        // become 500 processes (this would take minutes if they did, not milliseconds).
        let text = "Hello. -. ".repeat(250);
        let started = Instant::now();
        let sentences = phonemize("en-us", &text, &|| true).expect("espeak-ng");
        assert_eq!(sentences.len(), 250);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn strips_espeak_markup() {
        assert_eq!(split_clauses("[[h@'loU]]")[0].text, "h@'loU");
    }

    #[test]
    fn ids_follow_piper() {
        let map: HashMap<String, Vec<i64>> = [("_", 0), ("^", 1), ("$", 2), (" ", 3), ("a", 14)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), vec![v]))
            .collect();
        let ids = PhonemeIds::new(map).expect("map");
        assert_eq!(ids.encode("a a\u{200d}"), vec![1, 0, 14, 0, 3, 0, 14, 0, 2]);
    }
}
