//! Where accounts, tokens, usage and spending limits are kept: one SQLite file (the default,
//! nothing to install) or a PostgreSQL database shared by a cluster's nodes.
//!
//! The stores above ([`crate::AccountStore`], [`crate::UsageLedger`],
//! [`crate::SpendingLimits`]) keep their hot paths in memory and call a [`Backend`] only to
//! write, to reload after a change, and for reports. Each backend is one module with the same
//! statements; the crate's tests run against both.

mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::path::PathBuf;

use kiln_core::{ErrorKind, KilnError, KilnResult};

use crate::account::{Account, Plan};
use crate::snapshot::Snapshot;
use crate::spending_limit::SpendingLimit;
use crate::token::{SecretHash, TokenInfo};
use crate::usage::{Pending, UsageFilter, UsageRow};

pub use self::postgres::PostgresAccounts;

/// Which database the account stores use.
#[derive(Clone)]
pub enum AccountsDb {
    /// One SQLite file, shared by the server and short-lived CLI processes on this machine.
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by every node of a cluster.
    Postgres(PostgresAccounts),
}

impl AccountsDb {
    /// Connects to PostgreSQL at `url`, applies the schema's migrations and starts listening
    /// for account and token changes made by other nodes.
    pub fn postgres(url: &str) -> KilnResult<AccountsDb> {
        Ok(AccountsDb::Postgres(PostgresAccounts::connect(url)?))
    }

    /// For logs: the file, or the server without its password.
    pub fn describe(&self) -> String {
        match self {
            AccountsDb::Sqlite(path) => format!("SQLite file {}", path.display()),
            AccountsDb::Postgres(pg) => format!("PostgreSQL {}", pg.describe()),
        }
    }

    /// A connection (SQLite) or a handle on the shared pool (PostgreSQL).
    pub(crate) fn open(&self) -> KilnResult<Box<dyn Backend>> {
        match self {
            AccountsDb::Sqlite(path) => Ok(Box::new(sqlite::SqliteBackend::open(path)?)),
            AccountsDb::Postgres(pg) => Ok(Box::new(pg.backend())),
        }
    }
}

/// The statements the stores need. Errors are already Kiln errors: conflicts and missing rows
/// with their kinds, storage failures as internal (SQLite) or unavailable (PostgreSQL).
pub(crate) trait Backend: Send {
    /// `Conflict` when the id is taken.
    fn insert_account(&mut self, account: &Account) -> KilnResult<()>;
    /// Whether the account exists.
    fn set_plan(&mut self, id: &str, plan: Plan) -> KilnResult<bool>;
    /// `NotFound` when the account does not exist.
    fn insert_token(&mut self, info: &TokenInfo, hash: &SecretHash) -> KilnResult<()>;
    /// Whether the token exists (revoking a revoked token changes nothing and succeeds).
    fn revoke_token(&mut self, id: &str, now_ms: i64) -> KilnResult<bool>;
    /// A cheap check, made before every authentication: `false` means accounts and tokens
    /// certainly did not change since the last [`Backend::read_snapshot`].
    fn may_have_changed(&mut self) -> KilnResult<bool>;
    /// The counter that every account or token change moves.
    fn generation(&mut self) -> KilnResult<i64>;
    /// Every account and token, with the generation they were read at.
    fn read_snapshot(&mut self) -> KilnResult<Snapshot>;

    /// Neurons per account on `day`, as stored.
    fn neurons_by_account(&mut self, day: &str) -> KilnResult<HashMap<String, f64>>;
    /// Adds the amounts to their rows, in one transaction.
    fn add_usage(&mut self, pending: &Pending) -> KilnResult<()>;
    /// Rows by day (newest first), account, model. The filter's days are already checked.
    fn usage_report(&mut self, filter: &UsageFilter) -> KilnResult<Vec<UsageRow>>;

    fn spending_limits(&mut self) -> KilnResult<HashMap<String, SpendingLimit>>;
    fn set_spending_limit(
        &mut self,
        account_id: &str,
        limit: &SpendingLimit,
        now_ms: i64,
    ) -> KilnResult<()>;
    fn clear_spending_limit(&mut self, account_id: &str) -> KilnResult<()>;
}

pub(crate) fn account_exists(id: &str) -> KilnError {
    KilnError::new(ErrorKind::Conflict, format!("account {id} already exists"))
}

pub(crate) fn no_account(id: &str) -> KilnError {
    KilnError::new(ErrorKind::NotFound, format!("no account {id}"))
}

/// The report's statement for `filter` and its parameters in order; `placeholder(n)` spells
/// the n-th (from 1) parameter as the database wants it (`?n`, `$n`).
pub(crate) fn usage_report_query(
    filter: &UsageFilter,
    placeholder: fn(usize) -> String,
) -> (String, Vec<String>) {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    for (column, value) in [
        ("account_id =", &filter.account_id),
        ("model =", &filter.model),
        ("day >=", &filter.since_day),
        ("day <=", &filter.until_day),
    ] {
        if let Some(value) = value {
            values.push(value.clone());
            conditions.push(format!("{column} {}", placeholder(values.len())));
        }
    }
    let mut sql = String::from(
        "SELECT day, account_id, model, requests, input_tokens, output_tokens, neurons
         FROM usage_daily",
    );
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(" ORDER BY day DESC, account_id, model");
    (sql, values)
}

/// SQL integers are signed; counters saturate rather than wrap.
pub(crate) fn to_sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn from_sql_int(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A stored plan; an unreadable one gets the stricter treatment.
pub(crate) fn plan_from_text(text: &str) -> Plan {
    text.parse().unwrap_or(Plan::Free)
}

/// A stored limit, or `None` (with a warning) when a row is unreadable.
pub(crate) fn spending_limit_from_row(
    account_id: &str,
    amount: f64,
    duration: &str,
    strategy: &str,
) -> Option<SpendingLimit> {
    let parsed = duration.parse().and_then(|duration| {
        strategy
            .parse()
            .and_then(|strategy| SpendingLimit::new(amount, duration, strategy))
    });
    match parsed {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(account_id, %error, "ignoring an unreadable spending limit row");
            None
        }
    }
}
