//! Image classification on candle: EfficientNet-Lite0 (real weights, from a legacy PyTorch
//! checkpoint) and ResNet-50 (safetensors, torchvision or Hugging Face names).
//!
//! [`ImageClassifier::classify`] takes the raw bytes of a JPEG, PNG or WebP image and returns the
//! top-`k` ImageNet labels with softmax scores, the shape of Workers AI's image-classification
//! output.

pub mod efficientnet_lite;
mod labels;
pub mod preprocess;
pub mod pth;
pub mod resnet;

use std::path::Path;

use candle_core::Tensor;

use efficientnet_lite::EfficientNetLite;
pub use preprocess::ImageLimits;
use preprocess::Normalization;
use resnet::ResNet50;

/// The checkpoint file inside an installed `efficientnet-lite0` model directory.
pub const EFFICIENTNET_LITE0_FILE: &str = "efficientnet-lite0-57934424.pth";

/// Why an image could not be classified. `EmptyImage`, `UnsupportedFormat`, `CorruptImage` and
/// `Limit` are the caller's fault (HTTP 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VisionError {
    #[error("the image is empty")]
    EmptyImage,
    #[error("unsupported image format: {0}")]
    UnsupportedFormat(String),
    #[error("the image could not be decoded: {0}")]
    CorruptImage(String),
    /// Over one of [`ImageLimits`]; the message names the limit.
    #[error("{0}")]
    Limit(String),
    /// The caller's `keep_going` said stop (deadline passed, client gone).
    #[error("the classification was stopped")]
    Stopped,
    #[error("model error: {0}")]
    Model(String),
}

impl VisionError {
    /// True when the request body, not the server, is at fault.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, VisionError::Model(_) | VisionError::Stopped)
    }
}

impl From<candle_core::Error> for VisionError {
    fn from(e: candle_core::Error) -> Self {
        VisionError::Model(e.to_string())
    }
}

/// One predicted class.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub label: String,
    pub score: f32,
}

#[derive(Debug, Clone)]
enum Network {
    EfficientNetLite(Box<EfficientNetLite>),
    ResNet50(ResNet50),
}

/// A loaded image classifier. Immutable after loading, so it can be shared across threads.
#[derive(Debug, Clone)]
pub struct ImageClassifier {
    network: Network,
    normalization: Normalization,
    labels: Vec<String>,
}

impl ImageClassifier {
    /// Loads EfficientNet-Lite0 from an installed model directory holding the legacy `.pth`
    /// checkpoint and the ImageNet synset / lemma label files.
    pub fn load_efficientnet_lite0(dir: &Path) -> Result<Self, VisionError> {
        let path = dir.join(EFFICIENTNET_LITE0_FILE);
        let tensors = pth::read_legacy_pth(&path)
            .map_err(|e| VisionError::Model(format!("reading {}: {e}", path.display())))?;
        let net = EfficientNetLite::lite0(&tensors)?;
        let labels = labels::load(dir, net.num_classes())?;
        Ok(Self {
            network: Network::EfficientNetLite(Box::new(net)),
            normalization: Normalization::Lite,
            labels,
        })
    }

    /// Loads ResNet-50 from safetensors. Labels come from `labels_dir` (ImageNet synset files or
    /// a Hugging Face `config.json` with `id2label`); without one they are `LABEL_<i>`.
    pub fn load_resnet50(weights: &Path, labels_dir: Option<&Path>) -> Result<Self, VisionError> {
        let net = ResNet50::load(weights)
            .map_err(|e| VisionError::Model(format!("loading {}: {e}", weights.display())))?;
        let labels = match labels_dir {
            Some(dir) => labels::load(dir, net.num_classes())?,
            None => (0..net.num_classes())
                .map(|i| format!("LABEL_{i}"))
                .collect(),
        };
        Ok(Self {
            network: Network::ResNet50(net),
            normalization: Normalization::ImageNet,
            labels,
        })
    }

    /// Top `k` `(label, score)` by softmax probability, best first.
    pub fn classify(
        &self,
        image_bytes: &[u8],
        k: usize,
    ) -> Result<Vec<Classification>, VisionError> {
        self.classify_within(image_bytes, k, &ImageLimits::default(), &|| true)
    }

    /// [`ImageClassifier::classify`] within `limits`, asking `keep_going` before decoding and
    /// before the network runs (`VisionError::Stopped` when it says no).
    pub fn classify_within(
        &self,
        image_bytes: &[u8],
        k: usize,
        limits: &ImageLimits,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<Vec<Classification>, VisionError> {
        if !keep_going() {
            return Err(VisionError::Stopped);
        }
        let input = preprocess::preprocess_within(image_bytes, self.normalization, limits)?;
        if !keep_going() {
            return Err(VisionError::Stopped);
        }
        let logits = self.logits(&input)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?
            .squeeze(0)?
            .to_vec1::<f32>()?;
        Ok(top_k(&probs, &self.labels, k))
    }

    /// Raw logits `(N, classes)` for an already preprocessed batch `(N, 3, 224, 224)`.
    pub fn logits(&self, input: &Tensor) -> Result<Tensor, VisionError> {
        let logits = match &self.network {
            Network::EfficientNetLite(net) => net.forward(input)?,
            Network::ResNet50(net) => net.forward(input)?,
        };
        Ok(logits)
    }

    /// Label names in class-index order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }
}

fn top_k(probs: &[f32], labels: &[String], k: usize) -> Vec<Classification> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    // total_cmp gives NaN a fixed place instead of panicking on a degenerate model output.
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    order
        .into_iter()
        .take(k)
        .map(|i| Classification {
            label: labels
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("LABEL_{i}")),
            score: probs[i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_sorted_and_bounded() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let top = top_k(&[0.2, 0.5, 0.3], &labels, 2);
        assert_eq!(top.len(), 2);
        assert_eq!((top[0].label.as_str(), top[1].label.as_str()), ("b", "c"));
        assert_eq!(top_k(&[0.2, 0.5, 0.3], &labels, 10).len(), 3);
        assert!(top_k(&[0.2, 0.5, 0.3], &labels, 0).is_empty());
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn classifier_is_send_and_sync() {
        assert_send_sync::<ImageClassifier>();
    }
}
