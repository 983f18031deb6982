//! `cf-aig-gateway-id`: how current Cloudflare clients send `/ai/run/{model}` and `/ai/v1/…`
//! through an AI Gateway without changing the URL. Before routing, such a request's URI becomes
//! the gateway's `/v1/{account}/{gateway}/workers-ai/…`, so it gets exactly what that route
//! gives: the gateway's authentication, cache, rate limit and log, and the `cf-aig-*` answer
//! headers.

use axum::extract::Request;
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kiln_core::KilnError;

pub const GATEWAY_ID_HEADER: &str = "cf-aig-gateway-id";

/// The middleware; it must wrap the router (a URI rewrite after routing would change nothing).
pub async fn route_by_header(mut request: Request, next: Next) -> Response {
    let gateway = match gateway_id(request.headers()) {
        Ok(Some(gateway)) => gateway,
        Ok(None) => return next.run(request).await,
        Err(error) => return crate::envelope::ApiError::from(error).into_response(),
    };
    if let Some(uri) = through_gateway(request.uri(), &gateway) {
        *request.uri_mut() = uri;
        request.headers_mut().remove(GATEWAY_ID_HEADER);
    }
    next.run(request).await
}

/// The gateway a request names in `cf-aig-gateway-id`, if any; a malformed one is refused.
pub(crate) fn gateway_id(headers: &axum::http::HeaderMap) -> Result<Option<String>, KilnError> {
    let Some(gateway) = headers.get(GATEWAY_ID_HEADER) else {
        return Ok(None);
    };
    gateway
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|g| is_gateway_id(g))
        .map(|g| Some(g.to_owned()))
        .ok_or_else(|| {
            KilnError::bad_input(format!(
                "{GATEWAY_ID_HEADER} must be a gateway id (letters, digits, '-' and '_')"
            ))
        })
}

/// `…/accounts/{account}/ai/run/{model}` → `/v1/{account}/{gateway}/workers-ai/{model}`, and
/// `…/accounts/{account}/ai/v1/{rest}` → `/v1/{account}/{gateway}/workers-ai/v1/{rest}`; other
/// routes are left alone.
fn through_gateway(uri: &Uri, gateway: &str) -> Option<Uri> {
    let path = uri.path();
    let rest = path.strip_prefix("/client/v4").unwrap_or(path);
    let (account, rest) = rest.strip_prefix("/accounts/")?.split_once('/')?;
    let provider_path = match rest.strip_prefix("ai/run/") {
        Some(model) => model.to_owned(),
        None => format!("v1/{}", rest.strip_prefix("ai/v1/")?),
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    format!("/v1/{account}/{gateway}/workers-ai/{provider_path}{query}")
        .parse()
        .ok()
}

fn is_gateway_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_and_openai_routes_go_through_the_named_gateway() {
        let rewrite = |path: &str| {
            through_gateway(&path.parse().expect("uri"), "g1").map(|uri| uri.to_string())
        };
        assert_eq!(
            rewrite("/client/v4/accounts/a/ai/run/@cf/meta/llama-3.1-8b-instruct?x=1").as_deref(),
            Some("/v1/a/g1/workers-ai/@cf/meta/llama-3.1-8b-instruct?x=1")
        );
        assert_eq!(
            rewrite("/accounts/a/ai/v1/chat/completions").as_deref(),
            Some("/v1/a/g1/workers-ai/v1/chat/completions")
        );
        assert_eq!(rewrite("/client/v4/accounts/a/ai/models/search"), None);
        assert_eq!(rewrite("/v1/chat/completions"), None);
        assert!(!is_gateway_id("a/../b"));
        assert!(is_gateway_id("my-gateway_2"));
    }
}
