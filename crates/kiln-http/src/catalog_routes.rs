//! Catalog endpoints: `/ai/models/search`, `/ai/models/schema`, `/ai/tasks/search`, `/ai/authors/search`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use kiln_catalog::SearchQuery;
use kiln_core::{ErrorKind, KilnError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::envelope::{success, ApiError};
use crate::SharedState;

pub async fn search_models(
    State(state): State<SharedState>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => {
            return ApiError::from(KilnError::bad_input(rejection.body_text())).into_response()
        }
    };
    let page = state.catalog.search(&query);
    let results: Vec<Value> = page
        .results
        .iter()
        .map(|entry| {
            let mut object = entry.to_search_object();
            let served_by = state
                .registry
                .resolve(&entry.name, Some(entry.task))
                .map(|(name, _)| name);
            object["kiln"] = json!({"installed": served_by.is_some(), "served_by": served_by});
            // The width this server's vectors for the id have, not Workers AI's model's: what
            // an index for them must be made with.
            let local_dimensions = served_by
                .as_deref()
                .and_then(|name| state.registry.output_dimensions(name));
            if let Some(dimensions) = local_dimensions {
                set_output_dimensions(&mut object, dimensions);
            }
            object
        })
        .collect();
    crate::paging::ResultInfo {
        page: page.page.into(),
        per_page: page.per_page.into(),
        count: page.count.into(),
        total_count: page.total_count.into(),
    }
    .envelope(Value::Array(results))
}

/// Sets `output_dimensions` among a search object's properties (`[{property_id, value}]`,
/// values as strings), keeping the catalog's value in `kiln.catalog_output_dimensions`.
fn set_output_dimensions(object: &mut Value, dimensions: usize) {
    let Some(properties) = object.get_mut("properties").and_then(Value::as_array_mut) else {
        return;
    };
    let existing = properties
        .iter_mut()
        .find(|property| property["property_id"] == "output_dimensions");
    let catalog = match existing {
        Some(property) => {
            let catalog = property["value"].clone();
            property["value"] = json!(dimensions.to_string());
            catalog
        }
        None => {
            properties.push(json!({"property_id": "output_dimensions",
                                   "value": dimensions.to_string()}));
            Value::Null
        }
    };
    object["kiln"]["output_dimensions"] = json!(dimensions);
    object["kiln"]["catalog_output_dimensions"] = catalog;
}

#[derive(Deserialize)]
pub struct SchemaQuery {
    model: Option<String>,
}

pub async fn model_schema(
    State(state): State<SharedState>,
    query: Result<Query<SchemaQuery>, QueryRejection>,
) -> Response {
    let model = match query {
        Ok(Query(SchemaQuery { model: Some(model) })) if !model.is_empty() => model,
        _ => {
            let error = KilnError::new(
                ErrorKind::IncompleteRequest,
                "Request is missing headers or body: query parameter 'model' is required",
            );
            return ApiError::from(error).into_response();
        }
    };
    match state.catalog.get(&model) {
        Some(entry) => success(kiln_catalog::schema_for(entry)).into_response(),
        None => ApiError::from(KilnError::no_such_model(&model)).into_response(),
    }
}

pub async fn search_tasks(State(state): State<SharedState>) -> Response {
    success(Value::Array(state.catalog.tasks())).into_response()
}

pub async fn search_authors(State(state): State<SharedState>) -> Response {
    success(Value::Array(state.catalog.authors())).into_response()
}
