//! Per-model record of files whose full sha256 was checked, keyed by size and mtime, so start-up
//! does not re-hash hundreds of megabytes. A truncation or a rewrite changes size or mtime, which
//! sends the file back to a full hash.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::StoreError;

pub(crate) const STAMP_FILE: &str = ".kiln-verified.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileStamp {
    pub size: u64,
    pub mtime_ns: u64,
    pub sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Stamps {
    files: BTreeMap<String, FileStamp>,
    /// Whether anything changed since loading, so unchanged stamps are not rewritten on every start.
    #[serde(skip)]
    changed: bool,
}

/// Size and modification time (ns since the epoch) of a file, or `None` when it is absent.
pub(crate) fn size_and_mtime(path: &Path) -> Option<(u64, u64)> {
    let metadata = fs::metadata(path).ok()?;
    if !metadata.is_file() {
        return None;
    }
    let mtime = metadata.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some((
        metadata.len(),
        u64::try_from(mtime.as_nanos()).unwrap_or(u64::MAX),
    ))
}

impl Stamps {
    /// A missing or unreadable stamp file only costs a re-hash, so it reads as empty.
    pub fn load(model_dir: &Path) -> Self {
        fs::read(model_dir.join(STAMP_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// True when `file` still has the size and mtime it had when it hashed to `sha256`.
    pub fn vouches_for(&self, model_dir: &Path, file: &str, sha256: &str) -> bool {
        let Some(stamp) = self.files.get(file) else {
            return false;
        };
        let Some((size, mtime_ns)) = size_and_mtime(&model_dir.join(file)) else {
            return false;
        };
        stamp.size == size
            && stamp.mtime_ns == mtime_ns
            && stamp.sha256.eq_ignore_ascii_case(sha256)
    }

    pub fn record(&mut self, model_dir: &Path, file: &str, sha256: &str) {
        if let Some((size, mtime_ns)) = size_and_mtime(&model_dir.join(file)) {
            self.files.insert(
                file.to_string(),
                FileStamp {
                    size,
                    mtime_ns,
                    sha256: sha256.to_string(),
                },
            );
            self.changed = true;
        }
    }

    pub fn forget(&mut self, file: &str) {
        self.changed |= self.files.remove(file).is_some();
    }

    pub fn save_if_changed(&mut self, model_dir: &Path) -> Result<(), StoreError> {
        if self.changed {
            self.save(model_dir)?;
        }
        Ok(())
    }

    pub fn save(&mut self, model_dir: &Path) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_atomically(&model_dir.join(STAMP_FILE), &bytes)?;
        self.changed = false;
        Ok(())
    }
}

/// Writes a small file by rename so that readers never see half of it.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|err| StoreError::io("creating directory", dir, err))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".kiln-partial-")
        .tempfile_in(dir)
        .map_err(|err| StoreError::io("creating a temporary file in", dir, err))?;
    temp.write_all(bytes)
        .map_err(|err| StoreError::io("writing", temp.path().to_path_buf(), err))?;
    crate::fetch::make_world_readable(temp.as_file())
        .map_err(|err| StoreError::io("setting permissions of", temp.path().to_path_buf(), err))?;
    temp.persist(path)
        .map_err(|err| StoreError::io("writing", path, err.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::time::{Duration, SystemTime};

    #[test]
    fn stamp_stops_vouching_after_truncation_or_new_mtime() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("weights.bin"), b"0123456789").unwrap();
        let mut stamps = Stamps::default();
        stamps.record(dir.path(), "weights.bin", "ab");
        stamps.save(dir.path()).unwrap();
        let stamps = Stamps::load(dir.path());
        assert!(stamps.vouches_for(dir.path(), "weights.bin", "ab"));
        assert!(
            !stamps.vouches_for(dir.path(), "weights.bin", "cd"),
            "a different pinned hash is not vouched for"
        );

        let file = File::options()
            .write(true)
            .open(dir.path().join("weights.bin"))
            .unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        assert!(!stamps.vouches_for(dir.path(), "weights.bin", "ab"));

        let mut stamps = Stamps::load(dir.path());
        stamps.record(dir.path(), "weights.bin", "ab");
        file.set_len(4).unwrap();
        assert!(!stamps.vouches_for(dir.path(), "weights.bin", "ab"));
        assert!(!stamps.vouches_for(dir.path(), "absent.bin", "ab"));
    }
}
