//! The egress policy through real HTTP (issue #16): custom providers cannot reach this machine
//! unless the allow-list says so, redirects are not followed, a gateway that routes to itself
//! is refused after one hop, timeouts hold, and upstreams can neither see a caller's Kiln token
//! nor set Kiln's metric labels. Every connection here stays on loopback: private and
//! link-local ranges are proved on the address check itself (`kiln-http/src/egress_tests.rs`).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;

use super::providers::{create_provider, create_provider_on};
use super::*;
use crate::common::upstream::Upstream;

/// A server that allows only 127.0.0.2 (so 127.0.0.1, where it listens, is refused), with a
/// short total timeout for provider calls. No models: only the gateway is exercised.
fn strict_server() -> SocketAddr {
    static SERVER: OnceLock<SocketAddr> = OnceLock::new();
    *SERVER.get_or_init(|| {
        spawn_server(kiln::ServeConfig {
            egress_allow: Some(vec!["127.0.0.2".into()]),
            egress_timeout_secs: Some(2),
            models: Some(Vec::new()),
            fetch: Some(Vec::new()),
            gateway_db: Some(private_state_dir().join("strict-gateway.db")),
            ..test_config()
        })
    })
}

fn base(server: SocketAddr) -> String {
    format!("http://{server}")
}

async fn gateway_on(server: SocketAddr) -> Gateway {
    Gateway::create_on(&base(server), json!({})).await
}

/// POSTs through `gateway` on `server` to `custom-{slug}/{rest}`, following no redirect.
async fn through(
    server: SocketAddr,
    gateway: &Gateway,
    slug: &str,
    rest: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut request = client
        .post(format!(
            "http://{server}/v1/{}/{}/custom-{slug}/{rest}",
            gateway.account, gateway.id
        ))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

#[tokio::test]
async fn custom_providers_cannot_reach_this_machine_unless_allowed() {
    let server = strict_server();
    let upstream = Upstream::start([127, 0, 0, 1]).await;
    let port = upstream.addr.port();
    let gateway = gateway_on(server).await;
    let refused = [
        format!("http://127.0.0.1:{port}/v1"),
        format!("http://[::1]:{port}/v1"),
        format!("http://localhost:{port}/v1"),
        format!("http://2130706433:{port}/v1"),
        format!("http://0x7f.1:{port}/v1"),
        format!("http://0177.0.0.1:{port}/v1"),
        format!("http://[::ffff:127.0.0.1]:{port}/v1"),
        format!("http://0.0.0.0:{port}/v1"),
        // Kiln's own port, where it answers the Worker binding's routes.
        format!("http://{server}/v1"),
    ];
    for (n, base_url) in refused.iter().enumerate() {
        let slug = format!("p{n}");
        create_provider_on(&base(server), &gateway.account, &slug, base_url).await;
        let (status, _, body) = through(server, &gateway, &slug, "chat/completions", &[]).await;
        assert_eq!(status, 403, "{base_url}: {body}");
        let (code, message) = gateway_error(&body);
        assert_eq!(code, 2007, "{base_url}: {body}");
        assert!(message.contains("egress policy"), "{base_url}: {message}");
    }
    assert!(
        upstream.requests().is_empty(),
        "a refused provider was connected to"
    );

    // The allow-list opens exactly what it names: 127.0.0.2.
    let allowed = Upstream::start([127, 0, 0, 2]).await;
    create_provider_on(
        &base(server),
        &gateway.account,
        "allowed",
        &format!("http://{}/v1", allowed.addr),
    )
    .await;
    let (status, _, body) = through(server, &gateway, "allowed", "chat/completions", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(allowed.requests().len(), 1);

    // The total timeout ends a provider that never answers (2 s here).
    let started = std::time::Instant::now();
    let (status, _, body) = through(server, &gateway, "allowed", "slow", &[]).await;
    assert_eq!(status, 502, "{body}");
    assert!(started.elapsed() < Duration::from_secs(20), "{body}");
}

#[tokio::test]
async fn redirects_are_relayed_not_followed() {
    let server = strict_server();
    let allowed = Upstream::start([127, 0, 0, 2]).await;
    let target = Upstream::start([127, 0, 0, 2]).await;
    let gateway = gateway_on(server).await;
    create_provider_on(
        &base(server),
        &gateway.account,
        "r",
        &format!("http://{}", allowed.addr),
    )
    .await;
    let to = format!("http://{}/stolen", target.addr);
    let (status, headers, _) =
        through(server, &gateway, "r", &format!("redirect?to={to}"), &[]).await;
    assert_eq!(status, 302);
    assert_eq!(header(&headers, "location"), Some(to.as_str()));
    assert!(target.requests().is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn a_gateway_that_routes_to_itself_is_refused_after_one_hop() {
    // The shared server allows loopback, so only the hop header can stop the loop.
    let gateway = Gateway::create(json!({})).await;
    let own = format!(
        "http://{}/v1/{}/{}/custom-self",
        server(),
        gateway.account,
        gateway.id
    );
    create_provider(&gateway.account, "self", &own).await;
    let (status, _, body) = tokio::time::timeout(
        Duration::from_secs(60),
        gateway.post("custom-self/x", &json!({}), &[]),
    )
    .await
    .expect("the loop ends");
    assert_eq!(status, 508, "{body}");
    let (code, message) = gateway_error(&body);
    assert_eq!(code, 2008, "{body}");
    assert!(message.contains("x-kiln-hops"), "{message}");
}

#[tokio::test]
async fn upstreams_see_no_kiln_credentials_and_set_no_kiln_headers() {
    let upstream = Upstream::start([127, 0, 0, 1]).await;
    let gateway = Gateway::create(json!({})).await;
    create_provider(
        &gateway.account,
        "rec",
        &format!("http://{}/v1", upstream.addr),
    )
    .await;
    let (status, headers, body) = gateway
        .post(
            "custom-rec/chat/completions",
            &json!({"model": "m"}),
            &[("cf-aig-authorization", "Bearer kiln-gateway-secret")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&headers, "x-kiln-model"),
        None,
        "an upstream's x-kiln-model is not relayed"
    );
    let seen = upstream.requests();
    let request = seen.last().expect("the upstream was called");
    assert!(request.get("cf-aig-authorization").is_none());
    // The provider's own key (not a Kiln token) passes.
    assert_eq!(
        request.get("authorization").and_then(|v| v.to_str().ok()),
        Some("Bearer sk-test")
    );
    assert!(request.get("x-kiln-hops").is_some());
    let metrics = client()
        .get(url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        !metrics.contains("label-chosen-by-an-upstream"),
        "an upstream header became a metric label"
    );
}
