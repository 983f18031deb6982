//! The Workers AI model catalog (spec §1.5, §7, §8) and per-model input schemas (§3).
//!
//! The model list lives in `data/catalog.json`; it is parsed once into [`Catalog::builtin`].
//! [`schema_for`] gives the JSON Schemas `GET /ai/models/schema` serves and [`validate_input`]
//! checks requests against the same schemas.

mod catalog;
mod entry;
mod nulls;
mod query;
pub mod schema;
mod validate;

pub use catalog::{Catalog, SearchPage};
pub use entry::{
    stable_id, task_description, task_object, CatalogEntry, NeuronRates, Property, UnitRate,
};
pub use nulls::{drop_null_fields, with_nullable_optionals};
pub use query::SearchQuery;
pub use schema::{schema_for, SchemaKind};
pub use validate::{compile_schema, validate_input};
