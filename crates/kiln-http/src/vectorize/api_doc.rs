//! OpenAPI descriptions of the Vectorize routes (`account_routes` and `binding_routes`).
//! Bodies are read by hand (`kiln-vectorize` words every refusal), so they are described by
//! their fields in prose with free-form schemas.

use serde_json::{json, Value};

use crate::openapi::{Operation, Surface, Tag};

const ERRORS: [u16; 7] = [400, 401, 403, 404, 409, 413, 500];

fn rest(summary: &str) -> Operation {
    Operation::new(Tag::Vectorize, summary)
        .authenticated()
        .errors(Surface::WorkersAi, &ERRORS)
        .path_param("index", "The index's name.")
}

fn free_json(description: &str) -> Value {
    json!({
        "required": false,
        "description": description,
        "content": {"application/json": {"schema": {}}},
    })
}

fn mutation() -> Value {
    json!({"type": "object", "required": ["mutationId"],
           "properties": {"mutationId": {"type": "string"}}})
}

fn index_object() -> Value {
    json!({"type": "object", "properties": {"name": {"type": "string"}, "config": {"type": "object"}}})
}

pub fn list_indexes() -> Operation {
    Operation::new(Tag::Vectorize, "List indexes")
        .authenticated()
        .errors(Surface::WorkersAi, &ERRORS)
        .query("page", "Page number, from 1.", json!({"type": "string"}))
        .query("per_page", "Indexes per page.", json!({"type": "string"}))
        .ok_envelope(
            "The account's indexes.",
            json!({"type": "array", "items": index_object()}),
        )
}

pub fn create_index() -> Operation {
    Operation::new(Tag::Vectorize, "Create an index")
        .authenticated()
        .errors(Surface::WorkersAi, &ERRORS)
        .request_body_object(free_json(
            "`{name, description?, config: {dimensions, metric} | {preset}}`; a preset takes the \
             dimensions of the local model serving that embeddings id.",
        ))
        .ok_envelope("The index.", index_object())
}

pub fn get_index() -> Operation {
    rest("Get an index").ok_envelope("The index.", index_object())
}

pub fn delete_index() -> Operation {
    rest("Delete an index").ok_envelope("Deleted.", json!({"type": "null"}))
}

pub fn info() -> Operation {
    rest("An index's counts and last mutation").ok_envelope("The info.", json!({"type": "object"}))
}

fn vectors_body() -> Value {
    json!({
        "required": false,
        "description": "NDJSON (one vector `{id, values, metadata?, namespace?}` a line), a \
                        multipart upload's `vectors` file, or `{vectors: [...]}`.",
        "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "application/json": {"schema": {}},
            "multipart/form-data": {"schema": {"type": "object",
                "properties": {"vectors": {"type": "string", "format": "binary"}}}},
        }
    })
}

fn write(summary: &str) -> Operation {
    rest(summary)
        .query(
            "unparsable-behavior",
            "`error` (default) or `discard` for lines that do not parse.",
            json!({"type": "string"}),
        )
        .request_body_object(vectors_body())
        .ok_envelope("The mutation, applied in order.", mutation())
}

pub fn insert() -> Operation {
    write("Insert vectors (existing ids are kept)")
}

pub fn upsert() -> Operation {
    write("Upsert vectors")
}

pub fn query() -> Operation {
    rest("Query nearest vectors")
        .request_body_object(free_json(
            "`{vector, topK?, returnValues?, returnMetadata?, filter?, namespace?}`.",
        ))
        .ok_envelope(
            "The matches, best first.",
            json!({"type": "object", "properties": {"count": {"type": "integer"},
                                                    "matches": {"type": "array"}}}),
        )
}

pub fn get_by_ids() -> Operation {
    rest("Get vectors by id")
        .request_body_object(free_json("`{ids: [string]}`."))
        .ok_envelope("The vectors found.", json!({"type": "array"}))
}

pub fn delete_by_ids() -> Operation {
    rest("Delete vectors by id")
        .request_body_object(free_json("`{ids: [string]}`."))
        .ok_envelope("The mutation.", mutation())
}

pub fn list_vectors() -> Operation {
    rest("List vector ids")
        .query("count", "Ids per page.", json!({"type": "string"}))
        .query(
            "cursor",
            "Where the previous page ended.",
            json!({"type": "string"}),
        )
        .ok_envelope("A page of ids.", json!({"type": "object"}))
}

pub fn create_metadata_index() -> Operation {
    rest("Create a metadata index")
        .request_body_object(free_json("`{propertyName, indexType}`."))
        .ok_envelope("The mutation.", mutation())
}

pub fn list_metadata_indexes() -> Operation {
    rest("List metadata indexes").ok_envelope("The metadata indexes.", json!({"type": "object"}))
}

pub fn delete_metadata_index() -> Operation {
    rest("Delete a metadata index")
        .request_body_object(free_json("`{propertyName}`."))
        .ok_envelope("The mutation.", mutation())
}

/// The binding's protocol: one handler for every operation, named by `{op}`.
fn binding(summary: &str) -> Operation {
    Operation::new(Tag::Vectorize, summary)
        .describe(
            "What the Vectorize binding sends: `GET info`, `POST query`, `insert`, `upsert`, \
             `getByIds`, `deleteByIds`. The genuine binding sends `/{op}` with the index in \
             `x-kiln-vectorize-index`, mapped here. Answers are bare JSON.",
        )
        .path_param(
            "op",
            "`info`, `query`, `insert`, `upsert`, `getByIds` or `deleteByIds`.",
        )
        .path_param("index", "The index's name.")
        .ok_json("The operation's answer.", json!({}))
        .errors(Surface::VectorizeBinding, &ERRORS)
}

pub fn binding_read() -> Operation {
    binding("Vectorize binding: read (`info`)")
}

pub fn binding_write() -> Operation {
    binding("Vectorize binding: query or change vectors").request_body_object(json!({
        "required": false,
        "content": {"application/json": {"schema": {}},
                    "application/x-ndjson": {"schema": {"type": "string"}}}
    }))
}
