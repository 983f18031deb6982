//! `GET /accounts/{account_id}/ai/usage?since=&until=&model=`: the account's requests, tokens
//! and neurons per UTC day and model (a Kiln extension; `kiln usage` shows every account), and
//! its requests-per-minute windows as they stand.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use kiln_accounts::UsageFilter;
use kiln_core::{KilnError, KilnResult};
use serde::Deserialize;
use serde_json::json;

use super::Caller;
use crate::envelope::{success, ApiError};
use crate::offload::off_runtime;
use crate::SharedState;

#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    /// First day, `YYYY-MM-DD` (UTC), inclusive.
    since: Option<String>,
    /// Last day, inclusive.
    until: Option<String>,
    model: Option<String>,
}

pub async fn usage(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let answer = move || -> KilnResult<Response> {
        // The ledger refuses days not in YYYY-MM-DD form.
        let Query(query) = query.map_err(|e| KilnError::bad_input(e.body_text()))?;
        // The middleware has matched the path's account to the caller's.
        let account = caller.account;
        let state = &state.platform;
        // Writes pending usage to SQLite, then queries it.
        let rows = state.ledger.report(UsageFilter {
            account_id: Some(account.clone()),
            model: query.model,
            since_day: query.since,
            until_day: query.until,
        })?;
        let neurons: f64 = rows.iter().map(|row| row.neurons).sum();
        let plan = state
            .accounts
            .account(&account)?
            .map_or(state.settings.default_plan, |a| a.plan);
        let today = kiln_accounts::utc_day(state.clock.now_unix_ms());
        Ok(success(json!({
            "account_id": account,
            "plan": plan,
            "free_neurons_per_day": state.settings.free_neurons_per_day,
            "today": today,
            "neurons_today": super::meter::rounded(state.ledger.spent_today(&account)),
            "neurons": super::meter::rounded(neurons),
            "rows": rows,
            "rate_limits": {
                "apply": state.rate_limits_apply(),
                "windows": state.limiter.windows_of(&account).map_err(|down| {
                    KilnError::new(kiln_core::ErrorKind::LimiterUnavailable, down.to_string())
                })?,
            },
        }))
        .into_response())
    };
    off_runtime("usage report", answer)
        .await
        .unwrap_or_else(|error| ApiError::from(error).into_response())
}
