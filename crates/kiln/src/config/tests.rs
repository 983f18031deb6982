//! The configuration's layering, defaults and validation.

use super::*;

#[test]
fn built_in_defaults_serve_the_default_models() {
    let config = ServeConfig::default()
        .resolve()
        .expect("built-in config parses");
    assert_eq!(
        config.models(),
        vec!["smollm2-135m-instruct", "all-minilm-l6-v2"]
    );
    assert_eq!(
        config.task_defaults["Text Generation"],
        "smollm2-135m-instruct"
    );
    assert_eq!(config.listen_addr().port(), 8787);
}

#[test]
fn flags_win_over_file_and_tables_merge() {
    let dir = std::env::temp_dir().join(format!("kiln-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("kiln.toml");
    std::fs::write(
        &path,
        "threads = 7\nparallel = 8\nqueue_capacity = 3\n[aliases]\n\"my-model\" = \"x\"\n",
    )
    .expect("write config");
    let flags = ServeConfig {
        config: Some(path),
        threads: Some(1),
        ..Default::default()
    };
    let config = flags.resolve().expect("config resolves");
    assert_eq!(config.threads(), 1);
    assert_eq!(config.queue_capacity(), 3);
    assert_eq!(config.parallel(), 8);
    assert_eq!(config.aliases["my-model"], "x");
    assert_eq!(
        config.aliases["@cf/meta/llama-3.1-8b-instruct"],
        "smollm2-135m-instruct"
    );
}

#[test]
fn redis_url_comes_from_the_file_unless_a_flag_names_one() {
    let file: ServeConfig =
        toml::from_str("redis_url = \"redis://127.0.0.1:6379\"\nredis_key_prefix = \"a:\"\n")
            .expect("parses");
    let flags = ServeConfig {
        redis_key_prefix: Some("b:".into()),
        ..ServeConfig::default()
    };
    let config = flags.over(file);
    assert_eq!(config.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
    assert!(config.redis_limits().expect("valid URL").is_some());
    assert!(ServeConfig::default()
        .redis_limits()
        .expect("no URL")
        .is_none());
    let bad = ServeConfig {
        redis_url: Some("http://nope".into()),
        ..ServeConfig::default()
    };
    assert!(bad.redis_limits().is_err());
}

#[test]
fn unknown_keys_are_rejected() {
    assert!(toml::from_str::<ServeConfig>("thread = 2").is_err());
}

#[test]
fn public_url_is_checked_and_defaults_to_a_dialable_listening_address() {
    let any: SocketAddr = "0.0.0.0:9000".parse().expect("address");
    let url = ServeConfig::default().public_url(any).expect("default");
    assert_eq!(url.base(), "http://127.0.0.1:9000");
    let v6: SocketAddr = "[::]:9000".parse().expect("address");
    let url = ServeConfig::default().public_url(v6).expect("default");
    assert_eq!(url.base(), "http://[::1]:9000");
    let configured = ServeConfig {
        public_url: Some("https://ai.example.com/".into()),
        ..ServeConfig::default()
    };
    let url = configured.public_url(any).expect("configured");
    assert_eq!(url.base(), "https://ai.example.com");
    for bad in ["ai.example.com", "ftp://x", "http://", "http://a b"] {
        let config = ServeConfig {
            public_url: Some(bad.into()),
            ..ServeConfig::default()
        };
        assert!(config.public_url(any).is_err(), "{bad}");
    }
}

#[test]
fn node_names_are_checked_and_postgres_holds_the_batch_queue() {
    let named = ServeConfig {
        node_name: Some("node-1.a_b".into()),
        ..Default::default()
    };
    assert_eq!(named.node_name().expect("valid"), "node-1.a_b");
    let too_long = "x".repeat(65);
    for bad in ["", "has space", "a/b", too_long.as_str()] {
        let config = ServeConfig {
            node_name: Some(bad.into()),
            ..Default::default()
        };
        assert!(config.node_name().is_err(), "{bad:?}");
    }
    assert!(is_node_name(
        &ServeConfig::default().node_name().expect("a default")
    ));

    let embedded = ServeConfig::default();
    assert!(matches!(
        embedded.batch_store().expect("store"),
        kiln_batch::BatchDb::Sqlite(_)
    ));
    let shared = ServeConfig {
        postgres_url: Some("postgres://kiln@127.0.0.1/kiln".into()),
        node_name: Some("n1".into()),
        ..Default::default()
    };
    assert!(matches!(
        shared.batch_store().expect("store"),
        kiln_batch::BatchDb::Postgres { ref node, .. } if node == "n1"
    ));
}

#[test]
fn an_empty_models_list_loads_nothing() {
    // What `KILN_MODELS=` and `--models ""` give: a node that only routes.
    let flags = ServeConfig {
        models: Some(vec![String::new()]),
        fetch: Some(vec![" ".to_owned()]),
        ..Default::default()
    };
    let config = flags.resolve().expect("config resolves");
    assert!(config.models().is_empty());
    assert!(config.fetch().is_empty());
}
