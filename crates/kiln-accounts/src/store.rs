//! `AccountStore`: accounts and API tokens in SQLite, read through an in-memory snapshot.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kiln_core::{ErrorKind, KilnError, KilnResult};
use rusqlite::{params, TransactionBehavior};

use crate::account::{generate_account_id, validate_account_id, validate_name, Account, Plan};
use crate::clock::{Clock, SystemClock};
use crate::db::{connect, db_error, has_row};
use crate::scope::Scope;
use crate::snapshot::Cached;
use crate::token::{
    generate_secret, hash_matches, hash_secret, scopes_to_text, token_id_of, TokenInfo,
};
use kiln_sqlite::is_unique_violation;

pub struct AccountStore {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    cached: Mutex<Cached>,
}

impl AccountStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> KilnResult<AccountStore> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    /// As [`AccountStore::open`], with creation times taken from `clock`.
    pub fn open_with_clock(path: &Path, clock: Arc<dyn Clock>) -> KilnResult<AccountStore> {
        let cached = Cached::new(connect(path)?)?;
        Ok(AccountStore {
            path: path.to_owned(),
            clock,
            cached: Mutex::new(cached),
        })
    }

    /// The database file, for opening a [`crate::UsageLedger`] on it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates an account; `id` defaults to 32 random lowercase hex characters.
    pub fn create_account(&self, id: Option<&str>, name: &str, plan: Plan) -> KilnResult<Account> {
        if let Some(id) = id {
            validate_account_id(id)?;
        }
        validate_name("account", name)?;
        let account = Account {
            id: id.map_or_else(generate_account_id, str::to_owned),
            name: name.trim().to_owned(),
            plan,
            created_at_ms: self.clock.now_unix_ms(),
        };
        let mut cached = self.lock();
        let inserted = cached.db.execute(
            "INSERT INTO accounts (id, name, plan, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![
                account.id,
                account.name,
                plan.as_str(),
                account.created_at_ms
            ],
        );
        match inserted {
            Ok(_) => {}
            Err(error) if is_unique_violation(&error) => {
                return Err(KilnError::new(
                    ErrorKind::Conflict,
                    format!("account {} already exists", account.id),
                ));
            }
            Err(error) => return Err(db_error(error)),
        }
        cached.reload()?;
        Ok(account)
    }

    /// Every account, oldest first.
    pub fn accounts(&self) -> KilnResult<Vec<Account>> {
        let cached = self.refreshed()?;
        let mut accounts: Vec<Account> = cached.snapshot.accounts.values().cloned().collect();
        accounts.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(accounts)
    }

    pub fn account(&self, id: &str) -> KilnResult<Option<Account>> {
        Ok(self.refreshed()?.snapshot.accounts.get(id).cloned())
    }

    pub fn set_plan(&self, id: &str, plan: Plan) -> KilnResult<()> {
        let mut cached = self.lock();
        let changed = cached
            .db
            .execute(
                "UPDATE accounts SET plan = ?1 WHERE id = ?2",
                params![plan.as_str(), id],
            )
            .map_err(db_error)?;
        if changed == 0 {
            return Err(no_account(id));
        }
        cached.reload()
    }

    /// Creates a token and returns its secret: the only time the secret exists outside the
    /// caller's hands, since only its hash is stored.
    pub fn create_token(
        &self,
        account_id: &str,
        name: &str,
        scopes: &[Scope],
    ) -> KilnResult<(TokenInfo, String)> {
        validate_name("token", name)?;
        if scopes.is_empty() {
            return Err(KilnError::bad_input("a token needs at least one scope"));
        }
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let (id, secret) = generate_secret();
        let info = TokenInfo {
            id,
            account_id: account_id.to_owned(),
            name: name.trim().to_owned(),
            scopes,
            created_at_ms: self.clock.now_unix_ms(),
            revoked: false,
        };
        let mut cached = self.lock();
        // Immediate: the account check and the insert see the same database.
        let tx = cached
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_error)?;
        if !has_row(&tx, "accounts", account_id)? {
            return Err(no_account(account_id));
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
                hash_secret(&secret).as_slice(),
                info.created_at_ms,
            ],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        cached.reload()?;
        Ok((info, secret))
    }

    /// Tokens, revoked ones included, oldest first; all accounts' when `account_id` is None.
    pub fn tokens(&self, account_id: Option<&str>) -> KilnResult<Vec<TokenInfo>> {
        let cached = self.refreshed()?;
        let mut tokens: Vec<TokenInfo> = cached
            .snapshot
            .tokens
            .values()
            .map(|(_, info)| info)
            .filter(|info| account_id.is_none_or(|wanted| info.account_id == wanted))
            .cloned()
            .collect();
        tokens.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(tokens)
    }

    /// Revokes a token for good. Revoking an already revoked token succeeds.
    pub fn revoke_token(&self, token_id: &str) -> KilnResult<()> {
        let mut cached = self.lock();
        let now = self.clock.now_unix_ms();
        let changed = cached
            .db
            .execute(
                "UPDATE api_tokens SET revoked_at_ms = ?1 WHERE id = ?2 AND revoked_at_ms IS NULL",
                params![now, token_id],
            )
            .map_err(db_error)?;
        if changed == 0 && !has_row(&cached.db, "api_tokens", token_id)? {
            return Err(KilnError::new(
                ErrorKind::NotFound,
                format!("no token {token_id}"),
            ));
        }
        cached.reload()
    }

    /// The token a presented secret belongs to, if it is well formed, known, unrevoked and
    /// matches. Never logs the secret.
    pub fn authenticate(&self, secret: &str) -> Option<TokenInfo> {
        let token_id = token_id_of(secret)?;
        let cached = self.refreshed_or_stale();
        let (hash, info) = cached.snapshot.tokens.get(token_id)?;
        (!info.revoked && hash_matches(hash, secret)).then(|| info.clone())
    }

    /// Whether any unrevoked token exists.
    pub fn has_tokens(&self) -> bool {
        self.refreshed_or_stale().snapshot.live_tokens > 0
    }

    /// Whether a token was ever created, revoked ones included: once one was, `auto` mode
    /// stays closed, so revoking the last token never reopens the server.
    pub fn ever_had_tokens(&self) -> bool {
        !self.refreshed_or_stale().snapshot.tokens.is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, Cached> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refreshed(&self) -> KilnResult<MutexGuard<'_, Cached>> {
        let mut cached = self.lock();
        cached.refresh()?;
        Ok(cached)
    }

    /// For the per-request paths: a read failure (rare; readers do not block in WAL mode)
    /// serves the last snapshot rather than failing every request.
    fn refreshed_or_stale(&self) -> MutexGuard<'_, Cached> {
        let mut cached = self.lock();
        if let Err(error) = cached.refresh() {
            tracing::warn!(%error, "could not refresh accounts snapshot; using the last one");
        }
        cached
    }
}

fn no_account(id: &str) -> KilnError {
    KilnError::new(ErrorKind::NotFound, format!("no account {id}"))
}
