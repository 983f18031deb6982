//! Structured output: JSON Schemas and Lark grammars compiled by llguidance into a sampler stage
//! that masks every token which would leave the grammar.

use std::sync::Arc;

use kiln_core::{KilnError, KilnResult, OutputConstraint, ToolSyntax};
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
            OutputConstraint::Lark(grammar) => (
                TopLevelGrammar::from_lark(self.with_special_markers(grammar)),
                "grammar",
            ),
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

impl GrammarCompiler {
    /// Lets each tool-call marker of the grammar (a `"<tool_call>"` literal) also be written as
    /// the model's single special token of that name, which is how models trained with one
    /// emit it.
    fn with_special_markers(&self, grammar: &str) -> String {
        let trie = self.factory.tok_env().tok_trie();
        let mut grammar = grammar.to_owned();
        for marker in ToolSyntax::MARKERS {
            if let Some(token) = trie.get_special_token(marker) {
                let literal = format!("\"{marker}\"");
                grammar = grammar.replace(&literal, &format!("(<[{token}]> | {literal})"));
            }
        }
        grammar
    }
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}
