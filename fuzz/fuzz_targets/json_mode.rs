//! JSON mode: a native input (`response_format` / `guided_json`) or an OpenAI `response_format`
//! compiled into a validator, its engine constraint built, and a few outputs checked against it.
#![no_main]
use kiln_core::limits::SchemaLimits;
use kiln_core::ErrorKind;
use kiln_fuzz::json_mode::JsonMode;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const OUTPUTS: [&str; 6] = ["{}", "[]", "null", "{\"a\": [1, \"x\", true]}", "\"text\"", "not json"];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let Ok(input) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let limits = SchemaLimits::default();
    let compiled = if mode & 1 == 0 {
        JsonMode::from_native(&input, &limits)
    } else {
        JsonMode::from_response_format(&input, "response_format", &limits)
    };
    match compiled {
        Ok(Some(json_mode)) => {
            let _ = json_mode.constraint();
            for output in OUTPUTS {
                if let Err(error) = json_mode.check(output) {
                    assert_eq!(error.kind, ErrorKind::BadInput);
                }
            }
        }
        Ok(None) => {}
        Err(error) => assert_eq!(error.kind, ErrorKind::BadInput, "{}", error.message),
    }
});
