//! Three `kiln serve` processes sharing one PostgreSQL (`--postgres-url`, a fresh schema per
//! test) and one Redis (issue #21): what one node writes, the others serve. Needs PostgreSQL
//! at `KILN_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`) and Redis
//! at `KILN_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); `scripts/install-deps` starts
//! both on loopback.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kiln_postgres::TestSchema;
use serde_json::{json, Value};

use common::free_port;

/// The bar for a revocation to reach every node.
const PROPAGATION: Duration = Duration::from_secs(1);

/// One cluster at a time: each test runs three servers on the machine's two cores, and the
/// timing bars are about the cluster, not about contention between tests.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn redis_url() -> String {
    std::env::var("KILN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// One node: a `kiln serve` process with its own data directory; killed when dropped.
struct Node {
    child: Child,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Flags every command of one cluster shares: its databases, `models` to load, and nothing
/// fetched. Nodes add their model store (`--data-dir`).
fn cluster_args(
    state: &Path,
    schema: &TestSchema,
    redis_prefix: &str,
    models: &[&str],
    extra_toml: &str,
) -> Vec<String> {
    let path = |name: &str| state.join(name).to_string_lossy().into_owned();
    let models: Vec<String> = models.iter().map(|m| format!("{m:?}")).collect();
    std::fs::write(
        state.join("kiln.toml"),
        format!("models = [{}]\nfetch = []\n{extra_toml}", models.join(", ")),
    )
    .expect("config");
    [
        "--config",
        &path("kiln.toml"),
        "--postgres-url",
        &schema.url(),
        "--redis-url",
        &redis_url(),
        "--redis-key-prefix",
        redis_prefix,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn kiln(args: &[&str], shared: &[String]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .args(shared)
        .output()
        .expect("kiln runs");
    assert!(
        output.status.success(),
        "kiln {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Nodes on the tests' model store.
async fn start_nodes(count: usize, state: &Path, shared: &[String]) -> Vec<Node> {
    let store = kiln_store::default_data_dir()
        .to_string_lossy()
        .into_owned();
    let per_node = vec![vec!["--data-dir".to_owned(), store]; count];
    start_nodes_with(state, shared, &per_node).await
}

/// One node per entry of `per_node`, each with those extra flags, named `node-{index}`.
async fn start_nodes_with(state: &Path, shared: &[String], per_node: &[Vec<String>]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for (index, extra) in per_node.iter().enumerate() {
        let port = free_port();
        let node_state = state.join(format!("node-{index}"));
        let path = |name: &str| node_state.join(name).to_string_lossy().into_owned();
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("serve")
            .args(shared)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--auth", "tokens"])
            .args(["--node-name", &format!("node-{index}")])
            .args(extra)
            .args(["--batch-db", &path("batches.db")])
            .args(["--gateway-db", &path("gateway.db")])
            .args(["--vectorize-dir", &path("vectorize")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kiln serve starts");
        nodes.push(Node {
            child,
            base: format!("http://127.0.0.1:{port}"),
        });
    }
    let client = reqwest::Client::new();
    for node in &mut nodes {
        let started = Instant::now();
        loop {
            let ready = client.get(format!("{}/readyz", node.base)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                node.child.try_wait().expect("process state").is_none(),
                "node {} exited before it was ready",
                node.base
            );
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{} not ready",
                node.base
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    nodes
}

/// Creates account `team` (paid) and a token with every scope through the CLI; its secret.
fn account_and_token(shared: &[String]) -> String {
    kiln(
        &["accounts", "create", "--id", "team", "--plan", "paid"],
        shared,
    );
    let created = kiln(
        &["tokens", "create", "--account", "team", "--scope", "all"],
        shared,
    );
    String::from_utf8_lossy(&created.stdout)
        .lines()
        .find(|line| line.starts_with("kiln_"))
        .expect("the CLI prints the secret")
        .to_owned()
}

/// What one test's cluster shares: a PostgreSQL schema and a Redis prefix of its own (both
/// deleted afterwards), a state directory, the flags every command gets, and a token with every
/// scope for account `team`, made with the CLI.
struct Cluster {
    schema: TestSchema,
    state: tempfile::TempDir,
    redis_prefix: String,
    shared: Vec<String>,
    token: String,
}

impl Cluster {
    /// `models` for the nodes to load; `extra_toml` added to their kiln.toml.
    fn new(models: &[&str], extra_toml: &str) -> Cluster {
        let schema = TestSchema::new("cluster");
        let state = tempfile::tempdir().expect("temp dir");
        let redis_prefix = format!("kiln-test-cluster:{}:", uuid::Uuid::new_v4().simple());
        let shared = cluster_args(state.path(), &schema, &redis_prefix, models, extra_toml);
        let token = account_and_token(&shared);
        Cluster {
            schema,
            state,
            redis_prefix,
            shared,
            token,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = kiln_accounts::purge_redis_prefix(&redis_url(), &self.redis_prefix);
    }
}

/// The status of an authenticated call to a route that needs `workers-ai:read`.
async fn search_status(client: &reqwest::Client, node: &Node, account: &str, token: &str) -> u16 {
    client
        .get(format!(
            "{}/client/v4/accounts/{account}/ai/models/search",
            node.base
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent")
        .status()
        .as_u16()
}

/// A token created through node A works on B and C; revoked through B, it is refused by A
/// (and C) within one second. The account and the first token come from the CLI, which
/// writes the same PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_on_one_node_works_on_all_and_its_revocation_reaches_all_within_a_second() {
    let _cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::new(&[], "");
    let (state, shared, admin) = (&cluster.state, &cluster.shared, &cluster.token);

    let nodes = start_nodes(3, state.path(), shared).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let client = reqwest::Client::new();
    for node in &nodes {
        assert_eq!(search_status(&client, node, "team", admin).await, 200);
    }

    let response = client
        .post(format!("{}/client/v4/accounts/team/tokens", a.base))
        .bearer_auth(admin)
        .json(&json!({"name": "made on A", "scopes": ["workers-ai:read"]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    let token = body["result"]["value"].as_str().expect("secret").to_owned();
    let token_id = body["result"]["id"].as_str().expect("id").to_owned();
    for node in [b, c] {
        let started = Instant::now();
        while search_status(&client, node, "team", &token).await != 200 {
            assert!(
                started.elapsed() < PROPAGATION,
                "{} does not know the new token",
                node.base
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(search_status(&client, a, "team", &token).await, 200);

    let revoked = client
        .delete(format!(
            "{}/client/v4/accounts/team/tokens/{token_id}",
            b.base
        ))
        .bearer_auth(admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(revoked.status(), 200);
    let revoked_at = Instant::now();
    for node in [a, c] {
        loop {
            let status = search_status(&client, node, "team", &token).await;
            if status == 401 {
                break;
            }
            assert_eq!(status, 200, "before the revocation arrives");
            assert!(
                revoked_at.elapsed() < PROPAGATION,
                "{} still accepts the revoked token after {:?}",
                node.base,
                revoked_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let refused_after = revoked_at.elapsed();
    assert!(refused_after < PROPAGATION, "{refused_after:?}");
    eprintln!("revoked on B, refused on A and C after {refused_after:?}");
    assert_eq!(search_status(&client, b, "team", &token).await, 401);
    // The admin token, untouched, still works everywhere; the CLI lists the revocation.
    assert_eq!(search_status(&client, c, "team", admin).await, 200);
    let listed = kiln(&["tokens", "list", "--account", "team"], shared);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&token_id) && l.contains("revoked")),
        "{listed}"
    );
}

const TEXT_MODEL: &str = "@cf/meta/llama-3.1-8b-instruct";
const LOCAL_TEXT_MODEL: &str = "smollm2-135m-instruct";

/// `POST …/ai/run/{TEXT_MODEL}{query}` on `node` as account `team`.
async fn run_text(
    client: &reqwest::Client,
    node: &Node,
    token: &str,
    query: &str,
    body: &Value,
) -> reqwest::Response {
    client
        .post(format!(
            "{}/client/v4/accounts/team/ai/run/{TEXT_MODEL}{query}",
            node.base
        ))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("sent")
}

async fn queue_call(client: &reqwest::Client, node: &Node, token: &str, body: Value) -> Value {
    let response = run_text(client, node, token, "?queueRequest=true", &body).await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

/// `(holder, unfinished items it holds)` per holder, from the shared queue itself.
fn claims_by_holder(schema: &TestSchema) -> Vec<(String, i64)> {
    let pool = kiln_postgres::Pool::open(&schema.url(), 1).expect("URL");
    pool.run(|client| {
        Ok(client
            .query(
                "SELECT claimed_by, count(*) FROM batch_items
                 WHERE NOT done AND claimed_by IS NOT NULL GROUP BY 1",
                &[],
            )?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect())
    })
    .expect("claims")
}

/// A batch of 50 generations submitted through node A runs on all three nodes; node B is
/// killed (SIGKILL) while it holds claims; its items are claimed again once their lease lapses,
/// and every item completes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_survives_a_node_killed_while_holding_claims() {
    let _cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    kiln_store::ensure_for_tests(LOCAL_TEXT_MODEL);
    let cluster = Cluster::new(&[LOCAL_TEXT_MODEL], "");
    let (schema, state, shared, token) = (
        &cluster.schema,
        &cluster.state,
        &cluster.shared,
        &cluster.token,
    );
    let mut nodes = start_nodes(3, state.path(), shared).await;
    let client = reqwest::Client::new();

    let requests: Vec<Value> = (0..50)
        .map(|i| {
            json!({
                "prompt": format!("Name a colour, then count to {i}."),
                "max_tokens": 24,
                "external_reference": format!("item-{i}"),
            })
        })
        .collect();
    let queued = queue_call(&client, &nodes[0], token, json!({"requests": requests})).await;
    let request_id = queued["result"]["request_id"]
        .as_str()
        .expect("request_id")
        .to_owned();

    // Kill node B (node-1) the moment it holds claims.
    let started = Instant::now();
    let held_by_b = loop {
        let held: i64 = claims_by_holder(schema)
            .iter()
            .filter(|(holder, _)| holder.starts_with("node-1/"))
            .map(|(_, count)| count)
            .sum();
        if held > 0 {
            break held;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "node B never claimed an item"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let b = nodes.remove(1);
    drop(b); // SIGKILL, then reaped

    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        let polled = queue_call(&client, &nodes[1], token, json!({"request_id": request_id})).await;
        if polled["result"].get("responses").is_some() {
            break polled["result"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the batch never finished: {polled}"
        );
        // Polls count against the account's 300 text generations a minute.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let responses = done["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 50);
    for (i, response) in responses.iter().enumerate() {
        assert_eq!(response["id"], i, "{response}");
        assert_eq!(response["external_reference"], format!("item-{i}"));
        assert_eq!(response["success"], true, "{response}");
        assert!(response["result"]["response"].is_string(), "{response}");
    }
    // Every item was saved once; those B held when it died were claimed again.
    let pool = kiln_postgres::Pool::open(&schema.url(), 1).expect("URL");
    let (unfinished, reclaimed): (i64, i64) = pool
        .run(|client| {
            let row = client.query_one(
                "SELECT count(*) FILTER (WHERE NOT done), count(*) FILTER (WHERE claims > 1)
                 FROM batch_items",
                &[],
            )?;
            Ok((row.get(0), row.get(1)))
        })
        .expect("counts");
    assert_eq!(unfinished, 0);
    assert!(
        reclaimed >= held_by_b,
        "{reclaimed} items claimed twice, node B held {held_by_b}"
    );
}

/// Sends a generation for `TEXT_MODEL` to `node`: (status, x-kiln-node, body).
async fn generate(
    client: &reqwest::Client,
    node: &Node,
    token: &str,
    body: Value,
) -> (u16, Option<String>, String) {
    let response = run_text(client, node, token, "", &body).await;
    let status = response.status().as_u16();
    let served_by = response
        .headers()
        .get("x-kiln-node")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, served_by, response.text().await.expect("body"))
}

/// Node A has no models; node C alone serves text generation. A generation streamed through A
/// comes from C event by event. With C killed, the next request through A gets 503 / 3053 at
/// once (and still does once C's directory row is stale), never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_on_another_node_streams_through_this_one_and_a_dead_node_costs_a_503() {
    let _cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    kiln_store::ensure_for_tests(LOCAL_TEXT_MODEL);
    let cluster = Cluster::new(&[], "");
    let (state, shared, token) = (&cluster.state, &cluster.shared, &cluster.token);
    let empty_store = state
        .path()
        .join("no-models")
        .to_string_lossy()
        .into_owned();
    let store = kiln_store::default_data_dir()
        .to_string_lossy()
        .into_owned();
    let flags = |data_dir: &str, models: &str| {
        let mut flags = vec!["--data-dir".to_owned(), data_dir.to_owned()];
        if !models.is_empty() {
            flags.extend(["--models".to_owned(), models.to_owned()]);
        }
        flags
    };
    let mut nodes = start_nodes_with(
        state.path(),
        shared,
        &[
            flags(&empty_store, ""),
            flags(&empty_store, ""),
            flags(&store, LOCAL_TEXT_MODEL),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let prompt = json!({"prompt": "Tell me about kilns.", "max_tokens": 24});

    // A learns of C within a heartbeat or two.
    let started = Instant::now();
    loop {
        let (status, served_by, body) = generate(&client, &nodes[0], token, prompt.clone()).await;
        if status == 200 {
            assert_eq!(served_by.as_deref(), Some("node-2"), "{body}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "A never forwarded to C: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Streamed: events arrive through A as C writes them.
    let mut streamed = json!({"stream": true});
    streamed["prompt"] = prompt["prompt"].clone();
    streamed["max_tokens"] = json!(24);
    let mut response = run_text(&client, &nodes[0], token, "", &streamed).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .split(';')
            .next(),
        Some("text/event-stream")
    );
    assert_eq!(response.headers()["x-kiln-node"], "node-2");
    let mut chunks = 0;
    let mut text = String::new();
    while let Some(chunk) = response.chunk().await.expect("stream") {
        chunks += 1;
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(chunks > 1, "one chunk: not streamed ({text})");
    assert!(text.matches("data: {").count() > 1, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // The OpenAI-compatible route too, whose model is named in the body.
    let chat = client
        .post(format!("{}/v1/chat/completions", nodes[0].base))
        .bearer_auth(token)
        .json(&json!({
            "model": TEXT_MODEL,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 8,
        }))
        .send()
        .await
        .expect("sent");
    assert_eq!(chat.status(), 200);
    assert_eq!(chat.headers()["x-kiln-node"], "node-2");
    let chat: Value = chat.json().await.expect("JSON");
    assert!(
        chat["choices"][0]["message"]["content"].is_string(),
        "{chat}"
    );

    // C dies: the request through A fails fast and clearly.
    drop(nodes.remove(2));
    for wait in [Duration::ZERO, Duration::from_secs(4)] {
        tokio::time::sleep(wait).await;
        let sent = Instant::now();
        let (status, _, body) = generate(&client, &nodes[0], token, prompt.clone()).await;
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "{:?}",
            sent.elapsed()
        );
        assert_eq!(status, 503, "{body}");
        let body: Value = serde_json::from_str(&body).expect("JSON envelope");
        assert_eq!(body["success"], false);
        assert_eq!(body["errors"][0]["code"], 3053, "{body}");
    }
}

/// An account's per-minute limit for text generation, spread round-robin over three processes:
/// the limit's requests are served, the next one, on any node, gets 429 / 3021 (the windows are
/// in the shared Redis). The limit is lowered to 60 so that all of them surely fall within one
/// minute on a loaded two-core machine; the literal 301st of Workers AI's 300 is
/// `cluster::the_301st_text_generation_over_three_nodes_is_refused` (in-process nodes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_generation_limit_holds_across_three_processes() {
    const LIMIT: usize = 60;
    let _cluster = ONE_CLUSTER_AT_A_TIME.lock().await;
    kiln_store::ensure_for_tests(LOCAL_TEXT_MODEL);
    let cluster = Cluster::new(
        &[LOCAL_TEXT_MODEL],
        &format!("[rpm_limits]\n\"Text Generation\" = {LIMIT}\n"),
    );
    let (state, shared, token) = (&cluster.state, &cluster.shared, &cluster.token);
    let nodes = start_nodes(3, state.path(), shared).await;
    let client = reqwest::Client::new();
    let prompt = json!({"prompt": "Hi", "max_tokens": 1});

    // Six at a time, each request to node i % 3.
    let statuses: Vec<u16> = futures::stream::iter(0..LIMIT)
        .map(|i| {
            let (client, node, token, prompt) = (&client, &nodes[i % 3], &token, &prompt);
            async move {
                run_text(client, node, token, "", prompt)
                    .await
                    .status()
                    .as_u16()
            }
        })
        .buffer_unordered(6)
        .collect()
        .await;
    let served = statuses.iter().filter(|status| **status == 200).count();
    assert_eq!(served, LIMIT, "{statuses:?}");
    for node in &nodes {
        let response = run_text(&client, node, token, "", &prompt).await;
        assert_eq!(response.status(), 429, "{}", node.base);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["errors"][0]["code"], 3021, "{body}");
    }
}
