//! `kiln chat MODEL`: a conversation on the terminal. Each turn sends the whole conversation
//! and streams the answer. Ctrl-C while an answer streams stops that answer (the request is
//! dropped, which stops the generation on the server) and the chat goes on; Ctrl-C at the
//! prompt clears what was typed; Ctrl-D or `/exit` quits.

use anyhow::Context;
use clap::Args;
use futures::FutureExt;
use kiln_core::Task;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::compose::{Command, Composer, Conversation};
use super::http::Client;
use super::task::task_of;
use super::{sse, ClientArgs, GenerationArgs};

/// `kiln chat`'s settings.
#[derive(Args, Debug)]
pub struct ChatArgs {
    /// Text generation model: a Workers AI catalog id (`@cf/…`), an alias, or an installed
    /// model's name.
    pub model: String,

    #[command(flatten)]
    pub generation: GenerationArgs,

    #[command(flatten)]
    pub client: ClientArgs,
}

const HELP: &str = "Enter sends. End a line with \\ to go on to the next one, or put lines \
between \"\"\" and \"\"\".\nCtrl-C stops an answer or clears the line; /clear forgets the \
conversation; /exit or Ctrl-D quits.";

/// What reading the next message came to.
enum Input {
    Message(String),
    /// Ctrl-C at the prompt: what was typed is gone.
    Cleared,
    Quit,
}

/// How one turn ended.
enum Turn {
    Answered(anyhow::Result<String>),
    Stopped,
}

pub fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let runtime = super::runtime()?;
    let client = Client::new(&args.client)?;
    let task = runtime.block_on(async {
        client.health().await?;
        task_of(&client, &args.model, None).await
    })?;
    anyhow::ensure!(
        task == Task::TextGeneration,
        "kiln chat talks to text generation models; {} is a {} model (`kiln run {} …` handles it)",
        args.model,
        task.name(),
        args.model
    );
    // Ctrl-C is ours from here on: while an answer streams it stops the answer. At the prompt
    // the line editor reads it as a key.
    let mut interrupts = {
        let _context = runtime.enter();
        signal(SignalKind::interrupt()).context("listening for Ctrl-C")?
    };
    let mut editor = DefaultEditor::new().context("opening the terminal")?;
    let mut composer = Composer::default();
    let mut conversation = Conversation::new(args.generation.opening());
    let mut hinted = false;
    println!(
        "Chatting with {} at {}.\n{HELP}\n",
        args.model,
        client.base()
    );
    loop {
        let message = match read_message(&mut editor, &mut composer)? {
            Input::Message(message) => message,
            Input::Cleared => {
                if !hinted {
                    println!("(Ctrl-D or /exit quits)");
                    hinted = true;
                }
                continue;
            }
            Input::Quit => break,
        };
        if message.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(message.as_str());
        match Command::parse(&message) {
            Some(Command::Exit) => break,
            Some(Command::Clear) => {
                conversation.clear();
                println!("(conversation cleared)\n");
                continue;
            }
            Some(Command::Help) => {
                println!("{HELP}\n");
                continue;
            }
            Some(Command::Unknown(command)) => {
                println!("Unknown command {command}: /help lists them (to send it as text, wrap it in \"\"\").\n");
                continue;
            }
            None => {}
        }
        conversation.ask(&message);
        let request = args.generation.request(conversation.messages());
        match turn(&runtime, &mut interrupts, &client, &args.model, &request) {
            Turn::Answered(Ok(answer)) => {
                end_answer(&answer);
                conversation.answered(&answer);
            }
            Turn::Answered(Err(error)) => {
                println!();
                eprintln!("error: {error:#}\n");
                conversation.retract();
            }
            Turn::Stopped => {
                println!("\n(stopped)\n");
                conversation.retract();
            }
        }
    }
    Ok(())
}

/// Reads lines until they make a message.
fn read_message(editor: &mut DefaultEditor, composer: &mut Composer) -> anyhow::Result<Input> {
    loop {
        let prompt = if composer.continuing() {
            "... "
        } else {
            ">>> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                if let Some(message) = composer.push(&line) {
                    return Ok(Input::Message(message));
                }
            }
            Err(ReadlineError::Interrupted) => {
                composer.clear();
                return Ok(Input::Cleared);
            }
            Err(ReadlineError::Eof) => return Ok(Input::Quit),
            Err(error) => return Err(error).context("reading the terminal"),
        }
    }
}

/// Streams one answer, unless Ctrl-C stops it first.
fn turn(
    runtime: &Runtime,
    interrupts: &mut Signal,
    client: &Client,
    model: &str,
    request: &serde_json::Value,
) -> Turn {
    runtime.block_on(async {
        // A Ctrl-C pressed between the last answer and the prompt is not meant for this one: let
        // the runtime take in signals that arrived meanwhile, and forget them.
        tokio::task::yield_now().await;
        while let Some(Some(())) = interrupts.recv().now_or_never() {}
        tokio::select! {
            answer = sse::stream_answer(client, model, request) => Turn::Answered(answer),
            _ = interrupts.recv() => Turn::Stopped,
        }
    })
}

/// Ends the answer's line and leaves a blank one before the next prompt.
fn end_answer(answer: &str) {
    if answer.ends_with('\n') {
        println!();
    } else {
        println!("\n");
    }
}
