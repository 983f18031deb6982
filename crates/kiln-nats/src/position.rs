//! How far this node has applied the stream, kept in a small file so a restart resumes there
//! instead of replaying the stream from its start. Saved after the changes are in the
//! index logs, so a crash in between re-applies a few changes: harmless, since applying a
//! change twice leaves what applying it once did (upserts and deletes repeat, a repeated
//! create or insert of the same thing is refused).

use std::fs;
use std::path::{Path, PathBuf};

pub(crate) struct PositionFile {
    path: PathBuf,
    /// The stream's creation time: a stream deleted and made again starts over at 1, and a
    /// position in the old one means nothing in it.
    stream_created: String,
}

impl PositionFile {
    pub(crate) fn new(path: &Path, stream_created: String) -> Self {
        Self {
            path: path.to_owned(),
            stream_created,
        }
    }

    /// The saved position, or 0 when there is none for this stream.
    pub(crate) fn load(&self) -> u64 {
        let Ok(text) = fs::read_to_string(&self.path) else {
            return 0;
        };
        let mut fields = text.split_whitespace();
        match (fields.next(), fields.next().map(str::parse::<u64>)) {
            (Some(created), Some(Ok(position))) if created == self.stream_created => position,
            _ => {
                tracing::warn!(
                    file = %self.path.display(),
                    "vectorize log: the saved position belongs to another stream; reading this one from its start"
                );
                0
            }
        }
    }

    pub(crate) fn save(&self, position: u64) {
        let temporary = self.path.with_extension("tmp");
        let written = fs::write(&temporary, format!("{} {position}\n", self.stream_created))
            .and_then(|()| fs::rename(&temporary, &self.path));
        if let Err(error) = written {
            // Only costs a longer replay after a restart.
            tracing::warn!(%error, file = %self.path.display(), "vectorize log: saving the position");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_is_kept_for_its_own_stream_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("position");
        let file = PositionFile::new(&path, "2026-12-06T07:00:00Z".into());
        assert_eq!(file.load(), 0);
        file.save(42);
        assert_eq!(file.load(), 42);
        let recreated = PositionFile::new(&path, "2026-12-06T08:00:00Z".into());
        assert_eq!(recreated.load(), 0);
    }
}
