//! Datasets, evaluations and evaluation types (spec §4.7) over real gateway traffic: saved
//! filters, Cloudflare V4 paging, evaluations checked against the logs they measured, and the
//! errors of bad input and of other accounts' gateways.

use reqwest::Method;
use serde_json::json;

use super::*;

async fn call(method: Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client().request(method, url).bearer_auth("sk-test");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON: {text}"));
    (status, body)
}

/// Asserts a Workers AI error envelope with `status` and returns its message.
fn refused(answer: (u16, Value), status: u16) -> String {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_error_envelope(&answer.1).1
}

fn filter(key: &str, operator: &str, value: Value) -> Value {
    json!({"key": key, "operator": operator, "value": [value]})
}

/// Sends one embedding request through the gateway and returns its log id.
async fn traffic(gateway: &Gateway, input: Value, group: &str) -> String {
    let metadata = format!(r#"{{"group":"{group}"}}"#);
    let path = format!("workers-ai/{EMBEDDING_MODEL}");
    let (_, headers, _) = gateway
        .post(&path, &input, &[("cf-aig-metadata", &metadata)])
        .await;
    header(&headers, "cf-aig-log-id")
        .expect("every request is logged")
        .to_owned()
}

fn result_of(evaluation: &Value, type_id: &str) -> (Option<f64>, u64) {
    let result = evaluation["results"]
        .as_array()
        .and_then(|results| {
            results
                .iter()
                .find(|result| result["evaluation_type_id"] == type_id)
        })
        .unwrap_or_else(|| panic!("no {type_id} result: {evaluation}"));
    assert!(result["status_description"].is_string(), "{result}");
    let value = result["result"]
        .as_str()
        .map(|text| text.parse::<f64>().expect("a decimal number"));
    (value, result["total_logs"].as_u64().expect("total_logs"))
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn close(actual: Option<f64>, expected: Option<f64>) -> bool {
    match (actual, expected) {
        (Some(a), Some(e)) => (a - e).abs() <= 1e-9 * e.abs().max(1.0),
        (a, e) => a == e,
    }
}

#[tokio::test]
async fn evaluations_measure_the_logs_of_their_datasets() {
    let gateway = Gateway::create(json!({})).await;
    let mut group_a = Vec::new();
    for text in ["one", "two", "three"] {
        group_a.push(traffic(&gateway, embedding_input(text), "a").await);
    }
    // A failed request of group a: logged, but outside dataset A, which wants successes.
    let failed = traffic(&gateway, json!({"text": 5}), "a").await;
    let mut group_b = Vec::new();
    for text in ["four", "five"] {
        group_b.push(traffic(&gateway, embedding_input(text), "b").await);
    }
    for (id, thumb) in [
        (&group_a[0], 1),
        (&group_a[1], -1),
        (&group_b[0], 1),
        (&failed, -1),
    ] {
        let (status, body) = call(
            Method::PATCH,
            &gateway.api(&format!("/logs/{id}")),
            Some(json!({"feedback": thumb})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    let (status, body) = call(
        Method::POST,
        &gateway.api("/datasets"),
        Some(json!({"name": "group a", "enable": true, "filters": [
            filter("metadata.value", "eq", json!("a")),
            filter("success", "eq", json!(true)),
        ]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let dataset_a = body["result"].clone();
    assert_eq!(dataset_a["name"], "group a");
    assert_eq!(dataset_a["gateway_id"], gateway.id.as_str());
    assert_eq!(
        dataset_a["filters"][1],
        filter("success", "eq", json!(true))
    );
    let (_, body) = call(
        Method::POST,
        &gateway.api("/datasets"),
        Some(json!({"name": "group b", "enable": true,
            "filters": [filter("metadata.value", "eq", json!("b"))]})),
    )
    .await;
    let dataset_b = body["result"].clone();
    let (a_id, b_id) = (dataset_a["id"].clone(), dataset_b["id"].clone());
    let (status, body) = call(
        Method::GET,
        &gateway.api(&format!("/datasets/{}", a_id.as_str().unwrap())),
        None,
    )
    .await;
    assert_eq!((status, &body["result"]), (200, &dataset_a), "{body}");

    // What the evaluators should find, from the logs API.
    let (_, listed) = gateway.get_api("/logs?per_page=50").await;
    let chosen: Vec<&Value> = listed["result"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|log| {
            let id = log["id"].as_str().unwrap_or_default().to_owned();
            group_a.contains(&id) || group_b.contains(&id)
        })
        .collect();
    assert_eq!(chosen.len(), 5, "{listed}");
    let durations: Vec<f64> = chosen
        .iter()
        .filter_map(|l| l["duration"].as_f64())
        .collect();
    let costs: Vec<f64> = chosen.iter().filter_map(|l| l["cost"].as_f64()).collect();

    let (status, body) = call(
        Method::POST,
        &gateway.api("/evaluations"),
        Some(json!({"name": "baseline", "dataset_ids": [a_id, b_id],
            "evaluation_type_ids": ["cost", "speed", "human-feedback"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let evaluation = body["result"].clone();
    assert_eq!(evaluation["name"], "baseline");
    assert_eq!(evaluation["processed"], true);
    assert_eq!(evaluation["total_logs"], 5, "{evaluation}");
    assert_eq!(evaluation["datasets"], json!([dataset_a, dataset_b]));
    let (speed, logs) = result_of(&evaluation, "speed");
    assert!(close(speed, mean(&durations)) && logs == 5, "{evaluation}");
    let (cost, costed) = result_of(&evaluation, "cost");
    assert!(close(cost, mean(&costs)), "{evaluation}");
    assert_eq!(costed, costs.len() as u64);
    let (thumbs_up, rated) = result_of(&evaluation, "human-feedback");
    assert_eq!(rated, 3, "{evaluation}");
    assert!(close(thumbs_up, Some(200.0 / 3.0)), "{evaluation}");

    // A snapshot: new traffic and a changed dataset leave it as it was.
    traffic(&gateway, embedding_input("six"), "b").await;
    let dataset_path = gateway.api(&format!("/datasets/{}", b_id.as_str().unwrap()));
    let (status, body) = call(
        Method::PUT,
        &dataset_path,
        Some(json!({"name": "renamed", "enable": false, "filters": []})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["result"]["name"], &body["result"]["enable"]),
        (&json!("renamed"), &json!(false))
    );
    let evaluation_path = gateway.api(&format!(
        "/evaluations/{}",
        evaluation["id"].as_str().unwrap()
    ));
    let (status, body) = call(Method::GET, &evaluation_path, None).await;
    assert_eq!((status, &body["result"]), (200, &evaluation), "{body}");
    let (_, body) = call(Method::GET, &gateway.api("/evaluations"), None).await;
    assert_eq!(body["result"], json!([evaluation]));
    assert_eq!(body["result_info"]["total_count"], 1);

    let (status, _) = call(Method::DELETE, &evaluation_path, None).await;
    assert_eq!(status, 200);
    refused(call(Method::GET, &evaluation_path, None).await, 404);
    let (status, _) = call(Method::DELETE, &dataset_path, None).await;
    assert_eq!(status, 200);
    refused(call(Method::GET, &dataset_path, None).await, 404);
}

#[tokio::test]
async fn datasets_page_are_bounded_and_stay_in_their_gateway() {
    let gateway = Gateway::create(json!({})).await;
    let datasets = gateway.api("/datasets");
    let mut ids = Vec::new();
    for n in 0..MAX_DATASETS {
        let body = json!({"name": format!("d{n}"), "enable": true,
            "filters": [filter("model", "contains", json!("bge"))]});
        let (status, body) = call(Method::POST, &datasets, Some(body)).await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["result"]["id"].as_str().expect("id").to_owned());
    }
    let eleventh = json!({"name": "d10", "enable": true, "filters": []});
    let message = refused(call(Method::POST, &datasets, Some(eleventh)).await, 400);
    assert!(message.contains("10 datasets"), "{message}");

    // The SDKs' loop: next page until an empty one.
    let mut names = Vec::new();
    let mut page = 1;
    loop {
        let (status, body) = call(
            Method::GET,
            &format!("{datasets}?page={page}&per_page=2"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result_info"]["total_count"], 10, "{body}");
        let items = body["result"].as_array().expect("a page").clone();
        if items.is_empty() {
            break;
        }
        assert!(items.len() <= 2 && page <= 5, "{body}");
        names.extend(items.iter().map(|d| d["name"].as_str().unwrap().to_owned()));
        page += 1;
    }
    let expected: Vec<String> = (0..MAX_DATASETS).map(|n| format!("d{n}")).collect();
    assert_eq!(names, expected);
    let (_, body) = call(Method::GET, &format!("{datasets}?name=d3"), None).await;
    assert_eq!(body["result"][0]["id"], ids[3].as_str());
    assert_eq!(body["result_info"]["total_count"], 1);

    // Filters follow the logs API's rules.
    let first = format!("{datasets}/{}", ids[0]);
    for (filters, names) in [
        (json!([filter("colour", "eq", json!("red"))]), "colour"),
        (json!([filter("model", "like", json!("bge"))]), "like"),
        (
            json!([filter("success", "contains", json!("t"))]),
            "contains",
        ),
        (
            json!([{"key": "model", "operator": "eq", "value": ["a", "b"]}]),
            "one value",
        ),
        (json!("model=bge"), "filters"),
    ] {
        let body = json!({"name": "x", "enable": true, "filters": filters});
        let message = refused(call(Method::PUT, &first, Some(body)).await, 400);
        assert!(message.contains(names), "{message}");
    }
    refused(
        call(Method::POST, &datasets, Some(json!({"filters": []}))).await,
        400,
    );

    let evaluations = gateway.api("/evaluations");
    let unknown = json!({"name": "e", "dataset_ids": ["nope"], "evaluation_type_ids": ["speed"]});
    let message = refused(call(Method::POST, &evaluations, Some(unknown)).await, 404);
    assert!(message.contains("nope"), "{message}");
    let bad_type = json!({"name": "e", "dataset_ids": [ids[0]], "evaluation_type_ids": ["vibes"]});
    refused(call(Method::POST, &evaluations, Some(bad_type)).await, 400);
    let empty = json!({"name": "e", "dataset_ids": [], "evaluation_type_ids": ["speed"]});
    refused(call(Method::POST, &evaluations, Some(empty)).await, 400);

    // Another account, or another gateway of this one, does not see them.
    let other = Gateway::create(json!({})).await;
    let foreign = url(&format!(
        "/client/v4/accounts/{}/ai-gateway/gateways/{}/datasets/{}",
        other.account, gateway.id, ids[0]
    ));
    refused(call(Method::GET, &foreign, None).await, 404);
    let sibling = Gateway::create_named(&url(""), &gateway.account, "second", json!({})).await;
    refused(
        call(
            Method::GET,
            &sibling.api(&format!("/datasets/{}", ids[0])),
            None,
        )
        .await,
        404,
    );
    let borrowed = json!({"name": "e", "dataset_ids": [ids[0]], "evaluation_type_ids": ["cost"]});
    refused(
        call(Method::POST, &sibling.api("/evaluations"), Some(borrowed)).await,
        404,
    );

    // Deleting the gateway deletes its datasets.
    let (status, _) = call(Method::DELETE, &gateway.api(""), None).await;
    assert_eq!(status, 200);
    refused(call(Method::GET, &datasets, None).await, 404);
    Gateway::create_named(&url(""), &gateway.account, &gateway.id, json!({})).await;
    let (_, body) = call(Method::GET, &datasets, None).await;
    assert_eq!(body["result"], json!([]), "{body}");
}

const MAX_DATASETS: usize = 10;

#[tokio::test]
async fn evaluation_types_are_listed_on_both_paths() {
    for base in ["/client/v4/accounts", "/accounts"] {
        let (status, body) = call(
            Method::GET,
            &url(&format!("{base}/{ACCOUNT}/ai-gateway/evaluation-types")),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let types = body["result"].as_array().expect("types");
        let ids: Vec<&str> = types.iter().filter_map(|t| t["id"].as_str()).collect();
        assert_eq!(ids, ["cost", "speed", "human-feedback"]);
        for field in ["name", "description", "type", "created_at", "modified_at"] {
            assert!(
                types.iter().all(|t| t[field].is_string()),
                "{field}: {body}"
            );
        }
        assert!(types.iter().all(|t| t["mandatory"].is_boolean()));
        assert_eq!(body["result_info"]["total_count"], 3);
    }
    let (status, body) = call(
        Method::GET,
        &url(&format!(
            "/client/v4/accounts/{ACCOUNT}/ai-gateway/evaluation-types?per_page=0"
        )),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
}
