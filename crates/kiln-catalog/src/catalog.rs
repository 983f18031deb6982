//! The built-in catalog (data/catalog.json), its search and the task/author listings.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use kiln_core::Task;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::entry::{stable_id, task_object, CatalogEntry, NeuronRates, Property, UnitRate};
use crate::query::SearchQuery;
use crate::schema::SchemaKind;

const CATALOG_JSON: &str = include_str!("../data/catalog.json");

const DEFAULT_PER_PAGE: u32 = 50;
const MAX_PER_PAGE: u32 = 1000;

/// Capability flags that become `"true"`-valued properties, in the order they are reported.
const FLAGS: [&str; 6] = [
    "async_queue",
    "function_calling",
    "reasoning",
    "vision",
    "lora",
    "require_workers_paid",
];

/// One page of search results plus the V4 `result_info` numbers.
#[derive(Debug, Clone)]
pub struct SearchPage<'a> {
    pub results: Vec<&'a CatalogEntry>,
    /// Results on this page.
    pub count: u32,
    pub page: u32,
    pub per_page: u32,
    /// Matches over all pages.
    pub total_count: u32,
}

impl SearchPage<'_> {
    pub fn result_objects(&self) -> Vec<Value> {
        self.results
            .iter()
            .map(|entry| entry.to_search_object())
            .collect()
    }

    pub fn result_info(&self) -> Value {
        json!({
            "count": self.count,
            "page": self.page,
            "per_page": self.per_page,
            "total_count": self.total_count,
        })
    }
}

/// All known models, sorted by name.
#[derive(Debug)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
    author_descriptions: BTreeMap<String, String>,
}

static BUILTIN: LazyLock<Catalog> = LazyLock::new(|| {
    // The file is compiled in and a unit test parses it, so failure here is a build defect.
    Catalog::from_json(CATALOG_JSON).unwrap_or_else(|error| panic!("data/catalog.json: {error}"))
});

impl Catalog {
    pub fn builtin() -> &'static Catalog {
        &BUILTIN
    }

    /// Parses a catalog document shaped like data/catalog.json.
    pub fn from_json(text: &str) -> Result<Catalog, String> {
        let file: CatalogFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut entries = file
            .models
            .into_iter()
            .map(RawEntry::into_entry)
            .collect::<Result<Vec<_>, _>>()?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(pair) = entries.windows(2).find(|pair| pair[0].name == pair[1].name) {
            return Err(format!("duplicate model {}", pair[0].name));
        }
        Ok(Catalog {
            entries,
            author_descriptions: file.authors,
        })
    }

    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.entries
            .binary_search_by(|entry| entry.name.as_str().cmp(name))
            .ok()
            .map(|index| &self.entries[index])
    }

    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    pub fn search(&self, query: &SearchQuery) -> SearchPage<'_> {
        let matches: Vec<&CatalogEntry> = self
            .entries
            .iter()
            .filter(|entry| matches_query(entry, query))
            .collect();
        let per_page = query
            .per_page
            .unwrap_or(DEFAULT_PER_PAGE)
            .clamp(1, MAX_PER_PAGE);
        let page = query.page.unwrap_or(1).max(1);
        let start = (page as usize - 1).saturating_mul(per_page as usize);
        let results: Vec<&CatalogEntry> = matches
            .iter()
            .skip(start)
            .take(per_page as usize)
            .copied()
            .collect();
        SearchPage {
            count: results.len() as u32,
            total_count: matches.len() as u32,
            results,
            page,
            per_page,
        }
    }

    /// Tasks that have at least one model, for `/ai/tasks/search`.
    pub fn tasks(&self) -> Vec<Value> {
        Task::ALL
            .into_iter()
            .filter(|task| self.entries.iter().any(|entry| entry.task == *task))
            .map(task_object)
            .collect()
    }

    /// Every author segment with a model, for `/ai/authors/search`.
    pub fn authors(&self) -> Vec<Value> {
        let mut names: Vec<&str> = self.entries.iter().map(CatalogEntry::author).collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let description = self
                    .author_descriptions
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| format!("Models published by {name}."));
                json!({"id": stable_id(&format!("author:{name}")), "name": name, "description": description})
            })
            .collect()
    }
}

fn matches_query(entry: &CatalogEntry, query: &SearchQuery) -> bool {
    if entry.deprecated && query.include_deprecated != Some(true) {
        return false;
    }
    if entry.beta && query.hide_experimental == Some(true) {
        return false;
    }
    if query.source.is_some_and(|source| source != entry.source) {
        return false;
    }
    if let Some(task) = non_empty(&query.task) {
        let task = task.trim();
        if !entry.task.name().eq_ignore_ascii_case(task)
            && !entry.task.id().eq_ignore_ascii_case(task)
        {
            return false;
        }
    }
    if let Some(author) = non_empty(&query.author) {
        if !entry.author().eq_ignore_ascii_case(author.trim()) {
            return false;
        }
    }
    if let Some(text) = non_empty(&query.search) {
        let needle = text.to_lowercase();
        if !entry.name.to_lowercase().contains(&needle)
            && !entry.description.to_lowercase().contains(&needle)
        {
            return false;
        }
    }
    true
}

/// Empty query parameters (`?task=`) filter nothing.
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|text| !text.trim().is_empty())
}

#[derive(Deserialize)]
struct CatalogFile {
    authors: BTreeMap<String, String>,
    models: Vec<RawEntry>,
}

/// One model as data/catalog.json spells it; turned into Workers AI properties on load.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    task: Task,
    description: String,
    created_at: String,
    schema: Option<SchemaKind>,
    context_window: Option<u32>,
    max_input_tokens: Option<u32>,
    output_dimensions: Option<u32>,
    #[serde(default)]
    flags: Vec<String>,
    beta: bool,
    #[serde(default)]
    deprecated: bool,
    #[serde(default)]
    unverified_id: bool,
    info: Option<String>,
    terms: Option<String>,
    /// `[unit, dollars, neurons]` triples.
    #[serde(default)]
    rates: Vec<(String, f64, f64)>,
    reasoning_effort: Option<Value>,
}

impl RawEntry {
    fn into_entry(self) -> Result<CatalogEntry, String> {
        if let Some(unknown) = self
            .flags
            .iter()
            .find(|flag| !FLAGS.contains(&flag.as_str()))
        {
            return Err(format!("{}: unknown flag {unknown}", self.name));
        }
        let mut properties = vec![Property::text("beta", self.beta.to_string())];
        let numbers = [
            ("context_window", self.context_window),
            ("max_input_tokens", self.max_input_tokens),
            ("output_dimensions", self.output_dimensions),
        ];
        for (id, value) in numbers {
            if let Some(value) = value {
                properties.push(Property::text(id, value.to_string()));
            }
        }
        for flag in FLAGS
            .iter()
            .filter(|flag| self.flags.iter().any(|f| f == *flag))
        {
            properties.push(Property::text(flag, "true"));
        }
        if let Some(info) = &self.info {
            properties.push(Property::text("info", info.as_str()));
        }
        if let Some(terms) = &self.terms {
            properties.push(Property::text("terms", terms.as_str()));
        }
        if !self.rates.is_empty() {
            let price: Vec<Value> = self
                .rates
                .iter()
                .map(|(unit, price, _)| json!({"unit": unit, "price": price, "currency": "USD"}))
                .collect();
            properties.push(Property {
                property_id: "price".into(),
                value: Value::Array(price),
            });
        }
        if let Some(effort) = self.reasoning_effort {
            properties.push(Property {
                property_id: "reasoning_effort".into(),
                value: effort,
            });
        }
        if self.unverified_id {
            properties.push(Property::text("kiln_unverified_id", "true"));
        }
        let neurons = (!self.rates.is_empty()).then(|| {
            NeuronRates::from_units(
                self.rates
                    .into_iter()
                    .map(|(unit, price_usd, neurons)| UnitRate {
                        unit,
                        price_usd,
                        neurons,
                    })
                    .collect(),
            )
        });
        let schema = self
            .schema
            .unwrap_or_else(|| SchemaKind::default_for(self.task));
        Ok(CatalogEntry {
            id: stable_id(&self.name),
            name: self.name,
            task: self.task,
            description: self.description.trim().to_owned(),
            properties,
            deprecated: self.deprecated,
            beta: self.beta,
            neurons,
            source: 1,
            created_at: self.created_at,
            tags: Vec::new(),
            schema,
        })
    }
}
