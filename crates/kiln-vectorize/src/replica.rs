//! Several nodes sharing one Vectorize. With a [`ChangeLog`] set (NATS JetStream, in
//! `kiln-nats`), a node validates a change against what it has applied, appends it to the
//! shared log and answers; every node, this one included, applies the log in order to its own
//! store through [`VectorStore::apply_change`]. Queries read the local store, so each node
//! answers with what it has applied, and `processedUpToMutation` says how far that is: the
//! consistency Workers AI's Vectorize promises, now per node.
//!
//! Applying is deterministic (same changes, same order, same checks), so every node makes the
//! same decisions, including refusing a change that was valid where it was accepted but is
//! not by the time it is applied (two nodes creating one index name at once: the first wins
//! everywhere, and the second caller is told so).

use std::sync::Arc;

use kiln_core::{ErrorKind, KilnError, KilnResult};
use serde_json::Value;

use crate::codec::{
    decode_mutation, write_mutation, ByteReader, ByteWriter, DecodeResult, MutationIdentity,
    MutationOp,
};
use crate::config::IndexConfig;
use crate::filter::{MetadataIndexType, MAX_METADATA_INDEXES};
use crate::index::IndexHandle;
use crate::store::{Slot, VectorStore};

/// The shared, ordered log of changes (positions 1, 2, 3… as the log numbers them).
pub trait ChangeLog: Send + Sync {
    /// Appends `change` durably; returns its position. It reaches this node's store through
    /// the log like any other node's, not here.
    fn append(&self, change: &Change) -> KilnResult<u64>;
    /// The position of the last change in the log now.
    fn head(&self) -> KilnResult<u64>;
    /// Blocks (bounded) until this node has applied the log up to `position`.
    fn wait_applied(&self, position: u64) -> KilnResult<()>;
}

/// One change to the indexes of an account, as the shared log carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    account: String,
    /// Unique per change: appending one twice (a retry) is recognised by the log.
    id: String,
    kind: ChangeKind,
}

#[derive(Debug, Clone, PartialEq)]
enum ChangeKind {
    CreateIndex(IndexConfig),
    DeleteIndex(String),
    Mutate {
        index: String,
        identity: MutationIdentity,
        op: MutationOp,
    },
}

const FORMAT_VERSION: u8 = 1;

impl Change {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = ByteWriter::default();
        out.u8(FORMAT_VERSION);
        out.str(&self.account);
        out.str(&self.id);
        match &self.kind {
            ChangeKind::CreateIndex(config) => {
                out.u8(1);
                out.str(&serde_json::to_string(config).unwrap_or_default());
            }
            ChangeKind::DeleteIndex(name) => {
                out.u8(2);
                out.str(name);
            }
            ChangeKind::Mutate {
                index,
                identity,
                op,
            } => {
                out.u8(3);
                out.str(index);
                // The index's own log format; its per-index sequence is given when applied.
                write_mutation(&mut out, 0, identity.unix_millis, &identity.mutation_id, op);
            }
        }
        out.bytes
    }

    pub fn decode(bytes: &[u8]) -> DecodeResult<Self> {
        let mut input = ByteReader::new(bytes);
        let version = input.u8()?;
        if version != FORMAT_VERSION {
            return Err(format!(
                "change format {version}; this build reads {FORMAT_VERSION}"
            ));
        }
        let account = input.str()?;
        let id = input.str()?;
        let kind = match input.u8()? {
            1 => {
                let config: IndexConfig = serde_json::from_str(&input.str()?)
                    .map_err(|error| format!("index config: {error}"))?;
                ChangeKind::CreateIndex(config)
            }
            2 => ChangeKind::DeleteIndex(input.str()?),
            3 => {
                let index = input.str()?;
                let mutation = decode_mutation(input.rest())?;
                ChangeKind::Mutate {
                    index,
                    identity: MutationIdentity {
                        mutation_id: mutation.mutation_id,
                        unix_millis: mutation.unix_millis,
                    },
                    op: mutation.op,
                }
            }
            other => return Err(format!("unknown change kind {other}")),
        };
        if !input.is_empty() {
            return Err("trailing bytes after a change".into());
        }
        Ok(Self { account, id, kind })
    }
}

/// Whether `op` may be applied given the metadata indexes `declared` so far.
pub(crate) fn check_declared(
    op: &MutationOp,
    declared: &[(String, MetadataIndexType)],
) -> KilnResult<()> {
    match op {
        MutationOp::CreateMetadataIndex { property, .. } => {
            if declared.iter().any(|(existing, _)| existing == property) {
                return Err(KilnError::new(
                    ErrorKind::Conflict,
                    format!("a metadata index on {property:?} already exists"),
                ));
            }
            if declared.len() >= MAX_METADATA_INDEXES {
                return Err(KilnError::bad_input(format!(
                    "an index may have at most {MAX_METADATA_INDEXES} metadata indexes"
                )));
            }
            Ok(())
        }
        MutationOp::DeleteMetadataIndex { property } => {
            if declared.iter().any(|(existing, _)| existing == property) {
                Ok(())
            } else {
                Err(KilnError::new(
                    ErrorKind::NotFound,
                    format!("there is no metadata index on {property:?}"),
                ))
            }
        }
        MutationOp::Insert(_) | MutationOp::Upsert(_) | MutationOp::Delete(_) => Ok(()),
    }
}

/// Submits `op` to `handle` with its checks, under the index's writer lock.
fn submit_checked(
    handle: &IndexHandle,
    identity: MutationIdentity,
    op: MutationOp,
) -> KilnResult<String> {
    // Only metadata-index changes have checks, and they are small to copy.
    let probe = matches!(
        op,
        MutationOp::CreateMetadataIndex { .. } | MutationOp::DeleteMetadataIndex { .. }
    )
    .then(|| op.clone());
    handle.submit_as(identity, op, |declared| {
        probe
            .as_ref()
            .map_or(Ok(()), |probe| check_declared(probe, declared))
    })
}

impl VectorStore {
    /// Shares this store with other nodes through `log` from now on; `false` if it already
    /// was. Start applying the log (the log's reader calls [`Self::apply_change`]) before
    /// serving requests.
    pub fn share_through(&self, log: Arc<dyn ChangeLog>) -> bool {
        self.shared_log.set(log).is_ok()
    }

    pub(crate) fn shared_log(&self) -> Option<&Arc<dyn ChangeLog>> {
        self.shared_log.get()
    }

    /// Applies one change from the shared log to this node's files. An `Err` means the change
    /// was refused here, as it is on every node (it is skipped, not retried).
    pub fn apply_change(&self, change: Change) -> KilnResult<()> {
        let Change { account, kind, .. } = change;
        match kind {
            ChangeKind::CreateIndex(config) => self.create_local(&account, config).map(drop),
            ChangeKind::DeleteIndex(name) => self.delete_local(&account, &name),
            ChangeKind::Mutate {
                index,
                identity,
                op,
            } => {
                let handle = self.local_handle(&account, &index)?;
                submit_checked(&handle, identity, op).map(drop)
            }
        }
    }

    /// Applies `op` here, or with a shared log, checks it against what this node has applied
    /// and appends it (every node applies it later, in the log's order).
    pub(crate) fn mutate(
        &self,
        account: &str,
        handle: &IndexHandle,
        op: MutationOp,
    ) -> KilnResult<String> {
        let identity = MutationIdentity::fresh();
        let Some(log) = self.shared_log() else {
            return submit_checked(handle, identity, op);
        };
        handle.check(|declared| check_declared(&op, declared))?;
        let mutation_id = identity.mutation_id.clone();
        let change = Change {
            account: account.to_owned(),
            id: mutation_id.clone(),
            kind: ChangeKind::Mutate {
                index: handle.config.name.clone(),
                identity,
                op,
            },
        };
        log.append(&change)?;
        Ok(mutation_id)
    }

    /// The index's slot; with a shared log, an index this node has not seen yet is looked for
    /// again once it has caught up (created through another node a moment ago).
    pub(crate) fn slot(&self, account: &str, name: &str) -> KilnResult<Arc<Slot>> {
        match self.local_slot(account, name) {
            Err(error) if error.kind == ErrorKind::NotFound && self.shared_log().is_some() => {
                self.catch_up()?;
                self.local_slot(account, name)
            }
            found => found,
        }
    }

    /// [`Self::local_handle`], after catching up as [`Self::slot`] does.
    pub(crate) fn handle(&self, account: &str, name: &str) -> KilnResult<Arc<IndexHandle>> {
        self.slot(account, name)?;
        self.local_handle(account, name)
    }

    /// With a shared log: waits until this node has applied everything appended before the
    /// call, so that index-level reads and checks see other nodes' creates and deletes.
    pub(crate) fn catch_up(&self) -> KilnResult<()> {
        match self.shared_log() {
            Some(log) => log.wait_applied(log.head()?),
            None => Ok(()),
        }
    }

    pub(crate) fn create_shared(
        &self,
        log: &Arc<dyn ChangeLog>,
        account: &str,
        config: IndexConfig,
    ) -> KilnResult<Value> {
        self.catch_up()?;
        self.check_can_create(account, &config.name)?;
        let change = Change {
            account: account.to_owned(),
            id: uuid::Uuid::new_v4().to_string(),
            kind: ChangeKind::CreateIndex(config.clone()),
        };
        log.wait_applied(log.append(&change)?)?;
        let created = self.local_slot(account, &config.name)?.config.clone();
        if created != config {
            // Another node created the name first; its create was applied, ours refused.
            return Err(index_exists(&config.name));
        }
        Ok(created.to_json())
    }

    pub(crate) fn delete_shared(
        &self,
        log: &Arc<dyn ChangeLog>,
        account: &str,
        name: &str,
    ) -> KilnResult<()> {
        self.catch_up()?;
        self.local_slot(account, name)?;
        let change = Change {
            account: account.to_owned(),
            id: uuid::Uuid::new_v4().to_string(),
            kind: ChangeKind::DeleteIndex(name.to_owned()),
        };
        log.wait_applied(log.append(&change)?)
    }
}

pub(crate) fn index_exists(name: &str) -> KilnError {
    KilnError::new(
        ErrorKind::Conflict,
        format!("vectorize index {name:?} already exists"),
    )
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;
