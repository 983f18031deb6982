//! `AccountStore`: accounts and API tokens in the backend, read through an in-memory snapshot.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kiln_core::{ErrorKind, KilnError, KilnResult};

use crate::account::{generate_account_id, validate_account_id, validate_name, Account, Plan};
use crate::backend::{no_account, AccountsDb};
use crate::clock::{Clock, SystemClock};
use crate::scope::Scope;
use crate::snapshot::Cached;
use crate::token::{generate_secret, hash_matches, hash_secret, token_id_of, TokenInfo};

pub struct AccountStore {
    db: AccountsDb,
    clock: Arc<dyn Clock>,
    cached: Mutex<Cached>,
}

impl AccountStore {
    /// Opens (creating if needed) the SQLite database at `path`.
    pub fn open(path: &Path) -> KilnResult<AccountStore> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    /// As [`AccountStore::open`], with creation times taken from `clock`.
    pub fn open_with_clock(path: &Path, clock: Arc<dyn Clock>) -> KilnResult<AccountStore> {
        Self::open_db(AccountsDb::Sqlite(path.to_owned()), clock)
    }

    /// The store on any backend.
    pub fn open_db(db: AccountsDb, clock: Arc<dyn Clock>) -> KilnResult<AccountStore> {
        let cached = Cached::new(db.open()?)?;
        Ok(AccountStore {
            db,
            clock,
            cached: Mutex::new(cached),
        })
    }

    /// The database, for opening a [`crate::UsageLedger`] or [`crate::SpendingLimits`] on it.
    pub fn db(&self) -> &AccountsDb {
        &self.db
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
        cached.db.insert_account(&account)?;
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
        if !cached.db.set_plan(id, plan)? {
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
        cached.db.insert_token(&info, &hash_secret(&secret))?;
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
        if !cached.db.revoke_token(token_id, self.clock.now_unix_ms())? {
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

    /// For the per-request paths: a read failure (rare with SQLite, whose readers do not block
    /// in WAL mode; a PostgreSQL outage) serves the last snapshot rather than failing every
    /// request.
    fn refreshed_or_stale(&self) -> MutexGuard<'_, Cached> {
        let mut cached = self.lock();
        if let Err(error) = cached.refresh() {
            tracing::warn!(%error, "could not refresh accounts snapshot; using the last one");
        }
        cached
    }
}
