//! The HTTP side of the client commands: requests with the token, a clear hint when no server
//! answers, and the server's error envelope turned into its message and code.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use reqwest::header::CONTENT_TYPE;
use reqwest::{RequestBuilder, Response, Url};
use serde_json::Value;

use super::ClientArgs;

/// No server answered at the URL: says how to start one.
#[derive(Debug)]
pub struct Unreachable {
    base: String,
    cause: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no Kiln server answers at {} ({}).\n\
             Start one in another terminal with `kiln serve` (or `scripts/serve` in a checkout \
             of Kiln), or point --url (KILN_URL) at a running server.",
            self.base, self.cause
        )
    }
}

impl std::error::Error for Unreachable {}

/// The server refused or failed a request: its envelope's message and code.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerError {
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        match (&self.code, self.status) {
            (Some(code), Some(status)) => write!(f, " (code {code}, HTTP {status})"),
            (Some(code), None) => write!(f, " (code {code})"),
            (None, Some(status)) => write!(f, " (HTTP {status})"),
            (None, None) => Ok(()),
        }
    }
}

impl std::error::Error for ServerError {}

impl ServerError {
    /// The first error of a Workers AI envelope (`{"errors":[{code, message}]}`), of an OpenAI
    /// error body (`{"error":{message, code}}`) or of a Responses `error` event.
    pub fn from_body(body: &Value, status: Option<u16>) -> Option<ServerError> {
        let code_of = |value: &Value| match value {
            Value::Number(number) => Some(number.to_string()),
            Value::String(text) => Some(text.clone()),
            _ => None,
        };
        let error = body
            .get("errors")
            .and_then(|errors| errors.get(0))
            .or_else(|| body.get("error").filter(|error| error.is_object()))
            .or_else(|| (body.get("type") == Some(&Value::from("error"))).then_some(body))?;
        let message = error.get("message").and_then(Value::as_str)?;
        Some(ServerError {
            status,
            code: error.get("code").and_then(code_of),
            message: message.to_owned(),
        })
    }
}

/// One server: its base URL, and the token and account requests go out with.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    account: String,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let base = args.url.trim_end_matches('/').to_owned();
        let url = Url::parse(&base)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
            .with_context(|| {
                format!(
                    "--url must be an http:// or https:// URL such as {}, not {:?}",
                    super::DEFAULT_URL,
                    args.url
                )
            })?;
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        // A proxy from the environment has no business with a server on this machine.
        if is_loopback(&url) {
            builder = builder.no_proxy();
        }
        Ok(Client {
            http: builder.build()?,
            base,
            token: args.token.clone().filter(|token| !token.is_empty()),
            account: args.account.clone(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A POST to the model's Workers AI REST route.
    pub fn run_request(&self, model: &str) -> RequestBuilder {
        let url = format!(
            "{}/client/v4/accounts/{}/ai/run/{}",
            self.base, self.account, model
        );
        self.with_token(self.http.post(url))
    }

    /// A GET of one of the server's own paths (`/health`, `/kiln/models`).
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.with_token(self.http.get(format!("{}{path}", self.base)))
    }

    fn with_token(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request`: the response when it succeeded, else why not (no server, or the
    /// server's error).
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request.send().await.map_err(|error| self.failure(error))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        let error = ServerError::from_body(&body, Some(status)).unwrap_or_else(|| ServerError {
            status: Some(status),
            code: None,
            message: if text.trim().is_empty() {
                "the server answered with an error and no message".to_owned()
            } else {
                excerpt(text.trim(), 300)
            },
        });
        Err(error.into())
    }

    /// Sends `request` and returns the `result` of its Workers AI envelope (or the whole JSON
    /// body when it has no envelope).
    pub async fn result(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let response = self.send(request).await?;
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/json"));
        anyhow::ensure!(is_json, "the server did not answer with JSON");
        let mut body: Value = response.json().await.map_err(|error| self.failure(error))?;
        if let Some(result) = body.get_mut("result") {
            return Ok(result.take());
        }
        Ok(body)
    }

    /// Checks that a server answers at all (`GET /health`).
    pub async fn health(&self) -> anyhow::Result<()> {
        self.send(self.get("/health")).await.map(drop)
    }

    /// Turns a transport failure into [`Unreachable`] where nothing answered.
    pub fn failure(&self, error: reqwest::Error) -> anyhow::Error {
        if error.is_connect() {
            return Unreachable {
                base: self.base.clone(),
                cause: innermost(&error),
            }
            .into();
        }
        anyhow::Error::new(error).context(format!("talking to {}", self.base))
    }
}

/// The last error in `error`'s chain: "Connection refused (os error 111)" rather than
/// "error sending request".
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// `text` cut to at most `max` characters, marked with `…` where it was cut.
pub fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_are_read_from_every_envelope() {
        let workers_ai = json!({"result": null, "success": false,
            "errors": [{"code": 5007, "message": "No such model x or task"}], "messages": []});
        let error = ServerError::from_body(&workers_ai, Some(400)).expect("an error");
        assert_eq!(error.code.as_deref(), Some("5007"));
        assert_eq!(
            error.to_string(),
            "No such model x or task (code 5007, HTTP 400)"
        );
        let stream_event =
            json!({"response": "", "errors": [{"code": 3007, "message": "timed out"}]});
        assert_eq!(
            ServerError::from_body(&stream_event, None)
                .expect("an error")
                .to_string(),
            "timed out (code 3007)"
        );
        let openai =
            json!({"error": {"message": "bad", "type": "invalid_request_error", "code": null}});
        assert_eq!(
            ServerError::from_body(&openai, Some(400))
                .expect("an error")
                .to_string(),
            "bad (HTTP 400)"
        );
        let responses = json!({"type": "error", "code": "server_error", "message": "boom"});
        assert_eq!(
            ServerError::from_body(&responses, None)
                .expect("an error")
                .code
                .as_deref(),
            Some("server_error")
        );
        assert_eq!(
            ServerError::from_body(&json!({"response": "hi"}), None),
            None
        );
        assert_eq!(ServerError::from_body(&json!({"errors": []}), None), None);
    }

    #[test]
    fn urls_are_checked_and_loopback_is_recognised() {
        let args = |url: &str| ClientArgs {
            url: url.into(),
            token: None,
            account: "local".into(),
        };
        assert!(Client::new(&args("127.0.0.1:8787")).is_err());
        assert!(Client::new(&args("ftp://127.0.0.1")).is_err());
        let client = Client::new(&args("http://127.0.0.1:8787/")).expect("a valid URL");
        assert_eq!(client.base(), "http://127.0.0.1:8787");
        for (url, loopback) in [
            ("http://127.0.0.1:8787", true),
            ("http://localhost:8787", true),
            ("http://[::1]:8787", true),
            ("http://kiln.lan:8787", false),
            ("http://10.0.0.2", false),
        ] {
            let parsed = Url::parse(url).expect("URL");
            assert_eq!(is_loopback(&parsed), loopback, "{url}");
        }
    }

    #[test]
    fn excerpts_cut_on_characters() {
        assert_eq!(excerpt("héllo", 10), "héllo");
        assert_eq!(excerpt("héllo", 2), "hé…");
    }
}
