//! What the multi-process cluster tests share: `kiln serve` nodes on one PostgreSQL schema, one
//! Redis prefix and one NATS stream of their own (all removed afterwards), and a token for
//! account `team` made with the CLI.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln_postgres::TestSchema;

use crate::common::free_port;

/// One cluster at a time: each test runs three servers on the machine's two cores, and the
/// timing bars are about the cluster, not about contention between tests.
pub static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn redis_url() -> String {
    std::env::var("KILN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// One node: a `kiln serve` process with its own data directory; killed when dropped.
pub struct Node {
    pub child: Child,
    pub base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Flags every command of one cluster shares: its databases, `models` to load, and nothing
/// fetched. Nodes add their model store (`--data-dir`).
pub fn cluster_args(
    state: &Path,
    schema: &TestSchema,
    redis_prefix: &str,
    nats_stream: &str,
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
        "--nats-url",
        &kiln_nats::test_url(),
        "--nats-stream",
        nats_stream,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

pub fn kiln(args: &[&str], shared: &[String]) -> Output {
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
pub async fn start_nodes(count: usize, state: &Path, shared: &[String]) -> Vec<Node> {
    let store = kiln_store::default_data_dir()
        .to_string_lossy()
        .into_owned();
    let per_node = vec![vec!["--data-dir".to_owned(), store]; count];
    start_nodes_with(state, shared, &per_node).await
}

/// One node per entry of `per_node`, each with those extra flags, named `node-{index}`.
pub async fn start_nodes_with(
    state: &Path,
    shared: &[String],
    per_node: &[Vec<String>],
) -> Vec<Node> {
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
pub fn account_and_token(shared: &[String]) -> String {
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

/// What one test's cluster shares: a PostgreSQL schema, a Redis prefix and a NATS stream of its
/// own (all deleted afterwards), a state directory, the flags every command gets, and a token
/// with every scope for account `team`, made with the CLI.
pub struct Cluster {
    pub schema: TestSchema,
    pub state: tempfile::TempDir,
    pub redis_prefix: String,
    pub nats_stream: kiln_nats::TestStream,
    pub shared: Vec<String>,
    pub token: String,
}

impl Cluster {
    /// `models` for the nodes to load; `extra_toml` added to their kiln.toml.
    pub fn new(models: &[&str], extra_toml: &str) -> Cluster {
        let schema = TestSchema::new("cluster");
        let state = tempfile::tempdir().expect("temp dir");
        let redis_prefix = format!("kiln-test-cluster:{}:", uuid::Uuid::new_v4().simple());
        let nats_stream = kiln_nats::TestStream::new();
        let shared = cluster_args(
            state.path(),
            &schema,
            &redis_prefix,
            nats_stream.name(),
            models,
            extra_toml,
        );
        let token = account_and_token(&shared);
        Cluster {
            schema,
            state,
            redis_prefix,
            nats_stream,
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
