//! `…/accounts/{account_id}/tokens`: an account's API tokens over HTTP (the console's tokens
//! page; `kiln tokens` does the same on the server's machine). Needs `api-tokens:edit`, and a
//! token never grants scopes its creator lacks.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use kiln_accounts::{Scope, TokenInfo};
use kiln_core::{ErrorKind, KilnError, KilnResult};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Caller;
use crate::envelope::{success, ApiError};
use crate::offload::off_runtime;
use crate::SharedState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    /// Scope names (`workers-ai:read`, …) or `all`: everything the creator holds.
    scopes: Vec<String>,
}

fn listed(token: &TokenInfo) -> Value {
    json!({
        "id": token.id,
        "name": token.name,
        "scopes": token.scopes,
        "created_at_ms": token.created_at_ms,
        "status": if token.revoked { "revoked" } else { "active" },
    })
}

/// `GET …/tokens`: the account's tokens, revoked ones included; never a secret.
pub async fn list(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    answer("list tokens", move || {
        let tokens = state.platform.accounts.tokens(Some(&caller.account))?;
        Ok(success(Value::Array(tokens.iter().map(listed).collect())).into_response())
    })
    .await
}

/// `POST …/tokens` with `{"name", "scopes"}`: the new token, with its secret as `value` (the only
/// time it is shown).
pub async fn create(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Response {
    answer("create token", move || {
        let request: CreateToken = serde_json::from_slice(&body)
            .map_err(|error| KilnError::bad_input(format!("invalid token request: {error}")))?;
        let held = caller.scopes.clone().unwrap_or_else(|| Scope::ALL.to_vec());
        let mut scopes = Vec::new();
        for name in &request.scopes {
            if name.trim().eq_ignore_ascii_case("all") {
                scopes.extend(held.iter().copied());
            } else {
                scopes.push(name.parse::<Scope>()?);
            }
        }
        if let Some(lacking) = scopes
            .iter()
            .find(|wanted| !held.iter().any(|own| own.grants(**wanted)))
        {
            return Err(KilnError::new(
                ErrorKind::Forbidden,
                format!("a token cannot grant {lacking}, which it does not hold itself"),
            ));
        }
        let accounts = &state.platform.accounts;
        if accounts.account(&caller.account)?.is_none() {
            // Open mode's accounts exist before anyone created them (spec: any id works).
            accounts.create_account(
                Some(&caller.account),
                &caller.account,
                state.platform.settings.default_plan,
            )?;
        }
        let (token, secret) = accounts.create_token(&caller.account, &request.name, &scopes)?;
        let mut result = listed(&token);
        result["value"] = Value::String(secret);
        Ok(success(result).into_response())
    })
    .await
}

/// `DELETE …/tokens/{token_id}`: revokes one of the account's tokens.
pub async fn revoke(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path((_, token_id)): Path<(String, String)>,
) -> Response {
    answer("revoke token", move || {
        let accounts = &state.platform.accounts;
        // Another account's token is as unknown as a token that never existed.
        let owned = accounts
            .tokens(Some(&caller.account))?
            .into_iter()
            .any(|token| token.id == token_id);
        if !owned {
            return Err(KilnError::new(
                ErrorKind::NotFound,
                format!("no token {token_id}"),
            ));
        }
        accounts.revoke_token(&token_id)?;
        Ok(success(json!({"id": token_id})).into_response())
    })
    .await
}

async fn answer(
    what: &'static str,
    work: impl FnOnce() -> KilnResult<Response> + Send + 'static,
) -> Response {
    off_runtime(what, work)
        .await
        .unwrap_or_else(|error| ApiError::from(error).into_response())
}
