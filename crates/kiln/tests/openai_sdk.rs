//! Runs the official OpenAI SDKs (Python `openai`, npm `openai`) against a real in-process Kiln:
//! sdk-tests/python/test_openai_sdk.py and sdk-tests/node/test_openai_sdk.mjs. Each script checks
//! chat (plain and streaming), completions, the Responses API, embeddings, models and errors
//! through the SDK's own parsed objects. `scripts/install-deps` installs the SDKs; without them
//! these tests fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Generous: each script makes a few dozen small generations on a 2-core CPU.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what} is missing ({} not found): run scripts/install-deps to install the OpenAI SDKs",
        path.display()
    );
}

/// Runs `program args…` with the server's address in the environment; panics with the script's
/// output when it fails or runs past [`SCRIPT_TIMEOUT`].
fn run_script(program: &Path, args: &[PathBuf], dir: &Path) {
    // The Python script calls tools on Qwen, which must be installed before the server starts.
    kiln_store::ensure_for_tests("qwen2.5-coder-0.5b-instruct");
    let base_url = format!("http://{}", server());
    let output_path = std::env::temp_dir().join(format!(
        "kiln-sdk-{}-{}.log",
        std::process::id(),
        program.file_name().unwrap().to_string_lossy()
    ));
    let log = std::fs::File::create(&output_path).expect("log file");
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("KILN_BASE_URL", &base_url)
        .env("KILN_ACCOUNT", ACCOUNT)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for script") {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&output_path).unwrap_or_default();
    let _ = std::fs::remove_file(&output_path);
    match status {
        Some(status) if status.success() => println!("{output}"),
        Some(status) => panic!(
            "{} {args:?} failed ({status}):\n{output}",
            program.display()
        ),
        None => panic!(
            "{} {args:?} ran past {SCRIPT_TIMEOUT:?}:\n{output}",
            program.display()
        ),
    }
}

#[test]
fn official_python_sdk_works_unchanged() {
    let home = std::env::var_os("HOME").expect("HOME is set");
    let python = PathBuf::from(home).join(".cache/kiln/venv/bin/python");
    require(&python, "the Python venv with the openai package");
    let script = repo_root().join("sdk-tests/python/test_openai_sdk.py");
    run_script(&python, &[script], &repo_root());
}

#[test]
fn official_node_sdk_works_unchanged() {
    let dir = repo_root().join("sdk-tests/node");
    require(&dir.join("node_modules/openai"), "the openai npm package");
    run_script(Path::new("node"), &[dir.join("test_openai_sdk.mjs")], &dir);
}
