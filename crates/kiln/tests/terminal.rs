//! `kiln run`, `kiln chat` and `kiln ps` as a person uses them: the real binary in a
//! pseudo-terminal (prompts typed, answers read off the screen, Ctrl-C sent as the key) or with
//! pipes, against a real server started in-process on an ephemeral loopback port.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use rexpect::process::WaitStatus;
use rexpect::reader::Options;
use rexpect::session::{spawn_with_options, PtySession};

use common::*;

/// Served by SmolLM2-135M.
const LLM: &str = "@cf/meta/llama-3.1-8b-instruct";

/// The shared server's base URL, once the models these tests use are installed (the server
/// lists what is installed when it starts).
fn base() -> String {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        for model in [
            "smollm2-135m-instruct",
            "all-minilm-l6-v2",
            "efficientnet-lite0",
            "skimage-test-images",
            "piper-en-us-joe-medium",
            "whisper-tiny-en",
            "whisper-base",
        ] {
            kiln_store::ensure_for_tests(model);
        }
    });
    format!("http://{}", server())
}

/// `kiln ARGS --url URL`, with none of the caller's client settings.
fn kiln(args: &[&str], url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command.args(args).args(["--url", url]);
    for variable in ["KILN_URL", "KILN_TOKEN", "KILN_ACCOUNT", "KILN_LOG"] {
        command.env_remove(variable);
    }
    command
}

/// Runs `command` with `stdin` as its standard input.
fn output(mut command: Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln starts");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("kiln ends")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `command` in a pseudo-terminal of its own (ANSI codes stripped from what it shows).
fn terminal(mut command: Command) -> PtySession {
    command.env("TERM", "xterm");
    let options = Options::new()
        .timeout_ms(Some(120_000))
        .strip_ansi_escape_codes(true);
    spawn_with_options(command, options).expect("kiln starts in a pseudo-terminal")
}

fn assert_exited_cleanly(session: &PtySession) {
    match session.process().wait() {
        Ok(WaitStatus::Exited(_, 0)) => {}
        other => panic!("kiln did not exit with status 0: {other:?}"),
    }
}

#[test]
fn run_streams_the_answer_to_a_prompt_typed_on_the_terminal() {
    let url = base();
    let mut session = terminal(kiln(&["run", LLM, "--max-tokens", "12"], &url));
    session
        .exp_string("Ctrl-D")
        .expect("a hint on how to end the prompt");
    session
        .send_line("What is the capital of France?")
        .expect("type");
    session.send_control('d').expect("Ctrl-D");
    let answer = session.exp_eof().expect("the answer, then the end");
    assert!(
        answer.chars().any(char::is_alphanumeric),
        "an answer on the screen: {answer:?}"
    );
    assert_exited_cleanly(&session);

    // The prompt as an argument, the answer on stdout.
    let done = output(
        kiln(&["run", LLM, "Say hello.", "--max-tokens", "8"], &url),
        "",
    );
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert!(
        text(&done.stdout).chars().any(char::is_alphanumeric),
        "{}",
        text(&done.stdout)
    );
}

#[test]
fn chat_goes_on_after_ctrl_c_stops_an_answer() {
    let url = base();
    let mut chat = terminal(kiln(&["chat", LLM, "--max-tokens", "400"], &url));
    chat.exp_string("/exit")
        .expect("the banner says how to quit");
    chat.exp_string(">>> ").expect("a prompt");

    // A long answer, stopped as soon as it shows on the screen.
    chat.send_line("Tell me a long story about a dragon.")
        .expect("type");
    chat.exp_string("dragon.").expect("the typed line");
    chat.exp_regex(r"\S").expect("the answer starts streaming");
    chat.send_control('c').expect("Ctrl-C");
    chat.exp_string("(stopped)").expect("the answer stops");
    chat.exp_string(">>> ").expect("a prompt again");

    // The next question, on two lines joined by a trailing backslash, gets its answer.
    chat.send_line("Say hello \\").expect("type");
    chat.exp_string("... ").expect("a continuation prompt");
    chat.send_line("in one word.").expect("type");
    chat.exp_string("word.").expect("the typed line");
    let answer = chat.exp_string(">>> ").expect("an answer, then a prompt");
    assert!(
        answer.chars().any(char::is_alphanumeric) && !answer.contains("(stopped)"),
        "an answer on the screen: {answer:?}"
    );

    // Ctrl-C at the prompt clears the line; /exit quits.
    chat.send("half a thought").expect("type");
    chat.send_control('c').expect("Ctrl-C");
    chat.exp_string("Ctrl-D or /exit quits").expect("a hint");
    chat.exp_string(">>> ").expect("a fresh prompt");
    chat.send_line("/exit").expect("type");
    chat.exp_eof().expect("the chat ends");
    assert_exited_cleanly(&chat);
}

#[test]
fn chat_reads_piped_lines_and_ends_with_its_input() {
    let url = base();
    let done = output(
        kiln(&["chat", LLM, "--max-tokens", "8"], &url),
        "Hello!\n\"\"\"\nSay one\nword.\n\"\"\"\n",
    );
    assert!(done.status.success(), "{}", text(&done.stderr));
    let screen = text(&done.stdout);
    assert!(screen.contains("Chatting with"), "{screen}");
}

#[test]
fn embeddings_show_their_dimensions_and_first_values() {
    let url = base();
    let one = output(
        kiln(
            &["run", "@cf/baai/bge-small-en-v1.5", "A man is eating food."],
            &url,
        ),
        "",
    );
    assert!(one.status.success(), "{}", text(&one.stderr));
    let screen = text(&one.stdout);
    assert!(screen.starts_with("1 vector of 384 dimensions"), "{screen}");
    assert!(screen.contains("norm 1.000"), "normalized: {screen}");
    assert!(screen.contains("\"A man is eating food.\""), "{screen}");

    // One text per line of standard input.
    let lines = output(
        kiln(&["run", "all-minilm-l6-v2", "-"], &url),
        "The cat sat.\n\nStocks fell today.\n",
    );
    assert!(lines.status.success(), "{}", text(&lines.stderr));
    let screen = text(&lines.stdout);
    assert!(
        screen.starts_with("2 vectors of 384 dimensions"),
        "{screen}"
    );
    assert!(screen.contains("\"Stocks fell today.\""), "{screen}");
}

#[test]
fn ps_lists_a_model_once_a_request_loaded_it() {
    let url = base();
    let before = output(kiln(&["ps"], &url), "");
    assert!(before.status.success(), "{}", text(&before.stderr));
    let table = text(&before.stdout);
    assert!(table.contains("smollm2-135m-instruct"), "{table}");
    assert!(
        !table.contains("efficientnet-lite0"),
        "loads on its first request: {table}"
    );
    let installed = output(kiln(&["ps", "--all"], &url), "");
    assert!(
        text(&installed.stdout).contains("efficientnet-lite0"),
        "{}",
        text(&installed.stdout)
    );

    let photo = kiln_store::ensure_for_tests("skimage-test-images")
        .dir
        .join("chelsea.png");
    let photo = photo.to_str().expect("UTF-8 path");
    let classified = output(kiln(&["run", "@cf/microsoft/resnet-50", photo], &url), "");
    assert!(classified.status.success(), "{}", text(&classified.stderr));
    let labels = text(&classified.stdout);
    assert_eq!(labels.lines().count(), 5, "{labels}");
    assert!(
        labels
            .lines()
            .take(3)
            .any(|line| line.contains("cat") || line.contains("tabby")),
        "a cat among the first labels: {labels}"
    );
    assert!(labels.lines().all(|line| line.contains('%')), "{labels}");

    let after = output(kiln(&["ps"], &url), "");
    let table = text(&after.stdout);
    let line = table
        .lines()
        .find(|line| line.starts_with("efficientnet-lite0"))
        .unwrap_or_else(|| panic!("loaded by the request: {table}"));
    assert!(line.contains("Image Classification"), "{line}");
    assert!(line.ends_with("MiB"), "its memory: {line}");
}

#[test]
fn speech_recognition_prints_the_transcript() {
    let url = base();
    let speech = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let response = client()
                .post(run_url("@cf/deepgram/aura-1"))
                .json(&serde_json::json!({"text": "Good morning, everyone.",
                    "encoding": "linear16", "container": "wav", "sample_rate": 16000}))
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status(), 200);
            response.bytes().await.expect("audio")
        });
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("morning.wav");
    std::fs::write(&path, &speech).expect("write audio");
    let path = path.to_str().expect("UTF-8 path");
    let heard = output(kiln(&["run", "@cf/openai/whisper-tiny-en", path], &url), "");
    assert!(heard.status.success(), "{}", text(&heard.stderr));
    let transcript = text(&heard.stdout).to_lowercase();
    assert!(transcript.contains("morning"), "{transcript}");

    // An alias of the operator's own (OpenAI's `whisper-1`, served by Whisper base) says its
    // task with --task.
    let alias = output(
        kiln(
            &["run", "whisper-1", path, "--task", "speech-recognition"],
            &url,
        ),
        "",
    );
    assert!(alias.status.success(), "{}", text(&alias.stderr));
    let transcript = text(&alias.stdout).to_lowercase();
    assert!(transcript.contains("morning"), "{transcript}");
}

#[test]
fn server_errors_show_their_message_and_code() {
    let url = base();
    let missing = output(kiln(&["run", "@cf/nobody/no-such-model", "Hi"], &url), "");
    assert!(!missing.status.success());
    let error = text(&missing.stderr);
    assert!(error.contains("No such model"), "{error}");
    assert!(error.contains("code 5007"), "{error}");

    let file = output(
        kiln(
            &["run", "@cf/microsoft/resnet-50", "/nonexistent/cat.png"],
            &url,
        ),
        "",
    );
    assert!(!file.status.success());
    assert!(
        text(&file.stderr).contains("cannot read /nonexistent/cat.png"),
        "{}",
        text(&file.stderr)
    );
}

/// A server that requires tokens: `--token` (or `KILN_TOKEN`) and `--account` (or
/// `KILN_ACCOUNT`) get through, nothing else does.
#[test]
fn tokens_mode_takes_the_token_and_its_account() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("accounts.db");
    let admin = |args: &[&str]| {
        let done = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .arg("--accounts-db")
            .arg(&db)
            .output()
            .expect("kiln runs");
        assert!(done.status.success(), "{args:?}: {}", text(&done.stderr));
        text(&done.stdout).trim().to_owned()
    };
    let account = admin(&["accounts", "create", "--name", "cli", "--plan", "paid"]);
    let secret = admin(&["tokens", "create", "--account", &account]);
    kiln_store::ensure_for_tests("all-minilm-l6-v2");
    let mut config = test_config();
    config.auth = Some(kiln_http::platform::AuthMode::Tokens);
    config.accounts_db = Some(db.clone());
    config.models = Some(vec!["all-minilm-l6-v2".into()]);
    config.fetch = Some(Vec::new());
    let url = format!("http://{}", spawn_server(config));
    let embed = ["run", "@cf/baai/bge-small-en-v1.5", "Tokens mode."];

    let refused = output(kiln(&embed, &url), "");
    assert!(!refused.status.success());
    let error = text(&refused.stderr);
    assert!(error.contains("Authentication error"), "{error}");
    assert!(error.contains("code 10000, HTTP 401"), "{error}");

    let mut flags = kiln(&embed, &url);
    flags.args(["--token", &secret, "--account", &account]);
    let accepted = output(flags, "");
    assert!(accepted.status.success(), "{}", text(&accepted.stderr));
    assert!(text(&accepted.stdout).starts_with("1 vector of 384 dimensions"));

    let mut environment = kiln(&embed, &url);
    environment
        .env("KILN_TOKEN", &secret)
        .env("KILN_ACCOUNT", &account);
    let accepted = output(environment, "");
    assert!(accepted.status.success(), "{}", text(&accepted.stderr));

    // Another account's path is refused even with a valid token.
    let mut elsewhere = kiln(&embed, &url);
    elsewhere.args(["--token", &secret]);
    let refused = output(elsewhere, "");
    assert!(
        text(&refused.stderr).contains("HTTP 403"),
        "{}",
        text(&refused.stderr)
    );
}

#[test]
fn without_a_server_each_command_says_how_to_start_one() {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["run", LLM, "Hello"],
        vec!["run", "my-alias", "Hello"],
        vec!["chat", LLM],
        vec!["ps"],
    ] {
        let done = output(kiln(&args, &url), "");
        assert!(!done.status.success(), "{args:?}");
        let error = text(&done.stderr);
        assert!(
            error.contains(&format!("no Kiln server answers at {url}")),
            "{args:?}: {error}"
        );
        assert!(error.contains("kiln serve"), "{args:?}: {error}");
    }
}
