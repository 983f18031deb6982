//! Downloads from a Hugging Face hub: `{endpoint}/{repo}/resolve/{revision}/{file}`.

use std::io;
use std::path::Path;
use std::time::Duration;

use crate::fetch::{progress_bar, Expected, VerifiedFile, VerifyingWriter};
use crate::{Progress, StoreError};

pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";

/// The hub to use: an explicit endpoint, else `HF_ENDPOINT`, else huggingface.co.
pub fn resolve_hf_endpoint(explicit: Option<&str>) -> String {
    let chosen = match explicit {
        Some(endpoint) if !endpoint.trim().is_empty() => endpoint.trim().to_string(),
        _ => std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|value| !value.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_HF_ENDPOINT.to_string()),
    };
    chosen.trim_end_matches('/').to_string()
}

pub(crate) fn resolve_url(endpoint: &str, repo: &str, revision: &str, file: &str) -> String {
    format!("{endpoint}/{repo}/resolve/{revision}/{file}")
}

/// Streams one hub file into `dest` through a [`VerifyingWriter`].
pub(crate) fn download_hf_file(
    endpoint: &str,
    (repo, revision, file): (&str, &str, &str),
    dest: &Path,
    expected: &Expected,
    progress: Progress,
) -> Result<VerifiedFile, StoreError> {
    let url = resolve_url(endpoint, repo, revision, file);
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(120))
        .redirects(10)
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build();
    let mut request = agent.get(&url);
    if let Ok(token) = std::env::var("HF_TOKEN") {
        if !token.trim().is_empty() {
            // ureq drops this header on redirects, so it never reaches the CDN host.
            request = request.set("Authorization", &format!("Bearer {}", token.trim()));
        }
    }
    tracing::info!(%url, "downloading from Hugging Face");
    let response = match request.call() {
        Ok(response) => response,
        Err(ureq::Error::Status(404, _)) => {
            return Err(StoreError::HfNotFound {
                url,
                repo: repo.into(),
                revision: revision.into(),
                file: file.into(),
            })
        }
        Err(ureq::Error::Status(status @ (401 | 403), _)) => {
            return Err(StoreError::HfUnauthorized {
                url,
                status,
                repo: repo.into(),
            })
        }
        Err(ureq::Error::Status(status, response)) => {
            return Err(StoreError::Http {
                url,
                message: format!("HTTP {status} {}", response.status_text()),
            })
        }
        Err(err) => {
            return Err(StoreError::Http {
                url,
                message: err.to_string(),
            })
        }
    };
    let total = response
        .header("Content-Length")
        .and_then(|value| value.parse::<u64>().ok());
    let bar = progress_bar(
        progress,
        total.or(expected.size),
        &format!("{}/{}", expected.model, expected.file),
    );
    let mut writer = VerifyingWriter::create(dest, bar)?;
    let mut body = response.into_reader();
    io::copy(&mut body, &mut writer).map_err(|err| StoreError::Http {
        url: url.clone(),
        message: format!("reading the body: {err}"),
    })?;
    writer.commit(dest, expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_endpoint_wins_and_loses_its_trailing_slash() {
        assert_eq!(
            resolve_hf_endpoint(Some("http://127.0.0.1:9/")),
            "http://127.0.0.1:9"
        );
        assert_eq!(
            resolve_url(
                "https://huggingface.co",
                "org/repo",
                "main",
                "1_Pooling/config.json"
            ),
            "https://huggingface.co/org/repo/resolve/main/1_Pooling/config.json"
        );
    }
}
