//! Who is calling: every `/accounts/{account_id}/…` and `/v1/…` request passes [`require_token`]
//! before its handler runs, which leaves a [`Caller`] in the request's extensions.
//!
//! A token reaches only its own account (403 for any other, so account B's ids are never even
//! looked up) and only the routes its scopes cover. Requests Kiln makes to itself (a Worker
//! binding's call, the gateway's `workers-ai` provider for a binding, a batch item) carry a
//! [`TrustedCall`] extension instead: extensions cannot come from the network.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kiln_accounts::Scope;
use kiln_core::{ErrorKind, KilnError, KilnResult};

use super::Platform;
use crate::SharedState;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account: String,
    /// Whether per-task requests-per-minute limits apply (not to queued batch items).
    pub rate_limited: bool,
    /// The scopes of the caller's token; `None` when no token decides (open mode, Kiln's own
    /// calls), which may do anything.
    pub scopes: Option<Vec<Scope>>,
}

/// Set by Kiln on requests it makes to its own routes on behalf of `account`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedCall {
    pub account: String,
    pub rate_limited: bool,
}

/// The middleware: authenticates, checks account and scope, records the [`Caller`].
pub async fn require_token(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match request.extensions().get::<TrustedCall>() {
        Some(trusted) => Ok(Caller {
            account: trusted.account.clone(),
            rate_limited: trusted.rate_limited,
            scopes: None,
        }),
        None => {
            let (account, scope) = account_and_scope(request.method(), request.uri().path());
            state
                .platform
                .authorize(request.headers(), account.as_deref(), scope)
        }
    };
    match caller {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => {
            let path = request
                .extensions()
                .get::<OriginalUri>()
                .map_or_else(|| request.uri().path(), |original| original.path());
            refusal(path, error)
        }
    }
}

/// Kiln's own server-wide routes (`/kiln/…`: the model store, what is loaded): open in open
/// mode; else any account's token, with `workers-ai:read` to look and `workers-ai:edit` to
/// pull or unload.
pub async fn require_operator(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Response {
    let reading = request.method() == Method::GET || request.method() == Method::HEAD;
    let scope = if reading {
        Scope::WorkersAiRead
    } else {
        Scope::WorkersAiEdit
    };
    match state.platform.authorize(request.headers(), None, scope) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => crate::envelope::ApiError::from(error).into_response(),
    }
}

/// Both API surfaces answer in their own error shape.
pub(crate) fn refusal(path: &str, error: KilnError) -> Response {
    if path.starts_with("/v1/") || path.contains("/ai/v1/") {
        crate::openai::error::OpenAiError::from(error).into_response()
    } else {
        crate::envelope::ApiError::from(error).into_response()
    }
}

/// The Worker binding's routes. A Worker runtime calls them for the binding account
/// (`--binding-account`; the Vectorize binding's path names its account). While tokens are
/// required, each needs a token of that account with the operation's scope (workerd adds it
/// with `injectRequestHeaders`, docs/worker-binding.md), or, only with
/// `--trust-local-bindings`, a loopback peer acting for the binding account. Loopback is not
/// trusted by default: Kiln's own provider calls and any local process come from it too.
pub async fn binding_access(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let platform = &state.platform;
    if platform.is_open() {
        return next.run(request).await;
    }
    let binding_account = platform.settings.default_account.as_str();
    let path = request.uri().path();
    let account = vectorize_binding_account(path).unwrap_or(binding_account);
    let local_peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|peer| peer.0.ip().is_loopback());
    let trusted = platform.settings.trust_local_bindings
        && local_peer
        && account == binding_account
        && presented_token(request.headers()).is_none();
    if trusted {
        return next.run(request).await;
    }
    let scope = binding_scope(request.method(), path);
    match platform.authorize(request.headers(), Some(account), scope) {
        Ok(_) => next.run(request).await,
        Err(mut error) => {
            error.message = format!(
                "{}: the Worker binding routes need a token of account {account} with {} while \
                 API tokens are required",
                error.message,
                scope.as_str()
            );
            crate::envelope::ApiError::from(error).into_response()
        }
    }
}

/// `{account}` of `/vectorize-binding/{account}/{index}/{op}`.
fn vectorize_binding_account(path: &str) -> Option<&str> {
    path.strip_prefix("/vectorize-binding/")?.split('/').next()
}

/// The scope each binding operation needs, as its REST twin does.
fn binding_scope(method: &Method, path: &str) -> Scope {
    let reading = method == Method::GET || method == Method::HEAD;
    if path.starts_with("/vectorize-binding/") {
        let op = path.rsplit('/').next().unwrap_or_default();
        return match op {
            "query" | "getByIds" | "info" | "describe" => Scope::VectorizeRead,
            _ if reading => Scope::VectorizeRead,
            _ => Scope::VectorizeEdit,
        };
    }
    match path {
        "/run" | "/ai-gateway/run" | "/ai-api/models/search" => Scope::WorkersAiRead,
        _ if path.starts_with("/ai-gateway/universal/") => Scope::WorkersAiRead,
        _ if reading => Scope::AiGatewayRead,
        _ => Scope::AiGatewayEdit,
    }
}

impl Platform {
    /// The caller of a request with these headers to `account`'s route needing `scope`
    /// (`account` is `None` on routes that name none: the token decides).
    ///
    /// Runs on the async threads, for every request: `AccountStore` answers from its memory
    /// snapshot after one `PRAGMA data_version` (a WAL read of shared memory that no writer
    /// blocks), and rereads the accounts and tokens only when an operator changed them.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        account: Option<&str>,
        scope: Scope,
    ) -> KilnResult<Caller> {
        if self.is_open() {
            return Ok(Caller {
                account: account.unwrap_or(&self.settings.default_account).to_owned(),
                rate_limited: true,
                scopes: None,
            });
        }
        let refused = || self.authentication_error();
        let secret = presented_token(headers).ok_or_else(refused)?;
        let token = self.accounts.authenticate(&secret).ok_or_else(refused)?;
        if account.is_some_and(|account| account != token.account_id) || !token.allows(scope) {
            return Err(KilnError::new(
                ErrorKind::Forbidden,
                ErrorKind::Forbidden.default_message(),
            ));
        }
        Ok(Caller {
            account: token.account_id,
            rate_limited: true,
            scopes: Some(token.scopes),
        })
    }

    /// Whether `secret` may call `account`'s authenticated gateways (`cf-aig-authorization`).
    pub fn may_run_gateway(&self, account: &str, secret: &str) -> bool {
        if self.is_open() {
            return !secret.is_empty();
        }
        self.accounts
            .authenticate(secret)
            .is_some_and(|token| token.account_id == account && token.allows(Scope::AiGatewayRun))
    }
}

impl Platform {
    fn authentication_error(&self) -> KilnError {
        if self.accounts.has_tokens() {
            return KilnError::new(
                ErrorKind::Authentication,
                ErrorKind::Authentication.default_message(),
            );
        }
        KilnError::new(
            ErrorKind::Authentication,
            "Authentication error: every API token of this server is revoked; an operator can \
             create one with `kiln tokens create`",
        )
    }
}

/// `Authorization: Bearer <token>`, or the legacy `X-Auth-Key` header (spec §1.1).
fn presented_token(headers: &HeaderMap) -> Option<String> {
    crate::auth::bearer_token(headers).or_else(|| {
        headers
            .get("x-auth-key")
            .and_then(|value| value.to_str().ok())
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    })
}

/// The account a path names and the scope its route needs. Paths are as the middleware sees
/// them: `/accounts/{account}/…` (below `/client/v4` too) or `/v1/…` (OpenAI routes).
pub fn account_and_scope(method: &Method, path: &str) -> (Option<String>, Scope) {
    let mut segments = path.trim_start_matches('/').split('/');
    let (account, rest): (Option<String>, Vec<&str>) = match segments.next() {
        Some("accounts") => (
            segments.next().map(str::to_owned),
            segments.collect::<Vec<_>>(),
        ),
        // `/v1/…` is the OpenAI surface of Workers AI.
        _ => (None, vec!["ai", "v1"]),
    };
    let reading = method == Method::GET || method == Method::HEAD;
    let scope = match rest.as_slice() {
        ["ai", "finetunes", ..] if !reading => Scope::WorkersAiEdit,
        ["ai", ..] => Scope::WorkersAiRead,
        ["ai-gateway", ..] if reading => Scope::AiGatewayRead,
        ["ai-gateway", ..] => Scope::AiGatewayEdit,
        ["vectorize", "v2", "indexes", _, "query" | "get_by_ids"] => Scope::VectorizeRead,
        ["vectorize", ..] if reading => Scope::VectorizeRead,
        ["vectorize", ..] => Scope::VectorizeEdit,
        ["tokens", ..] => Scope::ApiTokensEdit,
        _ => Scope::WorkersAiRead,
    };
    (account, scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_operations_need_the_scope_of_their_rest_twins() {
        let scope = |method: Method, path: &str| binding_scope(&method, path);
        assert_eq!(scope(Method::POST, "/run"), Scope::WorkersAiRead);
        assert_eq!(
            scope(Method::POST, "/vectorize-binding/a/i/query"),
            Scope::VectorizeRead
        );
        assert_eq!(
            scope(Method::POST, "/vectorize-binding/a/i/deleteByIds"),
            Scope::VectorizeEdit
        );
        assert_eq!(
            scope(Method::PATCH, "/ai-gateway/gateways/g/logs/1"),
            Scope::AiGatewayEdit
        );
        assert_eq!(
            scope(Method::GET, "/ai-gateway/gateways/g/logs/1"),
            Scope::AiGatewayRead
        );
        assert_eq!(
            vectorize_binding_account("/vectorize-binding/acct/i/query"),
            Some("acct")
        );
    }

    #[test]
    fn routes_need_the_scope_of_what_they_do() {
        let scope = |method: Method, path: &str| account_and_scope(&method, path);
        assert_eq!(
            scope(
                Method::POST,
                "/accounts/a/ai/run/@cf/meta/llama-3.1-8b-instruct"
            ),
            (Some("a".into()), Scope::WorkersAiRead)
        );
        assert_eq!(
            scope(Method::POST, "/accounts/a/ai/finetunes").1,
            Scope::WorkersAiEdit
        );
        assert_eq!(
            scope(Method::GET, "/accounts/a/ai/finetunes").1,
            Scope::WorkersAiRead
        );
        assert_eq!(
            scope(Method::GET, "/accounts/a/ai-gateway/gateways/g/logs").1,
            Scope::AiGatewayRead
        );
        assert_eq!(
            scope(Method::PATCH, "/accounts/a/ai-gateway/gateways/g/logs/1").1,
            Scope::AiGatewayEdit
        );
        // Running an evaluation writes one; the evaluators' list only reads.
        assert_eq!(
            scope(
                Method::POST,
                "/accounts/a/ai-gateway/gateways/g/evaluations"
            )
            .1,
            Scope::AiGatewayEdit
        );
        assert_eq!(
            scope(Method::GET, "/accounts/a/ai-gateway/evaluation-types").1,
            Scope::AiGatewayRead
        );
        assert_eq!(
            scope(Method::POST, "/accounts/a/vectorize/v2/indexes/i/query").1,
            Scope::VectorizeRead
        );
        assert_eq!(
            scope(Method::POST, "/accounts/a/vectorize/v2/indexes/i/upsert").1,
            Scope::VectorizeEdit
        );
        assert_eq!(
            scope(Method::POST, "/v1/chat/completions"),
            (None, Scope::WorkersAiRead)
        );
    }
}
