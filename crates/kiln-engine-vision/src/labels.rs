//! Class-index → label-name tables.
//!
//! Two sources are understood: timm's ImageNet files (`imagenet_synsets.txt`, one WordNet id per
//! class in index order, plus `imagenet_synset_to_lemma.txt`, `id<TAB>lemmas`), and a Hugging
//! Face `config.json` with `id2label`. Labels are the whole lemma string ("tabby, tabby cat"),
//! which is how Hugging Face's ImageNet `id2label` and so Workers AI name classes.

use std::collections::HashMap;
use std::path::Path;

use crate::VisionError;

pub const SYNSETS_FILE: &str = "imagenet_synsets.txt";
pub const LEMMAS_FILE: &str = "imagenet_synset_to_lemma.txt";
pub const CONFIG_FILE: &str = "config.json";

/// Loads exactly `classes` labels from `dir`.
pub fn load(dir: &Path, classes: usize) -> Result<Vec<String>, VisionError> {
    let labels = if dir.join(SYNSETS_FILE).is_file() {
        let synsets = read(&dir.join(SYNSETS_FILE))?;
        let lemmas = match std::fs::read_to_string(dir.join(LEMMAS_FILE)) {
            Ok(text) => text,
            // Synset ids alone are still usable labels.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(VisionError::Model(format!("reading {LEMMAS_FILE}: {e}"))),
        };
        from_synsets(&synsets, &lemmas)
    } else if dir.join(CONFIG_FILE).is_file() {
        from_config(&read(&dir.join(CONFIG_FILE))?)?
    } else {
        return Err(VisionError::Model(format!(
            "no labels in {}: expected {SYNSETS_FILE} or {CONFIG_FILE}",
            dir.display()
        )));
    };
    if labels.len() != classes {
        return Err(VisionError::Model(format!(
            "{} labels in {} but the model has {classes} classes",
            labels.len(),
            dir.display()
        )));
    }
    Ok(labels)
}

fn read(path: &Path) -> Result<String, VisionError> {
    std::fs::read_to_string(path)
        .map_err(|e| VisionError::Model(format!("reading {}: {e}", path.display())))
}

fn from_synsets(synsets: &str, lemmas: &str) -> Vec<String> {
    let names: HashMap<&str, &str> = lemmas
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(id, name)| (id.trim(), name.trim()))
        .collect();
    synsets
        .lines()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|id| names.get(id).copied().unwrap_or(id).to_string())
        .collect()
}

fn from_config(config: &str) -> Result<Vec<String>, VisionError> {
    let bad = |why: &str| VisionError::Model(format!("{CONFIG_FILE}: {why}"));
    let value: serde_json::Value = serde_json::from_str(config).map_err(|e| bad(&e.to_string()))?;
    let Some(map) = value.get("id2label").and_then(|v| v.as_object()) else {
        return Err(bad("no id2label"));
    };
    let mut labels = vec![None; map.len()];
    for (id, label) in map {
        let slot = id
            .parse::<usize>()
            .ok()
            .and_then(|i| labels.get_mut(i))
            .ok_or_else(|| bad(&format!("id2label key {id} out of range")))?;
        *slot = Some(label.as_str().unwrap_or_default().to_string());
    }
    labels
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad("id2label has gaps"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synsets_map_to_lemmas_in_index_order() {
        let lemmas = "n02123045\ttabby, tabby cat\nn07920052\tespresso\n";
        let labels = from_synsets("n07920052\nn02123045\nn99999999\n", lemmas);
        assert_eq!(labels, ["espresso", "tabby, tabby cat", "n99999999"]);
    }

    #[test]
    fn config_id2label_is_ordered_by_id() {
        let labels = from_config(r#"{"id2label": {"1": "b", "0": "a"}}"#).expect("labels");
        assert_eq!(labels, ["a", "b"]);
        assert!(from_config(r#"{"id2label": {"0": "a", "2": "c"}}"#).is_err());
        assert!(from_config("{}").is_err());
    }
}
