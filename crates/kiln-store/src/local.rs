//! User models from local Hugging Face-layout directories (`kiln models pull NAME --hf DIR`), and
//! the format of a pulled model read from its `config.json`.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use serde::Deserialize;

use crate::fetch::{progress_bar, Expected, VerifiedFile, VerifyingWriter};
use crate::manifest::is_safe_relative_path;
use crate::manifest::{ModelFile, ModelFormat, ModelSource};
use crate::stamp::Stamps;
use crate::store::{
    check_user_model_name, invalid_name, model_lock, primary_of, record_user_model,
};
use crate::{InstalledModel, ModelStore, Progress, StoreError};

/// The files a Hugging Face encoder directory needs when the caller names none.
pub const DEFAULT_HF_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// Architectures (config.json `architectures`) that Kiln serves as sequence classifiers.
const SEQUENCE_CLASSIFIERS: [&str; 2] = [
    "DistilBertForSequenceClassification",
    "XLMRobertaForSequenceClassification",
];

/// Encoder-decoder architectures Kiln serves for translation.
const TRANSLATORS: [&str; 2] = ["M2M100ForConditionalGeneration", "MarianMTModel"];

/// Encoder-decoder architectures Kiln serves for summarization.
const SUMMARIZERS: [&str; 1] = ["BartForConditionalGeneration"];

#[derive(Deserialize)]
struct ArchitectureConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    id2label: serde_json::Map<String, serde_json::Value>,
    num_labels: Option<usize>,
}

/// The format of a model whose files are `files` in `dir`: a `.gguf` is llama.cpp's; a
/// sequence classifier named by `config.json` is a text classifier (several labels) or a
/// reranker (one label: a cross-encoder); an M2M100 or Marian encoder-decoder is a translator, a
/// BART one a summarizer; anything else with safetensors is a BERT embedder.
pub(crate) fn detect_format(dir: &Path, files: &[ModelFile], primary: &str) -> ModelFormat {
    if primary.ends_with(".gguf") {
        return ModelFormat::Gguf;
    }
    let config = files
        .iter()
        .any(|file| file.path == "config.json")
        .then(|| fs::read(dir.join("config.json")).ok())
        .flatten()
        .and_then(|bytes| serde_json::from_slice::<ArchitectureConfig>(&bytes).ok());
    match config {
        Some(config) if is_sequence_classifier(&config) => {
            // transformers' default is two labels when the config names neither.
            let labels = match config.id2label.len() {
                0 => config.num_labels.unwrap_or(2),
                named => named,
            };
            if labels == 1 {
                ModelFormat::HfReranker
            } else {
                ModelFormat::HfTextClassifier
            }
        }
        Some(config) if names_any(&config, &TRANSLATORS) => ModelFormat::HfTranslator,
        Some(config) if names_any(&config, &SUMMARIZERS) => ModelFormat::HfSummarizer,
        _ => ModelFormat::HfBert,
    }
}

fn names_any(config: &ArchitectureConfig, architectures: &[&str]) -> bool {
    config
        .architectures
        .iter()
        .any(|name| architectures.contains(&name.as_str()))
}

fn is_sequence_classifier(config: &ArchitectureConfig) -> bool {
    config
        .architectures
        .iter()
        .any(|name| SEQUENCE_CLASSIFIERS.contains(&name.as_str()))
}

impl ModelStore {
    /// Installs `files` of the local Hugging Face-layout directory `source` as the user model
    /// `name`. Each file is copied into the store and hashed; the record keeps the directory as
    /// the files' source, so a damaged copy is copied again from there. The format follows the
    /// files, as for [`ModelStore::pull_hf_repo`].
    pub fn install_hf_dir(
        &self,
        name: &str,
        source: &Path,
        files: &[&str],
        progress: Progress,
    ) -> Result<InstalledModel, StoreError> {
        check_name_and_files(name, files)?;
        let source = source
            .canonicalize()
            .map_err(|err| StoreError::io("opening the model directory", source, err))?;
        if !source.is_dir() {
            return Err(StoreError::InvalidName {
                value: source.display().to_string(),
                reason: "expected a directory".into(),
            });
        }
        let primary = primary_of(files).ok_or_else(|| StoreError::InvalidName {
            value: files.join(", "),
            reason: "the files include neither a .gguf nor a model.safetensors".into(),
        })?;
        let source_dir = source.display().to_string();
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
                source_desc: format!("{source_dir}/{file}"),
            };
            let verified = copy_into_store(&source, file, &dir.join(file), &expected, progress)?;
            stamps.record(&dir, file, &verified.sha256);
            stamps.save(&dir)?;
            model_files.push(ModelFile {
                path: file.to_string(),
                size: Some(verified.size),
                sha256: verified.sha256,
                sources: vec![ModelSource::Directory {
                    dir: source_dir.clone(),
                    file: file.to_string(),
                }],
            });
        }
        record_user_model(
            &dir,
            name,
            format!("installed from {source_dir}"),
            primary,
            model_files,
        )
    }
}

/// Copies `source/file` to `dest` through a [`VerifyingWriter`]: hashed while written, checked
/// against `expected`, moved into place only when complete.
pub(crate) fn copy_into_store(
    source: &Path,
    file: &str,
    dest: &Path,
    expected: &Expected,
    progress: Progress,
) -> Result<VerifiedFile, StoreError> {
    let path = source.join(file);
    let mut reader = File::open(&path).map_err(|err| StoreError::io("opening", &path, err))?;
    let size = reader.metadata().ok().map(|metadata| metadata.len());
    let bar = progress_bar(
        progress,
        size.or(expected.size),
        &format!("{}/{}", expected.model, expected.file),
    );
    let mut writer = VerifyingWriter::create(dest, bar)?;
    io::copy(&mut reader, &mut writer).map_err(|err| StoreError::io("copying", &path, err))?;
    writer.commit(dest, expected)
}

fn check_name_and_files(name: &str, files: &[&str]) -> Result<(), StoreError> {
    check_user_model_name(name)?;
    if files.is_empty() {
        return Err(invalid_name("", "no files to install"));
    }
    match files.iter().find(|file| !is_safe_relative_path(file)) {
        Some(file) => Err(invalid_name(
            file,
            "file paths must be relative and stay inside the directory",
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format_of(config: &str) -> ModelFormat {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.json"), config).unwrap();
        let file = ModelFile {
            path: "config.json".into(),
            size: None,
            sha256: "a".repeat(64),
            sources: Vec::new(),
        };
        detect_format(dir.path(), &[file], "model.safetensors")
    }

    #[test]
    fn sequence_classifiers_are_told_apart_by_their_labels() {
        assert_eq!(
            format_of(
                r#"{"architectures":["DistilBertForSequenceClassification"],
                    "id2label":{"0":"NEGATIVE","1":"POSITIVE"}}"#
            ),
            ModelFormat::HfTextClassifier
        );
        assert_eq!(
            format_of(
                r#"{"architectures":["XLMRobertaForSequenceClassification"],
                    "id2label":{"0":"LABEL_0"}}"#
            ),
            ModelFormat::HfReranker
        );
        assert_eq!(
            format_of(
                r#"{"architectures":["XLMRobertaForSequenceClassification"],"num_labels":1}"#
            ),
            ModelFormat::HfReranker
        );
        assert_eq!(
            format_of(r#"{"architectures":["BertModel"]}"#),
            ModelFormat::HfBert
        );
        assert_eq!(format_of("not json"), ModelFormat::HfBert);
    }

    #[test]
    fn encoder_decoders_translate_or_summarize() {
        for (architecture, format) in [
            ("M2M100ForConditionalGeneration", ModelFormat::HfTranslator),
            ("MarianMTModel", ModelFormat::HfTranslator),
            ("BartForConditionalGeneration", ModelFormat::HfSummarizer),
        ] {
            let config = format!(r#"{{"architectures":["{architecture}"]}}"#);
            assert_eq!(format_of(&config), format, "{architecture}");
        }
    }
}
