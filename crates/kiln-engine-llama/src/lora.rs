//! LoRA adapters for one model. llama.cpp applies adapters to a whole context, not to single
//! sequences, so each forward pass runs the sequences of one adapter group (or of none), and
//! the groups take turns.

use std::path::{Path, PathBuf};

use kiln_core::{KilnError, KilnResult};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};

use crate::backend::backend;

/// Which adapter a sequence runs with: an index into [`Adapters`], or `None` for the base model.
pub type AdapterGroup = Option<usize>;

pub struct Adapters {
    /// The served model's GGUF.
    gguf: PathBuf,
    /// A second handle on the same GGUF (memory-mapped, so its weights share pages with the
    /// serving model's). llama-cpp-2 creates adapters through `&mut LlamaModel`, and the serving
    /// model is borrowed by its context for its whole life; llama.cpp finds an adapter's tensors
    /// by the base tensors' names, so an adapter made here applies to the serving context.
    loader: Option<LlamaModel>,
    loaded: Vec<(PathBuf, LlamaLoraAdapter)>,
    /// The group whose adapter is set on the context now.
    active: AdapterGroup,
}

impl Adapters {
    pub fn new(gguf: &Path) -> Self {
        Self {
            gguf: gguf.to_owned(),
            loader: None,
            loaded: Vec::new(),
            active: None,
        }
    }

    /// The group of the GGUF adapter at `path`, loading it on first use.
    pub fn group(&mut self, path: &Path) -> KilnResult<AdapterGroup> {
        if let Some(index) = self.loaded.iter().position(|(p, _)| p == path) {
            return Ok(Some(index));
        }
        if self.loader.is_none() {
            let loader =
                LlamaModel::load_from_file(backend()?, &self.gguf, &LlamaModelParams::default())
                    .map_err(|e| {
                        KilnError::internal(format!("cannot open the model for adapters: {e}"))
                    })?;
            self.loader = Some(loader);
        }
        let loader = self
            .loader
            .as_mut()
            .ok_or_else(|| KilnError::internal("adapter loader missing"))?;
        let adapter = loader.lora_adapter_init(path).map_err(|e| {
            KilnError::internal(format!(
                "llama.cpp cannot load the adapter {}: {e}",
                path.display()
            ))
        })?;
        self.loaded.push((path.to_owned(), adapter));
        Ok(Some(self.loaded.len() - 1))
    }

    /// Sets `group`'s adapter on the context (or none), if it is not set already.
    pub fn apply(&mut self, context: &mut LlamaContext<'_>, group: AdapterGroup) -> KilnResult<()> {
        if self.active == group {
            return Ok(());
        }
        match group {
            Some(index) => {
                let (_, adapter) = self
                    .loaded
                    .get_mut(index)
                    .ok_or_else(|| KilnError::internal("unknown adapter"))?;
                // Scale 1: llama.cpp multiplies by the GGUF's `adapter.lora.alpha / r`.
                context
                    .lora_adapter_set(adapter, 1.0)
                    .map_err(|e| KilnError::internal(format!("cannot set the adapter: {e}")))?;
            }
            None => {
                // llama-cpp-2's remove clears every adapter; it only asks for one to call it.
                if let Some((_, adapter)) = self.loaded.first_mut() {
                    context.lora_adapter_remove(adapter).map_err(|e| {
                        KilnError::internal(format!("cannot remove the adapter: {e}"))
                    })?;
                }
            }
        }
        self.active = group;
        Ok(())
    }
}
