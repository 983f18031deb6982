//! LoRA fine-tunes (spec §6): each account's adapters on disk, their validation, and their
//! lookup by id or name at inference.
//!
//! Layout: `{root}/{account}/{id}/finetune.json` plus the two uploaded assets. Every write goes
//! to a temporary file in the same directory, is fsync'd, and is renamed into place once
//! complete and valid, and the directory is fsync'd after the rename (and after a fine-tune's
//! directory is created): a failed or interrupted upload leaves nothing half-written, and what
//! was acknowledged survives `kill -9` and power loss. A write that fails (a full disk) is
//! answered with an error and leaves nothing behind.

mod adapter;
mod convert;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kiln_core::limits::LoraLimits;
use kiln_core::time::utc_timestamp;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use serde::{Deserialize, Serialize};

pub use adapter::{
    check_pairs, read_weights_header, validate_config, validate_weights, AdapterConfig,
    TensorHeader,
};
pub use convert::{gguf_adapter, gguf_name, permute_rows};

/// The two files a fine-tune consists of (exactly these names).
pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Assets must be smaller than this.
pub const MAX_ASSET_BYTES: u64 = 300 * 1024 * 1024;
/// Fine-tunes per account.
pub const MAX_FINETUNES_PER_ACCOUNT: usize = 100;
const METADATA_FILE: &str = "finetune.json";

/// A fine-tune as the REST API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finetune {
    pub id: String,
    pub name: String,
    /// The catalog id of the base model.
    pub model: String,
    pub description: String,
    pub public: bool,
    pub created_at: String,
    pub modified_at: String,
}

/// A fine-tune whose both assets are present, ready to load.
#[derive(Debug, Clone)]
pub struct ReadyAdapter {
    pub finetune: Finetune,
    pub config: AdapterConfig,
    pub dir: PathBuf,
    /// The bounds conversion reads the weights under.
    pub limits: LoraLimits,
}

impl ReadyAdapter {
    pub fn weights_path(&self) -> PathBuf {
        self.dir.join(WEIGHTS_FILE)
    }
}

/// Every account's fine-tunes under one directory.
pub struct FinetuneStore {
    root: PathBuf,
    /// Creation checks the per-account count and name uniqueness; one at a time.
    creating: Mutex<()>,
    limits: LoraLimits,
}

impl FinetuneStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_limits(root, LoraLimits::default())
    }

    /// A store whose uploads are checked against the operator's `[limits.lora]`.
    pub fn with_limits(root: impl Into<PathBuf>, limits: LoraLimits) -> Self {
        Self {
            root: root.into(),
            creating: Mutex::new(()),
            limits,
        }
    }

    /// Registers a new fine-tune of `model` (already checked to support LoRA by the caller).
    pub fn create(
        &self,
        account: &str,
        name: &str,
        model: &str,
        description: Option<&str>,
        public: bool,
    ) -> KilnResult<Finetune> {
        validate_name(name)?;
        let _creating = self
            .creating
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let existing = self.list(account)?;
        if existing.iter().any(|f| f.name == name) {
            return Err(invalid(format!(
                "a fine-tune named {name:?} already exists"
            )));
        }
        if existing.len() >= MAX_FINETUNES_PER_ACCOUNT {
            return Err(invalid(format!(
                "the account already has {MAX_FINETUNES_PER_ACCOUNT} fine-tunes, the most allowed; \
                 delete one first"
            )));
        }
        let now = utc_timestamp();
        let finetune = Finetune {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            model: model.to_owned(),
            description: description.unwrap_or_default().to_owned(),
            public,
            created_at: now.clone(),
            modified_at: now,
        };
        let account_dir = self.account_dir(account)?;
        let dir = account_dir.join(&finetune.id);
        let metadata = serde_json::to_vec_pretty(&finetune).map_err(|e| internal(e.to_string()))?;
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
        Ok(finetune)
    }

    /// The account's fine-tunes, oldest first.
    pub fn list(&self, account: &str) -> KilnResult<Vec<Finetune>> {
        let dir = self.account_dir(account)?;
        let Ok(entries) = fs::read_dir(&dir) else {
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

    /// Every account's fine-tunes created with `public: true`, oldest first: what
    /// `GET …/ai/finetunes/public` lists.
    pub fn list_public(&self) -> KilnResult<Vec<Finetune>> {
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

    /// A fine-tune by id or name.
    pub fn find(&self, account: &str, id_or_name: &str) -> KilnResult<Finetune> {
        self.list(account)?
            .into_iter()
            .find(|f| f.id == id_or_name || f.name == id_or_name)
            .ok_or_else(|| {
                KilnError::new(
                    ErrorKind::InvalidFinetune,
                    format!("no fine-tune {id_or_name:?} in this account"),
                )
            })
    }

    /// Stores one asset after validating it; an asset cannot be replaced once uploaded.
    pub fn upload(
        &self,
        account: &str,
        id_or_name: &str,
        file_name: &str,
        contents: &[u8],
    ) -> KilnResult<()> {
        let finetune = self.find(account, id_or_name)?;
        if file_name != CONFIG_FILE && file_name != WEIGHTS_FILE {
            return Err(invalid(format!(
                "file_name must be {CONFIG_FILE} or {WEIGHTS_FILE}, not {file_name:?}"
            )));
        }
        if contents.len() as u64 >= MAX_ASSET_BYTES {
            return Err(invalid(format!(
                "{file_name} is {} bytes; assets must be smaller than 300 MB",
                contents.len()
            )));
        }
        let dir = self.account_dir(account)?.join(&finetune.id);
        if dir.join(file_name).exists() {
            return Err(invalid(format!(
                "{file_name} was already uploaded; assets cannot be edited, create a new fine-tune"
            )));
        }
        // Whichever asset comes second is checked against the first: the tensors' shapes must
        // agree with the config's rank.
        match file_name {
            CONFIG_FILE => {
                let config = validate_config(contents)?;
                let weights = dir.join(WEIGHTS_FILE);
                if weights.is_file() {
                    let tensors = read_weights_header(&weights, &self.limits)?;
                    check_pairs(&tensors, Some(config.rank))?;
                }
            }
            _ => {
                let config = dir.join(CONFIG_FILE);
                let rank = if config.is_file() {
                    let bytes = fs::read(&config).map_err(io_error)?;
                    Some(validate_config(&bytes)?.rank)
                } else {
                    None
                };
                validate_weights(contents, &self.limits, rank)?;
            }
        }
        write_atomically(&dir, file_name, contents)
    }

    /// The fine-tune with both assets, for inference: 3039 when an asset is missing.
    pub fn ready(&self, account: &str, id_or_name: &str) -> KilnResult<ReadyAdapter> {
        let finetune = self.find(account, id_or_name)?;
        let dir = self.account_dir(account)?.join(&finetune.id);
        for file in [CONFIG_FILE, WEIGHTS_FILE] {
            if !dir.join(file).is_file() {
                return Err(invalid(format!(
                    "fine-tune {:?} is missing {file}; upload it with finetune-assets",
                    finetune.name
                )));
            }
        }
        let config_bytes = fs::read(dir.join(CONFIG_FILE)).map_err(io_error)?;
        let config = validate_config(&config_bytes)?;
        Ok(ReadyAdapter {
            finetune,
            config,
            dir,
            limits: self.limits.clone(),
        })
    }

    /// Account ids become directory names, so only safe characters are accepted.
    fn account_dir(&self, account: &str) -> KilnResult<PathBuf> {
        let safe = !account.is_empty()
            && account.len() <= 64
            && account
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !safe {
            return Err(KilnError::bad_input(
                "the account id may only hold letters, digits, '-' and '_' (at most 64)",
            ));
        }
        Ok(self.root.join(account))
    }
}

fn validate_name(name: &str) -> KilnResult<()> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with("cf-public-")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if valid {
        Ok(())
    } else {
        Err(KilnError::bad_input(format!(
            "invalid fine-tune name {name:?}: use letters, digits, '-', '_' and '.' (at most 128; \
             the cf-public- prefix is reserved)"
        )))
    }
}

/// Writes `name` in `dir` through a temporary file and a rename: readers see the whole file or
/// none of it.
fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> KilnResult<()> {
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

pub(crate) fn invalid(message: String) -> KilnError {
    KilnError::new(ErrorKind::InvalidFinetune, message)
}

fn internal(message: String) -> KilnError {
    KilnError::internal(message)
}

fn io_error(error: std::io::Error) -> KilnError {
    KilnError::internal(format!("fine-tune storage: {error}"))
}

#[cfg(test)]
mod tests;
