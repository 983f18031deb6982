use super::*;
use proptest::prelude::*;
use serde_json::json;

fn indexes() -> BTreeMap<String, MetadataIndexType> {
    [
        ("genre", MetadataIndexType::String),
        ("year", MetadataIndexType::Number),
        ("draft", MetadataIndexType::Boolean),
        ("pandas.nice", MetadataIndexType::Number),
    ]
    .into_iter()
    .map(|(name, kind)| (name.to_owned(), kind))
    .collect()
}

fn props(metadata: Value) -> IndexedProperties {
    let list: Vec<(String, MetadataIndexType)> = indexes().into_iter().collect();
    indexed_properties(metadata.as_object(), &list)
}

fn holds(filter: Value, metadata: Value) -> bool {
    Filter::parse(&filter, &indexes())
        .unwrap()
        .matches(&props(metadata))
}

fn parse_error(filter: Value) -> String {
    Filter::parse(&filter, &indexes()).unwrap_err().message
}

#[test]
fn equality_implicit_and_explicit() {
    let doc = json!({"genre": "drama", "year": 1999, "draft": false});
    assert!(holds(json!({"genre": "drama"}), doc.clone()));
    assert!(holds(json!({"genre": {"$eq": "drama"}}), doc.clone()));
    assert!(!holds(json!({"genre": "comedy"}), doc.clone()));
    assert!(holds(json!({"year": 1999.0}), doc.clone()));
    assert!(holds(json!({"draft": false}), doc.clone()));
    assert!(holds(json!({"genre": {"$ne": "comedy"}}), doc.clone()));
    assert!(!holds(json!({"genre": {"$ne": "drama"}}), doc.clone()));
    // implicit AND of several keys
    assert!(holds(json!({"genre": "drama", "year": 1999}), doc.clone()));
    assert!(!holds(json!({"genre": "drama", "year": 2000}), doc));
}

#[test]
fn null_and_missing_values() {
    let doc = json!({"genre": "drama"});
    assert!(holds(json!({"year": null}), doc.clone()));
    assert!(holds(json!({"year": {"$ne": 3}}), doc.clone()));
    assert!(!holds(json!({"year": {"$ne": null}}), doc.clone()));
    assert!(!holds(json!({"year": {"$gte": 0}}), doc.clone()));
    // a value of the wrong type is not indexed at all
    assert!(holds(json!({"year": null}), json!({"year": "1999"})));
}

#[test]
fn in_and_not_in() {
    let doc = json!({"genre": "drama", "year": 1999});
    assert!(holds(
        json!({"genre": {"$in": ["comedy", "drama"]}}),
        doc.clone()
    ));
    assert!(!holds(json!({"genre": {"$in": ["comedy"]}}), doc.clone()));
    assert!(!holds(json!({"genre": {"$in": []}}), doc.clone()));
    assert!(holds(json!({"genre": {"$nin": ["comedy"]}}), doc.clone()));
    assert!(!holds(
        json!({"genre": {"$nin": ["drama", 1]}}),
        doc.clone()
    ));
    assert!(holds(json!({"year": {"$in": [1, 1999]}}), doc));
}

#[test]
fn ranges_numbers_and_strings() {
    let doc = json!({"genre": "network", "year": 1999});
    assert!(holds(json!({"year": {"$gt": 1998}}), doc.clone()));
    assert!(!holds(json!({"year": {"$gt": 1999}}), doc.clone()));
    assert!(holds(json!({"year": {"$gte": 1999}}), doc.clone()));
    assert!(holds(json!({"year": {"$lt": 2000}}), doc.clone()));
    assert!(!holds(json!({"year": {"$lt": 1999}}), doc.clone()));
    assert!(holds(json!({"year": {"$lte": 1999}}), doc.clone()));
    assert!(holds(
        json!({"year": {"$gte": 1990, "$lt": 2000}}),
        doc.clone()
    ));
    assert!(!holds(
        json!({"year": {"$gte": 2000, "$lt": 2010}}),
        doc.clone()
    ));
    // the prefix idiom of spec §5.5
    assert!(holds(
        json!({"genre": {"$gte": "net", "$lt": "neu"}}),
        doc.clone()
    ));
    assert!(!holds(
        json!({"genre": {"$gte": "neu", "$lt": "nev"}}),
        doc.clone()
    ));
    // a string bound never matches a number
    assert!(!holds(json!({"year": {"$gte": "1"}}), doc));
}

#[test]
fn nested_keys_by_dots() {
    assert!(holds(
        json!({"pandas.nice": 42}),
        json!({"pandas": {"nice": 42}})
    ));
    assert!(!holds(
        json!({"pandas.nice": 42}),
        json!({"pandas": {"nice": 41}})
    ));
    assert!(!holds(json!({"pandas.nice": 42}), json!({"pandas": 42})));
}

#[test]
fn strings_compare_on_their_first_64_bytes() {
    let long = format!("{}{}", "é".repeat(40), "tail");
    let properties = props(json!({ "genre": long }));
    let IndexedValue::String(stored) = &properties[0].1 else {
        panic!("genre is a string index")
    };
    assert_eq!(stored.len(), 64);
    assert!(holds(
        json!({"genre": long.clone()}),
        json!({ "genre": long })
    ));
    assert!(holds(
        json!({"genre": "é".repeat(32)}),
        json!({ "genre": "é".repeat(40) })
    ));
}

#[test]
fn errors_name_the_problem() {
    let cases = [
        (json!({}), "non-empty"),
        (json!([1]), "non-empty"),
        (
            json!({"title": "x"}),
            "filter.title: property \"title\" has no metadata index",
        ),
        (json!({"$genre": "x"}), "must not start with '$'"),
        (json!({"ge\"nre": "x"}), "must not contain"),
        (json!({"pandas..nice": 1}), "non-empty nested keys"),
        (json!({"": 1}), "must not be empty"),
        (json!({"genre": {"$regex": "x"}}), "unknown operator"),
        (
            json!({"genre": {"$eq": "x", "$ne": "y"}}),
            "cannot be combined",
        ),
        (json!({"year": {"$gt": 1, "$gte": 2}}), "one lower"),
        (json!({"year": {"$in": 1}}), "$in/$nin take an array"),
        (
            json!({"year": {"$gt": true}}),
            "$gt takes a string or a number",
        ),
        (json!({"genre": ["a"]}), "use {\"$in\""),
        (json!({"genre": {"$eq": {"a": 1}}}), "$eq/$ne values"),
        (json!({"pandas": {"nice": 1}}), "has no metadata index"),
    ];
    for (filter, expected) in cases {
        let message = parse_error(filter.clone());
        assert!(message.contains(expected), "{filter}: {message}");
    }
    let long_key = "k".repeat(513);
    assert!(parse_error(json!({ long_key: 1 })).contains("512"));
}

#[test]
fn size_limit_is_2048_bytes_of_compact_json() {
    let values: Vec<String> = (0..300).map(|n| format!("value{n}")).collect();
    let message = parse_error(json!({"genre": {"$in": values}}));
    assert!(message.contains("2048"), "{message}");
    let fits: Vec<String> = (0..10).map(|n| format!("v{n}")).collect();
    assert!(Filter::parse(&json!({"genre": {"$in": fits}}), &indexes()).is_ok());
}

proptest! {
    #[test]
    fn truncation_is_a_char_boundary_prefix(text in "\\PC{0,80}", max in 0usize..100) {
        let cut = truncate_utf8(&text, max);
        prop_assert!(cut.len() <= max);
        prop_assert!(text.starts_with(cut));
        prop_assert!(cut.len() + 4 > max.min(text.len()));
    }

    #[test]
    fn parsing_arbitrary_filters_never_panics(key in "[a-z.$\"]{0,8}", op in "\\$[a-z]{0,4}", n in any::<i32>()) {
        let _ = Filter::parse(&json!({ key.clone(): { op: n } }), &indexes());
        let _ = Filter::parse(&json!({ key: n }), &indexes());
    }
}
