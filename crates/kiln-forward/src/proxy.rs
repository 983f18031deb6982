//! Proxying one request to a peer node, streaming both ways.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use futures::TryStreamExt;
use kiln_core::{ErrorKind, KilnError, KilnResult, Task};
use kiln_http::forward::{
    Affinity, ForwardFuture, Peer, PeerForwarder, FORWARDED_BY, SERVED_BY_NODE,
};

use crate::directory::NodeDirectory;

/// How long to wait for a peer to accept the connection before answering 503.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Headers about one hop's connection, never passed on (RFC 9110 §7.6.1), and the length: both
/// bodies are passed on as streams (and a forwarded OpenAI body is the parsed JSON again).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::HOST,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub struct Forwarder {
    directory: Arc<NodeDirectory>,
    client: reqwest::Client,
    /// Requests this node has in flight to each peer: added to the peer's announced load,
    /// which is up to a beat old.
    sent: Arc<Mutex<HashMap<String, u32>>>,
}

impl Forwarder {
    /// `idle_timeout`: the longest a peer may go silent mid-answer (the request timeout).
    pub fn new(directory: Arc<NodeDirectory>, idle_timeout: Duration) -> KilnResult<Forwarder> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(idle_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // Peers are reached directly; an HTTP(S)_PROXY in the environment is for egress.
            .no_proxy()
            .build()
            .map_err(|error| KilnError::internal(format!("forwarding client: {error}")))?;
        Ok(Forwarder {
            directory,
            client,
            sent: Arc::new(Mutex::new(HashMap::new())),
        })
    }
}

impl PeerForwarder for Forwarder {
    fn locate(
        &self,
        model: &str,
        task: Option<Task>,
        affinity: Affinity<'_>,
    ) -> KilnResult<Option<Peer>> {
        let sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        self.directory.locate(model, task, affinity, |peer| {
            sent.get(peer).copied().unwrap_or(0)
        })
    }

    fn forward(&self, peer: Peer, request: Request) -> ForwardFuture {
        let client = self.client.clone();
        let me = self.directory.name().to_owned();
        let sent = InFlight::start(self.sent.clone(), &peer.name);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
            let url = format!("{}{path}", peer.url.trim_end_matches('/'));
            let mut headers = without_hop_by_hop(parts.headers);
            headers.insert(
                FORWARDED_BY,
                HeaderValue::from_str(&me).map_err(|_| KilnError::internal("node name"))?,
            );
            let outgoing = reqwest::Body::wrap_stream(body.into_data_stream());
            let answer = client
                .request(parts.method, &url)
                .headers(headers)
                .body(outgoing)
                .send()
                .await
                .map_err(|error| unreachable(&peer, &error))?;
            let mut response = Response::builder().status(answer.status());
            if let Some(headers) = response.headers_mut() {
                *headers = without_hop_by_hop(answer.headers().clone());
                if let Ok(name) = HeaderValue::from_str(&peer.name) {
                    headers.insert(SERVED_BY_NODE, name);
                }
            }
            // The stream keeps the in-flight count until the answer has been passed on.
            let stream = answer.bytes_stream().map_ok(move |chunk| {
                let _ = &sent;
                chunk
            });
            response
                .body(Body::from_stream(stream))
                .map_err(|error| KilnError::internal(format!("forwarded response: {error}")))
        })
    }
}

fn without_hop_by_hop(mut headers: HeaderMap) -> HeaderMap {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers
}

fn unreachable(peer: &Peer, error: &reqwest::Error) -> KilnError {
    tracing::warn!(node = %peer.name, %error, "forwarding failed");
    KilnError::new(
        ErrorKind::NodeUnavailable,
        format!(
            "the node serving this model ({}) did not answer; retry shortly",
            peer.name
        ),
    )
    .with_retry_after(1)
}

/// One request in flight to a peer, counted while it lives.
struct InFlight {
    sent: Arc<Mutex<HashMap<String, u32>>>,
    peer: String,
}

impl InFlight {
    fn start(sent: Arc<Mutex<HashMap<String, u32>>>, peer: &str) -> InFlight {
        *sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(peer.to_owned())
            .or_insert(0) += 1;
        InFlight {
            sent,
            peer: peer.to_owned(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = sent.get_mut(&self.peer) {
            *count = count.saturating_sub(1);
        }
    }
}
