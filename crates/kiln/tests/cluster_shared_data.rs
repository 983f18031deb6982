//! Three `kiln serve` processes sharing Vectorize through NATS JetStream and the AI Gateway
//! through PostgreSQL and Redis (issue #21): what is written through one node is read
//! through another. Needs PostgreSQL, Redis and NATS with JetStream on loopback
//! (`scripts/install-deps` starts them; `KILN_TEST_*_URL` point elsewhere).

#[path = "cluster_fixture/mod.rs"]
mod cluster_fixture;
mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use cluster_fixture::{start_nodes, Cluster, Node, ONE_CLUSTER_AT_A_TIME};

const LOCAL_EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

/// `method` on `{node}/client/v4/accounts/team/{path}` with the cluster's token; status and
/// JSON body.
async fn call(
    client: &reqwest::Client,
    node: &Node,
    cluster: &Cluster,
    method: reqwest::Method,
    path: &str,
    body: Option<(&str, String)>,
) -> (u16, Value) {
    let mut request = client
        .request(
            method,
            format!("{}/client/v4/accounts/team/{path}", node.base),
        )
        .bearer_auth(&cluster.token);
    if let Some((content_type, body)) = body {
        request = request.header("content-type", content_type).body(body);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A vector upserted through A is returned by a query through C once C reports the upsert's
/// mutation processed; an index created through A is known to B and C at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vector_upserted_through_one_node_is_queried_through_another() {
    let _cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::new(&[], "");
    let nodes = start_nodes(3, cluster.state.path(), &cluster.shared).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let client = reqwest::Client::new();
    let json_body = |value: Value| Some(("application/json", value.to_string()));

    let (status, created) = call(
        &client,
        a,
        &cluster,
        reqwest::Method::POST,
        "vectorize/v2/indexes",
        json_body(json!({"name": "docs", "config": {"dimensions": 3, "metric": "cosine"}})),
    )
    .await;
    assert!(matches!(status, 200 | 201), "{status} {created}");
    assert_eq!(created["success"], true, "{created}");
    for node in [b, c] {
        let (status, index) = call(
            &client,
            node,
            &cluster,
            reqwest::Method::GET,
            "vectorize/v2/indexes/docs",
            None,
        )
        .await;
        assert_eq!(status, 200, "{index}");
        assert_eq!(index["result"]["config"]["dimensions"], 3, "{index}");
    }

    let lines = [
        json!({"id": "near", "values": [1.0, 0.0, 0.0], "metadata": {"title": "the near one"}}),
        json!({"id": "far", "values": [0.0, 0.0, 1.0]}),
    ]
    .map(|line| line.to_string())
    .join("\n");
    let (status, upserted) = call(
        &client,
        a,
        &cluster,
        reqwest::Method::POST,
        "vectorize/v2/indexes/docs/upsert",
        Some(("application/x-ndjson", lines)),
    )
    .await;
    assert_eq!(status, 200, "{upserted}");
    let mutation = upserted["result"]["mutationId"]
        .as_str()
        .expect("mutationId")
        .to_owned();

    let started = Instant::now();
    loop {
        let (status, info) = call(
            &client,
            c,
            &cluster,
            reqwest::Method::GET,
            "vectorize/v2/indexes/docs/info",
            None,
        )
        .await;
        assert_eq!(status, 200, "{info}");
        if info["result"]["processedUpToMutation"] == mutation.as_str() {
            assert_eq!(info["result"]["vectorCount"], 2, "{info}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "C never processed {mutation}: {info}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "upserted through A, processed by C after {:?}",
        started.elapsed()
    );
    let (status, found) = call(
        &client,
        c,
        &cluster,
        reqwest::Method::POST,
        "vectorize/v2/indexes/docs/query",
        json_body(json!({"vector": [0.9, 0.1, 0.0], "topK": 1, "returnMetadata": "all"})),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["result"]["matches"][0]["id"], "near", "{found}");
    assert_eq!(
        found["result"]["matches"][0]["metadata"]["title"],
        "the near one"
    );

    // Deleted through B: gone on A too, and the name is free everywhere.
    let (status, _) = call(
        &client,
        b,
        &cluster,
        reqwest::Method::DELETE,
        "vectorize/v2/indexes/docs",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &client,
        a,
        &cluster,
        reqwest::Method::GET,
        "vectorize/v2/indexes/docs",
        None,
    )
    .await;
    assert_eq!(status, 404);
}

/// `POST {node}/v1/team/main/workers-ai/{model}` (the gateway `main`) with the cluster's token:
/// status, `cf-aig-cache-status`, `cf-aig-log-id`, body.
async fn through_gateway(
    client: &reqwest::Client,
    node: &Node,
    cluster: &Cluster,
    body: &Value,
) -> (u16, String, String, Value) {
    let response = client
        .post(format!(
            "{}/v1/team/main/workers-ai/@cf/baai/bge-small-en-v1.5",
            node.base
        ))
        .bearer_auth(&cluster.token)
        .json(body)
        .send()
        .await
        .expect("sent");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (cache, log) = (header("cf-aig-cache-status"), header("cf-aig-log-id"));
    let status = response.status().as_u16();
    (
        status,
        cache,
        log,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// A gateway made through C; an answer cached through A is a cache HIT through C, and the logs
/// of both requests are listed through B (gateways, logs and analytics in PostgreSQL, the
/// response cache in Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_answer_cached_through_one_node_is_a_hit_through_another_and_logged_on_all() {
    let _cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    kiln_store::ensure_for_tests(LOCAL_EMBEDDING_MODEL);
    let cluster = Cluster::new(&[LOCAL_EMBEDDING_MODEL], "");
    let nodes = start_nodes(3, cluster.state.path(), &cluster.shared).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let client = reqwest::Client::new();

    let (status, created) = call(
        &client,
        c,
        &cluster,
        reqwest::Method::POST,
        "ai-gateway/gateways",
        Some((
            "application/json",
            json!({"id": "main", "cache_ttl": 600, "collect_logs": true}).to_string(),
        )),
    )
    .await;
    assert_eq!(status, 200, "{created}");

    let input = json!({"text": ["a kiln fires clay at 1200 degrees"]});
    let (status, cache, first_log, first) = through_gateway(&client, a, &cluster, &input).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(cache, "MISS");
    let (status, cache, second_log, second) = through_gateway(&client, c, &cluster, &input).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(cache, "HIT", "cached through A, asked through C");
    assert_eq!(second, first);
    assert_ne!(first_log, second_log);

    // Both requests' logs, written by A and C, are listed through B.
    let started = Instant::now();
    loop {
        let (status, listed) = call(
            &client,
            b,
            &cluster,
            reqwest::Method::GET,
            "ai-gateway/gateways/main/logs",
            None,
        )
        .await;
        assert_eq!(status, 200, "{listed}");
        let ids: Vec<&str> = listed["result"]
            .as_array()
            .map(|logs| logs.iter().filter_map(|log| log["id"].as_str()).collect())
            .unwrap_or_default();
        if ids.contains(&first_log.as_str()) && ids.contains(&second_log.as_str()) {
            let hit = listed["result"]
                .as_array()
                .and_then(|logs| logs.iter().find(|log| log["id"] == second_log.as_str()))
                .cloned()
                .unwrap_or(Value::Null);
            assert_eq!(hit["cached"], true, "{hit}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "B lists {ids:?}, not {first_log} and {second_log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("both logs listed through B after {:?}", started.elapsed());
}
