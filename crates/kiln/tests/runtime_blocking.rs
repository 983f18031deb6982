//! Slow storage work never blocks the async runtime: while SQLite-bound admin calls keep every
//! one of the server's runtime threads' worth of work queued (the test server has two), `/health`
//! still answers at once.

mod common;

use std::time::{Duration, Instant};

use common::{spawn_server, test_config, ACCOUNT};
use kiln_gateway::{GatewayStore, LogCap, LogQuery, LogRecord, RequestWrite};
use serde_json::{json, Map, Value};

/// Generous for a loaded 2-core CI machine; a blocked runtime misses it by seconds.
const HEALTH_BOUND: Duration = Duration::from_secs(2);
/// How long the slow calls keep the server busy, at least: well past the bound.
const BUSY_FOR: Duration = Duration::from_secs(8);
const LOGS: usize = 60_000;
const GATEWAY: &str = "slow-logs";

/// A gateway database holding `LOGS` logs, written through the store's own writer.
fn gateway_db_with_logs(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("gateway.db");
    let store = GatewayStore::open(&path).expect("gateway store");
    store
        .create(ACCOUNT, &json!({"id": GATEWAY}))
        .expect("gateway");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut pending = Vec::new();
        for index in 0..LOGS {
            let mut metadata = Map::new();
            metadata.insert("user".into(), Value::String(format!("user-{index}")));
            let record = LogRecord {
                id: format!("{index:026}"),
                account: ACCOUNT.into(),
                gateway: GATEWAY.into(),
                created_at_ms: 1_700_000_000_000 + index as i64,
                provider: "workers-ai".into(),
                model: "@cf/meta/llama-3.1-8b-instruct".into(),
                path: "workers-ai/@cf/meta/llama-3.1-8b-instruct".into(),
                request_type: "workers-ai".into(),
                status_code: 200,
                success: true,
                metadata: Some(metadata),
                ..LogRecord::default()
            };
            let write = RequestWrite {
                record,
                log: Some(LogCap::Unlimited),
                cache: None,
            };
            // The writer drops what it cannot queue: wait for it to catch up instead.
            pending.push(store.submit(write).expect("writer keeps up"));
            if pending.len() == 1024 {
                for journaled in pending.drain(..) {
                    journaled.await.expect("journaled");
                }
            }
        }
        for journaled in pending {
            journaled.await.expect("journaled");
        }
    });
    // Reading the logs waits until every one is in SQLite.
    let page = store
        .list_logs(ACCOUNT, GATEWAY, &LogQuery::default())
        .expect("logs");
    assert_eq!(page.total_count, LOGS as u64);
    drop(store);
    // The writer's threads end once the store is gone; the server opens the file after them.
    std::thread::sleep(Duration::from_millis(500));
    path
}

/// A logs query no index helps: every log's metadata is unpacked and searched.
fn slow_logs_url(addr: std::net::SocketAddr) -> String {
    let filters = r#"[{"key":"metadata.value","operator":"contains","value":["no-such-user"]}]"#;
    let mut url = reqwest::Url::parse(&format!(
        "http://{addr}/accounts/{ACCOUNT}/ai-gateway/gateways/{GATEWAY}/logs"
    ))
    .expect("url");
    url.query_pairs_mut().append_pair("filters", filters);
    url.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_slow_log_queries_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Written on a thread of its own: the writer's acknowledgements are awaited on a runtime
    // of that thread's, and this test's runtime cannot block inside itself.
    let setup_dir = dir.path().to_owned();
    let gateway_db = tokio::task::spawn_blocking(move || gateway_db_with_logs(&setup_dir))
        .await
        .expect("gateway database written");
    let mut config = test_config();
    config.gateway_db = Some(gateway_db);
    let addr = spawn_server(config);
    let client = reqwest::Client::new();
    let slow_url = slow_logs_url(addr);

    // One query alone, to size the load: enough of them to keep the server busy for BUSY_FOR
    // were they run one after another (the store runs them one at a time).
    let started = Instant::now();
    let response = client.get(&slow_url).send().await.expect("logs query");
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let one = started.elapsed().max(Duration::from_millis(1));
    let queries = (BUSY_FOR.as_secs_f64() / one.as_secs_f64()).ceil() as usize;
    let queries = queries.clamp(8, 400);

    let started = Instant::now();
    let slow: Vec<_> = (0..queries)
        .map(|_| {
            let (client, url) = (client.clone(), slow_url.clone());
            tokio::spawn(async move {
                let response = client.get(&url).send().await.expect("logs query");
                assert_eq!(response.status(), 200);
                response.bytes().await.expect("body");
            })
        })
        .collect();
    // Give the queries a moment to reach the server before probing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut probes = 0;
    let mut slowest = Duration::ZERO;
    while !slow.iter().all(|query| query.is_finished()) {
        let asked = Instant::now();
        let health = tokio::time::timeout(
            HEALTH_BOUND * 5,
            client.get(format!("http://{addr}/health")).send(),
        )
        .await
        .expect("/health answered at all")
        .expect("/health");
        assert_eq!(health.status(), 200);
        slowest = slowest.max(asked.elapsed());
        probes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for query in slow {
        query.await.expect("query task");
    }
    let busy = started.elapsed();
    assert!(
        slowest < HEALTH_BOUND,
        "/health took {slowest:?} while {queries} log queries ran ({busy:?} in all, one \
         alone took {one:?}); the runtime was blocked"
    );
    assert!(probes > 0, "the queries ended before /health was asked");
    eprintln!(
        "{queries} log queries over {LOGS} logs took {busy:?} (one alone {one:?}); {probes} \
         /health probes, the slowest {slowest:?}"
    );
}

/// Many SQLite-backed admin calls at once (each a `synchronous = FULL` write or a read), with
/// `/health` asked alongside: everything completes, and `/health` promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admin_calls_and_health_all_complete() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config();
    config.gateway_db = Some(dir.path().join("gateway.db"));
    let addr = spawn_server(config);
    let client = reqwest::Client::new();
    let base = format!("http://{addr}/accounts/{ACCOUNT}/ai-gateway");

    // An account may have 20 gateways; each task then reads and writes its own.
    let calls: Vec<_> = (0..16)
        .map(|index| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                let id = format!("g-{index}");
                let created = client
                    .post(format!("{base}/gateways"))
                    .json(&json!({"id": id, "collect_logs": true}))
                    .send()
                    .await
                    .expect("create");
                assert_eq!(created.status(), 200, "{}", created.text().await.unwrap());
                let read = client
                    .get(format!("{base}/gateways/{id}"))
                    .send()
                    .await
                    .expect("get");
                assert_eq!(read.status(), 200);
                for path in ["logs", "analytics"] {
                    let read = client
                        .get(format!("{base}/gateways/{id}/{path}"))
                        .send()
                        .await
                        .expect("logs");
                    assert_eq!(read.status(), 200, "{path}");
                }
                let updated = client
                    .put(format!("{base}/gateways/{id}"))
                    .json(&json!({"collect_logs": false}))
                    .send()
                    .await
                    .expect("update");
                assert_eq!(updated.status(), 200, "{}", updated.text().await.unwrap());
            })
        })
        .collect();
    let asked = Instant::now();
    let health = client
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .expect("/health");
    assert_eq!(health.status(), 200);
    let health_took = asked.elapsed();
    for call in calls {
        call.await.expect("admin call");
    }
    let listed: Value = client
        .get(format!("{base}/gateways"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["result"].as_array().map(Vec::len), Some(16));
    assert!(
        health_took < HEALTH_BOUND,
        "/health took {health_took:?} beside 80 admin calls"
    );
}
