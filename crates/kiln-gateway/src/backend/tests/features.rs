//! The features kept beside gateways, on every backend: custom providers, stored keys,
//! datasets, evaluations and dynamic routes; and, on a shared database, seen by every node.

use kiln_core::ErrorKind;
use serde_json::{json, Value};

use super::{journaled, on_every_backend, on_shared_backends, write, NewDb};

on_every_backend!(
    custom_providers,
    stored_keys,
    datasets_and_evaluations,
    dynamic_routes,
    deleting_a_gateway_deletes_its_features,
);

mod cluster {
    use super::*;

    on_shared_backends!(keys_providers_and_routes_made_on_one_node_serve_every_node);
}

fn routed_to(model: &str) -> Value {
    json!([
        {"id": "start", "type": "start", "outputs": {"next": {"elementId": "model"}}},
        {"id": "model", "type": "model", "outputs": {"success": {"elementId": "end"}},
         "properties": {"provider": "workers-ai", "model": model, "timeout": 5000, "retries": 1}},
        {"id": "end", "type": "end", "outputs": {}},
    ])
}

fn custom_providers(new_db: NewDb) {
    let test = new_db();
    let store = test.open();
    let body = json!({"name": "Up", "slug": "up", "base_url": "http://127.0.0.1:9/v1"});
    let created = store.create_provider("a", &body).expect("created");
    let conflict = store.create_provider("a", &body).unwrap_err();
    assert_eq!(conflict.kind, ErrorKind::Conflict);
    store
        .create_provider(
            "a",
            &json!({"name": "Alpha", "slug": "alpha", "base_url": "https://x"}),
        )
        .expect("second");
    let slugs: Vec<String> = store
        .list_providers("a")
        .expect("list")
        .into_iter()
        .map(|provider| provider.slug)
        .collect();
    assert_eq!(slugs, ["alpha", "up"], "by slug");
    assert_eq!(
        store.get_provider("a", &created.id).expect("by id"),
        created
    );
    let disabled = store
        .update_provider("a", "up", &json!({"enable": false}))
        .expect("updated");
    assert!(!disabled.enable);
    assert_eq!(store.provider_by_slug("a", "up").expect("lookup"), None);
    assert!(store
        .provider_by_slug("a", "alpha")
        .expect("lookup")
        .is_some());
    store.delete_provider("a", "up").expect("deleted");
    assert_eq!(
        store.get_provider("a", "up").unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert!(store.list_providers("b").expect("list").is_empty());
}

fn stored_keys(new_db: NewDb) {
    let test = new_db();
    let store = test.open();
    store.create("a", &json!({"id": "g"})).expect("gateway");
    let key = |secret: &str, alias: &str, default: bool| {
        json!({"provider_slug": "openai", "alias": alias, "default_config": default,
               "secret": secret, "rate_limit": 5, "rate_limit_period": 60})
    };
    let prod = store
        .create_provider_config("a", "g", &key("sk-prod-0123456789abcdef", "prod", true))
        .expect("stored");
    assert_eq!(prod.secret_preview, "sk-****cdef");
    let conflict = store
        .create_provider_config("a", "g", &key("sk-other-000000000000", "prod", false))
        .unwrap_err();
    assert_eq!(conflict.kind, ErrorKind::Conflict);
    let next = store
        .create_provider_config("a", "g", &key("sk-next-0123456789abcdef", "next", true))
        .expect("a new default");
    let listed = store.list_provider_configs("a", "g").expect("list");
    let defaults: Vec<(String, bool)> = listed
        .iter()
        .map(|config| (config.alias.clone(), config.default_config))
        .collect();
    assert_eq!(
        defaults,
        [("prod".to_owned(), false), ("next".to_owned(), true)],
        "oldest first; the newest default took over"
    );
    let found = store
        .provider_key("a", "g", &["openai"], None)
        .expect("lookup")
        .expect("the default key");
    assert_eq!(
        (found.config_id.as_str(), found.secret.as_str()),
        (next.id.as_str(), "sk-next-0123456789abcdef")
    );
    assert_eq!(found.rate_limit.map(|limit| limit.limit), Some(5));
    let by_alias = store
        .provider_key("a", "g", &["nope", "openai"], Some("prod"))
        .expect("lookup")
        .expect("by alias");
    assert_eq!(by_alias.secret, "sk-prod-0123456789abcdef");
    let unknown = store.provider_key("a", "g", &["openai"], Some("dev"));
    assert_eq!(unknown.unwrap_err().kind, ErrorKind::BadInput);
    store
        .delete_provider_config("a", "g", &next.id)
        .expect("deleted");
    assert_eq!(
        store
            .provider_key("a", "g", &["openai"], None)
            .expect("lookup"),
        None
    );
    let missing = store.list_provider_configs("a", "nope").unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound);
}

fn datasets_and_evaluations(new_db: NewDb) {
    let test = new_db();
    let store = test.open();
    store.create("a", &json!({"id": "g"})).expect("gateway");
    for (n, (model, cost)) in [("m1", Some(0.5)), ("m1", None), ("m2", Some(1.5))]
        .into_iter()
        .enumerate()
    {
        let mut write = write(&format!("01EVAL{n:04}"), 1_795_737_600_000 + n as i64);
        write.record.model = model.into();
        write.record.cost = cost;
        write.record.duration_ms = 100 * (n as u64 + 1);
        journaled(&store, write);
    }
    store
        .patch_log("a", "g", "01EVAL0000", &json!({"feedback": 1}))
        .expect("rated");
    let filter = |model: &str| json!([{"key": "model", "operator": "eq", "value": [model]}]);
    let m1 = store
        .create_dataset("a", "g", &json!({"name": "m1", "filters": filter("m1")}))
        .expect("dataset");
    let m2 = store
        .create_dataset("a", "g", &json!({"name": "m2", "filters": filter("m2")}))
        .expect("dataset");
    let renamed = store
        .update_dataset(
            "a",
            "g",
            &m2.id,
            &json!({"name": "second", "filters": filter("m2")}),
        )
        .expect("updated");
    assert_eq!(renamed.name, "second");
    assert_eq!(renamed.created_at, m2.created_at);
    let names: Vec<String> = store
        .list_datasets("a", "g")
        .expect("list")
        .into_iter()
        .map(|dataset| dataset.name)
        .collect();
    assert_eq!(names, ["m1", "second"]);

    let evaluation = store
        .create_evaluation(
            "a",
            "g",
            &json!({"name": "e", "dataset_ids": [m1.id, m2.id],
                    "evaluation_type_ids": ["cost", "speed", "human-feedback"]}),
        )
        .expect("evaluated");
    assert_eq!(evaluation["total_logs"], 3);
    let result = |type_id: &str| {
        evaluation["results"]
            .as_array()
            .and_then(|results| {
                results
                    .iter()
                    .find(|result| result["evaluation_type_id"] == type_id)
            })
            .map(|result| (result["result"].clone(), result["total_logs"].clone()))
    };
    assert_eq!(result("cost"), Some((json!("1"), json!(2))));
    assert_eq!(result("speed"), Some((json!("200"), json!(3))));
    assert_eq!(result("human-feedback"), Some((json!("100"), json!(1))));
    let id = evaluation["id"].as_str().expect("id").to_owned();
    assert_eq!(
        store.get_evaluation("a", "g", &id).expect("stored"),
        evaluation
    );
    assert_eq!(store.list_evaluations("a", "g").expect("list").len(), 1);
    store.delete_evaluation("a", "g", &id).expect("deleted");
    assert_eq!(
        store.get_evaluation("a", "g", &id).unwrap_err().kind,
        ErrorKind::NotFound
    );
    store.delete_dataset("a", "g", &m1.id).expect("deleted");
    assert_eq!(
        store.get_dataset("a", "g", &m1.id).unwrap_err().kind,
        ErrorKind::NotFound
    );
}

fn dynamic_routes(new_db: NewDb) {
    let test = new_db();
    let store = test.open();
    store.create("a", &json!({"id": "g"})).expect("gateway");
    let route = store
        .create_dynamic_route(
            "a",
            "g",
            &json!({"name": "r", "elements": routed_to("@cf/one")}),
        )
        .expect("created");
    let id = route["id"].as_str().expect("id").to_owned();
    let first = route["version"]["version_id"].clone();
    let taken = store
        .create_dynamic_route(
            "a",
            "g",
            &json!({"name": "r", "elements": routed_to("@cf/x")}),
        )
        .unwrap_err();
    assert_eq!(taken.kind, ErrorKind::Conflict);
    let version = store
        .create_route_version("a", "g", &id, &json!({"elements": routed_to("@cf/two")}))
        .expect("version");
    assert_eq!(version["active"], "false");
    let version_id = version["version_id"].as_str().expect("id").to_owned();
    assert_eq!(
        json!(
            store
                .runnable_route("a", "g", "r")
                .expect("runs")
                .version_id
        ),
        first
    );
    let deployed = store
        .create_route_deployment("a", "g", &id, &json!({"version_id": version_id}))
        .expect("deployed");
    assert_eq!(deployed["elements"], routed_to("@cf/two"));
    assert_eq!(
        store
            .runnable_route("a", "g", "r")
            .expect("runs")
            .version_id,
        version_id
    );
    let active: Vec<Value> = store
        .list_route_versions("a", "g", &id)
        .expect("versions")
        .iter()
        .map(|version| version["active"].clone())
        .collect();
    assert_eq!(active, [json!("false"), json!("true")]);
    assert_eq!(
        store
            .list_route_deployments("a", "g", &id)
            .expect("list")
            .len(),
        2
    );
    let shown = store
        .get_route_version("a", "g", &id, &version_id)
        .expect("version");
    assert_eq!(shown["active"], "true");
    let renamed = store
        .rename_dynamic_route("a", "g", &id, &json!({"name": "renamed"}))
        .expect("renamed");
    assert_eq!(renamed["name"], "renamed");
    assert_eq!(store.list_dynamic_routes("a", "g").expect("list").len(), 1);
    assert_eq!(
        store.runnable_route("a", "g", "r").unwrap_err().kind,
        ErrorKind::NotFound
    );
    store.delete_dynamic_route("a", "g", &id).expect("deleted");
    assert_eq!(
        store.get_dynamic_route("a", "g", &id).unwrap_err().kind,
        ErrorKind::NotFound
    );
}

fn deleting_a_gateway_deletes_its_features(new_db: NewDb) {
    let test = new_db();
    let store = test.open();
    store.create("a", &json!({"id": "g"})).expect("gateway");
    store
        .create_provider_config(
            "a",
            "g",
            &json!({"provider_slug": "openai", "alias": "default", "secret": "sk-0123456789abcdef"}),
        )
        .expect("stored");
    store
        .create_dataset("a", "g", &json!({"name": "d"}))
        .expect("dataset");
    store
        .create_dynamic_route(
            "a",
            "g",
            &json!({"name": "r", "elements": routed_to("@cf/m")}),
        )
        .expect("route");
    store.delete("a", "g").expect("deleted");
    store.create("a", &json!({"id": "g"})).expect("made again");
    assert!(store
        .list_provider_configs("a", "g")
        .expect("list")
        .is_empty());
    assert!(store.list_datasets("a", "g").expect("list").is_empty());
    assert!(store
        .list_dynamic_routes("a", "g")
        .expect("list")
        .is_empty());
}

fn keys_providers_and_routes_made_on_one_node_serve_every_node(new_db: NewDb) {
    let test = new_db();
    let a = test.open();
    let b = test.another_node();
    a.create("a", &json!({"id": "g"})).expect("gateway");
    a.create_provider_config(
        "a",
        "g",
        &json!({"provider_slug": "openai", "alias": "default", "secret": "sk-0123456789abcdef"}),
    )
    .expect("stored on a");
    let key = b
        .provider_key("a", "g", &["openai"], None)
        .expect("lookup on b")
        .expect("the key stored through a");
    assert_eq!(key.secret, "sk-0123456789abcdef");
    a.create_provider(
        "a",
        &json!({"name": "Up", "slug": "up", "base_url": "http://127.0.0.1:9/v1"}),
    )
    .expect("provider on a");
    assert!(b
        .provider_by_slug("a", "up")
        .expect("lookup on b")
        .is_some());
    a.create_dynamic_route(
        "a",
        "g",
        &json!({"name": "r", "elements": routed_to("@cf/m")}),
    )
    .expect("route on a");
    assert!(b.runnable_route("a", "g", "r").is_ok(), "b cannot run it");
}
