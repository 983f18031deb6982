//! Text classification and reranking models (`kiln-engine-text`): their workers, and which
//! catalog ids they serve.
//!
//! Both tasks are "Text Classification" in the catalog, so a task default cannot tell them
//! apart: a catalog id whose schema is text classification (`distilbert-sst-2-int8`) is served by
//! an installed label classifier, one whose schema is a reranker's (`bge-reranker-base`,
//! `bge-reranker-v2-m3`) by an installed cross-encoder, unless `kiln.toml` aliases it.
//!
//! Translators and summarizers (`kiln-engine-seq2seq`) are mapped the same way: the m2m100 id
//! to an installed translator, bart-large-cnn's to an installed summarizer.

use std::collections::HashMap;

use kiln_catalog::{Catalog, SchemaKind};
use kiln_core::{KilnResult, SequenceClassifier};
use kiln_engine_text::TextClassifier;
use kiln_scheduler::{AdmissionConfig, ClassifierWorker, LoadedWorker, Rebuild, Routes, Worker};
use kiln_store::{InstalledModel, ModelFormat};

use crate::ServeConfig;

/// The catalog id whose input and output shapes a model of `format` answers in when it is
/// called by its own name.
pub(crate) fn schema_id(format: ModelFormat) -> Option<&'static str> {
    match format {
        ModelFormat::HfTextClassifier => Some("@cf/huggingface/distilbert-sst-2-int8"),
        ModelFormat::HfReranker => Some("@cf/baai/bge-reranker-base"),
        ModelFormat::HfTranslator => Some("@cf/meta/m2m100-1.2b"),
        ModelFormat::HfSummarizer => Some("@cf/facebook/bart-large-cnn"),
        _ => None,
    }
}

/// The format that serves catalog entries of `schema`.
fn format_serving(schema: SchemaKind) -> Option<ModelFormat> {
    match schema {
        SchemaKind::TextClassification => Some(ModelFormat::HfTextClassifier),
        SchemaKind::Reranker => Some(ModelFormat::HfReranker),
        SchemaKind::M2m100 => Some(ModelFormat::HfTranslator),
        SchemaKind::Summarization => Some(ModelFormat::HfSummarizer),
        _ => None,
    }
}

/// The installed model serving each text classification, reranker, translation (m2m100) and
/// summarization catalog id that `kiln.toml` does not alias: the first of the matching format,
/// by name.
pub(crate) fn catalog_mapping(
    config: &ServeConfig,
    installed: &[&InstalledModel],
) -> Vec<(&'static str, String)> {
    let mut candidates: Vec<&InstalledModel> = installed.to_vec();
    candidates.sort_by(|a, b| a.name.cmp(&b.name));
    Catalog::builtin()
        .entries()
        .iter()
        .filter(|entry| !config.aliases.contains_key(&entry.name))
        .filter_map(|entry| {
            let format = format_serving(entry.schema)?;
            let model = candidates.iter().find(|model| model.format == format)?;
            Some((entry.name.as_str(), model.name.clone()))
        })
        .collect()
}

/// Routes catalog ids to installed classifiers, rerankers, translators and summarizers
/// ([`catalog_mapping`]), and makes
/// requests naming such a model directly use its task's schema.
pub(crate) fn register(
    registry: &mut Routes,
    config: &ServeConfig,
    installed: &HashMap<String, InstalledModel>,
) {
    let models: Vec<&InstalledModel> = installed.values().collect();
    for model in &models {
        if let Some(id) = schema_id(model.format) {
            registry.set_schema_id(model.name.clone(), id);
        }
    }
    for (id, local) in catalog_mapping(config, &models) {
        registry.add_alias(id, local);
    }
}

/// A text classifier or reranker on its own worker thread; reloaded from its directory if the
/// engine panics.
pub(crate) fn classifier_worker(
    model: &InstalledModel,
    admission: AdmissionConfig,
) -> KilnResult<LoadedWorker> {
    let load = |dir: &std::path::Path| -> KilnResult<Box<dyn SequenceClassifier>> {
        Ok(Box::new(TextClassifier::load(dir)?))
    };
    let classifier = load(&model.dir)?;
    let dir = model.dir.clone();
    let reload: Rebuild<Box<dyn SequenceClassifier>> = Box::new(move || load(&dir));
    let worker =
        ClassifierWorker::spawn_rebuildable(&model.name, classifier, Some(reload), admission)?;
    Ok(LoadedWorker {
        worker: Worker::Classifier(worker),
        // f32 weights as read, plus activations that scale with them.
        memory_bytes: model.size_bytes.saturating_mul(2),
        model_file: Some(model.primary_file.clone()),
    })
}
