//! The console Kiln serves at `/`: a single page (plain HTML, CSS and JavaScript, no build
//! step) embedded in the binary, which talks to Kiln only through its public API.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file: its path under `/console/` and its media type.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// `asset!("pages/x.js", JS)`: the file under `assets/`, embedded.
macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../assets/", $path)),
        }
    };
}

/// Every file of the console. A script imported by another must be listed here too (the
/// `every_import_is_embedded` test checks).
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("console.css", CSS),
    asset!("app.js", JS),
    asset!("charts.js", JS),
    asset!("pages/playground.js", JS),
    asset!("pages/playground/common.js", JS),
    asset!("pages/playground/chat.js", JS),
    asset!("pages/playground/embeddings.js", JS),
    asset!("pages/playground/audio.js", JS),
    asset!("pages/playground/wav.js", JS),
    asset!("pages/playground/image.js", JS),
    asset!("pages/models.js", JS),
    asset!("pages/gateway.js", JS),
    asset!("pages/vectorize.js", JS),
    asset!("pages/usage.js", JS),
    asset!("pages/api.js", JS),
];

/// `GET /` (the page) and `GET /console/{file}` (its scripts and styles).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route(
            "/console/{*file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

fn asset(path: &str) -> Response {
    match ASSETS.iter().find(|asset| asset.path == path) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            asset.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such console file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    /// The module a relative `import … from "./x.js"` names, from the importing file's folder.
    fn join(from: &str, relative: &str) -> String {
        let mut parts: Vec<&str> = from.split('/').collect();
        parts.pop();
        for part in relative.split('/') {
            match part {
                "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        parts.join("/")
    }

    #[test]
    fn every_import_is_embedded() {
        for asset in ASSETS.iter().filter(|asset| asset.path.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).expect("UTF-8 script");
            for piece in text.split(" from \"").skip(1) {
                let Some((target, _)) = piece.split_once('"') else {
                    continue;
                };
                if !target.starts_with('.') {
                    continue;
                }
                let path = join(asset.path, target);
                assert!(
                    ASSETS.iter().any(|other| other.path == path),
                    "{} imports {target} ({path}), which ASSETS does not embed",
                    asset.path
                );
            }
        }
    }

    #[test]
    fn the_page_loads_its_style_and_script_from_console() {
        let html = std::str::from_utf8(ASSETS[0].body).expect("UTF-8");
        assert!(html.contains("/console/console.css"));
        assert!(html.contains(r#"type="module" src="/console/app.js""#));
    }
}
