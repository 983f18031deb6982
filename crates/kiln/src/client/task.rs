//! What a model does, decided from its id: the Workers AI catalog knows every `@cf/…` id's
//! task, and the server's `GET /kiln/models` knows its installed models' (`kiln run
//! smollm2-135m-instruct …`). Anything else (an alias of the operator's own) is taken for text
//! generation unless `--task` says otherwise.

use clap::ValueEnum;
use kiln_catalog::Catalog;
use kiln_core::Task;
use serde_json::Value;

use super::http::{Client, Unreachable};

/// The tasks `kiln run` can name with `--task`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TaskArg {
    TextGeneration,
    Embeddings,
    SpeechRecognition,
    ImageClassification,
}

impl From<TaskArg> for Task {
    fn from(task: TaskArg) -> Task {
        match task {
            TaskArg::TextGeneration => Task::TextGeneration,
            TaskArg::Embeddings => Task::TextEmbeddings,
            TaskArg::SpeechRecognition => Task::SpeechRecognition,
            TaskArg::ImageClassification => Task::ImageClassification,
        }
    }
}

/// The task of `model`: `given` if any, else the catalog's, else the server's installed model
/// of that name, else text generation.
pub async fn task_of(client: &Client, model: &str, given: Option<TaskArg>) -> anyhow::Result<Task> {
    if let Some(task) = given {
        return Ok(task.into());
    }
    if let Some(entry) = Catalog::builtin().get(model) {
        return Ok(entry.task);
    }
    match client.result(client.get("/kiln/models")).await {
        Ok(listing) => Ok(installed_task(&listing, model).unwrap_or(Task::TextGeneration)),
        Err(error) if error.is::<Unreachable>() => Err(error),
        // A server without the listing still runs models: let it say what it makes of the id.
        Err(_) => Ok(Task::TextGeneration),
    }
}

/// The task `GET /kiln/models` gives for the installed model `name`.
fn installed_task(listing: &Value, name: &str) -> Option<Task> {
    listing["models"]
        .as_array()?
        .iter()
        .find(|model| model["name"] == name)
        .and_then(|model| model["task"].as_str())
        .and_then(Task::from_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn installed_models_have_their_listed_task() {
        let listing = json!({"models": [
            {"name": "smollm2-135m-instruct", "task": "Text Generation", "loaded": true},
            {"name": "all-minilm-l6-v2", "task": "Text Embeddings", "loaded": false},
        ]});
        assert_eq!(
            installed_task(&listing, "all-minilm-l6-v2"),
            Some(Task::TextEmbeddings)
        );
        assert_eq!(installed_task(&listing, "nothing"), None);
        assert_eq!(installed_task(&json!({}), "all-minilm-l6-v2"), None);
    }

    #[test]
    fn catalog_ids_need_no_server() {
        let args = super::super::ClientArgs {
            url: "http://127.0.0.1:9".into(),
            token: None,
            account: "local".into(),
        };
        let client = Client::new(&args).expect("client");
        let runtime = super::super::runtime().expect("runtime");
        for (model, task) in [
            ("@cf/meta/llama-3.1-8b-instruct", Task::TextGeneration),
            ("@cf/baai/bge-base-en-v1.5", Task::TextEmbeddings),
            ("@cf/openai/whisper", Task::SpeechRecognition),
            ("@cf/microsoft/resnet-50", Task::ImageClassification),
        ] {
            let found = runtime.block_on(task_of(&client, model, None));
            assert_eq!(found.expect("from the catalog"), task, "{model}");
        }
        let given = runtime.block_on(task_of(
            &client,
            "whisper-1",
            Some(TaskArg::SpeechRecognition),
        ));
        assert_eq!(given.expect("as given"), Task::SpeechRecognition);
    }
}
