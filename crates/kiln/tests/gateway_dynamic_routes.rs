//! AI Gateway dynamic routes (spec §4.10) over real HTTP against the real server and models:
//! routes, versions and deployments through the management API, then `model: "dynamic/<name>"`
//! on the compat endpoint choosing between real embedding models.

mod common;

use common::*;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};

/// Both served by the default config's local embedding model, under their own ids.
const SMALL: &str = "@cf/baai/bge-small-en-v1.5";
const BASE: &str = "@cf/baai/bge-base-en-v1.5";

/// A gateway of an account of its own.
struct Gateway {
    account: String,
}

impl Gateway {
    async fn create() -> Gateway {
        let account = format!("dyn-{}", uuid::Uuid::new_v4().simple());
        let gateway = Gateway { account };
        let (status, body) = gateway
            .call(Method::POST, "", Some(json!({"id": "main"})))
            .await;
        assert_eq!(status, 200, "{body}");
        gateway
    }

    /// A management call under `…/ai-gateway/gateways[/main{rest}]`.
    async fn call(&self, method: Method, rest: &str, body: Option<Value>) -> (u16, Value) {
        let base = format!("/client/v4/accounts/{}/ai-gateway/gateways", self.account);
        let path = if rest.is_empty() {
            base
        } else {
            format!("{base}/main{rest}")
        };
        let mut request = client().request(method, url(&path)).bearer_auth("sk-test");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    async fn create_route(&self, name: &str, elements: Value) -> Value {
        let body = json!({"name": name, "elements": elements});
        let (status, body) = self.call(Method::POST, "/routes", Some(body)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["success"], true, "{body}");
        body["result"].clone()
    }

    /// Embeddings through `compat/embeddings` with `model: dynamic/<route>`.
    async fn embed(&self, route: &str, metadata: Option<Value>) -> (u16, HeaderMap, Value) {
        let mut request = client()
            .post(url(&format!("/v1/{}/main/compat/embeddings", self.account)))
            .bearer_auth("sk-test")
            .json(&json!({"model": format!("dynamic/{route}"), "input": "route me"}));
        if let Some(metadata) = metadata {
            request = request.header("cf-aig-metadata", metadata.to_string());
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON: {text}"));
        (status, headers, body)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("header {name} in {headers:?}"))
}

fn start(next: &str) -> Value {
    json!({"id": "start", "type": "start", "outputs": {"next": {"elementId": next}}})
}

fn model(id: &str, name: &str, fallback: Option<&str>) -> Value {
    let mut outputs = json!({"success": {"elementId": "end"}});
    if let Some(fallback) = fallback {
        outputs["fallback"] = json!({"elementId": fallback});
    }
    json!({"id": id, "type": "model", "outputs": outputs,
           "properties": {"provider": "workers-ai", "model": name, "timeout": 60000,
                          "retries": 0}})
}

fn end() -> Value {
    json!({"id": "end", "type": "end", "outputs": {}})
}

/// Free plans to the small model, every other request to the base model.
fn by_plan(plan: &str) -> Value {
    json!([
        start("plan"),
        {"id": "plan", "type": "conditional",
         "properties": {"conditions": {"metadata.plan": {"$eq": plan}}},
         "outputs": {"true": {"elementId": "small"}, "false": {"elementId": "base"}}},
        model("small", SMALL, None),
        model("base", BASE, Some("small")),
        end(),
    ])
}

/// Asserts an answer from `model` as step `step`, and that the log names it.
async fn assert_answered_by(
    gateway: &Gateway,
    answer: (u16, HeaderMap, Value),
    model: &str,
    step: &str,
) {
    let (status, headers, body) = answer;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "cf-aig-model"), model);
    assert_eq!(header(&headers, "cf-aig-provider"), "workers-ai");
    assert_eq!(header(&headers, "cf-aig-step"), step);
    assert_eq!(body["model"], model, "{body}");
    assert!(body["data"][0]["embedding"].is_array(), "{body}");
    let log_id = header(&headers, "cf-aig-log-id");
    let (status, log) = gateway
        .call(Method::GET, &format!("/logs/{log_id}"), None)
        .await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["result"]["model"], model, "{log}");
    assert_eq!(log["result"]["provider"], "workers-ai", "{log}");
}

#[tokio::test]
async fn routes_choose_models_by_metadata_and_deployment() {
    let gateway = Gateway::create().await;
    let route = gateway.create_route("by-plan", by_plan("free")).await;
    let id = route["id"].as_str().expect("route id").to_owned();
    assert_eq!(route["name"], "by-plan");
    assert_eq!(route["gateway_id"], "main");
    assert_eq!(route["account_tag"], gateway.account.as_str());
    assert_eq!(route["elements"], by_plan("free"));
    assert_eq!(route["version"]["active"], "true");
    assert_eq!(
        route["deployment"]["version_id"],
        route["version"]["version_id"]
    );

    let free = gateway
        .embed("by-plan", Some(json!({"plan": "free"})))
        .await;
    assert_answered_by(&gateway, free, SMALL, "0").await;
    let pro = gateway.embed("by-plan", Some(json!({"plan": "pro"}))).await;
    assert_answered_by(&gateway, pro, BASE, "0").await;
    let anonymous = gateway.embed("by-plan", None).await;
    assert_answered_by(&gateway, anonymous, BASE, "0").await;

    // A second version sends "pro" to the small model, but only once deployed.
    let body = json!({"elements": by_plan("pro"), "comment": "pro is small now"});
    let (status, version) = gateway
        .call(Method::POST, &format!("/routes/{id}/versions"), Some(body))
        .await;
    assert_eq!(status, 200, "{version}");
    let version = &version["result"];
    assert_eq!(version["active"], "false");
    assert_eq!(version["id"], id.as_str());
    assert_eq!(version["comment"], "pro is small now");
    let version_id = version["version_id"]
        .as_str()
        .expect("version id")
        .to_owned();
    let pro = gateway.embed("by-plan", Some(json!({"plan": "pro"}))).await;
    assert_answered_by(&gateway, pro, BASE, "0").await;

    let body = json!({"version_id": version_id, "comment": "go"});
    let (status, deployed) = gateway
        .call(
            Method::POST,
            &format!("/routes/{id}/deployments"),
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{deployed}");
    assert_eq!(deployed["result"]["elements"], by_plan("pro"));
    let pro = gateway.embed("by-plan", Some(json!({"plan": "pro"}))).await;
    assert_answered_by(&gateway, pro, SMALL, "0").await;

    // Versions and deployments list newest first, in the envelope and in the SDK's `data`.
    let (status, versions) = gateway
        .call(Method::GET, &format!("/routes/{id}/versions"), None)
        .await;
    assert_eq!(status, 200, "{versions}");
    assert_eq!(versions["result_info"]["total_count"], 2, "{versions}");
    assert_eq!(versions["result"][0]["version_id"], version_id.as_str());
    assert_eq!(versions["result"][0]["active"], "true");
    assert_eq!(versions["result"][1]["active"], "false");
    assert_eq!(versions["data"]["versions"], versions["result"]);
    let data: Value = serde_json::from_str(versions["result"][0]["data"].as_str().expect("data"))
        .expect("elements as JSON");
    assert_eq!(data, by_plan("pro"));
    let (status, deployments) = gateway
        .call(
            Method::GET,
            &format!("/routes/{id}/deployments?per_page=1"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{deployments}");
    assert_eq!(deployments["result_info"]["total_count"], 2);
    assert_eq!(deployments["result_info"]["count"], 1);
    assert_eq!(deployments["result"][0]["comment"], "go");
    assert_eq!(
        deployments["data"]["deployments"][0]["version_id"],
        version_id.as_str()
    );
    assert_eq!(deployments["data"]["order_by_direction"], "desc");
    let (status, shown) = gateway
        .call(
            Method::GET,
            &format!("/routes/{id}/versions/{version_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["result"]["elements"], by_plan("pro"));
    assert_eq!(shown["result"]["active"], "true");
}

#[tokio::test]
async fn failed_models_fall_back_and_rate_limits_refuse() {
    let gateway = Gateway::create().await;
    // A model Workers AI does not have fails; its fallback answers as step 1.
    gateway
        .create_route(
            "fallback",
            json!([
                start("missing"),
                model("missing", "@cf/kiln/no-such-model", Some("small")),
                model("small", SMALL, None),
                end(),
            ]),
        )
        .await;
    let answer = gateway.embed("fallback", None).await;
    assert_answered_by(&gateway, answer, SMALL, "1").await;

    // One request per user a minute: the second goes to `end`, a 429.
    gateway
        .create_route(
            "limited",
            json!([
                start("split"),
                {"id": "split", "type": "percentage",
                 "outputs": {"100%": {"elementId": "limit"}}},
                {"id": "limit", "type": "rate",
                 "properties": {"key": "metadata.user", "limit": 1, "window": 60,
                                "limitType": "count"},
                 "outputs": {"success": {"elementId": "small"},
                             "fallback": {"elementId": "end"}}},
                model("small", SMALL, None),
                end(),
            ]),
        )
        .await;
    let first = gateway.embed("limited", Some(json!({"user": "u1"}))).await;
    assert_answered_by(&gateway, first, SMALL, "0").await;
    let (status, _, body) = gateway.embed("limited", Some(json!({"user": "u1"}))).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"][0]["code"], 2003, "{body}");
    assert!(body["error"][0]["message"]
        .as_str()
        .expect("message")
        .contains("\"limit\""));
    // Another user has a count of their own.
    let other = gateway.embed("limited", Some(json!({"user": "u2"}))).await;
    assert_answered_by(&gateway, other, SMALL, "0").await;

    // A route that does not exist is the gateway's 404.
    let (status, _, body) = gateway.embed("nope", None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"][0]["code"], 1004, "{body}");
}

#[tokio::test]
async fn route_management_lists_renames_deletes_and_refuses() {
    let gateway = Gateway::create().await;
    for name in ["one", "two", "three"] {
        gateway.create_route(name, by_plan("free")).await;
    }
    let list_url = url(&format!(
        "/client/v4/accounts/{}/ai-gateway/gateways/main/routes",
        gateway.account
    ));
    let routes = page_through(&list_url, 2).await;
    let names: Vec<&Value> = routes.iter().map(|route| &route["name"]).collect();
    assert_eq!(names, [&json!("one"), &json!("two"), &json!("three")]);
    let (status, listed) = gateway.call(Method::GET, "/routes", None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["data"]["routes"], listed["result"]);
    assert_eq!(listed["data"]["page"], 1);
    let id = routes[0]["id"].as_str().expect("id").to_owned();

    let (status, renamed) = gateway
        .call(
            Method::PATCH,
            &format!("/routes/{id}"),
            Some(json!({"name": "uno"})),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["route"]["name"], "uno");
    assert_eq!(renamed["result"], renamed["route"]);
    let (status, shown) = gateway
        .call(Method::GET, &format!("/routes/{id}"), None)
        .await;
    assert_eq!((status, &shown["result"]["name"]), (200, &json!("uno")));
    let answer = gateway.embed("uno", Some(json!({"plan": "free"}))).await;
    assert_answered_by(&gateway, answer, SMALL, "0").await;

    // Bad input is a 400 naming the element; a taken name a 409.
    let mut unknown = by_plan("free");
    unknown[2]["type"] = json!("teleport");
    let mut dangling = by_plan("free");
    dangling[1]["outputs"]["false"]["elementId"] = json!("nowhere");
    let no_start = json!([model("small", SMALL, None), end()]);
    for (elements, expected) in [
        (unknown, "element \"small\": unknown type \"teleport\""),
        (dangling, "\"nowhere\", which is not an element"),
        (no_start, "no element of type 'start'"),
    ] {
        let body = json!({"name": "bad", "elements": elements});
        let (status, body) = gateway.call(Method::POST, "/routes", Some(body)).await;
        assert_eq!(status, 400, "{body}");
        let (code, message) = assert_error_envelope(&body);
        assert_eq!(code, 5006);
        assert!(message.contains(expected), "{message}");
    }
    let body = json!({"name": "two", "elements": by_plan("free")});
    let (status, body) = gateway.call(Method::POST, "/routes", Some(body)).await;
    assert_eq!((status, assert_error_envelope(&body).0), (409, 1003));
    let (status, body) = gateway
        .call(Method::GET, "/routes?order_by_direction=sideways", None)
        .await;
    assert_eq!((status, assert_error_envelope(&body).0), (400, 5006));
    let body = json!({"version_id": "no-such-version"});
    let (status, body) = gateway
        .call(
            Method::POST,
            &format!("/routes/{id}/deployments"),
            Some(body),
        )
        .await;
    assert_eq!((status, assert_error_envelope(&body).0), (404, 1004));

    // Deleted: gone from the API and from the compat endpoint.
    let (status, deleted) = gateway
        .call(Method::DELETE, &format!("/routes/{id}"), None)
        .await;
    assert_eq!((status, &deleted["result"]["name"]), (200, &json!("uno")));
    for rest in [format!("/routes/{id}"), format!("/routes/{id}/versions")] {
        let (status, body) = gateway.call(Method::GET, &rest, None).await;
        assert_eq!(
            (status, assert_error_envelope(&body).0),
            (404, 1004),
            "{rest}"
        );
    }
    let (status, _, body) = gateway.embed("uno", None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = gateway.call(Method::GET, "/routes", None).await;
    assert_eq!(
        (status, &body["result_info"]["total_count"]),
        (200, &json!(2))
    );
}
