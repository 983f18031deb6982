//! The server's side of `POST /kiln/models/pull`: installs built-in models into the model store
//! it serves from. Progress is the bytes of the model's directory against the pinned sizes,
//! read while the store fetches (the store's own progress bars are for terminals).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kiln_core::{KilnError, KilnResult};
use kiln_http::{InstallableModel, ModelInstaller};
use kiln_store::{ModelStore, Progress};

use crate::ServeConfig;

pub struct StoreInstaller {
    store: ModelStore,
}

impl StoreInstaller {
    pub fn new(config: &ServeConfig) -> Self {
        Self {
            store: config.model_store(),
        }
    }
}

/// How often the model directory is measured during a pull.
const MEASURE_EVERY: Duration = Duration::from_millis(200);

impl ModelInstaller for StoreInstaller {
    fn installable(&self) -> Vec<InstallableModel> {
        let installed: Vec<String> = self
            .store
            .installed()
            .into_iter()
            .map(|model| model.name)
            .collect();
        kiln_store::manifests()
            .iter()
            .filter(|manifest| manifest.format != kiln_store::ModelFormat::Assets)
            .map(|manifest| InstallableModel {
                name: manifest.name.clone(),
                task: crate::models::task_of(manifest.format).map(|task| task.name().to_owned()),
                description: manifest.description.clone(),
                size_bytes: manifest.files.iter().filter_map(|file| file.size).sum(),
                installed: installed.contains(&manifest.name),
                default: manifest.default,
            })
            .collect()
    }

    fn install(&self, name: &str, progress: &(dyn Fn(u64, u64) + Sync)) -> KilnResult<()> {
        let manifest = kiln_store::manifest(name).ok_or_else(|| {
            KilnError::bad_input(format!("the model store has no model {name:?}"))
        })?;
        let total: u64 = manifest.files.iter().filter_map(|file| file.size).sum();
        let dir = self.store.model_dir(name);
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    progress(bytes_under(&dir).min(total), total);
                    std::thread::sleep(MEASURE_EVERY);
                }
            });
            let outcome = self.store.ensure(name, Progress::Quiet);
            done.store(true, Ordering::Relaxed);
            outcome
        })
        .map_err(|error| KilnError::internal(format!("pulling {name} failed: {error}")))?;
        progress(total, total);
        Ok(())
    }
}

/// Bytes of the regular files under `dir` (partial downloads included).
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(kind) if kind.is_file() => {
                    total += entry.metadata().map_or(0, |meta| meta.len());
                }
                _ => {}
            }
        }
    }
    total
}
