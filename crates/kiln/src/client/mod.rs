//! `kiln run`, `kiln chat` and `kiln ps`: the terminal's way to a running server. They talk to it
//! over HTTP as any client does (the Workers AI REST route `…/ai/run/{model}`, SSE for streamed
//! answers, and `GET /kiln/models`), so they work against a server on another machine too.

mod chat;
mod compose;
mod http;
mod ps;
mod run;
mod sse;
mod task;

use clap::Args;
use serde_json::{json, Value};

pub use chat::{chat, ChatArgs};
pub use ps::{ps, PsArgs};
pub use run::{run, RunArgs};

/// Where `kiln serve` listens unless told otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8787";

/// Which server to talk to and as whom: shared by `kiln run`, `kiln chat` and `kiln ps`.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Base URL of the Kiln server.
    #[arg(long, env = "KILN_URL", default_value = DEFAULT_URL)]
    pub url: String,

    /// API token, for a server that requires tokens (`kiln tokens create` prints one).
    #[arg(long, env = "KILN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// The account in `/accounts/{account}/…`: the token's own while tokens are required; any
    /// name in open mode.
    #[arg(long, env = "KILN_ACCOUNT", default_value = "local")]
    pub account: String,
}

/// Generation settings shared by `kiln run` and `kiln chat`.
#[derive(Args, Debug, Clone, Default)]
pub struct GenerationArgs {
    /// A system message put before the conversation.
    #[arg(long)]
    pub system: Option<String>,

    /// Most tokens in one answer [default: the server's: 256 for Workers AI's models].
    #[arg(long)]
    pub max_tokens: Option<u32>,

    /// Sampling temperature; 0 is greedy [default: the model's].
    #[arg(long)]
    pub temperature: Option<f32>,
}

impl GenerationArgs {
    /// The streamed request for `messages` (the system message, if any, is already first).
    fn request(&self, messages: &[Value]) -> Value {
        let mut body = json!({"messages": messages, "stream": true});
        if let Some(max_tokens) = self.max_tokens {
            body["max_tokens"] = json!(max_tokens);
        }
        if let Some(temperature) = self.temperature {
            body["temperature"] = json!(temperature);
        }
        body
    }

    /// The conversation's opening: the system message, if one was given.
    fn opening(&self) -> Vec<Value> {
        self.system
            .iter()
            .map(|system| json!({"role": "system", "content": system}))
            .collect()
    }
}

/// The runtime the client commands run on: one thread is plenty for one conversation.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_only_the_settings_given() {
        let plain = GenerationArgs::default();
        let messages = [json!({"role": "user", "content": "Hi"})];
        assert_eq!(
            plain.request(&messages),
            json!({"messages": messages, "stream": true})
        );
        assert!(plain.opening().is_empty());
        let set = GenerationArgs {
            system: Some("Be brief.".into()),
            max_tokens: Some(16),
            temperature: Some(0.0),
        };
        let body = set.request(&messages);
        assert_eq!(body["max_tokens"], 16);
        assert_eq!(body["temperature"], 0.0);
        assert_eq!(
            set.opening(),
            vec![json!({"role": "system", "content": "Be brief."})]
        );
    }
}
