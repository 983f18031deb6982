//! Shared schemas: the Workers AI envelope, each surface's error body, and the error codes,
//! generated from `kiln_core::ERROR_TABLE` (the one place statuses and codes are decided).

use kiln_core::error::ERROR_TABLE;
use serde_json::{json, Map, Value};

use super::Surface;

/// The code `route_not_found` sends first, before 7000 (Cloudflare's API router does the same);
/// the only code outside the error table.
const COULD_NOT_ROUTE: u32 = 7003;

pub fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// Every Workers AI error code Kiln sends, from the error table.
fn error_codes() -> Vec<u32> {
    let mut codes: Vec<u32> = ERROR_TABLE.iter().map(|row| row.code).collect();
    codes.push(COULD_NOT_ROUTE);
    codes.sort_unstable();
    codes.dedup();
    codes
}

/// The error table as a Markdown table, for the document's description.
pub fn error_table_markdown() -> String {
    let mut text = String::from("| status | code | meaning |\n|---|---|---|\n");
    for row in ERROR_TABLE {
        text.push_str(&format!(
            "| {} | {} | {} |\n",
            row.status, row.code, row.default_message
        ));
    }
    text
}

/// The components every document has (the run schemas are added by the Workers AI area).
pub fn shared_schemas() -> Map<String, Value> {
    let detail = json!({
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": schema_ref("ErrorCode"), "message": {"type": "string"}}
    });
    let schemas = json!({
        "ErrorCode": {
            "type": "integer",
            "description": "A Workers AI error code; see the error table in the document's description.",
            "enum": error_codes(),
        },
        "ErrorDetail": detail,
        "WorkersAiError": {
            "type": "object",
            "description": "The Workers AI error envelope.",
            "required": ["result", "success", "errors", "messages"],
            "properties": {
                "result": {"type": "null"},
                "success": {"const": false},
                "errors": {"type": "array", "minItems": 1, "items": schema_ref("ErrorDetail")},
                "messages": {"type": "array"},
            }
        },
        "OpenAiError": {
            "type": "object",
            "description": "OpenAI's error body.",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string", "enum": [
                        "invalid_request_error", "authentication_error", "permission_error",
                        "rate_limit_error", "timeout_error", "server_error"
                    ]},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                }
            }}
        },
        "GatewayError": {
            "type": "object",
            "description": "AI Gateway's error body: `error` as Cloudflare's gateway sends it, \
                            and the same list as `errors` for Workers AI clients.",
            "required": ["success", "result", "messages", "error", "errors"],
            "properties": {
                "success": {"const": false},
                "result": {"type": "array", "maxItems": 0},
                "messages": {"type": "array"},
                "error": {"type": "array", "items": schema_ref("ErrorDetail")},
                "errors": {"type": "array", "items": schema_ref("ErrorDetail")},
            }
        },
        "AiBindingError": {
            "type": "object",
            "description": "The Worker AI binding's error object, which `env.AI.run` throws.",
            "required": ["internalCode", "name", "description", "message"],
            "properties": {
                "internalCode": {"type": "integer"},
                "name": {"type": "string"},
                "description": {"type": "string"},
                "message": {"type": "string"},
            }
        },
        "VectorizeBindingError": {
            "type": "object",
            "description": "The Vectorize binding's error, thrown as `<OP>_ERROR (code = N): <error>`.",
            "required": ["code", "error"],
            "properties": {"code": schema_ref("ErrorCode"), "error": {"type": "string"}}
        },
        "SseEvent": {
            "type": "object",
            "description": "One server-sent event (the schema applies to each event of a \
                            `text/event-stream`). `data` is JSON, or `[DONE]` at the end of a \
                            Workers AI or OpenAI stream.",
            "required": ["data"],
            "properties": {
                "data": {"type": "string"},
                "event": {"type": "string"},
                "id": {"type": "string"},
                "retry": {"type": "integer"},
            }
        },
        "ResultInfo": {
            "type": "object",
            "description": "Paging of a listed result.",
            "properties": {
                "page": {"type": "integer"},
                "per_page": {"type": "integer"},
                "count": {"type": "integer"},
                "total_count": {"type": "integer"},
            }
        },
    });
    match schemas {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The response object for an error with `status` on `surface`.
pub fn error_response(surface: Surface, status: u16) -> Value {
    let meanings: Vec<String> = ERROR_TABLE
        .iter()
        .filter(|row| row.status == status)
        .map(|row| format!("{} ({})", row.default_message, row.code))
        .collect();
    let description = if meanings.is_empty() {
        format!("Error {status}.")
    } else {
        format!("Error: {}.", meanings.join("; "))
    };
    let schema = match surface {
        Surface::WorkersAi => schema_ref("WorkersAiError"),
        Surface::OpenAi => schema_ref("OpenAiError"),
        Surface::Gateway => schema_ref("GatewayError"),
        Surface::AiBinding => {
            json!({"anyOf": [schema_ref("AiBindingError"), schema_ref("WorkersAiError")]})
        }
        Surface::VectorizeBinding => {
            json!({"anyOf": [schema_ref("VectorizeBindingError"), schema_ref("WorkersAiError")]})
        }
    };
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}
