//! `kiln run MODEL [PROMPT|FILE]`: one request, answered on the terminal in the model's terms:
//! a streamed answer, embeddings' dimensions and first values, a transcript, or labels with
//! their scores.

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::Context;
use clap::Args;
use kiln_core::Task;
use serde_json::{json, Value};

use super::http::{excerpt, Client};
use super::task::{task_of, TaskArg};
use super::{sse, ClientArgs, GenerationArgs};

/// `kiln run`'s settings.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Model id: a Workers AI catalog id (`@cf/…`), an alias, or an installed model's name.
    pub model: String,

    /// The prompt (text generation), the text to embed, or the path of an audio file (speech
    /// recognition) or image (image classification). `-` or none reads standard input: the
    /// prompt, one text to embed per line, or the file's bytes.
    #[arg(value_name = "PROMPT|FILE")]
    pub input: Option<String>,

    /// What the model does, where its id does not tell (an alias of your own) [default: the
    /// catalog's task, or the installed model's, else text generation].
    #[arg(long, value_enum)]
    pub task: Option<TaskArg>,

    #[command(flatten)]
    pub generation: GenerationArgs,

    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    super::runtime()?.block_on(async {
        let task = task_of(&client, &args.model, args.task).await?;
        match task {
            Task::TextGeneration => generate(&client, &args).await,
            Task::TextEmbeddings => embed(&client, &args).await,
            Task::SpeechRecognition => transcribe(&client, &args).await,
            Task::ImageClassification => classify(&client, &args).await,
            other => anyhow::bail!(
                "kiln run handles text generation, embeddings, speech recognition and image \
                 classification models; {} is a {} model: call it over the API (README, \
                 \"Examples\")",
                args.model,
                other.name()
            ),
        }
    })
}

/// Streams the answer to the prompt.
async fn generate(client: &Client, args: &RunArgs) -> anyhow::Result<()> {
    let prompt = read_text(args.input.as_deref(), "the prompt")?;
    let mut messages = args.generation.opening();
    messages.push(json!({"role": "user", "content": prompt}));
    let answer =
        sse::stream_answer(client, &args.model, &args.generation.request(&messages)).await?;
    if !answer.ends_with('\n') {
        println!();
    }
    Ok(())
}

/// Embeds the text (or each line of standard input) and prints a summary per vector.
async fn embed(client: &Client, args: &RunArgs) -> anyhow::Result<()> {
    let texts: Vec<String> = match args.input.as_deref() {
        Some(text) if text != "-" => vec![text.to_owned()],
        _ => read_text(None, "the texts to embed, one per line")?
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    anyhow::ensure!(!texts.is_empty(), "there is no text to embed");
    let request = client
        .run_request(&args.model)
        .json(&json!({"text": texts}));
    let result = client.result(request).await?;
    for line in embedding_summary(&texts, &result)? {
        println!("{line}");
    }
    Ok(())
}

/// `N vectors of D dimensions`, then per text its first values, its norm and the text.
fn embedding_summary(texts: &[String], result: &Value) -> anyhow::Result<Vec<String>> {
    let vectors: Vec<Vec<f64>> = result["data"]
        .as_array()
        .or_else(|| result["response"].as_array())
        .context("the answer has no vectors")?
        .iter()
        .map(|vector| {
            let values = vector.as_array().into_iter().flatten();
            values.filter_map(Value::as_f64).collect()
        })
        .collect();
    let dimensions = vectors.first().map_or(0, Vec::len);
    let plural = if vectors.len() == 1 { "" } else { "s" };
    let pooling = result["pooling"]
        .as_str()
        .map(|pooling| format!(", {pooling} pooling"))
        .unwrap_or_default();
    let mut lines = vec![format!(
        "{} vector{plural} of {dimensions} dimensions{pooling}",
        vectors.len()
    )];
    for (index, vector) in vectors.iter().enumerate() {
        let first: Vec<String> = vector
            .iter()
            .take(6)
            .map(|value| format!("{value:+.4}"))
            .collect();
        let more = if vector.len() > 6 { ", …" } else { "" };
        let norm = vector.iter().map(|value| value * value).sum::<f64>().sqrt();
        let text = texts
            .get(index)
            .map_or(String::new(), |text| excerpt(text, 40));
        lines.push(format!(
            "{:>3}  [{}{more}]  norm {norm:.3}  {text:?}",
            index + 1,
            first.join(", ")
        ));
    }
    Ok(lines)
}

/// Uploads the audio file and prints its transcript.
async fn transcribe(client: &Client, args: &RunArgs) -> anyhow::Result<()> {
    let (bytes, content_type) = read_file(args.input.as_deref(), "an audio file")?;
    let request = client
        .run_request(&args.model)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(bytes);
    let result = client.result(request).await?;
    // Whisper's `text`, or Deepgram's `results.channels[0].alternatives[0].transcript`.
    let transcript = result["text"]
        .as_str()
        .or_else(|| result["results"]["channels"][0]["alternatives"][0]["transcript"].as_str());
    match transcript {
        Some(text) => println!("{}", text.trim()),
        None => println!("{}", serde_json::to_string_pretty(&result)?),
    }
    Ok(())
}

/// Uploads the image and prints its labels, best first.
async fn classify(client: &Client, args: &RunArgs) -> anyhow::Result<()> {
    let (bytes, content_type) = read_file(args.input.as_deref(), "an image file")?;
    let request = client
        .run_request(&args.model)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(bytes);
    let result = client.result(request).await?;
    let labels = result.as_array().context("the answer has no labels")?;
    for label in labels {
        let score = label["score"].as_f64().unwrap_or(f64::NAN);
        let name = label["label"].as_str().unwrap_or("?");
        println!("{:>6.2}%  {name}", score * 100.0);
    }
    Ok(())
}

/// The text argument, or standard input for none or `-` (with a hint when a person types it).
fn read_text(argument: Option<&str>, what: &str) -> anyhow::Result<String> {
    let text = match argument {
        Some(text) if text != "-" => text.to_owned(),
        _ => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("Type {what}, then press Ctrl-D on an empty line.");
            }
            let mut text = String::new();
            stdin
                .lock()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            text
        }
    };
    let text = text.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!text.trim().is_empty(), "{what} is empty");
    Ok(text.to_owned())
}

/// The file's bytes and the content type its extension suggests; `-` reads standard input.
fn read_file(argument: Option<&str>, what: &str) -> anyhow::Result<(Vec<u8>, &'static str)> {
    let path = argument.with_context(|| format!("this model takes {what}: kiln run MODEL FILE"))?;
    let bytes = if path == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("reading standard input")?;
        bytes
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {path}"))?
    };
    anyhow::ensure!(!bytes.is_empty(), "{path} is empty");
    Ok((bytes, content_type(Path::new(path))))
}

fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("wav") => "audio/wav",
        Some("mp3") => "audio/mpeg",
        Some("flac") => "audio/flac",
        Some("ogg" | "oga" | "opus") => "audio/ogg",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_summarised_per_text() {
        let texts = vec![
            "A man is eating food.".to_owned(),
            "Stocks fell.".to_owned(),
        ];
        let result = json!({"shape": [2, 8], "pooling": "mean", "data": [
            [0.5, -0.5, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ]});
        let lines = embedding_summary(&texts, &result).expect("a summary");
        assert_eq!(lines[0], "2 vectors of 8 dimensions, mean pooling");
        assert_eq!(
            lines[1],
            "  1  [+0.5000, -0.5000, +0.5000, -0.5000, +0.0000, +0.0000, …]  norm 1.000  \
             \"A man is eating food.\""
        );
        assert!(lines[2].ends_with("\"Stocks fell.\""), "{}", lines[2]);
        assert!(embedding_summary(&texts, &json!({"shape": [0]})).is_err());
    }

    #[test]
    fn uploads_are_labelled_by_extension() {
        assert_eq!(content_type(Path::new("a/hello.WAV")), "audio/wav");
        assert_eq!(content_type(Path::new("cat.jpeg")), "image/jpeg");
        assert_eq!(content_type(Path::new("-")), "application/octet-stream");
    }

    #[test]
    fn missing_files_are_named() {
        let error =
            read_file(Some("/nonexistent/cat.png"), "an image file").expect_err("no such file");
        assert!(
            error.to_string().contains("/nonexistent/cat.png"),
            "{error}"
        );
        let error = read_file(None, "an image file").expect_err("no argument");
        assert!(error.to_string().contains("kiln run MODEL FILE"), "{error}");
    }
}
