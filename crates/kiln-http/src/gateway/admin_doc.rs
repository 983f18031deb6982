//! OpenAPI descriptions of AI Gateway's management routes under `…/accounts/{account_id}/
//! ai-gateway` (`account_routes` in `mod.rs`): gateways, logs, datasets, evaluations, dynamic
//! routes, billing, stored keys and custom providers. They answer Workers AI envelopes; their
//! bodies are checked field by field (spec §4) and described here in prose.

use serde_json::{json, Value};

use crate::openapi::{Operation, Surface, Tag};

const ERRORS: [u16; 7] = [400, 401, 403, 404, 409, 413, 500];

/// A management operation answering `result` in the envelope.
pub fn manage(summary: &str, result: Value) -> Operation {
    Operation::new(Tag::AiGateway, summary)
        .authenticated()
        .errors(Surface::WorkersAi, &ERRORS)
        .path_param("gateway", "The gateway's id.")
        .ok_envelope(summary, result)
}

/// A management operation that takes a JSON body, described in prose.
pub fn manage_with(summary: &str, body: &str, result: Value) -> Operation {
    manage(summary, result).request_body_object(json!({
        "required": false,
        "description": body,
        "content": {"application/json": {"schema": {}}},
    }))
}

fn object() -> Value {
    json!({"type": "object"})
}

fn list() -> Value {
    json!({"type": "array", "items": {"type": "object"}})
}

fn paged(op: Operation) -> Operation {
    op.query("page", "Page number, from 1.", json!({"type": "string"}))
        .query("per_page", "Items per page.", json!({"type": "string"}))
}

pub fn list_gateways() -> Operation {
    paged(manage("List gateways", list()))
}

pub fn create_gateway() -> Operation {
    manage_with(
        "Create a gateway",
        "`{id, cache_ttl?, cache_invalidate_on_update?, collect_logs?, rate_limiting_limit?, \
         rate_limiting_interval?, rate_limiting_technique?, authentication?, …}`.",
        object(),
    )
}

pub fn get_gateway() -> Operation {
    manage("Get a gateway", object())
}

pub fn update_gateway() -> Operation {
    manage_with(
        "Update a gateway",
        "The gateway's settings, as on creation.",
        object(),
    )
}

pub fn delete_gateway() -> Operation {
    manage("Delete a gateway", object())
}

pub fn list_logs() -> Operation {
    paged(manage("List a gateway's logs", list())).describe(
        "Filters, search and ordering as Cloudflare's API takes them (spec §4.6) in the query.",
    )
}

pub fn delete_logs() -> Operation {
    manage("Delete a gateway's logs", object())
        .describe("The logs the query's filters select (all without filters).")
}

pub fn get_log() -> Operation {
    manage("Get a log", object()).path_param("id", "The log's id.")
}

pub fn patch_log() -> Operation {
    manage_with(
        "Annotate a log",
        "`{feedback?, score?, metadata?}`.",
        object(),
    )
    .path_param("id", "The log's id.")
}

pub fn log_body() -> Operation {
    manage(
        "A log's stored request or response body",
        json!({"description": "JSON bodies as JSON, others as text."}),
    )
    .path_param("id", "The log's id.")
    .path_param_schema(
        "part",
        "Which body.",
        json!({"type": "string", "enum": ["request", "response"]}),
    )
}

pub fn analytics() -> Operation {
    manage("A gateway's analytics", object())
}

pub fn provider_url() -> Operation {
    manage(
        "The URL of a provider through the gateway",
        json!({"type": "string"}),
    )
    .path_param("provider", "A provider slug, or `universal`.")
}

pub fn list_datasets() -> Operation {
    paged(manage("List datasets", list()))
}

pub fn create_dataset() -> Operation {
    manage_with(
        "Create a dataset",
        "`{name, enable, filters}`: a saved log filter.",
        object(),
    )
}

pub fn get_dataset() -> Operation {
    manage("Get a dataset", object()).path_param("id", "The dataset's id.")
}

pub fn update_dataset() -> Operation {
    manage_with("Update a dataset", "`{name, enable, filters}`.", object())
        .path_param("id", "The dataset's id.")
}

pub fn delete_dataset() -> Operation {
    manage("Delete a dataset", object()).path_param("id", "The dataset's id.")
}

pub fn list_evaluations() -> Operation {
    paged(manage("List evaluations", list()))
}

pub fn create_evaluation() -> Operation {
    manage_with(
        "Create an evaluation",
        "`{name, dataset_ids, evaluation_type_ids}`.",
        object(),
    )
}

pub fn get_evaluation() -> Operation {
    manage("Get an evaluation", object()).path_param("id", "The evaluation's id.")
}

pub fn delete_evaluation() -> Operation {
    manage("Delete an evaluation", object()).path_param("id", "The evaluation's id.")
}

pub fn evaluation_types() -> Operation {
    paged(manage("List evaluation types", list()))
}

pub fn list_routes() -> Operation {
    paged(manage("List dynamic routes", object()))
}

pub fn create_route() -> Operation {
    manage_with(
        "Create a dynamic route",
        "`{name, elements}`: the route's graph (spec §4.13).",
        object(),
    )
}

pub fn get_route() -> Operation {
    manage("Get a dynamic route", object()).path_param("id", "The route's id.")
}

pub fn update_route() -> Operation {
    manage_with("Rename a dynamic route", "`{name}`.", object()).path_param("id", "The route's id.")
}

pub fn delete_route() -> Operation {
    manage("Delete a dynamic route", object()).path_param("id", "The route's id.")
}

pub fn list_versions() -> Operation {
    paged(manage("List a route's versions", object())).path_param("id", "The route's id.")
}

pub fn create_version() -> Operation {
    manage_with("Create a route version", "`{elements}`.", object())
        .path_param("id", "The route's id.")
}

pub fn get_version() -> Operation {
    manage("Get a route version", object())
        .path_param("id", "The route's id.")
        .path_param("version", "The version's id.")
}

pub fn list_deployments() -> Operation {
    paged(manage("List a route's deployments", object())).path_param("id", "The route's id.")
}

pub fn create_deployment() -> Operation {
    manage_with("Deploy a route version", "`{version_id}`.", object())
        .path_param("id", "The route's id.")
}

pub fn billing(summary: &str) -> Operation {
    manage(summary, json!({}))
        .describe("AI Gateway's unified billing, kept locally: Kiln charges no one (spec §4.15).")
}

pub fn billing_with(summary: &str, body: &str) -> Operation {
    manage_with(summary, body, json!({}))
        .describe("AI Gateway's unified billing, kept locally: Kiln charges no one (spec §4.15).")
}

pub fn list_stored_keys() -> Operation {
    paged(manage("List stored provider keys", list())).describe("Never the secrets themselves.")
}

pub fn create_stored_key() -> Operation {
    manage_with(
        "Store a provider key",
        "`{provider_slug, secret, alias?, default?, rate_limit?, rate_limit_period?}`.",
        object(),
    )
}

pub fn delete_stored_key() -> Operation {
    manage("Delete a stored provider key", object()).path_param("id", "The key's id.")
}

pub fn list_providers() -> Operation {
    paged(manage("List custom providers", list()))
}

pub fn create_provider() -> Operation {
    manage_with(
        "Create a custom provider",
        "`{name, slug, base_url, …}`; the base URL must pass the egress policy.",
        object(),
    )
}

pub fn get_provider() -> Operation {
    manage("Get a custom provider", object()).path_param("id", "The provider's id.")
}

pub fn update_provider() -> Operation {
    manage_with(
        "Update a custom provider",
        "The provider's settings, as on creation.",
        object(),
    )
    .path_param("id", "The provider's id.")
}

pub fn delete_provider() -> Operation {
    manage("Delete a custom provider", object()).path_param("id", "The provider's id.")
}
