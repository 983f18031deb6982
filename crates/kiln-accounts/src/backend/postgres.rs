//! The PostgreSQL backend: one database (and schema, from the URL's `search_path`) shared by
//! every node of a cluster.
//!
//! Account and token changes move `auth_generation` and send `NOTIFY kiln_auth` from a trigger,
//! delivered only after their transaction commits; each node's listener thread counts them, so
//! a token revoked through one node is refused by every other within one round trip of the
//! notification. The count is only a hint: a node also rechecks the generation every
//! [`RECHECK`], in case a notification was lost with a connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_core::{KilnError, KilnResult};
use kiln_postgres::types::ToSql;
use kiln_postgres::{IsolationLevel, Listener, Migration, PgError, PgErrorKind, Pool};

use super::{
    account_exists, from_sql_int, no_account, plan_from_text, spending_limit_from_row, to_sql_int,
    usage_report_query, Backend,
};
use crate::account::{Account, Plan};
use crate::snapshot::Snapshot;
use crate::spending_limit::SpendingLimit;
use crate::token::{scopes_from_text, scopes_to_text, SecretHash, TokenInfo};
use crate::usage::{Pending, UsageFilter, UsageRow};

/// Connections per node: the stores hold none between calls, so a few suffice.
const POOL_THREADS: usize = 4;
/// How long a node trusts its snapshot without a notification.
const RECHECK: Duration = Duration::from_secs(5);
/// After a failed check, how long authentication uses the snapshot it has without asking.
const BACKOFF: Duration = Duration::from_secs(1);
const CHANNEL: &str = "kiln_auth";

/// Released schemas, in order; never edit one that shipped (docs/cluster.md).
static MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "accounts, tokens, usage, spending limits",
    sql: "
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    plan TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret_sha256 BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
CREATE TABLE usage_daily (
    account_id TEXT NOT NULL,
    day TEXT NOT NULL,
    model TEXT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    neurons DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, day, model)
);
CREATE INDEX usage_daily_by_day ON usage_daily (day);
CREATE TABLE spending_limits (
    account_id TEXT PRIMARY KEY,
    amount DOUBLE PRECISION NOT NULL,
    duration TEXT NOT NULL,
    strategy TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE auth_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n BIGINT NOT NULL
);
INSERT INTO auth_generation (id, n) VALUES (1, 0);
CREATE FUNCTION kiln_auth_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE auth_generation SET n = n + 1 WHERE id = 1;
    -- The schema as payload: deployments sharing a database hear only their own changes.
    PERFORM pg_notify('kiln_auth', current_schema());
    RETURN NULL;
END
$$;
CREATE TRIGGER accounts_changed AFTER INSERT OR UPDATE OR DELETE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION kiln_auth_changed();
CREATE TRIGGER api_tokens_changed AFTER INSERT OR UPDATE OR DELETE ON api_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION kiln_auth_changed();
",
}];

/// The shared pool, the notification count and the listener that keeps it; cheap to clone.
#[derive(Clone)]
pub struct PostgresAccounts {
    pool: Pool,
    changes: Arc<AtomicU64>,
    _listener: Arc<Listener>,
}

impl PostgresAccounts {
    pub(crate) fn connect(url: &str) -> KilnResult<PostgresAccounts> {
        let pool = Pool::open(url, POOL_THREADS).map_err(storage_error)?;
        pool.migrate("accounts", MIGRATIONS)
            .map_err(storage_error)?;
        let schema: String = pool
            .run(|client| Ok(client.query_one("SELECT current_schema()", &[])?.get(0)))
            .map_err(storage_error)?;
        let changes = Arc::new(AtomicU64::new(0));
        let counted = changes.clone();
        let listener = pool
            .listen(CHANNEL, move |payload| {
                // `None`: (re)connected, so anything may have been missed.
                if payload.is_none_or(|payload| payload == schema) {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            })
            .map_err(storage_error)?;
        Ok(PostgresAccounts {
            pool,
            changes,
            _listener: Arc::new(listener),
        })
    }

    pub fn describe(&self) -> &str {
        self.pool.describe()
    }

    pub(crate) fn backend(&self) -> PostgresBackend {
        PostgresBackend {
            pool: self.pool.clone(),
            changes: self.changes.clone(),
            seen_changes: u64::MAX,
            checked_at: Instant::now(),
            backoff_until: None,
        }
    }
}

pub(crate) struct PostgresBackend {
    pool: Pool,
    changes: Arc<AtomicU64>,
    seen_changes: u64,
    checked_at: Instant,
    backoff_until: Option<Instant>,
}

impl PostgresBackend {
    fn run<T, F>(&mut self, job: F) -> KilnResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut kiln_postgres::Client) -> Result<T, PgError> + Send + 'static,
    {
        self.pool.run(job).map_err(storage_error)
    }
}

impl Backend for PostgresBackend {
    fn insert_account(&mut self, account: &Account) -> KilnResult<()> {
        let row = account.clone();
        let inserted = self.pool.run(move |client| {
            client.execute(
                "INSERT INTO accounts (id, name, plan, created_at_ms) VALUES ($1, $2, $3, $4)",
                &[&row.id, &row.name, &row.plan.as_str(), &row.created_at_ms],
            )?;
            Ok(())
        });
        match inserted {
            Err(error) if error.is_unique_violation() => Err(account_exists(&account.id)),
            other => other.map_err(storage_error),
        }
    }

    fn set_plan(&mut self, id: &str, plan: Plan) -> KilnResult<bool> {
        let id = id.to_owned();
        self.run(move |client| {
            let changed = client.execute(
                "UPDATE accounts SET plan = $1 WHERE id = $2",
                &[&plan.as_str(), &id],
            )?;
            Ok(changed > 0)
        })
    }

    fn insert_token(&mut self, info: &TokenInfo, hash: &SecretHash) -> KilnResult<()> {
        let account_id = info.account_id.clone();
        let info = info.clone();
        let hash = hash.to_vec();
        let inserted = self.pool.run(move |client| {
            client.execute(
                "INSERT INTO api_tokens
                     (id, account_id, name, scopes, secret_sha256, created_at_ms, revoked_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, NULL)",
                &[
                    &info.id,
                    &info.account_id,
                    &info.name,
                    &scopes_to_text(&info.scopes),
                    &hash,
                    &info.created_at_ms,
                ],
            )?;
            Ok(())
        });
        match inserted {
            // The foreign key is the account check, atomic with the insert.
            Err(error) if error.kind == PgErrorKind::ForeignKeyViolation => {
                Err(no_account(&account_id))
            }
            other => other.map_err(storage_error),
        }
    }

    fn revoke_token(&mut self, id: &str, now_ms: i64) -> KilnResult<bool> {
        let id = id.to_owned();
        self.run(move |client| {
            let changed = client.execute(
                "UPDATE api_tokens SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL",
                &[&now_ms, &id],
            )?;
            // Only an unchanged row needs telling apart: already revoked, or no such token.
            Ok(changed > 0
                || client
                    .query_opt("SELECT 1 FROM api_tokens WHERE id = $1", &[&id])?
                    .is_some())
        })
    }

    fn may_have_changed(&mut self) -> KilnResult<bool> {
        if self
            .backoff_until
            .is_some_and(|until| Instant::now() < until)
        {
            return Ok(false);
        }
        let changes = self.changes.load(Ordering::SeqCst);
        Ok(changes != self.seen_changes || self.checked_at.elapsed() >= RECHECK)
    }

    fn generation(&mut self) -> KilnResult<i64> {
        // Loaded before the query: a change notified after it is looked at again.
        let changes = self.changes.load(Ordering::SeqCst);
        let generation = self.run(|client| {
            Ok(client
                .query_one("SELECT n FROM auth_generation WHERE id = 1", &[])?
                .get(0))
        });
        match generation {
            Ok(n) => {
                self.seen_changes = changes;
                self.backoff_until = None;
                self.checked_at = Instant::now();
                Ok(n)
            }
            Err(error) => {
                self.backoff_until = Some(Instant::now() + BACKOFF);
                Err(error)
            }
        }
    }

    fn read_snapshot(&mut self) -> KilnResult<Snapshot> {
        // Taken before reading: a change committed during the read counts again.
        let changes = self.changes.load(Ordering::SeqCst);
        let snapshot = self.run(|client| {
            // One snapshot of the database, so the generation matches the rows.
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let generation: i64 = tx
                .query_one("SELECT n FROM auth_generation WHERE id = 1", &[])?
                .get(0);
            let mut snapshot = Snapshot::at(generation);
            for row in tx.query("SELECT id, name, plan, created_at_ms FROM accounts", &[])? {
                snapshot.add_account(Account {
                    id: row.get(0),
                    name: row.get(1),
                    plan: plan_from_text(row.get(2)),
                    created_at_ms: row.get(3),
                });
            }
            let tokens = tx.query(
                "SELECT id, account_id, name, scopes, secret_sha256, created_at_ms,
                        revoked_at_ms IS NOT NULL
                 FROM api_tokens",
                &[],
            )?;
            for row in tokens {
                let hash: Vec<u8> = row.get(4);
                snapshot.add_token(
                    &hash,
                    TokenInfo {
                        id: row.get(0),
                        account_id: row.get(1),
                        name: row.get(2),
                        scopes: scopes_from_text(row.get(3)),
                        created_at_ms: row.get(5),
                        revoked: row.get(6),
                    },
                );
            }
            tx.commit()?;
            Ok(snapshot)
        })?;
        self.seen_changes = changes;
        self.checked_at = Instant::now();
        self.backoff_until = None;
        Ok(snapshot)
    }

    fn neurons_by_account(&mut self, day: &str) -> KilnResult<HashMap<String, f64>> {
        let day = day.to_owned();
        self.run(move |client| {
            let rows = client.query(
                "SELECT account_id, SUM(neurons) FROM usage_daily WHERE day = $1 GROUP BY 1",
                &[&day],
            )?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }

    fn add_usage(&mut self, pending: &Pending) -> KilnResult<()> {
        // Every node upserts in the same key order, so two flushes never deadlock.
        let mut rows: Vec<_> = pending
            .iter()
            .map(|(key, usage)| (key.clone(), *usage))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        self.run(move |client| {
            let mut tx = client.transaction()?;
            let upsert = tx.prepare(
                "INSERT INTO usage_daily
                     (account_id, day, model, requests, input_tokens, output_tokens, neurons)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (account_id, day, model) DO UPDATE SET
                     requests = usage_daily.requests + excluded.requests,
                     input_tokens = usage_daily.input_tokens + excluded.input_tokens,
                     output_tokens = usage_daily.output_tokens + excluded.output_tokens,
                     neurons = usage_daily.neurons + excluded.neurons",
            )?;
            for ((account, day, model), usage) in &rows {
                tx.execute(
                    &upsert,
                    &[
                        account,
                        day,
                        model,
                        &to_sql_int(usage.requests),
                        &to_sql_int(usage.input_tokens),
                        &to_sql_int(usage.output_tokens),
                        &usage.neurons,
                    ],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn usage_report(&mut self, filter: &UsageFilter) -> KilnResult<Vec<UsageRow>> {
        let filter = filter.clone();
        self.run(move |client| {
            let (sql, values) = usage_report_query(&filter, |n| format!("${n}"));
            let values: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            let rows = client.query(&sql, &values)?;
            Ok(rows
                .iter()
                .map(|row| UsageRow {
                    day: row.get(0),
                    account_id: row.get(1),
                    model: row.get(2),
                    requests: from_sql_int(row.get(3)),
                    input_tokens: from_sql_int(row.get(4)),
                    output_tokens: from_sql_int(row.get(5)),
                    neurons: row.get(6),
                })
                .collect())
        })
    }

    fn spending_limits(&mut self) -> KilnResult<HashMap<String, SpendingLimit>> {
        let rows = self.run(|client| {
            Ok(client
                .query(
                    "SELECT account_id, amount, duration, strategy FROM spending_limits",
                    &[],
                )?
                .iter()
                .map(|row| {
                    let fields: (String, f64, String, String) =
                        (row.get(0), row.get(1), row.get(2), row.get(3));
                    fields
                })
                .collect::<Vec<_>>())
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(account, amount, duration, strategy)| {
                spending_limit_from_row(&account, amount, &duration, &strategy)
                    .map(|limit| (account, limit))
            })
            .collect())
    }

    fn set_spending_limit(
        &mut self,
        account_id: &str,
        limit: &SpendingLimit,
        now_ms: i64,
    ) -> KilnResult<()> {
        let account_id = account_id.to_owned();
        let limit = *limit;
        self.run(move |client| {
            client.execute(
                "INSERT INTO spending_limits (account_id, amount, duration, strategy, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (account_id) DO UPDATE SET amount = excluded.amount,
                     duration = excluded.duration, strategy = excluded.strategy,
                     updated_at_ms = excluded.updated_at_ms",
                &[
                    &account_id,
                    &limit.amount,
                    &limit.duration.as_str(),
                    &limit.strategy.as_str(),
                    &now_ms,
                ],
            )?;
            Ok(())
        })
    }

    fn clear_spending_limit(&mut self, account_id: &str) -> KilnResult<()> {
        let account_id = account_id.to_owned();
        self.run(move |client| {
            client.execute(
                "DELETE FROM spending_limits WHERE account_id = $1",
                &[&account_id],
            )?;
            Ok(())
        })
    }
}

fn storage_error(error: PgError) -> KilnError {
    error.into_kiln("accounts storage")
}
