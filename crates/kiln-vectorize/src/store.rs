//! [`VectorStore`]: every index of every account under one root directory,
//! `<root>/<account>/<index>/` (see `index`). Deleting an index first renames its directory
//! to `<root>/<account>/.deleted-<index>-<uuid>` (atomic), then removes it; leftovers of a
//! crash in between are removed at the next start, as are directories without a `config.json`
//! (a crash during creation). An index whose files are damaged is quarantined, at start or when
//! it is first opened (see `quarantine`).
//!
//! An open index costs an apply thread, a log file and its state in memory, so indexes are
//! opened on first use (not at start) and at most `max_open_indexes` idle ones stay open: the
//! least recently used are closed, and reopened (snapshot + log replay) when next used.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use kiln_core::{ErrorKind, KilnError, KilnResult};
use serde_json::{json, Value};

use crate::checks::{check_ids, check_vectors, file_name, property_name, read_dirs};
use crate::codec::MutationOp;
use crate::config::{validate_account, IndexConfig, MAX_INDEXES_PER_ACCOUNT};
use crate::filter::MetadataIndexType;
use crate::index::{IndexHandle, OpenError};
use crate::quarantine::{quarantine, QUARANTINE_DIR};
use crate::query::{Query, ReturnMetadata};
use crate::record::VectorRecord;
use crate::replica::{index_exists, ChangeLog};
use crate::search::{get_by_ids, run_query};
use crate::wal::sync_dir;
use crate::StoreOptions;

/// The default of `[limits.vectorize] max_vectors_per_write`.
pub const MAX_VECTORS_PER_MUTATION: usize = 5000;
pub const MAX_IDS_PER_CALL: usize = 5000;
pub const DEFAULT_LIST_COUNT: usize = 100;
pub const MAX_LIST_COUNT: usize = 1000;
const CONFIG_FILE: &str = "config.json";

type IndexKey = (String, String);

/// One index the store knows of, open or not.
pub(crate) struct Slot {
    dir: PathBuf,
    pub(crate) config: IndexConfig,
    state: Mutex<SlotState>,
    /// The store's use counter at this index's last use (for closing the least recently used).
    last_used: AtomicU64,
}

enum SlotState {
    Closed,
    Open(Arc<IndexHandle>),
    /// Removed from the store; a caller that found the slot before that gets 404.
    Deleted,
}

impl Slot {
    fn new(dir: PathBuf, config: IndexConfig) -> Self {
        Self {
            dir,
            config,
            state: Mutex::new(SlotState::Closed),
            last_used: AtomicU64::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct VectorStore {
    root: PathBuf,
    options: StoreOptions,
    indexes: RwLock<BTreeMap<IndexKey, Arc<Slot>>>,
    /// The slots whose index is open now.
    open: Mutex<Vec<Arc<Slot>>>,
    uses: AtomicU64,
    /// Set when several nodes share the indexes: changes go to this log, and reach this
    /// store (like every other node's) through [`VectorStore::apply_change`].
    pub(crate) shared_log: OnceLock<Arc<dyn ChangeLog>>,
}

fn check_room(
    indexes: &BTreeMap<IndexKey, Arc<Slot>>,
    account: &str,
    name: &str,
) -> KilnResult<()> {
    if indexes.contains_key(&(account.to_owned(), name.to_owned())) {
        return Err(index_exists(name));
    }
    let in_account = indexes.keys().filter(|(owner, _)| owner == account).count();
    if in_account >= MAX_INDEXES_PER_ACCOUNT {
        return Err(KilnError::bad_input(format!(
            "an account may have at most {MAX_INDEXES_PER_ACCOUNT} indexes"
        )));
    }
    Ok(())
}

pub(crate) fn io_error(what: &str, error: std::io::Error) -> KilnError {
    KilnError::internal(format!("vectorize storage: {what}: {error}"))
}

fn not_found(name: &str) -> KilnError {
    KilnError::new(
        ErrorKind::NotFound,
        format!("vectorize index {name:?} not found"),
    )
}

impl VectorStore {
    /// Opens `root` (e.g. `<data_dir>/vectorize`): reads every index's config; an index's data
    /// is loaded (its log replayed) when it is first used.
    pub fn open(root: &Path) -> KilnResult<Self> {
        Self::open_with_options(root, StoreOptions::default())
    }

    pub fn open_with_options(root: &Path, options: StoreOptions) -> KilnResult<Self> {
        fs::create_dir_all(root).map_err(|error| io_error("creating the root", error))?;
        let mut indexes = BTreeMap::new();
        for account_dir in read_dirs(root)? {
            let Some(account) = file_name(&account_dir) else {
                continue;
            };
            if validate_account(&account).is_err() {
                continue;
            }
            for index_dir in read_dirs(&account_dir)? {
                let Some(name) = file_name(&index_dir) else {
                    continue;
                };
                if name == QUARANTINE_DIR {
                    continue;
                }
                let config_path = index_dir.join(CONFIG_FILE);
                if name.starts_with(".deleted-") || !config_path.exists() {
                    let _ = fs::remove_dir_all(&index_dir);
                    continue;
                }
                let config: IndexConfig = match fs::read(&config_path)
                    .map_err(|error| io_error("reading an index config", error))
                    .and_then(|bytes| {
                        serde_json::from_slice(&bytes).map_err(|error| {
                            KilnError::internal(format!("{}: {error}", config_path.display()))
                        })
                    }) {
                    Ok(config) => config,
                    Err(error) => {
                        // Skipped (and moved aside if it can be), never fatal.
                        let _ = quarantine(&account_dir, &index_dir, &error.message);
                        continue;
                    }
                };
                indexes.insert(
                    (account.clone(), name),
                    Arc::new(Slot::new(index_dir, config)),
                );
            }
        }
        Ok(Self {
            root: root.to_owned(),
            options,
            indexes: RwLock::new(indexes),
            open: Mutex::new(Vec::new()),
            uses: AtomicU64::new(0),
            shared_log: OnceLock::new(),
        })
    }

    pub(crate) fn local_slot(&self, account: &str, name: &str) -> KilnResult<Arc<Slot>> {
        let indexes = self
            .indexes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        indexes
            .get(&(account.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    /// Refuses a create whose name is taken or whose account is full.
    pub(crate) fn check_can_create(&self, account: &str, name: &str) -> KilnResult<()> {
        let indexes = self
            .indexes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        check_room(&indexes, account, name)
    }

    /// Takes a damaged index out of the store and moves its files aside; the error answers the
    /// request that found the damage (later ones get 404).
    fn quarantine_slot(
        &self,
        account: &str,
        name: &str,
        slot: &Arc<Slot>,
        reason: &str,
    ) -> KilnError {
        self.indexes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|_, kept| !Arc::ptr_eq(kept, slot));
        let moved = quarantine(&self.root.join(account), &slot.dir, reason);
        let place = match &moved {
            Ok(target) => format!("moved to {}", target.display()),
            Err(error) => format!("could not be moved aside: {error}"),
        };
        KilnError::internal(format!(
            "vectorize index {name:?} is damaged ({reason}); it was taken out of service and {place}"
        ))
    }

    fn open_slots(&self) -> MutexGuard<'_, Vec<Arc<Slot>>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn touch(&self, slot: &Slot) {
        let now = self.uses.fetch_add(1, Ordering::Relaxed) + 1;
        slot.last_used.store(now, Ordering::Relaxed);
    }

    /// The open index, opening it first if needed; then closes idle indexes over the bound.
    /// While the caller holds the handle, its index is not closed.
    pub(crate) fn local_handle(&self, account: &str, name: &str) -> KilnResult<Arc<IndexHandle>> {
        let slot = self.local_slot(account, name)?;
        let handle = {
            let mut state = slot.state();
            match &*state {
                SlotState::Open(handle) => Arc::clone(handle),
                SlotState::Deleted => return Err(not_found(name)),
                SlotState::Closed => {
                    let opened = IndexHandle::open(&slot.dir, slot.config.clone(), self.options);
                    let handle = match opened {
                        Ok(handle) => Arc::new(handle),
                        Err(OpenError::Failed(error)) => return Err(error),
                        Err(OpenError::Damaged(reason)) => {
                            *state = SlotState::Deleted;
                            drop(state);
                            return Err(self.quarantine_slot(account, name, &slot, &reason));
                        }
                    };
                    *state = SlotState::Open(Arc::clone(&handle));
                    self.open_slots().push(Arc::clone(&slot));
                    handle
                }
            }
        };
        self.touch(&slot);
        self.close_idle();
        Ok(handle)
    }

    /// Closes the least recently used open indexes that nobody is using until at most
    /// `max_open_indexes` are open (or none is left to close). Closing drains the index's apply
    /// queue; its slot stays locked meanwhile, so a reopen never overlaps the old writer.
    fn close_idle(&self) {
        let limit = self.options.max_open_indexes.max(1);
        let mut candidates = {
            let open = self.open_slots();
            if open.len() <= limit {
                return;
            }
            open.clone()
        };
        candidates.sort_by_key(|slot| slot.last_used.load(Ordering::Relaxed));
        for slot in candidates {
            if self.open_slots().len() <= limit {
                return;
            }
            // A slot being opened or closed by someone else is skipped, never waited for.
            let Ok(mut state) = slot.state.try_lock() else {
                continue;
            };
            let idle = matches!(&*state, SlotState::Open(handle) if Arc::strong_count(handle) == 1);
            if !idle {
                continue;
            }
            if let SlotState::Open(handle) = std::mem::replace(&mut *state, SlotState::Closed) {
                handle.shut_down();
            }
            self.open_slots().retain(|open| !Arc::ptr_eq(open, &slot));
        }
    }

    /// How many indexes are open now (tests).
    #[doc(hidden)]
    pub fn open_index_count(&self) -> usize {
        self.open_slots().len()
    }

    pub fn create_index(&self, account: &str, body: &Value) -> KilnResult<Value> {
        validate_account(account)?;
        let config = IndexConfig::from_create_body(body, &kiln_core::time::utc_timestamp())?;
        match self.shared_log() {
            Some(log) => self.create_shared(log, account, config),
            None => self.create_local(account, config),
        }
    }

    pub(crate) fn create_local(&self, account: &str, config: IndexConfig) -> KilnResult<Value> {
        let mut indexes = self
            .indexes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        check_room(&indexes, account, &config.name)?;
        let key = (account.to_owned(), config.name.clone());
        let account_dir = self.root.join(account);
        let dir = account_dir.join(&config.name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)
            .map_err(|error| io_error("creating the index directory", error))?;
        let temporary = dir.join("config.json.tmp");
        let bytes = serde_json::to_vec_pretty(&config).map_err(KilnError::internal)?;
        fs::write(&temporary, bytes)
            .and_then(|()| fs::File::open(&temporary)?.sync_all())
            .and_then(|()| fs::rename(&temporary, dir.join(CONFIG_FILE)))
            .and_then(|()| sync_dir(&dir))
            .and_then(|()| sync_dir(&account_dir))
            .map_err(|error| io_error("writing the index config", error))?;
        let created = config.to_json();
        // Opened on first use, like every other index.
        indexes.insert(key, Arc::new(Slot::new(dir, config)));
        Ok(created)
    }

    /// Index objects of the account, by name.
    pub fn list_indexes(&self, account: &str) -> KilnResult<Vec<Value>> {
        self.catch_up()?;
        let indexes = self
            .indexes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(indexes
            .iter()
            .filter(|((owner, _), _)| owner == account)
            .map(|(_, slot)| slot.config.to_json())
            .collect())
    }

    pub fn get_index(&self, account: &str, name: &str) -> KilnResult<Value> {
        Ok(self.slot(account, name)?.config.to_json())
    }

    /// Removes the index and its files; the name can be used again at once.
    pub fn delete_index(&self, account: &str, name: &str) -> KilnResult<()> {
        match self.shared_log() {
            Some(log) => self.delete_shared(log, account, name),
            None => self.delete_local(account, name),
        }
    }

    pub(crate) fn delete_local(&self, account: &str, name: &str) -> KilnResult<()> {
        let slot = {
            let mut indexes = self
                .indexes
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            indexes
                .remove(&(account.to_owned(), name.to_owned()))
                .ok_or_else(|| not_found(name))?
        };
        {
            let mut state = slot.state();
            // Callers still holding the handle get 404 on their next write.
            if let SlotState::Open(handle) = std::mem::replace(&mut *state, SlotState::Deleted) {
                handle.shut_down();
                self.open_slots().retain(|open| !Arc::ptr_eq(open, &slot));
            }
        }
        let account_dir = self.root.join(account);
        let doomed = account_dir.join(format!(".deleted-{name}-{}", uuid::Uuid::new_v4()));
        fs::rename(account_dir.join(name), &doomed)
            .and_then(|()| sync_dir(&account_dir))
            .map_err(|error| io_error("deleting the index", error))?;
        if let Err(error) = fs::remove_dir_all(&doomed) {
            tracing::warn!(%error, dir = %doomed.display(), "vectorize: removing a deleted index; retried at next start");
        }
        Ok(())
    }

    pub fn info(&self, account: &str, name: &str) -> KilnResult<Value> {
        let handle = self.handle(account, name)?;
        let state = handle.read_state();
        let last = state.last.as_ref();
        Ok(json!({
            "dimensions": state.dimensions,
            "vectorCount": state.vector_count(),
            "processedUpToDatetime": last.map(|last| kiln_core::time::format_millis(last.unix_millis)),
            "processedUpToMutation": last.map(|last| last.mutation_id.clone()),
        }))
    }

    /// Ids that already exist when the mutation is applied are skipped (first write wins).
    pub fn insert(
        &self,
        account: &str,
        name: &str,
        vectors: Vec<VectorRecord>,
    ) -> KilnResult<String> {
        let handle = self.handle(account, name)?;
        check_vectors(&handle, &vectors, self.options.max_vectors_per_write)?;
        self.mutate(account, &handle, MutationOp::Insert(vectors))
    }

    /// Inserts or wholly replaces (values, metadata and namespace; no merge).
    pub fn upsert(
        &self,
        account: &str,
        name: &str,
        vectors: Vec<VectorRecord>,
    ) -> KilnResult<String> {
        let handle = self.handle(account, name)?;
        check_vectors(&handle, &vectors, self.options.max_vectors_per_write)?;
        self.mutate(account, &handle, MutationOp::Upsert(vectors))
    }

    pub fn delete_by_ids(&self, account: &str, name: &str, ids: Vec<String>) -> KilnResult<String> {
        let handle = self.handle(account, name)?;
        check_ids(&ids)?;
        self.mutate(account, &handle, MutationOp::Delete(ids))
    }

    pub fn query(&self, account: &str, name: &str, query: &Query) -> KilnResult<Value> {
        let handle = self.handle(account, name)?;
        let state = handle.read_state();
        run_query(&state, query, self.options.ann_min_vectors)
    }

    /// Answers `query` at once when that is cheap and cannot wait — the index has its graph,
    /// the query no namespace, filter, values or full metadata (bounded work: a graph search and
    /// rescoring topK × 2 vectors), and no writer holds the index — so that an async caller can
    /// run it in place. `None`: use [`Self::query`] (off the async runtime: it may block on the
    /// index's lock or search exactly).
    pub fn try_query_now(
        &self,
        account: &str,
        name: &str,
        query: &Query,
    ) -> Option<KilnResult<Value>> {
        let cheap = query.namespace.is_none()
            && query.filter.is_none()
            && !query.return_values
            && query.return_metadata != ReturnMetadata::All;
        if !cheap {
            return None;
        }
        let slot = self
            .indexes
            .try_read()
            .ok()?
            .get(&(account.to_owned(), name.to_owned()))
            .cloned()?;
        // A closed index is opened by `query`, off the async runtime.
        let handle = match &*slot.state.try_lock().ok()? {
            SlotState::Open(handle) => Arc::clone(handle),
            SlotState::Closed | SlotState::Deleted => return None,
        };
        self.touch(&slot);
        let state = handle.try_read_state()?;
        if state.ann.is_none() || state.vector_count() < self.options.ann_min_vectors {
            return None;
        }
        Some(run_query(&state, query, self.options.ann_min_vectors))
    }

    pub fn get_by_ids(&self, account: &str, name: &str, ids: &[String]) -> KilnResult<Vec<Value>> {
        let handle = self.handle(account, name)?;
        check_ids(ids)?;
        let state = handle.read_state();
        Ok(get_by_ids(&state, ids))
    }

    /// Pages through ids in byte order. The cursor is the hex of the last id returned; it does
    /// not expire, but an expiry an hour ahead is reported as Vectorize does.
    pub fn list_vectors(
        &self,
        account: &str,
        name: &str,
        count: Option<usize>,
        cursor: Option<&str>,
    ) -> KilnResult<Value> {
        let handle = self.handle(account, name)?;
        let count = count.unwrap_or(DEFAULT_LIST_COUNT);
        if count == 0 || count > MAX_LIST_COUNT {
            return Err(KilnError::bad_input(format!(
                "count must be between 1 and {MAX_LIST_COUNT} (got {count})"
            )));
        }
        let after = match cursor.filter(|cursor| !cursor.is_empty()) {
            None => None,
            Some(cursor) => Some(
                hex::decode(cursor)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| {
                        KilnError::bad_input(format!(
                            "cursor {cursor:?} is not a cursor from this index"
                        ))
                    })?,
            ),
        };
        let state = handle.read_state();
        let range = match &after {
            Some(after) => state
                .ids
                .range::<String, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => state.ids.range::<String, _>(..),
        };
        let mut page: Vec<&String> = range.map(|(id, _)| id).take(count + 1).collect();
        let truncated = page.len() > count;
        page.truncate(count);
        let next_cursor = if truncated {
            page.last().map(|id| hex::encode(id.as_bytes()))
        } else {
            None
        };
        let expires = kiln_core::time::format_millis(kiln_core::time::unix_millis() + 3_600_000);
        Ok(json!({
            "count": page.len(),
            "isTruncated": truncated,
            "totalCount": state.vector_count(),
            "vectors": page.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            "nextCursor": next_cursor,
            "cursorExpirationTimestamp": next_cursor.as_ref().map(|_| expires),
        }))
    }

    /// `{propertyName, indexType}`; vectors already stored are not added to it (spec §5.3).
    pub fn create_metadata_index(
        &self,
        account: &str,
        name: &str,
        body: &Value,
    ) -> KilnResult<String> {
        let handle = self.handle(account, name)?;
        let property = property_name(body)?;
        let index_type =
            MetadataIndexType::parse(body.get("indexType").and_then(Value::as_str).ok_or_else(
                || KilnError::bad_input("indexType is required: string, number or boolean"),
            )?)?;
        let op = MutationOp::CreateMetadataIndex {
            property,
            index_type,
        };
        self.mutate(account, &handle, op)
    }

    pub fn list_metadata_indexes(&self, account: &str, name: &str) -> KilnResult<Value> {
        let handle = self.handle(account, name)?;
        let listed: Vec<Value> = handle
            .declared_metadata_indexes()
            .iter()
            .map(|(property, index_type)| json!({"propertyName": property, "indexType": index_type.as_str()}))
            .collect();
        Ok(json!({"metadataIndexes": listed}))
    }

    pub fn delete_metadata_index(
        &self,
        account: &str,
        name: &str,
        body: &Value,
    ) -> KilnResult<String> {
        let handle = self.handle(account, name)?;
        let property = property_name(body)?;
        let op = MutationOp::DeleteMetadataIndex { property };
        self.mutate(account, &handle, op)
    }

    /// Whether the index currently answers from an ANN graph (tests and benchmarks).
    #[doc(hidden)]
    pub fn ann_ready(&self, account: &str, name: &str) -> KilnResult<bool> {
        Ok(self.handle(account, name)?.read_state().ann.is_some())
    }

    /// `None` without a graph, else whether it was `"loaded"` from disk at start or `"built"`.
    #[doc(hidden)]
    pub fn ann_source(&self, account: &str, name: &str) -> KilnResult<Option<&'static str>> {
        let handle = self.handle(account, name)?;
        let state = handle.read_state();
        Ok(state.ann.as_ref().map(|_| {
            if state.ann_from_disk {
                "loaded"
            } else {
                "built"
            }
        }))
    }

    /// Blocks until every mutation acknowledged so far is visible to queries.
    pub fn wait_until_processed(
        &self,
        account: &str,
        name: &str,
        timeout: Duration,
    ) -> KilnResult<()> {
        self.handle(account, name)?.wait_until_processed(timeout)
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
