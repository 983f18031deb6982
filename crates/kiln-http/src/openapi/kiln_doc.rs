//! Descriptions of Kiln's own routes (`/health`, `/metrics`, `/openapi.json`, `/kiln/…`) and
//! of the console's (`kiln-console` serves them; it is described here, where it is mounted).

use axum::http::Method;
use serde_json::json;

use super::{DocumentedRoute, Operation, Surface, Tag};

pub fn health() -> Operation {
    Operation::new(Tag::Kiln, "Liveness").response(
        200,
        "The server is up.",
        Some(json!({"text/plain": {"schema": {"const": "ok"}}})),
    )
}

pub fn ready() -> Operation {
    Operation::new(Tag::Kiln, "Readiness")
        .describe(
            "200 while the server takes new requests; 503 with code 3050 once a SIGTERM has \
             started its drain (it still finishes the requests it holds).",
        )
        .ok_envelope(
            "Ready.",
            json!({
                "type": "object",
                "required": ["ready"],
                "properties": {"ready": {"const": true}}
            }),
        )
        .errors(Surface::WorkersAi, &[503])
}

pub fn metrics() -> Operation {
    Operation::new(Tag::Kiln, "Prometheus metrics")
        .response(
            200,
            "The metrics in Prometheus' text format.",
            Some(json!({"text/plain": {"schema": {"type": "string"}}})),
        )
        .errors(Surface::WorkersAi, &[500])
}

pub fn openapi() -> Operation {
    Operation::new(Tag::Kiln, "This document")
        .describe("The OpenAPI 3.1 document of every route, generated from the router.")
        .ok_json(
            "The document.",
            json!({"type": "object", "required": ["openapi", "paths"]}),
        )
}

/// `/kiln/…` routes take the operator's `workers-ai` scopes in token mode.
fn operator(summary: &str) -> Operation {
    Operation::new(Tag::Kiln, summary)
        .authenticated()
        .errors(Surface::WorkersAi, &[401, 403, 500])
}

pub fn whoami() -> Operation {
    operator("The caller's account and scopes").ok_envelope(
        "Who the caller is.",
        json!({
            "type": "object",
            "required": ["account_id", "auth", "scopes"],
            "properties": {
                "account_id": {"type": "string"},
                "auth": {"enum": ["open", "tokens"]},
                "scopes": {"type": "array", "items": {"type": "string"}},
            }
        }),
    )
}

pub fn models() -> Operation {
    operator("Installed and loaded models")
        .describe(
            "Every installed model, whether it is loaded and its memory, the ids it serves, the \
             residency policy and what the model store can install (what `kiln ps` shows).",
        )
        .ok_envelope(
            "The models.",
            json!({
                "type": "object",
                "required": ["models", "installable", "memory_used_bytes"],
                "properties": {
                    "models": {"type": "array", "items": {
                        "type": "object",
                        "required": ["name", "task", "loaded", "serves", "task_default"],
                        "properties": {
                            "name": {"type": "string"},
                            "task": {"type": "string"},
                            "loaded": {"type": "boolean"},
                            "memory_bytes": {"type": ["integer", "null"]},
                            "serves": {
                                "type": "array",
                                "items": {"type": "string"},
                                "description": "Catalog ids aliased to this model.",
                            },
                            "task_default": {
                                "type": "boolean",
                                "description": "Whether it also answers its task's other catalog ids.",
                            },
                        }
                    }},
                    "installable": {"type": "array", "items": {
                        "type": "object",
                        "required": ["name", "description", "size_bytes", "installed", "default"],
                        "properties": {
                            "name": {"type": "string"},
                            "task": {"type": ["string", "null"]},
                            "description": {"type": "string"},
                            "size_bytes": {"type": "integer", "minimum": 0},
                            "installed": {"type": "boolean"},
                            "default": {"type": "boolean"},
                        }
                    }},
                    "memory_budget_bytes": {"type": ["integer", "null"]},
                    "memory_used_bytes": {"type": "integer"},
                    "keep_alive_secs": {"type": ["integer", "null"]},
                }
            }),
        )
}

pub fn pull_model() -> Operation {
    operator("Install a model from the model store")
        .describe(
            "Streams progress as server-sent events: `{status: \"pulling\", name, completed, \
             total}`, then `{status: \"success\", name}` or `{status: \"error\", name, errors}`.",
        )
        .json_body(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["name"],
            "properties": {"name": {"type": "string", "description": "A name `GET /kiln/models` lists as installable."}}
        }))
        .response(
            200,
            "Progress events.",
            Some(json!({"text/event-stream": {"schema": super::schema_ref("SseEvent")}})),
        )
        .errors(Surface::WorkersAi, &[400, 413])
}

pub fn unload_model() -> Operation {
    operator("Unload a model from memory")
        .describe("It loads again on its next request.")
        .path_param("name", "An installed model's name.")
        .ok_envelope(
            "Whether it was loaded.",
            json!({"type": "object", "required": ["name", "unloaded"],
                   "properties": {"name": {"type": "string"}, "unloaded": {"type": "boolean"}}}),
        )
        .errors(Surface::WorkersAi, &[400])
}

/// `kiln_console::router()`'s routes, described where Kiln mounts them.
pub fn console_routes() -> Vec<DocumentedRoute> {
    let page = Operation::new(Tag::Console, "The console").response(
        200,
        "The console's page.",
        Some(json!({"text/html": {"schema": {"type": "string"}}})),
    );
    let asset = Operation::new(Tag::Console, "A console asset")
        .path_param("file", "The asset's path under `/console/`.")
        .response(
            200,
            "The file, with its own media type.",
            Some(json!({"*/*": {"schema": {}}})),
        )
        // A file it does not embed: the text/plain 404 is rewrapped by the envelope layer.
        .errors(Surface::WorkersAi, &[404]);
    vec![
        DocumentedRoute {
            method: Method::GET,
            path: "/".to_owned(),
            operation: page,
        },
        DocumentedRoute {
            method: Method::GET,
            path: "/console/{*file}".to_owned(),
            operation: asset,
        },
    ]
}
