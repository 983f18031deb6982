//! Translation and summarization (`kiln-engine-seq2seq`) behind the [`MediaEngine`] contract:
//! one request at a time on the model's own thread, stopping between decoder steps once the
//! request's deadline passes or its caller leaves.

use std::path::Path;

use kiln_core::{
    KilnError, KilnResult, MediaEngine, MediaOutput, MediaRequest, Task, WorkProgress,
};
use kiln_engine_seq2seq::{GenerateOptions, Seq2SeqModel};
use kiln_scheduler::{AdmissionConfig, LoadedWorker};
use kiln_store::InstalledModel;

/// An encoder-decoder serving one task: translation (M2M100, Marian) or summarization (BART).
pub struct Seq2SeqEngine {
    model: Seq2SeqModel,
    task: Task,
}

impl Seq2SeqEngine {
    pub fn load(dir: &Path, task: Task) -> KilnResult<Self> {
        Ok(Self {
            model: Seq2SeqModel::load(dir)?,
            task,
        })
    }
}

impl MediaEngine for Seq2SeqEngine {
    fn task(&self) -> Task {
        self.task
    }

    fn run(&mut self, request: MediaRequest, progress: &WorkProgress) -> KilnResult<MediaOutput> {
        let (text, options) = match (self.task, request) {
            (
                Task::Translation,
                MediaRequest::Translate {
                    text,
                    source_lang,
                    target_lang,
                    max_new_tokens,
                },
            ) => (
                text,
                GenerateOptions {
                    target_lang_token: Some(target_lang),
                    source_lang_token: Some(source_lang),
                    max_new_tokens,
                },
            ),
            (
                Task::Summarization,
                MediaRequest::Summarize {
                    text,
                    max_new_tokens,
                },
            ) => (
                text,
                GenerateOptions {
                    max_new_tokens,
                    ..GenerateOptions::default()
                },
            ),
            (task, _) => {
                return Err(KilnError::bad_input(format!(
                    "this model serves {} requests only",
                    task.name()
                )))
            }
        };
        let generated = self
            .model
            .generate_checked(&text, &options, &|| progress.check())?;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(MediaOutput::Text {
            text: generated.text,
            input_tokens: count(generated.input_tokens),
            output_tokens: count(generated.token_ids.len()),
        })
    }
}

/// A translator or summarizer on its own worker thread; reloaded from its directory if the
/// engine panics.
pub(crate) fn worker(
    name: &str,
    model: &InstalledModel,
    task: Task,
    admission: AdmissionConfig,
) -> KilnResult<LoadedWorker> {
    let dir = model.dir.clone();
    let load = move || -> KilnResult<Box<dyn MediaEngine>> {
        Ok(Box::new(Seq2SeqEngine::load(&dir, task)?))
    };
    crate::models::media_worker(name, load, admission, model.size_bytes)
}
