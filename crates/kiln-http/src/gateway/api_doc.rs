//! OpenAPI descriptions of the gateway's request routes (`routes` in `mod.rs`): the provider
//! proxy, the universal endpoint, and the Worker AI binding's protocol. What a provider answers
//! is relayed as it came, so those routes document any status (`default`) besides the gateway's
//! own errors.

use serde_json::json;

use crate::openapi::{Operation, Surface, Tag};

/// The gateway's own refusals (`GatewayError`: 400, 401 / 2009, 404, 429 / 2003, 502 / 2005,
/// 504 / 2006, 508 / 2008) share their statuses with the provider answers it relays, so these
/// routes can only say "any status" and name the gateway's shape in prose.
fn relay(summary: &str) -> Operation {
    Operation::new(Tag::AiGateway, summary)
        .path_param("gateway_id", "The gateway's id.")
        .header(
            "cf-aig-authorization",
            "`Bearer <token>` for an authenticated gateway.",
            json!({"type": "string"}),
        )
        .relayed(
            "The provider's answer, relayed (or replayed from the cache); or the gateway's own \
             error, `#/components/schemas/GatewayError`.",
        )
}

pub fn universal() -> Operation {
    relay("Universal endpoint")
        .describe(
            "A list of steps `[{provider, endpoint, headers, query}]` tried in order until one \
             answers; `cf-aig-step` names it.",
        )
        .request_body_object(json!({
            "required": false,
            "description": "One step or a list of steps.",
            "content": {"application/json": {"schema": {}}},
        }))
}

pub fn universal_slash() -> Operation {
    universal().describe("The universal endpoint as the binding's `getUrl()` writes it.")
}

pub fn proxy() -> Operation {
    relay("Call a provider through the gateway")
        .describe(
            "`workers-ai/…` runs on this server; `compat/…` reads `provider/model` from the \
             body; `custom-{slug}/…` goes to a custom provider. Every method is relayed.",
        )
        .path_param("path", "The provider and its path (`workers-ai/@cf/…`).")
        .request_body_object(json!({
            "required": false,
            "content": {"*/*": {"schema": {}}},
        }))
}

/// The Worker AI binding: no credentials, the binding account's.
fn binding(summary: &str, surface: Surface) -> Operation {
    Operation::new(Tag::WorkersAi, summary).errors(surface, &[400, 401, 403, 404, 500])
}

pub fn binding_run() -> Operation {
    binding("Worker AI binding: run a model", Surface::AiBinding)
        .describe(
            "`env.AI.run` as workerd sends it (`?version=3`, model in `cf-consn-model-id`, \
             `{inputs, options}`). Answers the bare `result`, a stream, or bytes.",
        )
        .request_body_object(json!({
            "required": false,
            "content": {"application/json": {"schema": {}}, "*/*": {"schema": {}}},
        }))
        .response(
            200,
            "The model's result.",
            Some(json!({
                "application/json": {"schema": {}},
                "text/event-stream": {"schema": crate::openapi::schema_ref("SseEvent")},
                "audio/*": {"schema": {"type": "string", "format": "binary"}},
                "image/*": {"schema": {"type": "string", "format": "binary"}},
            })),
        )
        .errors(Surface::AiBinding, &[405, 408, 413, 429])
}

pub fn binding_live() -> Operation {
    binding(
        "Worker AI binding: live transcription WebSocket",
        Surface::WorkersAi,
    )
    .response(101, "Switching to the WebSocket protocol.", None)
}

/// A binding route that relays: its own refusals are the binding's error object, the
/// gateway's are the gateway's, and the provider's answer passes as it came, so any status.
fn binding_relay(summary: &str) -> Operation {
    Operation::new(Tag::WorkersAi, summary)
        .request_body_object(json!({
            "required": false,
            "content": {"application/json": {"schema": {}}},
        }))
        .relayed(
            "The provider's answer, relayed; or an error: the binding's `{internalCode, name, \
             description, message}`, the gateway's, or the envelope.",
        )
}

pub fn binding_gateway_run() -> Operation {
    binding_relay("Worker AI binding: run through a gateway")
        .describe("`options.gateway` names the gateway; the answer is relayed.")
}

pub fn binding_models() -> Operation {
    binding("Worker AI binding: `env.AI.models()`", Surface::WorkersAi)
        .query(
            "search",
            "Words in the name or description.",
            json!({"type": "string"}),
        )
        .query("task", "A task's name or id.", json!({"type": "string"}))
        .ok_envelope("Catalog entries.", json!({"type": "array"}))
}

pub fn binding_gateway_url() -> Operation {
    binding(
        "Worker AI binding: a gateway's provider URL",
        Surface::WorkersAi,
    )
    .path_param("provider", "A provider slug, or `universal`.")
    .ok_envelope("The URL.", json!({"type": "string"}))
}

pub fn binding_get_log() -> Operation {
    binding("Worker AI binding: get a gateway log", Surface::WorkersAi)
        .path_param("id", "The log's id.")
        .ok_envelope("The log.", json!({"type": "object"}))
}

pub fn binding_patch_log() -> Operation {
    binding(
        "Worker AI binding: annotate a gateway log",
        Surface::WorkersAi,
    )
    .path_param("id", "The log's id.")
    .request_body_object(json!({
        "required": false,
        "description": "`{feedback?, score?, metadata?}`.",
        "content": {"application/json": {"schema": {}}},
    }))
    .ok_envelope("The log.", json!({}))
}

pub fn binding_universal() -> Operation {
    binding_relay("Worker AI binding: a gateway's `run`")
        .describe("`env.AI.gateway(id).run(steps)`: the universal endpoint for the binding.")
        .path_param("gateway", "The gateway's id.")
}
