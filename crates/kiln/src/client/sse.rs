//! Streamed answers: Server-Sent Events split into their `data` payloads, each read as Workers
//! AI's `{"response": …}` pieces, OpenAI chunks (`choices[0].delta.content`, which the native
//! route streams for OpenAI-style ids) or Responses events, and printed as they arrive.

use std::io::Write;

use reqwest::header::CONTENT_TYPE;
use serde_json::Value;

use super::http::{Client, ServerError};

/// Splits a byte stream into its events' `data` payloads.
#[derive(Default)]
pub struct SseParser {
    /// Bytes of a line not yet complete.
    pending: Vec<u8>,
    /// The data lines of the event being read.
    data: Option<String>,
}

impl SseParser {
    /// Takes the next bytes; returns the data of each event they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(length) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(&self.pending[start..start + length]).into_owned();
            start += length + 1;
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                events.extend(self.data.take());
            } else if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
            }
            // `event:`, `id:`, `retry:` and comments carry nothing the terminal needs.
        }
        self.pending.drain(..start);
        events
    }

    /// An event the stream ended in without its closing blank line (or line end).
    pub fn finish(&mut self) -> Option<String> {
        let mut events = self.push(b"\n\n");
        events.pop()
    }
}

/// What one event means for the terminal.
#[derive(Debug, PartialEq)]
pub enum Piece {
    Text(String),
    Failed(ServerError),
    Done,
    /// Usage, tool calls, lifecycle events: nothing to print.
    Other,
}

/// Reads one event's data.
pub fn interpret(data: &str) -> Piece {
    if data.trim() == "[DONE]" {
        return Piece::Done;
    }
    let Ok(event) = serde_json::from_str::<Value>(data) else {
        return Piece::Other;
    };
    if let Some(error) = ServerError::from_body(&event, None) {
        return Piece::Failed(error);
    }
    let delta = || {
        if event["type"] == "response.output_text.delta" {
            event["delta"].as_str()
        } else {
            None
        }
    };
    answer_text(&event)
        .or_else(delta)
        .map_or(Piece::Other, |text| Piece::Text(text.to_owned()))
}

/// The text of an answer, streamed piece or whole: Workers AI's `response`, a chat completion's
/// `delta.content` or `message.content`, a text completion's `text`, or a Responses object's
/// `output_text`.
pub fn answer_text(answer: &Value) -> Option<&str> {
    let choice = &answer["choices"][0];
    answer["response"]
        .as_str()
        .or_else(|| choice["delta"]["content"].as_str())
        .or_else(|| choice["message"]["content"].as_str())
        .or_else(|| choice["text"].as_str())
        .or_else(|| answer["output_text"].as_str())
}

/// Sends a streamed generation request and prints the answer to stdout as it arrives; returns
/// the whole answer. Dropping the future drops the connection, which stops the generation.
pub async fn stream_answer(
    client: &Client,
    model: &str,
    request: &Value,
) -> anyhow::Result<String> {
    let mut response = client.send(client.run_request(model).json(request)).await?;
    let mut printer = Printer::default();
    let is_stream = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    if !is_stream {
        // A model that does not stream answers with the whole envelope at once.
        let body: Value = response
            .json()
            .await
            .map_err(|error| client.failure(error))?;
        let result = body.get("result").unwrap_or(&body);
        match answer_text(result) {
            Some(text) => printer.print(text)?,
            None => printer.print(&serde_json::to_string_pretty(result)?)?,
        }
        return Ok(printer.text);
    }
    let mut parser = SseParser::default();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| client.failure(error))?
    {
        for data in parser.push(&chunk) {
            if printer.take(interpret(&data))? {
                return Ok(printer.text);
            }
        }
    }
    if let Some(data) = parser.finish() {
        printer.take(interpret(&data))?;
    }
    Ok(printer.text)
}

/// Prints pieces as they come and keeps the whole text.
#[derive(Default)]
struct Printer {
    text: String,
}

impl Printer {
    /// Handles one event; true once the stream is done.
    fn take(&mut self, piece: Piece) -> anyhow::Result<bool> {
        match piece {
            Piece::Text(text) => self.print(&text)?,
            Piece::Failed(error) => return Err(error.into()),
            Piece::Done => return Ok(true),
            Piece::Other => {}
        }
        Ok(false)
    }

    fn print(&mut self, text: &str) -> anyhow::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        self.text.push_str(text);
        let mut stdout = std::io::stdout();
        match stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
        {
            // `kiln run … | head` closed the pipe: what is printed is all that was wanted.
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => Ok(other?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_split_however_the_bytes_arrive() {
        let stream =
            "data: {\"response\":\"Hel\"}\n\ndata: {\"response\":\"lo\"}\r\n\r\n: comment\n\
                      event: message\ndata: first\ndata: second\n\ndata: [DONE]\n\n";
        let whole = SseParser::default().push(stream.as_bytes());
        assert_eq!(
            whole,
            [
                "{\"response\":\"Hel\"}",
                "{\"response\":\"lo\"}",
                "first\nsecond",
                "[DONE]"
            ]
        );
        // Byte by byte, a multi-byte character split included, the same events come out.
        let text = format!("{stream}data: {{\"response\":\"é\"}}\n\n");
        let mut parser = SseParser::default();
        let mut pieces = Vec::new();
        for byte in text.as_bytes() {
            pieces.extend(parser.push(std::slice::from_ref(byte)));
        }
        assert_eq!(pieces[..4], whole[..]);
        assert_eq!(pieces[4], "{\"response\":\"é\"}");
        // An unterminated last event is still read.
        let mut parser = SseParser::default();
        assert!(parser.push(b"data: tail").is_empty());
        assert_eq!(parser.finish().as_deref(), Some("tail"));
    }

    #[test]
    fn every_answer_shape_gives_its_text() {
        let text = |s: &str| Piece::Text(s.to_owned());
        assert_eq!(interpret(r#"{"response":"Hi"}"#), text("Hi"));
        assert_eq!(
            interpret(r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#),
            text("Hi")
        );
        assert_eq!(
            interpret(r#"{"choices":[{"index":0,"text":"Hi"}]}"#),
            text("Hi")
        );
        assert_eq!(
            interpret(r#"{"type":"response.output_text.delta","delta":"Hi"}"#),
            text("Hi")
        );
        assert_eq!(interpret("[DONE]"), Piece::Done);
        assert_eq!(
            interpret(r#"{"choices":[],"usage":{"prompt_tokens":3}}"#),
            Piece::Other
        );
        assert_eq!(interpret(r#"{"type":"response.created"}"#), Piece::Other);
        assert_eq!(interpret("not json"), Piece::Other);
        let Piece::Failed(error) = interpret(
            r#"{"response":"","errors":[{"code":5006,"message":"JSON Mode couldn't be met"}]}"#,
        ) else {
            panic!("an error event");
        };
        assert_eq!(error.code.as_deref(), Some("5006"));
        assert_eq!(
            answer_text(&json!({"choices": [{"message": {"content": "whole"}}]})),
            Some("whole")
        );
    }
}
