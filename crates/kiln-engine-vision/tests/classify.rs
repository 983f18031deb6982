//! End-to-end classification with the real EfficientNet-Lite0 weights and test photos, and
//! ResNet-50 through the public API on weights the test generates.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use kiln_engine_vision::{Classification, ImageClassifier, VisionError};

fn efficientnet() -> &'static ImageClassifier {
    static MODEL: OnceLock<ImageClassifier> = OnceLock::new();
    MODEL.get_or_init(|| {
        let model = kiln_store::ensure_for_tests("efficientnet-lite0");
        let start = Instant::now();
        let classifier = ImageClassifier::load_efficientnet_lite0(&model.dir).expect("load");
        eprintln!("efficientnet-lite0 loaded in {:?}", start.elapsed());
        classifier
    })
}

fn photo(name: &str) -> Vec<u8> {
    let dir = kiln_store::ensure_for_tests("skimage-test-images").dir;
    std::fs::read(dir.join(name)).expect("read photo")
}

/// First lemma of a label: "tabby, tabby cat" → "tabby".
fn first_lemma(c: &Classification) -> &str {
    c.label.split(',').next().unwrap_or_default().trim()
}

fn classify_timed(name: &str, k: usize) -> Vec<Classification> {
    let bytes = photo(name);
    let start = Instant::now();
    let top = efficientnet().classify(&bytes, k).expect("classify");
    eprintln!("{name}: {top:?} in {:?}", start.elapsed());
    top
}

#[test]
fn chelsea_is_a_cat() {
    let top = classify_timed("chelsea.png", 3);
    assert_eq!(top.len(), 3);
    let cats = ["Egyptian cat", "tabby", "tiger cat"];
    assert!(
        top.iter().any(|c| cats.contains(&first_lemma(c))),
        "no cat in the top 3: {top:?}"
    );
    assert!(top.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(top.iter().all(|c| c.score > 0.0 && c.score <= 1.0));
}

#[test]
fn coffee_is_espresso() {
    let top = classify_timed("coffee.png", 5);
    assert_eq!(first_lemma(&top[0]), "espresso", "{top:?}");
    assert!(top[0].score > 0.5, "{top:?}");
}

#[test]
fn bad_bodies_are_typed_errors() {
    let model = efficientnet();
    assert_eq!(model.classify(b"", 5), Err(VisionError::EmptyImage));
    let text = b"{\"image\": \"this is JSON text, not an image\"}";
    assert!(matches!(
        model.classify(text, 5),
        Err(VisionError::UnsupportedFormat(_))
    ));
    let mut corrupt = photo("chelsea.png");
    corrupt.truncate(4096);
    let err = model.classify(&corrupt, 5).unwrap_err();
    assert!(matches!(err, VisionError::CorruptImage(_)), "{err:?}");
    assert!(err.is_bad_input());
}

#[test]
fn missing_weights_are_a_model_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = ImageClassifier::load_efficientnet_lite0(dir.path()).unwrap_err();
    assert!(matches!(err, VisionError::Model(_)), "{err:?}");
    let err = ImageClassifier::load_resnet50(&dir.path().join("x.safetensors"), None).unwrap_err();
    assert!(matches!(err, VisionError::Model(_)), "{err:?}");
}

fn generated_resnet50(dir: &std::path::Path) -> PathBuf {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    candle_transformers::models::resnet::resnet50(1000, vb).expect("build");
    let path = dir.join("model.safetensors");
    varmap.save(&path).expect("save");
    path
}

#[test]
fn resnet50_generated_weights_classify_deterministically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weights = generated_resnet50(dir.path());
    let labels = kiln_store::ensure_for_tests("efficientnet-lite0").dir;
    let model = ImageClassifier::load_resnet50(&weights, Some(&labels)).expect("load");
    assert_eq!(model.labels().len(), 1000);
    let bytes = photo("coffee.png");
    let start = Instant::now();
    let first = model.classify(&bytes, 5).expect("classify");
    eprintln!("resnet-50 (random weights): {:?}", start.elapsed());
    assert_eq!(first.len(), 5);
    assert!(first.iter().all(|c| c.score.is_finite()));
    assert_eq!(model.classify(&bytes, 5).expect("again"), first);
    let unlabelled = ImageClassifier::load_resnet50(&weights, None).expect("load");
    assert!(unlabelled.labels()[0].starts_with("LABEL_"));
}
