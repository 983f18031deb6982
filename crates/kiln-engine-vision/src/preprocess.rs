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
/// Bytes per pixel of the widest layout a decoder may hold (16-bit RGBA), for the decoder's
/// allocation cap; plus slack for its own tables.
const DECODER_BYTES_PER_PIXEL: u64 = 8;
const DECODER_SLACK: u64 = 16 << 20;

/// What an image may be (Kiln's `[limits.image]`, named in every refusal): checked from the
/// header, before any pixel is decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageLimits {
    /// Widest or tallest image accepted, in pixels.
    pub max_dimension: u32,
    /// Most pixels (width × height) accepted.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_dimension: 16_384,
            max_pixels: 40_000_000,
        }
    }
}

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
    preprocess_within(bytes, norm, &ImageLimits::default())
}

/// [`preprocess`] of an image within `limits`.
pub fn preprocess_within(
    bytes: &[u8],
    norm: Normalization,
    limits: &ImageLimits,
) -> Result<Tensor, VisionError> {
    let rgb = decode_and_crop(bytes, limits)?;
    to_tensor(&rgb, norm).map_err(|e| VisionError::Model(e.to_string()))
}

pub(crate) fn decode_and_crop(
    bytes: &[u8],
    limits: &ImageLimits,
) -> Result<image::RgbImage, VisionError> {
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
    let decode_error = |e: image::ImageError| match e {
        image::ImageError::Unsupported(e) => VisionError::UnsupportedFormat(e.to_string()),
        image::ImageError::Limits(e) => VisionError::Limit(format!(
            "the image needs more memory to decode than limits.image.max_pixels allows ({e})"
        )),
        e => VisionError::CorruptImage(format!("{format:?}: {e}")),
    };
    // The header alone first: its dimensions are checked before a pixel buffer exists.
    // (No decoder limits on this read: it allocates no pixels, and with them a header over
    // the default allocation limit would be refused without naming the dimension at fault.)
    let mut header = ImageReader::with_format(Cursor::new(bytes), format);
    header.no_limits();
    let (width, height) = header.into_dimensions().map_err(decode_error)?;
    check_dimensions(width, height, limits)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_dimension);
    decoder_limits.max_image_height = Some(limits.max_dimension);
    decoder_limits.max_alloc = Some(
        limits
            .max_pixels
            .saturating_mul(DECODER_BYTES_PER_PIXEL)
            .saturating_add(DECODER_SLACK),
    );
    reader.limits(decoder_limits);
    let image = reader.decode().map_err(decode_error)?;
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

/// Refuses an image wider, taller or larger than `limits`, naming the limit.
fn check_dimensions(width: u32, height: u32, limits: &ImageLimits) -> Result<(), VisionError> {
    let side = width.max(height);
    if side > limits.max_dimension {
        return Err(VisionError::Limit(format!(
            "the image is {width}x{height} pixels; its sides may be at most {} pixels \
             (limits.image.max_dimension)",
            limits.max_dimension
        )));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(VisionError::Limit(format!(
            "the image is {width}x{height} = {pixels} pixels, more than {} \
             (limits.image.max_pixels)",
            limits.max_pixels
        )));
    }
    Ok(())
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

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A real PNG whose IHDR (CRC fixed) claims `w`×`h`.
    fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        let mut bytes = png(4, 4);
        bytes[16..20].copy_from_slice(&w.to_be_bytes());
        bytes[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        bytes
    }

    /// A real JPEG whose SOF0 claims `w`×`h`.
    fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(8, 8, image::Rgb([10, 200, 30]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg).expect("encode");
        let mut bytes = out.into_inner();
        let sof = bytes
            .windows(2)
            .position(|m| m == [0xFF, 0xC0])
            .expect("a baseline SOF");
        bytes[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
        bytes[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
        bytes
    }

    fn limit_message(result: Result<image::RgbImage, VisionError>) -> String {
        match result {
            Err(VisionError::Limit(message)) => message,
            Err(other) => panic!("expected a limit error, got {other:?}"),
            Ok(image) => panic!(
                "expected a limit error, got a {:?} image",
                image.dimensions()
            ),
        }
    }

    #[test]
    fn huge_headers_are_refused_before_decoding() {
        let limits = ImageLimits::default();
        let message = limit_message(decode_and_crop(&png_claiming(100_000, 100_000), &limits));
        assert!(
            message.contains("100000x100000") && message.contains("limits.image.max_dimension"),
            "{message}"
        );
        // Within the side limit, over the pixel count.
        let message = limit_message(decode_and_crop(&png_claiming(16_000, 16_000), &limits));
        assert!(message.contains("limits.image.max_pixels"), "{message}");
        let message = limit_message(decode_and_crop(&jpeg_claiming(60_000, 60_000), &limits));
        assert!(message.contains("limits.image.max_dimension"), "{message}");
        let message = limit_message(decode_and_crop(&jpeg_claiming(10_000, 10_000), &limits));
        assert!(message.contains("limits.image.max_pixels"), "{message}");
        // Configured lower: a real 300x200 image is over 50000 pixels.
        let small = ImageLimits {
            max_dimension: 1000,
            max_pixels: 50_000,
        };
        let message = limit_message(decode_and_crop(&png(300, 200), &small));
        assert!(message.contains("60000 pixels"), "{message}");
        assert!(decode_and_crop(&png(200, 200), &small).is_ok());
    }

    #[test]
    fn mangled_headers_never_panic() {
        for file in [png(16, 16), jpeg_claiming(8, 8)] {
            for at in 0..file.len().min(200) {
                for value in [0x00, 0x7F, 0xFF] {
                    let mut bytes = file.clone();
                    bytes[at] = value;
                    let _ = decode_and_crop(&bytes, &ImageLimits::default());
                }
            }
        }
    }

    #[test]
    fn bad_input_gets_the_right_error() {
        assert!(matches!(
            decode_and_crop(b"", &ImageLimits::default()),
            Err(VisionError::EmptyImage)
        ));
        let text = b"hello, this is a text file, not a picture\n";
        assert!(matches!(
            decode_and_crop(text, &ImageLimits::default()),
            Err(VisionError::UnsupportedFormat(_))
        ));
        let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";
        assert!(matches!(
            decode_and_crop(gif, &ImageLimits::default()),
            Err(VisionError::UnsupportedFormat(_))
        ));
        let mut truncated = png(64, 64);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(
            decode_and_crop(&truncated, &ImageLimits::default()),
            Err(VisionError::CorruptImage(_))
        ));
        let jpeg_header = b"\xff\xd8\xff\xe0garbage garbage garbage";
        assert!(matches!(
            decode_and_crop(jpeg_header, &ImageLimits::default()),
            Err(VisionError::CorruptImage(_))
        ));
    }
}
