//! Turning installed models into running workers, and the `kiln models` commands.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context;
use kiln_catalog::Catalog;
use kiln_core::engine::BatchGenerator;
use kiln_core::{Embedder, ErrorKind, KilnError, KilnResult, MediaEngine, Task};
use kiln_engine_bert::{BertEmbedder, GemmaEmbedder};
use kiln_engine_llama::{LlamaGenerator, LlamaOptions};
use kiln_scheduler::{
    AdmissionConfig, EmbeddingWorker, GenerationWorker, LoadedWorker, MediaWorker, ModelLoader,
    ModelRegistry, Rebuild, ResidencyPolicy, Routes, Worker,
};
use kiln_store::{InstalledModel, ModelFormat, ModelStore, Progress};

use crate::{fault_injection, ServeConfig};

/// Makes sure every configured model is present and verified, fetching what is missing.
pub fn ensure_models(
    config: &ServeConfig,
    progress: Progress,
) -> anyhow::Result<Vec<InstalledModel>> {
    let store = config.model_store();
    for name in config.fetch() {
        if config.models().contains(&name) {
            continue;
        }
        let fetched = if config.offline() {
            store.verify(&name, progress)
        } else {
            store.ensure(&name, progress)
        };
        if let Err(error) = fetched {
            tracing::warn!(model = %name, "not fetched, requests for it will fail: {error}");
        }
    }
    config
        .models()
        .iter()
        .map(|name| {
            let installed = if config.offline() {
                // Offline never downloads, but still verifies: a corrupt file is never loaded.
                store.verify(name, progress)
            } else {
                store.ensure(name, progress)
            };
            installed.with_context(|| format!("cannot install model {name}"))
        })
        .collect()
}

/// Starts engines for installed models: llama.cpp for GGUF, candle for BERT and EmbeddingGemma
/// directories.
struct EngineLoader {
    config: ServeConfig,
    /// The models `--models` named (installed at start-up), kept servable whatever the store
    /// says later.
    configured: Vec<InstalledModel>,
    /// The installed models as last looked at (start-up, then [`ModelLoader::refresh`]).
    installed: RwLock<HashMap<String, InstalledModel>>,
}

impl EngineLoader {
    fn installed(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, InstalledModel>> {
        self.installed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl ModelLoader for EngineLoader {
    fn load(&self, name: &str) -> KilnResult<LoadedWorker> {
        let model = self
            .installed()
            .get(name)
            .cloned()
            .ok_or_else(|| KilnError::no_such_model(name))?;
        let model = &model;
        let admission = AdmissionConfig {
            queue_capacity: self.config.queue_capacity(),
            request_timeout: self.config.request_timeout(),
        };
        let cannot_load = |error: KilnError| {
            KilnError::new(error.kind, format!("cannot load {name}: {}", error.message))
        };
        match model.format {
            ModelFormat::Gguf => {
                let options = LlamaOptions {
                    context_size: self.config.context_size,
                    threads: self.config.threads(),
                    parallel: self.config.parallel(),
                    reproducible: self.config.reproducible(),
                    ..LlamaOptions::default()
                };
                let generator =
                    LlamaGenerator::load(&model.primary_file, &options).map_err(cannot_load)?;
                tracing::info!(model = %model.name, "{}", generator.model_description());
                let memory_bytes = generator.memory_bytes();
                let file = model.primary_file.clone();
                let reload: Rebuild<Box<dyn BatchGenerator>> = Box::new(move || {
                    let generator = LlamaGenerator::load(&file, &options)?;
                    Ok(fault_injection::generator(Box::new(generator)))
                });
                let worker = GenerationWorker::spawn_rebuildable(
                    &model.name,
                    fault_injection::generator(Box::new(generator)),
                    Some(reload),
                    admission,
                )?;
                Ok(LoadedWorker {
                    worker: Worker::Generation(worker),
                    memory_bytes,
                    model_file: Some(model.primary_file.clone()),
                })
            }
            ModelFormat::HfBert => {
                let threads = self.config.threads() as usize;
                embedding_worker(model, admission, move |dir| {
                    Ok(Box::new(BertEmbedder::load_with_threads(dir, threads)?))
                })
                .map_err(cannot_load)
            }
            ModelFormat::OnnxBert => {
                let threads = self.config.threads() as usize;
                embedding_worker(model, admission, move |dir| {
                    Ok(Box::new(BertEmbedder::load_onnx(dir, threads)?))
                })
                .map_err(cannot_load)
            }
            ModelFormat::HfGemmaEmbed => {
                let threads = self.config.threads() as usize;
                embedding_worker(model, admission, move |dir| {
                    Ok(Box::new(GemmaEmbedder::load_with_threads(dir, threads)?))
                })
                .map_err(cannot_load)
            }
            ModelFormat::HfTextClassifier | ModelFormat::HfReranker => {
                crate::text_models::classifier_worker(model, admission).map_err(cannot_load)
            }
            ModelFormat::HfTranslator | ModelFormat::HfSummarizer => {
                let task = task_of(model.format).unwrap_or(Task::Translation);
                crate::seq2seq_engine::worker(name, model, task, admission).map_err(cannot_load)
            }
            ModelFormat::EfficientNetPth => {
                let dir = model.dir.clone();
                let limits = self.config.limits();
                let load = move || -> KilnResult<Box<dyn MediaEngine>> {
                    Ok(Box::new(
                        crate::media_engines::VisionEngine::load_with_limits(&dir, &limits)?,
                    ))
                };
                media_worker(name, load, admission, model.size_bytes)
            }
            ModelFormat::Piper => {
                let dir = model.dir.clone();
                let limits = self.config.limits();
                let load = move || -> KilnResult<Box<dyn MediaEngine>> {
                    Ok(Box::new(
                        crate::media_engines::VoiceEngine::load_with_limits(&dir, &limits)?,
                    ))
                };
                media_worker(name, load, admission, model.size_bytes)
            }
            ModelFormat::Ct2Whisper => {
                let dir = model.dir.clone();
                let limits = self.config.limits();
                let load = move || -> KilnResult<Box<dyn MediaEngine>> {
                    Ok(Box::new(
                        crate::media_engines::WhisperEngine::load_with_limits(&dir, &limits)?,
                    ))
                };
                media_worker(name, load, admission, model.size_bytes)
            }
            ModelFormat::Assets => Err(KilnError::new(
                ErrorKind::NoSuchModel,
                format!("{name} holds files, not a model that can be served"),
            )),
        }
    }

    fn weights_bytes(&self, name: &str) -> u64 {
        self.installed()
            .get(name)
            .map_or(0, |model| model.size_bytes)
    }

    /// Looks at the model store again: a model pulled (or removed) while the server runs is
    /// routed (or dropped) without a restart.
    fn refresh(&self) -> Option<Routes> {
        let now = installed_models(&self.config, &self.configured);
        if *self.installed() == now {
            return None;
        }
        match routes_for(&self.config, &now) {
            Ok(routes) => {
                let mut installed = self
                    .installed
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                *installed = now;
                Some(routes)
            }
            Err(error) => {
                tracing::warn!(
                    "the installed models changed, but their routes are not valid: {error:#}"
                );
                None
            }
        }
    }
}

/// An embedding model's vector width from its configuration files (`None` for other models,
/// or when the files do not say; loading the model then reports the error).
pub fn output_dimensions(model: &InstalledModel) -> Option<usize> {
    let read = match model.format {
        ModelFormat::HfBert | ModelFormat::OnnxBert => BertEmbedder::output_dimensions(&model.dir),
        ModelFormat::HfGemmaEmbed => GemmaEmbedder::output_dimensions(&model.dir),
        _ => return None,
    };
    read.map_err(|error| tracing::warn!(model = %model.name, "{}", error.message))
        .ok()
}

/// The registry: every installed model is servable; the configured ones load now, others on
/// their first request. Models installed later are found when a request names one (or by the
/// sweeper's periodic look, which also drops removed ones).
pub fn load_registry(
    config: &ServeConfig,
    configured: &[InstalledModel],
) -> anyhow::Result<ModelRegistry> {
    let installed = installed_models(config, configured);
    let routes = routes_for(config, &installed)?;
    let policy = ResidencyPolicy {
        memory_budget_bytes: config.memory_budget_bytes(),
        keep_alive: config.keep_alive(),
    };
    let registry = ModelRegistry::with_routes(
        Arc::new(EngineLoader {
            config: config.clone(),
            configured: configured.to_vec(),
            installed: RwLock::new(installed),
        }),
        policy,
        routes,
    );
    for model in configured {
        registry
            .preload(&model.name)
            .map_err(|error| anyhow::anyhow!("{}", error.message))?;
    }
    Ok(registry)
}

/// The models in the store and those `--models` named, by name.
fn installed_models(
    config: &ServeConfig,
    configured: &[InstalledModel],
) -> HashMap<String, InstalledModel> {
    let mut installed: HashMap<String, InstalledModel> = ModelStore::new(config.data_dir())
        .installed()
        .into_iter()
        .map(|model| (model.name.clone(), model))
        .collect();
    for model in configured {
        installed.insert(model.name.clone(), model.clone());
    }
    installed
}

/// Which ids the `installed` models serve: each by its name, task defaults and aliases from the
/// configuration, catalog ids by format ([`crate::text_models::register`]).
fn routes_for(
    config: &ServeConfig,
    installed: &HashMap<String, InstalledModel>,
) -> anyhow::Result<Routes> {
    let mut routes = Routes::default();
    for model in installed.values() {
        if let Some(task) = task_of(model.format) {
            routes.add_available(model.name.clone(), task);
        }
        if let Some(dimensions) = output_dimensions(model) {
            routes.set_output_dimensions(model.name.clone(), dimensions);
        }
    }
    for (task_name, local) in &config.task_defaults {
        let task = Task::from_name(task_name)
            .with_context(|| format!("unknown task {task_name:?} in task_defaults"))?;
        routes.set_task_default(task, local.clone());
    }
    for (id, local) in &config.aliases {
        refuse_alias_across_tasks(id, local, installed)?;
        routes.add_alias(id.clone(), local.clone());
    }
    crate::text_models::register(&mut routes, config, installed);
    Ok(routes)
}

/// The task a model of `format` serves (none for asset bundles).
pub(crate) fn task_of(format: ModelFormat) -> Option<Task> {
    Some(match format {
        ModelFormat::Gguf => Task::TextGeneration,
        ModelFormat::HfBert | ModelFormat::OnnxBert | ModelFormat::HfGemmaEmbed => {
            Task::TextEmbeddings
        }
        ModelFormat::HfTextClassifier | ModelFormat::HfReranker => Task::TextClassification,
        ModelFormat::HfTranslator => Task::Translation,
        ModelFormat::HfSummarizer => Task::Summarization,
        ModelFormat::EfficientNetPth => Task::ImageClassification,
        ModelFormat::Piper => Task::TextToSpeech,
        ModelFormat::Ct2Whisper => Task::SpeechRecognition,
        ModelFormat::Assets => return None,
    })
}

/// An alias from a catalog id to an installed model of another task would answer every request
/// for that id with an error (or a wrong shape): refuse to start instead.
fn refuse_alias_across_tasks(
    id: &str,
    local: &str,
    installed: &HashMap<String, InstalledModel>,
) -> anyhow::Result<()> {
    let Some(entry) = Catalog::builtin().get(id) else {
        return Ok(());
    };
    let Some(model_task) = installed.get(local).and_then(|model| task_of(model.format)) else {
        return Ok(());
    };
    if model_task != entry.task {
        anyhow::bail!(
            "alias {id:?} = {local:?} in kiln.toml: {id} is a {} model but {local} serves {}",
            entry.task.name(),
            model_task.name()
        );
    }
    Ok(())
}

/// `kiln models list`: what is installed, its size, and which ids it serves.
pub fn list(config: &ServeConfig) -> anyhow::Result<()> {
    let store = config.model_store();
    let installed = store.installed();
    println!("Models in {}:", store.models_dir().display());
    if installed.is_empty() {
        println!("  (none installed; run `kiln models pull`)");
    }
    for model in &installed {
        println!(
            "  {:<28} {:>9}  {}",
            model.name,
            human_size(model.size_bytes),
            model.dir.display()
        );
        if let Some(dimensions) = output_dimensions(model) {
            println!("      answers {dimensions}-dimensional vectors");
        }
        for line in served_ids(config, &model.name) {
            println!("      serves {line}");
        }
        let all: Vec<&InstalledModel> = installed.iter().collect();
        for (id, _) in crate::text_models::catalog_mapping(config, &all)
            .into_iter()
            .filter(|(_, local)| *local == model.name)
        {
            println!("      serves {id}");
        }
    }
    let missing: Vec<&str> = kiln_store::manifests()
        .iter()
        .filter(|m| !installed.iter().any(|i| i.name == m.name))
        .map(|m| m.name.as_str())
        .collect();
    if !missing.is_empty() {
        println!("Available to pull: {}", missing.join(", "));
    }
    Ok(())
}

/// `kiln models pull [NAME…]`: fetches and verifies models (the configured ones by default).
pub fn pull(config: &ServeConfig, names: Vec<String>) -> anyhow::Result<()> {
    let store = config.model_store();
    let names = if names.is_empty() {
        config.models()
    } else {
        names
    };
    for name in names {
        let model = store
            .ensure(&name, Progress::Bar)
            .with_context(|| format!("cannot pull {name}"))?;
        println!(
            "{} ready: {} ({})",
            model.name,
            model.primary_file.display(),
            human_size(model.size_bytes)
        );
    }
    Ok(())
}

/// Taken from a local `--hf` directory along with the default files when it is there.
const GENERATION_CONFIG: &str = "generation_config.json";

/// `kiln models pull NAME --hf ORG/REPO --file F…`: a user model from a Hugging Face-layout
/// repository (`HF_ENDPOINT` and `HF_TOKEN` are honoured), or from a local directory in that
/// layout when `--hf` names one. Serve it with `--models NAME`.
pub fn pull_from_hub(
    config: &ServeConfig,
    names: &[String],
    (repo, revision): (&str, &str),
    files: &[String],
) -> anyhow::Result<()> {
    let [name] = names else {
        anyhow::bail!("--hf takes exactly one model NAME to store the repository under");
    };
    let store = config.model_store();
    let local_dir = std::path::Path::new(repo);
    let mut files: Vec<&str> = files.iter().map(String::as_str).collect();
    if files.is_empty() {
        files = kiln_store::DEFAULT_HF_FILES.to_vec();
        // An encoder-decoder's decoding ids (forced_bos_token_id, …) may be written only there.
        if local_dir.join(GENERATION_CONFIG).is_file() {
            files.push(GENERATION_CONFIG);
        }
    }
    let looks_like_a_path =
        local_dir.is_absolute() || repo.starts_with('.') || repo.starts_with('~');
    if looks_like_a_path && !local_dir.is_dir() {
        anyhow::bail!("{repo} is not a directory (--hf takes a local directory or ORG/REPO)");
    }
    let model = if local_dir.is_dir() {
        store
            .install_hf_dir(name, local_dir, &files, Progress::Bar)
            .with_context(|| format!("cannot install {repo}"))?
    } else {
        store
            .pull_hf_repo(name, None, (repo, revision), &files, Progress::Bar)
            .with_context(|| format!("cannot pull {repo}@{revision}"))?
    };
    println!(
        "{} ready: {} ({}); serve it with --models {}",
        model.name,
        model.primary_file.display(),
        human_size(model.size_bytes),
        model.name
    );
    if let Some(id) = crate::text_models::schema_id(model.format) {
        println!(
            "{} is a {} model: it serves {id} unless kiln.toml aliases that id elsewhere",
            model.name,
            model.format.as_str()
        );
    }
    Ok(())
}

fn served_ids(config: &ServeConfig, local: &str) -> Vec<String> {
    let catalog: &Catalog = Catalog::builtin();
    let mut lines: Vec<String> = config
        .aliases
        .iter()
        .filter(|(_, target)| target.as_str() == local)
        .map(|(id, _)| id.clone())
        .collect();
    for (task_name, target) in &config.task_defaults {
        if target == local {
            let count = catalog
                .entries()
                .iter()
                .filter(|e| e.task.name() == task_name)
                .count();
            lines.push(format!(
                "every other {task_name} id in the catalog ({count} ids)"
            ));
        }
    }
    lines
}

fn human_size(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

/// An embedding model (loaded from its directory by `load`) on its own worker thread; `load` runs
/// again to reload it if the engine panics.
fn embedding_worker(
    model: &InstalledModel,
    admission: AdmissionConfig,
    load: impl Fn(&std::path::Path) -> KilnResult<Box<dyn Embedder>> + Send + 'static,
) -> KilnResult<LoadedWorker> {
    let embedder = load(&model.dir)?;
    let dir = model.dir.clone();
    let reload: Rebuild<Box<dyn Embedder>> =
        Box::new(move || Ok(fault_injection::embedder(load(&dir)?)));
    let worker = EmbeddingWorker::spawn_rebuildable(
        &model.name,
        fault_injection::embedder(embedder),
        Some(reload),
        admission,
    )?;
    Ok(LoadedWorker {
        worker: Worker::Embedding(worker),
        // f32 weights as read, plus activations that scale with them.
        memory_bytes: model.size_bytes.saturating_mul(2),
        model_file: Some(model.primary_file.clone()),
    })
}

/// A media engine on its own worker thread; it holds about twice its weights (f32 copies and
/// one request's activations).
/// `load` is called again to reload the model if the engine panics.
pub(crate) fn media_worker(
    name: &str,
    load: impl Fn() -> KilnResult<Box<dyn MediaEngine>> + Send + 'static,
    admission: AdmissionConfig,
    weights_bytes: u64,
) -> KilnResult<LoadedWorker> {
    let engine = fault_injection::media(load()?);
    let reload = move || load().map(fault_injection::media);
    let worker = MediaWorker::spawn_rebuildable(name, engine, Some(Box::new(reload)), admission)?;
    Ok(LoadedWorker {
        worker: Worker::Media(worker),
        memory_bytes: weights_bytes.saturating_mul(2),
        model_file: None,
    })
}
