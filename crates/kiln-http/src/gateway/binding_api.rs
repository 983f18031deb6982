//! The rest of the Worker AI binding's wire protocol (spec §2.3): `env.AI.models()` and the
//! helpers of `env.AI.gateway(id)` (`getUrl`, `getLog`, `patchLog`, `run`), as workerd's
//! `ai-api.ts` / `aig-api.ts` send them to their fetcher. Like `/run`, they act for the binding
//! account and carry no credentials: the caller is the account's own Worker runtime.
//!
//! workerd reads `result` from a 200 and `errors[0].message` from any other status (404 on a
//! log is `AiGatewayLogNotFound`), which is exactly the Workers AI envelope Kiln's REST routes
//! answer with.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Response};
use kiln_catalog::SearchQuery;
use serde_json::json;

use super::admin::{stored, with_json_body};
use super::GatewayContext;
use crate::envelope::EnvelopePath;
use crate::PublicUrl;

/// The `Host` every binding request carries: not where Kiln can be reached.
const BINDING_HOST: &str = "workers-binding.ai";

/// `GET /ai-api/models/search?<params>` (`env.AI.models(params)`): the REST catalog search.
pub async fn models(
    State(context): State<Arc<GatewayContext>>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Response<Body> {
    crate::catalog_routes::search_models(State(context.app.clone()), query).await
}

/// `GET /ai-gateway/gateways/{gateway}/url/{provider}` (`gateway(id).getUrl(provider)`):
/// `{base}/v1/{account}/{gateway}/{provider}`, or `{base}/v1/{account}/{gateway}/` for
/// `universal`. The base is [`public_base`].
pub async fn gateway_url(
    State(context): State<Arc<GatewayContext>>,
    EnvelopePath((gateway, provider)): EnvelopePath<(String, String)>,
    headers: HeaderMap,
) -> Response<Body> {
    let account = context.app.binding_account.clone();
    let base = public_base(&headers, &context.app.public_url);
    // `get` reads SQLite: only a gateway that exists has a URL.
    stored("reading a gateway", move || {
        context.app.gateways.get(&account, &gateway)?;
        Ok(json!({"url": provider_url(&base, &account, &gateway, &provider)}))
    })
    .await
}

/// A provider's URL through a gateway; the universal endpoint's ends at the gateway.
pub(super) fn provider_url(base: &str, account: &str, gateway: &str, provider: &str) -> String {
    let provider = if provider == "universal" {
        ""
    } else {
        provider
    };
    format!("{base}/v1/{account}/{gateway}/{provider}")
}

/// Kiln's address as a client should write it: `--public-url` when set, else `X-Forwarded-Host`
/// (with `X-Forwarded-Proto`) when a proxy or workerd's `injectRequestHeaders` sets it, else
/// `Host` unless it is the binding's placeholder host, else the listening address.
pub fn public_base(headers: &HeaderMap, public_url: &PublicUrl) -> String {
    if let PublicUrl::Configured(url) = public_url {
        return url.clone();
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let scheme = match text("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    let usable = |host: &&str| {
        let name = host.rsplit_once(':').map_or(*host, |(name, _)| name);
        !name.eq_ignore_ascii_case(BINDING_HOST) && !host.contains(['/', '@', ' '])
    };
    match text("x-forwarded-host").or_else(|| text(header::HOST.as_str())) {
        Some(host) if usable(&host) => format!("{scheme}://{host}"),
        _ => public_url.base().to_owned(),
    }
}

/// `GET /ai-gateway/gateways/{gateway}/logs/{id}` (`getLog`): `{"result": log}`; 404 when the
/// gateway has no such log.
pub async fn get_log(
    State(context): State<Arc<GatewayContext>>,
    EnvelopePath((gateway, id)): EnvelopePath<(String, String)>,
) -> Response<Body> {
    stored("reading a log", move || {
        let account = &context.app.binding_account;
        context.app.gateways.get_log(account, &gateway, &id)
    })
    .await
}

/// `PATCH /ai-gateway/gateways/{gateway}/logs/{id}` (`patchLog`) with
/// `{score?, feedback?, metadata?}`.
pub async fn patch_log(
    State(context): State<Arc<GatewayContext>>,
    EnvelopePath((gateway, id)): EnvelopePath<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let app = context.app.clone();
    let gateways = app.gateways.clone();
    let account = app.binding_account.clone();
    with_json_body(&app, &headers, body, "log feedback", move |input| {
        gateways.patch_log(&account, &gateway, &id, input)
    })
    .await
}

/// `POST /ai-gateway/universal/run/{gateway}` (`gateway(id).run(steps, {gateway})`): the
/// universal endpoint of the binding account; the options arrive as `cf-aig-*` headers. The
/// Worker receives this response as it is.
pub async fn universal(
    State(context): State<Arc<GatewayContext>>,
    EnvelopePath(gateway): EnvelopePath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let account = context.app.binding_account.clone();
    super::universal::answer(&context, &account, &gateway, &headers, body, "binding").await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn public_base_prefers_forwarded_then_host_then_the_listening_address() {
        let listening = PublicUrl::Listening("http://127.0.0.1:8787".into());
        let forwarded = headers(&[
            ("host", "workers-binding.ai"),
            ("x-forwarded-host", "kiln.internal:9000"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            public_base(&forwarded, &listening),
            "https://kiln.internal:9000"
        );
        let direct = headers(&[("host", "127.0.0.1:4321")]);
        assert_eq!(public_base(&direct, &listening), "http://127.0.0.1:4321");
        for binding in ["workers-binding.ai", "WORKERS-BINDING.AI:443"] {
            let binding = headers(&[("host", binding)]);
            assert_eq!(public_base(&binding, &listening), "http://127.0.0.1:8787");
        }
        assert_eq!(
            public_base(&HeaderMap::new(), &listening),
            "http://127.0.0.1:8787"
        );
    }

    #[test]
    fn a_configured_public_url_wins_over_every_header() {
        let configured = PublicUrl::Configured("https://ai.example.com".into());
        let forwarded = headers(&[
            ("host", "127.0.0.1:8787"),
            ("x-forwarded-host", "kiln.internal:9000"),
        ]);
        assert_eq!(
            public_base(&forwarded, &configured),
            "https://ai.example.com"
        );
    }
}
