//! `kiln ps`: the models a running server has loaded, from its `GET /kiln/models`.

use clap::Args;
use serde_json::Value;

use super::http::Client;
use super::ClientArgs;

/// `kiln ps`'s settings.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// Also list the installed models that are not loaded (they load on their first request).
    #[arg(long)]
    pub all: bool,

    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn ps(args: PsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let listing = super::runtime()?.block_on(client.result(client.get("/kiln/models")))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
    } else {
        for line in table(&listing, args.all) {
            println!("{line}");
        }
    }
    Ok(())
}

/// The table, then a line on memory and unloading.
fn table(listing: &Value, all: bool) -> Vec<String> {
    let models: Vec<&Value> = listing["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|model| all || model["loaded"] == true)
        .collect();
    let mut lines = Vec::new();
    if models.is_empty() {
        lines.push(if all {
            "No models are installed on this server (`kiln models pull` installs them).".to_owned()
        } else {
            "No models are loaded; they load on their first request (`kiln ps --all` lists the \
             installed ones)."
                .to_owned()
        });
    } else {
        let width = models
            .iter()
            .filter_map(|model| model["name"].as_str())
            .map(str::len)
            .chain([4])
            .max()
            .unwrap_or(4);
        let state = if all {
            format!("{:<10}", "STATE")
        } else {
            String::new()
        };
        lines.push(format!(
            "{:<width$}  {:<30}{state}  {:>10}",
            "NAME", "TASK", "MEMORY"
        ));
        for model in models {
            let state = match (all, model["loaded"] == true) {
                (false, _) => String::new(),
                (true, true) => format!("{:<10}", "loaded"),
                (true, false) => format!("{:<10}", "installed"),
            };
            let memory = model["memory_bytes"].as_u64().map_or("-".to_owned(), size);
            lines.push(format!(
                "{:<width$}  {:<30}{state}  {:>10}",
                model["name"].as_str().unwrap_or("?"),
                model["task"].as_str().unwrap_or("?"),
                memory
            ));
        }
    }
    let used = listing["memory_used_bytes"].as_u64().unwrap_or(0);
    let budget = listing["memory_budget_bytes"]
        .as_u64()
        .map_or(String::new(), |budget| {
            format!(" of a {} budget", size(budget))
        });
    let unloading = match listing["keep_alive_secs"].as_u64() {
        Some(seconds) => format!("idle models unload after {seconds} s"),
        None => "idle models stay loaded".to_owned(),
    };
    lines.push(format!("\n{} in use{budget}; {unloading}.", size(used)));
    lines
}

/// Bytes in MiB or GiB.
fn size(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = bytes as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listing() -> Value {
        json!({
            "models": [
                {"name": "smollm2-135m-instruct", "task": "Text Generation", "loaded": true,
                 "memory_bytes": 150 * 1024 * 1024},
                {"name": "whisper-base", "task": "Automatic Speech Recognition", "loaded": false,
                 "memory_bytes": null},
            ],
            "memory_budget_bytes": 12u64 * 1024 * 1024 * 1024,
            "memory_used_bytes": 150 * 1024 * 1024,
            "keep_alive_secs": null,
        })
    }

    #[test]
    fn loaded_models_are_listed_with_their_memory() {
        let lines = table(&listing(), false);
        assert!(lines[0].starts_with("NAME"), "{lines:?}");
        assert!(lines[1].starts_with("smollm2-135m-instruct"), "{lines:?}");
        assert!(lines[1].ends_with("150 MiB"), "{lines:?}");
        assert_eq!(lines.len(), 3, "whisper is not loaded: {lines:?}");
        assert_eq!(
            lines[2],
            "\n150 MiB in use of a 12.0 GiB budget; idle models stay loaded."
        );
    }

    #[test]
    fn all_lists_installed_models_with_their_state() {
        let lines = table(&listing(), true);
        assert!(lines[0].contains("STATE"), "{lines:?}");
        assert!(lines[2].starts_with("whisper-base"), "{lines:?}");
        assert!(lines[2].contains("installed"), "{lines:?}");
        let mut idle = listing();
        idle["models"][0]["loaded"] = json!(false);
        idle["keep_alive_secs"] = json!(300);
        let lines = table(&idle, false);
        assert!(lines[0].starts_with("No models are loaded"), "{lines:?}");
        assert!(
            lines[1].ends_with("idle models unload after 300 s."),
            "{lines:?}"
        );
    }
}
