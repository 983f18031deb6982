//! `x-kiln-vectorize-index`: how a Worker's genuine `env.VECTORIZE` reaches Kiln by
//! configuration alone. workerd's Vectorize binding (`cloudflare-internal:vectorize-api`,
//! `indexVersion` v2) sends `http://vector-search/<op>` to its fetcher: the index is in the
//! binding's configuration, not in the request, and a workerd external service can add headers
//! but no path prefix. So the capnp config injects this header (and, for another account than
//! `--binding-account`, `x-kiln-vectorize-account`), and before routing such a request's URI
//! becomes `/vectorize-binding/{account}/{index}/{op}`: the same handler and the same
//! `binding_access` check (a token of that account while tokens are required) as that route.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;
use kiln_core::{KilnError, KilnResult};

pub const INDEX_HEADER: &str = "x-kiln-vectorize-index";
pub const ACCOUNT_HEADER: &str = "x-kiln-vectorize-account";

/// The v2 binding's operations (spec §5.8). Other paths (the AI binding's `/run`, …) pass
/// untouched, so one external service may carry both bindings.
const OPERATIONS: [&str; 6] = [
    "info",
    "query",
    "insert",
    "upsert",
    "getByIds",
    "deleteByIds",
];

/// The middleware; it must wrap the router (a URI rewrite after routing would change nothing).
/// Its state is the binding account.
pub async fn route_by_header(
    State(binding_account): State<Arc<str>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !request.headers().contains_key(INDEX_HEADER) {
        return next.run(request).await;
    }
    match binding_uri(&request, &binding_account) {
        Ok(Some(uri)) => {
            *request.uri_mut() = uri;
            let headers = request.headers_mut();
            headers.remove(INDEX_HEADER);
            headers.remove(ACCOUNT_HEADER);
            next.run(request).await
        }
        Ok(None) => next.run(request).await,
        // In the binding's own error shape: it throws `<OP>_ERROR (code = N): <error>`.
        Err(error) => super::binding::error_response(&error),
    }
}

/// `/<op>` → `/vectorize-binding/{account}/{index}/<op>`; `None` for paths that are no
/// Vectorize operation.
fn binding_uri(request: &Request, binding_account: &str) -> KilnResult<Option<Uri>> {
    let path = request.uri().path();
    if path.starts_with("/binding/indexes/") {
        return Err(KilnError::bad_input(
            "Kiln serves Vectorize v2 bindings: add (name = \"indexVersion\", text = \"v2\") \
             to the binding's innerBindings",
        ));
    }
    let Some(op) = path.strip_prefix('/').filter(|op| OPERATIONS.contains(op)) else {
        return Ok(None);
    };
    let headers = request.headers();
    let index = header_name(headers.get(INDEX_HEADER), INDEX_HEADER)?;
    let account = match headers.get(ACCOUNT_HEADER) {
        Some(value) => header_name(Some(value), ACCOUNT_HEADER)?,
        None => binding_account,
    };
    let query = request
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    format!("/vectorize-binding/{account}/{index}/{op}{query}")
        .parse()
        .map(Some)
        .map_err(|e| KilnError::bad_input(format!("{INDEX_HEADER}: {e}")))
}

/// An index or account name: letters, digits, `-` and `_` only, so that it is one path
/// segment as it stands (no `/`, `..` or escapes). The store checks the finer rules.
fn header_name<'a>(value: Option<&'a HeaderValue>, header: &str) -> KilnResult<&'a str> {
    value
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|name| {
            !name.is_empty()
                && name.len() <= 128
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .ok_or_else(|| {
            KilnError::bad_input(format!(
                "{header} must be a name of 1 to 128 letters, digits, '-' and '_'"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn rewrite(path: &str, headers: &[(&str, &str)]) -> KilnResult<Option<String>> {
        let mut builder = Request::builder().uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Body::empty()).expect("request");
        binding_uri(&request, "local").map(|uri| uri.map(|uri| uri.to_string()))
    }

    #[test]
    fn operations_go_to_the_named_index_of_the_binding_account() {
        let index = [(INDEX_HEADER, "docs")];
        assert_eq!(
            rewrite("/query", &index).expect("ok").as_deref(),
            Some("/vectorize-binding/local/docs/query")
        );
        assert_eq!(
            rewrite("/info?x=1", &index).expect("ok").as_deref(),
            Some("/vectorize-binding/local/docs/info?x=1")
        );
        let other = [(INDEX_HEADER, "docs"), (ACCOUNT_HEADER, "acct_2")];
        assert_eq!(
            rewrite("/deleteByIds", &other).expect("ok").as_deref(),
            Some("/vectorize-binding/acct_2/docs/deleteByIds")
        );
    }

    #[test]
    fn other_paths_pass_and_bad_names_are_refused() {
        let index = [(INDEX_HEADER, "docs")];
        for path in ["/run", "/ai-gateway/run", "/health", "/query/x", "/"] {
            assert_eq!(rewrite(path, &index).expect("ok"), None, "{path}");
        }
        for bad in ["", "a/b", "..", "a%2Fb", "a b", &"x".repeat(129)] {
            let error = rewrite("/query", &[(INDEX_HEADER, bad)]).expect_err(bad);
            assert!(error.message.contains(INDEX_HEADER), "{}", error.message);
            let error =
                rewrite("/query", &[(INDEX_HEADER, "docs"), (ACCOUNT_HEADER, bad)]).expect_err(bad);
            assert!(error.message.contains(ACCOUNT_HEADER), "{}", error.message);
        }
        let error = rewrite("/binding/indexes/docs/query", &index).expect_err("v1");
        assert!(error.message.contains("indexVersion"), "{}", error.message);
    }
}
