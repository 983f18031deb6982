//! The address check itself: no test may dial an address outside loopback, so private and
//! link-local ranges are proved here, on the function the connector calls.

use super::*;

fn refused(policy: &EgressPolicy, url: &str) -> Option<KilnError> {
    policy.check_url(url).err()
}

#[test]
fn loopback_in_every_notation_is_refused() {
    let policy = EgressPolicy::default();
    for url in [
        "http://127.0.0.1:8787/",
        "http://127.1:8787/",
        "http://2130706433:8787/",
        "http://0x7f000001/",
        "http://0x7f.0.0.1/",
        "http://0177.0.0.1/",
        "http://127.255.255.254/",
        "http://[::1]:8787/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[0:0:0:0:0:0:0:1]/",
        "http://[::127.0.0.1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[2002:7f00:1::]/",
        "http://0.0.0.0:8787/",
        "http://0/",
        "http://[::]/",
    ] {
        let error = refused(&policy, url).unwrap_or_else(|| panic!("{url} was allowed"));
        assert_eq!(error.kind, ErrorKind::EgressRefused, "{url}: {error:?}");
        assert!(
            error.message.contains("--egress-allow"),
            "{}",
            error.message
        );
    }
}

#[test]
fn private_link_local_and_reserved_ranges_are_refused() {
    for address in [
        "10.0.0.1",
        "172.16.5.4",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.255",
        "192.0.0.170",
        "198.18.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "fd00::1",
        "fc00::abcd",
        "fe80::1",
        "fec0::1",
        "ff02::1",
        "::ffff:10.1.2.3",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
    ] {
        let ip: IpAddr = address.parse().expect("address");
        assert!(special_purpose(ip).is_some(), "{address} was allowed");
    }
}

#[test]
fn public_addresses_pass() {
    let policy = EgressPolicy::default();
    for address in [
        "1.1.1.1",
        "8.8.8.8",
        "172.32.0.1",
        "100.128.0.1",
        "192.0.2.1",
        "2606:4700::1111",
        "::ffff:1.1.1.1",
    ] {
        let ip: IpAddr = address.parse().expect("address");
        assert_eq!(policy.refusal(ip), None, "{address}");
    }
    assert!(policy.check_url("https://api.example.com/v1").is_ok());
}

#[test]
fn without_public_only_the_allow_list_passes_and_no_name_is_resolved() {
    let allow = ["127.0.0.1", "llm.lan"].map(String::from);
    let policy = EgressPolicy::new(&allow, Vec::new())
        .expect("policy")
        .without_public();
    for address in ["1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "10.0.0.1"] {
        let ip: IpAddr = address.parse().expect("address");
        assert!(policy.refusal(ip).is_some(), "{address}");
    }
    assert_eq!(policy.refusal("127.0.0.1".parse().expect("address")), None);
    let refused_name = refused(&policy, "https://api.example.com/v1").expect("refused");
    assert!(
        refused_name.message.contains("--egress-public false"),
        "{}",
        refused_name.message
    );
    assert!(refused(&policy, "https://1.1.1.1/v1").is_some());
    assert!(refused(&policy, "http://llm.lan:8080/v1").is_none());
    assert!(refused(&policy, "http://127.0.0.1:9/v1").is_none());
}

#[test]
fn allowed_networks_and_hosts_open_exactly_what_they_name() {
    let allow = ["127.0.0.1", "10.0.0.0/8", "llm.lan", "[::1]"].map(String::from);
    let policy = EgressPolicy::new(&allow, Vec::new()).expect("policy");
    assert!(policy.check_url("http://127.0.0.1:9000/").is_ok());
    assert!(policy.check_url("http://[::1]:9000/").is_ok());
    assert!(policy.check_url("http://127.0.0.2:9000/").is_err());
    assert_eq!(policy.refusal("10.9.8.7".parse().expect("ip")), None);
    assert!(policy.refusal("192.168.0.1".parse().expect("ip")).is_some());

    let loopback = vec![SocketAddr::from(([127, 0, 0, 5], 0))];
    assert_eq!(
        policy.filter_resolved("LLM.lan.", loopback.clone()),
        Ok(loopback.clone()),
        "an allowed name may resolve anywhere"
    );
    let refusal = policy
        .filter_resolved("other.lan", loopback)
        .expect_err("a name resolving to loopback");
    assert_eq!(refusal.reason, "loopback");
    assert!(refusal.to_string().contains("other.lan"));

    let mixed = vec![
        SocketAddr::from(([169, 254, 169, 254], 0)),
        SocketAddr::from(([93, 184, 216, 34], 0)),
    ];
    assert_eq!(
        policy.filter_resolved("mixed.example", mixed),
        Ok(vec![SocketAddr::from(([93, 184, 216, 34], 0))]),
        "only the addresses that pass are dialled"
    );

    for bad in ["http://x", "10.0.0.0/99", "a b", ""] {
        if bad.is_empty() {
            continue;
        }
        assert!(
            EgressPolicy::new(&[bad.to_owned()], Vec::new()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn kilns_own_addresses_are_refused_even_when_public() {
    let own: IpAddr = "203.0.113.7".parse().expect("ip");
    let policy = EgressPolicy::new(&[], vec![own]).expect("policy");
    assert_eq!(policy.refusal(own), Some("Kiln's own"));
    assert_eq!(
        policy.refusal("::ffff:203.0.113.7".parse().expect("ip")),
        Some("Kiln's own")
    );
}

#[test]
fn urls_that_are_not_http_are_invalid_providers() {
    let policy = EgressPolicy::default();
    for url in ["file:///etc/passwd", "gopher://x/", "not a url", "http://"] {
        let error = refused(&policy, url).unwrap_or_else(|| panic!("{url} was allowed"));
        assert_eq!(error.kind, ErrorKind::InvalidProvider, "{url}");
    }
}

#[test]
fn a_request_that_comes_back_is_a_loop() {
    let policy = EgressPolicy::default();
    let first = policy.next_hops(None).expect("first hop");
    assert_eq!(first, policy.node_id);
    assert!(policy.check_incoming_hops(None).is_ok());
    assert!(policy.check_incoming_hops(Some("other-node")).is_ok());
    let error = policy
        .check_incoming_hops(Some(&first))
        .expect_err("came back");
    assert_eq!(error.kind, ErrorKind::GatewayLoop);
    let other = EgressPolicy::default();
    let through_both = other.next_hops(Some(&first)).expect("second node");
    assert!(policy.check_incoming_hops(Some(&through_both)).is_err());
    let long = ["n"; MAX_HOPS + 1].join(",");
    assert!(policy.next_hops(Some(&long)).is_err());
}
