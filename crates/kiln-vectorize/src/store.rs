//! [`VectorStore`]: every index of every account under one root directory,
//! `<root>/<account>/<index>/` (see `index`). Deleting an index first renames its directory
//! to `<root>/<account>/.deleted-<index>-<uuid>` (atomic), then removes it; leftovers of a
//! crash in between are removed at the next start, as are directories without a `config.json`
//! (a crash during creation).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kiln_core::{ErrorKind, KilnError, KilnResult};
use serde_json::{json, Value};

use crate::codec::MutationOp;
use crate::config::{validate_account, IndexConfig, MAX_INDEXES_PER_ACCOUNT};
use crate::filter::{MetadataIndexType, MAX_METADATA_INDEXES};
use crate::index::IndexHandle;
use crate::query::{Query, ReturnMetadata};
use crate::record::{validate_id, VectorRecord};
use crate::search::{get_by_ids, run_query};
use crate::wal::sync_dir;
use crate::StoreOptions;

pub const MAX_VECTORS_PER_MUTATION: usize = 5000;
pub const MAX_IDS_PER_CALL: usize = 5000;
pub const DEFAULT_LIST_COUNT: usize = 100;
pub const MAX_LIST_COUNT: usize = 1000;
const CONFIG_FILE: &str = "config.json";

type IndexKey = (String, String);

pub struct VectorStore {
    root: PathBuf,
    options: StoreOptions,
    indexes: RwLock<BTreeMap<IndexKey, Arc<IndexHandle>>>,
}

fn io_error(what: &str, error: std::io::Error) -> KilnError {
    KilnError::internal(format!("vectorize storage: {what}: {error}"))
}

fn not_found(name: &str) -> KilnError {
    KilnError::new(
        ErrorKind::NotFound,
        format!("vectorize index {name:?} not found"),
    )
}

impl VectorStore {
    /// Opens `root` (e.g. `<data_dir>/vectorize`), loading every index and replaying its log.
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
                let config_path = index_dir.join(CONFIG_FILE);
                if name.starts_with(".deleted-") || !config_path.exists() {
                    let _ = fs::remove_dir_all(&index_dir);
                    continue;
                }
                let config: IndexConfig = fs::read(&config_path)
                    .map_err(|error| io_error("reading an index config", error))
                    .and_then(|bytes| {
                        serde_json::from_slice(&bytes).map_err(|error| {
                            KilnError::internal(format!("{}: {error}", config_path.display()))
                        })
                    })?;
                let handle = IndexHandle::open(&index_dir, config, options)?;
                indexes.insert((account.clone(), name), Arc::new(handle));
            }
        }
        Ok(Self {
            root: root.to_owned(),
            options,
            indexes: RwLock::new(indexes),
        })
    }

    fn handle(&self, account: &str, name: &str) -> KilnResult<Arc<IndexHandle>> {
        let indexes = self
            .indexes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        indexes
            .get(&(account.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    pub fn create_index(&self, account: &str, body: &Value) -> KilnResult<Value> {
        validate_account(account)?;
        let config = IndexConfig::from_create_body(body, &kiln_core::time::utc_timestamp())?;
        let mut indexes = self
            .indexes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (account.to_owned(), config.name.clone());
        if indexes.contains_key(&key) {
            return Err(KilnError::new(
                ErrorKind::Conflict,
                format!("vectorize index {:?} already exists", config.name),
            ));
        }
        let in_account = indexes.keys().filter(|(owner, _)| owner == account).count();
        if in_account >= MAX_INDEXES_PER_ACCOUNT {
            return Err(KilnError::bad_input(format!(
                "an account may have at most {MAX_INDEXES_PER_ACCOUNT} indexes"
            )));
        }
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
        let handle = IndexHandle::open(&dir, config.clone(), self.options)?;
        indexes.insert(key, Arc::new(handle));
        Ok(config.to_json())
    }

    /// Index objects of the account, by name.
    pub fn list_indexes(&self, account: &str) -> KilnResult<Vec<Value>> {
        let indexes = self
            .indexes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(indexes
            .iter()
            .filter(|((owner, _), _)| owner == account)
            .map(|(_, handle)| handle.config.to_json())
            .collect())
    }

    pub fn get_index(&self, account: &str, name: &str) -> KilnResult<Value> {
        Ok(self.handle(account, name)?.config.to_json())
    }

    /// Removes the index and its files; the name can be used again at once.
    pub fn delete_index(&self, account: &str, name: &str) -> KilnResult<()> {
        let handle = {
            let mut indexes = self
                .indexes
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            indexes
                .remove(&(account.to_owned(), name.to_owned()))
                .ok_or_else(|| not_found(name))?
        };
        handle.shut_down();
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
        check_vectors(&handle, &vectors)?;
        handle.submit(MutationOp::Insert(vectors), |_| Ok(()))
    }

    /// Inserts or wholly replaces (values, metadata and namespace; no merge).
    pub fn upsert(
        &self,
        account: &str,
        name: &str,
        vectors: Vec<VectorRecord>,
    ) -> KilnResult<String> {
        let handle = self.handle(account, name)?;
        check_vectors(&handle, &vectors)?;
        handle.submit(MutationOp::Upsert(vectors), |_| Ok(()))
    }

    pub fn delete_by_ids(&self, account: &str, name: &str, ids: Vec<String>) -> KilnResult<String> {
        let handle = self.handle(account, name)?;
        check_ids(&ids)?;
        handle.submit(MutationOp::Delete(ids), |_| Ok(()))
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
        let handle = self
            .indexes
            .try_read()
            .ok()?
            .get(&(account.to_owned(), name.to_owned()))
            .cloned()?;
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
            property: property.clone(),
            index_type,
        };
        handle.submit(op, |declared| {
            if declared.iter().any(|(existing, _)| *existing == property) {
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
        })
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
        let op = MutationOp::DeleteMetadataIndex {
            property: property.clone(),
        };
        handle.submit(op, |declared| {
            if declared.iter().any(|(existing, _)| *existing == property) {
                Ok(())
            } else {
                Err(KilnError::new(
                    ErrorKind::NotFound,
                    format!("there is no metadata index on {property:?}"),
                ))
            }
        })
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

fn property_name(body: &Value) -> KilnResult<String> {
    let property = body
        .get("propertyName")
        .and_then(Value::as_str)
        .ok_or_else(|| KilnError::bad_input("propertyName is required and must be a string"))?;
    let valid = !property.is_empty()
        && property.chars().count() <= crate::filter::MAX_FILTER_KEY_CHARS
        && !property.contains('"')
        && !property.starts_with('$')
        && !property.split('.').any(str::is_empty);
    if !valid {
        return Err(KilnError::bad_input(format!(
            "propertyName {property:?} must be 1 to 512 characters, without '\"', not starting \
             with '$', with '.' only between nested keys"
        )));
    }
    Ok(property.to_owned())
}

fn check_vectors(handle: &IndexHandle, vectors: &[VectorRecord]) -> KilnResult<()> {
    if vectors.is_empty() {
        return Err(KilnError::bad_input(
            "vectors: at least one vector is required",
        ));
    }
    if vectors.len() > MAX_VECTORS_PER_MUTATION {
        return Err(KilnError::bad_input(format!(
            "at most {MAX_VECTORS_PER_MUTATION} vectors per insert or upsert (got {})",
            vectors.len()
        )));
    }
    let dimensions = handle.config.dimensions;
    if let Some((position, vector)) = vectors
        .iter()
        .enumerate()
        .find(|(_, vector)| vector.values.len() != dimensions)
    {
        return Err(KilnError::bad_input(format!(
            "vector {:?} (number {}) has {} dimensions but index {:?} has {dimensions}",
            vector.id,
            position + 1,
            vector.values.len(),
            handle.config.name
        )));
    }
    Ok(())
}

fn check_ids(ids: &[String]) -> KilnResult<()> {
    if ids.is_empty() {
        return Err(KilnError::bad_input("ids: at least one id is required"));
    }
    if ids.len() > MAX_IDS_PER_CALL {
        return Err(KilnError::bad_input(format!(
            "ids: at most {MAX_IDS_PER_CALL} per call (got {})",
            ids.len()
        )));
    }
    for id in ids {
        validate_id(id).map_err(|reason| KilnError::bad_input(format!("ids: {reason}")))?;
    }
    Ok(())
}

fn read_dirs(dir: &Path) -> KilnResult<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(|error| io_error("listing indexes", error))?;
    Ok(entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect())
}

fn file_name(path: &Path) -> Option<String> {
    path.file_name()
        .and_then(|name| name.to_str())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::VectorStore>();
    }
}
