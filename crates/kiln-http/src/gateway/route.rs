//! Which provider a gateway request goes to (spec §4.1), and how it is addressed there.
//!
//! Workers AI requests stay in the process: they become requests to Kiln's own routes. Custom
//! providers are other servers, reached over HTTP. Every other provider slug needs the internet,
//! which a Kiln machine is not assumed to have; such a provider can be registered as a custom
//! provider with its real base URL.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderName, Method};
use kiln_core::{ErrorKind, KilnError, KilnResult};
use serde_json::Value;

use crate::offload::{off_runtime, INLINE_BYTES};
use crate::SharedState;

/// A request on its way to one provider.
#[derive(Debug, Clone)]
pub struct ProviderCall {
    /// `workers-ai` or `custom-{slug}`: what logs and analytics group by.
    pub provider: String,
    pub model: String,
    /// The path after the gateway as the client sent it (`compat/chat/completions`, …).
    pub path: String,
    pub target: Target,
    pub method: Method,
    pub body: Bytes,
    /// Headers passed on to the provider.
    pub headers: HeaderMap,
    /// Set for a Worker binding's calls, which carry no token: Kiln's own routes then serve
    /// them as this account.
    pub on_behalf_of: Option<crate::platform::TrustedCall>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A path and query on Kiln's own router.
    Local(String),
    /// A URL on another server.
    Remote(String),
}

/// [`resolve`], on the blocking pool unless it is a `workers-ai` call with a small body:
/// custom providers are looked up in SQLite, and `compat` rewrites the body's JSON.
pub async fn resolve_off_runtime(
    state: &SharedState,
    account: &str,
    path: &str,
    query: Option<&str>,
    method: Method,
    headers: &HeaderMap,
    body: Bytes,
) -> KilnResult<ProviderCall> {
    let local = path.split('/').next() == Some("workers-ai");
    if local && body.len() <= INLINE_BYTES {
        return resolve(state, account, path, query, method, headers, body);
    }
    let (state, account, path) = (state.clone(), account.to_owned(), path.to_owned());
    let (query, headers) = (query.map(str::to_owned), headers.clone());
    off_runtime("provider routing", move || {
        resolve(
            &state,
            &account,
            &path,
            query.as_deref(),
            method,
            &headers,
            body,
        )
    })
    .await
}

/// Resolves `path` (after `/v1/{account}/{gateway}/`) to a provider call.
pub fn resolve(
    state: &SharedState,
    account: &str,
    path: &str,
    query: Option<&str>,
    method: Method,
    headers: &HeaderMap,
    body: Bytes,
) -> KilnResult<ProviderCall> {
    let (provider, rest) = path.split_once('/').unwrap_or((path, ""));
    let mut call = ProviderCall {
        provider: provider.to_owned(),
        model: String::new(),
        path: path.to_owned(),
        target: Target::Local(String::new()),
        method,
        body,
        headers: forwarded_headers(headers),
        on_behalf_of: None,
    };
    match provider {
        "workers-ai" => workers_ai(&mut call, account, rest)?,
        "compat" => compat(state, &mut call, account, rest)?,
        _ => match provider.strip_prefix("custom-") {
            Some(slug) => {
                let base_url = custom_base_url(state, account, slug)?;
                call.model = body_model(&call.body).unwrap_or_default();
                call.target = Target::Remote(join_url(&base_url, rest, query));
            }
            None => return Err(unreachable_provider(provider)),
        },
    }
    Ok(call)
}

/// `workers-ai/{model}`, `workers-ai/run/{model}` and `workers-ai/v1/…`.
fn workers_ai(call: &mut ProviderCall, account: &str, rest: &str) -> KilnResult<()> {
    if let Some(openai_path) = rest.strip_prefix("v1/") {
        call.model = body_model(&call.body).unwrap_or_default();
        call.target = Target::Local(format!("/accounts/{account}/ai/v1/{openai_path}"));
        return Ok(());
    }
    let model = rest.strip_prefix("run/").unwrap_or(rest);
    if model.is_empty() {
        return Err(KilnError::bad_input(
            "the path names no model: use workers-ai/{model} or workers-ai/run/{model}",
        ));
    }
    call.model = model.to_owned();
    call.target = Target::Local(format!("/accounts/{account}/ai/run/{model}"));
    Ok(())
}

/// `compat/{endpoint}` with `model: "{provider}/{model}"` in an OpenAI body.
fn compat(
    state: &SharedState,
    call: &mut ProviderCall,
    account: &str,
    endpoint: &str,
) -> KilnResult<()> {
    let mut body: Value = crate::body::parse_json(&call.body)?;
    let named = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| KilnError::bad_input("'model' is required, as \"{provider}/{model}\""))?;
    let Some((provider, model)) = named.split_once('/') else {
        return Err(KilnError::bad_input(format!(
            "model {named:?} names no provider: use \"{{provider}}/{{model}}\", e.g. \
             \"workers-ai/@cf/meta/llama-3.1-8b-instruct\""
        )));
    };
    if provider == super::dynamic_routes::PROVIDER {
        super::dynamic_routes::hand_over(call, account, endpoint, model);
        return Ok(());
    }
    let (provider, model) = (provider.to_owned(), model.to_owned());
    body["model"] = Value::String(model.clone());
    call.body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    call.headers.remove(header::CONTENT_LENGTH);
    call.model = model;
    call.target = match provider.as_str() {
        "workers-ai" => Target::Local(format!("/accounts/{account}/ai/v1/{endpoint}")),
        _ => match provider.strip_prefix("custom-") {
            Some(slug) => Target::Remote(join_url(
                &custom_base_url(state, account, slug)?,
                endpoint,
                None,
            )),
            None => return Err(unreachable_provider(&provider)),
        },
    };
    call.provider = provider;
    Ok(())
}

fn custom_base_url(state: &SharedState, account: &str, slug: &str) -> KilnResult<String> {
    state
        .gateways
        .provider_by_slug(account, slug)?
        .map(|provider| provider.base_url)
        .ok_or_else(|| {
            KilnError::new(
                ErrorKind::NotFound,
                format!(
                    "no enabled custom provider with slug {slug:?}: create it at \
                     /accounts/{account}/ai-gateway/custom-providers"
                ),
            )
        })
}

fn unreachable_provider(provider: &str) -> KilnError {
    KilnError::new(
        ErrorKind::InvalidProvider,
        format!(
            "provider {provider:?} is not served by Kiln: use workers-ai, compat, or register \
             the provider's base URL as a custom provider and call custom-{{slug}}"
        ),
    )
}

fn join_url(base: &str, rest: &str, query: Option<&str>) -> String {
    let mut url = format!(
        "{}/{}",
        base.trim_end_matches('/'),
        rest.trim_start_matches('/')
    );
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(query);
    }
    url
}

fn body_model(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("model")?.as_str().map(str::to_owned)
}

/// Everything but hop-by-hop headers, the gateway's own `cf-aig-*` headers, and
/// `accept-encoding` (the gateway reads bodies to count tokens).
fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    const DROPPED: [HeaderName; 6] = [
        header::HOST,
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::ACCEPT_ENCODING,
        header::UPGRADE,
        header::TE,
    ];
    headers
        .iter()
        .filter(|(name, _)| {
            !DROPPED.contains(name)
                && !name.as_str().starts_with("cf-aig-")
                && name.as_str() != "keep-alive"
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_without_doubled_slashes() {
        assert_eq!(
            join_url("http://h:1/v1/", "/chat/completions", Some("a=1")),
            "http://h:1/v1/chat/completions?a=1"
        );
        assert_eq!(join_url("http://h", "x", None), "http://h/x");
    }

    #[test]
    fn gateway_headers_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert("cf-aig-cache-ttl", "60".parse().unwrap());
        headers.insert(header::AUTHORIZATION, "Bearer k".parse().unwrap());
        headers.insert(header::HOST, "x".parse().unwrap());
        let forwarded = forwarded_headers(&headers);
        assert_eq!(forwarded.len(), 1);
        assert!(forwarded.contains_key(header::AUTHORIZATION));
    }
}
