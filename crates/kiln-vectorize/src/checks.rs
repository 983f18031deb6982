//! Checks of the store's inputs, and directory listing helpers.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_core::{KilnError, KilnResult};
use serde_json::Value;

use crate::index::IndexHandle;
use crate::record::{validate_id, VectorRecord};
use crate::store::{io_error, MAX_IDS_PER_CALL};

pub(crate) fn property_name(body: &Value) -> KilnResult<String> {
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

pub(crate) fn check_vectors(
    handle: &IndexHandle,
    vectors: &[VectorRecord],
    max_vectors: usize,
) -> KilnResult<()> {
    if vectors.is_empty() {
        return Err(KilnError::bad_input(
            "vectors: at least one vector is required",
        ));
    }
    if vectors.len() > max_vectors {
        return Err(KilnError::bad_input(format!(
            "at most {max_vectors} vectors per insert or upsert (got {}; \
             limits.vectorize.max_vectors_per_write)",
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

pub(crate) fn check_ids(ids: &[String]) -> KilnResult<()> {
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

pub(crate) fn read_dirs(dir: &Path) -> KilnResult<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(|error| io_error("listing indexes", error))?;
    Ok(entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect())
}

pub(crate) fn file_name(path: &Path) -> Option<String> {
    path.file_name()
        .and_then(|name| name.to_str())
        .map(str::to_owned)
}
