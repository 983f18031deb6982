//! Structured output: JSON Schemas and Lark grammars compiled by llguidance into a sampler stage
//! that masks every token which would leave the grammar.

use std::sync::Arc;

use kiln_core::{KilnError, KilnResult, OutputConstraint};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};

/// Compiles grammars against one model's vocabulary. Building it walks the whole vocabulary, so
/// it is made once per model, on the first constrained request.
pub struct GrammarCompiler {
    factory: Arc<ParserFactory>,
}

impl GrammarCompiler {
    pub fn new(model: &LlamaModel) -> KilnResult<Self> {
        let vocabulary = LlamaSampler::llguidance_tok_env(model);
        let mut factory = ParserFactory::new_simple(&vocabulary).map_err(|error| {
            KilnError::internal(format!("cannot build the grammar engine: {error}"))
        })?;
        // Grammar warnings and statistics are not printed per request.
        factory.quiet();
        Ok(Self {
            factory: Arc::new(factory),
        })
    }

    /// The sampler stage enforcing `constraint`; a schema or grammar llguidance cannot enforce
    /// is the caller's error, named in the message.
    pub fn sampler(&self, constraint: &OutputConstraint) -> KilnResult<LlamaSampler> {
        let (grammar, what) = match constraint {
            OutputConstraint::JsonSchema(schema) => (
                TopLevelGrammar::from_json_schema(schema.clone()),
                "JSON schema",
            ),
            OutputConstraint::Lark(grammar) => {
                (TopLevelGrammar::from_lark(grammar.clone()), "grammar")
            }
        };
        let parser = self.factory.create_parser(grammar).map_err(|error| {
            KilnError::bad_input(format!(
                "the {what} cannot be enforced: {}",
                first_line(&error.to_string())
            ))
        })?;
        Ok(LlamaSampler::from(Matcher::new(Ok(parser))))
    }
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}
