//! Two accounts in tokens mode (issue #16): every path from one account to the other's data —
//! the Vectorize binding (by path or by header), a custom provider pointed back at Kiln (SSRF),
//! the gateway cache, the prefix cache — is refused or yields nothing, and a caller's Kiln token
//! never reaches an upstream.

use kiln_accounts::{AccountStore, Plan, Scope};
use kiln_http::platform::AuthMode;
use reqwest::Method;
use serde_json::{json, Value};

use super::auth::{account_path, call, server};
use crate::common::upstream::Upstream;
use crate::common::{self, client, spawn_server, test_config};

const EMBEDDING_MODEL: &str = "@cf/baai/bge-base-en-v1.5";
const SECRET_ID: &str = "b-secret-vector";

/// B's index with one vector in it, written with B's token.
async fn b_index_with_a_vector() -> String {
    let s = server();
    let index = "b-private-index";
    let token = Some(s.b.token.as_str());
    let (status, body) = call(
        Method::POST,
        &account_path(&s.b.id, "/vectorize/v2/indexes"),
        token,
        Some(json!({"name": index, "config": {"dimensions": 3, "metric": "cosine"}})),
    )
    .await;
    assert!(status == 201 || status == 409 || status == 200, "{body}");
    let response = client()
        .post(format!(
            "http://{}{}",
            s.addr,
            account_path(&s.b.id, &format!("/vectorize/v2/indexes/{index}/upsert"))
        ))
        .bearer_auth(&s.b.token)
        .header("content-type", "application/x-ndjson")
        .body(format!(r#"{{"id":"{SECRET_ID}","values":[1,0,0]}}"#))
        .send()
        .await
        .expect("upsert");
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
    index.to_owned()
}

async fn binding_call(op: &str, index: &str, token: Option<&str>, body: Value) -> (u16, String) {
    let s = server();
    let mut request = client()
        .post(format!(
            "http://{}/vectorize-binding/{}/{index}/{op}",
            s.addr, s.b.id
        ))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("sent");
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}

/// The binding's `/{op}` as workerd sends it, the index (and account) in the headers its
/// config injects.
async fn header_call(
    op: &str,
    index: &str,
    account: Option<&str>,
    token: Option<&str>,
    body: Value,
) -> (u16, String) {
    let mut request = client()
        .post(format!("http://{}/{op}", server().addr))
        .header("x-kiln-vectorize-index", index)
        .json(&body);
    if let Some(account) = account {
        request = request.header("x-kiln-vectorize-account", account);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("sent");
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}

/// B's vector's ids as `getByIds` answers them to B, polling until applied.
async fn b_sees_its_vector(index: &str) -> bool {
    let token = server().b.token.clone();
    for _ in 0..100 {
        let (status, body) =
            binding_call("getByIds", index, Some(&token), json!({"ids": [SECRET_ID]})).await;
        assert_eq!(status, 200, "{body}");
        if body.contains(SECRET_ID) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// Creates (or finds) A's object at `rest` with A's token.
async fn a_creates(rest: &str, body: Value) {
    let s = server();
    let (status, answer) = call(
        Method::POST,
        &account_path(&s.a.id, rest),
        Some(&s.a.token),
        Some(body),
    )
    .await;
    assert!(status == 200 || status == 409, "{answer}");
}

/// A's gateway `gateway` with the custom provider `custom-{slug}` at `base_url`.
async fn a_gateway_with_provider(gateway: &str, slug: &str, base_url: String) {
    a_creates("/ai-gateway/gateways", json!({"id": gateway})).await;
    a_creates(
        "/ai-gateway/custom-providers",
        json!({"name": slug, "slug": slug, "base_url": base_url}),
    )
    .await;
}

#[tokio::test]
async fn b_vectors_are_out_of_reach_through_the_binding_and_through_a_provider() {
    let s = server();
    let index = b_index_with_a_vector().await;
    assert!(b_sees_its_vector(&index).await, "B reads its own vector");

    let ids = json!({"ids": [SECRET_ID]});
    let (status, body) = binding_call("getByIds", &index, None, ids.clone()).await;
    assert_eq!(status, 401, "no token, from loopback: {body}");
    let (status, body) = binding_call("getByIds", &index, Some(&s.a.token), ids.clone()).await;
    assert_eq!(status, 403, "A's token on B's index: {body}");
    let (status, body) = binding_call("deleteByIds", &index, Some(&s.a.token), ids.clone()).await;
    assert_eq!(status, 403, "{body}");

    // The same through the headers a workerd config injects: the route's own check applies.
    let b = Some(s.b.id.as_str());
    let (status, body) = header_call("getByIds", &index, b, None, ids.clone()).await;
    assert_eq!(status, 401, "no token: {body}");
    for op in ["getByIds", "deleteByIds"] {
        let (status, body) = header_call(op, &index, b, Some(&s.a.token), ids.clone()).await;
        assert_eq!(status, 403, "{op}: A's token on B's index: {body}");
    }
    // Without the account header the index is the binding account's, which A's token is not.
    let (status, body) = header_call("getByIds", &index, None, Some(&s.a.token), ids.clone()).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = header_call("getByIds", &index, b, Some(&s.b.token), ids.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(SECRET_ID),
        "B reads its vector by header: {body}"
    );
    let (status, body) = header_call("getByIds", "../x", b, Some(&s.b.token), ids.clone()).await;
    assert_eq!(status, 400, "{body}");

    // A custom provider of A's that points at Kiln's own binding route for B's index: the
    // test config allows loopback egress, so only the binding's own check stands in the way.
    let gateway = "a-ssrf-gateway";
    let b_index = format!("http://{}/vectorize-binding/{}/{index}", s.addr, s.b.id);
    a_gateway_with_provider(gateway, "ssrf", b_index).await;
    for op in ["getByIds", "deleteByIds"] {
        let response = client()
            .post(format!(
                "http://{}/v1/{}/{gateway}/custom-ssrf/{op}",
                s.addr, s.a.id
            ))
            .bearer_auth(&s.a.token)
            .json(&ids)
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");
        assert_ne!(status, 200, "{op} through SSRF: {body}");
        assert!(!body.contains("values"), "{op}: {body}");
    }
    assert!(b_sees_its_vector(&index).await, "B's vector survived");
}

#[tokio::test]
async fn a_callers_kiln_token_never_reaches_an_upstream() {
    let s = server();
    let upstream = Upstream::start([127, 0, 0, 1]).await;
    let gateway = "a-upstream-gateway";
    a_gateway_with_provider(gateway, "rec", format!("http://{}", upstream.addr)).await;
    let response = client()
        .post(format!(
            "http://{}/v1/{}/{gateway}/custom-rec/chat",
            s.addr, s.a.id
        ))
        .bearer_auth(&s.a.token)
        .header("x-auth-key", &s.a.token)
        .header("cf-aig-authorization", format!("Bearer {}", s.a.token))
        .json(&json!({"model": "m"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let seen = upstream.requests();
    let headers = seen.last().expect("the upstream was called");
    for (name, value) in headers {
        let value = value.to_str().unwrap_or_default();
        assert!(
            !value.contains(&s.a.token),
            "the caller's Kiln token reached the upstream in {name}"
        );
    }
}

#[tokio::test]
async fn a_cached_answer_is_served_only_to_the_caller_it_was_made_for() {
    let s = server();
    let gateway = "a-cached-gateway";
    a_creates(
        "/ai-gateway/gateways",
        json!({"id": gateway, "cache_ttl": 600}),
    )
    .await;
    let ask = |token: String| async move {
        let response = client()
            .post(format!(
                "http://{}/v1/{}/{gateway}/workers-ai/{EMBEDDING_MODEL}",
                s.addr, s.a.id
            ))
            .bearer_auth(token)
            .header("cf-aig-cache-key", "one-shared-key")
            .json(&json!({"text": "a's private text"}))
            .send()
            .await
            .expect("sent");
        let cache = response
            .headers()
            .get("cf-aig-cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (response.status().as_u16(), cache)
    };
    let (status, _) = ask(s.a.token.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        ask(s.a.token.clone()).await,
        (200, "HIT".into()),
        "A's own entry"
    );
    let (status, cache) = ask(s.b.token.clone()).await;
    assert_ne!(cache, "HIT", "B was served A's cached answer");
    assert_eq!(status, 403, "B's token does not run models of account A");
}

/// `cached_tokens` of a chat completion with `prompt`, asked with `token`.
async fn cached_tokens(token: &str, prompt: &str) -> u64 {
    let (status, body) = call(
        Method::POST,
        "/v1/chat/completions",
        Some(token),
        Some(json!({
            "model": "@cf/meta/llama-3.1-8b-instruct",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 1,
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("cached_tokens")
}

#[tokio::test]
async fn the_prefix_cache_never_reveals_another_accounts_prompt() {
    let s = server();
    let prompt = format!(
        "Account A's confidential plan {}: {}",
        uuid::Uuid::new_v4(),
        "merge the two divisions and keep it quiet until the board meets. ".repeat(6)
    );
    cached_tokens(&s.a.token, &prompt).await;
    assert!(
        cached_tokens(&s.a.token, &prompt).await > 0,
        "A's own repeat reuses A's cache"
    );
    // A tenant that has never run anything: whatever it finds cached was someone else's.
    let store = AccountStore::open(&s.db).expect("accounts db");
    let c = store
        .create_account(None, "c", Plan::Paid)
        .expect("account");
    let (_, c_token) = store
        .create_token(&c.id, "all", &Scope::ALL)
        .expect("token");
    assert_eq!(
        cached_tokens(&c_token, &prompt).await,
        0,
        "another account's identical prompt must not find A's"
    );
}

/// `--trust-local-bindings`: loopback callers act for the binding account, and only for it.
#[tokio::test]
async fn trusting_local_bindings_is_an_opt_in_for_the_binding_account_only() {
    let dir = common::private_state_dir().join("trusted-bindings");
    let db = dir.join("accounts.db");
    let store = AccountStore::open(&db).expect("accounts db");
    let other = store
        .create_account(None, "other", Plan::Paid)
        .expect("account");
    store
        .create_token(&other.id, "t", &[Scope::VectorizeRead])
        .expect("token");
    let addr = spawn_server(kiln::ServeConfig {
        auth: Some(AuthMode::Tokens),
        trust_local_bindings: Some(true),
        accounts_db: Some(db),
        batch_db: Some(dir.join("batches.db")),
        gateway_db: Some(dir.join("gateway.db")),
        vectorize_dir: Some(dir.join("vectorize")),
        models: Some(Vec::new()),
        fetch: Some(Vec::new()),
        ..test_config()
    });
    let search = client()
        .get(format!("http://{addr}/ai-api/models/search"))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        search.status(),
        200,
        "loopback acts for the binding account"
    );
    let foreign = client()
        .post(format!(
            "http://{addr}/vectorize-binding/{}/i/getByIds",
            other.id
        ))
        .json(&json!({"ids": ["x"]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(foreign.status(), 401, "but not for another account");
}
