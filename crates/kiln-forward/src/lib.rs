//! Nodes of a Kiln cluster: which node serves which model, and sending a request to it.
//!
//! [`NodeDirectory`]: every node announces its name, the URL its API listens on, the models it
//! serves and its load every second, on NATS (`--nats-url`) or as a row in the cluster's
//! PostgreSQL (`cluster_nodes`), and learns the others' the same way, so it knows within about
//! a second which live node serves what. [`Forwarder`] implements `kiln-http`'s
//! `PeerForwarder`: it picks a live node for a model (by `x-session-affinity` when the request
//! names one, so a conversation keeps landing where its KV cache is, else by load) and proxies
//! the request to it, streaming both ways.

mod directory;
mod proxy;

pub use directory::{Announcement, DirectoryBackend, NodeDirectory, ALIVE_WITHIN, HEARTBEAT};
pub use proxy::Forwarder;
