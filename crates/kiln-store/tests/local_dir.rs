//! `kiln models pull NAME --hf DIR`: a local Hugging Face-layout directory installed as a user
//! model, its format read from `config.json`, a damaged copy restored from the directory.

use std::fs;

use kiln_store::{ModelFormat, ModelStore, Progress, StoreError, DEFAULT_HF_FILES};

fn hf_dir(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("config.json"), config).unwrap();
    fs::write(dir.path().join("tokenizer.json"), b"{\"model\":{}}").unwrap();
    fs::write(
        dir.path().join("model.safetensors"),
        b"weights of a cross-encoder",
    )
    .unwrap();
    dir
}

#[test]
fn a_local_directory_installs_with_the_format_its_config_names() {
    let reranker = hf_dir(
        r#"{"architectures": ["XLMRobertaForSequenceClassification"], "id2label": {"0": "LABEL_0"}}"#,
    );
    let classifier = hf_dir(
        r#"{"architectures": ["DistilBertForSequenceClassification"],
            "id2label": {"0": "NEGATIVE", "1": "POSITIVE"}}"#,
    );
    let data_dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(data_dir.path());

    let model = store
        .install_hf_dir(
            "my-reranker",
            reranker.path(),
            &DEFAULT_HF_FILES,
            Progress::Quiet,
        )
        .unwrap();
    assert_eq!(model.format, ModelFormat::HfReranker);
    assert_eq!(
        model.primary_file,
        data_dir.path().join("models/my-reranker/model.safetensors")
    );
    let sentiment = store
        .install_hf_dir(
            "my-sst2",
            classifier.path(),
            &DEFAULT_HF_FILES,
            Progress::Quiet,
        )
        .unwrap();
    assert_eq!(sentiment.format, ModelFormat::HfTextClassifier);
    assert_eq!(store.installed(), vec![model.clone(), sentiment]);

    // A damaged copy is copied again from the directory it came from.
    fs::write(&model.primary_file, b"x").unwrap();
    assert_eq!(store.ensure("my-reranker", Progress::Quiet).unwrap(), model);
    assert_eq!(
        fs::read(&model.primary_file).unwrap(),
        b"weights of a cross-encoder"
    );

    // If the directory changed since (same size, other bytes), the pinned hash refuses it.
    fs::write(
        reranker.path().join("model.safetensors"),
        b"weights of another encoder",
    )
    .unwrap();
    fs::write(&model.primary_file, b"x").unwrap();
    let error = store.ensure("my-reranker", Progress::Quiet).unwrap_err();
    assert!(matches!(error, StoreError::HashMismatch { .. }), "{error}");
}

#[test]
fn bad_names_paths_and_directories_are_refused() {
    let source = hf_dir(r#"{"architectures": ["BertModel"]}"#);
    let data_dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(data_dir.path());
    let install = |name: &str, files: &[&str]| {
        store.install_hf_dir(name, source.path(), files, Progress::Quiet)
    };
    assert!(install("../escape", &DEFAULT_HF_FILES).is_err());
    assert!(install("all-minilm-l6-v2", &DEFAULT_HF_FILES).is_err());
    assert!(install("ok", &["../config.json", "model.safetensors"]).is_err());
    assert!(install("ok", &["config.json"]).is_err(), "no weights file");
    let missing = store.install_hf_dir(
        "ok",
        &data_dir.path().join("nowhere"),
        &DEFAULT_HF_FILES,
        Progress::Quiet,
    );
    assert!(matches!(missing, Err(StoreError::Io { .. })));
    assert_eq!(
        install("plain-bert", &DEFAULT_HF_FILES).unwrap().format,
        ModelFormat::HfBert
    );
}
