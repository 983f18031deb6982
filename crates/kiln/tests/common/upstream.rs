//! A provider on loopback for gateway tests: records every request's headers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A provider on loopback that records the headers of every request it gets.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

impl Upstream {
    /// Listens on `ip`: `/redirect?to=URL` answers 302, `/slow` waits 30 s, anything else
    /// answers a small OpenAI-shaped JSON body with an `x-kiln-model` header of its own.
    pub async fn start(ip: [u8; 4]) -> Upstream {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |request: Request| {
            let record = record.clone();
            async move { answer(&record, request).await }
        });
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, 0)))
            .await
            .expect("upstream listens");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream { addr, seen }
    }

    pub fn requests(&self) -> Vec<HeaderMap> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn answer(record: &Mutex<Vec<HeaderMap>>, request: Request) -> Response {
    record.lock().expect("lock").push(request.headers().clone());
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    if path.ends_with("/redirect") {
        let to = query.strip_prefix("to=").unwrap_or_default().to_owned();
        return (StatusCode::FOUND, [("location", to)], "moved").into_response();
    }
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    (
        [("x-kiln-model", "label-chosen-by-an-upstream")],
        axum::Json(
            json!({"id": "x", "object": "chat.completion", "choices": [],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
        ),
    )
        .into_response()
}
