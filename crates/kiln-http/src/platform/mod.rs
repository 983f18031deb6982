//! The multi-tenant platform around the models (spec §1.1, §7): who is calling (accounts and
//! scoped API tokens, [`authorize`]), how often they may (per-task requests per minute) and what
//! it costs them (neurons per account per UTC day, [`meter`]).

pub mod authorize;
pub mod meter;
pub mod token_routes;
pub mod usage_routes;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use kiln_accounts::{AccountStore, Clock, Plan, RateLimiter, UsageLedger};
use serde::Deserialize;

pub use authorize::{Caller, TrustedCall};
pub use meter::{Meter, ReportedUsage};

/// When requests must carry an API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Open until the first API token is created (`kiln tokens create`), then tokens only,
    /// for good: revoking every token leaves a closed server, not an open one.
    #[default]
    Auto,
    /// Every request is accepted, as the account its path names: a single-user machine.
    Open,
    /// Every request needs a valid token of the account it names.
    Tokens,
}

impl FromStr for AuthMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "open" => Ok(Self::Open),
            "tokens" => Ok(Self::Tokens),
            other => Err(format!(
                "unknown auth mode {other:?}: expected auto, open or tokens"
            )),
        }
    }
}

/// The knobs of [`Platform`], from `ServeConfig`.
#[derive(Debug, Clone)]
pub struct PlatformSettings {
    pub auth: AuthMode,
    /// Whether per-task requests-per-minute limits apply; `None`: only while tokens are
    /// required ([`Platform::rate_limits_apply`]).
    pub rate_limits: Option<bool>,
    /// Requests per minute by model id or task name, over Workers AI's defaults (0: unlimited).
    pub rpm_overrides: HashMap<String, u32>,
    /// A free account's daily neurons (spec §7: 10,000).
    pub free_neurons_per_day: f64,
    /// The plan of accounts that `kiln accounts create` never made (the open-mode account).
    pub default_plan: Plan,
    /// The account of requests that name none (the OpenAI routes in open mode, a Worker
    /// binding).
    pub default_account: String,
    /// Whether the Worker binding routes serve loopback callers without a token while tokens
    /// are required (an explicit opt-in: Kiln's own provider calls also come from loopback).
    pub trust_local_bindings: bool,
}

pub struct Platform {
    pub accounts: Arc<AccountStore>,
    pub ledger: Arc<UsageLedger>,
    pub limiter: RateLimiter,
    /// Accounts' spending limits on gateway traffic (`…/ai-gateway/billing/spending-limit`).
    pub spending_limits: Arc<kiln_accounts::SpendingLimits>,
    pub clock: Arc<dyn Clock>,
    pub settings: PlatformSettings,
}

impl Platform {
    pub fn new(
        accounts: Arc<AccountStore>,
        clock: Arc<dyn Clock>,
        settings: PlatformSettings,
    ) -> kiln_core::KilnResult<Self> {
        let ledger = Arc::new(UsageLedger::open(&accounts, clock.clone())?);
        let spending_limits = Arc::new(kiln_accounts::SpendingLimits::open(&accounts)?);
        Ok(Self {
            accounts,
            ledger,
            spending_limits,
            limiter: RateLimiter::new(clock.clone()),
            clock,
            settings,
        })
    }

    /// Whether requests are accepted without a token right now.
    pub fn is_open(&self) -> bool {
        match self.settings.auth {
            AuthMode::Open => true,
            AuthMode::Tokens => false,
            AuthMode::Auto => !self.accounts.ever_had_tokens(),
        }
    }

    /// The sentence `kiln serve` prints at start-up, loudly (`true`) when anyone may call or
    /// nobody can.
    pub fn startup_notice(&self) -> (bool, String) {
        let account = &self.settings.default_account;
        match (self.settings.auth, self.is_open()) {
            (AuthMode::Open, _) => (
                true,
                format!(
                    "OPEN MODE (--auth open): every request is accepted without an API token, as the \
                     account its path names (`{account}` where none is named). Use this only on a \
                     single-user machine."
                ),
            ),
            (_, true) => (
                true,
                format!(
                    "OPEN MODE: no API token exists yet, so every request is accepted without one, as \
                     the account its path names (`{account}` where none is named). Tokens are \
                     required as soon as one exists (`kiln accounts create`, then `kiln tokens \
                     create`); `--auth tokens` requires them always."
                ),
            ),
            (_, false) if !self.accounts.has_tokens() => (
                true,
                "EVERY API TOKEN IS REVOKED: requests get 401 until a token exists again \
                 (`kiln tokens create`). The server does not reopen: use `--auth open` to run \
                 without tokens on purpose."
                    .to_owned(),
            ),
            _ => (
                false,
                "API tokens required: every /client/v4/accounts/… and /v1/… request needs \
                 `Authorization: Bearer <token>` of its account"
                    .to_owned(),
            ),
        }
    }
}
