//! Request validation: a JSON body checked against the input schema of one model of each kind
//! (text generation, embeddings, speech recognition, …). The first byte picks the model.
#![no_main]
use std::sync::LazyLock;

use kiln_catalog::{validate_input, Catalog, CatalogEntry};
use kiln_core::ErrorKind;
use libfuzzer_sys::fuzz_target;

/// One catalog entry per distinct (schema kind, task), so every compiled schema is reachable.
static ENTRIES: LazyLock<Vec<&'static CatalogEntry>> = LazyLock::new(|| {
    let mut seen = Vec::new();
    let mut entries = Vec::new();
    for entry in Catalog::builtin().entries() {
        let key = format!("{:?}", entry.schema);
        if !seen.contains(&key) {
            seen.push(key);
            entries.push(entry);
        }
    }
    entries
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let Ok(input) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let entry = ENTRIES[pick as usize % ENTRIES.len()];
    if let Err(error) = validate_input(entry, &input) {
        assert_eq!(error.kind, ErrorKind::BadInput, "{}: {}", entry.name, error.message);
    }
});
