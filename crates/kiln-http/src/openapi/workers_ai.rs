//! Descriptions of the Workers AI REST routes under `/accounts/{account_id}` (run, catalog,
//! fine-tunes) and of the account routes (tokens, usage); registered in `crate::router`.

use serde_json::{json, Value};

use super::{non_empty_string, run_schemas, Operation, Surface, Tag};

/// What every authenticated Workers AI route may answer besides its own errors.
const COMMON: [u16; 4] = [400, 401, 403, 500];

fn api(tag: Tag, summary: &str) -> Operation {
    Operation::new(tag, summary)
        .authenticated()
        .errors(Surface::WorkersAi, &COMMON)
}

fn any_object() -> Value {
    json!({"type": "object"})
}

fn list_of(item: Value) -> Value {
    json!({"type": "array", "items": item})
}

/// A free-form JSON body: the handler reads its fields itself and names the one it refuses.
fn free_json(description: &str) -> Value {
    json!({
        "required": false,
        "description": description,
        "content": {"application/json": {"schema": {}}},
    })
}

pub fn run() -> Operation {
    api(Tag::WorkersAi, "Run a model")
        .describe(
            "Runs the model a catalog id (`@cf/meta/llama-3.1-8b-instruct`) or local model name \
             resolves to. With `?queueRequest=true`, `{requests: [...]}` queues an Async Batch \
             and `{request_id}` polls it. In a cluster, a model only another node serves is \
             answered by that node through this one (`x-kiln-node` names it); 503 / 3053 when \
             that node does not answer.",
        )
        .path_param("model", "A catalog id or a local model's name.")
        .query(
            "queueRequest",
            "`true`: queue the `requests` as an Async Batch, or poll `request_id`.",
            json!({"type": "string"}),
        )
        .header(
            "x-session-affinity",
            "Keeps a conversation's prefix cache on one sequence slot.",
            json!({"type": "string"}),
        )
        .request_body_object(run_schemas::run_request_body())
        .response_object(200, run_schemas::run_success())
        .errors(Surface::WorkersAi, &[404, 405, 408, 413, 429, 503])
}

pub fn run_live() -> Operation {
    api(Tag::WorkersAi, "Live transcription over a WebSocket")
        .describe(
            "`GET` with `Upgrade: websocket` opens a live transcription session on a speech \
             model (Deepgram's options in the query). Without the upgrade it is a 400.",
        )
        .path_param("model", "A speech recognition model's catalog id.")
        .response(101, "Switching to the WebSocket protocol.", None)
        .errors(Surface::WorkersAi, &[429])
}

pub fn usage() -> Operation {
    api(Tag::Accounts, "The account's usage")
        .describe(
            "Requests, tokens and neurons per UTC day and model, and the requests-per-minute \
             windows as they stand (a Kiln extension).",
        )
        .query(
            "since",
            "First day, YYYY-MM-DD (UTC), inclusive.",
            json!({"type": "string"}),
        )
        .query("until", "Last day, inclusive.", json!({"type": "string"}))
        .query(
            "model",
            "Only this model's rows.",
            json!({"type": "string"}),
        )
        .ok_envelope(
            "The account's usage.",
            json!({
                "type": "object",
                "required": ["account_id", "rows"],
                "properties": {
                    "account_id": {"type": "string"},
                    "rows": {"type": "array"},
                    "neurons": {"type": "number"},
                    "neurons_today": {"type": "number"},
                }
            }),
        )
}

fn token_object() -> Value {
    json!({
        "type": "object",
        "required": ["id", "name", "scopes", "created_at_ms", "status"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "created_at_ms": {"type": "integer"},
            "status": {"enum": ["active", "revoked"]},
            "value": {"type": "string", "description": "The secret; only when created."},
        }
    })
}

pub fn list_tokens() -> Operation {
    api(Tag::Accounts, "List the account's API tokens")
        .describe("Revoked ones included; never a secret. Needs `api-tokens:edit`.")
        .ok_envelope("The tokens.", list_of(token_object()))
}

pub fn create_token() -> Operation {
    api(Tag::Accounts, "Create an API token")
        .describe(
            "A token never grants scopes its creator lacks (403). The secret is in `value`, \
             shown only here.",
        )
        .json_body(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["name", "scopes"],
            "properties": {
                "name": {"type": "string"},
                "scopes": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Scope names (`workers-ai:read`, …) or `all`.",
                },
            }
        }))
        .ok_envelope("The new token, with its secret.", token_object())
}

pub fn revoke_token() -> Operation {
    api(Tag::Accounts, "Revoke an API token")
        .path_param("token_id", "The token's id.")
        .ok_envelope(
            "The revoked token's id.",
            json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}),
        )
        .errors(Surface::WorkersAi, &[404])
}

fn catalog_query(op: Operation) -> Operation {
    let text = json!({"type": "string"});
    op.query("search", "Words in the name or description.", text.clone())
        .query("task", "A task's name or id.", text.clone())
        .query("author", "The author.", text.clone())
        .query("source", "The source.", text.clone())
        .query(
            "hide_experimental",
            "Hide experimental models.",
            text.clone(),
        )
        .query("page", "Page number, from 1.", text.clone())
        .query("per_page", "Results per page.", text)
}

pub fn search_models() -> Operation {
    catalog_query(api(Tag::WorkersAi, "Search the model catalog"))
        .describe(
            "Catalog entries with `kiln: {installed, served_by}`; `output_dimensions` is the \
             serving local model's width.",
        )
        .ok_envelope(
            "A page of catalog entries.",
            list_of(json!({
                "type": "object",
                "required": ["name", "task"],
                "properties": {"name": {"type": "string"}, "kiln": any_object()}
            })),
        )
}

pub fn model_schema() -> Operation {
    api(Tag::WorkersAi, "A model's input and output JSON Schemas")
        .query_required("model", "The model's catalog id.", non_empty_string())
        .ok_envelope(
            "The schemas.",
            json!({"type": "object", "required": ["input", "output"],
                   "properties": {"input": any_object(), "output": any_object()}}),
        )
}

pub fn search_tasks() -> Operation {
    api(Tag::WorkersAi, "The catalog's tasks").ok_envelope("Every task.", list_of(any_object()))
}

pub fn search_authors() -> Operation {
    api(Tag::WorkersAi, "The catalog's authors").ok_envelope("Every author.", list_of(any_object()))
}

fn finetune_object() -> Value {
    json!({"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                                            "model": {"type": "string"}}})
}

fn paging(op: Operation) -> Operation {
    let text = json!({"type": "string"});
    op.query("page", "Page number, from 1.", text.clone())
        .query("per_page", "Results per page.", text)
}

pub fn list_finetunes() -> Operation {
    paging(api(Tag::WorkersAi, "List the account's LoRA fine-tunes"))
        .ok_envelope("The fine-tunes.", list_of(finetune_object()))
}

pub fn create_finetune() -> Operation {
    api(Tag::WorkersAi, "Create a LoRA fine-tune")
        .request_body_object(free_json(
            "`{model, name, description?, public?}`: `model` is the base model's catalog id.",
        ))
        .ok_envelope("The fine-tune.", finetune_object())
        .errors(Surface::WorkersAi, &[405, 409, 413])
}

pub fn list_public_finetunes() -> Operation {
    let text = json!({"type": "string"});
    paging(api(Tag::WorkersAi, "List public fine-tunes"))
        .query("limit", "At most this many.", text.clone())
        .query("offset", "Skip this many.", text.clone())
        .query("orderBy", "Sort order.", text)
        .ok_envelope("The public fine-tunes.", list_of(finetune_object()))
}

pub fn upload_finetune_asset() -> Operation {
    api(Tag::WorkersAi, "Upload a fine-tune's asset")
        .describe(
            "Multipart `file_name` (`adapter_config.json` or `adapter_model.safetensors`) and \
             `file`, up to 300 MB.",
        )
        .path_param("finetune", "The fine-tune's id or name.")
        .body(
            json!({"multipart/form-data": {"schema": {
                "type": "object",
                "properties": {"file_name": {"type": "string"},
                               "file": {"type": "string", "format": "binary"}}
            }}}),
            true,
        )
        .ok_envelope("The stored asset.", any_object())
        .errors(Surface::WorkersAi, &[404, 413])
}
