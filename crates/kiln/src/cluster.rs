//! Joining a cluster (`--nats-url` or `--postgres-url`): the node's place in the directory, what
//! it announces, and the forwarder that sends requests for models other nodes serve
//! (`kiln-forward`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kiln_forward::{Announcement, DirectoryBackend, Forwarder, NodeDirectory};
use kiln_http::forward::PeerForwarder;
use kiln_scheduler::ModelRegistry;

use crate::ServeConfig;

/// Where this node meets the others: NATS when it has a connection, else PostgreSQL; `None`
/// for a node on its own.
pub fn directory_backend(
    config: &ServeConfig,
    bus: Option<&Arc<kiln_nats::Bus>>,
) -> Option<DirectoryBackend> {
    match (bus, &config.postgres_url) {
        (Some(bus), _) => Some(DirectoryBackend::Nats {
            bus: bus.clone(),
            subject: config.nodes_subject(),
        }),
        (None, Some(url)) => Some(DirectoryBackend::Postgres { url: url.clone() }),
        (None, None) => None,
    }
}

/// Joins the directory through `backend` and returns the forwarder for the HTTP layer.
pub fn join(
    config: &ServeConfig,
    backend: DirectoryBackend,
    listening: SocketAddr,
    registry: Arc<ModelRegistry>,
    draining: Arc<AtomicBool>,
) -> anyhow::Result<Arc<dyn PeerForwarder>> {
    let name = config.node_name()?;
    let url = config.advertise_url(listening)?;
    let directory = NodeDirectory::join(backend, &name, &url, move || {
        // A draining node leaves the directory first, so the others stop sending it requests.
        (!draining.load(Ordering::SeqCst)).then(|| announcement(&registry))
    })
    .map_err(|error| anyhow::anyhow!("joining the cluster: {}", error.message))?;
    tracing::info!("cluster: node {name} at {url}");
    let forwarder = Forwarder::new(directory, config.request_timeout())
        .map_err(|error| anyhow::anyhow!("{}", error.message))?;
    Ok(Arc::new(forwarder))
}

/// Every id this node answers: its models' names, the ids aliased to them, and the tasks
/// whose catalog ids it answers by default.
fn announcement(registry: &ModelRegistry) -> Announcement {
    let available = registry.available();
    let mut serves: Vec<String> = Vec::new();
    for (name, task) in &available {
        serves.push(name.clone());
        if registry.is_task_default(name) {
            serves.push(format!("task:{}", task.name()));
        }
    }
    for (id, target) in registry.aliases() {
        if available.iter().any(|(name, _)| *name == target) {
            serves.push(id);
        }
    }
    serves.sort_unstable();
    serves.dedup();
    Announcement {
        serves,
        load: u32::try_from(kiln_http::forward::serving_now()).unwrap_or(u32::MAX),
    }
}
