//! `@cf/microsoft/resnet-50` (served by EfficientNet-Lite0): a cat and an espresso.

use serde_json::{json, Value};

use super::*;

fn photo(name: &str) -> Vec<u8> {
    let images = kiln_store::ensure_for_tests("skimage-test-images");
    std::fs::read(images.dir.join(name)).expect("test photo")
}

async fn classify_binary(bytes: Vec<u8>) -> (u16, Value) {
    let response = client()
        .post(media_run_url("@cf/microsoft/resnet-50"))
        .bearer_auth("sk-test")
        .body(bytes)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

#[tokio::test]
async fn photos_are_classified() {
    let (status, body) = classify_binary(photo("chelsea.png")).await;
    assert_eq!(status, 200, "{body}");
    let classes = body["result"].as_array().expect("an array of classes");
    assert_eq!(classes.len(), 5, "{body}");
    let top3: Vec<&str> = classes[..3]
        .iter()
        .filter_map(|c| c["label"].as_str())
        .collect();
    assert!(
        top3.iter()
            .any(|label| label.contains("cat") || label.contains("tabby")),
        "a cat in the top 3: {top3:?}"
    );
    let scores: Vec<f64> = classes.iter().filter_map(|c| c["score"].as_f64()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]) && scores[0] <= 1.0,
        "{scores:?}"
    );

    // The same through `{image: number[]}`.
    let bytes: Vec<u64> = photo("coffee.png").into_iter().map(u64::from).collect();
    let (status, _, body) = run("@cf/microsoft/resnet-50", &json!({"image": bytes})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"][0]["label"], "espresso", "{body}");
}

#[tokio::test]
async fn bad_images_name_the_problem() {
    for (bytes, expected) in [
        (b"this is not an image".to_vec(), "format"),
        (
            photo("chelsea.png")[..2000].to_vec(),
            "could not be decoded",
        ),
    ] {
        let (status, body) = classify_binary(bytes).await;
        assert_eq!(status, 400, "{body}");
        let (code, message) = assert_error_envelope(&body);
        assert_eq!(code, 5006);
        assert!(message.to_lowercase().contains(expected), "{message}");
    }
    let (status, body) = classify_binary(Vec::new()).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = run("@cf/microsoft/resnet-50", &json!({"image": [1, 2, 300]})).await;
    assert_eq!(status, 400, "{body}");
}
