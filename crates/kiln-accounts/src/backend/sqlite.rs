//! The SQLite backend: one file per deployment, WAL mode, opened by the server and by
//! short-lived CLI processes at once.

use std::collections::HashMap;
use std::path::Path;

use kiln_core::{KilnError, KilnResult};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};

use super::{
    account_exists, from_sql_int, no_account, plan_from_text, spending_limit_from_row, to_sql_int,
    usage_report_query, Backend,
};
use crate::account::{Account, Plan};
use crate::snapshot::Snapshot;
use crate::spending_limit::SpendingLimit;
use crate::token::{scopes_from_text, scopes_to_text, SecretHash, TokenInfo};
use crate::usage::{Pending, UsageFilter, UsageRow};

/// Accounts, tokens and usage. `auth_generation` is bumped by triggers on every change to
/// accounts or tokens, whichever process makes it, so a reader can tell a token change from
/// unrelated commits (usage flushes) without rereading the tokens.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    plan TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret_sha256 BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS usage_daily (
    account_id TEXT NOT NULL,
    day TEXT NOT NULL,
    model TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    neurons REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, day, model)
);
CREATE INDEX IF NOT EXISTS usage_daily_by_day ON usage_daily (day);
CREATE TABLE IF NOT EXISTS spending_limits (
    account_id TEXT PRIMARY KEY,
    amount REAL NOT NULL,
    duration TEXT NOT NULL,
    strategy TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n INTEGER NOT NULL
);
INSERT OR IGNORE INTO auth_generation (id, n) VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS accounts_insert AFTER INSERT ON accounts
    BEGIN UPDATE auth_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS accounts_update AFTER UPDATE ON accounts
    BEGIN UPDATE auth_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS accounts_delete AFTER DELETE ON accounts
    BEGIN UPDATE auth_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS api_tokens_insert AFTER INSERT ON api_tokens
    BEGIN UPDATE auth_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS api_tokens_update AFTER UPDATE ON api_tokens
    BEGIN UPDATE auth_generation SET n = n + 1; END;
CREATE TRIGGER IF NOT EXISTS api_tokens_delete AFTER DELETE ON api_tokens
    BEGIN UPDATE auth_generation SET n = n + 1; END;
";

pub(crate) struct SqliteBackend {
    db: Connection,
    /// `PRAGMA data_version` when the snapshot was read: it moves when another connection
    /// commits, and is cheap enough to ask before every authentication.
    seen_data_version: i64,
}

impl SqliteBackend {
    /// Opens (creating if needed) the file and its parent directories, with the schema in place.
    pub(crate) fn open(path: &Path) -> KilnResult<SqliteBackend> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|error| storage(format!("creating {}: {error}", parent.display())))?;
        }
        // The server and CLI processes open and write it concurrently.
        let db = kiln_sqlite::open(path, kiln_sqlite::Durability::Normal).map_err(db_error)?;
        // Two processes opening a fresh file at once both run this; IF NOT EXISTS keeps it
        // safe and the immediate transaction keeps it atomic.
        kiln_sqlite::retry_while_busy(|| {
            db.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} COMMIT;"))
        })
        .map_err(db_error)?;
        Ok(SqliteBackend {
            db,
            seen_data_version: 0,
        })
    }

    fn data_version(&self) -> KilnResult<i64> {
        self.db
            .query_row("PRAGMA data_version", [], |row| row.get(0))
            .map_err(db_error)
    }
}

impl Backend for SqliteBackend {
    fn insert_account(&mut self, account: &Account) -> KilnResult<()> {
        let inserted = self.db.execute(
            "INSERT INTO accounts (id, name, plan, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![
                account.id,
                account.name,
                account.plan.as_str(),
                account.created_at_ms
            ],
        );
        match inserted {
            Ok(_) => Ok(()),
            Err(error) if kiln_sqlite::is_unique_violation(&error) => {
                Err(account_exists(&account.id))
            }
            Err(error) => Err(db_error(error)),
        }
    }

    fn set_plan(&mut self, id: &str, plan: Plan) -> KilnResult<bool> {
        let changed = self
            .db
            .execute(
                "UPDATE accounts SET plan = ?1 WHERE id = ?2",
                params![plan.as_str(), id],
            )
            .map_err(db_error)?;
        Ok(changed > 0)
    }

    fn insert_token(&mut self, info: &TokenInfo, hash: &SecretHash) -> KilnResult<()> {
        // Immediate: the account check and the insert see the same database.
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)?;
        if !has_row(&tx, "accounts", &info.account_id)? {
            return Err(no_account(&info.account_id));
        }
        tx.execute(
            "INSERT INTO api_tokens
                 (id, account_id, name, scopes, secret_sha256, created_at_ms, revoked_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)",
            params![
                info.id,
                info.account_id,
                info.name,
                scopes_to_text(&info.scopes),
                hash.as_slice(),
                info.created_at_ms,
            ],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)
    }

    fn revoke_token(&mut self, id: &str, now_ms: i64) -> KilnResult<bool> {
        let changed = self
            .db
            .execute(
                "UPDATE api_tokens SET revoked_at_ms = ?1 WHERE id = ?2 AND revoked_at_ms IS NULL",
                params![now_ms, id],
            )
            .map_err(db_error)?;
        Ok(changed > 0 || has_row(&self.db, "api_tokens", id)?)
    }

    fn may_have_changed(&mut self) -> KilnResult<bool> {
        let data_version = self.data_version()?;
        let moved = data_version != self.seen_data_version;
        self.seen_data_version = data_version;
        Ok(moved)
    }

    fn generation(&mut self) -> KilnResult<i64> {
        generation(&self.db)
    }

    fn read_snapshot(&mut self) -> KilnResult<Snapshot> {
        // Our own commits do not move our data_version; read it before the rows.
        self.seen_data_version = self.data_version()?;
        // One read transaction, so the generation matches the rows read with it.
        let tx = self.db.transaction().map_err(db_error)?;
        let snapshot = read_snapshot(&tx)?;
        tx.commit().map_err(db_error)?;
        Ok(snapshot)
    }

    fn neurons_by_account(&mut self, day: &str) -> KilnResult<HashMap<String, f64>> {
        let mut select = self
            .db
            .prepare_cached(
                "SELECT account_id, SUM(neurons) FROM usage_daily WHERE day = ?1 GROUP BY 1",
            )
            .map_err(db_error)?;
        let rows = select
            .query_map([day], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(db_error)?;
        rows.collect::<Result<_, _>>().map_err(db_error)
    }

    fn add_usage(&mut self, pending: &Pending) -> KilnResult<()> {
        let tx = self.db.transaction().map_err(db_error)?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO usage_daily
                         (account_id, day, model, requests, input_tokens, output_tokens, neurons)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (account_id, day, model) DO UPDATE SET
                         requests = requests + excluded.requests,
                         input_tokens = input_tokens + excluded.input_tokens,
                         output_tokens = output_tokens + excluded.output_tokens,
                         neurons = neurons + excluded.neurons",
                )
                .map_err(db_error)?;
            for ((account, day, model), usage) in pending {
                upsert
                    .execute(params![
                        account,
                        day,
                        model,
                        to_sql_int(usage.requests),
                        to_sql_int(usage.input_tokens),
                        to_sql_int(usage.output_tokens),
                        usage.neurons,
                    ])
                    .map_err(db_error)?;
            }
        }
        tx.commit().map_err(db_error)
    }

    fn usage_report(&mut self, filter: &UsageFilter) -> KilnResult<Vec<UsageRow>> {
        let (sql, values) = usage_report_query(filter, |n| format!("?{n}"));
        let mut select = self.db.prepare(&sql).map_err(db_error)?;
        let rows = select
            .query_map(params_from_iter(values), |row| {
                Ok(UsageRow {
                    day: row.get(0)?,
                    account_id: row.get(1)?,
                    model: row.get(2)?,
                    requests: from_sql_int(row.get(3)?),
                    input_tokens: from_sql_int(row.get(4)?),
                    output_tokens: from_sql_int(row.get(5)?),
                    neurons: row.get(6)?,
                })
            })
            .map_err(db_error)?;
        rows.collect::<Result<_, _>>().map_err(db_error)
    }

    fn spending_limits(&mut self) -> KilnResult<HashMap<String, SpendingLimit>> {
        let mut select = self
            .db
            .prepare("SELECT account_id, amount, duration, strategy FROM spending_limits")
            .map_err(db_error)?;
        let rows = select
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, f64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })
            .map_err(db_error)?;
        let mut limits = HashMap::new();
        for row in rows {
            let (account, amount, duration, strategy) = row.map_err(db_error)?;
            if let Some(limit) = spending_limit_from_row(&account, amount, &duration, &strategy) {
                limits.insert(account, limit);
            }
        }
        Ok(limits)
    }

    fn set_spending_limit(
        &mut self,
        account_id: &str,
        limit: &SpendingLimit,
        now_ms: i64,
    ) -> KilnResult<()> {
        self.db
            .execute(
                "INSERT INTO spending_limits (account_id, amount, duration, strategy, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (account_id) DO UPDATE SET amount = excluded.amount,
                     duration = excluded.duration, strategy = excluded.strategy,
                     updated_at_ms = excluded.updated_at_ms",
                params![
                    account_id,
                    limit.amount,
                    limit.duration.as_str(),
                    limit.strategy.as_str(),
                    now_ms
                ],
            )
            .map_err(db_error)?;
        Ok(())
    }

    fn clear_spending_limit(&mut self, account_id: &str) -> KilnResult<()> {
        self.db
            .execute(
                "DELETE FROM spending_limits WHERE account_id = ?1",
                [account_id],
            )
            .map_err(db_error)?;
        Ok(())
    }
}

fn generation(db: &Connection) -> KilnResult<i64> {
    let n: Option<i64> = db
        .query_row("SELECT n FROM auth_generation WHERE id = 1", [], |row| {
            row.get(0)
        })
        .optional()
        .map_err(db_error)?;
    Ok(n.unwrap_or(0))
}

fn read_snapshot(db: &Connection) -> KilnResult<Snapshot> {
    let mut snapshot = Snapshot::at(generation(db)?);
    let mut accounts = db
        .prepare("SELECT id, name, plan, created_at_ms FROM accounts")
        .map_err(db_error)?;
    let rows = accounts
        .query_map([], |row| {
            Ok(Account {
                id: row.get(0)?,
                name: row.get(1)?,
                plan: plan_from_text(&row.get::<_, String>(2)?),
                created_at_ms: row.get(3)?,
            })
        })
        .map_err(db_error)?;
    for account in rows {
        snapshot.add_account(account.map_err(db_error)?);
    }
    let mut tokens = db
        .prepare(
            "SELECT id, account_id, name, scopes, secret_sha256, created_at_ms,
                    revoked_at_ms IS NOT NULL
             FROM api_tokens",
        )
        .map_err(db_error)?;
    let rows = tokens
        .query_map([], |row| {
            let hash: Vec<u8> = row.get(4)?;
            let info = TokenInfo {
                id: row.get(0)?,
                account_id: row.get(1)?,
                name: row.get(2)?,
                scopes: scopes_from_text(&row.get::<_, String>(3)?),
                created_at_ms: row.get(5)?,
                revoked: row.get(6)?,
            };
            Ok((hash, info))
        })
        .map_err(db_error)?;
    for row in rows {
        let (hash, info) = row.map_err(db_error)?;
        snapshot.add_token(&hash, info);
    }
    Ok(snapshot)
}

/// Whether `table` has a row with this `id`.
fn has_row(db: &Connection, table: &str, id: &str) -> KilnResult<bool> {
    db.query_row(
        &format!("SELECT 1 FROM {table} WHERE id = ?1"),
        [id],
        |_| Ok(()),
    )
    .optional()
    .map(|row| row.is_some())
    .map_err(db_error)
}

fn db_error(error: rusqlite::Error) -> KilnError {
    storage(error.to_string())
}

fn storage(message: String) -> KilnError {
    KilnError::internal(format!("accounts storage: {message}"))
}
