//! multipart/form-data bodies (finetune assets, OpenAI audio transcriptions, Vectorize uploads)
//! through axum's `Multipart` extractor, read field by field the way kiln-http reads them. The
//! first line of the input is the boundary.
#![no_main]
use std::sync::LazyLock;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart};
use axum::http::Request;
use libfuzzer_sys::fuzz_target;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
});

async fn read(request: Request<Body>) -> Result<usize, String> {
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| e.body_text())?;
    let mut total = 0;
    while let Some(field) = form.next_field().await.map_err(|e| e.body_text())? {
        let _ = field.file_name().map(str::len);
        let _ = field.content_type().map(str::len);
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" | "vectors" => total += field.bytes().await.map_err(|e| e.body_text())?.len(),
            _ => total += field.text().await.map_err(|e| e.body_text())?.len(),
        }
    }
    Ok(total)
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let boundary = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default().to_vec();
    let Ok(request) = Request::post("/")
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(Body::from(body))
    else {
        return;
    };
    let _ = RUNTIME.block_on(read(request));
});
