//! The Hugging Face loader against a local hub: a small HTTP server on an ephemeral port that
//! answers `GET /{repo}/resolve/{revision}/{file}` from a directory, redirecting `.gguf` files to a
//! `/cdn/` path as the real hub redirects large files.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use kiln_store::{ModelFormat, ModelStore, Progress, StoreError};

struct LocalHub {
    root: tempfile::TempDir,
    endpoint: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl LocalHub {
    fn start() -> LocalHub {
        let root = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (served_root, log) = (root.path().to_path_buf(), requests.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, log) = (served_root.clone(), log.clone());
                thread::spawn(move || serve(stream, &root, &log));
            }
        });
        LocalHub {
            root,
            endpoint,
            requests,
        }
    }

    /// Puts a file in the hub as `{repo}/resolve/{revision}/{file}`.
    fn publish(&self, repo: &str, revision: &str, file: &str, bytes: &[u8]) {
        let path = self.root.path().join(repo).join(revision).join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

fn serve(mut stream: TcpStream, root: &Path, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let mut header = String::new();
    while reader.read_line(&mut header).unwrap() > 2 {
        header.clear();
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    log.lock().unwrap().push(path.clone());
    let file: Option<PathBuf> = if let Some(rest) = path.strip_prefix("/cdn/") {
        Some(root.join(rest))
    } else if let Some((repo, rest)) = path.trim_start_matches('/').split_once("/resolve/") {
        if rest.ends_with(".gguf") {
            let location = format!("/cdn/{repo}/{rest}");
            let reply = format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            stream.write_all(reply.as_bytes()).unwrap();
            return;
        }
        Some(root.join(repo).join(rest))
    } else {
        None
    };
    match file.and_then(|file| fs::read(file).ok()) {
        Some(body) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&body).unwrap();
        }
        None => {
            let body = "Entry not found";
            let head = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(body.as_bytes()).unwrap();
        }
    }
}

fn gguf_bytes() -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend((0..300_000u32).map(|n| (n % 251) as u8));
    bytes
}

#[test]
fn pulls_a_repository_and_serves_it_from_the_store_afterwards() {
    let hub = LocalHub::start();
    hub.publish("acme/tiny-llm", "v1", "tiny.Q4_0.gguf", &gguf_bytes());
    hub.publish("acme/tiny-llm", "v1", "extra/notes.json", b"{\"ok\":true}");
    let data_dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(data_dir.path());

    let files = ["tiny.Q4_0.gguf", "extra/notes.json"];
    let model = store
        .pull_hf_repo(
            "tiny-llm",
            Some(&hub.endpoint),
            ("acme/tiny-llm", "v1"),
            &files,
            Progress::Quiet,
        )
        .unwrap();
    assert_eq!(model.format, ModelFormat::Gguf);
    assert_eq!(
        model.primary_file,
        data_dir.path().join("models/tiny-llm/tiny.Q4_0.gguf")
    );
    assert_eq!(fs::read(&model.primary_file).unwrap(), gguf_bytes());
    assert_eq!(
        fs::read(model.dir.join("extra/notes.json")).unwrap(),
        b"{\"ok\":true}"
    );
    assert_eq!(model.size_bytes, gguf_bytes().len() as u64 + 11);
    let requests = hub.requests.lock().unwrap().clone();
    assert!(
        requests.contains(&"/cdn/acme/tiny-llm/v1/tiny.Q4_0.gguf".to_string()),
        "redirect followed: {requests:?}"
    );

    assert_eq!(store.installed(), vec![model.clone()]);
    let before = hub.request_count();
    assert_eq!(store.ensure("tiny-llm", Progress::Quiet).unwrap(), model);
    assert_eq!(
        hub.request_count(),
        before,
        "a verified model is not downloaded again"
    );

    // A damaged copy is fetched again from the recorded source.
    File::options()
        .write(true)
        .open(&model.primary_file)
        .unwrap()
        .set_len(10)
        .unwrap();
    let store = store.with_hf_endpoint(hub.endpoint.clone());
    assert_eq!(store.ensure("tiny-llm", Progress::Quiet).unwrap(), model);
    assert_eq!(fs::read(&model.primary_file).unwrap(), gguf_bytes());
}

#[test]
fn missing_file_is_a_clear_error_and_leaves_nothing() {
    let hub = LocalHub::start();
    hub.publish("acme/bert", "main", "config.json", b"{}");
    let data_dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(data_dir.path());
    let err = store
        .pull_hf_repo(
            "bert",
            Some(&hub.endpoint),
            ("acme/bert", "main"),
            &["config.json", "model.safetensors"],
            Progress::Quiet,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::HfNotFound { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("404")
            && message.contains("acme/bert")
            && message.contains("model.safetensors"),
        "{message}"
    );
    assert!(!data_dir
        .path()
        .join("models/bert/model.safetensors")
        .exists());
    assert!(
        store.installed().is_empty(),
        "a partial pull is not an installed model"
    );
    assert!(matches!(
        store.ensure("bert", Progress::Quiet),
        Err(StoreError::UnknownModel { .. })
    ));
}

#[test]
fn changed_upstream_content_fails_the_pinned_hash_and_leaves_no_file() {
    let hub = LocalHub::start();
    hub.publish(
        "acme/bert",
        "main",
        "model.safetensors",
        b"original weights",
    );
    let data_dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(data_dir.path()).with_hf_endpoint(hub.endpoint.clone());
    let model = store
        .pull_hf_repo(
            "bert",
            None,
            ("acme/bert", "main"),
            &["model.safetensors"],
            Progress::Quiet,
        )
        .unwrap();
    assert_eq!(model.format, ModelFormat::HfBert);

    // Same size, different bytes upstream; the local copy is damaged, so ensure must re-fetch.
    hub.publish(
        "acme/bert",
        "main",
        "model.safetensors",
        b"tampered weights",
    );
    fs::write(&model.primary_file, b"x").unwrap();
    let err = store.ensure("bert", Progress::Quiet).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::HashMismatch { .. }), "{message}");
    assert!(
        message.contains("bert/model.safetensors") && message.contains("expected"),
        "{message}"
    );
    assert!(
        !model.primary_file.exists(),
        "neither the corrupt copy nor the bad download may stay"
    );
    let leftovers: Vec<_> = fs::read_dir(&model.dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(".kiln-partial"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files removed: {leftovers:?}"
    );
}

#[test]
fn unsafe_names_and_paths_are_refused_before_any_request() {
    let hub = LocalHub::start();
    let data_dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(data_dir.path());
    let attempts: [(&str, &str, &[&str]); 4] = [
        ("../escape", "acme/x", &["model.gguf"]),
        ("ok", "acme/x", &["../../model.gguf"]),
        ("smollm2-135m-instruct", "acme/x", &["model.gguf"]),
        ("ok", "acme/x", &["README.md"]),
    ];
    for (name, repo, files) in attempts {
        let err = store
            .pull_hf_repo(
                name,
                Some(&hub.endpoint),
                (repo, "main"),
                files,
                Progress::Quiet,
            )
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidName { .. }),
            "{name} {files:?}: {err}"
        );
    }
    assert_eq!(hub.request_count(), 0);
}

#[test]
fn concurrent_ensures_repair_once_and_all_get_the_verified_model() {
    let hub = LocalHub::start();
    hub.publish("acme/tiny-llm", "v1", "tiny.gguf", &gguf_bytes());
    let data_dir = tempfile::tempdir().unwrap();
    let store = ModelStore::new(data_dir.path()).with_hf_endpoint(hub.endpoint.clone());
    let model = store
        .pull_hf_repo(
            "tiny",
            None,
            ("acme/tiny-llm", "v1"),
            &["tiny.gguf"],
            Progress::Quiet,
        )
        .unwrap();

    fs::write(&model.primary_file, b"GGUF truncated").unwrap();
    let err = store.verify("tiny", Progress::Quiet).unwrap_err();
    assert!(matches!(err, StoreError::NotInstalled { .. }), "{err}");
    assert!(err.to_string().contains("kiln models pull tiny"), "{err}");

    let before = hub.request_count();
    let results: Vec<_> = thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    ModelStore::new(data_dir.path())
                        .with_hf_endpoint(hub.endpoint.clone())
                        .ensure("tiny", Progress::Quiet)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });
    for result in results {
        assert_eq!(result.unwrap(), model);
    }
    // One resolve request plus one redirected CDN request: the other threads found it verified.
    assert_eq!(hub.request_count() - before, 2);
    assert_eq!(fs::read(&model.primary_file).unwrap(), gguf_bytes());
    assert_eq!(store.verify("tiny", Progress::Quiet).unwrap(), model);
}
