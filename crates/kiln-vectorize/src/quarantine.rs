//! Damaged indexes are moved aside, not fatal: one index whose config, snapshot or log cannot
//! be read back must not stop the server or hide the account's other indexes. Its directory is
//! renamed to `<root>/<account>/.quarantine/<index>.<unix-ms>` (kept whole, for an operator to
//! inspect or repair), an error is logged, and the store goes on without it: the index is then
//! missing (404), and its name can be used again.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::wal::sync_dir;

/// The directory in each account's directory that holds quarantined indexes. Index names start
/// with a letter or digit, so it can never be an index.
pub const QUARANTINE_DIR: &str = ".quarantine";

/// Moves `index_dir` (in `account_dir`) into the account's quarantine; returns where it went.
/// Logs either way: a failure to move leaves the index in place, out of service.
pub fn quarantine(account_dir: &Path, index_dir: &Path, reason: &str) -> io::Result<PathBuf> {
    let moved = move_aside(account_dir, index_dir, reason);
    if let Err(error) = &moved {
        tracing::error!(
            index = %index_dir.display(),
            %error,
            %reason,
            "vectorize: damaged index taken out of service; moving it aside failed"
        );
    }
    moved
}

fn move_aside(account_dir: &Path, index_dir: &Path, reason: &str) -> io::Result<PathBuf> {
    let name = index_dir
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("index");
    let aside = account_dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&aside)?;
    let target = aside.join(format!("{name}.{}", kiln_core::time::unix_millis()));
    fs::rename(index_dir, &target)?;
    sync_dir(account_dir)?;
    sync_dir(&aside)?;
    tracing::error!(
        index = %index_dir.display(),
        moved_to = %target.display(),
        %reason,
        "vectorize: damaged index quarantined; the other indexes are served as usual"
    );
    Ok(target)
}
