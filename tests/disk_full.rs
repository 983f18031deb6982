//! A small tmpfs to fill up, shared by the disk-full tests of every store (each includes this
//! file with `#[path]`): the stores are tested against a real `ENOSPC`, not a mock.
//!
//! Mounting needs root (or `CAP_SYS_ADMIN`); without it [`SmallDisk::mount`] says why on stderr
//! and returns `None`, and the test returns early (docs/robustness.md, "Durability").

#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// An 8 MiB tmpfs, unmounted when dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
    filler: PathBuf,
}

impl SmallDisk {
    pub fn mount(test: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(dir.path())
            .output();
        let why = match mounted {
            Ok(output) if output.status.success() => None,
            Ok(output) => Some(String::from_utf8_lossy(&output.stderr).trim().to_owned()),
            Err(error) => Some(error.to_string()),
        };
        if let Some(why) = why {
            eprintln!("{test}: skipped, cannot mount a tmpfs to fill ({why}); run as root");
            return None;
        }
        let filler = dir.path().join("filler");
        Some(Self { dir, filler })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk refuses even a single byte more.
    pub fn fill(&self) {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.filler)
            .expect("filler");
        for size in [1 << 16, 4096, 1] {
            let chunk = vec![0u8; size];
            loop {
                match file.write(&chunk) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(error) if error.kind() == ErrorKind::StorageFull => break,
                    Err(error) => panic!("filling the disk: {error}"),
                }
            }
        }
    }

    /// Gives the space back.
    pub fn free(&self) {
        fs::remove_file(&self.filler).expect("removing the filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Before the TempDir (a field, dropped after this) removes the mount point.
        // Lazy: a process still holding a file there (a test that failed) cannot keep it mounted.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Whether `message` is the OS's "disk full" (what every store's error should carry).
pub fn says_disk_full(message: &str) -> bool {
    let message = message.to_lowercase();
    message.contains("no space left")
        || message.contains("disk is full")
        || message.contains("database or disk is full")
}
