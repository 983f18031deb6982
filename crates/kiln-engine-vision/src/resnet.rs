//! ResNet-50 (v1.5: stride on the 3×3 convolution), as served for `@cf/microsoft/resnet-50`.
//!
//! The network itself is candle-transformers' `resnet50`, which expects torchvision tensor names
//! (`conv1`, `layer1.0.conv1`, `fc`). The Hugging Face `microsoft/resnet-50` safetensors use
//! transformers' names (`resnet.embedder…`, `resnet.encoder.stages…`, `classifier.1`), so those
//! are renamed on load; both layouts describe the same weights.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Func, VarBuilder};

/// A loaded ResNet-50 classifier taking `(N, 3, H, W)` ImageNet-normalised images.
#[derive(Clone)]
pub struct ResNet50 {
    net: Func<'static>,
    classes: usize,
}

impl std::fmt::Debug for ResNet50 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResNet50")
            .field("classes", &self.classes)
            .finish()
    }
}

impl ResNet50 {
    /// Loads torchvision- or transformers-named ResNet-50 weights from a safetensors file.
    pub fn load(path: &Path) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        Self::from_tensors(tensors)
    }

    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Result<Self> {
        let tensors: HashMap<String, Tensor> = tensors
            .into_iter()
            .map(|(name, t)| (torchvision_name(&name), t))
            .collect();
        let Some(fc) = tensors.get("fc.weight") else {
            candle_core::bail!("not ResNet weights: no fc.weight / classifier.1.weight")
        };
        let classes = fc.dim(0)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let net = candle_transformers::models::resnet::resnet50(classes, vb)?;
        Ok(Self { net, classes })
    }

    /// Logits `(N, classes)`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.apply(&self.net)
    }

    pub fn num_classes(&self) -> usize {
        self.classes
    }
}

/// Maps a transformers `ResNetForImageClassification` tensor name to torchvision's; other names
/// pass through unchanged.
fn torchvision_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("resnet.embedder.embedder.") {
        return rest
            .replace("convolution.", "conv1.")
            .replace("normalization.", "bn1.");
    }
    if let Some(rest) = name.strip_prefix("classifier.1.") {
        return format!("fc.{rest}");
    }
    let Some(rest) = name.strip_prefix("resnet.encoder.stages.") else {
        return name.to_string();
    };
    // `{stage}.layers.{block}.{shortcut|layer.{i}}.{convolution|normalization}.{param}`
    let parts: Vec<&str> = rest.split('.').collect();
    let (Some(stage), Some(&"layers"), Some(block)) = (
        parts.first().and_then(|s| s.parse::<usize>().ok()),
        parts.get(1),
        parts.get(2),
    ) else {
        return name.to_string();
    };
    let prefix = format!("layer{}.{block}", stage + 1);
    match parts.get(3..) {
        Some(["shortcut", "convolution", param]) => format!("{prefix}.downsample.0.{param}"),
        Some(["shortcut", "normalization", param]) => format!("{prefix}.downsample.1.{param}"),
        Some(["layer", i, kind, param]) => match (i.parse::<usize>(), *kind) {
            (Ok(i), "convolution") => format!("{prefix}.conv{}.{param}", i + 1),
            (Ok(i), "normalization") => format!("{prefix}.bn{}.{param}", i + 1),
            _ => name.to_string(),
        },
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    /// Random-init ResNet-50 written to safetensors, as the real checkpoint would be.
    fn generated_weights(dir: &Path) -> std::path::PathBuf {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        candle_transformers::models::resnet::resnet50(1000, vb).expect("build");
        let path = dir.join("model.safetensors");
        varmap.save(&path).expect("save");
        path
    }

    #[test]
    fn generated_weights_load_and_batch_like_singles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = ResNet50::load(&generated_weights(dir.path())).expect("load");
        assert_eq!(model.num_classes(), 1000);
        // 64 px keeps the test quick; the network pools globally, so any size ≥ 32 works.
        let a = Tensor::randn(0f32, 1.0, (1, 3, 64, 64), &Device::Cpu).expect("a");
        let b = Tensor::randn(0f32, 1.0, (1, 3, 64, 64), &Device::Cpu).expect("b");
        let ya = model.forward(&a).expect("forward a");
        assert_eq!(ya.dims(), &[1, 1000]);
        let values = ya
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("vec");
        assert!(values.iter().all(|v| v.is_finite()));
        let ya2 = model.forward(&a).expect("forward a again");
        let same = (&ya - &ya2).and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>());
        assert_eq!(same.expect("diff"), 0.0, "forward is deterministic");
        let yb = model.forward(&b).expect("forward b");
        let batch = Tensor::cat(&[&a, &b], 0).expect("cat");
        let yab = model.forward(&batch).expect("forward batch");
        let singles = Tensor::cat(&[&ya, &yb], 0).expect("cat");
        let scale = singles.abs().and_then(|t| t.max_all()?.to_scalar::<f32>());
        let diff = (&yab - &singles).and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>());
        let (scale, diff) = (scale.expect("scale"), diff.expect("diff"));
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "batch differs by {diff} (scale {scale})"
        );
    }

    #[test]
    fn transformers_names_map_to_torchvision() {
        let cases = [
            (
                "resnet.embedder.embedder.convolution.weight",
                "conv1.weight",
            ),
            (
                "resnet.embedder.embedder.normalization.running_var",
                "bn1.running_var",
            ),
            (
                "resnet.encoder.stages.0.layers.0.shortcut.convolution.weight",
                "layer1.0.downsample.0.weight",
            ),
            (
                "resnet.encoder.stages.3.layers.2.shortcut.normalization.bias",
                "layer4.2.downsample.1.bias",
            ),
            (
                "resnet.encoder.stages.1.layers.3.layer.2.convolution.weight",
                "layer2.3.conv3.weight",
            ),
            (
                "resnet.encoder.stages.2.layers.5.layer.0.normalization.running_mean",
                "layer3.5.bn1.running_mean",
            ),
            ("classifier.1.weight", "fc.weight"),
            ("layer1.0.conv1.weight", "layer1.0.conv1.weight"),
        ];
        for (hf, tv) in cases {
            assert_eq!(torchvision_name(hf), tv, "{hf}");
        }
    }
}
