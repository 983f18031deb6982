//! The cluster's node directory: each node announces itself (its API's URL, the models it
//! serves, its load) every [`HEARTBEAT`] and learns the others' announcements, over NATS
//! (`nats.rs`, when the node has `--nats-url`) or in a PostgreSQL table (`postgres.rs`).

mod nats;
mod postgres;

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use kiln_core::{ErrorKind, KilnError, KilnResult, Task};
use kiln_http::forward::{Affinity, Peer};

/// How often a node announces itself (and, on PostgreSQL, rereads the others).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from for longer is not sent requests.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(3);
/// A node silent for longer is forgotten: its models are simply not served any more.
const FORGET_AFTER: Duration = Duration::from_secs(10 * 60);
/// A request with a shared prefix goes to the prefix's node unless that node has this many
/// more requests in flight than the least busy one.
const PREFIX_SLACK: u32 = 4;

/// Where the nodes of a cluster meet.
pub enum DirectoryBackend {
    /// The `cluster_nodes` table of the cluster's database.
    Postgres { url: String },
    /// Announcements published on `subject` (one subject per cluster).
    Nats {
        bus: Arc<kiln_nats::Bus>,
        subject: String,
    },
}

/// What a node tells the others about itself on each beat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announcement {
    /// Model ids it answers: local names, alias ids, and `task:<name>` for each task whose
    /// catalog ids it answers by default.
    pub serves: Vec<String>,
    /// Requests it is serving now.
    pub load: u32,
}

/// Another node as last heard of.
#[derive(Debug, Clone)]
struct PeerRow {
    peer: Peer,
    serves: HashSet<String>,
    load: u32,
    /// When it announced itself, on this node's clock.
    seen: Instant,
}

impl PeerRow {
    /// A node whose announcement is `age` old now.
    fn seen(peer: Peer, serves: HashSet<String>, load: u32, age: Duration) -> Self {
        let now = Instant::now();
        Self {
            peer,
            serves,
            load,
            seen: now.checked_sub(age).unwrap_or(now),
        }
    }
}

/// This node's view of the others; the heartbeat thread stops when the last handle is dropped.
pub struct NodeDirectory {
    name: String,
    peers: RwLock<Vec<PeerRow>>,
}

type Announcer = Box<dyn Fn() -> Option<Announcement> + Send>;

/// One way of announcing this node and hearing of the others.
trait Beacon: Send {
    /// Announces `announcement` (`None`: this node is leaving) and updates `directory`.
    fn beat(
        &self,
        directory: &NodeDirectory,
        url: &str,
        announcement: Option<Announcement>,
    ) -> KilnResult<()>;
}

impl NodeDirectory {
    /// Joins the cluster through `backend` as `name`, reachable at `url`. `announce` is called
    /// on every beat; `None` (the node is draining) takes it out of the directory, so others
    /// stop sending it requests.
    pub fn join(
        backend: DirectoryBackend,
        name: &str,
        url: &str,
        announce: impl Fn() -> Option<Announcement> + Send + 'static,
    ) -> KilnResult<Arc<NodeDirectory>> {
        let directory = Arc::new(NodeDirectory {
            name: name.to_owned(),
            peers: RwLock::new(Vec::new()),
        });
        let beacon: Box<dyn Beacon> = match backend {
            DirectoryBackend::Postgres { url } => Box::new(postgres::TableBeacon::open(&url)?),
            DirectoryBackend::Nats { bus, subject } => Box::new(nats::BusBeacon::listen(
                bus,
                subject,
                Arc::downgrade(&directory),
            )?),
        };
        let announce: Announcer = Box::new(announce);
        let url = url.to_owned();
        // One beat now, so the node knows its peers before it serves.
        beacon.beat(&directory, &url, announce())?;
        let weak = Arc::downgrade(&directory);
        std::thread::Builder::new()
            .name("kiln-cluster-beat".into())
            .spawn(move || keep_beating(beacon.as_ref(), &weak, &url, &announce))
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
        affinity: Affinity<'_>,
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
        let (alive, gone): (Vec<&PeerRow>, Vec<&PeerRow>) =
            serving.partition(|row| row.seen.elapsed() <= ALIVE_WITHIN);
        let load = |row: &PeerRow| row.load.saturating_add(extra_load(&row.peer.name));
        let least_busy = alive
            .iter()
            .min_by_key(|row| (load(row), row.peer.name.clone()));
        // Rendezvous hashing: a session (or prefix) keeps its node while that node lives, and
        // only the sessions of a node that leaves move.
        let preferred = |key: &str| {
            alive
                .iter()
                .max_by_key(|row| rendezvous(key, &row.peer.name))
        };
        let chosen = match affinity {
            Affinity::Session(session) => preferred(session),
            Affinity::Prefix(prefix) => match (preferred(prefix), least_busy) {
                (Some(own), Some(least))
                    if load(own) > load(least).saturating_add(PREFIX_SLACK) =>
                {
                    Some(least)
                }
                (own, _) => own,
            },
            Affinity::None => least_busy,
        };
        if let Some(row) = chosen {
            return Ok(Some(row.peer.clone()));
        }
        match gone.iter().max_by_key(|row| row.seen) {
            Some(row) => Err(KilnError::new(
                ErrorKind::NodeUnavailable,
                format!(
                    "no live node serves {model}: {} last answered {} s ago",
                    row.peer.name,
                    row.seen.elapsed().as_secs()
                ),
            )
            .with_retry_after(1)),
            None => Ok(None),
        }
    }

    /// Replaces the view of the others (a backend that reads them all at once).
    fn replace_peers(&self, rows: Vec<PeerRow>) {
        *self.peers.write().unwrap_or_else(|e| e.into_inner()) = rows;
    }

    /// Records one node's announcement, or its leaving (a backend that hears them one by one);
    /// forgets nodes silent for [`FORGET_AFTER`].
    fn heard(&self, name: &str, row: Option<PeerRow>) {
        if name == self.name {
            return;
        }
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        peers.retain(|known| known.peer.name != name && known.seen.elapsed() < FORGET_AFTER);
        peers.extend(row);
    }
}

fn rendezvous(session: &str, node: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (session, node).hash(&mut hasher);
    hasher.finish()
}

fn keep_beating(
    beacon: &dyn Beacon,
    directory: &Weak<NodeDirectory>,
    url: &str,
    announce: &Announcer,
) {
    loop {
        std::thread::sleep(HEARTBEAT);
        let Some(directory) = directory.upgrade() else {
            return;
        };
        if let Err(error) = beacon.beat(&directory, url, announce()) {
            tracing::warn!(error = %error.message, "cluster heartbeat failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, serves: &[&str], load: u32, age_ms: u64) -> PeerRow {
        PeerRow::seen(
            Peer {
                name: name.to_owned(),
                url: format!("http://{name}:8787"),
            },
            serves.iter().map(|s| (*s).to_owned()).collect(),
            load,
            Duration::from_millis(age_ms),
        )
    }

    fn directory(rows: Vec<PeerRow>) -> NodeDirectory {
        NodeDirectory {
            name: "me".into(),
            peers: RwLock::new(rows),
        }
    }

    fn pick(directory: &NodeDirectory, model: &str, task: Option<Task>) -> Option<String> {
        directory
            .locate(model, task, Affinity::None, |_| 0)
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
            .locate("smollm2", None, Affinity::None, |peer| {
                if peer == "b" {
                    10
                } else {
                    0
                }
            })
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
                all.locate("m", None, Affinity::Session(s), |_| 0)
                    .expect("ok")
                    .expect("a node")
                    .name
            })
            .collect();
        // Deterministic, and spread over more than one node.
        for (session, node) in sessions.iter().zip(&placed) {
            let again = all
                .locate("m", None, Affinity::Session(session), |_| 0)
                .expect("ok");
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
                .locate("m", None, Affinity::Session(session), |_| 0)
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
        let error = nodes.locate("m", None, Affinity::None, |_| 0).unwrap_err();
        assert_eq!((error.status(), error.code()), (503, 3053));
        assert!(error.message.contains("gone"), "{}", error.message);
        assert_eq!(error.retry_after_secs, Some(1));
    }

    #[test]
    fn a_shared_prefix_keeps_its_node_until_that_node_is_much_busier() {
        let nodes = directory(vec![row("a", &["m"], 0, 0), row("b", &["m"], 0, 0)]);
        let pick = |affinity, busy: &str, load: u32| {
            nodes
                .locate(
                    "m",
                    None,
                    affinity,
                    |peer| if peer == busy { load } else { 0 },
                )
                .expect("ok")
                .expect("a node")
                .name
        };
        // The node the digest hashes to (as a session would), whichever of the two it is.
        let preferred = pick(Affinity::Session("prompt-digest"), "", 0);
        let other = if preferred == "a" { "b" } else { "a" };
        let prefix = Affinity::Prefix("prompt-digest");
        assert_eq!(pick(prefix, &preferred, 0), preferred);
        assert_eq!(
            pick(prefix, &preferred, PREFIX_SLACK),
            preferred,
            "a little busier"
        );
        assert_eq!(
            pick(prefix, &preferred, PREFIX_SLACK + 1),
            other,
            "much busier"
        );
        // A session never moves for load.
        let session = Affinity::Session("prompt-digest");
        assert_eq!(pick(session, &preferred, 100), preferred);
    }
}
