//! Stored provider keys (BYOK, spec §4.2): the management API of `…/provider_configs`, and
//! putting a stored key on a gateway request that brings none.
//!
//! A key is used only for an authenticated request (a valid `cf-aig-authorization`, or the
//! Worker binding's): on an open gateway anyone could otherwise spend the key's owner's money.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use kiln_core::time::unix_millis;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use kiln_gateway::{ProviderConfig, StoredKey};

use super::admin::{stored, with_json_body};
use super::exchange::Exchange;
use super::route::{ProviderCall, Target};
use crate::offload::off_runtime;
use crate::paging::{paged, Unasked};
use crate::SharedState;

/// The request header that picks a stored key by its alias.
pub const BYOK_ALIAS: &str = "cf-aig-byok-alias";

/// Headers that carry a provider credential; a request holding one (that is not a Kiln token)
/// brings its own key.
const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "xi-api-key",
];

/// `GET …/ai-gateway/gateways/{gateway}/provider_configs?page=&per_page=`.
pub async fn list(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    paged(
        "listing provider keys",
        &pairs,
        Unasked::DefaultPage,
        move || {
            let configs = state.gateways.list_provider_configs(&account, &gateway)?;
            Ok(configs.iter().map(ProviderConfig::to_json).collect())
        },
    )
    .await
}

/// `POST …/ai-gateway/gateways/{gateway}/provider_configs`.
pub async fn create(
    State(state): State<SharedState>,
    Path((account, gateway)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let gateways = state.gateways.clone();
    with_json_body(
        &state,
        &headers,
        body,
        "storing a provider key",
        move |body| {
            Ok(gateways
                .create_provider_config(&account, &gateway, body)?
                .to_json())
        },
    )
    .await
}

/// `DELETE …/ai-gateway/gateways/{gateway}/provider_configs/{id}` (Kiln's way to remove a
/// key; Cloudflare's API replaces configs through the dashboard).
pub async fn delete(
    State(state): State<SharedState>,
    Path((account, gateway, id)): Path<(String, String, String)>,
) -> Response {
    stored("deleting a provider key", move || {
        Ok(state
            .gateways
            .delete_provider_config(&account, &gateway, &id)?
            .to_json())
    })
    .await
}

/// Puts the gateway's stored key for the call's provider on `call` when the request brings
/// no key of its own and is authenticated; counts the use against the key's rate limit.
pub async fn attach(
    exchange: &Exchange,
    call: &mut ProviderCall,
    request_headers: &HeaderMap,
) -> KilnResult<()> {
    let alias = match request_headers.get(BYOK_ALIAS) {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|alias| !alias.is_empty() && alias.len() <= 64)
                .ok_or_else(|| KilnError::bad_input(format!("{BYOK_ALIAS}: not a valid alias")))?
                .to_owned(),
        ),
        None => None,
    };
    if !exchange.authenticated {
        return match alias {
            Some(_) => Err(KilnError::new(
                ErrorKind::GatewayUnauthorized,
                "stored provider keys serve authenticated requests only: send \
                 cf-aig-authorization: Bearer <token>",
            )),
            None => Ok(()),
        };
    }
    if alias.is_none() && brings_own_key(exchange, call) {
        return Ok(());
    }
    let (gateways, account, gateway) = (
        exchange.context.app.gateways.clone(),
        exchange.account.clone(),
        exchange.gateway.id.clone(),
    );
    let provider = call.provider.clone();
    let key = off_runtime("reading a stored provider key", move || {
        // A custom provider's key may be stored under `custom-{slug}` or its bare slug.
        let mut slugs = vec![provider.as_str()];
        slugs.extend(provider.strip_prefix("custom-"));
        gateways.provider_key(&account, &gateway, &slugs, alias.as_deref())
    })
    .await?;
    let Some(key) = key else {
        return Ok(());
    };
    if let Err(retry_after) = exchange.context.app.gateways.admit_provider_key(
        &exchange.account,
        &exchange.gateway.id,
        &key,
        unix_millis().max(0) as u64,
    ) {
        return Err(KilnError::new(
            ErrorKind::GatewayRateLimited,
            format!(
                "the stored {} key {:?} is over its rate limit; it may be used again in {retry_after} s",
                call.provider, key.alias
            ),
        ));
    }
    put_key(call, &key)
}

/// Whether the call carries its own credential: for Kiln's own routes any token (or the
/// binding's trust), for another server a credential header that is not a Kiln token (those
/// never leave Kiln).
fn brings_own_key(exchange: &Exchange, call: &ProviderCall) -> bool {
    let local = matches!(call.target, Target::Local(_));
    if local && call.on_behalf_of.is_some() {
        return true;
    }
    CREDENTIAL_HEADERS.iter().any(|name| {
        call.headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|value| local || !super::upstream::is_kiln_token(&exchange.context, value))
    })
}

/// The key in the header its provider reads: Anthropic `x-api-key`, Google AI Studio
/// `x-goog-api-key`, Azure OpenAI `api-key`, ElevenLabs `xi-api-key`, everyone else a bearer
/// token.
fn put_key(call: &mut ProviderCall, key: &StoredKey) -> KilnResult<()> {
    let slug = call
        .provider
        .strip_prefix("custom-")
        .unwrap_or(&call.provider);
    let (name, value) = match slug {
        "anthropic" => ("x-api-key", key.secret.clone()),
        "google-ai-studio" => ("x-goog-api-key", key.secret.clone()),
        "azure-openai" => ("api-key", key.secret.clone()),
        "elevenlabs" => ("xi-api-key", key.secret.clone()),
        _ => ("authorization", format!("Bearer {}", key.secret)),
    };
    let value = HeaderValue::from_str(&value).map_err(|_| {
        KilnError::bad_input(format!(
            "the stored {} key {:?} holds characters a header cannot carry",
            call.provider, key.alias
        ))
    })?;
    for stale in CREDENTIAL_HEADERS {
        call.headers.remove(stale);
    }
    call.headers.insert(HeaderName::from_static(name), value);
    Ok(())
}
