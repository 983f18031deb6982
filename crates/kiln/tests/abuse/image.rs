//! Image classification (`@cf/microsoft/resnet-50`): headers that claim huge dimensions are
//! refused from the header (400 / 5006 naming the limit), before a pixel buffer exists, and
//! huge JSON byte arrays do not take the server down.

use serde_json::{json, Value};

use crate::{assert_peak_rss_under, assert_refused, assert_still_serving, post, post_bytes};

const CLASSIFIER: &str = "@cf/microsoft/resnet-50";

fn photo() -> Vec<u8> {
    let images = kiln_store::ensure_for_tests("skimage-test-images");
    std::fs::read(images.dir.join("chelsea.png")).expect("test photo")
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

/// The real photo with its IHDR (CRC fixed) claiming `w`×`h`.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut bytes = photo();
    assert_eq!(&bytes[12..16], b"IHDR");
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn normal_request() -> Value {
    json!({"image": photo()})
}

#[tokio::test]
async fn huge_image_headers_are_refused() {
    let _serial = crate::one_attack_at_a_time().await;
    let cases = [
        (png_claiming(100_000, 100_000), "100000x100000"),
        (png_claiming(100_000, 100_000), "limits.image.max_dimension"),
        (png_claiming(16_000, 16_000), "limits.image.max_pixels"),
        (png_claiming(u32::MAX >> 1, 1), "limits.image.max_dimension"),
    ];
    for (bytes, needle) in cases {
        let (status, body) = post_bytes(CLASSIFIER, "image/png", bytes.clone()).await;
        assert_refused(status, &body, 5006, needle);
        // The same inside JSON.
        let (status, body) = post(CLASSIFIER, &json!({ "image": bytes })).await;
        assert_refused(status, &body, 5006, needle);
    }
    assert_still_serving(CLASSIFIER, &normal_request()).await;
}

#[tokio::test]
async fn large_json_byte_arrays_stay_bounded() {
    let _serial = crate::one_attack_at_a_time().await;
    // 5 million byte values (10 MB of JSON, under the body limit): parsed, found not to be an
    // image, refused; memory stays under the bound.
    let body = json!({ "image": vec![0u8; 5_000_000] });
    let (status, response) = post(CLASSIFIER, &body).await;
    assert_refused(status, &response, 5006, "image");
    // Base64 that is not an image.
    let (status, response) = post(CLASSIFIER, &json!({"image": "AAAA".repeat(1_000_000)})).await;
    assert!((400..500).contains(&status), "{status}: {response}");
    assert_peak_rss_under(crate::PEAK_RSS_BOUND);
    assert_still_serving(CLASSIFIER, &normal_request()).await;
}
