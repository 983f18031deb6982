//! Vectorize v2 through real HTTP against the real server: every REST route with its limits and
//! errors, the binding's wire protocol, durability across `kill -9`, and RAG end to end with
//! Kiln's own embeddings and text generation.

#[path = "../common/mod.rs"]
mod common;

mod binding;
mod durability;
mod rag;
mod rest;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// An index of its own account, so tests never see each other's data.
pub struct Index {
    pub base: String,
    pub account: String,
    pub name: String,
}

impl Index {
    pub async fn create(config: Value) -> Index {
        Self::create_on(&url(""), config).await
    }

    pub async fn create_on(base: &str, config: Value) -> Index {
        let index = Index {
            base: base.to_owned(),
            account: format!("vz-{}", uuid::Uuid::new_v4().simple()),
            name: "docs".into(),
        };
        let (status, body) = index
            .call(
                reqwest::Method::POST,
                "",
                Some(json!({"name": "docs", "config": config})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        index
    }

    pub fn collection(&self) -> String {
        format!(
            "{}/client/v4/accounts/{}/vectorize/v2/indexes",
            self.base, self.account
        )
    }

    /// `rest` after `…/indexes/{name}` (or the collection itself when `rest` is empty and the
    /// method is POST).
    pub async fn call(
        &self,
        method: reqwest::Method,
        rest: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = if rest.is_empty() && method == reqwest::Method::POST {
            self.collection()
        } else {
            format!("{}/{}{rest}", self.collection(), self.name)
        };
        let mut request = client().request(method, url).bearer_auth("sk-test");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post(&self, rest: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, rest, Some(body)).await
    }

    pub async fn get(&self, rest: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, rest, None).await
    }

    /// `GET` on the account's index collection.
    pub async fn get_collection(&self) -> (u16, Value) {
        let response = client()
            .get(self.collection())
            .bearer_auth("sk-test")
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON"))
    }

    /// Sends NDJSON to `insert` or `upsert` (with a query string) and returns the mutation id.
    pub async fn ndjson(&self, op_and_query: &str, lines: &str) -> (u16, Value) {
        let response = client()
            .post(format!(
                "{}/{}/{op_and_query}",
                self.collection(),
                self.name
            ))
            .bearer_auth("sk-test")
            .header("content-type", "application/x-ndjson")
            .body(lines.to_owned())
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON"))
    }

    /// Waits until `info` says the mutation is applied.
    pub async fn wait_for(&self, mutation_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, info) = self.get("/info").await;
            if info["result"]["processedUpToMutation"] == mutation_id {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mutation {mutation_id} not applied: {info}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `mutationId` of a successful mutation answer.
pub fn mutation_id(status: u16, body: &Value) -> String {
    assert_eq!(status, 200, "{body}");
    body["result"]["mutationId"]
        .as_str()
        .unwrap_or_else(|| panic!("mutationId: {body}"))
        .to_owned()
}

/// The Workers AI error code of a failed answer.
pub fn error_code(body: &Value) -> u64 {
    assert_error_envelope(body).0
}
