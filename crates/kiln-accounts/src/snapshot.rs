//! The in-memory copy of accounts and tokens that every request reads, and when to reload it.
//!
//! Before each read the backend answers a cheap "may anything have changed?" (SQLite: has
//! another connection committed; PostgreSQL: has a change been notified). Only then is the
//! one-row generation read, and only if that moved is everything reread: usage flushes and
//! other unrelated commits cost no reload.

use std::collections::HashMap;

use kiln_core::KilnResult;

use crate::account::Account;
use crate::backend::Backend;
use crate::token::{SecretHash, TokenInfo};

#[derive(Default)]
pub(crate) struct Snapshot {
    pub generation: i64,
    pub accounts: HashMap<String, Account>,
    pub tokens: HashMap<String, (SecretHash, TokenInfo)>,
    pub live_tokens: usize,
}

impl Snapshot {
    pub fn at(generation: i64) -> Snapshot {
        Snapshot {
            generation,
            ..Snapshot::default()
        }
    }

    pub fn add_account(&mut self, account: Account) {
        self.accounts.insert(account.id.clone(), account);
    }

    /// Skips (with a warning) a row whose stored hash is not 32 bytes.
    pub fn add_token(&mut self, hash: &[u8], info: TokenInfo) {
        let Ok(hash) = SecretHash::try_from(hash) else {
            tracing::warn!(token_id = %info.id, "ignoring token row with a malformed hash");
            return;
        };
        if !info.revoked {
            self.live_tokens += 1;
        }
        self.tokens.insert(info.id.clone(), (hash, info));
    }
}

/// The backend plus what has been read through it.
pub(crate) struct Cached {
    pub db: Box<dyn Backend>,
    pub snapshot: Snapshot,
}

impl Cached {
    pub fn new(mut db: Box<dyn Backend>) -> KilnResult<Self> {
        let snapshot = db.read_snapshot()?;
        Ok(Cached { db, snapshot })
    }

    /// Reloads if anyone (another process or node) changed accounts or tokens since we last
    /// looked.
    pub fn refresh(&mut self) -> KilnResult<()> {
        if self.db.may_have_changed()? && self.db.generation()? != self.snapshot.generation {
            self.reload()?;
        }
        Ok(())
    }

    /// Rereads everything; also called after this instance's own writes.
    pub fn reload(&mut self) -> KilnResult<()> {
        self.snapshot = self.db.read_snapshot()?;
        Ok(())
    }
}
