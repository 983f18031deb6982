//! Live transcription over a WebSocket (docs/speech.md, "Live transcription"): the upgrade
//! of `GET …/ai/run/@cf/deepgram/nova-3?encoding=…&sample_rate=…` and of the binding's
//! `GET /run?version=3&body=…`, then one session: audio frames in, Deepgram `Results` out.
//!
//! Three tasks share a session: the reader (frames → `Segmenter` → jobs), the listener (jobs →
//! the model's `MediaWorker` → messages; an interim is dropped when newer work waits, so the
//! final is never late behind it) and the writer (messages → frames).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use kiln_core::{ErrorKind, KilnError, KilnResult, Task};
use kiln_scheduler::{Admission, MediaWorker, Worker};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::encode::{self, WavFormat};
use super::live::{self, LiveOptions, Segmenter, Step};
use super::{deepgram, ws};
use crate::envelope::ApiError;
use crate::platform::{Caller, Meter};
use crate::SharedState;

/// Largest audio message (Deepgram's frames are a few KiB).
const MAX_FRAME_BYTES: usize = 256 * 1024;
/// A session with no audio or `KeepAlive` for this long is closed (Deepgram's NET-0001).
const IDLE: Duration = Duration::from_secs(10);
/// Live sessions open at once in this process; one more is refused with 429 / 3040.
const MAX_SESSIONS: usize = 16;

static SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// One of the `MAX_SESSIONS`, given back when the session ends.
struct SessionSlot;

impl SessionSlot {
    fn take() -> KilnResult<Self> {
        if SESSIONS.fetch_add(1, Ordering::SeqCst) >= MAX_SESSIONS {
            SESSIONS.fetch_sub(1, Ordering::SeqCst);
            return Err(KilnError::new(
                ErrorKind::OutOfCapacity,
                format!("{MAX_SESSIONS} live transcription sessions are open; try again later"),
            ));
        }
        Ok(SessionSlot)
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        SESSIONS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a live request names, once resolved.
pub struct LiveRequest {
    /// `nova-3` or `flux`.
    pub arch: String,
    pub served: String,
    pub worker: MediaWorker,
    pub options: LiveOptions,
    pub meter: Meter,
    /// Seconds of audio one session may send (`limits.audio.max_seconds`).
    pub max_seconds: f64,
}

/// Resolves `model` to its speech worker, or says why not (an envelope before the upgrade).
pub async fn resolve(
    state: &SharedState,
    model: &str,
    options: LiveOptions,
    meter: impl FnOnce(&'static kiln_catalog::CatalogEntry) -> KilnResult<Meter>,
) -> KilnResult<LiveRequest> {
    let entry = state
        .catalog
        .get(model)
        .filter(|entry| {
            entry.name.starts_with("@cf/deepgram/") && entry.task == Task::SpeechRecognition
        })
        .ok_or_else(|| {
            KilnError::bad_input(format!(
                "{model} has no live transcription: use @cf/deepgram/nova-3 or @cf/deepgram/flux"
            ))
        })?;
    let (name, _) = state
        .registry
        .resolve(&entry.name, Some(entry.task))
        .ok_or_else(|| KilnError::bad_input(format!("no installed model serves {model}")))?;
    let served = state.registry.acquire(&name).await?;
    let Worker::Media(worker) = served.worker else {
        return Err(KilnError::internal(format!("{name} is not a speech model")));
    };
    Ok(LiveRequest {
        arch: entry.name.trim_start_matches("@cf/deepgram/").to_owned(),
        served: served.name,
        worker,
        meter: meter(entry)?,
        options,
        max_seconds: state.config.limits.audio.max_seconds,
    })
}

/// `GET …/ai/run/{model}` with `Upgrade: websocket` and Deepgram's options in the query.
pub async fn rest_upgrade(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path((_account, model)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    request: Request<Body>,
) -> Response {
    let model = model.trim_start_matches('/');
    let answer = async {
        if !is_upgrade(request.headers()) {
            return Err(KilnError::bad_input(
                "GET on /ai/run opens a WebSocket (live transcription); run models with POST",
            ));
        }
        let options = live::live_options(None, query.as_deref())?;
        let admit = |entry: &'static kiln_catalog::CatalogEntry| {
            state
                .platform
                .admit(&caller, entry.task, model, Some(entry))
        };
        let live = resolve(&state, model, options, admit).await?;
        upgrade(request, live)
    };
    answer
        .await
        .unwrap_or_else(|error| ApiError::from(error).into_response())
}

/// The binding's `GET /run?version=3&body=<{inputs, options}>` with `Upgrade: websocket`
/// (`env.AI.run(model, inputs, {websocket: true})`); the model is in `cf-consn-model-id`.
pub async fn binding_upgrade(
    State(context): State<std::sync::Arc<crate::gateway::GatewayContext>>,
    RawQuery(query): RawQuery,
    request: Request<Body>,
) -> Response {
    let state = context.app.clone();
    let answer = async {
        let model = request
            .headers()
            .get("cf-consn-model-id")
            .and_then(|v| v.to_str().ok())
            .map(|id| {
                id.rsplit_once(':')
                    .map_or(id, |(_, model)| model)
                    .to_owned()
            })
            .ok_or_else(|| KilnError::bad_input("the cf-consn-model-id header names no model"))?;
        if !is_upgrade(request.headers()) {
            return Err(KilnError::bad_input("GET /run is a WebSocket upgrade"));
        }
        let body: Value = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(name, _)| name == "body")
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or_else(|| json!({}));
        let inputs = body.get("inputs").and_then(Value::as_object);
        let options = live::live_options(inputs, None)?;
        let caller = Caller {
            account: state.binding_account.clone(),
            rate_limited: true,
            scopes: None,
        };
        let admit = |entry: &'static kiln_catalog::CatalogEntry| {
            state
                .platform
                .admit(&caller, entry.task, &model, Some(entry))
        };
        let live = resolve(&state, &model, options, admit).await?;
        upgrade(request, live)
    };
    answer
        .await
        .unwrap_or_else(|error| ApiError::from(error).into_response())
}

/// Answers the upgrade with 101 and runs the session once the connection is handed over.
pub fn upgrade(mut request: Request<Body>, live: LiveRequest) -> KilnResult<Response> {
    let key = websocket_key(request.headers())?;
    let slot = SessionSlot::take()?;
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => run(hyper_util::rt::TokioIo::new(upgraded), live).await,
            Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = HeaderValue::from_str(&ws::accept_key(&key))
        .map_err(|_| KilnError::internal("accept key"))?;
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

/// Whether the request asks for a WebSocket.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn websocket_key(headers: &HeaderMap) -> KilnResult<String> {
    let version = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok());
    if version != Some("13") {
        return Err(KilnError::bad_input("Sec-WebSocket-Version must be 13"));
    }
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| KilnError::bad_input("Sec-WebSocket-Key is missing"))
}

/// Work for the listener, in order.
enum Job {
    Interim {
        audio: Vec<i16>,
        start: f32,
    },
    Final {
        audio: Vec<i16>,
        start: f32,
        speech_final: bool,
    },
    /// Send a message as it is.
    Send(Value),
    /// Send `Metadata` (with the seconds of audio received) and close.
    Close {
        code: u16,
        reason: &'static str,
        seconds: f32,
    },
}

/// What the writer sends.
enum Out {
    Text(String),
    Pong(Vec<u8>),
    Close(u16, &'static str),
}

async fn run<S>(io: S, live: LiveRequest)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (read, mut write) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
    let (job_tx, job_rx) = mpsc::unbounded_channel::<Job>();
    let writer = tokio::spawn(async move {
        while let Some(out) = out_rx.recv().await {
            let sent = match out {
                Out::Text(text) => ws::write_frame(&mut write, 0x1, text.as_bytes()).await,
                Out::Pong(data) => ws::write_frame(&mut write, 0xA, &data).await,
                Out::Close(code, reason) => {
                    let _ = ws::close(&mut write, code, reason).await;
                    break;
                }
            };
            if sent.is_err() {
                break;
            }
        }
    });
    let options = live.options.clone();
    let max_seconds = live.max_seconds;
    let listener = tokio::spawn(listen(live, job_rx, out_tx.clone()));
    read_audio(read, (&options, max_seconds), &job_tx, &out_tx).await;
    drop(job_tx);
    let _ = listener.await;
    let _ = writer.await;
}

/// Reads frames until the client closes, asks to, or goes quiet; turns audio into jobs.
async fn read_audio<R: tokio::io::AsyncRead + Unpin>(
    read: R,
    (options, max_seconds): (&LiveOptions, f64),
    jobs: &mpsc::UnboundedSender<Job>,
    out: &mpsc::UnboundedSender<Out>,
) {
    let audio = options.audio;
    let mut reader = ws::Reader::new(read, MAX_FRAME_BYTES);
    let mut segmenter = Segmenter::new(audio.sample_rate, options.endpointing_ms);
    let finish = |segmenter: &mut Segmenter| {
        if let Some((audio, start)) = segmenter.finish() {
            let _ = jobs.send(Job::Final {
                audio,
                start,
                speech_final: false,
            });
        }
    };
    // The rest of the speech, then `Metadata` and the close frame.
    let end = |segmenter: &mut Segmenter, code: u16, reason: &'static str| {
        finish(segmenter);
        let seconds = segmenter.elapsed();
        let _ = jobs.send(Job::Close {
            code,
            reason,
            seconds,
        });
    };
    loop {
        let message = match tokio::time::timeout(IDLE, reader.next()).await {
            Err(_) => {
                let reason = "NET-0001: no audio received for 10 seconds";
                return end(&mut segmenter, 1011, reason);
            }
            Ok(Err(error)) => {
                let too_big = error.to_string().contains("too big");
                let (code, reason) = if too_big {
                    (1009, "audio message over 256 KiB")
                } else {
                    (1002, "malformed websocket frame")
                };
                return end(&mut segmenter, code, reason);
            }
            Ok(Ok(message)) => message,
        };
        match message {
            ws::Message::Binary(bytes) => {
                let samples = mono_samples(&bytes, audio);
                for step in segmenter.push(&samples) {
                    if let Some(job) = job_for(step, &mut segmenter, options) {
                        let _ = jobs.send(job);
                    }
                }
                if f64::from(segmenter.elapsed()) > max_seconds {
                    let reason = "the session is over limits.audio.max_seconds";
                    return end(&mut segmenter, 1008, reason);
                }
            }
            ws::Message::Text(text) => {
                let kind = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned));
                match kind.as_deref() {
                    Some("Finalize") => finish(&mut segmenter),
                    Some("CloseStream") => return end(&mut segmenter, 1000, ""),
                    _ => {} // KeepAlive, and what Kiln does not know
                }
            }
            ws::Message::Ping(data) => {
                let _ = out.send(Out::Pong(data));
            }
            ws::Message::Pong => {}
            ws::Message::Close => return end(&mut segmenter, 1000, ""),
        }
    }
}

/// The listener's job for what the segmenter saw, if the options want one.
fn job_for(step: Step, segmenter: &mut Segmenter, options: &LiveOptions) -> Option<Job> {
    match step {
        Step::SpeechStarted(at) => options
            .vad_events
            .then(|| Job::Send(json!({"type": "SpeechStarted", "channel": [0], "timestamp": at}))),
        Step::Interim if options.interim_results => {
            let (audio, start) = segmenter.current()?;
            Some(Job::Interim {
                audio: audio.to_vec(),
                start,
            })
        }
        Step::Interim => None,
        Step::Final { speech_final } => {
            let (audio, start) = segmenter.take()?;
            Some(Job::Final {
                audio,
                start,
                speech_final,
            })
        }
    }
}

/// 16-bit mono samples of one audio message.
fn mono_samples(bytes: &[u8], audio: deepgram::RawAudio) -> Vec<i16> {
    let samples: Vec<i16> = match audio.format {
        WavFormat::Pcm16 => encode::pcm16(bytes),
        WavFormat::Mulaw => bytes.iter().map(|&b| encode::mulaw_to_linear(b)).collect(),
        WavFormat::Alaw => bytes.iter().map(|&b| encode::alaw_to_linear(b)).collect(),
    };
    let channels = usize::from(audio.channels.max(1));
    if channels == 1 {
        return samples;
    }
    samples
        .chunks(channels)
        .map(|frame| (frame.iter().map(|&s| i32::from(s)).sum::<i32>() / frame.len() as i32) as i16)
        .collect()
}

/// Transcribes jobs in order and sends their messages.
async fn listen(
    live: LiveRequest,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    out: mpsc::UnboundedSender<Out>,
) {
    let request_id = deepgram::uuid(rand::random());
    let rate = live.options.audio.sample_rate;
    let mut queue = VecDeque::new();
    loop {
        if queue.is_empty() {
            match jobs.recv().await {
                Some(job) => queue.push_back(job),
                None => break,
            }
        }
        while let Ok(job) = jobs.try_recv() {
            queue.push_back(job);
        }
        let Some(job) = queue.pop_front() else {
            continue;
        };
        let (audio, start, is_final, speech_final) = match job {
            // An interim with newer work behind it would only delay that work.
            Job::Interim { .. } if !queue.is_empty() => continue,
            Job::Interim { audio, start } => (audio, start, false, false),
            Job::Final {
                audio,
                start,
                speech_final,
            } => (audio, start, true, speech_final),
            Job::Send(message) => {
                let _ = out.send(Out::Text(message.to_string()));
                continue;
            }
            Job::Close {
                code,
                reason,
                seconds,
            } => {
                let (model_uuid, info) = deepgram::model_info(&live.arch, &live.served);
                let metadata = json!({
                    "type": "Metadata", "transaction_key": "deprecated", "request_id": request_id,
                    "created": kiln_core::time::utc_timestamp(), "duration": seconds,
                    "channels": 1, "models": [model_uuid.clone()],
                    "model_info": {model_uuid: info},
                });
                let _ = out.send(Out::Text(metadata.to_string()));
                let _ = out.send(Out::Close(code, reason));
                break;
            }
        };
        let duration = audio.len() as f32 / rate as f32;
        let bytes: Vec<u8> = audio.iter().flat_map(|s| s.to_le_bytes()).collect();
        let file = encode::wav(&bytes, WavFormat::Pcm16, rate, 1);
        let request = kiln_core::MediaRequest::Transcribe {
            audio: file,
            options: deepgram::transcribe_options(&live.options.nova),
        };
        // An interim gives way to a final or a close that arrives while it runs: dropping its
        // future tells the worker nobody waits for it.
        let work = live.worker.run(request, Admission::default());
        tokio::pin!(work);
        let outcome = loop {
            tokio::select! {
                result = &mut work => break Some(result),
                next = jobs.recv() => match next {
                    Some(job) => {
                        let urgent = matches!(job, Job::Final { .. } | Job::Close { .. });
                        queue.push_back(job);
                        if urgent && !is_final {
                            break None;
                        }
                    }
                    None => break Some((&mut work).await),
                },
            }
        };
        let Some(outcome) = outcome else {
            continue;
        };
        let transcription = match outcome {
            Ok(kiln_core::media::MediaOutput::Transcription(t)) => t,
            Ok(_) => continue,
            Err(error) => {
                let message = json!({"type": "Error", "description": error.message});
                let _ = out.send(Out::Text(message.to_string()));
                continue;
            }
        };
        if is_final {
            live.meter
                .charge_units("audio minute", f64::from(duration) / 60.0);
        }
        let message = live::results_message(
            &transcription,
            &live.options,
            start,
            duration,
            is_final,
            speech_final,
            &request_id,
            (&live.arch, &live.served),
        );
        if out.send(Out::Text(message.to_string())).is_err() {
            break;
        }
    }
}
