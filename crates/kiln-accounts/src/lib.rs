//! Accounts and API tokens, the daily neuron ledger and per-minute rate limits.
//!
//! Everything persistent lives in one SQLite file shared by the server and short-lived CLI
//! processes (`kiln tokens create`), or in a PostgreSQL database shared by a cluster's nodes
//! (`backend`); the hot paths (`authenticate`, `record`, `check_and_count`) are served from
//! memory.

mod account;
mod backend;
mod clock;
mod day;
mod rate_limit;
mod scope;
mod snapshot;
mod spending_limit;
mod store;
mod token;
mod usage;

pub use account::{Account, Plan};
pub use backend::{AccountsDb, PostgresAccounts};
pub use clock::{Clock, ManualClock, SystemClock};
pub use day::{next_utc_midnight_ms, utc_day};
pub use rate_limit::{
    default_limit_per_minute, purge_redis_prefix, LimiterUnavailable, RateLimited, RateLimiter,
    RedisLimits, Refused, WindowState,
};
pub use scope::{MissingScope, Scope};
pub use spending_limit::{
    cents_for_neurons, fixed_window_days, month_days, LimitDuration, LimitStrategy, Spend,
    SpendLimitReached, SpendingLimit, SpendingLimits, USD_PER_NEURON,
};
pub use store::AccountStore;
pub use token::TokenInfo;
pub use usage::{AllowanceExhausted, Usage, UsageFilter, UsageLedger, UsageRow};

#[cfg(test)]
mod tests;
