//! AI Gateway requests through real HTTP against the real server and models: every endpoint
//! and `cf-aig-*` header of spec §4, the cache, logs, feedback, datasets and evaluations,
//! analytics, rate limits, custom providers, fallbacks, and durability across `kill -9`.

#[path = "../common/mod.rs"]
mod common;

mod binding;
mod cache;
mod datasets;
mod durability;
mod egress;
mod limits;
mod logs;
mod named;
mod providers;
mod stored_keys;

use common::*;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

pub const EMBEDDING_MODEL: &str = "@cf/baai/bge-small-en-v1.5";
pub const TEXT_MODEL: &str = "@cf/meta/llama-3.1-8b-instruct";

/// A gateway of its own account, so tests never see each other's logs or limits.
pub struct Gateway {
    pub account: String,
    pub id: String,
}

impl Gateway {
    pub async fn create(settings: Value) -> Gateway {
        Self::create_on(&url(""), settings).await
    }

    /// Creates the gateway on the server at `base` (another process, in the durability test).
    pub async fn create_on(base: &str, settings: Value) -> Gateway {
        let account = format!("gw-{}", uuid::Uuid::new_v4().simple());
        Self::create_named(base, &account, "main", settings).await
    }

    pub async fn create_named(base: &str, account: &str, id: &str, mut settings: Value) -> Gateway {
        let account = account.to_owned();
        settings["id"] = json!(id);
        let response = client()
            .post(format!(
                "{base}/client/v4/accounts/{account}/ai-gateway/gateways"
            ))
            .json(&settings)
            .send()
            .await
            .expect("gateway created");
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        Gateway {
            account,
            id: id.into(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        url(&self.path(path))
    }

    pub fn path(&self, path: &str) -> String {
        let path = if path.is_empty() {
            String::new()
        } else {
            format!("/{path}")
        };
        format!("/v1/{}/{}{path}", self.account, self.id)
    }

    /// A management path under `…/ai-gateway/gateways/{id}`.
    pub fn api(&self, rest: &str) -> String {
        url(&format!(
            "/client/v4/accounts/{}/ai-gateway/gateways/{}{rest}",
            self.account, self.id
        ))
    }

    /// POSTs `body` to `path` through the gateway with extra headers.
    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (u16, HeaderMap, String) {
        post_with(&self.url(path), body, headers).await
    }

    pub async fn get_api(&self, rest: &str) -> (u16, Value) {
        let response = client().get(self.api(rest)).send().await.expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON"))
    }

    /// The log `id`, as `GET …/logs/{id}` shows it.
    pub async fn log(&self, id: &str) -> Value {
        let (status, body) = self.get_api(&format!("/logs/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body["result"].clone()
    }
}

pub async fn post_with(
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, String) {
    let mut request = client().post(url).bearer_auth("sk-test").json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Asserts the gateway's error shape (`error` and `errors`) and returns (code, message).
pub fn gateway_error(body: &str) -> (u64, String) {
    let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON: {body}"));
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"], body["errors"], "{body}");
    let code = body["error"][0]["code"].as_u64().expect("code");
    (
        code,
        body["error"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    )
}

pub fn embedding_input(text: &str) -> Value {
    json!({"text": [text]})
}
