//! The HTTP-level generator: property-based requests (proptest strategies, a fixed seed) to
//! every route of the real server process: valid bodies mutated field by field, random JSON,
//! garbage bytes, wrong content types, deep nesting, oversized bodies and hostile headers.
//! Every answer must be well formed (an error in one of Kiln's three error shapes, or a
//! success), no answer may be a 500, and the server must never restart.
//!
//! `KILN_HTTP_FUZZ_REQUESTS` sets how many requests (CI runs a short bounded number; the
//! campaign in docs/robustness.md ran 100,000+), `KILN_HTTP_FUZZ_SEED` the seed,
//! `KILN_HTTP_FUZZ_CONCURRENCY` how many are in flight (default 2).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Map, Value};

use crate::common::{client, ACCOUNT};
use crate::*;

/// One generated request.
#[derive(Debug, Clone)]
struct Attack {
    /// The route it targets, for the per-route counts.
    route: &'static str,
    method: reqwest::Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// What kind of body a route takes.
#[derive(Debug, Clone, Copy)]
enum Body {
    None,
    /// JSON shaped like this template, which the generator mutates.
    Json(fn() -> Value),
    /// Newline-delimited JSON vectors.
    Ndjson,
    /// multipart/form-data.
    Multipart,
    /// Raw bytes (audio, images).
    Binary,
}

struct Route {
    name: &'static str,
    method: reqwest::Method,
    /// `{a}` is an account path (`/client/v4/accounts/<id>` or `/accounts/<id>`), `{acct}` the
    /// bare account id, `{m}` a model id, `{g}` a gateway id, `{i}` an index name, `{x}` any id.
    path: &'static str,
    body: Body,
}

fn route(name: &'static str, method: &str, path: &'static str, body: Body) -> Route {
    Route {
        name,
        method: reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
        path,
        body,
    }
}

fn generation() -> Value {
    json!({"prompt": "Say hi", "max_tokens": 2, "temperature": 0.5,
           "messages": [{"role": "user", "content": "hi"}], "stream": false,
           "response_format": {"type": "json_object"}, "seed": 7, "stop": ["x"]})
}

fn embedding() -> Value {
    json!({"text": ["one", "two"], "pooling": "mean"})
}

fn media() -> Value {
    json!({"audio": [82, 73, 70, 70], "image": [137, 80, 78, 71], "text": "Hi",
           "prompt": "Hi", "lang": "en", "encoding": "linear16", "container": "wav"})
}

fn openai_chat() -> Value {
    json!({"model": "@cf/meta/llama-3.1-8b-instruct", "max_tokens": 2,
           "messages": [{"role": "user", "content": "hi"}], "n": 1,
           "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]})
}

fn openai_embedding() -> Value {
    json!({"model": "@cf/baai/bge-base-en-v1.5", "input": ["hi", [1, 2, 3]], "encoding_format": "float"})
}

fn gateway() -> Value {
    json!({"id": "g1", "cache_ttl": 60, "collect_logs": true, "rate_limiting_limit": 10,
           "rate_limiting_interval": 60, "rate_limiting_technique": "fixed", "authentication": false})
}

fn provider() -> Value {
    json!({"name": "p", "slug": "p1", "base_url": SAFE_UPSTREAM, "enable": true})
}

fn index() -> Value {
    json!({"name": "i1", "config": {"dimensions": 3, "metric": "cosine"}, "description": "d"})
}

fn query() -> Value {
    json!({"vector": [0.1, 0.2, 0.3], "topK": 3, "returnValues": true, "returnMetadata": "all",
           "filter": {"a": {"$eq": 1}}, "namespace": "n"})
}

fn ids() -> Value {
    json!({"ids": ["a", "b"]})
}

fn metadata_index() -> Value {
    json!({"propertyName": "a", "indexType": "string"})
}

fn finetune() -> Value {
    json!({"model": "@cf/meta/llama-3.1-8b-instruct", "name": "ft", "description": "d"})
}

fn binding_run() -> Value {
    json!({"model": "@cf/baai/bge-base-en-v1.5", "inputs": {"text": ["hi"]}, "options": {}})
}

fn log_patch() -> Value {
    json!({"feedback": 1, "score": 50, "metadata": {"k": "v"}})
}

fn universal() -> Value {
    json!([{"provider": "workers-ai", "endpoint": "@cf/baai/bge-base-en-v1.5",
            "headers": {}, "query": {"text": ["hi"]}}])
}

/// The server's default `max_body_bytes`.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Stands for the 413 a client could not read because the server closed the connection first.
const OVERSIZED_REFUSAL: &[u8] =
    br#"{"result":null,"success":false,"errors":[{"code":3006,"message":"closed early"}],"messages":[]}"#;

/// A custom provider may only ever point at a closed loopback port: no generated request may
/// make Kiln connect anywhere else (the network rule).
const SAFE_UPSTREAM: &str = "http://127.0.0.1:9";

fn routes() -> Vec<Route> {
    use Body::*;
    vec![
        route("run", "POST", "{a}/ai/run/{m}", Json(generation)),
        route(
            "run embeddings",
            "POST",
            "{a}/ai/run/@cf/baai/bge-base-en-v1.5",
            Json(embedding),
        ),
        route("run media", "POST", "{a}/ai/run/{m}", Json(media)),
        route("run binary", "POST", "{a}/ai/run/{m}", Binary),
        route(
            "run queued",
            "POST",
            "{a}/ai/run/{m}?queueRequest=true",
            Json(generation),
        ),
        route("usage", "GET", "{a}/ai/usage?day={x}", None),
        route(
            "models search",
            "GET",
            "{a}/ai/models/search?search={x}&per_page={x}&page={x}",
            None,
        ),
        route(
            "model schema",
            "GET",
            "{a}/ai/models/schema?model={m}",
            None,
        ),
        route("tasks search", "GET", "{a}/ai/tasks/search", None),
        route("authors search", "GET", "{a}/ai/authors/search", None),
        route("finetunes", "GET", "{a}/ai/finetunes", None),
        route(
            "finetune create",
            "POST",
            "{a}/ai/finetunes",
            Json(finetune),
        ),
        route(
            "finetune assets",
            "POST",
            "{a}/ai/finetunes/{x}/finetune-assets",
            Multipart,
        ),
        route("gateways", "GET", "{a}/ai-gateway/gateways?page={x}", None),
        route(
            "gateway create",
            "POST",
            "{a}/ai-gateway/gateways",
            Json(gateway),
        ),
        route("gateway get", "GET", "{a}/ai-gateway/gateways/{g}", None),
        route(
            "gateway update",
            "PUT",
            "{a}/ai-gateway/gateways/{g}",
            Json(gateway),
        ),
        route(
            "gateway delete",
            "DELETE",
            "{a}/ai-gateway/gateways/{x}",
            None,
        ),
        route(
            "logs",
            "GET",
            "{a}/ai-gateway/gateways/{g}/logs?search={x}&filters={x}&page={x}",
            None,
        ),
        route(
            "logs delete",
            "DELETE",
            "{a}/ai-gateway/gateways/{g}/logs?filters={x}",
            None,
        ),
        route(
            "log get",
            "GET",
            "{a}/ai-gateway/gateways/{g}/logs/{x}",
            None,
        ),
        route(
            "log patch",
            "PATCH",
            "{a}/ai-gateway/gateways/{g}/logs/{x}",
            Json(log_patch),
        ),
        route(
            "log body",
            "GET",
            "{a}/ai-gateway/gateways/{g}/logs/{x}/{x}",
            None,
        ),
        route(
            "analytics",
            "GET",
            "{a}/ai-gateway/gateways/{g}/analytics?start={x}",
            None,
        ),
        route("providers", "GET", "{a}/ai-gateway/custom-providers", None),
        route(
            "provider create",
            "POST",
            "{a}/ai-gateway/custom-providers",
            Json(provider),
        ),
        route(
            "provider get",
            "GET",
            "{a}/ai-gateway/custom-providers/{x}",
            None,
        ),
        route(
            "provider update",
            "PATCH",
            "{a}/ai-gateway/custom-providers/{x}",
            Json(provider),
        ),
        route(
            "provider delete",
            "DELETE",
            "{a}/ai-gateway/custom-providers/{x}",
            None,
        ),
        route(
            "openai chat",
            "POST",
            "{a}/ai/v1/chat/completions",
            Json(openai_chat),
        ),
        route(
            "openai chat root",
            "POST",
            "/v1/chat/completions",
            Json(openai_chat),
        ),
        route(
            "openai completions",
            "POST",
            "/v1/completions",
            Json(openai_chat),
        ),
        route(
            "openai embeddings",
            "POST",
            "/v1/embeddings",
            Json(openai_embedding),
        ),
        route("openai speech", "POST", "/v1/audio/speech", Json(media)),
        route(
            "openai transcriptions",
            "POST",
            "/v1/audio/transcriptions",
            Multipart,
        ),
        route("openai models", "GET", "/v1/models/{m}", None),
        route("indexes", "GET", "{a}/vectorize/v2/indexes", None),
        route(
            "index create",
            "POST",
            "{a}/vectorize/v2/indexes",
            Json(index),
        ),
        route("index get", "GET", "{a}/vectorize/v2/indexes/{i}", None),
        route(
            "index delete",
            "DELETE",
            "{a}/vectorize/v2/indexes/{x}",
            None,
        ),
        route(
            "index info",
            "GET",
            "{a}/vectorize/v2/indexes/{i}/info",
            None,
        ),
        route(
            "insert",
            "POST",
            "{a}/vectorize/v2/indexes/{i}/insert",
            Ndjson,
        ),
        route(
            "upsert",
            "POST",
            "{a}/vectorize/v2/indexes/{i}/upsert",
            Ndjson,
        ),
        route(
            "query",
            "POST",
            "{a}/vectorize/v2/indexes/{i}/query",
            Json(query),
        ),
        route(
            "get by ids",
            "POST",
            "{a}/vectorize/v2/indexes/{i}/get_by_ids",
            Json(ids),
        ),
        route(
            "delete by ids",
            "POST",
            "{a}/vectorize/v2/indexes/{i}/delete_by_ids",
            Json(ids),
        ),
        route(
            "list vectors",
            "GET",
            "{a}/vectorize/v2/indexes/{i}/list?count={x}&cursor={x}",
            None,
        ),
        route(
            "metadata index create",
            "POST",
            "{a}/vectorize/v2/indexes/{i}/metadata_index/create",
            Json(metadata_index),
        ),
        route(
            "metadata index delete",
            "POST",
            "{a}/vectorize/v2/indexes/{i}/metadata_index/delete",
            Json(metadata_index),
        ),
        route(
            "vectorize binding",
            "POST",
            "/vectorize-binding/{acct}/{i}/{x}",
            Json(query),
        ),
        route("binding run", "POST", "/run?version=3", Json(binding_run)),
        route(
            "binding gateway run",
            "POST",
            "/ai-gateway/run?version=3",
            Json(binding_run),
        ),
        route(
            "binding models",
            "GET",
            "/ai-api/models/search?search={x}",
            None,
        ),
        route(
            "binding url",
            "GET",
            "/ai-gateway/gateways/{g}/url/{x}",
            None,
        ),
        route(
            "binding universal",
            "POST",
            "/ai-gateway/universal/run/{g}",
            Json(universal),
        ),
        route(
            "gateway proxy",
            "POST",
            "/v1/{acct}/{g}/workers-ai/{m}",
            Json(generation),
        ),
        route(
            "gateway openai",
            "POST",
            "/v1/{acct}/{g}/workers-ai/v1/chat/completions",
            Json(openai_chat),
        ),
        route(
            "gateway universal",
            "POST",
            "/v1/{acct}/{g}",
            Json(universal),
        ),
        route("health", "GET", "/health", None),
        route("metrics", "GET", "/metrics", None),
        route("kiln models", "GET", "/kiln/models", None),
        route("unknown", "POST", "/{x}/{x}", Json(generation)),
    ]
}

/// Field names real routes read, so random objects often reach real validation paths.
const KEYS: &[&str] = &[
    "prompt",
    "messages",
    "role",
    "content",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stream",
    "raw",
    "stop",
    "lora",
    "response_format",
    "json_schema",
    "guided_json",
    "tools",
    "tool_choice",
    "text",
    "pooling",
    "audio",
    "image",
    "lang",
    "encoding",
    "container",
    "sample_rate",
    "input",
    "model",
    "n",
    "id",
    "name",
    "config",
    "dimensions",
    "metric",
    "vector",
    "topK",
    "filter",
    "ids",
    "namespace",
    "values",
    "metadata",
    "$eq",
    "$in",
    "type",
    "properties",
    "$ref",
    "anyOf",
    "not",
    "items",
    "requests",
    "options",
    "inputs",
    "gateway",
    "cache_ttl",
    "rate_limiting_limit",
    "base_url",
    "feedback",
    "provider",
    "endpoint",
    "query",
];

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-z_$]{1,12}",
        1 => any::<String>(),
    ]
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -~]{0,24}",
        2 => any::<String>(),
        1 => Just(String::new()),
        1 => proptest::sample::select(vec![
            "@cf/meta/llama-3.1-8b-instruct", "@cf/baai/bge-base-en-v1.5", "#", "#/$defs/a",
            "../../etc/passwd", "http://127.0.0.1:9/", "%00", "\u{0}", "NaN", "1e999", "-1",
            "😀", "\u{202e}", "all", "indexed", "none", "json_schema", "json_object",
        ]).prop_map(str::to_owned),
        1 => (1usize..=20_000).prop_map(|n| "a".repeat(n)),
    ]
}

fn arb_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3i64..300).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(4294967295u64)),
        Just(json!(1e300)),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arb_number(),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((arb_key(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A template with some fields replaced, removed or added.
fn mutated(template: Value) -> impl Strategy<Value = Value> {
    let keys: Vec<String> = template
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let edit = (
        0u8..4,
        proptest::sample::select(if keys.is_empty() {
            vec!["x".to_owned()]
        } else {
            keys
        }),
        arb_key(),
        arb_json(),
    );
    proptest::collection::vec(edit, 0..4).prop_map(move |edits| {
        let mut value = template.clone();
        if let Value::Object(object) = &mut value {
            for (kind, existing, new_key, new_value) in edits {
                match kind {
                    0 => {
                        object.insert(existing, new_value);
                    }
                    1 => {
                        object.remove(&existing);
                    }
                    2 => {
                        object.insert(new_key, new_value);
                    }
                    _ => {
                        object.insert(existing, Value::Null);
                    }
                }
            }
        }
        value
    })
}

/// `depth` nested arrays: a parser that recurses on input overflows its stack on this.
fn deep_nesting(depth: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(depth * 2 + 20);
    body.extend_from_slice(b"{\"prompt\":");
    body.extend(std::iter::repeat_n(b'[', depth));
    body.extend(std::iter::repeat_n(b']', depth));
    body.push(b'}');
    body
}

fn json_body(template: fn() -> Value) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        10 => mutated(template()).prop_map(|v| v.to_string().into_bytes()),
        3 => arb_json().prop_map(|v| v.to_string().into_bytes()),
        1 => (mutated(template()), 0usize..64).prop_map(|(v, cut)| {
            // Truncated JSON.
            let text = v.to_string().into_bytes();
            let keep = text.len().saturating_sub(cut + 1);
            text[..keep].to_vec()
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
        1 => (1usize..200_000).prop_map(deep_nesting),
    ]
}

fn ndjson_body() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        4 => (arb_string(), proptest::collection::vec(-1e3f64..1e3, 0..5), arb_json())
            .prop_map(|(id, values, metadata)| json!({"id": id, "values": values, "metadata": metadata}).to_string()),
        1 => arb_json().prop_map(|v| v.to_string()),
        1 => "[ -~]{0,40}",
    ];
    proptest::collection::vec(line, 0..20).prop_map(|lines| lines.join("\n").into_bytes())
}

fn multipart_body() -> impl Strategy<Value = (String, Vec<u8>)> {
    (
        "[a-zA-Z0-9]{1,20}",
        proptest::collection::vec((arb_key(), arb_string(), proptest::collection::vec(any::<u8>(), 0..128)), 0..4),
        any::<bool>(),
    )
        .prop_map(|(boundary, parts, well_formed)| {
            let mut body = Vec::new();
            for (name, filename, data) in parts {
                body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\r\n")
                        .as_bytes(),
                );
                body.extend_from_slice(&data);
                body.extend_from_slice(b"\r\n");
            }
            if well_formed {
                body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            }
            (format!("multipart/form-data; boundary={boundary}"), body)
        })
}

fn arb_model() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(vec![
            "@cf/meta/llama-3.1-8b-instruct", "@cf/baai/bge-base-en-v1.5",
            "@cf/openai/whisper-tiny-en", "@cf/deepgram/aura-1", "@cf/myshell-ai/melotts",
            "@cf/microsoft/resnet-50", "@cf/openai/whisper", "@cf/black-forest-labs/flux-1-schnell",
            "@cf/meta/m2m100-1.2b", "smollm2-135m-instruct", "@hf/nope/nope", "@cf/x",
        ]).prop_map(str::to_owned),
        1 => "[ -~]{0,40}",
    ]
}

/// Path segments: plausible ids and hostile ones, percent-encoded where they must be.
fn arb_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9-]{1,12}",
        1 => proptest::sample::select(vec!["g1", "i1", "..", "%2e%2e", "%00", "a%2Fb", "-1", "99999999999999999999"])
            .prop_map(str::to_owned),
        1 => (1usize..3000).prop_map(|n| "x".repeat(n)),
        1 => any::<String>().prop_map(|s| urlencode(&s)),
    ]
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn arb_headers(route: &'static str) -> impl Strategy<Value = Vec<(String, String)>> {
    let header = prop_oneof![
        proptest::sample::select(vec![
            "cf-aig-cache-ttl",
            "cf-aig-skip-cache",
            "cf-aig-request-timeout",
            "cf-aig-max-attempts",
            "cf-aig-retry-delay",
            "cf-aig-backoff",
            "cf-aig-metadata",
            "cf-aig-custom-cost",
            "cf-aig-collect-log",
            "cf-aig-cache-key",
            "cf-aig-event-id",
            "cf-aig-authorization",
            "x-session-affinity",
            "authorization",
            "accept",
            "x-kiln-anything",
        ])
        .prop_map(str::to_owned),
        "[a-z-]{1,20}",
    ];
    let value = prop_oneof![
        "[ -~]{0,40}",
        Just("{\"a\":".repeat(50)),
        Just("99999999999999999999999".to_owned()),
        Just("-1".to_owned()),
        Just("Bearer kiln_0000000000000000_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".to_owned()),
    ];
    let _ = route;
    proptest::collection::vec((header, value), 0..4)
}

fn attack() -> impl Strategy<Value = Attack> {
    let count = routes().len();
    (
        0..count,
        proptest::collection::vec(arb_segment(), 8),
        arb_model(),
        any::<bool>(),
        0u32..1000,
    )
        .prop_flat_map(move |(which, segments, model, client_v4, rare)| {
            let route = &routes()[which];
            let path = fill(route.path, &segments, &model, client_v4);
            let body: BoxedStrategy<(Option<String>, Vec<u8>)> = match route.body {
                Body::None => Just((None, Vec::new())).boxed(),
                Body::Json(template) => json_body(template)
                    .prop_map(|b| (Some("application/json".to_owned()), b))
                    .boxed(),
                Body::Ndjson => ndjson_body()
                    .prop_map(|b| (Some("application/x-ndjson".to_owned()), b))
                    .boxed(),
                Body::Multipart => multipart_body().prop_map(|(t, b)| (Some(t), b)).boxed(),
                Body::Binary => proptest::collection::vec(any::<u8>(), 0..4096)
                    .prop_map(|b| (Some("application/octet-stream".to_owned()), b))
                    .boxed(),
            };
            let name = route.name;
            let method = route.method.clone();
            (
                body,
                arb_headers(name),
                Just(path),
                Just(method),
                Just(rare),
                "[ -~]{0,30}",
            )
                .prop_map(
                    move |((content_type, mut body), mut headers, path, method, rare, odd_type)| {
                        if let Some(content_type) = content_type {
                            // Now and then the wrong content type.
                            let content_type = if rare % 10 == 0 {
                                odd_type
                            } else {
                                content_type
                            };
                            headers.push(("content-type".into(), content_type));
                        }
                        // Rarely, a body over every limit (17 MiB > the 16 MiB default).
                        if rare == 0 {
                            body = vec![b'['; 17 * 1024 * 1024];
                        }
                        confine_upstream(&mut body);
                        Attack {
                            route: name,
                            method,
                            path,
                            headers,
                            body,
                        }
                    },
                )
        })
}

/// Whatever the mutation did, a `base_url` in a body names only [`SAFE_UPSTREAM`].
fn confine_upstream(body: &mut Vec<u8>) {
    if let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) {
        if object.contains_key("base_url") {
            object.insert("base_url".into(), json!(SAFE_UPSTREAM));
            *body = Value::Object(object).to_string().into_bytes();
        }
    }
}

fn fill(template: &str, segments: &[String], model: &str, client_v4: bool) -> String {
    let account = if client_v4 {
        format!("/client/v4/accounts/{ACCOUNT}")
    } else {
        format!("/accounts/{ACCOUNT}")
    };
    let mut next = segments.iter().cycle();
    let mut out = template.replace("{a}", &account).replace("{acct}", ACCOUNT);
    out = out
        .replace("{m}", model)
        .replace("{g}", "g1")
        .replace("{i}", "i1");
    while let Some(at) = out.find("{x}") {
        let segment = next.next().cloned().unwrap_or_default();
        out.replace_range(at..at + 3, &segment);
    }
    out
}

/// The answer is well formed: a success, or an error in Kiln's Workers AI envelope, the
/// gateway's shape, OpenAI's, or the Worker bindings' (AI and Vectorize).
fn well_formed(status: u16, content_type: &str, body: &[u8]) -> Result<(), String> {
    if status < 400 {
        return Ok(());
    }
    if status == 500 {
        return Err(format!(
            "500: an internal error on generated input: {}",
            String::from_utf8_lossy(&body[..body.len().min(400)])
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "{status} {content_type}: not JSON ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )
    })?;
    let workers_ai = value["success"] == json!(false)
        && value["errors"]
            .as_array()
            .and_then(|errors| errors.first())
            .is_some_and(|e| e["code"].is_u64() && e["message"].is_string());
    let openai = value["error"]["message"].is_string();
    let binding = value["internalCode"].is_u64() && value["message"].is_string();
    // The Vectorize binding's error, as workerd's binding reads it.
    let vectorize_binding = value["code"].is_u64() && value["error"].is_string();
    if workers_ai || openai || binding || vectorize_binding {
        Ok(())
    } else {
        Err(format!("{status}: not an error envelope: {value}"))
    }
}

fn seed() -> [u8; 32] {
    let seed: u64 = std::env::var("KILN_HTTP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes
}

#[tokio::test]
async fn generated_requests_to_every_route_get_well_formed_answers() {
    let _serial = crate::one_attack_at_a_time().await;
    let total: usize = std::env::var("KILN_HTTP_FUZZ_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000);
    let concurrency: usize = std::env::var("KILN_HTTP_FUZZ_CONCURRENCY")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    let target = target();
    // Something for the generated ids to find.
    let setup = client();
    let base = &target.base;
    let _ = setup
        .post(format!("{base}/accounts/{ACCOUNT}/ai-gateway/gateways"))
        .json(&json!({"id": "g1", "collect_logs": true, "cache_ttl": 60}))
        .send()
        .await;
    let _ = setup
        .post(format!("{base}/accounts/{ACCOUNT}/vectorize/v2/indexes"))
        .json(&json!({"name": "i1", "config": {"dimensions": 3, "metric": "cosine"}}))
        .send()
        .await;

    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed()),
    );
    let strategy = attack();
    // Generated as they are sent, and only a summary kept: a campaign of 100,000 requests
    // holds a handful of bodies at a time, not all of them.
    let attacks = (0..total).map(|_| strategy.new_tree(&mut runner).expect("a request").current());
    let started = Instant::now();
    // A fresh connection per request: hyper closes a connection whose request body it did not
    // read (a refusal before the body), and a pooled connection reused at that moment fails
    // to send, which says nothing about the answer.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let mut answers = futures::stream::iter(attacks.map(|attack| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let mut request = http.request(attack.method.clone(), format!("{base}{}", attack.path));
            for (name, value) in &attack.headers {
                request = request.header(name, value);
            }
            let answer = match request.body(attack.body.clone()).send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let content_type = response
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    match response.bytes().await {
                        Ok(bytes) => Ok((status, content_type, bytes.to_vec())),
                        // Answered before the oversized body was read, then closed.
                        Err(_) if attack.body.len() > MAX_BODY_BYTES && status < 500 => {
                            Ok((status, content_type, OVERSIZED_REFUSAL.to_vec()))
                        }
                        Err(error) => Err(format!("reading the answer: {error}")),
                    }
                }
                // A body over the server's limit may be refused (413) before it is all sent,
                // and the connection closed under the client: a refusal, not a failure.
                Err(_) if attack.body.len() > MAX_BODY_BYTES => Ok((
                    413,
                    "application/json".to_owned(),
                    OVERSIZED_REFUSAL.to_vec(),
                )),
                Err(error) => Err(format!("sending: {error}")),
            };
            (attack, answer)
        }
    }))
    // Two at a time, as many as the cores of the machine CI runs on: more only queues, and
    // the memory bound is about hostile input, not about every model running at once.
    .buffer_unordered(concurrency);

    let mut per_route: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut sent = 0usize;
    while let Some((attack, answer)) = answers.next().await {
        sent += 1;
        if sent.is_multiple_of(5000) {
            eprintln!(
                "http generator: {sent} answered in {:.0} s, {} malformed so far; statuses {per_status:?}",
                started.elapsed().as_secs_f64(),
                failures.len()
            );
        }
        *per_route.entry(attack.route).or_default() += 1;
        let problem = match answer {
            Ok((status, content_type, body)) => {
                *per_status.entry(status).or_default() += 1;
                well_formed(status, &content_type, &body).err()
            }
            Err(problem) => Some(problem),
        };
        if let Some(problem) = problem {
            failures.push(format!(
                "{} {} ({} body bytes: {}): {problem}",
                attack.method,
                &attack.path[..attack.path.floor_char_boundary(200)],
                attack.body.len(),
                String::from_utf8_lossy(&attack.body[..attack.body.len().min(300)])
            ));
        }
    }
    eprintln!(
        "http generator: {total} requests over {} routes in {:.1} s; statuses {per_status:?}",
        per_route.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} malformed answers, e.g.:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(per_route.len(), routes().len(), "every route was exercised");
    // The same process still serves.
    assert_still_serving("@cf/baai/bge-base-en-v1.5", &normal_embedding()).await;
    assert!(
        std::path::Path::new(&format!("/proc/{}", target.pid)).exists(),
        "the server process never restarted"
    );
}
