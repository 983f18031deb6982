//! The built-in catalog: coverage of spec §8, prices of §7, search semantics of §1.5.

use kiln_catalog::{Catalog, CatalogEntry, SearchQuery};
use kiln_core::Task;
use serde_json::{json, Value};

fn model(name: &str) -> &'static CatalogEntry {
    Catalog::builtin()
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing from the catalog"))
}

fn price(entry: &CatalogEntry, unit: &str) -> f64 {
    entry
        .property("price")
        .and_then(Value::as_array)
        .and_then(|lines| lines.iter().find(|line| line["unit"] == unit))
        .and_then(|line| line["price"].as_f64())
        .unwrap_or_else(|| panic!("{} has no price {unit}", entry.name))
}

#[test]
fn every_spec_section_8_id_is_present() {
    let ids = include_str!("fixtures/spec-section-8-ids.txt");
    let mut checked = 0;
    for id in ids
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
    {
        assert!(Catalog::builtin().get(id).is_some(), "{id} missing");
        checked += 1;
    }
    assert_eq!(checked, 108);
    assert_eq!(
        Catalog::builtin().entries().len(),
        checked + 6,
        "verified rows + 6 unverified ids"
    );
}

#[test]
fn spot_checks_across_tasks() {
    let expectations = [
        (
            "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
            Task::TextGeneration,
        ),
        (
            "@hf/thebloke/deepseek-coder-6.7b-instruct-awq",
            Task::TextGeneration,
        ),
        (
            "@hf/nousresearch/hermes-2-pro-mistral-7b",
            Task::TextGeneration,
        ),
        ("@hf/google/gemma-7b-it", Task::TextGeneration),
        ("@cf/openai/gpt-oss-120b", Task::TextGeneration),
        ("@cf/moonshotai/kimi-k2.6", Task::TextGeneration),
        ("@cf/baai/bge-base-en-v1.5", Task::TextEmbeddings),
        ("@cf/baai/bge-m3", Task::TextEmbeddings),
        ("@cf/pfnet/plamo-embedding-1b", Task::TextEmbeddings),
        ("@cf/baai/bge-reranker-base", Task::TextClassification),
        (
            "@cf/huggingface/distilbert-sst-2-int8",
            Task::TextClassification,
        ),
        ("@cf/openai/whisper-large-v3-turbo", Task::SpeechRecognition),
        ("@cf/deepgram/aura-2-es", Task::TextToSpeech),
        ("@cf/black-forest-labs/flux-1-schnell", Task::TextToImage),
        ("@cf/meta/m2m100-1.2b", Task::Translation),
        ("@cf/facebook/bart-large-cnn", Task::Summarization),
        ("@cf/llava-hf/llava-1.5-7b-hf", Task::ImageToText),
        ("@cf/microsoft/resnet-50", Task::ImageClassification),
        ("@cf/facebook/detr-resnet-50", Task::ObjectDetection),
        ("@cf/pipecat-ai/smart-turn-v2", Task::VoiceActivityDetection),
    ];
    for (name, task) in expectations {
        assert_eq!(model(name).task, task, "{name}");
    }
}

#[test]
fn verified_properties_from_spec() {
    let llama = model("@cf/meta/llama-3.3-70b-instruct-fp8-fast");
    assert_eq!(llama.context_window(), Some(24000));
    assert!(llama.has_property("function_calling"));
    assert!(llama.has_property("async_queue"));
    assert!(llama.has_property("lora"));
    assert!(!llama.has_property("vision"));
    assert_eq!(llama.author(), "meta");

    assert_eq!(
        model("@cf/meta/llama-4-scout-17b-16e-instruct").context_window(),
        Some(131000)
    );
    assert_eq!(
        model("@cf/openai/gpt-oss-120b").context_window(),
        Some(128000)
    );
    assert!(model("@cf/openai/gpt-oss-120b").has_property("reasoning"));
    assert_eq!(
        model("@cf/zai-org/glm-4.7-flash").context_window(),
        Some(131072)
    );
    let kimi = model("@cf/moonshotai/kimi-k2.6");
    assert_eq!(kimi.context_window(), Some(262144));
    for flag in [
        "function_calling",
        "reasoning",
        "vision",
        "async_queue",
        "require_workers_paid",
    ] {
        assert!(kimi.has_property(flag), "kimi-k2.6 {flag}");
    }
    assert_eq!(model("@cf/baai/bge-m3").context_window(), Some(60000));
    assert_eq!(
        model("@cf/qwen/qwen3-embedding-0.6b").context_window(),
        Some(8192)
    );
    assert_eq!(
        model("@cf/baai/bge-base-en-v1.5").max_input_tokens(),
        Some(512)
    );

    let dimensions = [
        ("@cf/baai/bge-small-en-v1.5", 384),
        ("@cf/baai/bge-base-en-v1.5", 768),
        ("@cf/baai/bge-large-en-v1.5", 1024),
        ("@cf/baai/bge-m3", 1024),
        ("@cf/google/embeddinggemma-300m", 768),
        ("@cf/qwen/qwen3-embedding-0.6b", 1024),
        ("@cf/pfnet/plamo-embedding-1b", 2048),
    ];
    for (name, dims) in dimensions {
        assert_eq!(model(name).output_dimensions(), Some(dims), "{name}");
    }
    assert!(model("@cf/stabilityai/stable-diffusion-xl-base-1.0").beta);
    assert!(!model("@cf/openai/whisper").beta);
    assert_eq!(
        model("@cf/huggingface/distilbert-sst-2-int8").property("beta"),
        Some(&json!("false"))
    );
}

#[test]
fn prices_match_section_7() {
    let kimi = model("@cf/moonshotai/kimi-k2.6");
    assert_eq!(price(kimi, "per M input tokens"), 0.95);
    assert_eq!(price(kimi, "per M cached input tokens"), 0.16);
    assert_eq!(price(kimi, "per M output tokens"), 4.0);
    let rates = kimi.neurons.as_ref().expect("kimi has neuron rates");
    assert_eq!(rates.input_per_million_tokens, Some(86364.0));
    assert_eq!(rates.cached_input_per_million_tokens, Some(14545.0));
    assert_eq!(rates.output_per_million_tokens, Some(363636.0));

    let llama = model("@cf/meta/llama-3.3-70b-instruct-fp8-fast");
    assert_eq!(price(llama, "per M input tokens"), 0.293);
    assert_eq!(price(llama, "per M output tokens"), 2.253);
    let llama_rates = llama.neurons.as_ref().expect("rates");
    assert_eq!(llama_rates.input_per_million_tokens, Some(26668.0));
    assert_eq!(llama_rates.output_per_million_tokens, Some(204805.0));
    assert_eq!(llama_rates.cached_input_per_million_tokens, None);

    assert_eq!(
        price(
            model("@cf/meta/llama-3.2-1b-instruct"),
            "per M output tokens"
        ),
        0.201
    );
    assert_eq!(
        price(model("@cf/baai/bge-small-en-v1.5"), "per M input tokens"),
        0.020
    );
    assert_eq!(
        price(model("@cf/openai/whisper"), "per audio minute"),
        0.0005
    );
    assert_eq!(
        price(model("@cf/deepgram/aura-1"), "per 1k characters"),
        0.015
    );
    assert_eq!(
        price(model("@cf/black-forest-labs/flux-1-schnell"), "per step"),
        0.0001056
    );
    assert_eq!(
        price(
            model("@cf/deepseek-ai/deepseek-v4-pro-0813"),
            "per M cached input tokens"
        ),
        0.044
    );

    let whisper = model("@cf/openai/whisper").neurons.as_ref().expect("rates");
    assert_eq!(whisper.units[0].neurons, 41.14);
    assert!(whisper.input_per_million_tokens.is_none());
    for line in kimi
        .property("price")
        .and_then(Value::as_array)
        .expect("price array")
    {
        assert_eq!(line["currency"], "USD");
    }
    assert!(model("@hf/thebloke/zephyr-7b-beta-awq").neurons.is_none());
}

#[test]
fn unverified_and_deprecated_markers() {
    let apertus = model("@cf/apertus/apertus-v1.5-8b");
    assert!(apertus.has_property("kiln_unverified_id"));
    assert!(model("@cf/cloudflare/clef-flash").has_property("kiln_unverified_id"));
    assert!(!model("@cf/meta/llama-3.1-8b-instruct").has_property("kiln_unverified_id"));
    for legacy in [
        "@hf/thebloke/zephyr-7b-beta-awq",
        "@cf/microsoft/phi-2",
        "@cf/qwen/qwen1.5-0.5b-chat",
    ] {
        assert!(model(legacy).deprecated, "{legacy}");
    }
    assert!(!model("@cf/meta/llama-3.1-8b-instruct").deprecated);
}

#[test]
fn search_object_shape() {
    let entry = model("@cf/meta/llama-3.3-70b-instruct-fp8-fast");
    let object = entry.to_search_object();
    assert_eq!(object["name"], entry.name);
    assert_eq!(object["id"], entry.id);
    assert_eq!(object["source"], 1);
    assert_eq!(object["created_at"], "2024-12-06 17:09:18.338");
    assert_eq!(object["tags"], json!([]));
    assert_eq!(object["task"]["id"], "c329a1f9-323d-4e91-b2aa-582dd4188d34");
    assert_eq!(object["task"]["name"], "Text Generation");
    assert!(object["task"]["description"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
    let properties = object["properties"].as_array().expect("properties array");
    assert!(properties.contains(&json!({"property_id": "context_window", "value": "24000"})));
    assert!(properties.contains(&json!({"property_id": "function_calling", "value": "true"})));
    let ids: Vec<&str> = Catalog::builtin()
        .entries()
        .iter()
        .map(|e| e.id.as_str())
        .collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "ids are unique");
}

fn names(query: &SearchQuery) -> Vec<String> {
    Catalog::builtin()
        .search(query)
        .results
        .iter()
        .map(|e| e.name.clone())
        .collect()
}

#[test]
fn search_by_task_author_and_text() {
    let embeddings = names(&SearchQuery {
        task: Some("text embeddings".into()),
        ..Default::default()
    });
    assert!(embeddings.contains(&"@cf/baai/bge-m3".to_owned()));
    assert!(embeddings
        .iter()
        .all(|n| model(n).task == Task::TextEmbeddings));
    let by_uuid = names(&SearchQuery {
        task: Some("0137cdcf-162a-4108-94f2-1ca59e8c65ee".into()),
        ..Default::default()
    });
    assert_eq!(by_uuid, embeddings);

    let baai = names(&SearchQuery {
        author: Some("BAAI".into()),
        ..Default::default()
    });
    assert!(
        baai.len() >= 6 && baai.iter().all(|n| n.starts_with("@cf/baai/")),
        "{baai:?}"
    );

    let found = names(&SearchQuery {
        search: Some("LLAMA-3.3".into()),
        ..Default::default()
    });
    assert_eq!(found, vec!["@cf/meta/llama-3.3-70b-instruct-fp8-fast"]);
    let by_description = names(&SearchQuery {
        search: Some("sigmoid".into()),
        ..Default::default()
    });
    assert!(by_description.contains(&"@cf/baai/bge-reranker-base".to_owned()));

    assert!(names(&SearchQuery {
        source: Some(2),
        ..Default::default()
    })
    .is_empty());
    let sorted = names(&SearchQuery {
        per_page: Some(1000),
        ..Default::default()
    });
    let mut expected = sorted.clone();
    expected.sort();
    assert_eq!(sorted, expected, "sorted by name");
}

#[test]
fn search_hides_deprecated_and_optionally_beta() {
    let all = Catalog::builtin().entries().len() as u32;
    let deprecated = Catalog::builtin()
        .entries()
        .iter()
        .filter(|e| e.deprecated)
        .count() as u32;
    let default = Catalog::builtin().search(&SearchQuery::default());
    assert_eq!(default.total_count, all - deprecated);
    assert!(default.results.iter().all(|e| !e.deprecated));
    assert!(!names(&SearchQuery {
        per_page: Some(1000),
        ..Default::default()
    })
    .contains(&"@cf/microsoft/phi-2".to_owned()));

    let everything = SearchQuery {
        include_deprecated: Some(true),
        per_page: Some(1000),
        ..Default::default()
    };
    assert_eq!(Catalog::builtin().search(&everything).total_count, all);
    assert!(names(&everything).contains(&"@cf/microsoft/phi-2".to_owned()));

    let stable = SearchQuery {
        hide_experimental: Some(true),
        per_page: Some(1000),
        ..Default::default()
    };
    let stable_page = Catalog::builtin().search(&stable);
    assert!(stable_page.results.iter().all(|e| !e.beta && !e.deprecated));
    assert!(!names(&stable).contains(&"@cf/facebook/bart-large-cnn".to_owned()));
    assert!(names(&stable).contains(&"@cf/openai/whisper".to_owned()));
}

#[test]
fn search_pagination() {
    let catalog = Catalog::builtin();
    let total = catalog.search(&SearchQuery::default()).total_count;
    let first = catalog.search(&SearchQuery {
        per_page: Some(10),
        ..Default::default()
    });
    assert_eq!(
        (first.count, first.page, first.per_page, first.total_count),
        (10, 1, 10, total)
    );
    let second = catalog.search(&SearchQuery {
        per_page: Some(10),
        page: Some(2),
        ..Default::default()
    });
    assert_eq!(second.count, 10);
    assert_ne!(first.results[0].name, second.results[0].name);

    let last_page = total.div_ceil(10);
    let last = catalog.search(&SearchQuery {
        per_page: Some(10),
        page: Some(last_page),
        ..Default::default()
    });
    assert_eq!(last.count, total - (last_page - 1) * 10);
    let beyond = catalog.search(&SearchQuery {
        per_page: Some(10),
        page: Some(last_page + 1),
        ..Default::default()
    });
    assert_eq!((beyond.count, beyond.total_count), (0, total));

    let defaults = catalog.search(&SearchQuery {
        page: Some(0),
        per_page: Some(0),
        ..Default::default()
    });
    assert_eq!(
        (defaults.page, defaults.per_page, defaults.count),
        (1, 1, 1)
    );
    let unset = catalog.search(&SearchQuery::default());
    assert_eq!((unset.page, unset.per_page, unset.count), (1, 50, 50));
    let huge = catalog.search(&SearchQuery {
        per_page: Some(5000),
        page: Some(u32::MAX),
        ..Default::default()
    });
    assert_eq!((huge.per_page, huge.count), (1000, 0));
    assert_eq!(unset.result_info()["total_count"], total);
}

#[test]
fn search_query_deserializes_from_query_string_values() {
    let query: SearchQuery = serde_json::from_value(json!({
        "task": "Text Generation", "hide_experimental": true, "page": 2, "per_page": 5
    }))
    .expect("query");
    let page = Catalog::builtin().search(&query);
    assert_eq!((page.page, page.per_page, page.count), (2, 5, 5));
}

#[test]
fn search_query_parses_from_a_url_query_string() {
    let query: SearchQuery = serde_urlencoded::from_str(
        "task=Text%20Embeddings&author=baai&hide_experimental=true&include_deprecated=0&page=1&per_page=2&search=",
    )
    .expect("query string");
    assert_eq!(query.hide_experimental, Some(true));
    assert_eq!(query.include_deprecated, Some(false));
    let page = Catalog::builtin().search(&query);
    assert_eq!((page.count, page.per_page), (2, 2));
    assert!(page
        .results
        .iter()
        .all(|e| e.task == Task::TextEmbeddings && e.author() == "baai"));
    assert!(serde_urlencoded::from_str::<SearchQuery>("per_page=lots").is_err());
}

#[test]
fn tasks_and_authors() {
    let tasks = Catalog::builtin().tasks();
    assert_eq!(tasks.len(), Task::ALL.len(), "every task has a model");
    assert!(tasks.contains(&json!({
        "id": "0137cdcf-162a-4108-94f2-1ca59e8c65ee",
        "name": "Text Embeddings",
        "description": kiln_catalog::task_description(Task::TextEmbeddings)
    })));
    let authors = Catalog::builtin().authors();
    let author_names: Vec<&str> = authors.iter().filter_map(|a| a["name"].as_str()).collect();
    for expected in ["meta", "baai", "openai", "thebloke", "moonshotai"] {
        assert!(author_names.contains(&expected), "{expected}");
    }
    assert!(authors
        .iter()
        .all(|a| a["id"].as_str().is_some_and(|id| id.len() == 36)));
    assert!(authors
        .iter()
        .all(|a| a["description"].as_str().is_some_and(|d| !d.is_empty())));
}

#[test]
fn catalog_rejects_bad_data() {
    let duplicate = r#"{"authors":{},"models":[
        {"name":"@cf/a/b","task":"Text Generation","description":"x","created_at":"t","beta":false},
        {"name":"@cf/a/b","task":"Text Generation","description":"x","created_at":"t","beta":false}]}"#;
    assert!(Catalog::from_json(duplicate)
        .unwrap_err()
        .contains("duplicate"));
    let bad_flag = r#"{"authors":{},"models":[
        {"name":"@cf/a/b","task":"Text Generation","description":"x","created_at":"t","beta":false,"flags":["fast"]}]}"#;
    assert!(Catalog::from_json(bad_flag)
        .unwrap_err()
        .contains("unknown flag"));
}
