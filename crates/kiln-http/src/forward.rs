//! Sending a request for a model this node does not serve to a node that does (issue #21).
//!
//! The HTTP layer only decides *whether* to forward: the model resolves to nothing here, the
//! request has not been forwarded already, and a [`PeerForwarder`] is configured. Which node,
//! and the proxying itself, live in `kiln-forward` (the binary wires it in): the request goes
//! out as it came in, credentials included, and the peer authenticates, admits, meters and
//! answers it; its answer (a stream included) comes back unchanged.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use kiln_core::{KilnError, KilnResult, Task};

use crate::SharedState;

/// Set on a forwarded request: the node that forwarded it. A request carrying it is never
/// forwarded again, so two nodes can never bounce a request between them.
pub const FORWARDED_BY: &str = "x-kiln-forwarded-by";
/// Set on a forwarded answer: the node that served it.
pub const SERVED_BY_NODE: &str = "x-kiln-node";

/// A node that serves a model, as the cluster directory last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// Where its API listens, e.g. `http://10.0.0.7:8787`.
    pub url: String,
}

pub type ForwardFuture = Pin<Box<dyn Future<Output = KilnResult<Response>> + Send>>;

/// Which node a request would rather go to, for the KV cache a node already holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Affinity<'a> {
    #[default]
    None,
    /// `x-session-affinity`: the same node for as long as it lives (its cache holds the
    /// conversation so far).
    Session(&'a str),
    /// A digest of a long shared prefix (a system prompt): the same node while it is not much
    /// busier than the least busy one, so the prompt's cached prefix is reused without piling
    /// every request of a popular prompt onto one node.
    Prefix(&'a str),
}

/// Shared prefixes shorter than this are not worth steering for: prefilling them is cheap.
const MIN_PREFIX_BYTES: usize = 1024;

pub trait PeerForwarder: Send + Sync + 'static {
    /// The live node to send `model` (of catalog task `task`, when the catalog knows it) to,
    /// chosen by load and by `affinity`; `Ok(None)` when no node serves it; an error (503) when
    /// only nodes that stopped answering did.
    fn locate(
        &self,
        model: &str,
        task: Option<Task>,
        affinity: Affinity<'_>,
    ) -> KilnResult<Option<Peer>>;

    /// Sends `request` to `peer` and answers with the peer's response, streamed.
    fn forward(&self, peer: Peer, request: Request) -> ForwardFuture;
}

/// In a cluster, the node to send a request for `model` to: when nothing here serves the model,
/// the request was not forwarded to us already, and another node serves it. `prefix`: the
/// digest of the request's long shared prefix, if it has one ([`prefix_digest`]).
pub(crate) fn peer_serving(
    state: &SharedState,
    model: &str,
    headers: &HeaderMap,
    prefix: Option<&str>,
) -> KilnResult<Option<Peer>> {
    let Some(forwarder) = &state.forwarder else {
        return Ok(None);
    };
    if headers.contains_key(FORWARDED_BY) {
        return Ok(None);
    }
    let (served, task) = served_here(state, model);
    if served {
        return Ok(None);
    }
    let session = crate::body::session_affinity(headers);
    let affinity = match (&session, prefix) {
        (Some(session), _) => Affinity::Session(session),
        (None, Some(prefix)) => Affinity::Prefix(prefix),
        (None, None) => Affinity::None,
    };
    forwarder.locate(model, task, affinity)
}

/// A digest of what an OpenAI-style body's requests share with others: the leading system
/// (or developer) messages of a chat, or the start of a completion's prompt, when at least
/// [`MIN_PREFIX_BYTES`] long. Requests with the same digest are steered to the same node,
/// whose prefix cache then already holds it.
pub(crate) fn prefix_digest(body: &serde_json::Value) -> Option<String> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    let mut length = 0;
    if let Some(messages) = body.get("messages").and_then(serde_json::Value::as_array) {
        let leading = messages.iter().take_while(|message| {
            matches!(
                message.get("role").and_then(serde_json::Value::as_str),
                Some("system" | "developer")
            )
        });
        for message in leading {
            let content = message.get("content").map(|content| content.to_string())?;
            length += content.len();
            content.hash(&mut hasher);
        }
    } else if let Some(prompt) = body.get("prompt").and_then(serde_json::Value::as_str) {
        // Up to a character boundary near MIN_PREFIX_BYTES: prompts that share their start
        // share a digest.
        let end = (MIN_PREFIX_BYTES..=prompt.len().min(MIN_PREFIX_BYTES + 3))
            .find(|end| prompt.is_char_boundary(*end))?;
        length = end;
        prompt[..end].hash(&mut hasher);
    }
    (length >= MIN_PREFIX_BYTES).then(|| format!("{:016x}", hasher.finish()))
}

/// Whether this node should run a queued batch item for `model`: it serves the model, or no
/// live node does (the item then fails here, as on a single node, rather than wait). Items of
/// models only other nodes serve are left to them: a queued item runs as a trusted in-process
/// call, which carries no token to forward.
pub(crate) fn runnable_here(state: &SharedState, model: &str) -> bool {
    let Some(forwarder) = &state.forwarder else {
        return true;
    };
    let (served, task) = served_here(state, model);
    served || matches!(forwarder.locate(model, task, Affinity::None), Ok(None))
}

/// Whether a local model answers `model` (as the run route resolves it: catalog task, then the
/// registry), and the model's catalog task.
fn served_here(state: &SharedState, model: &str) -> (bool, Option<Task>) {
    let task = state.catalog.get(model).map(|entry| entry.task);
    (state.registry.resolve(model, task).is_some(), task)
}

/// Sends `request` to `peer` through the configured forwarder.
pub(crate) async fn send(
    state: &SharedState,
    peer: Peer,
    request: Request,
) -> KilnResult<Response> {
    let Some(forwarder) = &state.forwarder else {
        return Err(KilnError::internal("forwarding without a forwarder"));
    };
    forwarder.forward(peer, request).await
}

/// For a route whose JSON body names the model (the OpenAI-compatible ones): the answer of
/// the node that serves `model` when this one does not, else `None` (serve it here). The body
/// was read to find the model; it goes on as the same JSON.
pub(crate) async fn json_elsewhere(
    state: &SharedState,
    model: &str,
    uri: Uri,
    headers: &HeaderMap,
    body: &serde_json::Value,
) -> KilnResult<Option<Response>> {
    if state.forwarder.is_none() {
        return Ok(None);
    }
    let prefix = prefix_digest(body);
    let Some(peer) = peer_serving(state, model, headers, prefix.as_deref())? else {
        return Ok(None);
    };
    let bytes = serde_json::to_vec(body).map_err(|error| KilnError::internal(error.to_string()))?;
    let request = rebuild(Method::POST, uri, headers.clone(), Body::from(bytes));
    send(state, peer, request).await.map(Some)
}

/// The request as received, to be sent on unchanged.
pub(crate) fn rebuild(method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Request {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    request
}

static SERVING: AtomicUsize = AtomicUsize::new(0);

/// Run-route requests this process is serving itself right now (until their response starts):
/// the load a node announces to the others.
pub fn serving_now() -> usize {
    SERVING.load(Ordering::Relaxed)
}

/// Counts one request in [`serving_now`] while it lives.
pub(crate) struct Serving;

impl Serving {
    pub(crate) fn start() -> Serving {
        SERVING.fetch_add(1, Ordering::Relaxed);
        Serving
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        SERVING.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn long_shared_prefixes_have_a_digest_and_short_ones_none() {
        let system = "You answer questions about kilns. ".repeat(40);
        let chat = |question: &str| {
            json!({"messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ]})
        };
        let digest = prefix_digest(&chat("How hot?")).expect("a long system prompt");
        // The same system prompt, another question: the same node is preferred.
        assert_eq!(prefix_digest(&chat("How long?")), Some(digest.clone()));
        let other = json!({"messages": [{"role": "system", "content": format!("{system}!")}]});
        assert_ne!(prefix_digest(&other), Some(digest));
        // Short or absent system prompts are not steered.
        let short = json!({"messages": [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": system}]});
        assert_eq!(prefix_digest(&short), None);
        assert_eq!(
            prefix_digest(&json!({"messages": [{"role": "user", "content": system}]})),
            None
        );
        // Completions: prompts sharing their first kilobyte share a digest.
        let long_prompt = |tail: &str| json!({"prompt": format!("{system}{tail}")});
        assert_eq!(
            prefix_digest(&long_prompt("one")),
            prefix_digest(&long_prompt("two"))
        );
        assert!(prefix_digest(&long_prompt("")).is_some());
        assert_eq!(prefix_digest(&json!({"prompt": "short"})), None);
        // Multi-byte text: the cut lands on a character boundary.
        assert!(prefix_digest(&json!({"prompt": "é".repeat(800)})).is_some());
    }
}
