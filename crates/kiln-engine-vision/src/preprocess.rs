//! Image decoding and the standard ImageNet evaluation transform.

use std::io::Cursor;

use candle_core::{DType, Device, Tensor};
use image::imageops::FilterType;
use image::{ImageFormat, ImageReader, Limits};

use crate::VisionError;

/// Side of the square the networks see.
pub const INPUT_SIZE: u32 = 224;
/// The shorter side is resized to this before the centre crop (the usual 224/256 = 0.875 crop).
const RESIZE_SIZE: u32 = 256;
/// Caps on what a request may make us decode; far above any real photo, far below a
/// decompression bomb.
const MAX_SIDE: u32 = 16_384;
const MAX_ALLOC: u64 = 512 << 20;

/// How pixel values in 0..=255 are mapped to network inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalization {
    /// `(x - 127) / 128`, as the TF EfficientNet-Lite checkpoints were trained.
    Lite,
    /// `(x / 255 - mean) / std` with the ImageNet channel statistics (torchvision, HF ResNet).
    ImageNet,
}

/// Decodes JPEG/PNG/WebP bytes to an RGB image resized (shorter side 256, Catmull-Rom) and
/// centre-cropped to 224×224, returned as a normalised `(1, 3, 224, 224)` f32 tensor.
pub fn preprocess(bytes: &[u8], norm: Normalization) -> Result<Tensor, VisionError> {
    let rgb = decode_and_crop(bytes)?;
    to_tensor(&rgb, norm).map_err(|e| VisionError::Model(e.to_string()))
}

pub(crate) fn decode_and_crop(bytes: &[u8]) -> Result<image::RgbImage, VisionError> {
    if bytes.is_empty() {
        return Err(VisionError::EmptyImage);
    }
    let format = image::guess_format(bytes).map_err(|_| {
        VisionError::UnsupportedFormat("not a recognised image (expected JPEG, PNG or WebP)".into())
    })?;
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP
    ) {
        let name = format
            .extensions_str()
            .first()
            .copied()
            .unwrap_or("unknown");
        return Err(VisionError::UnsupportedFormat(format!(
            "{name} images are not supported (expected JPEG, PNG or WebP)"
        )));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Unsupported(e) => VisionError::UnsupportedFormat(e.to_string()),
        e => VisionError::CorruptImage(format!("{format:?}: {e}")),
    })?;
    let rgb = image.to_rgb8();
    let (w, h) = rgb.dimensions();
    if w == 0 || h == 0 {
        return Err(VisionError::CorruptImage("image has no pixels".into()));
    }
    // Resizing the shorter side to 256 and cropping the central 224 keeps exactly the central
    // square of side short·224/256. Cropping that square first and resizing it straight to 224
    // gives the same pixels (up to the filter's reach at the border) without ever allocating
    // the long side of a panorama scaled up.
    let short = w.min(h);
    let side = ((short as u64 * INPUT_SIZE as u64 + RESIZE_SIZE as u64 / 2) / RESIZE_SIZE as u64)
        .max(1) as u32;
    let (x0, y0) = ((w - side) / 2, (h - side) / 2);
    let square = image::imageops::crop_imm(&rgb, x0, y0, side, side).to_image();
    Ok(image::imageops::resize(
        &square,
        INPUT_SIZE,
        INPUT_SIZE,
        FilterType::CatmullRom,
    ))
}

fn to_tensor(rgb: &image::RgbImage, norm: Normalization) -> candle_core::Result<Tensor> {
    let (w, h) = rgb.dimensions();
    let hwc = Tensor::from_vec(
        rgb.as_raw().clone(),
        (h as usize, w as usize, 3),
        &Device::Cpu,
    )?;
    let chw = hwc.permute((2, 0, 1))?.to_dtype(DType::F32)?;
    let chw = match norm {
        Normalization::Lite => chw.affine(1.0 / 128.0, -127.0 / 128.0)?,
        Normalization::ImageNet => {
            let mean = Tensor::new(&[0.485f32, 0.456, 0.406], &Device::Cpu)?.reshape((3, 1, 1))?;
            let std = Tensor::new(&[0.229f32, 0.224, 0.225], &Device::Cpu)?.reshape((3, 1, 1))?;
            (chw / 255.0)?.broadcast_sub(&mean)?.broadcast_div(&std)?
        }
    };
    chw.unsqueeze(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 128]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).expect("encode");
        out.into_inner()
    }

    #[test]
    fn any_aspect_becomes_a_normalised_224_square() {
        for (w, h) in [(300, 200), (200, 300), (1, 1), (2000, 3)] {
            let t = preprocess(&png(w, h), Normalization::Lite).expect("preprocess");
            assert_eq!(t.dims(), &[1, 3, 224, 224]);
        }
        // A constant 128 blue channel maps to (128 - 127) / 128.
        let t = preprocess(&png(10, 10), Normalization::Lite).expect("preprocess");
        let blue = t.get(0).and_then(|t| t.get(2)).and_then(|t| t.mean_all());
        let blue = blue.and_then(|t| t.to_scalar::<f32>()).expect("mean");
        assert!((blue - 1.0 / 128.0).abs() < 1e-3, "{blue}");
    }

    #[test]
    fn bad_input_gets_the_right_error() {
        assert!(matches!(decode_and_crop(b""), Err(VisionError::EmptyImage)));
        let text = b"hello, this is a text file, not a picture\n";
        assert!(matches!(
            decode_and_crop(text),
            Err(VisionError::UnsupportedFormat(_))
        ));
        let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";
        assert!(matches!(
            decode_and_crop(gif),
            Err(VisionError::UnsupportedFormat(_))
        ));
        let mut truncated = png(64, 64);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(
            decode_and_crop(&truncated),
            Err(VisionError::CorruptImage(_))
        ));
        let jpeg_header = b"\xff\xd8\xff\xe0garbage garbage garbage";
        assert!(matches!(
            decode_and_crop(jpeg_header),
            Err(VisionError::CorruptImage(_))
        ));
    }
}
