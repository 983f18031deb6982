//! The in-memory copy of accounts and tokens that every request reads, and when to reload it.
//!
//! `PRAGMA data_version` changes when another connection commits, which is cheap to ask on
//! every request. Because usage flushes also commit to this file, a changed data_version only
//! triggers a one-row read of `auth_generation` (bumped by triggers on account and token
//! changes); the full reload happens only when that moved.

use std::collections::HashMap;

use kiln_core::KilnResult;
use rusqlite::{Connection, OptionalExtension};

use crate::account::{Account, Plan};
use crate::db::db_error;
use crate::token::{scopes_from_text, SecretHash, TokenInfo};

#[derive(Default)]
pub(crate) struct Snapshot {
    pub generation: i64,
    pub accounts: HashMap<String, Account>,
    pub tokens: HashMap<String, (SecretHash, TokenInfo)>,
    pub live_tokens: usize,
}

/// The connection plus what has been read through it.
pub(crate) struct Cached {
    pub db: Connection,
    pub snapshot: Snapshot,
    seen_data_version: i64,
}

impl Cached {
    pub fn new(db: Connection) -> KilnResult<Self> {
        let mut cached = Cached {
            db,
            snapshot: Snapshot::default(),
            seen_data_version: 0,
        };
        cached.reload()?;
        Ok(cached)
    }

    /// Reloads if another process changed accounts or tokens since we last looked.
    pub fn refresh(&mut self) -> KilnResult<()> {
        let data_version = data_version(&self.db)?;
        if data_version == self.seen_data_version {
            return Ok(());
        }
        self.seen_data_version = data_version;
        if generation(&self.db)? != self.snapshot.generation {
            self.reload()?;
        }
        Ok(())
    }

    /// Rereads everything; also called after this instance's own writes, which do not move
    /// this connection's data_version.
    pub fn reload(&mut self) -> KilnResult<()> {
        self.seen_data_version = data_version(&self.db)?;
        // One read transaction, so the generation matches the rows read with it.
        let tx = self.db.transaction().map_err(db_error)?;
        let snapshot = read_snapshot(&tx)?;
        tx.commit().map_err(db_error)?;
        self.snapshot = snapshot;
        Ok(())
    }
}

fn data_version(db: &Connection) -> KilnResult<i64> {
    db.query_row("PRAGMA data_version", [], |row| row.get(0))
        .map_err(db_error)
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
    let mut snapshot = Snapshot {
        generation: generation(db)?,
        ..Snapshot::default()
    };
    let mut accounts = db
        .prepare("SELECT id, name, plan, created_at_ms FROM accounts")
        .map_err(db_error)?;
    let rows = accounts
        .query_map([], |row| {
            Ok(Account {
                id: row.get(0)?,
                name: row.get(1)?,
                // An unreadable plan gets the stricter treatment.
                plan: row.get::<_, String>(2)?.parse().unwrap_or(Plan::Free),
                created_at_ms: row.get(3)?,
            })
        })
        .map_err(db_error)?;
    for account in rows {
        let account = account.map_err(db_error)?;
        snapshot.accounts.insert(account.id.clone(), account);
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
            Ok((SecretHash::try_from(hash.as_slice()).ok(), info))
        })
        .map_err(db_error)?;
    for row in rows {
        let (hash, info) = row.map_err(db_error)?;
        let Some(hash) = hash else {
            tracing::warn!(token_id = %info.id, "ignoring token row with a malformed hash");
            continue;
        };
        if !info.revoked {
            snapshot.live_tokens += 1;
        }
        snapshot.tokens.insert(info.id.clone(), (hash, info));
    }
    Ok(snapshot)
}
