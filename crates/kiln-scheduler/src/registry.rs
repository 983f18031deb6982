//! Which local model serves which catalog id, and which models are resident.
//!
//! Routing ([`Routes`]: aliases, task defaults, installed model names) follows the installed
//! models: an id that routes nowhere asks the loader to look again (at most every
//! [`REFRESH_EVERY`]), and the sweeper does so periodically, so a model pulled while the server
//! runs answers its next request and a removed one is unloaded. Residency: a request for an
//! installed model that is not loaded loads it, evicting the least recently used idle models
//! when the memory budget would be exceeded, and models idle for longer than the keep-alive are
//! unloaded. An unloaded model's thread ends once its last in-flight request finishes (it holds
//! a handle), so unloading never cuts a request short.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use kiln_core::{ErrorKind, KilnError, KilnResult, Task};

use crate::{ClassifierWorker, EmbeddingWorker, GenerationWorker, MediaWorker};

/// A running worker of any kind.
#[derive(Clone)]
pub enum Worker {
    Generation(GenerationWorker),
    Embedding(EmbeddingWorker),
    /// Speech recognition, speech synthesis or image classification.
    Media(MediaWorker),
    /// Text classification or reranking (a cross-encoder).
    Classifier(ClassifierWorker),
}

impl Worker {
    pub fn task(&self) -> Task {
        match self {
            Worker::Generation(_) => Task::TextGeneration,
            Worker::Embedding(_) => Task::TextEmbeddings,
            Worker::Media(worker) => worker.task(),
            Worker::Classifier(_) => Task::TextClassification,
        }
    }

    pub fn is_busy(&self) -> bool {
        match self {
            Worker::Generation(worker) => worker.is_busy(),
            Worker::Embedding(worker) => worker.is_busy(),
            Worker::Media(worker) => worker.is_busy(),
            Worker::Classifier(worker) => worker.is_busy(),
        }
    }
}

/// A loaded local model and the name users see in `x-kiln-model`.
#[derive(Clone)]
pub struct ServedModel {
    pub name: String,
    pub worker: Worker,
    /// The weights file (a GGUF for LLMs): what LoRA adapters are converted against.
    pub model_file: Option<PathBuf>,
}

/// What a [`ModelLoader`] hands back: the running worker and the memory it holds.
pub struct LoadedWorker {
    pub worker: Worker,
    pub memory_bytes: u64,
    pub model_file: Option<PathBuf>,
}

/// Starts workers for installed models. Implemented by the binary, which knows the engines.
pub trait ModelLoader: Send + Sync + 'static {
    /// Loads `name` (blocking: reads weights, starts the worker thread).
    fn load(&self, name: &str) -> KilnResult<LoadedWorker>;

    /// Size of `name`'s weights on disk: a lower bound of its memory, known before loading.
    fn weights_bytes(&self, name: &str) -> u64;

    /// Looks at the installed models again: the routes they make now, or `None` when nothing
    /// changed (or the loader cannot look).
    fn refresh(&self) -> Option<Routes> {
        None
    }
}

/// How often at most an unknown id makes the registry look at the installed models again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// When models leave memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResidencyPolicy {
    /// Loaded models together may hold at most this much; `None` is no limit.
    pub memory_budget_bytes: Option<u64>,
    /// A model idle this long is unloaded; `None` keeps it loaded.
    pub keep_alive: Option<Duration>,
}

/// Why a model left memory (the `reason` label of `kiln_model_unloads_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnloadReason {
    Idle,
    MemoryBudget,
    /// Its files were removed from the model store.
    Removed,
    /// Someone asked (`POST /kiln/models/{name}/unload`).
    Requested,
}

impl UnloadReason {
    fn label(self) -> &'static str {
        match self {
            UnloadReason::Idle => "idle",
            UnloadReason::MemoryBudget => "memory_budget",
            UnloadReason::Removed => "removed",
            UnloadReason::Requested => "requested",
        }
    }
}

struct Resident {
    served: ServedModel,
    memory_bytes: u64,
    last_used: Instant,
}

/// Which requested ids go to which installed models.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// Installed models that may be loaded, with their task.
    available: BTreeMap<String, Task>,
    aliases: HashMap<String, String>,
    task_defaults: HashMap<Task, String>,
    /// The catalog id whose schema a request naming a local model directly is validated
    /// against, where the task alone does not decide it (a reranker and a sentiment
    /// classifier are both Text Classification).
    schema_ids: HashMap<String, String>,
    /// Embedding models' vector width, read from their files (before any loads).
    output_dimensions: HashMap<String, usize>,
}

impl Routes {
    /// Makes an installed model servable (it loads on its first request, or by
    /// [`ModelRegistry::preload`]).
    pub fn add_available(&mut self, name: impl Into<String>, task: Task) {
        self.available.insert(name.into(), task);
    }

    pub fn add_alias(&mut self, id: impl Into<String>, local_name: impl Into<String>) {
        self.aliases.insert(id.into(), local_name.into());
    }

    pub fn set_task_default(&mut self, task: Task, local_name: impl Into<String>) {
        self.task_defaults.insert(task, local_name.into());
    }

    /// Requests naming `local_name` itself are validated against `catalog_id`'s schema.
    pub fn set_schema_id(&mut self, local_name: impl Into<String>, catalog_id: impl Into<String>) {
        self.schema_ids.insert(local_name.into(), catalog_id.into());
    }

    pub fn set_output_dimensions(&mut self, local_name: impl Into<String>, dimensions: usize) {
        self.output_dimensions.insert(local_name.into(), dimensions);
    }

    fn resolve(&self, id: &str, task: Option<Task>) -> Option<(String, Task)> {
        let installed = |name: &str| self.available.get_key_value(name);
        if let Some(target) = self.aliases.get(id) {
            return installed(target).map(|(name, &task)| (name.clone(), task));
        }
        let found = installed(id).or_else(|| {
            let target = self.task_defaults.get(&task?)?;
            installed(target).filter(|(_, &model_task)| Some(model_task) == task)
        });
        found.map(|(name, &task)| (name.clone(), task))
    }
}

/// Maps requested ids to local models and keeps the requested ones loaded.
pub struct ModelRegistry {
    routes: RwLock<Arc<Routes>>,
    /// When the installed models were last looked at (none yet: the routes are start-up's).
    refreshed: Mutex<Option<Instant>>,
    policy: ResidencyPolicy,
    loader: Arc<dyn ModelLoader>,
    resident: Mutex<HashMap<String, Resident>>,
    /// One load at a time, so that concurrent requests for one model load it once and two
    /// loads never both count on the same free memory.
    loading: tokio::sync::Mutex<()>,
}

impl ModelRegistry {
    pub fn new(loader: Arc<dyn ModelLoader>, policy: ResidencyPolicy) -> Self {
        Self::with_routes(loader, policy, Routes::default())
    }

    pub fn with_routes(
        loader: Arc<dyn ModelLoader>,
        policy: ResidencyPolicy,
        routes: Routes,
    ) -> Self {
        Self {
            routes: RwLock::new(Arc::new(routes)),
            refreshed: Mutex::new(None),
            policy,
            loader,
            resident: Mutex::new(HashMap::new()),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    /// The routes now (a snapshot: a refresh replaces them, it does not change this one).
    pub fn routes(&self) -> Arc<Routes> {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn routes_mut(&mut self) -> &mut Routes {
        Arc::make_mut(
            self.routes
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Makes an installed model servable (it loads on its first request, or by [`Self::preload`]).
    pub fn add_available(&mut self, name: impl Into<String>, task: Task) {
        self.routes_mut().add_available(name, task);
    }

    pub fn add_alias(&mut self, id: impl Into<String>, local_name: impl Into<String>) {
        self.routes_mut().add_alias(id, local_name);
    }

    pub fn set_task_default(&mut self, task: Task, local_name: impl Into<String>) {
        self.routes_mut().set_task_default(task, local_name);
    }

    /// Requests naming `local_name` itself are validated against `catalog_id`'s schema.
    pub fn set_schema_id(&mut self, local_name: impl Into<String>, catalog_id: impl Into<String>) {
        self.routes_mut().set_schema_id(local_name, catalog_id);
    }

    pub fn set_output_dimensions(&mut self, local_name: impl Into<String>, dimensions: usize) {
        self.routes_mut()
            .set_output_dimensions(local_name, dimensions);
    }

    /// The width of the vectors the embedding model `local_name` answers, known unloaded.
    pub fn output_dimensions(&self, local_name: &str) -> Option<usize> {
        self.routes().output_dimensions.get(local_name).copied()
    }

    /// The catalog id set by [`Self::set_schema_id`] for `local_name`.
    pub fn schema_id(&self, local_name: &str) -> Option<String> {
        self.routes().schema_ids.get(local_name).cloned()
    }

    /// The local model for `id`: the model an alias names (only it: another model of the task
    /// would answer with other dimensions or shapes), else an installed model of that name, else
    /// the default model of `task` (the catalog's task for `id`, when the catalog knows it).
    /// Returns the local name and its task; `None` also when an alias names a model that is not
    /// installed (see [`Self::missing_alias_target`]). An id that routes nowhere looks at the
    /// installed models again first (at most every [`REFRESH_EVERY`]): it may just have been
    /// pulled.
    pub fn resolve(&self, id: &str, task: Option<Task>) -> Option<(String, Task)> {
        if let Some(found) = self.routes().resolve(id, task) {
            return Some(found);
        }
        if self.refresh_if_due() {
            return self.routes().resolve(id, task);
        }
        None
    }

    /// The local model an alias maps `id` to when that model is not installed.
    pub fn missing_alias_target(&self, id: &str) -> Option<String> {
        let routes = self.routes();
        routes
            .aliases
            .get(id)
            .filter(|target| !routes.available.contains_key(target.as_str()))
            .cloned()
    }

    /// Looks at the installed models again if the last look is older than [`REFRESH_EVERY`];
    /// whether the routes changed.
    fn refresh_if_due(&self) -> bool {
        {
            let mut refreshed = self
                .refreshed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if refreshed.is_some_and(|at| at.elapsed() < REFRESH_EVERY) {
                return false;
            }
            *refreshed = Some(Instant::now());
        }
        self.refresh()
    }

    /// Takes the loader's routes for the models installed now, if they changed, and unloads
    /// resident models that are no longer installed. Whether the routes changed.
    pub fn refresh(&self) -> bool {
        let Some(routes) = self.loader.refresh() else {
            return false;
        };
        let gone: Vec<String> = self
            .resident()
            .keys()
            .filter(|name| !routes.available.contains_key(name.as_str()))
            .cloned()
            .collect();
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(routes);
        let mut resident = self.resident();
        for name in gone {
            if resident.remove(&name).is_some() {
                unloaded(&name, UnloadReason::Removed);
            }
        }
        tracing::info!("installed models changed: routes updated");
        true
    }

    /// [`Self::refresh`] when [`REFRESH_EVERY`] has passed since the last look (the sweeper's
    /// periodic check).
    pub fn refresh_periodically(&self) {
        self.refresh_if_due();
    }

    /// The worker for an installed model, loading it first if it is not resident.
    pub async fn acquire(self: &Arc<Self>, name: &str) -> KilnResult<ServedModel> {
        if let Some(served) = self.touch(name) {
            return Ok(served);
        }
        let _loading = self.loading.lock().await;
        // Another request may have loaded it while this one waited.
        if let Some(served) = self.touch(name) {
            return Ok(served);
        }
        let registry = self.clone();
        let model = name.to_owned();
        tokio::task::spawn_blocking(move || registry.load(&model))
            .await
            .map_err(|e| KilnError::internal(format!("loading {name} failed: {e}")))?
    }

    /// Loads `name` now, blocking the calling thread (start-up, before requests arrive).
    pub fn preload(&self, name: &str) -> KilnResult<()> {
        if self.touch(name).is_none() {
            self.load(name)?;
        }
        Ok(())
    }

    /// Reads the model and starts its worker, first unloading what the budget requires: by
    /// the weights' size before reading them, then by the measured footprint.
    fn load(&self, name: &str) -> KilnResult<ServedModel> {
        if !self.routes().available.contains_key(name) {
            return Err(KilnError::no_such_model(name));
        }
        self.make_room(name, self.loader.weights_bytes(name))?;
        let loaded = self.loader.load(name)?;
        self.make_room(name, loaded.memory_bytes)?;
        tracing::info!(
            model = name,
            memory_mib = loaded.memory_bytes / MIB,
            "model loaded"
        );
        crate::metrics::model_loaded(name, loaded.memory_bytes);
        let served = ServedModel {
            name: name.to_owned(),
            worker: loaded.worker,
            model_file: loaded.model_file,
        };
        self.resident().insert(
            name.to_owned(),
            Resident {
                served: served.clone(),
                memory_bytes: loaded.memory_bytes,
                last_used: Instant::now(),
            },
        );
        Ok(served)
    }

    /// Unloads models idle for longer than the keep-alive. A model counts as used while it has
    /// requests, so the idle time starts when its last request ends (within one sweep).
    pub fn unload_idle(&self) {
        let Some(keep_alive) = self.policy.keep_alive else {
            return;
        };
        let now = Instant::now();
        let mut resident = self.resident();
        for model in resident.values_mut() {
            if model.served.worker.is_busy() {
                model.last_used = now;
            }
        }
        let expired: Vec<String> = resident
            .iter()
            .filter(|(_, model)| now.duration_since(model.last_used) >= keep_alive)
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            resident.remove(&name);
            unloaded(&name, UnloadReason::Idle);
        }
    }

    /// Drops `name` from memory now, if it is loaded; requests already holding its worker
    /// finish on it, and the next request loads it again.
    pub fn unload(&self, name: &str) -> bool {
        let removed = self.resident().remove(name).is_some();
        if removed {
            unloaded(name, UnloadReason::Requested);
        }
        removed
    }

    /// The loaded models and the memory each holds, by name.
    pub fn loaded(&self) -> BTreeMap<String, u64> {
        self.resident()
            .iter()
            .map(|(name, model)| (name.clone(), model.memory_bytes))
            .collect()
    }

    /// Installed model names and their tasks.
    pub fn available(&self) -> Vec<(String, Task)> {
        let routes = self.routes();
        routes
            .available
            .iter()
            .map(|(name, &task)| (name.clone(), task))
            .collect()
    }

    /// Whether `name` answers catalog ids of its task that no alias claims.
    pub fn is_task_default(&self, name: &str) -> bool {
        self.routes()
            .task_defaults
            .values()
            .any(|default| default == name)
    }

    pub fn aliases(&self) -> Vec<(String, String)> {
        let routes = self.routes();
        routes
            .aliases
            .iter()
            .map(|(id, name)| (id.clone(), name.clone()))
            .collect()
    }

    pub fn policy(&self) -> ResidencyPolicy {
        self.policy
    }

    fn resident(&self) -> MutexGuard<'_, HashMap<String, Resident>> {
        self.resident.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The resident worker for `name`, marked as just used.
    fn touch(&self, name: &str) -> Option<ServedModel> {
        let mut resident = self.resident();
        let model = resident.get_mut(name)?;
        model.last_used = Instant::now();
        Some(model.served.clone())
    }

    /// Unloads least recently used idle models until `needed` more bytes fit the budget.
    fn make_room(&self, name: &str, needed: u64) -> KilnResult<()> {
        let Some(budget) = self.policy.memory_budget_bytes else {
            return Ok(());
        };
        if needed > budget {
            return Err(KilnError::internal(format!(
                "{name} needs about {} MiB, more than the whole memory budget of {} MiB \
                 (--memory-budget-mib)",
                needed / MIB,
                budget / MIB
            )));
        }
        let mut resident = self.resident();
        loop {
            let used: u64 = resident.values().map(|model| model.memory_bytes).sum();
            if used + needed <= budget {
                return Ok(());
            }
            let victim = resident
                .iter()
                .filter(|(_, model)| !model.served.worker.is_busy())
                .min_by_key(|(_, model)| model.last_used)
                .map(|(name, _)| name.clone());
            let Some(victim) = victim else {
                return Err(KilnError::new(
                    ErrorKind::OutOfCapacity,
                    format!(
                        "Capacity temporarily exceeded, please try again: loading {name} \
                         (about {} MiB) needs memory that busy models hold ({} of {} MiB used)",
                        needed / MIB,
                        used / MIB,
                        budget / MIB
                    ),
                ));
            };
            resident.remove(&victim);
            unloaded(&victim, UnloadReason::MemoryBudget);
        }
    }
}

const MIB: u64 = 1024 * 1024;

fn unloaded(name: &str, reason: UnloadReason) {
    tracing::info!(model = name, reason = reason.label(), "model unloaded");
    crate::metrics::model_unloaded(name, reason.label());
}
