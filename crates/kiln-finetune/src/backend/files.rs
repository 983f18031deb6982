//! Fine-tunes as files: `{root}/{account}/{id}/finetune.json` plus the two uploaded assets.
//! Every write goes to a temporary file in the same directory, is fsync'd, and is renamed into
//! place once complete, and the directory is fsync'd after the rename (and after a
//! fine-tune's directory is created): a failed or interrupted write leaves nothing
//! half-written, and what was acknowledged survives `kill -9` and power loss.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln_core::limits::LoraLimits;
use kiln_core::{KilnError, KilnResult};

use super::Backend;
use crate::{already_uploaded, read_weights_header, Finetune, TensorHeader, WEIGHTS_FILE};

const METADATA_FILE: &str = "finetune.json";

pub(crate) struct Files {
    root: PathBuf,
    /// Creation checks the per-account count and name uniqueness; one at a time.
    creating: Mutex<()>,
}

impl Files {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self {
            root,
            creating: Mutex::new(()),
        }
    }

    fn dir(&self, account: &str, id: &str) -> PathBuf {
        self.root.join(account).join(id)
    }
}

impl Backend for Files {
    fn insert(&self, account: &str, finetune: &Finetune, max_per_account: usize) -> KilnResult<()> {
        let _creating = self
            .creating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let names: Vec<String> = self.list(account)?.into_iter().map(|f| f.name).collect();
        crate::check_room(&names, &finetune.name, max_per_account)?;
        let account_dir = self.root.join(account);
        let dir = account_dir.join(&finetune.id);
        let metadata =
            serde_json::to_vec_pretty(finetune).map_err(|e| KilnError::internal(e.to_string()))?;
        let created = fs::create_dir_all(&dir)
            .map_err(io_error)
            .and_then(|()| write_atomically(&dir, METADATA_FILE, &metadata))
            // The new directory's name must be durable too, and the account's on first use.
            .and_then(|()| sync_dir(&account_dir))
            .and_then(|()| sync_dir(&self.root));
        if let Err(error) = created {
            let _ = fs::remove_dir_all(&dir);
            return Err(error);
        }
        Ok(())
    }

    fn list(&self, account: &str) -> KilnResult<Vec<Finetune>> {
        let Ok(entries) = fs::read_dir(self.root.join(account)) else {
            return Ok(Vec::new());
        };
        let mut found: Vec<Finetune> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| fs::read(entry.path().join(METADATA_FILE)).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect();
        found.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(found)
    }

    fn list_public(&self) -> KilnResult<Vec<Finetune>> {
        let Ok(accounts) = fs::read_dir(&self.root) else {
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        for account in accounts.filter_map(Result::ok) {
            let Some(name) = account.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // Anything that is not an account directory (a stray file) is not listed.
            if let Ok(finetunes) = self.list(&name) {
                found.extend(finetunes.into_iter().filter(|f| f.public));
            }
        }
        found.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(found)
    }

    fn asset(&self, account: &str, id: &str, file_name: &str) -> KilnResult<Option<Vec<u8>>> {
        let path = self.dir(account, id).join(file_name);
        if !path.is_file() {
            return Ok(None);
        }
        fs::read(path).map(Some).map_err(io_error)
    }

    fn has_asset(&self, account: &str, id: &str, file_name: &str) -> KilnResult<bool> {
        Ok(self.dir(account, id).join(file_name).is_file())
    }

    fn put_asset(
        &self,
        account: &str,
        id: &str,
        file_name: &str,
        contents: &[u8],
    ) -> KilnResult<()> {
        let dir = self.dir(account, id);
        if dir.join(file_name).exists() {
            return Err(already_uploaded(file_name));
        }
        write_atomically(&dir, file_name, contents)
    }

    fn weights_header(
        &self,
        account: &str,
        id: &str,
        limits: &LoraLimits,
    ) -> KilnResult<Option<Vec<TensorHeader>>> {
        let weights = self.dir(account, id).join(WEIGHTS_FILE);
        if !weights.is_file() {
            return Ok(None);
        }
        read_weights_header(&weights, limits).map(Some)
    }

    fn local_dir(&self, account: &str, id: &str) -> KilnResult<PathBuf> {
        Ok(self.dir(account, id))
    }
}

/// Writes `name` in `dir` through a temporary file and a rename: readers see the whole file or
/// none of it.
pub(crate) fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> KilnResult<()> {
    let temporary = dir.join(format!(".{name}.{}.partial", uuid::Uuid::new_v4()));
    let written = fs::File::create(&temporary).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    if let Err(error) = written.and_then(|()| fs::rename(&temporary, dir.join(name))) {
        let _ = fs::remove_file(&temporary);
        return Err(io_error(error));
    }
    sync_dir(dir)
}

/// Makes a rename or creation in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> KilnResult<()> {
    fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error)
}

pub(crate) fn io_error(error: std::io::Error) -> KilnError {
    KilnError::internal(format!("fine-tune storage: {error}"))
}
