//! The pieces of `kiln chat` that need no terminal: gathering a multi-line message, the
//! commands, and the conversation that every turn sends whole.

use serde_json::{json, Value};

const FENCE: &str = "\"\"\"";

/// Gathers the lines of one message. A line ending in `\` goes on to the next line; a line
/// starting with `"""` opens a block that the next line ending in `"""` closes (`"""one line"""`
/// is a message of its own).
#[derive(Default)]
pub struct Composer {
    lines: Vec<String>,
    in_block: bool,
}

impl Composer {
    /// Whether a message has begun and waits for more lines.
    pub fn continuing(&self) -> bool {
        self.in_block || !self.lines.is_empty()
    }

    /// Takes one typed line; returns the message once it is complete.
    pub fn push(&mut self, line: &str) -> Option<String> {
        if self.in_block {
            match line.trim_end().strip_suffix(FENCE) {
                Some(last) => {
                    self.lines.push(last.to_owned());
                    return Some(self.take());
                }
                None => {
                    self.lines.push(line.to_owned());
                    return None;
                }
            }
        }
        if self.lines.is_empty() {
            if let Some(rest) = line.trim_start().strip_prefix(FENCE) {
                if let Some(inner) = rest.trim_end().strip_suffix(FENCE) {
                    return Some(inner.trim().to_owned());
                }
                self.in_block = true;
                self.lines.push(rest.to_owned());
                return None;
            }
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                self.lines.push(head.to_owned());
                None
            }
            None => {
                self.lines.push(line.to_owned());
                Some(self.take())
            }
        }
    }

    /// Forgets a message begun (Ctrl-C at the prompt).
    pub fn clear(&mut self) {
        self.lines.clear();
        self.in_block = false;
    }

    fn take(&mut self) -> String {
        let message = self.lines.join("\n");
        self.clear();
        message.trim_matches(['\n', '\r']).to_owned()
    }
}

/// What a complete message asks of the chat itself.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Exit,
    Clear,
    Help,
    Unknown(String),
}

impl Command {
    /// The command a message is, if it is one: a single word starting with `/`.
    pub fn parse(message: &str) -> Option<Command> {
        let word = message.trim();
        if !word.starts_with('/') || word.contains(char::is_whitespace) {
            return None;
        }
        Some(match word {
            "/exit" | "/quit" | "/bye" => Command::Exit,
            "/clear" => Command::Clear,
            "/help" | "/?" => Command::Help,
            other => Command::Unknown(other.to_owned()),
        })
    }
}

/// The messages so far. A turn's question stays only once its answer is complete: a stopped or
/// failed answer takes its question back out.
pub struct Conversation {
    opening: Vec<Value>,
    messages: Vec<Value>,
}

impl Conversation {
    pub fn new(opening: Vec<Value>) -> Conversation {
        Conversation {
            messages: opening.clone(),
            opening,
        }
    }

    pub fn messages(&self) -> &[Value] {
        &self.messages
    }

    pub fn ask(&mut self, question: &str) {
        self.messages
            .push(json!({"role": "user", "content": question}));
    }

    pub fn answered(&mut self, answer: &str) {
        self.messages
            .push(json!({"role": "assistant", "content": answer}));
    }

    /// Takes back the question last asked (its answer was stopped or failed).
    pub fn retract(&mut self) {
        if self
            .messages
            .last()
            .is_some_and(|last| last["role"] == "user")
        {
            self.messages.pop();
        }
    }

    /// Starts over, keeping the system message.
    pub fn clear(&mut self) {
        self.messages = self.opening.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compose(lines: &[&str]) -> (Vec<String>, bool) {
        let mut composer = Composer::default();
        let messages = lines
            .iter()
            .filter_map(|line| composer.push(line))
            .collect();
        (messages, composer.continuing())
    }

    #[test]
    fn single_lines_are_messages() {
        assert_eq!(
            compose(&["Hello", "Again"]),
            (vec!["Hello".into(), "Again".into()], false)
        );
    }

    #[test]
    fn a_trailing_backslash_continues_the_message() {
        assert_eq!(compose(&["one \\", "two\\"]), (vec![], true));
        assert_eq!(
            compose(&["one \\", "two\\", "three"]),
            (vec!["one \ntwo\nthree".into()], false)
        );
    }

    #[test]
    fn triple_quotes_fence_a_block() {
        assert_eq!(
            compose(&["\"\"\"", "fn main() {\\", "}", "\"\"\""]),
            (vec!["fn main() {\\\n}".into()], false)
        );
        assert_eq!(
            compose(&["\"\"\"Dear model,", "", "hello\"\"\"", "next"]),
            (vec!["Dear model,\n\nhello".into(), "next".into()], false)
        );
        assert_eq!(
            compose(&["\"\"\"inline\"\"\""]),
            (vec!["inline".into()], false)
        );
        assert_eq!(compose(&["\"\"\"", "open"]), (vec![], true));
        // Quotes later in a line are text.
        assert_eq!(
            compose(&["say \"\"\" please"]),
            (vec!["say \"\"\" please".into()], false)
        );
    }

    #[test]
    fn clearing_forgets_the_message_begun() {
        let mut composer = Composer::default();
        assert_eq!(composer.push("\"\"\"draft"), None);
        composer.clear();
        assert!(!composer.continuing());
        assert_eq!(composer.push("fresh").as_deref(), Some("fresh"));
    }

    #[test]
    fn commands_are_single_slash_words() {
        assert_eq!(Command::parse("/exit"), Some(Command::Exit));
        assert_eq!(Command::parse(" /quit "), Some(Command::Exit));
        assert_eq!(Command::parse("/clear"), Some(Command::Clear));
        assert_eq!(Command::parse("/?"), Some(Command::Help));
        assert_eq!(
            Command::parse("/frobnicate"),
            Some(Command::Unknown("/frobnicate".into()))
        );
        assert_eq!(Command::parse("/path/to a file"), None);
        assert_eq!(Command::parse("exit"), None);
    }

    #[test]
    fn only_answered_turns_stay_in_the_conversation() {
        let system = json!({"role": "system", "content": "Be brief."});
        let mut conversation = Conversation::new(vec![system.clone()]);
        conversation.ask("Hi");
        conversation.answered("Hello!");
        conversation.ask("Tell me a long story");
        conversation.retract();
        conversation.ask("Bye");
        let roles: Vec<&str> = conversation
            .messages()
            .iter()
            .filter_map(|message| message["role"].as_str())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(conversation.messages()[3]["content"], "Bye");
        conversation.clear();
        assert_eq!(conversation.messages(), [system]);
        conversation.retract();
        assert_eq!(conversation.messages().len(), 1, "the system message stays");
    }
}
