//! The `kiln` binary's own commands, run as a user runs them.

use std::process::Command;

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

#[test]
fn serve_help_lists_every_setting_with_its_environment_variable() {
    let output = kiln()
        .args(["serve", "--help"])
        .output()
        .expect("kiln runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "KILN_LISTEN",
        "KILN_DATA_DIR",
        "KILN_THREADS",
        "KILN_MODELS",
        "KILN_CONTEXT_SIZE",
        "KILN_QUEUE_CAPACITY",
        "KILN_REQUEST_TIMEOUT_SECS",
        "KILN_MAX_BODY_BYTES",
        "KILN_OFFLINE",
        "KILN_CONFIG",
        "KILN_GATEWAY_DB",
        "KILN_GATEWAY_CACHE_MIB",
        "KILN_BINDING_ACCOUNT",
        "KILN_VECTORIZE_DIR",
        "KILN_FETCH",
    ] {
        assert!(
            help.contains(variable),
            "`kiln serve --help` does not mention {variable}"
        );
    }
}

#[test]
fn models_list_on_an_empty_store_says_how_to_pull() {
    let data = tempfile::tempdir().expect("temp dir");
    let output = kiln()
        .args(["models", "list", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("kiln runs");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("none installed"), "{text}");
    assert!(
        text.contains("smollm2-135m-instruct"),
        "lists what can be pulled: {text}"
    );
}

#[test]
fn offline_serve_without_models_fails_with_advice() {
    let data = tempfile::tempdir().expect("temp dir");
    let output = kiln()
        .args([
            "serve",
            "--offline",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .expect("kiln runs");
    assert!(
        !output.status.success(),
        "serving with no models offline must fail"
    );
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("kiln models pull"), "{text}");
}

#[test]
fn invalid_config_file_is_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kiln.toml");
    std::fs::write(&path, "listen = 5\n").expect("write config");
    let output = kiln()
        .args(["models", "list", "--config"])
        .arg(&path)
        .output()
        .expect("kiln runs");
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("invalid config file"), "{text}");
}
