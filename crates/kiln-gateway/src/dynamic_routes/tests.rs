use kiln_core::ErrorKind;
use serde_json::{json, Value};

use super::*;
use crate::{GatewayStore, RateLimitTechnique};

fn start(next: &str) -> Value {
    json!({"id": "start", "type": "start", "outputs": {"next": {"elementId": next}}})
}

fn model(id: &str, provider: &str, name: &str, fallback: Option<&str>) -> Value {
    let mut outputs = json!({"success": {"elementId": "end"}});
    if let Some(fallback) = fallback {
        outputs["fallback"] = json!({"elementId": fallback});
    }
    json!({"id": id, "type": "model", "outputs": outputs,
           "properties": {"provider": provider, "model": name, "timeout": 5000, "retries": 1}})
}

fn end() -> Value {
    json!({"id": "end", "type": "end", "outputs": {}})
}

/// Free users to `small`, everyone else to `large`.
fn by_plan() -> Value {
    json!([
        start("plan"),
        {"id": "plan", "type": "conditional",
         "properties": {"conditions": {"metadata.plan": {"$eq": "free"}}},
         "outputs": {"true": {"elementId": "small"}, "false": {"elementId": "large"}}},
        model("small", "workers-ai", "@cf/small", None),
        model("large", "workers-ai", "@cf/large", Some("small")),
        end(),
    ])
}

fn refused(elements: Value) -> String {
    let error = Graph::parse(&elements).expect_err("refused");
    assert_eq!(error.kind, ErrorKind::BadInput, "{}", error.message);
    error.message
}

#[test]
fn well_formed_routes_parse() {
    let graph = Graph::parse(&by_plan()).expect("parses");
    assert_eq!(graph.element(graph.start()).id, "start");
    // The spec's spellings of the rate element.
    let spec_rate = json!([
        start("limit"),
        {"id": "limit", "type": "rate_limit",
         "properties": {"key": "metadata.user", "limit": 2, "interval": 60,
                        "technique": "sliding", "limitType": "cost"},
         "outputs": {"success": {"elementId": "m"}, "fallback": {"elementId": "end"}}},
        model("m", "custom-local", "x", None),
        end(),
    ]);
    let graph = Graph::parse(&spec_rate).expect("parses");
    let Kind::RateLimit { rule, .. } = &graph.element(1).kind else {
        panic!("a rate limit");
    };
    assert_eq!(rule.window_secs, 60);
    assert_eq!(rule.technique, RateLimitTechnique::Sliding);
    assert!(rule.cost);
}

#[test]
fn validation_names_the_element_at_fault() {
    let mut unknown = by_plan();
    unknown[2]["type"] = json!("teleport");
    assert!(refused(unknown).contains("element \"small\": unknown type \"teleport\""));

    let mut dangling = by_plan();
    dangling[1]["outputs"]["true"]["elementId"] = json!("nowhere");
    let message = refused(dangling);
    assert!(message.contains("element \"plan\""), "{message}");
    assert!(message.contains("\"nowhere\""), "{message}");

    let no_start = json!([model("m", "workers-ai", "x", None), end()]);
    assert!(refused(no_start).contains("no element of type 'start'"));

    let mut two_starts = by_plan();
    two_starts
        .as_array_mut()
        .expect("a list")
        .push(json!({"id": "again", "type": "start", "outputs": {"next": {"elementId": "small"}}}));
    let message = refused(two_starts);
    assert!(message.contains("\"start\" and \"again\""), "{message}");

    let mut duplicate = by_plan();
    duplicate[3]["id"] = json!("small");
    assert!(refused(duplicate).contains("element \"small\": another element"));

    let mut missing_output = by_plan();
    missing_output[1]["outputs"]
        .as_object_mut()
        .expect("outputs")
        .remove("false");
    assert!(refused(missing_output).contains("element \"plan\": output \"false\" is required"));

    let mut extra_output = by_plan();
    extra_output[4]["outputs"] = json!({"next": {"elementId": "start"}});
    assert!(refused(extra_output).contains("element \"end\": unknown output \"next\""));

    let mut bad_operator = by_plan();
    bad_operator[1]["properties"]["conditions"] = json!({"metadata.plan": {"$regex": "f.*"}});
    assert!(refused(bad_operator).contains("element \"plan\""));

    let mut bad_field = by_plan();
    bad_field[1]["properties"]["conditions"] = json!({"plan": "free"});
    assert!(refused(bad_field).contains("metadata."));

    let mut unreachable = by_plan();
    unreachable[2]["properties"]["provider"] = json!("openai");
    assert!(refused(unreachable).contains("element \"small\": provider \"openai\""));

    let mut retries = by_plan();
    retries[2]["properties"]["retries"] = json!(50);
    assert!(refused(retries).contains("'properties.retries'"));

    let not_a_list = json!({"id": "start"});
    assert!(refused(not_a_list).contains("array"));
    assert!(refused(json!([])).contains("1 to 64"));
}

#[test]
fn cycles_and_size_are_bounded() {
    let cycle = json!([
        start("a"),
        model("a", "workers-ai", "x", Some("b")),
        model("b", "workers-ai", "y", Some("a")),
        end(),
    ]);
    let message = refused(cycle);
    assert!(message.contains("cycle"), "{message}");

    let mut many = vec![start("m0")];
    for i in 0..MAX_ELEMENTS {
        many.push(model(&format!("m{i}"), "workers-ai", "x", None));
    }
    assert!(refused(Value::from(many)).contains("1 to 64"));

    let branches: serde_json::Map<String, Value> = (0..6)
        .map(|i| (format!("{}%", 10 + i), json!({"elementId": "end"})))
        .collect();
    let split = json!([
        start("split"),
        {"id": "split", "type": "percentage", "outputs": branches},
        end(),
    ]);
    assert!(refused(split).contains("1 to 5 percentage outputs"));

    let short = json!([
        start("split"),
        {"id": "split", "type": "percentage", "outputs": {"30%": {"elementId": "end"}}},
        end(),
    ]);
    assert!(refused(short).contains("add an 'else'"));
    let over = json!([
        start("split"),
        {"id": "split", "type": "percentage",
         "outputs": {"60%": {"elementId": "end"}, "50%": {"elementId": "end"}}},
        end(),
    ]);
    assert!(refused(over).contains("more than 100%"));
}

fn holds(condition: Value, context: &Value) -> bool {
    Condition::parse(&condition)
        .expect("a condition")
        .holds(context)
}

#[test]
fn conditions_evaluate_like_mongo() {
    let context = json!({
        "metadata": {"plan": "free", "tier": 2, "beta": true},
        "body": {"model": "dynamic/x", "max_tokens": 100, "options": {"lang": "fr"}},
    });
    assert!(holds(json!({"metadata.plan": "free"}), &context));
    assert!(holds(json!({"metadata.plan": {"$eq": "free"}}), &context));
    assert!(!holds(json!({"metadata.plan": {"$eq": "pro"}}), &context));
    assert!(holds(json!({"metadata.plan": {"$ne": "pro"}}), &context));
    // A missing field is "not equal" and "not in", and nothing else.
    assert!(holds(json!({"metadata.absent": {"$ne": 1}}), &context));
    assert!(holds(json!({"metadata.absent": {"$nin": [1]}}), &context));
    assert!(!holds(json!({"metadata.absent": {"$in": [1]}}), &context));
    assert!(!holds(json!({"metadata.absent": {"$lt": 1}}), &context));
    assert!(holds(json!({"metadata.tier": {"$in": [1, 2.0]}}), &context));
    assert!(!holds(json!({"metadata.tier": {"$nin": [2]}}), &context));
    assert!(holds(
        json!({"metadata.tier": {"$gt": 1, "$lte": 2}}),
        &context
    ));
    assert!(!holds(json!({"metadata.tier": {"$gte": 3}}), &context));
    assert!(holds(json!({"metadata.plan": {"$lt": "pro"}}), &context));
    // Numbers and strings do not order against each other.
    assert!(!holds(json!({"metadata.tier": {"$lt": "9"}}), &context));
    assert!(holds(json!({"metadata.beta": true}), &context));
    assert!(holds(json!({"body.options.lang": "fr"}), &context));
    assert!(holds(
        json!({"$or": [{"metadata.plan": "pro"}, {"body.max_tokens": {"$gte": 100}}]}),
        &context
    ));
    assert!(!holds(
        json!({"$and": [{"metadata.plan": "free"}, {"metadata.beta": false}]}),
        &context
    ));
    // Several keys: all must hold.
    assert!(!holds(
        json!({"metadata.plan": "free", "metadata.tier": 3}),
        &context
    ));
    assert!(holds(json!({}), &context));
}

#[test]
fn malformed_conditions_are_refused() {
    for bad in [
        json!([]),
        json!({"$and": []}),
        json!({"$not": {"metadata.a": 1}}),
        json!({"metadata.a": {"$in": 1}}),
        json!({"metadata.a": {"$gt": true}}),
        json!({"metadata.a": {"$eq": [1]}}),
        json!({"metadata.a": [1]}),
        json!({"metadata.": 1}),
        json!({"headers.a": 1}),
        json!({"metadata.a": {}}),
    ] {
        assert!(Condition::parse(&bad).is_err(), "{bad}");
    }
    let mut deep = json!({"metadata.a": 1});
    for _ in 0..10 {
        deep = json!({"$and": [deep]});
    }
    assert!(Condition::parse(&deep).is_err());
}

/// Surroundings with given rolls and a request allowance per rate element.
struct Fixed {
    rolls: Vec<f64>,
    allowance: u64,
    counted: Vec<String>,
}

impl Surroundings for Fixed {
    fn roll(&mut self) -> f64 {
        self.rolls.remove(0)
    }

    fn admit(&mut self, element: &str, _rule: &RateRule, key: &str) -> bool {
        self.counted.push(format!("{element}:{key}"));
        let seen = self.counted.len() as u64;
        seen <= self.allowance
    }
}

fn fixed(rolls: &[f64], allowance: u64) -> Fixed {
    Fixed {
        rolls: rolls.to_vec(),
        allowance,
        counted: Vec::new(),
    }
}

fn model_reached(reached: Reached<'_>) -> (&str, Option<usize>) {
    match reached {
        Reached::Model { id, fallback, .. } => (id, fallback),
        other => panic!("a model, not {other:?}"),
    }
}

#[test]
fn walks_follow_conditions_and_fallbacks() {
    let graph = Graph::parse(&by_plan()).expect("parses");
    let mut budget = MAX_STEPS;
    let free = json!({"metadata": {"plan": "free"}, "body": {}});
    let reached = graph.advance(graph.start(), &free, &mut fixed(&[], 0), &mut budget);
    let (id, fallback) = model_reached(reached.expect("walks"));
    assert_eq!((id, fallback), ("small", None));

    let pro = json!({"metadata": {"plan": "pro"}, "body": {}});
    let reached = graph.advance(graph.start(), &pro, &mut fixed(&[], 0), &mut budget);
    let (id, fallback) = model_reached(reached.expect("walks"));
    assert_eq!(id, "large");
    // The large model failed: its fallback goes on from the small one.
    let reached = graph.advance(
        fallback.expect("a fallback"),
        &pro,
        &mut fixed(&[], 0),
        &mut budget,
    );
    assert_eq!(model_reached(reached.expect("walks")).0, "small");
    assert_eq!(budget, MAX_STEPS - 7);

    let mut exhausted = 1;
    let error = graph
        .advance(graph.start(), &pro, &mut fixed(&[], 0), &mut exhausted)
        .expect_err("over budget");
    assert_eq!(error.kind, ErrorKind::Internal);
}

#[test]
fn percentages_split_by_the_roll() {
    let graph = Graph::parse(&json!([
        start("split"),
        {"id": "split", "type": "percentage",
         "outputs": {"20%": {"elementId": "a"}, "30%": {"elementId": "b"},
                     "else": {"elementId": "c"}}},
        model("a", "workers-ai", "a", None),
        model("b", "workers-ai", "b", None),
        model("c", "workers-ai", "c", None),
        end(),
    ]))
    .expect("parses");
    let context = json!({"metadata": {}, "body": {}});
    let mut surroundings = fixed(&[0.0, 19.9, 20.0, 49.99, 50.0, 99.9], 0);
    let picked: Vec<String> = (0..6)
        .map(|_| {
            let mut budget = MAX_STEPS;
            let reached = graph.advance(graph.start(), &context, &mut surroundings, &mut budget);
            model_reached(reached.expect("walks")).0.to_owned()
        })
        .collect();
    assert_eq!(picked, ["a", "a", "b", "b", "c", "c"]);
}

#[test]
fn rate_limits_count_per_key_and_fall_back() {
    let graph = Graph::parse(&json!([
        start("limit"),
        {"id": "limit", "type": "rate",
         "properties": {"key": "metadata.user", "limit": 1, "window": 60, "limitType": "count"},
         "outputs": {"success": {"elementId": "m"}, "fallback": {"elementId": "end"}}},
        model("m", "workers-ai", "m", None),
        end(),
    ]))
    .expect("parses");
    let context = json!({"metadata": {"user": "u1"}, "body": {}});
    let mut surroundings = fixed(&[], 1);
    let mut budget = MAX_STEPS;
    let first = graph.advance(graph.start(), &context, &mut surroundings, &mut budget);
    assert_eq!(model_reached(first.expect("walks")).0, "m");
    let second = graph.advance(graph.start(), &context, &mut surroundings, &mut budget);
    assert_eq!(
        second.expect("walks"),
        Reached::End {
            id: "end",
            refused_by: Some("limit")
        }
    );
    assert_eq!(surroundings.counted, ["limit:\"u1\"", "limit:\"u1\""]);
}

fn rule(technique: RateLimitTechnique) -> RateRule {
    RateRule {
        key: vec!["metadata".into(), "user".into()],
        limit: 2,
        window_secs: 10,
        technique,
        cost: false,
    }
}

#[test]
fn fixed_windows_reset_at_the_boundary() {
    let counters = Counters::default();
    let fixed = rule(RateLimitTechnique::Fixed);
    assert!(counters.admit("k", &fixed, 10_000));
    assert!(counters.admit("k", &fixed, 15_000));
    assert!(!counters.admit("k", &fixed, 19_999));
    assert!(counters.admit("other", &fixed, 19_999));
    assert!(counters.admit("k", &fixed, 20_000));
}

#[test]
fn sliding_windows_weigh_the_previous_window() {
    let counters = Counters::default();
    let sliding = rule(RateLimitTechnique::Sliding);
    assert!(counters.admit("k", &sliding, 10_000));
    assert!(counters.admit("k", &sliding, 11_000));
    // At 22 000 the trailing 10 s still cover 80% of the previous window: 1.6 requests.
    assert!(counters.admit("k", &sliding, 22_000)); // 1.6 < 2
    assert!(!counters.admit("k", &sliding, 22_500)); // 1.5 + 1 ≥ 2
                                                     // Two windows later nothing is left of the first.
    assert!(counters.admit("k", &sliding, 40_000));
}

fn store() -> (tempfile::TempDir, GatewayStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = GatewayStore::open(&dir.path().join("gateway.db")).expect("opens");
    store.create("acct", &json!({"id": "gw"})).expect("gateway");
    (dir, store)
}

#[test]
fn routes_keep_versions_and_deployments() {
    let (_dir, store) = store();
    let body = json!({"name": "by-plan", "elements": by_plan()});
    let route = store
        .create_dynamic_route("acct", "gw", &body)
        .expect("created");
    let id = route["id"].as_str().expect("id").to_owned();
    assert_eq!(route["name"], "by-plan");
    assert_eq!(route["gateway_id"], "gw");
    assert_eq!(route["elements"], by_plan());
    assert_eq!(route["version"]["active"], "true");
    assert_eq!(
        route["deployment"]["version_id"],
        route["version"]["version_id"]
    );
    let first_version = route["version"]["version_id"].clone();

    let conflict = store
        .create_dynamic_route("acct", "gw", &body)
        .expect_err("taken");
    assert_eq!(conflict.kind, ErrorKind::Conflict);
    let missing = store
        .create_dynamic_route("acct", "nope", &body)
        .expect_err("no gateway");
    assert_eq!(missing.kind, ErrorKind::NotFound);

    // A new version runs only once deployed.
    let mut elements = by_plan();
    elements[1]["properties"]["conditions"] = json!({"metadata.plan": "pro"});
    let version = store
        .create_route_version(
            "acct",
            "gw",
            &id,
            &json!({"elements": elements, "comment": "pro"}),
        )
        .expect("version");
    assert_eq!(version["active"], "false");
    assert_eq!(version["comment"], "pro");
    assert_eq!(version["id"], id.as_str());
    let version_id = version["version_id"].as_str().expect("id").to_owned();
    let run = store.runnable_route("acct", "gw", "by-plan").expect("runs");
    assert_eq!(run.version_id, first_version);

    let deployed = store
        .create_route_deployment("acct", "gw", &id, &json!({"version_id": version_id}))
        .expect("deployed");
    assert_eq!(deployed["elements"], elements);
    assert_eq!(
        store
            .runnable_route("acct", "gw", "by-plan")
            .expect("runs")
            .version_id,
        version_id
    );
    let versions = store
        .list_route_versions("acct", "gw", &id)
        .expect("versions");
    let active: Vec<&Value> = versions.iter().map(|v| &v["active"]).collect();
    assert_eq!(active, [&json!("false"), &json!("true")]);
    assert_eq!(
        serde_json::from_str::<Value>(versions[1]["data"].as_str().expect("data")).expect("JSON"),
        elements
    );
    assert_eq!(
        store
            .list_route_deployments("acct", "gw", &id)
            .expect("list")
            .len(),
        2
    );
    let shown = store
        .get_route_version("acct", "gw", &id, &version_id)
        .expect("version");
    assert_eq!(shown["active"], "true");

    let renamed = store
        .rename_dynamic_route("acct", "gw", &id, &json!({"name": "plans"}))
        .expect("renamed");
    assert_eq!(renamed["name"], "plans");
    assert_eq!(
        store.list_dynamic_routes("acct", "gw").expect("list").len(),
        1
    );

    for bad in [json!({"version_id": "nope"}), json!({})] {
        let error = store
            .create_route_deployment("acct", "gw", &id, &bad)
            .expect_err("refused");
        assert!(matches!(
            error.kind,
            ErrorKind::NotFound | ErrorKind::BadInput
        ));
    }
    let bad_name = store
        .create_dynamic_route("acct", "gw", &json!({"name": "a/b", "elements": by_plan()}))
        .expect_err("refused");
    assert_eq!(bad_name.kind, ErrorKind::BadInput);

    // Deleting the gateway takes its routes along.
    store
        .delete_dynamic_route("acct", "gw", &id)
        .expect("deleted");
    let gone = store
        .get_dynamic_route("acct", "gw", &id)
        .expect_err("gone");
    assert_eq!(gone.kind, ErrorKind::NotFound);
    store
        .create_dynamic_route("acct", "gw", &body)
        .expect("created again");
    store.delete("acct", "gw").expect("gateway deleted");
    store
        .create("acct", &json!({"id": "gw"}))
        .expect("gateway again");
    assert!(store
        .list_dynamic_routes("acct", "gw")
        .expect("list")
        .is_empty());
}

#[test]
fn live_counters_keep_long_keys_as_hashes() {
    let route = uuid::Uuid::new_v4().simple().to_string();
    let mut live = Live::new("acct", "gw", &route, 10_000);
    let one = rule(RateLimitTechnique::Fixed);
    let long = "x".repeat(100_000);
    assert!(live.admit("limit", &one, &long));
    assert!(live.admit("limit", &one, &long));
    assert!(!live.admit("limit", &one, &long));
    // Another value, another count; another route, another count.
    assert!(live.admit("limit", &one, &"y".repeat(100_000)));
    let mut other = Live::new("acct", "gw", "another-route", 10_000);
    assert!(other.admit("limit", &one, &long));
    for _ in 0..1000 {
        assert!((0.0..100.0).contains(&live.roll()));
    }
}
