//! Structured output: JSON Schemas and Lark grammars compiled by llguidance into a sampler stage
//! that masks every token which would leave the grammar.

use std::sync::Arc;

use kiln_core::schema_guard;
use kiln_core::{KilnError, KilnResult, OutputConstraint, ToolSyntax};
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::TokEnv;
use llguidance::{Matcher, ParserFactory, TokenParser};

/// Compiles grammars against one model's vocabulary. Building it walks the whole vocabulary, so
/// it is made once per model, on the first constrained request.
pub struct GrammarCompiler {
    factory: Arc<ParserFactory>,
}

impl GrammarCompiler {
    pub fn new(model: &LlamaModel) -> KilnResult<Self> {
        Self::for_vocabulary(&LlamaSampler::llguidance_tok_env(model))
    }

    fn for_vocabulary(vocabulary: &TokEnv) -> KilnResult<Self> {
        let mut factory = ParserFactory::new_simple(vocabulary).map_err(|error| {
            KilnError::internal(format!("cannot build the grammar engine: {error}"))
        })?;
        // Grammar warnings and statistics are not printed per request.
        factory.quiet();
        // Time per token is already bounded by llguidance's fuel defaults (~20 ms to build the
        // lexer, ~15 ms per mask). Memory is not, for a client's grammar: lexer states cost
        // 1-2 KiB each and the default allows 250 000 per request. These keep one request's
        // parser to tens of MiB; a grammar past them fails with a 400 or ends its generation.
        let limits = factory.limits_mut();
        limits.max_lexer_states = 50_000;
        limits.max_grammar_size = 200_000;
        // Errors quote neither the grammar nor the tokens so far.
        limits.verbose_errors = false;
        Ok(Self {
            factory: Arc::new(factory),
        })
    }

    /// The sampler stage enforcing `constraint`; a schema or grammar llguidance cannot enforce
    /// is the caller's error, named in the message.
    pub fn sampler(&self, constraint: &OutputConstraint) -> KilnResult<LlamaSampler> {
        Ok(LlamaSampler::from(Matcher::new(Ok(
            self.parser(constraint)?
        ))))
    }

    fn parser(&self, constraint: &OutputConstraint) -> KilnResult<TokenParser> {
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
        // Compiling recurses on the schema and its `$ref`s: on a thread with a known, large
        // stack rather than the model's thread (the HTTP layer has bounded the schema for it).
        let factory = &self.factory;
        let parser = schema_guard::on_large_stack("compiling the grammar", || {
            factory.create_parser(grammar)
        })?
        .map_err(|error| {
            KilnError::bad_input(format!(
                "the {what} cannot be enforced: {}",
                first_line(&error.to_string())
            ))
        })?;
        Ok(parser)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value};

    fn compiler() -> GrammarCompiler {
        let vocabulary = llguidance::toktrie::ApproximateTokEnv::single_byte_env();
        GrammarCompiler::for_vocabulary(&vocabulary).expect("compiler")
    }

    /// `d0 → d1 → … → d<n>` through `properties`: legitimate, and each link nests one more
    /// definition inside llguidance's compiler.
    fn ref_chain(n: usize) -> Value {
        let mut defs: Map<String, Value> = (0..n)
            .map(|i| {
                let next = json!({"$ref": format!("#/$defs/d{}", i + 1)});
                (
                    format!("d{i}"),
                    json!({"type": "object", "properties": {"a": next}}),
                )
            })
            .collect();
        defs.insert(format!("d{n}"), json!({"type": "integer"}));
        json!({"$defs": defs, "$ref": "#/$defs/d0"})
    }

    /// Compiling a 256-link chain overflows a 2 MiB stack (the model thread's): the compiler
    /// runs on a thread of its own with a large stack, so this test's own thread is given the
    /// model thread's size.
    #[test]
    fn long_ref_chains_compile_off_the_calling_threads_stack() {
        let worker = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                let compiler = compiler();
                for n in [8, 256, 1000] {
                    let constraint = OutputConstraint::JsonSchema(ref_chain(n));
                    compiler.parser(&constraint).expect("compiles");
                }
            })
            .expect("thread");
        worker.join().expect("no overflow");
    }

    #[test]
    fn unenforceable_schemas_are_the_callers_error() {
        let constraint = OutputConstraint::JsonSchema(json!({"type": "frobnicate"}));
        let Err(error) = compiler().parser(&constraint) else {
            panic!("an unknown type compiled");
        };
        assert!(
            error.message.contains("cannot be enforced"),
            "{}",
            error.message
        );
    }
}
