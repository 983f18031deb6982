//! AI Gateway objects over HTTP: create, list, get, update, delete, with their errors.

mod common;

use common::*;
use serde_json::{json, Value};

async fn send(method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, url(path)).bearer_auth("sk-test");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn gateway_crud_over_http() {
    // Gateways persist in the data directory: a fresh account per run, emptied at the end.
    let account = format!("gw-test-{}", uuid::Uuid::new_v4().simple());
    let base = format!("/client/v4/accounts/{account}/ai-gateway/gateways");
    use reqwest::Method;

    let (status, body) = send(
        Method::POST,
        &base,
        Some(json!({"id": "main", "cache_ttl": 600,
        "collect_logs": true, "rate_limiting_limit": 100, "rate_limiting_interval": 60})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    let gateway = body["result"].clone();
    assert_eq!(gateway["id"], "main");
    assert_eq!(gateway["cache_ttl"], 600);
    assert_eq!(gateway["rate_limiting_technique"], "fixed");
    assert!(gateway["created_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    let (status, body) = send(Method::POST, &base, Some(json!({"id": "main"}))).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(assert_error_envelope(&body).0, 1003);
    let (status, body) = send(
        Method::POST,
        &base,
        Some(json!({"id": "x", "retry_delay": 9000})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(assert_error_envelope(&body).1.contains("retry_delay"));

    let (status, body) = send(Method::GET, &format!("{base}/main"), None).await;
    assert_eq!((status, &body["result"]), (200, &gateway), "{body}");
    let (status, body) = send(Method::GET, &base, None).await;
    assert_eq!(
        (status, &body["result"]),
        (200, &json!([gateway])),
        "{body}"
    );

    let (status, body) = send(
        Method::PUT,
        &format!("{base}/main"),
        Some(json!({"authentication": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["authentication"], true);
    assert!(body["result"]["cache_ttl"].is_null());

    let (status, body) = send(Method::DELETE, &format!("{base}/main"), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(Method::GET, &format!("{base}/main"), None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(assert_error_envelope(&body).0, 1004);
    let (_, body) = send(Method::GET, &base, None).await;
    assert_eq!(body["result"], json!([]));
}

/// Guardrails, DLP and spend limits are not enforced by Kiln: set to act, they are refused by
/// name on create and update, never stored and silently ignored.
#[tokio::test]
async fn protection_kiln_does_not_give_is_refused_by_name() {
    use reqwest::Method;
    let account = format!("gw-guard-{}", uuid::Uuid::new_v4().simple());
    let base = format!("/client/v4/accounts/{account}/ai-gateway/gateways");
    let acting = [
        (
            "guardrails",
            json!({"prompt": {"S1": "BLOCK"}, "response": {}}),
        ),
        (
            "dlp",
            json!({"enabled": true, "action": "BLOCK", "profiles": ["pii"]}),
        ),
        (
            "spend_limits",
            json!({"enabled": true, "rules": [{"limit": 5}]}),
        ),
    ];
    for (field, setting) in &acting {
        let (status, body) = send(
            Method::POST,
            &base,
            Some(json!({"id": "guarded", *field: setting})),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let (_, message) = assert_error_envelope(&body);
        assert!(message.contains(&format!("'{field}'")), "{message}");
    }
    let (status, body) = send(
        Method::POST,
        &base,
        Some(json!({"id": "guarded", "dlp": {"enabled": false}, "guardrails": null})),
    )
    .await;
    assert_eq!(status, 200, "switched off is accepted: {body}");
    for (field, setting) in &acting {
        let (status, body) = send(
            Method::PUT,
            &format!("{base}/guarded"),
            Some(json!({*field: setting})),
        )
        .await;
        assert_eq!(status, 400, "update with {field}: {body}");
    }
    let (status, _) = send(Method::DELETE, &format!("{base}/guarded"), None).await;
    assert_eq!(status, 200);
}

/// Cloudflare's Terraform and Pulumi examples send `0` for "no rate limit" (issue #17).
#[tokio::test]
async fn a_zero_rate_limit_means_none_and_the_gateway_names_its_urls() {
    use reqwest::Method;
    let account = format!("gw-zero-{}", uuid::Uuid::new_v4().simple());
    let base = format!("/client/v4/accounts/{account}/ai-gateway/gateways");
    let zero = json!({"rate_limiting_limit": 0, "rate_limiting_interval": 0});
    let mut created = zero.clone();
    created["id"] = json!("zero");
    let (status, body) = send(Method::POST, &base, Some(created)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["rate_limiting_limit"], 0, "{body}");
    let (status, body) = send(Method::PUT, &format!("{base}/zero"), Some(zero)).await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..3 {
        let response = client()
            .post(url(&format!(
                "/v1/{account}/zero/workers-ai/@cf/baai/bge-small-en-v1.5"
            )))
            .json(&json!({"text": "not limited"}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
    }
    // The gateway's URL per provider, on the account path the SDKs call (spec §4.12).
    let (status, body) = send(Method::GET, &format!("{base}/zero/url/workers-ai"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"],
        url(&format!("/v1/{account}/zero/workers-ai")),
        "{body}"
    );
    let (status, body) = send(Method::GET, &format!("{base}/zero/url/universal"), None).await;
    assert_eq!(
        body["result"],
        url(&format!("/v1/{account}/zero/")),
        "{status} {body}"
    );
    let (status, _) = send(Method::DELETE, &format!("{base}/zero"), None).await;
    assert_eq!(status, 200);
    let (status, body) = send(Method::GET, &format!("{base}/zero/url/workers-ai"), None).await;
    assert_eq!(status, 404, "{body}");
}

/// The SDKs page through lists with `?page=N` until a page comes back short (issue #17): every
/// item once, and the loop ends.
#[tokio::test]
async fn gateway_and_provider_lists_page_like_cloudflares() {
    use reqwest::Method;
    let account = format!("gw-pages-{}", uuid::Uuid::new_v4().simple());
    let gateways = format!("/client/v4/accounts/{account}/ai-gateway/gateways");
    let providers = format!("/client/v4/accounts/{account}/ai-gateway/custom-providers");
    // An account holds at most 20 gateways.
    for n in 0..12 {
        let (status, body) = send(
            Method::POST,
            &gateways,
            Some(json!({"id": format!("g{n:02}")})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    for n in 0..7 {
        let provider = json!({"name": format!("p{n}"), "slug": format!("p{n}"),
                              "base_url": "http://127.0.0.1:9"});
        let (status, body) = send(Method::POST, &providers, Some(provider)).await;
        assert_eq!(status, 200, "{body}");
    }
    for (list, total, per_page, key) in [(&gateways, 12, 5, "id"), (&providers, 7, 3, "slug")] {
        let mut seen = Vec::new();
        let mut page = 1;
        loop {
            let (status, body) = send(
                Method::GET,
                &format!("{list}?page={page}&per_page={per_page}"),
                None,
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let items = body["result"].as_array().expect("a list").clone();
            let info = &body["result_info"];
            assert_eq!(info["total_count"], total, "{body}");
            assert_eq!(info["count"], items.len(), "{body}");
            assert_eq!(info["page"], page);
            seen.extend(
                items
                    .iter()
                    .map(|item| item[key].as_str().unwrap_or("").to_owned()),
            );
            if items.len() < per_page {
                break;
            }
            page += 1;
            assert!(page <= 10, "the page loop does not end: {body}");
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), total, "{list}: {seen:?}");
    }
    let (status, body) = send(Method::GET, &format!("{gateways}?per_page=0"), None).await;
    assert_eq!(status, 400, "{body}");
    let (_, body) = send(Method::GET, &gateways, None).await;
    assert_eq!(
        body["result_info"]["per_page"], 20,
        "the default page: {body}"
    );
    assert_eq!(body["result"].as_array().map(Vec::len), Some(12));
}
