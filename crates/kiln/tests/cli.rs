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
        "KILN_REPRODUCIBLE",
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
        "KILN_AUTH",
        "KILN_ACCOUNTS_DB",
        "KILN_BATCH_DB",
        "KILN_RATE_LIMITS",
        "KILN_FREE_NEURONS_PER_DAY",
        "KILN_DEFAULT_PLAN",
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

/// `kiln accounts`, `kiln tokens` and `kiln usage` on one accounts database, as an operator runs
/// them next to a server.
#[test]
fn accounts_tokens_and_usage_from_the_command_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("accounts.db");
    let run = |args: &[&str]| {
        let output = kiln()
            .args(args)
            .arg("--accounts-db")
            .arg(&db)
            .output()
            .expect("kiln runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{args:?}: {stderr}");
        stdout
    };
    let account = run(&["accounts", "create", "--name", "team", "--plan", "free"]);
    let account = account.trim();
    assert_eq!(account.len(), 32, "{account}");
    assert!(run(&["accounts", "list"]).contains(account));

    let secret = run(&[
        "tokens",
        "create",
        "--account",
        account,
        "--scope",
        "workers-ai:read,vectorize:edit",
    ]);
    let secret = secret.trim();
    assert!(secret.starts_with("kiln_"), "{secret}");
    let listed = run(&["tokens", "list", "--account", account]);
    assert!(listed.contains("workers-ai:read"), "{listed}");
    assert!(!listed.contains(secret), "a token list never shows secrets");
    let token_id = listed
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().next())
        .expect("a token row")
        .to_owned();
    run(&["tokens", "revoke", &token_id]);
    assert!(run(&["tokens", "list"]).contains("revoked"));

    // Usage the server booked (here: booked directly, as the server's ledger does).
    {
        let store = kiln_accounts::AccountStore::open(&db).expect("db");
        let ledger = kiln_accounts::UsageLedger::open(
            &store,
            std::sync::Arc::new(kiln_accounts::SystemClock),
        )
        .expect("ledger");
        let usage = kiln_accounts::Usage {
            requests: 3,
            input_tokens: 30,
            output_tokens: 12,
            neurons: 1.5,
        };
        ledger.record(account, "@cf/meta/llama-3.1-8b-instruct", &usage);
    }
    let table = run(&["usage", "--account", account]);
    assert!(table.contains("@cf/meta/llama-3.1-8b-instruct"), "{table}");
    let rows: serde_json::Value =
        serde_json::from_str(&run(&["usage", "--json"])).expect("JSON rows");
    assert_eq!(rows[0]["requests"], 3, "{rows}");
    assert_eq!(rows[0]["neurons"], 1.5, "{rows}");

    // Bad input is a clear error, not a panic.
    let output = kiln()
        .args([
            "tokens",
            "create",
            "--account",
            "no-such-account",
            "--accounts-db",
        ])
        .arg(&db)
        .output()
        .expect("kiln runs");
    assert!(!output.status.success());
    assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"));
}

/// An alias from a catalog id to a model of another task is refused at start-up, naming both.
#[test]
fn serve_refuses_an_alias_to_a_model_of_another_task() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("kiln.toml");
    std::fs::write(
        &config,
        "fetch = []\n[aliases]\n\"@cf/meta/llama-3.1-8b-instruct\" = \"all-minilm-l6-v2\"\n",
    )
    .expect("config written");
    let output = kiln()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--models",
            "all-minilm-l6-v2",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(kiln_store::default_data_dir())
        .arg("--vectorize-dir")
        .arg(dir.path().join("vectorize"))
        .arg("--gateway-db")
        .arg(dir.path().join("gateway.db"))
        .arg("--accounts-db")
        .arg(dir.path().join("accounts.db"))
        .arg("--batch-db")
        .arg(dir.path().join("batches.db"))
        .output()
        .expect("kiln runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started: {stderr}");
    assert!(
        stderr.contains("@cf/meta/llama-3.1-8b-instruct") && stderr.contains("Text Embeddings"),
        "{stderr}"
    );
}
