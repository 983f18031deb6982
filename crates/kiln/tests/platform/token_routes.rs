//! `…/accounts/{account}/tokens` and Kiln's server-wide routes in tokens mode: a token manages
//! only its own account's tokens, never grants what it lacks, and `/kiln/…` needs a token.

use kiln_accounts::{AccountStore, Scope};
use reqwest::Method;
use serde_json::json;

use crate::auth::{account_path, call, server};

/// A token of account A with exactly `scopes`, made on the server's database.
fn token_of_a(scopes: &[Scope]) -> String {
    let s = server();
    let store = AccountStore::open(&s.db).expect("accounts db");
    store
        .create_token(&s.a.id, "made by a test", scopes)
        .expect("token")
        .1
}

#[tokio::test]
async fn a_token_lists_creates_and_revokes_its_accounts_tokens() {
    let s = server();
    let tokens = account_path(&s.a.id, "/tokens");
    let (status, body) = call(Method::GET, &tokens, Some(&s.a.token), None).await;
    assert_eq!(status, 200, "{body}");
    let listed = body["result"].as_array().expect("token list");
    assert!(listed.iter().any(|token| token["name"] == "read"), "{body}");
    assert!(
        listed.iter().all(|token| token.get("value").is_none()),
        "a list never shows a secret: {body}"
    );

    let (status, created) = call(
        Method::POST,
        &tokens,
        Some(&s.a.token),
        Some(json!({"name": "vectors only", "scopes": ["vectorize:read"]})),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let secret = created["result"]["value"]
        .as_str()
        .expect("secret shown once");
    let id = created["result"]["id"].as_str().expect("token id");
    assert_eq!(created["result"]["scopes"], json!(["vectorize:read"]));

    let indexes = account_path(&s.a.id, "/vectorize/v2/indexes");
    let (status, body) = call(Method::GET, &indexes, Some(secret), None).await;
    assert_eq!(status, 200, "the new token works: {body}");
    let (status, body) = call(Method::GET, &tokens, Some(secret), None).await;
    assert_eq!(status, 403, "and holds only its scopes: {body}");

    let one = account_path(&s.a.id, &format!("/tokens/{id}"));
    let (status, body) = call(Method::DELETE, &one, Some(&s.a.token), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(Method::GET, &indexes, Some(secret), None).await;
    assert_eq!(status, 401, "revoked on the next request: {body}");
    let (_, body) = call(Method::GET, &tokens, Some(&s.a.token), None).await;
    let revoked = body["result"]
        .as_array()
        .and_then(|list| list.iter().find(|token| token["id"] == id))
        .cloned()
        .expect("revoked tokens stay listed");
    assert_eq!(revoked["status"], "revoked");
}

#[tokio::test]
async fn a_token_never_grants_more_than_it_holds_nor_touches_another_account() {
    let s = server();
    let manager = token_of_a(&[Scope::ApiTokensEdit, Scope::VectorizeRead]);
    let tokens = account_path(&s.a.id, "/tokens");
    let (status, body) = call(
        Method::POST,
        &tokens,
        Some(&manager),
        Some(json!({"name": "escalation", "scopes": ["workers-ai:edit"]})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|message| message.contains("workers-ai:edit")),
        "{body}"
    );
    let (status, body) = call(
        Method::POST,
        &tokens,
        Some(&manager),
        Some(json!({"name": "everything I hold", "scopes": ["all"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"]["scopes"],
        json!(["vectorize:read", "api-tokens:edit"])
    );

    // B's token ids are unknown to A, and A's token cannot even name B's account.
    let (_, b_tokens) = call(
        Method::GET,
        &account_path(&s.b.id, "/tokens"),
        Some(&s.b.token),
        None,
    )
    .await;
    let b_token_id = b_tokens["result"][0]["id"].as_str().expect("B has a token");
    let (status, body) = call(
        Method::DELETE,
        &account_path(&s.a.id, &format!("/tokens/{b_token_id}")),
        Some(&s.a.token),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(
        Method::DELETE,
        &account_path(&s.b.id, &format!("/tokens/{b_token_id}")),
        Some(&s.a.token),
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");

    let (status, body) = call(Method::GET, &tokens, Some(&s.a_read_only), None).await;
    assert_eq!(status, 403, "managing tokens needs api-tokens:edit: {body}");
    let (status, body) = call(
        Method::POST,
        &tokens,
        Some(&s.a.token),
        Some(json!({"name": "x", "scopes": ["root"]})),
    )
    .await;
    assert_eq!(status, 400, "unknown scope: {body}");
}

#[tokio::test]
async fn kiln_routes_need_a_token_and_pulling_needs_workers_ai_edit() {
    let s = server();
    let (status, body) = call(Method::GET, "/kiln/models", None, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = call(Method::GET, "/kiln/models", Some(&s.a_read_only), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(Method::GET, "/kiln/whoami", Some(&s.a_read_only), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["account_id"], s.a.id.as_str());
    assert_eq!(body["result"]["auth"], "tokens");
    assert_eq!(body["result"]["scopes"], json!(["workers-ai:read"]));
    let (status, body) = call(
        Method::POST,
        "/kiln/models/pull",
        Some(&s.a_read_only),
        Some(json!({"name": "whisper-tiny-en"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(
        Method::POST,
        "/kiln/models/all-minilm-l6-v2/unload",
        Some(&s.a_read_only),
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
}
