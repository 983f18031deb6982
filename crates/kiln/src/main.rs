//! `kiln`: serve models, manage the model store, talk to a running server.

use clap::{Parser, Subcommand};
use kiln::{client, platform_cli, ServeConfig};
use kiln_store::Progress;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Self-hosted, Workers-AI-compatible inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (fetches missing models first).
    Serve(ServeConfig),
    /// Manage local models.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Manage accounts (the ids in `/accounts/{id}/…`).
    Accounts {
        #[command(subcommand)]
        command: platform_cli::AccountsCommand,
    },
    /// Manage API tokens.
    Tokens {
        #[command(subcommand)]
        command: platform_cli::TokensCommand,
    },
    /// Show requests, tokens and neurons per day, account and model.
    Usage(platform_cli::UsageArgs),
    /// Run a model on a running server and print its answer: a streamed reply, embeddings, a
    /// transcript or image labels.
    Run(client::RunArgs),
    /// Chat with a text generation model on a running server.
    ///
    /// Enter sends; a line ending in `\` goes on to the next line, and lines between `"""` and
    /// `"""` are one message. Each turn sends the whole conversation. Ctrl-C while an answer
    /// streams stops it (the question is taken back); Ctrl-C at the prompt clears the line;
    /// `/clear` forgets the conversation; `/exit` or Ctrl-D quits.
    Chat(client::ChatArgs),
    /// List the models a running server has loaded.
    Ps(client::PsArgs),
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Fetch and verify models (the configured ones when no name is given).
    Pull {
        names: Vec<String>,
        /// Install NAME from this Hugging Face repository (org/repo), or from a local directory
        /// in the Hugging Face layout, instead of the manifest.
        #[arg(long, value_name = "DIR_OR_ORG/REPO")]
        hf: Option<String>,
        /// Revision (branch, tag or commit) of the --hf repository.
        #[arg(long, default_value = "main")]
        revision: String,
        /// Files to take from --hf, e.g. model.gguf [default: config.json, tokenizer.json and
        /// model.safetensors, what BERT, classifier and reranker models need].
        #[arg(long = "file", value_name = "FILE")]
        files: Vec<String>,
        #[command(flatten)]
        config: ServeConfig,
    },
    /// Show installed models, their size and the ids they serve.
    List {
        #[command(flatten)]
        config: ServeConfig,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,llama-cpp-2=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(config) => serve(config.resolve()?),
        Command::Models {
            command:
                ModelsCommand::Pull {
                    names,
                    hf: Some(repo),
                    revision,
                    files,
                    config,
                },
        } => kiln::models::pull_from_hub(&config.resolve()?, &names, (&repo, &revision), &files),
        Command::Models {
            command:
                ModelsCommand::Pull {
                    names,
                    hf: None,
                    config,
                    ..
                },
        } => kiln::models::pull(&config.resolve()?, names),
        Command::Models {
            command: ModelsCommand::List { config },
        } => kiln::models::list(&config.resolve()?),
        Command::Accounts { command } => platform_cli::accounts(command),
        Command::Tokens { command } => platform_cli::tokens(command),
        Command::Usage(args) => platform_cli::usage(args),
        Command::Run(args) => exit_on_error(client::run(args)),
        Command::Chat(args) => exit_on_error(client::chat(args)),
        Command::Ps(args) => exit_on_error(client::ps(args)),
    }
}

/// The client commands' errors are for the person at the terminal (no server answers, the
/// server refused): the message alone, never a backtrace, and exit status 1.
fn exit_on_error(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(error) = result {
        eprintln!("Error: {error:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// The stack of every runtime and blocking-pool thread, stated rather than left to tokio's
/// 2 MiB default. Recursion over a client's JSON is bounded by serde_json's depth limit (128):
/// Kiln's own walks are iterative or bounded, and the deepest JSON a request can carry runs
/// through schema compilation, validation and tool grammars within 2 MiB even in a debug build
/// (kiln-http's `offload` test). Four times that is headroom for the libraries doing it.
const THREAD_STACK_BYTES: usize = 8 * 1024 * 1024;

fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(THREAD_STACK_BYTES)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = kiln::start(config, Progress::Bar).await?;
        println!("Kiln is listening on http://{}", server.addr);
        if let Some(notice) = &server.loud_notice {
            println!("\n  !!! {notice}\n");
        }
        println!(
            "  try: curl http://{}/client/v4/accounts/local/ai/run/@cf/meta/llama-3.1-8b-instruct \
             -d '{{\"prompt\":\"Hello\"}}'",
            server.addr
        );
        stop_signal().await?;
        println!("Kiln is draining: finishing the requests it holds");
        if !server.drain().await {
            anyhow::bail!("requests were still running at the request timeout");
        }
        Ok(())
    })
}

/// Ctrl-C, or SIGTERM (what `docker stop` and Kubernetes send).
async fn stop_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
