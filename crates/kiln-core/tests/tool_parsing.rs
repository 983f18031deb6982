//! Tool-call parsing meets model output, which can be anything: it must never panic, must only
//! report calls that are really there, and must keep text that is not a call.

use kiln_core::ToolSyntax;
use proptest::prelude::*;

const SYNTAXES: [ToolSyntax; 3] = [
    ToolSyntax::Hermes,
    ToolSyntax::Llama3Json,
    ToolSyntax::Mistral,
];

/// Text made of pieces a model might write, including fragments of call syntax.
fn model_output() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<tool_call>".to_owned()),
        Just("</tool_call>".to_owned()),
        Just("[TOOL_CALLS]".to_owned()),
        Just("<|python_tag|>".to_owned()),
        Just("{\"name\": \"f\", \"arguments\": {\"x\": 1}}".to_owned()),
        Just("{\"name\": \"g\", \"parameters\": {}}".to_owned()),
        Just(";".to_owned()),
        Just("\n".to_owned()),
        Just("{".to_owned()),
        "\\PC{0,12}",
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn parsing_never_panics_and_calls_have_names(text in model_output()) {
        for syntax in SYNTAXES {
            let parsed = syntax.parse(&text, "p");
            for call in &parsed.calls {
                prop_assert!(!call.name.is_empty());
                prop_assert!(call.id.starts_with("call_p"));
            }
            if parsed.calls.is_empty() {
                // No call found: the text comes back as it was.
                prop_assert_eq!(&parsed.content, &text);
            }
        }
    }

    #[test]
    fn plain_prose_is_never_a_call(text in "[a-zA-Z ,.!?]{0,200}") {
        for syntax in SYNTAXES {
            let parsed = syntax.parse(&text, "p");
            prop_assert!(parsed.calls.is_empty());
            prop_assert_eq!(parsed.content, text.clone());
        }
    }
}
