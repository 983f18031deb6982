//! Finding and loading the ONNX Runtime shared library (`ort`'s `load-dynamic`), once per
//! process, for every engine that runs on it (Piper voices, int8 BERT embeddings).
//!
//! The library comes from the PyPI `onnxruntime` wheel (`onnxruntime/capi/libonnxruntime.so.*`);
//! `scripts/install-deps` unpacks it into `~/.cache/kiln/onnxruntime/`. `ORT_DYLIB_PATH` names
//! another file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The ONNX Runtime release `ort` 2.0.0-rc.10 is built against (older ones are refused).
pub const ONNXRUNTIME_VERSION: &str = "1.22.1";

/// Where `scripts/install-deps` puts the library.
pub fn default_library_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/kiln/onnxruntime"))
}

/// The ONNX Runtime library to load: `ORT_DYLIB_PATH`, else `libonnxruntime.so` (or the newest
/// `libonnxruntime.so.*`) in [`default_library_dir`].
pub fn library_path() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "ORT_DYLIB_PATH names {}, which is not a file",
                path.display()
            ))
        };
    }
    let dir = default_library_dir().ok_or("HOME is not set; set ORT_DYLIB_PATH")?;
    find_in(&dir).ok_or_else(|| {
        format!(
            "no ONNX Runtime library (libonnxruntime.so*) in {}; run scripts/install-deps \
             or set ORT_DYLIB_PATH",
            dir.display()
        )
    })
}

fn find_in(dir: &Path) -> Option<PathBuf> {
    let plain = dir.join("libonnxruntime.so");
    if plain.is_file() {
        return Some(plain);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so."))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Loads ONNX Runtime once per process; every later call answers the first one's outcome.
/// `ort` panics when the library cannot be loaded or is too old; that panic is caught here and
/// returned as an error.
pub fn ensure_loaded() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = library_path()?;
            let shown = path.display().to_string();
            std::panic::catch_unwind(move || {
                ort::init_from(path.to_string_lossy())
                    .with_name("kiln")
                    .commit()
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .unwrap_or_else(|panic| {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "unknown error".into());
                Err(format!("cannot load ONNX Runtime from {shown}: {why}"))
            })
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_plain_name_first_then_the_newest_versioned_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find_in(dir.path()), None);
        std::fs::write(dir.path().join("libonnxruntime.so.1.20.0"), b"").unwrap();
        std::fs::write(dir.path().join("libonnxruntime.so.1.22.1"), b"").unwrap();
        assert_eq!(
            find_in(dir.path()),
            Some(dir.path().join("libonnxruntime.so.1.22.1"))
        );
        std::fs::write(dir.path().join("libonnxruntime.so"), b"").unwrap();
        assert_eq!(
            find_in(dir.path()),
            Some(dir.path().join("libonnxruntime.so"))
        );
    }
}
