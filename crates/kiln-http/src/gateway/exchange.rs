//! One gateway request from the moment its gateway is known: cache lookup, rate limit, the
//! provider's answer relayed to the client, and the log, analytics and cache writes.
//!
//! Every way out ends in [`Exchange::commit`], which waits for the writer to commit the
//! request's log before the response's last byte leaves (see `kiln_gateway::writer`).
//!
//! The cache lookup reads SQLite, and hashing a body, reading a response's token counts and
//! copying bodies into a log grow with the bodies (up to 25 MB): the lookup always, and the
//! rest for bodies past [`INLINE_BYTES`], run on the blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::response::Parts;
use axum::http::{header, HeaderValue, Response, StatusCode};
use futures::{SinkExt, StreamExt};
use kiln_core::time::unix_millis;
use kiln_core::{ErrorKind, KilnError};
use kiln_gateway::cache::{self, MAX_ENTRY_BYTES};
use kiln_gateway::{
    CacheEntry, Gateway, KeyParts, LogCap, LogRecord, LogStrategy, RateLimit, RequestOptions,
    RequestWrite,
};

use super::route::ProviderCall;
use super::usage::{cost_of, usage};
use super::{gateway_error, GatewayContext};
use crate::offload::{off_runtime, off_runtime_if, INLINE_BYTES};

/// Bodies of a log are kept when request and response together fit (spec §4.6: 10 MB).
const MAX_LOGGED_BODIES: usize = 10 * 1024 * 1024;

/// How long a response waits for its log to commit before it goes out anyway.
const COMMIT_WAIT: Duration = Duration::from_secs(5);

pub const CACHE_STATUS: &str = "cf-aig-cache-status";

/// A response about to be cached: its key and lifetime.
#[derive(Clone, Copy)]
pub struct CachePlan {
    pub key: [u8; 32],
    pub ttl_secs: u64,
}

#[derive(Clone)]
pub struct Exchange {
    pub context: Arc<GatewayContext>,
    pub account: String,
    pub gateway: Arc<Gateway>,
    pub log_id: String,
    pub started: Instant,
    pub created_at_ms: i64,
    /// `workers-ai`, `compat`, `provider` or `universal`.
    pub request_type: &'static str,
    pub request_content_type: Option<String>,
    pub user_agent: Option<String>,
    pub authenticated: bool,
}

impl Exchange {
    /// A Worker binding's request reaches Kiln's routes as its account, without a token.
    pub fn trusted_call(&self) -> Option<crate::platform::TrustedCall> {
        (self.request_type == "binding").then(|| crate::platform::TrustedCall {
            account: self.account.clone(),
            rate_limited: true,
        })
    }

    /// The cache key of `call`, when the request is cacheable under `options`.
    pub async fn cache_plan(
        &self,
        call: &ProviderCall,
        options: &RequestOptions,
    ) -> Option<CachePlan> {
        let ttl_secs = options.cache_ttl_secs(&self.gateway.config)?;
        if call.body.len() > MAX_ENTRY_BYTES {
            return None;
        }
        let input = KeyInput {
            account: self.account.clone(),
            gateway: self.gateway.id.clone(),
            method: call.method.as_str().to_owned(),
            path: format!("{}/{}", call.provider, call.path),
            body: call.body.clone(),
            caller: caller_credentials(&call.headers, options),
            custom_key: options.cache_key.clone(),
        };
        let large = call.body.len() > INLINE_BYTES;
        match off_runtime_if(large, "cache key", move || Ok(input.key())).await {
            Ok(key) => Some(CachePlan { key, ttl_secs }),
            Err(error) => {
                tracing::warn!("gateway cache key failed, not caching: {error}");
                None
            }
        }
    }

    /// A cached answer for `plan`, logged as a cache hit.
    pub async fn replay_cached(
        &self,
        call: &ProviderCall,
        options: &RequestOptions,
        plan: CachePlan,
        step: Option<u32>,
    ) -> Option<Response<Body>> {
        let gateways = self.context.app.gateways.clone();
        let (key, now) = (plan.key, unix_millis());
        let lookup = off_runtime("gateway cache lookup", move || {
            Ok(gateways.cached(&key, now)?.map(Hit::from))
        });
        let hit = match lookup.await {
            Ok(hit) => hit?,
            Err(error) => {
                tracing::warn!("gateway cache lookup failed, answering from the provider: {error}");
                return None;
            }
        };
        let status = StatusCode::from_u16(hit.status).unwrap_or(StatusCode::OK);
        let outcome = Outcome {
            status,
            content_type: hit.content_type.clone(),
            size: hit.body.len(),
            body: hit.body,
            complete: true,
            streamed: hit.streamed,
            cached: true,
        };
        if !self.commit(call, options, outcome, None, step).await {
            return Some(gateway_error(&self.log_lost()));
        }
        metrics::counter!("kiln_gateway_requests_total", "cache" => "hit").increment(1);
        let mut response = Response::new(hit.replay);
        *response.status_mut() = status;
        if let Some(value) = hit
            .content_type
            .and_then(|ct| HeaderValue::from_str(&ct).ok())
        {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
            .headers_mut()
            .insert(CACHE_STATUS, HeaderValue::from_static("HIT"));
        Some(response)
    }

    /// Counts the request against the gateway's rate limit; a refusal is logged and answered.
    pub async fn admit(
        &self,
        call: &ProviderCall,
        options: &RequestOptions,
    ) -> Result<(), Response<Body>> {
        let config = &self.gateway.config;
        let Some((limit, interval_secs)) = config.rate_limit() else {
            return Ok(());
        };
        let limit = RateLimit {
            limit,
            interval_secs,
            technique: config.rate_limiting_technique,
        };
        let now = unix_millis();
        let Err(wait_secs) =
            self.context
                .app
                .gateways
                .admit(&self.account, &self.gateway.id, limit, now)
        else {
            return Ok(());
        };
        let error = KilnError::new(
            ErrorKind::GatewayRateLimited,
            format!(
                "Rate limited: the gateway allows {} requests per {interval_secs} s; retry in \
                 {wait_secs} s",
                limit.limit
            ),
        );
        let mut response = self.fail(call, options, error, None).await;
        if let Ok(value) = HeaderValue::from_str(&wait_secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        Err(response)
    }

    /// The gateway could not get an answer: logged, and answered in the gateway's error shape.
    pub async fn fail(
        &self,
        call: &ProviderCall,
        options: &RequestOptions,
        error: KilnError,
        step: Option<u32>,
    ) -> Response<Body> {
        let response = gateway_error(&error);
        let outcome = Outcome {
            status: response.status(),
            content_type: Some("application/json".into()),
            body: Bytes::copy_from_slice(error.message.as_bytes()),
            size: error.message.len(),
            complete: true,
            streamed: false,
            cached: false,
        };
        self.commit(call, options, outcome, None, step).await;
        response
    }

    /// Relays the provider's answer. A plain body is read whole (up to the cache limit), logged
    /// and cached, then sent; an event stream is passed on chunk by chunk as it arrives and
    /// logged when it ends, before the stream's end reaches the client.
    pub async fn relay(
        self,
        call: ProviderCall,
        options: RequestOptions,
        upstream: Response<Body>,
        cache: Option<CachePlan>,
        step: Option<u32>,
    ) -> Response<Body> {
        metrics::counter!("kiln_gateway_requests_total", "cache" => "miss").increment(1);
        let (mut parts, body) = upstream.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        parts
            .headers
            .insert(CACHE_STATUS, HeaderValue::from_static("MISS"));
        let streamed = is_event_stream(&parts);
        let mut chunks = body.into_data_stream();
        let mut head: Vec<Bytes> = Vec::new();
        let mut head_size = 0;
        if !streamed {
            loop {
                match chunks.next().await {
                    Some(Ok(chunk)) => {
                        head_size += chunk.len();
                        head.push(chunk);
                        if head_size > MAX_ENTRY_BYTES {
                            break;
                        }
                    }
                    Some(Err(error)) => {
                        let error = KilnError::new(
                            ErrorKind::UpstreamFailed,
                            format!("{} broke off its answer: {error}", call.provider),
                        );
                        return self.fail(&call, &options, error, step).await;
                    }
                    None => {
                        let body: Bytes = head.concat().into();
                        let outcome = Outcome::complete(&parts, body.clone(), false);
                        if !self.commit(&call, &options, outcome, cache, step).await {
                            return gateway_error(&self.log_lost());
                        }
                        return Response::from_parts(parts, Body::from(body));
                    }
                }
            }
        }
        // An event stream, or a body too large to hold: pass it on as it comes.
        let (mut sender, receiver) =
            futures::channel::mpsc::channel::<Result<Bytes, axum::Error>>(16);
        let status_parts = (parts.status, content_type(&parts));
        tokio::spawn(async move {
            let mut captured: Vec<u8> = Vec::new();
            let mut size = 0;
            let mut complete = true;
            let pending = futures::stream::iter(head.into_iter().map(Ok)).chain(chunks);
            futures::pin_mut!(pending);
            while let Some(chunk) = pending.next().await {
                let Ok(chunk) = chunk else {
                    complete = false;
                    break;
                };
                size += chunk.len();
                if captured.len() + chunk.len() <= MAX_ENTRY_BYTES {
                    captured.extend_from_slice(&chunk);
                } else {
                    complete = false;
                }
                if sender.send(Ok(chunk)).await.is_err() {
                    // The client went away; what it was sent is logged.
                    complete = false;
                    break;
                }
            }
            let outcome = Outcome {
                status: status_parts.0,
                content_type: status_parts.1,
                body: Bytes::from(captured),
                size,
                complete,
                streamed,
                cached: false,
            };
            if !self.commit(&call, &options, outcome, cache, step).await {
                // The stream breaks off instead of ending: the client sees no success.
                let lost = std::io::Error::other(self.log_lost().message);
                let _ = sender.send(Err(axum::Error::new(lost))).await;
            }
            drop(sender);
        });
        Response::from_parts(parts, Body::from_stream(receiver))
    }

    /// Builds the request's log record (and cache entry) and waits until they are committed.
    /// `false` when the journal refused a write that carries a log (a full disk): the response
    /// must then not go out as a success.
    async fn commit(
        &self,
        call: &ProviderCall,
        options: &RequestOptions,
        outcome: Outcome,
        cache: Option<CachePlan>,
        step: Option<u32>,
    ) -> bool {
        // Reading the token counts parses the body; the log and cache entry copy it.
        let write = if call.body.len() + outcome.body.len() > INLINE_BYTES {
            let (exchange, call, options) = (self.clone(), call.clone(), options.clone());
            off_runtime("gateway log", move || {
                Ok(exchange.write(&call, &options, &outcome, cache, step))
            })
            .await
        } else {
            Ok(self.write(call, options, &outcome, cache, step))
        };
        let write = match write {
            Ok(write) => write,
            Err(error) => {
                tracing::warn!(log_id = %self.log_id, "gateway log not written: {error}");
                return true;
            }
        };
        let logged = write.log.is_some();
        let Some(committed) = self.context.app.gateways.submit(write) else {
            return true;
        };
        match tokio::time::timeout(COMMIT_WAIT, committed).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => {
                tracing::warn!(log_id = %self.log_id, "gateway log refused by the journal");
                !logged
            }
            Err(_) => {
                tracing::warn!(log_id = %self.log_id, "gateway log not committed in time");
                true
            }
        }
    }

    /// The answer of a request whose log the journal refused.
    fn log_lost(&self) -> KilnError {
        KilnError::internal(format!(
            "the gateway could not store log {} (the server's disk refused it)",
            self.log_id
        ))
    }

    /// The request's log record and cache entry.
    fn write(
        &self,
        call: &ProviderCall,
        options: &RequestOptions,
        outcome: &Outcome,
        cache: Option<CachePlan>,
        step: Option<u32>,
    ) -> RequestWrite {
        let record = self.record(call, options, outcome, step);
        let config = &self.gateway.config;
        let log = options
            .collects_log(config)
            .then_some(match config.log_management {
                None => LogCap::Unlimited,
                Some(cap) => match config.log_management_strategy {
                    LogStrategy::StopInserting => LogCap::StopInserting(cap),
                    LogStrategy::DeleteOldest => LogCap::DeleteOldest(cap),
                },
            });
        let cache = cache
            .filter(|_| outcome.complete && outcome.status.is_success() && !outcome.cached)
            .map(|plan| CacheEntry {
                key: plan.key,
                account: self.account.clone(),
                gateway: self.gateway.id.clone(),
                status: outcome.status.as_u16(),
                content_type: outcome.content_type.clone(),
                streamed: outcome.streamed,
                body: outcome.body.to_vec(),
                created_at_ms: self.created_at_ms,
                expires_at_ms: self.created_at_ms + plan.ttl_secs as i64 * 1000,
            });
        RequestWrite { record, log, cache }
    }

    fn record(
        &self,
        call: &ProviderCall,
        options: &RequestOptions,
        outcome: &Outcome,
        step: Option<u32>,
    ) -> LogRecord {
        let tokens = outcome
            .complete
            .then(|| usage(&outcome.body, outcome.streamed))
            .flatten();
        let (tokens_in, tokens_out) = tokens.unwrap_or_default();
        let (cost, custom_cost) = match (tokens, options.custom_cost) {
            _ if outcome.cached => (Some(0.0), false),
            (Some(_), Some(custom)) => (Some(custom.cost(tokens_in, tokens_out)), true),
            (Some(_), None) => (
                cost_of(self.context.app.catalog, &call.model, tokens_in, tokens_out),
                false,
            ),
            (None, _) => (None, false),
        };
        let keep_bodies =
            outcome.complete && call.body.len() + outcome.body.len() <= MAX_LOGGED_BODIES;
        let model_type = self
            .context
            .app
            .catalog
            .get(&call.model)
            .map(|entry| entry.task.name().to_owned());
        LogRecord {
            id: self.log_id.clone(),
            account: self.account.clone(),
            gateway: self.gateway.id.clone(),
            created_at_ms: self.created_at_ms,
            provider: call.provider.clone(),
            model: call.model.clone(),
            model_type,
            path: call.path.clone(),
            request_type: self.request_type.to_owned(),
            duration_ms: self.started.elapsed().as_millis() as u64,
            status_code: outcome.status.as_u16(),
            success: outcome.status.is_success(),
            cached: outcome.cached,
            tokens_in,
            tokens_out,
            cost,
            custom_cost,
            metadata: options.metadata.clone(),
            step,
            event_id: options.event_id.clone(),
            request_content_type: self.request_content_type.clone(),
            response_content_type: outcome.content_type.clone(),
            user_agent: self.user_agent.clone(),
            authentication: self.authenticated,
            request_body: if keep_bodies {
                call.body.to_vec()
            } else {
                Vec::new()
            },
            response_body: if keep_bodies {
                outcome.body.to_vec()
            } else {
                Vec::new()
            },
            request_size: call.body.len() as u64,
            response_size: outcome.size as u64,
        }
    }
}

/// How a request ended, for its log and cache entry.
struct Outcome {
    status: StatusCode,
    content_type: Option<String>,
    /// The body, or as much of it as was kept.
    body: Bytes,
    /// Bytes sent to the client.
    size: usize,
    /// `body` is all of it and arrived intact.
    complete: bool,
    streamed: bool,
    cached: bool,
}

impl Outcome {
    fn complete(parts: &Parts, body: Bytes, streamed: bool) -> Self {
        Self {
            status: parts.status,
            content_type: content_type(parts),
            size: body.len(),
            body,
            complete: true,
            streamed,
            cached: false,
        }
    }
}

fn content_type(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

fn is_event_stream(parts: &Parts) -> bool {
    content_type(parts).is_some_and(|ct| ct.starts_with("text/event-stream"))
}

/// What a cache key is made of, owned so that a large body can be hashed on the blocking pool.
struct KeyInput {
    account: String,
    gateway: String,
    method: String,
    path: String,
    body: Bytes,
    caller: Vec<u8>,
    custom_key: Option<String>,
}

/// Every credential the caller sent (the provider's, Kiln's, the gateway's), length-prefixed.
fn caller_credentials(headers: &axum::http::HeaderMap, options: &RequestOptions) -> Vec<u8> {
    let mut caller = Vec::new();
    let sent = [
        headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
        headers.get("x-auth-key").map(|v| v.as_bytes()),
        options.authorization.as_deref().map(str::as_bytes),
    ];
    for credential in sent {
        let credential = credential.unwrap_or_default();
        caller.extend_from_slice(&(credential.len() as u64).to_le_bytes());
        caller.extend_from_slice(credential);
    }
    caller
}

impl KeyInput {
    fn key(&self) -> [u8; 32] {
        // The format is in the body for every API the gateway fronts, so `accept` and the
        // other headers do not count; credentials always do (`caller`).
        cache::key(&KeyParts {
            account: &self.account,
            gateway: &self.gateway,
            method: &self.method,
            path: &self.path,
            body: &self.body,
            custom_key: self.custom_key.as_deref(),
            caller: &self.caller,
        })
    }
}

/// A cache entry found, with the body it replays.
struct Hit {
    status: u16,
    content_type: Option<String>,
    streamed: bool,
    body: Bytes,
    replay: Body,
}

impl From<CacheEntry> for Hit {
    fn from(entry: CacheEntry) -> Self {
        let body = Bytes::from(entry.body);
        Hit {
            status: entry.status,
            content_type: entry.content_type,
            streamed: entry.streamed,
            replay: replay_body(body.clone(), entry.streamed),
            body,
        }
    }
}

/// A cached body; an event stream is replayed event by event, as it first arrived.
fn replay_body(body: Bytes, streamed: bool) -> Body {
    if !streamed {
        return Body::from(body);
    }
    let mut events = Vec::new();
    let mut start = 0;
    while let Some(end) = body[start..]
        .windows(2)
        .position(|pair| pair == b"\n\n")
        .map(|at| start + at + 2)
    {
        events.push(Ok::<_, std::io::Error>(body.slice(start..end)));
        start = end;
    }
    if start < body.len() {
        events.push(Ok(body.slice(start..)));
    }
    Body::from_stream(futures::stream::iter(events))
}
