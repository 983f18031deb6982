//! Helpers shared by the fuzz targets.

/// kiln-http's JSON mode, compiled from its own source: linking kiln-http itself would pull in
/// axum's server stack, reqwest/rustls, SQLite and every store for one pure module, while this
/// file only needs kiln-core, serde_json and jsonschema.
#[path = "../../crates/kiln-http/src/json_mode.rs"]
#[allow(dead_code)]
pub mod json_mode;

/// Splits `data` into `(name, value)` pairs: one per line (`\n`), name and value separated by the
/// first `sep`; a line without it is a name with an empty value. Lossy UTF-8, as HTTP stacks
/// reject or replace invalid bytes before Kiln sees them.
pub fn pairs(data: &[u8], sep: char) -> Vec<(String, String)> {
    String::from_utf8_lossy(data)
        .split('\n')
        .map(|line| match line.split_once(sep) {
            Some((name, value)) => (name.to_owned(), value.to_owned()),
            None => (line.to_owned(), String::new()),
        })
        .collect()
}

/// A process-wide scratch directory for targets that need files (removed at exit by the OS's
/// tmp cleaning only; the fuzzers write a few small files into it).
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
