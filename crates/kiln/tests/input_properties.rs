//! Property test against the real server: whatever JSON arrives, the answer is a success or a
//! Workers AI error envelope with a 4xx status — never a 5xx, a panic or a hang.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-1_000_000_000_000i64..1_000_000_000_000).prop_map(|n| json!(n)),
        (-1.0e6f64..1.0e6).prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

const KEYS: [&str; 14] = [
    "prompt",
    "messages",
    "raw",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stream",
    "stop",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "text",
    "pooling",
];

/// Objects built from the real input keys, so that many reach the engine, with `max_tokens`
/// kept small so that the valid ones finish quickly.
fn request_body() -> impl Strategy<Value = Value> {
    let field = (
        prop::sample::select(KEYS.to_vec()),
        prop_oneof![any_json(), scalar()],
    );
    let message = (
        prop::sample::select(vec!["user", "system", "assistant", "tool", "x"]),
        scalar(),
    )
        .prop_map(|(role, content)| json!({"role": role, "content": content}));
    (
        prop::collection::vec(field, 0..5),
        prop::option::of(prop::collection::vec(message, 0..3)),
        prop_oneof![
            Just(json!(1)),
            Just(json!(3)),
            Just(json!(-1)),
            Just(json!(0)),
            scalar()
        ],
    )
        .prop_map(|(fields, messages, max_tokens)| {
            let mut object: Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            if let Some(messages) = messages {
                object.insert("messages".into(), Value::Array(messages));
            }
            object.insert("max_tokens".into(), max_tokens);
            Value::Object(object)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_input_gets_success_or_a_4xx_envelope(
        body in request_body(),
        embeddings in any::<bool>(),
    ) {
        let model = if embeddings { "@cf/baai/bge-small-en-v1.5" } else { "@cf/meta/llama-3.1-8b-instruct" };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (status, text) = runtime.block_on(async {
            let response = client().post(run_url(model)).json(&body).send().await.expect("sent");
            let status = response.status().as_u16();
            (status, response.text().await.expect("body"))
        });
        prop_assert!(status == 200 || (400..500).contains(&status), "{status} for {body}: {text}");
        if status != 200 {
            let envelope: Value = serde_json::from_str(&text).expect("error envelope is JSON");
            let (code, message) = assert_error_envelope(&envelope);
            prop_assert!(code >= 3000 && !message.is_empty());
        }
    }
}
