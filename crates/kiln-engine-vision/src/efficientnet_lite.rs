//! EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant for mobile/CPU).
//!
//! Lite differs from EfficientNet-B0 in ways that matter for loading real weights: no
//! squeeze-and-excitation, ReLU6 instead of swish, and a fixed stem (32 channels) and head
//! (1280 channels). The checkpoint was trained with TensorFlow, so convolutions use TF "SAME"
//! padding (asymmetric for stride 2: the extra row/column goes at the bottom/right) and batch
//! norm uses eps 1e-3. Tensor names follow `efficientnet_pytorch` (`_conv_stem`, `_blocks.N`,
//! `_conv_head`, `_fc`).

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, D};

const BN_EPS: f64 = 1e-3;

/// One row of the B0/Lite0 stage table: (repeats, kernel, stride, expand ratio, out channels).
const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];
const STEM_CHANNELS: usize = 32;
const HEAD_CHANNELS: usize = 1280;

/// A convolution with its batch norm folded in (inference only), so each layer is one conv plus
/// a bias add instead of conv + four per-channel ops.
#[derive(Debug, Clone)]
struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    kernel: usize,
    stride: usize,
    groups: usize,
}

impl ConvBn {
    fn load(
        w: &Weights,
        conv: &str,
        bn: &str,
        shape: (usize, usize, usize),
        stride: usize,
        groups: usize,
    ) -> Result<Self> {
        let (c_out, c_in, kernel) = shape;
        let weight = w.get(
            &format!("{conv}.weight"),
            &[c_out, c_in / groups, kernel, kernel],
        )?;
        let gamma = w.get(&format!("{bn}.weight"), &[c_out])?;
        let beta = w.get(&format!("{bn}.bias"), &[c_out])?;
        let mean = w.get(&format!("{bn}.running_mean"), &[c_out])?;
        let var = w.get(&format!("{bn}.running_var"), &[c_out])?;
        // y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta
        let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
        let bias = (beta - (mean * &scale)?)?;
        let weight = weight.broadcast_mul(&scale.reshape((c_out, 1, 1, 1))?)?;
        Ok(Self {
            weight,
            bias: bias.reshape((1, c_out, 1, 1))?,
            kernel,
            stride,
            groups,
        })
    }

    fn forward(&self, xs: &Tensor, relu6: bool) -> Result<Tensor> {
        let xs = pad_same(xs, self.kernel, self.stride)?;
        let ys = xs
            .conv2d(&self.weight, 0, self.stride, 1, self.groups)?
            .broadcast_add(&self.bias)?;
        if relu6 {
            ys.clamp(0f32, 6f32)
        } else {
            Ok(ys)
        }
    }
}

/// TF "SAME" padding: output size ceil(input / stride), with any odd padding after.
fn pad_same(xs: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
    let mut xs = xs.clone();
    for dim in [2, 3] {
        let size = xs.dim(dim)?;
        let out = size.div_ceil(stride);
        let total = ((out - 1) * stride + kernel).saturating_sub(size);
        if total > 0 {
            xs = xs.pad_with_zeros(dim, total / 2, total - total / 2)?;
        }
    }
    Ok(xs)
}

/// Mobile inverted bottleneck: 1×1 expand, k×k depthwise, 1×1 linear projection, plus the
/// identity shortcut when the shape is unchanged.
#[derive(Debug, Clone)]
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    skip: bool,
}

impl MbConv {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut ys = match &self.expand {
            Some(expand) => expand.forward(xs, true)?,
            None => xs.clone(),
        };
        ys = self.depthwise.forward(&ys, true)?;
        ys = self.project.forward(&ys, false)?;
        if self.skip {
            ys = (ys + xs)?;
        }
        Ok(ys)
    }
}

/// The checkpoint's tensors, checked for shape as they are taken.
struct Weights<'a>(&'a HashMap<String, Tensor>);

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let Some(t) = self.0.get(name) else {
            candle_core::bail!("checkpoint lacks tensor {name}")
        };
        if t.dims() != shape {
            candle_core::bail!("tensor {name} has shape {:?}, expected {shape:?}", t.dims())
        }
        t.to_dtype(DType::F32)?.to_device(&Device::Cpu)
    }
}

/// EfficientNet-Lite0 for inference on `(N, 3, H, W)` images normalised as `(x - 127) / 128`.
#[derive(Debug, Clone)]
pub struct EfficientNetLite {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    head: ConvBn,
    fc_weight: Tensor,
    fc_bias: Tensor,
}

impl EfficientNetLite {
    /// Builds Lite0 from an `efficientnet_pytorch`-style state dict.
    pub fn lite0(tensors: &HashMap<String, Tensor>) -> Result<Self> {
        let w = Weights(tensors);
        let stem = ConvBn::load(&w, "_conv_stem", "_bn0", (STEM_CHANNELS, 3, 3), 2, 1)?;
        let mut blocks = Vec::new();
        let mut c_in = STEM_CHANNELS;
        for (repeats, kernel, stride, expand_ratio, c_out) in STAGES {
            for r in 0..repeats {
                let (c_in_block, stride) = if r == 0 { (c_in, stride) } else { (c_out, 1) };
                let p = format!("_blocks.{}", blocks.len());
                let hidden = c_in_block * expand_ratio;
                let expand = if expand_ratio != 1 {
                    let shape = (hidden, c_in_block, 1);
                    let conv = format!("{p}._expand_conv");
                    Some(ConvBn::load(&w, &conv, &format!("{p}._bn0"), shape, 1, 1)?)
                } else {
                    None
                };
                let dw = format!("{p}._depthwise_conv");
                let shape = (hidden, hidden, kernel);
                let depthwise = ConvBn::load(&w, &dw, &format!("{p}._bn1"), shape, stride, hidden)?;
                let shape = (c_out, hidden, 1);
                let pj = format!("{p}._project_conv");
                let project = ConvBn::load(&w, &pj, &format!("{p}._bn2"), shape, 1, 1)?;
                blocks.push(MbConv {
                    expand,
                    depthwise,
                    project,
                    skip: stride == 1 && c_in_block == c_out,
                });
            }
            c_in = c_out;
        }
        let head = ConvBn::load(&w, "_conv_head", "_bn1", (HEAD_CHANNELS, c_in, 1), 1, 1)?;
        let fc_weight = tensors
            .get("_fc.weight")
            .ok_or_else(|| candle_core::Error::Msg("checkpoint lacks tensor _fc.weight".into()))?;
        let classes = fc_weight.dim(0)?;
        let fc_weight = w
            .get("_fc.weight", &[classes, HEAD_CHANNELS])?
            .t()?
            .contiguous()?;
        let fc_bias = w.get("_fc.bias", &[classes])?;
        Ok(Self {
            stem,
            blocks,
            head,
            fc_weight,
            fc_bias,
        })
    }

    /// Logits `(N, classes)` for a batch `(N, 3, H, W)`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut xs = self.stem.forward(xs, true)?;
        for block in &self.blocks {
            xs = block.forward(&xs)?;
        }
        let xs = self.head.forward(&xs, true)?;
        // Global average pool, then the linear classifier (dropout is a no-op at inference).
        let pooled = xs.mean(D::Minus1)?.mean(D::Minus1)?;
        pooled.matmul(&self.fc_weight)?.broadcast_add(&self.fc_bias)
    }

    pub fn num_classes(&self) -> usize {
        self.fc_bias.dims1().unwrap_or(0)
    }
}
