use proptest::prelude::*;

use super::*;

fn parse(pairs: &[(&str, &str)]) -> KilnResult<RequestOptions> {
    RequestOptions::from_headers(pairs.iter().copied())
}

#[test]
fn reads_every_header() {
    let options = parse(&[
        ("CF-AIG-Authorization", "Bearer tok"),
        ("cf-aig-cache-ttl", "3600"),
        ("cf-aig-skip-cache", "true"),
        ("cf-aig-cache-key", "k1"),
        ("cf-aig-metadata", r#"{"user":"u1","n":3,"ok":true}"#),
        ("cf-aig-collect-log", "false"),
        ("cf-aig-event-id", "ev-1"),
        (
            "cf-aig-custom-cost",
            r#"{"per_token_in":0.5,"per_token_out":2}"#,
        ),
        ("cf-aig-request-timeout", "1500"),
        ("cf-aig-max-attempts", "3"),
        ("cf-aig-retry-delay", "100"),
        ("cf-aig-backoff", "exponential"),
        ("x-other", "ignored"),
    ])
    .unwrap();
    assert_eq!(options.authorization.as_deref(), Some("tok"));
    assert_eq!(options.cache_ttl, Some(3600));
    assert!(options.skip_cache);
    assert_eq!(options.cache_key.as_deref(), Some("k1"));
    assert_eq!(options.metadata.as_ref().map(Map::len), Some(3));
    assert_eq!(options.collect_log, Some(false));
    assert_eq!(options.event_id.as_deref(), Some("ev-1"));
    assert_eq!(options.custom_cost.map(|c| c.cost(10, 1)), Some(7.0));
    assert_eq!(options.request_timeout, Some(Duration::from_millis(1500)));
    let plan = options.retries(&GatewayConfig::default());
    assert_eq!((plan.attempts, plan.delay_ms), (3, 100));
    assert_eq!(plan.delay_before(3), Duration::from_millis(400));
}

#[test]
fn bad_values_name_their_header() {
    for (name, value) in [
        ("cf-aig-cache-ttl", "30"),
        ("cf-aig-cache-ttl", "2592001"),
        ("cf-aig-cache-ttl", "soon"),
        ("cf-aig-skip-cache", "maybe"),
        ("cf-aig-metadata", "[1]"),
        ("cf-aig-metadata", r#"{"nested":{"a":1}}"#),
        ("cf-aig-custom-cost", r#"{"total_cost":-1}"#),
        ("cf-aig-custom-cost", r#"{"price":1}"#),
        ("cf-aig-max-attempts", "6"),
        ("cf-aig-retry-delay", "5001"),
        ("cf-aig-backoff", "random"),
        ("cf-aig-cache-key", ""),
    ] {
        let error = parse(&[(name, value)]).unwrap_err();
        assert_eq!(error.code(), 5006, "{name}: {value}");
        assert!(error.message.contains(name), "{}", error.message);
    }
}

#[test]
fn metadata_keeps_five_entries() {
    let options = parse(&[(
        "cf-aig-metadata",
        r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7}"#,
    )])
    .unwrap();
    assert_eq!(
        options.metadata.map(|m| m.len()),
        Some(MAX_METADATA_ENTRIES)
    );
}

#[test]
fn cache_ttl_precedence() {
    let gateway = GatewayConfig {
        cache_ttl: Some(600),
        ..GatewayConfig::default()
    };
    let off = GatewayConfig::default();
    let ttl = |pairs: &[(&str, &str)], gateway: &GatewayConfig| {
        parse(pairs).unwrap().cache_ttl_secs(gateway)
    };
    assert_eq!(ttl(&[], &gateway), Some(600));
    assert_eq!(ttl(&[], &off), None);
    assert_eq!(ttl(&[("cf-aig-cache-ttl", "120")], &off), Some(120));
    assert_eq!(ttl(&[("cf-aig-cache-key", "k")], &off), Some(300));
    assert_eq!(ttl(&[("cf-aig-skip-cache", "true")], &gateway), None);
    // A later pair (a universal step's own header) overrides the request's.
    assert_eq!(
        ttl(
            &[("cf-aig-cache-ttl", "3600"), ("cf-aig-cache-ttl", "0")],
            &gateway
        ),
        None
    );
}

proptest! {
    #[test]
    fn arbitrary_header_values_never_panic(
        name in prop::sample::select(vec![
            "cf-aig-cache-ttl", "cf-aig-skip-cache", "cf-aig-cache-key", "cf-aig-metadata",
            "cf-aig-collect-log", "cf-aig-custom-cost", "cf-aig-request-timeout",
            "cf-aig-max-attempts", "cf-aig-retry-delay", "cf-aig-backoff",
            "cf-aig-authorization",
        ]),
        value in ".{0,64}",
    ) {
        if let Ok(options) = parse(&[(name, value.as_str())]) {
            let gateway = GatewayConfig::default();
            let _ = options.cache_ttl_secs(&gateway);
            let plan = options.retries(&gateway);
            for retry in 1..6 {
                prop_assert!(plan.delay_before(retry) <= Duration::from_millis(5000 << 4));
            }
        }
    }
}
