//! Stored provider keys (BYOK, spec §4.2, `…/provider_configs`): a gateway sends its stored key
//! to a provider when an authenticated request brings none, picks it by `cf-aig-byok-alias`,
//! holds each key to its own rate limit, and never shows a key back.

use serde_json::json;

use super::providers::create_provider;
use super::*;
use crate::common::upstream::Upstream;

const DEFAULT_KEY: &str = "sk-stored-default-0123456789";
const SECOND_KEY: &str = "sk-stored-second-9876543210";

/// POSTs a chat body to `custom-{slug}/chat/completions` through `gateway` with exactly
/// `headers` (no Kiln token unless one is listed).
async fn call(gateway: &Gateway, slug: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = client()
        .post(gateway.url(&format!("custom-{slug}/chat/completions")))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

async fn store_key(gateway: &Gateway, body: Value) -> (u16, Value) {
    let response = client()
        .post(gateway.api("/provider_configs"))
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

fn last_authorization(upstream: &Upstream) -> Option<String> {
    let requests = upstream.requests();
    let last = requests.last()?;
    last.get("authorization")
        .map(|v| v.to_str().expect("text").to_owned())
}

#[tokio::test]
async fn stored_keys_go_to_the_provider_by_alias_under_their_own_limit() {
    let upstream = Upstream::start([127, 0, 0, 1]).await;
    let gateway = Gateway::create(json!({"authentication": true})).await;
    let slug = "byok-upstream";
    create_provider(
        &gateway.account,
        slug,
        &format!("http://{}/v1", upstream.addr),
    )
    .await;
    let (status, created) = store_key(
        &gateway,
        json!({"provider_slug": format!("custom-{slug}"), "alias": "default",
               "default_config": true, "secret": DEFAULT_KEY,
               "rate_limit": 3, "rate_limit_period": 3600}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let config = &created["result"];
    assert_eq!(config["gateway_id"], gateway.id.as_str());
    assert_eq!(config["secret_preview"], "sk-****6789");
    assert_eq!(config["rate_limit"], 3);
    // A key stored under the provider's bare slug serves it too.
    let (status, second) = store_key(
        &gateway,
        json!({"provider_slug": slug, "alias": "second", "default_config": false,
               "secret": SECOND_KEY}),
    )
    .await;
    assert_eq!(status, 200, "{second}");

    let (status, listed) = gateway.get_api("/provider_configs?per_page=1").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["result"].as_array().expect("list").len(), 1);
    assert_eq!(listed["result_info"]["total_count"], 2, "{listed}");
    let (_, everything) = gateway.get_api("/provider_configs").await;
    let shown = everything.to_string();
    assert!(
        !shown.contains(DEFAULT_KEY) && !shown.contains(SECOND_KEY),
        "{shown}"
    );

    let authorized = ("cf-aig-authorization", "Bearer any-token-in-open-mode");
    let (status, body) = call(&gateway, slug, &[authorized]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        last_authorization(&upstream).as_deref(),
        Some(format!("Bearer {DEFAULT_KEY}").as_str())
    );
    let (status, body) = call(
        &gateway,
        slug,
        &[authorized, ("cf-aig-byok-alias", "second")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        last_authorization(&upstream).as_deref(),
        Some(format!("Bearer {SECOND_KEY}").as_str())
    );
    // The caller's own key wins over the stored default.
    let own = ("authorization", "Bearer caller-own-key");
    let (status, body) = call(&gateway, slug, &[authorized, own]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        last_authorization(&upstream).as_deref(),
        Some("Bearer caller-own-key")
    );
    // An alias the gateway does not hold is named.
    let (status, body) = call(&gateway, slug, &[authorized, ("cf-aig-byok-alias", "nope")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(gateway_error(&body).1.contains("\"nope\""), "{body}");

    // The default key's limit: 3 an hour; it has served 1 request.
    for _ in 0..2 {
        let (status, body) = call(&gateway, slug, &[authorized]).await;
        assert_eq!(status, 200, "{body}");
    }
    let seen = upstream.requests().len();
    let (status, body) = call(&gateway, slug, &[authorized]).await;
    assert_eq!(status, 429, "{body}");
    let (code, message) = gateway_error(&body);
    assert_eq!(code, 2003, "{message}");
    assert!(message.contains("rate limit"), "{message}");
    assert_eq!(
        upstream.requests().len(),
        seen,
        "a refused key reached the provider"
    );

    // Deleting the key: the request goes out without one.
    let id = config["id"].as_str().expect("id");
    let deleted = client()
        .delete(gateway.api(&format!("/provider_configs/{id}")))
        .send()
        .await
        .expect("sent");
    assert_eq!(deleted.status(), 200);
    let (status, body) = call(&gateway, slug, &[authorized]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(last_authorization(&upstream), None);
}

#[tokio::test]
async fn an_open_gateway_never_spends_a_stored_key_for_anonymous_callers() {
    let upstream = Upstream::start([127, 0, 0, 1]).await;
    let gateway = Gateway::create(json!({})).await;
    let slug = "byok-open";
    create_provider(
        &gateway.account,
        slug,
        &format!("http://{}/v1", upstream.addr),
    )
    .await;
    let (status, body) = store_key(
        &gateway,
        json!({"provider_slug": format!("custom-{slug}"), "alias": "default",
               "default_config": true, "secret": DEFAULT_KEY}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&gateway, slug, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(last_authorization(&upstream), None);
    let (status, body) = call(&gateway, slug, &[("cf-aig-byok-alias", "default")]).await;
    assert_eq!(status, 401, "{body}");

    // Bad bodies and a duplicate alias, in the envelope.
    for bad in [
        json!({"provider_slug": "x", "alias": "a"}),
        json!({"provider_slug": "x", "alias": "a", "secret_id": "from-a-secrets-store"}),
        json!({"provider_slug": "x", "alias": "a", "secret": "k", "rate_limit": 1}),
        json!({"provider_slug": "has space", "alias": "a", "secret": "k"}),
    ] {
        let (status, body) = store_key(&gateway, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_error_envelope(&body);
    }
    let (status, body) = store_key(
        &gateway,
        json!({"provider_slug": format!("custom-{slug}"), "alias": "default",
               "secret": "another"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let missing = client()
        .delete(gateway.api("/provider_configs/no-such-id"))
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
}
