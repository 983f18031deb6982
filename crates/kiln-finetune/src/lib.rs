//! LoRA fine-tunes (spec §6): each account's adapters, their validation, and their lookup by
//! id or name at inference. Kept as files in a directory (one node) or in PostgreSQL (a
//! cluster); see `backend`. A write that fails (a full disk, a database gone) is answered with
//! an error and leaves nothing behind.

mod adapter;
mod backend;
mod convert;

use std::path::PathBuf;

use kiln_core::limits::LoraLimits;
use kiln_core::time::utc_timestamp;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use serde::{Deserialize, Serialize};

pub use adapter::{
    check_pairs, read_weights_header, validate_config, validate_weights, AdapterConfig,
    TensorHeader,
};
pub use backend::FinetuneDb;
pub use convert::{gguf_adapter, gguf_name, permute_rows};

use adapter::scan_weights_header;
use backend::Backend;

/// The two files a fine-tune consists of (exactly these names).
pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Assets must be smaller than this.
pub const MAX_ASSET_BYTES: u64 = 300 * 1024 * 1024;
/// Fine-tunes per account.
pub const MAX_FINETUNES_PER_ACCOUNT: usize = 100;

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

/// Every account's fine-tunes.
pub struct FinetuneStore {
    backend: Box<dyn Backend>,
    limits: LoraLimits,
}

impl FinetuneStore {
    /// Files under `root`, with the default limits.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_limits(root, LoraLimits::default())
    }

    /// Files under `root`; uploads are checked against the operator's `[limits.lora]`.
    pub fn with_limits(root: impl Into<PathBuf>, limits: LoraLimits) -> Self {
        Self {
            backend: Box::new(backend::Files::new(root.into())),
            limits,
        }
    }

    /// The store on `db`; uploads are checked against `limits`.
    pub fn open_db(db: FinetuneDb, limits: LoraLimits) -> KilnResult<Self> {
        let backend: Box<dyn Backend> = match db {
            FinetuneDb::Files(root) => Box::new(backend::Files::new(root)),
            FinetuneDb::Postgres { url, cache } => Box::new(backend::Postgres::open(&url, cache)?),
        };
        Ok(Self { backend, limits })
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
        validate_account(account)?;
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
        self.backend
            .insert(account, &finetune, MAX_FINETUNES_PER_ACCOUNT)?;
        Ok(finetune)
    }

    /// The account's fine-tunes, oldest first.
    pub fn list(&self, account: &str) -> KilnResult<Vec<Finetune>> {
        validate_account(account)?;
        self.backend.list(account)
    }

    /// Every account's fine-tunes created with `public: true`, oldest first: what
    /// `GET …/ai/finetunes/public` lists.
    pub fn list_public(&self) -> KilnResult<Vec<Finetune>> {
        self.backend.list_public()
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
        let id = &finetune.id;
        // Whichever asset comes second is checked against the first: the tensors' shapes must
        // agree with the config's rank.
        match file_name {
            CONFIG_FILE => {
                let config = validate_config(contents)?;
                if let Some(tensors) = self.backend.weights_header(account, id, &self.limits)? {
                    check_pairs(&tensors, Some(config.rank))?;
                }
            }
            _ => {
                let rank = match self.backend.asset(account, id, CONFIG_FILE)? {
                    Some(bytes) => Some(validate_config(&bytes)?.rank),
                    None => None,
                };
                validate_weights(contents, &self.limits, rank)?;
            }
        }
        self.backend.put_asset(account, id, file_name, contents)
    }

    /// The fine-tune with both assets, for inference: 3039 when an asset is missing.
    pub fn ready(&self, account: &str, id_or_name: &str) -> KilnResult<ReadyAdapter> {
        let finetune = self.find(account, id_or_name)?;
        let config_bytes = self.backend.asset(account, &finetune.id, CONFIG_FILE)?;
        let weights = self
            .backend
            .has_asset(account, &finetune.id, WEIGHTS_FILE)?;
        let (Some(config_bytes), true) = (&config_bytes, weights) else {
            let missing = if config_bytes.is_none() {
                CONFIG_FILE
            } else {
                WEIGHTS_FILE
            };
            return Err(invalid(format!(
                "fine-tune {:?} is missing {missing}; upload it with finetune-assets",
                finetune.name
            )));
        };
        let config = validate_config(config_bytes)?;
        let dir = self.backend.local_dir(account, &finetune.id)?;
        Ok(ReadyAdapter {
            finetune,
            config,
            dir,
            limits: self.limits.clone(),
        })
    }
}

/// Account ids name directories and rows, so only safe characters are accepted.
fn validate_account(account: &str) -> KilnResult<()> {
    let safe = !account.is_empty()
        && account.len() <= 64
        && account
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if safe {
        Ok(())
    } else {
        Err(KilnError::bad_input(
            "the account id may only hold letters, digits, '-' and '_' (at most 64)",
        ))
    }
}

/// Refuses a new fine-tune named `name` in an account whose fine-tunes are named `existing`.
pub(crate) fn check_room(existing: &[String], name: &str, max: usize) -> KilnResult<()> {
    if existing.iter().any(|taken| taken == name) {
        return Err(invalid(format!(
            "a fine-tune named {name:?} already exists"
        )));
    }
    if existing.len() >= max {
        return Err(invalid(format!(
            "the account already has {max} fine-tunes, the most allowed; delete one first"
        )));
    }
    Ok(())
}

pub(crate) fn already_uploaded(file_name: &str) -> KilnError {
    invalid(format!(
        "{file_name} was already uploaded; assets cannot be edited, create a new fine-tune"
    ))
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

pub(crate) fn invalid(message: String) -> KilnError {
    KilnError::new(ErrorKind::InvalidFinetune, message)
}

#[cfg(test)]
mod tests;
