//! The publish thread: with the cache in Redis, each new entry is stored there before its
//! request is acknowledged (the response's last byte waits for that), so a response that has
//! completed on one node is a cache hit on every other. Redis calls are bounded in time; one
//! that fails loses the entry (a later miss), never the request's log.

use std::sync::mpsc::{Receiver, Sender};

use tokio::sync::oneshot;

use crate::cache::redis::RedisCache;
use crate::cache::CacheEntry;

pub(super) enum Publish {
    /// Entries to store, each with its request's acknowledgement.
    Entries(Vec<(CacheEntry, oneshot::Sender<()>)>),
    /// Answered once everything sent before it is stored (or has failed).
    Flush(Sender<()>),
}

pub(super) fn run(cache: &RedisCache, jobs: Receiver<Publish>) {
    while let Ok(job) = jobs.recv() {
        match job {
            Publish::Entries(entries) => {
                let now_ms = kiln_core::time::unix_millis();
                // Failures are counted and logged by the cache; the request is done either way.
                cache.store(entries.iter().map(|(entry, _)| entry), now_ms);
                for (_, acknowledgement) in entries {
                    let _ = acknowledgement.send(());
                }
            }
            Publish::Flush(reply) => {
                let _ = reply.send(());
            }
        }
    }
}
