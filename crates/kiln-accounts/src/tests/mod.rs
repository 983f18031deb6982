//! Tests for the whole crate, in one binary to keep link time down.

mod rate_limit;
mod scopes;
mod tokens;
mod usage;

use std::path::PathBuf;

use tempfile::TempDir;

/// A fresh database path in its own temporary directory (kept alive by the returned guard).
fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested").join("accounts.sqlite");
    (dir, path)
}
