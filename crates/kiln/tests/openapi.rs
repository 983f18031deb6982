//! `GET /openapi.json` (issue #20): the document describes exactly the routes the router
//! registered (kiln-http records them as it adds them), it holds together (every `$ref`
//! resolves, every path parameter is declared, operation ids are unique), and every operation
//! it lists is really routed on a live server: probed with harmless values, the answer is the
//! handler's, never the router's "no such route" (404 / 7000) or "method not allowed" (405).

mod common;

use std::collections::BTreeSet;

use common::*;
use reqwest::Method;
use serde_json::Value;

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

async fn fetch_document(base: &str) -> Value {
    let response = client()
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    response.json().await.expect("JSON document")
}

/// (METHOD, path) of every operation in the document.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                found.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    found
}

/// The value a JSON pointer (`#/components/schemas/X`) names, if any.
fn resolve<'a>(document: &'a Value, reference: &str) -> Option<&'a Value> {
    document.pointer(reference.strip_prefix('#')?)
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("$ref", Value::String(reference)) => refs.push(reference.clone()),
                    _ => collect_refs(item, refs),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, refs)),
        _ => {}
    }
}

fn template_params(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect()
}

/// Structural checks that need no OpenAPI tooling; `scripts/api-check` runs the full validator.
fn structural_problems(document: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if document["openapi"] != "3.1.0" {
        problems.push(format!("openapi is {}", document["openapi"]));
    }
    let mut refs = Vec::new();
    collect_refs(document, &mut refs);
    for reference in refs {
        if resolve(document, &reference).is_none() {
            problems.push(format!("unresolved $ref {reference}"));
        }
    }
    let tags: BTreeSet<&str> = document["tags"]
        .as_array()
        .map(|tags| tags.iter().filter_map(|tag| tag["name"].as_str()).collect())
        .unwrap_or_default();
    let mut operation_ids = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let declared: BTreeSet<String> = operation["parameters"]
                .as_array()
                .map(|params| {
                    params
                        .iter()
                        .filter(|param| param["in"] == "path")
                        .filter_map(|param| param["name"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if declared != template_params(path) {
                problems.push(format!("{method} {path}: path parameters {declared:?}"));
            }
            let id = operation["operationId"].as_str().unwrap_or_default();
            if id.is_empty() || !operation_ids.insert(id.to_owned()) {
                problems.push(format!(
                    "{method} {path}: operationId {id:?} missing or reused"
                ));
            }
            let responses = operation["responses"].as_object();
            if responses.is_none_or(|responses| responses.is_empty()) {
                problems.push(format!("{method} {path}: no responses"));
            }
            for response in responses.into_iter().flat_map(|r| r.values()) {
                if !response["description"].is_string() {
                    problems.push(format!("{method} {path}: a response without description"));
                }
            }
            let tagged = operation["tags"].as_array().is_some_and(|own| {
                own.iter()
                    .all(|t| t.as_str().is_some_and(|t| tags.contains(t)))
            });
            if !tagged {
                problems.push(format!("{method} {path}: undeclared tag"));
            }
        }
    }
    problems
}

/// Harmless values for path parameters: objects that do not exist (so nothing is changed),
/// and for the few parameters the router itself matches on, a value it routes.
fn fill(path: &str) -> String {
    let mut filled = String::new();
    for segment in path.split('/').skip(1) {
        filled.push('/');
        let value = match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            None => segment,
            Some("account_id") => ACCOUNT,
            // `…/logs/{id}/{part}` answers "no such route" for other parts.
            Some("part") => "request",
            Some("op") => "info",
            Some("file") => "index.html",
            Some("model") => "openapi-probe/no-such-model",
            Some("path") => "workers-ai/openapi-probe",
            Some(_) => "openapi-probe",
        };
        filled.push_str(value);
    }
    if filled.is_empty() {
        filled.push('/');
    }
    filled
}

/// `Some(reason)` when the router, not a handler, answered `method` on `path`.
async fn unrouted(base: &str, method: &str, path: &str) -> Option<String> {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client().request(method.clone(), format!("{base}{path}"));
    if method != Method::GET && method != Method::DELETE {
        // An empty JSON object: enough for a handler to answer, too little to do real work.
        request = request
            .header("content-type", "application/json")
            .body("{}");
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return Some(format!("no answer: {error}")),
    };
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if answered_by_router_fallback(status, &body) || status >= 500 {
        Some(format!("{status} {body}"))
    } else {
        None
    }
}

#[tokio::test]
async fn the_document_is_the_route_table_and_every_route_is_served() {
    let base = format!("http://{}", server());
    let document = fetch_document(&base).await;

    let table: BTreeSet<(String, String)> = kiln_http::openapi::route_table().into_iter().collect();
    assert!(!table.is_empty(), "the router recorded no routes");
    let documented = operations(&document);
    let undocumented: Vec<_> = table.difference(&documented).collect();
    let unrecorded: Vec<_> = documented.difference(&table).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    assert!(
        unrecorded.is_empty(),
        "documented but not routed: {unrecorded:?}"
    );
    assert!(table.contains(&("GET".to_owned(), "/openapi.json".to_owned())));
    assert!(table.contains(&(
        "POST".to_owned(),
        "/client/v4/accounts/{account_id}/ai/run/{model}".to_owned()
    )));

    let problems = structural_problems(&document);
    assert!(problems.is_empty(), "{problems:#?}");

    let mut refused = Vec::new();
    for (method, path) in &documented {
        let filled = fill(path);
        if let Some(reason) = unrouted(&base, method, &filled).await {
            refused.push(format!("{method} {filled}: {reason}"));
        }
    }
    assert!(refused.is_empty(), "not routed: {refused:#?}");
}

#[tokio::test]
async fn errors_come_from_the_error_table() {
    let base = format!("http://{}", server());
    let document = fetch_document(&base).await;
    let codes: BTreeSet<u64> = document["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("error codes")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    for row in kiln_core::error::ERROR_TABLE {
        assert!(codes.contains(&u64::from(row.code)), "{}", row.code);
    }
    // A run's body is one of the catalog's input schemas, by reference.
    let run = &document["paths"]["/accounts/{account_id}/ai/run/{model}"]["post"];
    let inputs = &run["requestBody"]["content"]["application/json"]["schema"]["anyOf"];
    assert!(
        inputs.as_array().is_some_and(|inputs| inputs.len() > 20),
        "{run}"
    );
    assert!(
        resolve(&document, "#/components/schemas/RunInput.TextGeneration").is_some(),
        "the catalog's schemas are components"
    );
}
