//! Workers AI task names and ids (spec §1.5).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Task {
    #[serde(rename = "Text Generation")]
    TextGeneration,
    #[serde(rename = "Text Embeddings")]
    TextEmbeddings,
    #[serde(rename = "Text Classification")]
    TextClassification,
    #[serde(rename = "Text-to-Image")]
    TextToImage,
    #[serde(rename = "Automatic Speech Recognition")]
    SpeechRecognition,
    #[serde(rename = "Text-to-Speech")]
    TextToSpeech,
    #[serde(rename = "Translation")]
    Translation,
    #[serde(rename = "Summarization")]
    Summarization,
    #[serde(rename = "Image-to-Text")]
    ImageToText,
    #[serde(rename = "Image Classification")]
    ImageClassification,
    #[serde(rename = "Object Detection")]
    ObjectDetection,
    #[serde(rename = "Voice Activity Detection")]
    VoiceActivityDetection,
}

impl Task {
    pub const ALL: [Task; 12] = [
        Task::TextGeneration,
        Task::TextEmbeddings,
        Task::TextClassification,
        Task::TextToImage,
        Task::SpeechRecognition,
        Task::TextToSpeech,
        Task::Translation,
        Task::Summarization,
        Task::ImageToText,
        Task::ImageClassification,
        Task::ObjectDetection,
        Task::VoiceActivityDetection,
    ];

    /// The catalog's display name, as `task=` filters use it.
    pub fn name(self) -> &'static str {
        match self {
            Task::TextGeneration => "Text Generation",
            Task::TextEmbeddings => "Text Embeddings",
            Task::TextClassification => "Text Classification",
            Task::TextToImage => "Text-to-Image",
            Task::SpeechRecognition => "Automatic Speech Recognition",
            Task::TextToSpeech => "Text-to-Speech",
            Task::Translation => "Translation",
            Task::Summarization => "Summarization",
            Task::ImageToText => "Image-to-Text",
            Task::ImageClassification => "Image Classification",
            Task::ObjectDetection => "Object Detection",
            Task::VoiceActivityDetection => "Voice Activity Detection",
        }
    }

    /// Task uuid as the Workers AI catalog reports it (spec §1.5); ours where none was seen.
    pub fn id(self) -> &'static str {
        match self {
            Task::TextGeneration => "c329a1f9-323d-4e91-b2aa-582dd4188d34",
            Task::TextEmbeddings => "0137cdcf-162a-4108-94f2-1ca59e8c65ee",
            Task::TextClassification => "19606750-23ed-4371-aab2-c20349b53a60",
            Task::TextToImage => "3d6e1f35-341b-4915-a6c8-9a7142a9033a",
            Task::SpeechRecognition => "dfce1c48-2a81-462e-a7fd-de97ce985207",
            Task::TextToSpeech => "b52660a1-9a95-4ab2-8b1d-f232be34604a",
            Task::Translation => "f57d07cb-9087-487a-bbbf-bc3e17fecc4b",
            Task::Summarization => "6f4e65d8-da0f-40d2-9aa4-db582a5a04fd",
            Task::ImageToText => "882a91d1-c331-4eec-bdad-834c919942a8",
            Task::ImageClassification => "00cd182b-bf30-4fc4-8481-84a3ab349657",
            Task::ObjectDetection => "9c178979-90d9-49d8-9e2c-0f1cf01815d4",
            Task::VoiceActivityDetection => "6b5e2a4c-1f0d-4c51-9d43-6e3f1e9a7b20",
        }
    }

    pub fn from_name(name: &str) -> Option<Task> {
        Task::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name.trim()))
    }
}
