//! The cluster's node directory in PostgreSQL.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use kiln_core::{ErrorKind, KilnError, KilnResult, Task};
use kiln_http::forward::Peer;
use kiln_postgres::{Migration, PgError, Pool};

/// How often a node rewrites its row and rereads the others'.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node whose row is older than this is not sent requests.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(3);
/// A node silent for longer is forgotten: its models are simply not served any more.
const FORGET_AFTER_MS: i64 = 10 * 60 * 1000;
/// The database's clock in milliseconds: rows age on one clock whatever the nodes' say.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "the nodes of a cluster and what they serve",
    sql: "
CREATE TABLE cluster_nodes (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    serves TEXT[] NOT NULL,
    load INTEGER NOT NULL,
    seen_ms BIGINT NOT NULL
);
",
}];

/// What a node tells the others about itself on each beat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announcement {
    /// Model ids it answers: local names, alias ids, and `task:<name>` for each task whose
    /// catalog ids it answers by default.
    pub serves: Vec<String>,
    /// Requests it is serving now.
    pub load: u32,
}

/// Another node as last read.
#[derive(Debug, Clone)]
struct PeerRow {
    peer: Peer,
    serves: HashSet<String>,
    load: u32,
    age_ms: i64,
}

/// This node's row and its view of the others'; the heartbeat thread stops when the last
/// handle is dropped.
pub struct NodeDirectory {
    name: String,
    peers: RwLock<Vec<PeerRow>>,
}

type Announcer = Box<dyn Fn() -> Option<Announcement> + Send>;

impl NodeDirectory {
    /// Joins the cluster at `postgres_url` as `name`, reachable at `url`. `announce` is called
    /// on every beat; `None` (the node is draining) takes its row out, so others stop sending
    /// it requests.
    pub fn join(
        postgres_url: &str,
        name: &str,
        url: &str,
        announce: impl Fn() -> Option<Announcement> + Send + 'static,
    ) -> KilnResult<Arc<NodeDirectory>> {
        let pool = Pool::open(postgres_url, 1).map_err(storage)?;
        pool.migrate("nodes", MIGRATIONS).map_err(storage)?;
        let directory = Arc::new(NodeDirectory {
            name: name.to_owned(),
            peers: RwLock::new(Vec::new()),
        });
        let announce: Announcer = Box::new(announce);
        let url = url.to_owned();
        // One beat now, so the node knows its peers before it serves.
        beat(&pool, &directory, &url, &announce)?;
        let weak = Arc::downgrade(&directory);
        std::thread::Builder::new()
            .name("kiln-cluster-beat".into())
            .spawn(move || keep_beating(&pool, &weak, &url, &announce))
            .map_err(|error| KilnError::internal(format!("starting the heartbeat: {error}")))?;
        Ok(directory)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node to send `model` to. See `PeerForwarder::locate`.
    pub fn locate(
        &self,
        model: &str,
        task: Option<Task>,
        affinity: Option<&str>,
        extra_load: impl Fn(&str) -> u32,
    ) -> KilnResult<Option<Peer>> {
        let task_key = task.map(|task| format!("task:{}", task.name()));
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        let serving = peers.iter().filter(|row| {
            row.serves.contains(model)
                || task_key
                    .as_ref()
                    .is_some_and(|key| row.serves.contains(key))
        });
        let alive_ms = i64::try_from(ALIVE_WITHIN.as_millis()).unwrap_or(i64::MAX);
        let (alive, gone): (Vec<&PeerRow>, Vec<&PeerRow>) =
            serving.partition(|row| row.age_ms <= alive_ms);
        let chosen = match affinity {
            // Rendezvous hashing: a session keeps its node while that node lives, and only
            // the sessions of a node that leaves move.
            Some(session) => alive
                .iter()
                .max_by_key(|row| rendezvous(session, &row.peer.name)),
            None => alive.iter().min_by_key(|row| {
                (
                    row.load.saturating_add(extra_load(&row.peer.name)),
                    row.peer.name.clone(),
                )
            }),
        };
        if let Some(row) = chosen {
            return Ok(Some(row.peer.clone()));
        }
        match gone.iter().min_by_key(|row| row.age_ms) {
            Some(row) => Err(KilnError::new(
                ErrorKind::NodeUnavailable,
                format!(
                    "no live node serves {model}: {} last answered {} s ago",
                    row.peer.name,
                    row.age_ms / 1000
                ),
            )
            .with_retry_after(1)),
            None => Ok(None),
        }
    }
}

fn rendezvous(session: &str, node: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (session, node).hash(&mut hasher);
    hasher.finish()
}

fn keep_beating(pool: &Pool, directory: &Weak<NodeDirectory>, url: &str, announce: &Announcer) {
    loop {
        std::thread::sleep(HEARTBEAT);
        let Some(directory) = directory.upgrade() else {
            return;
        };
        if let Err(error) = beat(pool, &directory, url, announce) {
            tracing::warn!(error = %error.message, "cluster heartbeat failed");
        }
    }
}

/// Writes this node's row (or removes it while draining) and reads everyone else's.
fn beat(pool: &Pool, directory: &NodeDirectory, url: &str, announce: &Announcer) -> KilnResult<()> {
    let name = directory.name.clone();
    let url = url.to_owned();
    let announcement = announce();
    let upsert = format!(
        "INSERT INTO cluster_nodes (name, url, serves, load, seen_ms)
         VALUES ($1, $2, $3, $4, {NOW_MS})
         ON CONFLICT (name) DO UPDATE SET url = excluded.url, serves = excluded.serves,
             load = excluded.load, seen_ms = excluded.seen_ms"
    );
    let select = format!(
        "SELECT name, url, serves, load, {NOW_MS} - seen_ms FROM cluster_nodes
         WHERE name <> $1 AND seen_ms > {NOW_MS} - $2"
    );
    let rows = pool
        .run(move |client| {
            match &announcement {
                Some(announcement) => {
                    let load = i32::try_from(announcement.load).unwrap_or(i32::MAX);
                    client.execute(&upsert, &[&name, &url, &announcement.serves, &load])?;
                }
                None => {
                    client.execute("DELETE FROM cluster_nodes WHERE name = $1", &[&name])?;
                }
            }
            let rows = client.query(&select, &[&name, &FORGET_AFTER_MS])?;
            Ok(rows
                .iter()
                .map(|row| PeerRow {
                    peer: Peer {
                        name: row.get(0),
                        url: row.get(1),
                    },
                    serves: row.get::<_, Vec<String>>(2).into_iter().collect(),
                    load: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
                    age_ms: row.get(4),
                })
                .collect::<Vec<_>>())
        })
        .map_err(storage)?;
    *directory.peers.write().unwrap_or_else(|e| e.into_inner()) = rows;
    Ok(())
}

fn storage(error: PgError) -> KilnError {
    error.into_kiln("cluster directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, serves: &[&str], load: u32, age_ms: i64) -> PeerRow {
        PeerRow {
            peer: Peer {
                name: name.to_owned(),
                url: format!("http://{name}:8787"),
            },
            serves: serves.iter().map(|s| (*s).to_owned()).collect(),
            load,
            age_ms,
        }
    }

    fn directory(rows: Vec<PeerRow>) -> NodeDirectory {
        NodeDirectory {
            name: "me".into(),
            peers: RwLock::new(rows),
        }
    }

    fn pick(directory: &NodeDirectory, model: &str, task: Option<Task>) -> Option<String> {
        directory
            .locate(model, task, None, |_| 0)
            .expect("no error")
            .map(|peer| peer.name)
    }

    #[test]
    fn the_least_loaded_live_node_serving_the_model_or_its_task_is_chosen() {
        let nodes = directory(vec![
            row("a", &["smollm2"], 5, 100),
            row("b", &["smollm2", "task:Text Generation"], 1, 200),
            row("c", &["whisper"], 0, 100),
            row("dead", &["smollm2"], 0, 60_000),
        ]);
        assert_eq!(pick(&nodes, "smollm2", None).as_deref(), Some("b"));
        assert_eq!(
            pick(
                &nodes,
                "@cf/meta/llama-3.1-8b-instruct",
                Some(Task::TextGeneration)
            )
            .as_deref(),
            Some("b")
        );
        assert_eq!(pick(&nodes, "whisper", None).as_deref(), Some("c"));
        assert_eq!(pick(&nodes, "nothing", None), None);
        // What this node already has in flight to b counts against b.
        let chosen = nodes
            .locate(
                "smollm2",
                None,
                None,
                |peer| if peer == "b" { 10 } else { 0 },
            )
            .expect("no error");
        assert_eq!(chosen.map(|p| p.name).as_deref(), Some("a"));
    }

    #[test]
    fn a_session_stays_on_its_node_and_moves_only_when_that_node_leaves() {
        let names = ["a", "b", "c", "d"];
        let all = directory(names.iter().map(|n| row(n, &["m"], 0, 0)).collect());
        let sessions: Vec<String> = (0..64).map(|i| format!("session-{i}")).collect();
        let placed: Vec<String> = sessions
            .iter()
            .map(|s| {
                all.locate("m", None, Some(s), |_| 0)
                    .expect("ok")
                    .expect("a node")
                    .name
            })
            .collect();
        // Deterministic, and spread over more than one node.
        for (session, node) in sessions.iter().zip(&placed) {
            let again = all.locate("m", None, Some(session), |_| 0).expect("ok");
            assert_eq!(again.map(|p| p.name).as_ref(), Some(node));
        }
        assert!(placed.iter().any(|n| n != &placed[0]));
        // Without c, only c's sessions move.
        let without_c = directory(
            names
                .iter()
                .filter(|n| **n != "c")
                .map(|n| row(n, &["m"], 0, 0))
                .collect(),
        );
        for (session, node) in sessions.iter().zip(&placed) {
            let now = without_c
                .locate("m", None, Some(session), |_| 0)
                .expect("ok")
                .expect("a node")
                .name;
            if node != "c" {
                assert_eq!(&now, node, "{session} moved off a live node");
            }
        }
    }

    #[test]
    fn a_model_served_only_by_silent_nodes_is_a_503() {
        let nodes = directory(vec![row("gone", &["m"], 0, 4_000)]);
        let error = nodes.locate("m", None, None, |_| 0).unwrap_err();
        assert_eq!((error.status(), error.code()), (503, 3053));
        assert!(error.message.contains("gone"), "{}", error.message);
        assert_eq!(error.retry_after_secs, Some(1));
    }
}
