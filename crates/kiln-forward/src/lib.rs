//! Nodes of a Kiln cluster: which node serves which model, and sending a request to it.
//!
//! [`NodeDirectory`] keeps one row per node in the cluster's PostgreSQL (`cluster_nodes`): its
//! name, the URL its API listens on, the models it serves and its load, rewritten every
//! second. Every node reads the others' rows on the same beat, so it knows within about a
//! second which live node serves what. [`Forwarder`] implements `kiln-http`'s
//! `PeerForwarder`: it picks a live node for a model (by `x-session-affinity` when the request
//! names one, so a conversation keeps landing where its KV cache is, else by load) and proxies
//! the request to it, streaming both ways.

mod directory;
mod proxy;

pub use directory::{Announcement, NodeDirectory, ALIVE_WITHIN, HEARTBEAT};
pub use proxy::Forwarder;
