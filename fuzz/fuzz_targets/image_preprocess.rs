//! Image-classification input: any bytes as JPEG/PNG/WebP, decoded, resized and cropped.
#![no_main]
use kiln_engine_vision::preprocess::{preprocess, Normalization, INPUT_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tensor) = preprocess(data, Normalization::ImageNet) {
        let side = INPUT_SIZE as usize;
        assert_eq!(tensor.dims(), &[1, 3, side, side]);
    }
});
