//! Where fine-tunes are kept: files under a directory (`files.rs`, one node's default) or a
//! PostgreSQL database every node of a cluster shares (`postgres.rs`). `FinetuneStore` checks
//! names, limits and assets; a backend only stores and finds them.

mod files;
mod postgres;

use std::path::PathBuf;

use kiln_core::limits::LoraLimits;
use kiln_core::KilnResult;

use crate::{Finetune, TensorHeader};

pub(crate) use files::{sync_dir, Files};
pub(crate) use postgres::Postgres;

/// The backend of a store.
#[derive(Debug, Clone)]
pub enum FinetuneDb {
    /// `{root}/{account}/{id}/` holding `finetune.json` and the assets.
    Files(PathBuf),
    /// Rows and asset bytes in PostgreSQL; adapters are written under `cache` on first use
    /// (they never change once uploaded, so a cached copy never goes stale).
    Postgres { url: String, cache: PathBuf },
}

pub(crate) trait Backend: Send + Sync {
    /// Adds `finetune` unless the account already has one by its name or `max_per_account`
    /// fine-tunes (checked and added atomically).
    fn insert(&self, account: &str, finetune: &Finetune, max_per_account: usize) -> KilnResult<()>;

    /// The account's fine-tunes, oldest first.
    fn list(&self, account: &str) -> KilnResult<Vec<Finetune>>;

    /// Every account's public fine-tunes, oldest first.
    fn list_public(&self) -> KilnResult<Vec<Finetune>>;

    /// One asset's bytes, if uploaded.
    fn asset(&self, account: &str, id: &str, file_name: &str) -> KilnResult<Option<Vec<u8>>>;

    /// Whether an asset was uploaded (without reading it: the request path asks).
    fn has_asset(&self, account: &str, id: &str, file_name: &str) -> KilnResult<bool>;

    /// Stores an asset; refused if it was uploaded already.
    fn put_asset(
        &self,
        account: &str,
        id: &str,
        file_name: &str,
        contents: &[u8],
    ) -> KilnResult<()>;

    /// The tensors the uploaded weights declare, reading only their header (to check an
    /// adapter_config.json uploaded after its weights); `None` before the weights' upload.
    fn weights_header(
        &self,
        account: &str,
        id: &str,
        limits: &LoraLimits,
    ) -> KilnResult<Option<Vec<TensorHeader>>>;

    /// A local directory holding both assets of a fine-tune that has them, for the engine to
    /// load from.
    fn local_dir(&self, account: &str, id: &str) -> KilnResult<PathBuf>;
}
