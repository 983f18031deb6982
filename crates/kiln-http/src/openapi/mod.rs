//! The OpenAPI 3.1 document of every route Kiln serves, at `GET /openapi.json`.
//!
//! Routes are registered through [`ApiRouter`], which takes each route's [`Operation`] with it
//! and records (method, full path, operation) as it adds the route to the axum router, nesting
//! prefixes included. The document is built from that record, so it cannot name a route the
//! router lacks or miss one it has. The descriptions sit beside the routes they describe
//! (`vectorize/api_doc.rs`, `gateway/api_doc.rs`, `openai/api_doc.rs`, and here for the
//! Workers AI, account and Kiln routes).

mod components;
pub(crate) mod kiln_doc;
mod operation;
mod router;
pub(crate) mod run_schemas;
pub(crate) mod workers_ai;

use std::sync::{Arc, OnceLock};

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

pub use components::schema_ref;
pub use operation::{non_empty_string, success_envelope, Operation, Surface, Tag};
pub use router::{ApiRouter, DocumentedRoute};

/// The route table of the first router this process built, as (METHOD, OpenAPI path) pairs:
/// what the document must describe, exactly.
static ROUTE_TABLE: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// (METHOD, OpenAPI path) of every route the router registered, in registration order. Empty
/// before [`crate::router`] has run in this process.
pub fn route_table() -> Vec<(String, String)> {
    ROUTE_TABLE.get().cloned().unwrap_or_default()
}

/// The document one router serves: its routes are known once the router is assembled (after
/// the `/openapi.json` route itself was added), and the JSON is built on the first request.
#[derive(Default)]
pub struct ServedDocument {
    routes: OnceLock<Vec<DocumentedRoute>>,
    json: OnceLock<axum::body::Bytes>,
}

impl ServedDocument {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records the assembled router's routes (the first call wins).
    pub fn set_routes(&self, routes: Vec<DocumentedRoute>) {
        let table = routes
            .iter()
            .map(|route| (route.method.to_string(), route.openapi_path()))
            .collect();
        let _ = ROUTE_TABLE.set(table);
        let _ = self.routes.set(routes);
    }

    /// `GET /openapi.json`.
    pub fn respond(&self) -> Response {
        let bytes = self.json.get_or_init(|| {
            let routes = self.routes.get().map(Vec::as_slice).unwrap_or_default();
            let document = document(routes);
            serde_json::to_vec(&document).unwrap_or_default().into()
        });
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes.clone(),
        )
            .into_response()
    }
}

/// The OpenAPI 3.1 document of `routes`.
pub fn document(routes: &[DocumentedRoute]) -> Value {
    let mut paths = Map::new();
    for route in routes {
        let method = route.method.as_str().to_ascii_lowercase();
        let item = paths
            .entry(route.openapi_path())
            .or_insert_with(|| json!({}));
        item[method.as_str()] = route.operation.to_json(&method, &route.path);
    }
    let mut schemas = components::shared_schemas();
    schemas.extend(run_schemas::component_schemas());
    let tags: Vec<Value> = Tag::ALL
        .iter()
        .map(|tag| json!({"name": tag.name(), "description": tag.description()}))
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Kiln",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Self-hosted, Workers-AI-compatible inference. Generated from the router: every \
                 route Kiln serves is here.\n\nWorkers AI error codes (`errors[].code`):\n\n{}\n\
                 Requests with `cf-aig-gateway-id` or `x-kiln-vectorize-index` headers are \
                 routed by the header to the gateway and Vectorize binding routes below.",
                components::error_table_markdown()
            ),
            "license": {"name": env!("CARGO_PKG_LICENSE")},
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Kiln API token (`kiln tokens create`), required when the \
                                    server runs with `--auth tokens`.",
                }
            }
        },
    })
}
