//! Which local model serves which catalog id.

use std::collections::HashMap;

use kiln_core::Task;

use crate::{EmbeddingWorker, GenerationWorker};

/// A running worker of either kind.
#[derive(Clone)]
pub enum Worker {
    Generation(GenerationWorker),
    Embedding(EmbeddingWorker),
}

impl Worker {
    pub fn task(&self) -> Task {
        match self {
            Worker::Generation(_) => Task::TextGeneration,
            Worker::Embedding(_) => Task::TextEmbeddings,
        }
    }
}

/// A loaded local model and the name users see in `x-kiln-model`.
#[derive(Clone)]
pub struct ServedModel {
    pub name: String,
    pub worker: Worker,
}

/// Maps requested ids to loaded models: explicit aliases first, then the default model for the
/// id's task, then the local model's own name.
#[derive(Default)]
pub struct ModelRegistry {
    loaded: HashMap<String, ServedModel>,
    aliases: HashMap<String, String>,
    task_defaults: HashMap<Task, String>,
}

impl ModelRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_model(&mut self, model: ServedModel) {
        self.loaded.insert(model.name.clone(), model);
    }

    pub fn add_alias(&mut self, id: impl Into<String>, local_name: impl Into<String>) {
        self.aliases.insert(id.into(), local_name.into());
    }

    pub fn set_task_default(&mut self, task: Task, local_name: impl Into<String>) {
        self.task_defaults.insert(task, local_name.into());
    }

    /// `task` is the catalog's task for `id`, when the catalog knows the id.
    pub fn resolve(&self, id: &str, task: Option<Task>) -> Option<&ServedModel> {
        if let Some(target) = self.aliases.get(id) {
            return self.loaded.get(target);
        }
        if let Some(model) = self.loaded.get(id) {
            return Some(model);
        }
        let target = self.task_defaults.get(&task?)?;
        self.loaded
            .get(target)
            .filter(|model| Some(model.worker.task()) == task)
    }

    pub fn models(&self) -> impl Iterator<Item = &ServedModel> {
        self.loaded.values()
    }

    pub fn aliases(&self) -> impl Iterator<Item = (&String, &String)> {
        self.aliases.iter()
    }
}
