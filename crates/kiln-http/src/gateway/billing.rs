//! AI Gateway billing (spec §4.11, §4.12 "Other REST resources"): `/accounts/{account_id}/
//! ai-gateway/billing/…`, in the shapes of Cloudflare's API (`client.aiGateway.billing`).
//!
//! Kiln is free and sells no credits, and these routes say so rather than pretend: the balance
//! is zero, there are no invoices, top-ups are refused, and the invoice preview is for nothing
//! due, though it reports the period's neurons and what Cloudflare would charge for them. The
//! usage history is the account's neuron ledger. The spending limit is real: it is stored per
//! account and enforced on every request through the account's AI Gateways
//! ([`enforce_spending_limit`]), spend being the account's neurons at Cloudflare's price (see
//! `kiln_accounts::SpendingLimits`).
//!
//! Money follows Cloudflare's API: amounts in US cents, currency `usd`; times in answers are
//! Unix seconds, as in the Stripe objects these shapes come from, while `usage-history` takes
//! its `start_time` and `end_time` in milliseconds, as Cloudflare documents.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use kiln_accounts::{month_days, utc_day, SpendingLimit, UsageFilter, USD_PER_NEURON};
use kiln_core::time::civil_from_days;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use serde_json::{json, Value};

use super::admin::{stored, with_json_body};
use crate::envelope::ApiError;
use crate::offload::off_runtime;
use crate::paging::{Paging, ResultInfo, Unasked};
use crate::platform::meter::rounded;
use crate::SharedState;

type Pairs = Query<Vec<(String, String)>>;

const DAY_MS: i64 = 86_400_000;
const DAY_SECONDS: i64 = 86_400;
/// At most this many day buckets in one usage-history answer.
const MAX_HISTORY_DAYS: i64 = 1000;
/// The usage-history range when the query names none.
const DEFAULT_HISTORY_DAYS: i64 = 30;

/// Why every credit operation is refused.
const NO_CREDITS: &str = "Kiln sells no credits: every request it serves is free, so there is \
                          no balance to top up and nothing to pay for";

fn no_credits(what: &str) -> KilnError {
    KilnError::new(
        ErrorKind::BadInput,
        format!("{NO_CREDITS}; {what} is unavailable."),
    )
}

/// `GET …/billing/credit-balance`: zero, no payment method, no top-up.
pub async fn credit_balance() -> Response {
    crate::envelope::success(json!({
        "balance": 0,
        "has_default_payment_method": false,
        "payment_method": null,
        "topup_config": topup_config_json(),
        "first_topup_success": false,
    }))
    .into_response()
}

fn topup_config_json() -> Value {
    json!({
        "amount": null,
        "threshold": null,
        "disabledReason": format!("{NO_CREDITS}."),
        "error": null,
        "lastFailedAt": null,
    })
}

/// `GET …/billing/topup/config`: no auto top-up, and why.
pub async fn topup_config() -> Response {
    crate::envelope::success(topup_config_json()).into_response()
}

/// `POST …/billing/topup/config`: refused.
pub async fn create_topup_config() -> Response {
    ApiError::from(no_credits("auto top-up")).into_response()
}

/// `DELETE …/billing/topup/config`: there is none to remove.
pub async fn delete_topup_config() -> Response {
    crate::envelope::success(Value::Null).into_response()
}

/// `POST …/billing/topup`: refused, with 400.
pub async fn topup() -> Response {
    ApiError::from(no_credits("topping up")).into_response()
}

/// `POST …/billing/topup/status {payment_intent_id}`: no top-up ever existed.
pub async fn topup_status(
    State(state): State<SharedState>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    with_json_body(
        &state,
        &headers,
        request_body,
        "top-up status",
        |input| -> KilnResult<Value> {
            let id = input
                .get("payment_intent_id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    KilnError::bad_input("'payment_intent_id' is required and must be a string")
                })?;
            Err(KilnError::new(
                ErrorKind::NotFound,
                format!("no top-up {id}: {NO_CREDITS}"),
            ))
        },
    )
    .await
}

/// `GET …/billing/invoice-history?type=auto|manual|all&page=&per_page=`: no invoices, ever.
pub async fn invoice_history(Query(pairs): Pairs) -> Response {
    let answer = || -> KilnResult<Response> {
        if let Some((_, kind)) = pairs.iter().rev().find(|(name, _)| name == "type") {
            if !matches!(kind.as_str(), "auto" | "manual" | "all") {
                return Err(KilnError::bad_input(format!(
                    "'type' must be one of auto, manual, all; got {kind:?}"
                )));
            }
        }
        let paging = Paging::from_pairs(&pairs, Unasked::DefaultPage)?;
        let per_page = paging.per_page.unwrap_or(crate::paging::DEFAULT_PER_PAGE);
        let info = ResultInfo {
            page: paging.page as u64,
            per_page: per_page as u64,
            count: 0,
            total_count: 0,
        };
        Ok(info.envelope(json!({
            "invoices": [],
            "pagination": {
                "has_more": false,
                "page": paging.page,
                "per_page": per_page,
                "total_count": 0,
            },
        })))
    };
    answer().unwrap_or_else(|error| ApiError::from(error).into_response())
}

/// `GET …/billing/invoice-preview`: this UTC calendar month, nothing due, its neurons as the
/// one line's quantity and Cloudflare's price for them in the line's description.
pub async fn invoice_preview(
    State(state): State<SharedState>,
    Path(account): Path<String>,
) -> Response {
    stored("invoice preview", move || {
        let platform = &state.platform;
        let now = platform.clock.now_unix_ms();
        let today = now.div_euclid(DAY_MS);
        let (first, next) = month_days(today);
        let rows = platform.ledger.report(UsageFilter {
            account_id: Some(account),
            model: None,
            since_day: Some(utc_day(first * DAY_MS)),
            until_day: Some(utc_day(today * DAY_MS)),
        })?;
        let free = platform.settings.free_neurons_per_day.max(0.0);
        let mut by_day: HashMap<&str, f64> = HashMap::new();
        for row in &rows {
            *by_day.entry(row.day.as_str()).or_insert(0.0) += row.neurons;
        }
        let neurons: f64 = by_day.values().sum();
        let billable: f64 = by_day.values().map(|n| (n - free).max(0.0)).sum();
        let price = billable * USD_PER_NEURON;
        let (year, month, _) = civil_from_days(first);
        let period = json!({"start": first * DAY_SECONDS, "end": next * DAY_SECONDS});
        let description = format!(
            "Workers AI, {year:04}-{month:02} so far: {} neurons, {} of them beyond the free {} \
             a day, which Cloudflare would bill at $0.011 per 1,000 neurons: ${price:.4}. Kiln \
             is free: nothing is due.",
            rounded(neurons),
            rounded(billable),
            rounded(free),
        );
        Ok(json!({
            "id": format!("kiln-preview-{year:04}-{month:02}"),
            "amount_due": 0,
            "amount_paid": 0,
            "amount_remaining": 0,
            "currency": "usd",
            "invoice_lines": [{
                "amount": 0,
                "currency": "usd",
                "description": description,
                "period": period,
                "pricing": {"unit_amount_decimal": "0"},
                "quantity": rounded(neurons),
            }],
            "period_start": first * DAY_SECONDS,
            "period_end": next * DAY_SECONDS,
            "status": "draft",
        }))
    })
    .await
}

/// `GET …/billing/usage-history?value_grouping_window=day&start_time=&end_time=` (times in
/// Unix milliseconds; the last 30 days by default): the account's neurons per UTC day, oldest
/// first, days without usage included. The ledger keeps days, so `hour` is refused.
pub async fn usage_history(
    State(state): State<SharedState>,
    Path(account): Path<String>,
    Query(pairs): Pairs,
) -> Response {
    stored("usage history", move || {
        let platform = &state.platform;
        let (first, last) = history_days(&pairs, platform.clock.now_unix_ms())?;
        let rows = platform.ledger.report(UsageFilter {
            account_id: Some(account),
            model: None,
            since_day: Some(utc_day(first * DAY_MS)),
            until_day: Some(utc_day(last * DAY_MS)),
        })?;
        let mut by_day: HashMap<&str, f64> = HashMap::new();
        for row in &rows {
            *by_day.entry(row.day.as_str()).or_insert(0.0) += row.neurons;
        }
        let history: Vec<Value> = (first..=last)
            .map(|day| {
                let name = utc_day(day * DAY_MS);
                let neurons = by_day.get(name.as_str()).copied().unwrap_or(0.0);
                json!({
                    "id": format!("kiln-usage-{name}"),
                    "aggregated_value": rounded(neurons),
                    "start_time": day * DAY_SECONDS,
                    "end_time": (day + 1) * DAY_SECONDS,
                })
            })
            .collect();
        Ok(json!({"history": history}))
    })
    .await
}

/// The first and last UTC day (days since the epoch) the query's range touches.
fn history_days(pairs: &[(String, String)], now_ms: i64) -> KilnResult<(i64, i64)> {
    let value = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.trim())
            .filter(|value| !value.is_empty() && *value != "null")
    };
    match value("value_grouping_window") {
        Some("day") => {}
        Some("hour") => {
            return Err(KilnError::bad_input(
                "Kiln's neuron ledger keeps usage per UTC day, not per hour: use \
                 value_grouping_window=day",
            ))
        }
        Some(other) => {
            return Err(KilnError::bad_input(format!(
                "'value_grouping_window' must be day or hour; got {other:?}"
            )))
        }
        None => {
            return Err(KilnError::bad_input(
                "'value_grouping_window' is required (day)",
            ))
        }
    }
    let millis = |name: &str| -> KilnResult<Option<i64>> {
        let Some(text) = value(name) else {
            return Ok(None);
        };
        text.parse::<f64>()
            .ok()
            .filter(|ms| ms.is_finite() && *ms >= 0.0 && *ms < 1e15)
            .map(|ms| Some(ms as i64))
            .ok_or_else(|| {
                KilnError::bad_input(format!(
                    "'{name}' must be a Unix timestamp in milliseconds; got {text:?}"
                ))
            })
    };
    let (start, end) = match (millis("start_time")?, millis("end_time")?) {
        (Some(start), Some(end)) => (start, end),
        (Some(start), None) => (start, now_ms.max(start + 1)),
        (None, Some(end)) => ((end - DEFAULT_HISTORY_DAYS * DAY_MS).max(0), end),
        (None, None) => ((now_ms - DEFAULT_HISTORY_DAYS * DAY_MS).max(0), now_ms),
    };
    if start >= end {
        return Err(KilnError::bad_input(format!(
            "'start_time' ({start}) must be before 'end_time' ({end})"
        )));
    }
    let (first, last) = (start.div_euclid(DAY_MS), (end - 1).div_euclid(DAY_MS));
    if last - first + 1 > MAX_HISTORY_DAYS {
        return Err(KilnError::bad_input(format!(
            "the range spans {} days; at most {MAX_HISTORY_DAYS} at once",
            last - first + 1
        )));
    }
    Ok((first, last))
}

/// `GET …/billing/spending-limit`: `{config: {amount, duration, strategy}, enabled}`, all null
/// and `enabled: false` without one.
pub async fn spending_limit(
    State(state): State<SharedState>,
    Path(account): Path<String>,
) -> Response {
    let limit = state.platform.spending_limits.get(&account);
    crate::envelope::success(limit_json(limit)).into_response()
}

/// `POST …/billing/spending-limit {amount, duration: daily|weekly|monthly, strategy:
/// fixed|sliding}`, amount in US cents: sets or replaces the account's limit. (Cloudflare has
/// since deprecated this call in favour of per-gateway spend limits; Kiln keeps it working.)
pub async fn set_spending_limit(
    State(state): State<SharedState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let limits = state.platform.spending_limits.clone();
    let clock = state.platform.clock.clone();
    with_json_body(
        &state,
        &headers,
        request_body,
        "setting the spending limit",
        move |input| {
            let limit = parse_limit(input)?;
            limits.set(&account, limit, clock.now_unix_ms())?;
            Ok(limit_json(Some(limit)))
        },
    )
    .await
}

/// `DELETE …/billing/spending-limit`: lifts the account's limit (succeeds without one).
pub async fn delete_spending_limit(
    State(state): State<SharedState>,
    Path(account): Path<String>,
) -> Response {
    let limits = state.platform.spending_limits.clone();
    stored("removing the spending limit", move || {
        limits.clear(&account)?;
        Ok(limit_json(None))
    })
    .await
}

fn limit_json(limit: Option<SpendingLimit>) -> Value {
    match limit {
        Some(limit) => json!({
            "config": {
                "amount": limit.amount,
                "duration": limit.duration.as_str(),
                "strategy": limit.strategy.as_str(),
            },
            "enabled": true,
        }),
        None => json!({
            "config": {"amount": null, "duration": null, "strategy": null},
            "enabled": false,
        }),
    }
}

fn parse_limit(input: &Value) -> KilnResult<SpendingLimit> {
    let object = input
        .as_object()
        .ok_or_else(|| KilnError::bad_input("the body must be a JSON object"))?;
    let amount = match object.get("amount") {
        None | Some(Value::Null) => Err(KilnError::bad_input("'amount' (US cents) is required")),
        Some(Value::Number(number)) => number
            .as_f64()
            .ok_or_else(|| KilnError::bad_input("'amount' must be a number")),
        Some(other) => Err(KilnError::bad_input(format!(
            "'amount' must be a number of US cents; got {other}"
        ))),
    }?;
    let text = |name: &str| match object.get(name) {
        None | Some(Value::Null) => Err(KilnError::bad_input(format!("'{name}' is required"))),
        Some(Value::String(text)) => Ok(text.as_str()),
        Some(other) => Err(KilnError::bad_input(format!(
            "'{name}' must be a string; got {other}"
        ))),
    };
    SpendingLimit::new(
        amount,
        text("duration")?.parse()?,
        text("strategy")?.parse()?,
    )
}

/// Refuses a gateway request (429, naming the limit) once the account's spend in its limit's
/// current window has reached the limit. Called for every gateway request by `open_exchange`.
pub(super) async fn enforce_spending_limit(app: &SharedState, account: &str) -> KilnResult<()> {
    if app.platform.spending_limits.get(account).is_none() {
        return Ok(());
    }
    let (app, account) = (app.clone(), account.to_owned());
    off_runtime("checking the spending limit", move || {
        let platform = &app.platform;
        let now_ms = platform.clock.now_unix_ms();
        platform
            .spending_limits
            .check(&account, &platform.ledger, now_ms)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const NOW: i64 = 20_526 * DAY_MS + 3_600_000;

    #[test]
    fn usage_history_ranges() {
        let day = pairs(&[("value_grouping_window", "day")]);
        assert_eq!(history_days(&day, NOW).unwrap(), (20_496, 20_526));
        let range = pairs(&[
            ("value_grouping_window", "day"),
            ("start_time", &(20_500 * DAY_MS).to_string()),
            ("end_time", &(20_503 * DAY_MS).to_string()),
        ]);
        assert_eq!(history_days(&range, NOW).unwrap(), (20_500, 20_502));
        for bad in [
            vec![],
            vec![("value_grouping_window", "hour")],
            vec![("value_grouping_window", "week")],
            vec![("value_grouping_window", "day"), ("start_time", "soon")],
            vec![("value_grouping_window", "day"), ("end_time", "-5")],
            vec![
                ("value_grouping_window", "day"),
                ("start_time", "2000"),
                ("end_time", "1000"),
            ],
            vec![("value_grouping_window", "day"), ("start_time", "0")],
        ] {
            let error = history_days(&pairs(&bad), NOW).expect_err("refused");
            assert_eq!(error.kind, ErrorKind::BadInput, "{bad:?}");
        }
    }

    #[test]
    fn spending_limit_bodies() {
        let limit = parse_limit(&json!({"amount": 100, "duration": "daily", "strategy": "fixed"}))
            .expect("valid");
        assert_eq!(limit.amount, 100.0);
        for bad in [
            json!([]),
            json!({"duration": "daily", "strategy": "fixed"}),
            json!({"amount": "100", "duration": "daily", "strategy": "fixed"}),
            json!({"amount": 0, "duration": "daily", "strategy": "fixed"}),
            json!({"amount": -3, "duration": "daily", "strategy": "fixed"}),
            json!({"amount": 100, "duration": "yearly", "strategy": "fixed"}),
            json!({"amount": 100, "duration": "daily", "strategy": "leaky"}),
            json!({"amount": 100, "duration": "daily"}),
            json!({"amount": 100, "duration": 1, "strategy": "fixed"}),
        ] {
            let error = parse_limit(&bad).expect_err("refused");
            assert_eq!(error.kind, ErrorKind::BadInput, "{bad}");
        }
    }
}
