//! Every route the wire reference lists (`shared/spec/workers-ai.md` §1, §2.3, §4–§6) exists on
//! the paths real clients call: the router answers it with a handler (an error about the input
//! or a missing object is fine), never with "Could not route" or "Method not allowed".
//!
//! The lists below are the spec's route tables, transcribed; `NOT_SERVED` holds the routes Kiln
//! deliberately lacks, each with its reason (also in the README's "Not served" list), and the
//! test checks those are still missing so the list stays true.

mod common;

use common::*;
use reqwest::Method;
use serde_json::Value;

/// `{a}` is the account, `{gw}` a gateway that exists, `{idx}` an index that exists.
const ACCOUNT_ROUTES: &[(&str, &str, &str)] = &[
    // §1.2, §1.6
    ("POST", "/ai/run/@cf/baai/bge-small-en-v1.5", "§1.2"),
    // §1.5
    ("GET", "/ai/models/search", "§1.5"),
    (
        "GET",
        "/ai/models/schema?model=@cf/baai/bge-small-en-v1.5",
        "§1.5",
    ),
    ("GET", "/ai/tasks/search", "§1.5"),
    ("GET", "/ai/authors/search", "§1.5"),
    ("POST", "/ai/finetunes", "§1.5, §6"),
    ("GET", "/ai/finetunes", "§1.5, §6"),
    ("POST", "/ai/finetunes/missing/finetune-assets", "§1.5, §6"),
    ("GET", "/ai/finetunes/public", "§1.5, §6"),
    // §1.7
    ("POST", "/ai/v1/chat/completions", "§1.7"),
    ("POST", "/ai/v1/embeddings", "§1.7"),
    ("POST", "/ai/v1/responses", "§1.7"),
    ("GET", "/ai/v1/models", "§1.7"),
    // §4.6, §4.7, §4.12
    ("GET", "/ai-gateway/gateways", "§4.12"),
    ("POST", "/ai-gateway/gateways", "§4.12"),
    ("GET", "/ai-gateway/gateways/{gw}", "§4.12"),
    ("PUT", "/ai-gateway/gateways/{gw}", "§4.12"),
    ("DELETE", "/ai-gateway/gateways/missing-gateway", "§4.12"),
    ("GET", "/ai-gateway/gateways/{gw}/logs", "§4.6"),
    ("DELETE", "/ai-gateway/gateways/{gw}/logs", "§4.6"),
    ("GET", "/ai-gateway/gateways/{gw}/logs/missing", "§4.6"),
    ("PATCH", "/ai-gateway/gateways/{gw}/logs/missing", "§4.6"),
    (
        "GET",
        "/ai-gateway/gateways/{gw}/logs/missing/request",
        "§4.6",
    ),
    (
        "GET",
        "/ai-gateway/gateways/{gw}/logs/missing/response",
        "§4.6",
    ),
    ("GET", "/ai-gateway/gateways/{gw}/datasets", "§4.7"),
    ("POST", "/ai-gateway/gateways/{gw}/datasets", "§4.7"),
    ("GET", "/ai-gateway/gateways/{gw}/datasets/missing", "§4.7"),
    ("PUT", "/ai-gateway/gateways/{gw}/datasets/missing", "§4.7"),
    (
        "DELETE",
        "/ai-gateway/gateways/{gw}/datasets/missing",
        "§4.7",
    ),
    ("GET", "/ai-gateway/gateways/{gw}/evaluations", "§4.7"),
    ("POST", "/ai-gateway/gateways/{gw}/evaluations", "§4.7"),
    (
        "GET",
        "/ai-gateway/gateways/{gw}/evaluations/missing",
        "§4.7",
    ),
    (
        "DELETE",
        "/ai-gateway/gateways/{gw}/evaluations/missing",
        "§4.7",
    ),
    ("GET", "/ai-gateway/evaluation-types", "§4.7"),
    ("GET", "/ai-gateway/gateways/{gw}/routes", "§4.10"),
    ("POST", "/ai-gateway/gateways/{gw}/routes", "§4.10"),
    ("GET", "/ai-gateway/gateways/{gw}/routes/missing", "§4.10"),
    ("PATCH", "/ai-gateway/gateways/{gw}/routes/missing", "§4.10"),
    (
        "DELETE",
        "/ai-gateway/gateways/{gw}/routes/missing",
        "§4.10",
    ),
    (
        "GET",
        "/ai-gateway/gateways/{gw}/routes/missing/versions",
        "§4.10",
    ),
    (
        "POST",
        "/ai-gateway/gateways/{gw}/routes/missing/versions",
        "§4.10",
    ),
    (
        "GET",
        "/ai-gateway/gateways/{gw}/routes/missing/versions/1",
        "§4.10",
    ),
    (
        "GET",
        "/ai-gateway/gateways/{gw}/routes/missing/deployments",
        "§4.10",
    ),
    (
        "POST",
        "/ai-gateway/gateways/{gw}/routes/missing/deployments",
        "§4.10",
    ),
    ("GET", "/ai-gateway/billing/credit-balance", "§4.12"),
    ("GET", "/ai-gateway/billing/invoice-history", "§4.12"),
    ("GET", "/ai-gateway/billing/invoice-preview", "§4.12"),
    ("GET", "/ai-gateway/billing/usage-history", "§4.12"),
    ("POST", "/ai-gateway/billing/topup", "§4.12"),
    ("GET", "/ai-gateway/billing/topup/config", "§4.12"),
    ("GET", "/ai-gateway/billing/spending-limit", "§4.12"),
    ("POST", "/ai-gateway/billing/spending-limit", "§4.12"),
    ("GET", "/ai-gateway/gateways/{gw}/provider_configs", "§4.12"),
    (
        "POST",
        "/ai-gateway/gateways/{gw}/provider_configs",
        "§4.12",
    ),
    (
        "DELETE",
        "/ai-gateway/gateways/{gw}/provider_configs/missing",
        "§4.12",
    ),
    ("GET", "/ai-gateway/gateways/{gw}/url/workers-ai", "§4.12"),
    ("GET", "/ai-gateway/custom-providers", "§4.12"),
    ("POST", "/ai-gateway/custom-providers", "§4.12"),
    ("GET", "/ai-gateway/custom-providers/missing", "§4.12"),
    ("PUT", "/ai-gateway/custom-providers/missing", "§4.12"),
    ("DELETE", "/ai-gateway/custom-providers/missing", "§4.12"),
    // §5.6, §5.7
    ("POST", "/vectorize/v2/indexes", "§5.7"),
    ("GET", "/vectorize/v2/indexes", "§5.7"),
    ("GET", "/vectorize/v2/indexes/{idx}", "§5.7"),
    ("DELETE", "/vectorize/v2/indexes/missing-index", "§5.7"),
    ("GET", "/vectorize/v2/indexes/{idx}/info", "§5.7"),
    ("POST", "/vectorize/v2/indexes/{idx}/insert", "§5.7"),
    ("POST", "/vectorize/v2/indexes/{idx}/upsert", "§5.7"),
    ("POST", "/vectorize/v2/indexes/{idx}/query", "§5.7"),
    ("POST", "/vectorize/v2/indexes/{idx}/get_by_ids", "§5.7"),
    ("POST", "/vectorize/v2/indexes/{idx}/delete_by_ids", "§5.7"),
    ("GET", "/vectorize/v2/indexes/{idx}/list", "§5.7"),
    (
        "POST",
        "/vectorize/v2/indexes/{idx}/metadata_index/create",
        "§5.6",
    ),
    (
        "GET",
        "/vectorize/v2/indexes/{idx}/metadata_index/list",
        "§5.6",
    ),
    (
        "POST",
        "/vectorize/v2/indexes/{idx}/metadata_index/delete",
        "§5.6",
    ),
];

/// Routes outside `/accounts/{a}`: the gateway's own URLs (§4.1, at `/v1/{a}/{gw}/…` where
/// Cloudflare has `gateway.ai.cloudflare.com/v1/…`), the OpenAI base (§1.7) and the binding's
/// wire protocol (§2.3, §5.8).
const OTHER_ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/v1/{a}/{gw}", "§4.1 universal"),
    (
        "POST",
        "/v1/{a}/{gw}/workers-ai/@cf/baai/bge-small-en-v1.5",
        "§4.1",
    ),
    (
        "POST",
        "/v1/{a}/{gw}/workers-ai/run/@cf/baai/bge-small-en-v1.5",
        "§4.1",
    ),
    (
        "POST",
        "/v1/{a}/{gw}/workers-ai/v1/chat/completions",
        "§4.1",
    ),
    ("POST", "/v1/{a}/{gw}/workers-ai/v1/embeddings", "§4.1"),
    ("POST", "/v1/{a}/{gw}/compat/chat/completions", "§4.1"),
    ("GET", "/v1/{a}/{gw}/compat/v1/models", "§4.1"),
    ("POST", "/v1/chat/completions", "§1.7"),
    ("POST", "/v1/embeddings", "§1.7"),
    ("POST", "/v1/responses", "§1.7"),
    ("GET", "/v1/models", "§1.7"),
    ("POST", "/run?version=3", "§2.3"),
    ("POST", "/ai-gateway/run?version=3", "§2.3"),
    ("GET", "/ai-api/models/search", "§2.3"),
    ("GET", "/ai-gateway/gateways/{gw}/url/workers-ai", "§2.3"),
    ("GET", "/ai-gateway/gateways/{gw}/logs/missing", "§2.3"),
    ("PATCH", "/ai-gateway/gateways/{gw}/logs/missing", "§2.3"),
    ("POST", "/ai-gateway/universal/run/{gw}", "§2.3"),
    ("GET", "/vectorize-binding/{a}/{idx}/info", "§5.8"),
    ("POST", "/vectorize-binding/{a}/{idx}/query", "§5.8"),
    ("POST", "/vectorize-binding/{a}/{idx}/insert", "§5.8"),
    ("POST", "/vectorize-binding/{a}/{idx}/upsert", "§5.8"),
    ("POST", "/vectorize-binding/{a}/{idx}/getByIds", "§5.8"),
    ("POST", "/vectorize-binding/{a}/{idx}/deleteByIds", "§5.8"),
];

/// Listed by the spec, not served, and why (the README's "Not served" says the same).
const NOT_SERVED: &[(&str, &str, &str)] = &[
    (
        "POST",
        "/ai/tomarkdown",
        "§1.5 marks document conversion out of scope",
    ),
    (
        "GET",
        "/ai/tomarkdown/supported",
        "§1.5 marks document conversion out of scope",
    ),
];

const GATEWAY: &str = "spec-routes";
const INDEX: &str = "spec-routes";

fn fill(path: &str) -> String {
    path.replace("{a}", ACCOUNT)
        .replace("{gw}", GATEWAY)
        .replace("{idx}", INDEX)
}

/// `Some(reason)` when the router itself refused the route.
async fn unrouted(method: &str, path: &str) -> Option<String> {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let response = client()
        .request(method, url(path))
        .header("content-type", "application/json")
        // An empty JSON object: enough for the handler to answer, too little to do real work.
        .body("{}")
        .send()
        .await
        .expect("answered");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    answered_by_router_fallback(status, &body).then(|| format!("{status} {body}"))
}

async fn create_fixtures() {
    let base = format!("/client/v4/accounts/{ACCOUNT}");
    let (status, _, body) = post_json(
        &url(&format!("{base}/ai-gateway/gateways")),
        &serde_json::json!({"id": GATEWAY}),
    )
    .await;
    assert!(status == 200 || status == 409 || status == 400, "{body}");
    let (status, _, body) = post_json(
        &url(&format!("{base}/vectorize/v2/indexes")),
        &serde_json::json!({"name": INDEX, "config": {"dimensions": 3, "metric": "cosine"}}),
    )
    .await;
    assert!(status == 201 || status == 409 || status == 400, "{body}");
}

#[tokio::test]
async fn every_spec_route_is_routed() {
    create_fixtures().await;
    let mut missing = Vec::new();
    for prefix in [
        format!("/client/v4/accounts/{ACCOUNT}"),
        format!("/accounts/{ACCOUNT}"),
    ] {
        for (method, path, section) in ACCOUNT_ROUTES {
            let path = format!("{prefix}{}", fill(path));
            if let Some(why) = unrouted(method, &path).await {
                missing.push(format!("{section} {method} {path}: {why}"));
            }
        }
    }
    for (method, path, section) in OTHER_ROUTES {
        let path = fill(path);
        if let Some(why) = unrouted(method, &path).await {
            missing.push(format!("{section} {method} {path}: {why}"));
        }
    }
    assert!(
        missing.is_empty(),
        "missing routes:\n{}",
        missing.join("\n")
    );
}

#[tokio::test]
async fn the_not_served_list_is_true() {
    create_fixtures().await;
    for (method, path, reason) in NOT_SERVED {
        let path = format!("/client/v4/accounts/{ACCOUNT}{}", fill(path));
        assert!(
            unrouted(method, &path).await.is_some(),
            "{method} {path} is served now; drop it from NOT_SERVED ({reason}) and the README"
        );
    }
}
