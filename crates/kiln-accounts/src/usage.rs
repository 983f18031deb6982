//! The neuron ledger: usage per account, per UTC day, per model.
//!
//! `record` only touches memory; a background thread writes pending amounts to the backend in
//! one transaction at most every [`FLUSH_INTERVAL`]. Today's per-account totals stay in memory
//! for `check_allowance`: read from the backend at open, so a restart remembers what was spent,
//! and again after every flush and every [`SHARED_REFRESH`], so processes sharing a SQLite file
//! and nodes sharing a PostgreSQL ledger see each other's spend within about a second.

mod flusher;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use kiln_core::{ErrorKind, KilnError, KilnResult};
use serde::{Deserialize, Serialize};

use crate::account::Plan;
use crate::backend::{AccountsDb, Backend};
use crate::clock::Clock;
use crate::day::{is_day, next_utc_midnight_ms, utc_day};
use crate::store::AccountStore;

/// How long recorded usage may sit in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// How often a ledger rereads today's totals (other writers' spend) when it has nothing to
/// write.
pub const SHARED_REFRESH: Duration = Duration::from_secs(1);

/// What one or more requests consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub neurons: f64,
}

impl Usage {
    pub(crate) fn add(&mut self, other: &Usage) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.neurons += other.neurons;
    }
}

/// Which rows `report` returns; days are inclusive `YYYY-MM-DD` bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageFilter {
    pub account_id: Option<String>,
    pub model: Option<String>,
    pub since_day: Option<String>,
    pub until_day: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    pub day: String,
    pub account_id: String,
    pub model: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub neurons: f64,
}

/// A free account has used its daily allocation (Workers AI error 3036).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllowanceExhausted {
    pub spent: f64,
    pub allocation: f64,
    /// The next 00:00 UTC, when the allocation starts afresh.
    pub resets_at_ms: i64,
}

impl fmt::Display for AllowanceExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "You have used up your daily free allocation of {} neurons",
            format_thousands(self.allocation)
        )
    }
}

impl std::error::Error for AllowanceExhausted {}

impl From<AllowanceExhausted> for KilnError {
    fn from(exhausted: AllowanceExhausted) -> Self {
        KilnError::new(ErrorKind::AccountLimited, exhausted.to_string())
    }
}

/// `10000.0` → `10,000`, as the Workers AI message writes it.
fn format_thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// (account, day, model) → amounts not yet in the backend.
pub(crate) type Pending = HashMap<(String, String, String), Usage>;

struct State {
    /// The UTC day `today_neurons` is about.
    day: String,
    today_neurons: HashMap<String, f64>,
    pending: Pending,
    stopping: bool,
}

struct Shared {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Wakes the flusher when pending usage appears or on shutdown.
    wake: Condvar,
    /// Taken before `state` by whoever writes; flushes are serialised by it, so `flush()`
    /// returning means nothing taken by the background thread is still in flight.
    db: Mutex<Box<dyn Backend>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn db(&self) -> MutexGuard<'_, Box<dyn Backend>> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state with `today_neurons` moved to the clock's current day.
    fn state_for_today(&self) -> (MutexGuard<'_, State>, i64) {
        let now = self.clock.now_unix_ms();
        let today = utc_day(now);
        let mut state = self.state();
        if state.day != today {
            // A new day: nothing is spent yet but what this process records from now on.
            state.today_neurons = pending_neurons_for_day(&state.pending, &today);
            state.day = today;
        }
        (state, now)
    }
}

fn pending_neurons_for_day(pending: &Pending, day: &str) -> HashMap<String, f64> {
    let mut totals = HashMap::new();
    for ((account, pending_day, _), usage) in pending {
        if pending_day == day {
            *totals.entry(account.clone()).or_insert(0.0) += usage.neurons;
        }
    }
    totals
}

pub struct UsageLedger {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl UsageLedger {
    /// A ledger on the store's database, with its own connection.
    pub fn open(store: &AccountStore, clock: Arc<dyn Clock>) -> KilnResult<UsageLedger> {
        Self::open_db(store.db(), clock)
    }

    /// A ledger on the SQLite file at `path`.
    pub fn open_path(path: &Path, clock: Arc<dyn Clock>) -> KilnResult<UsageLedger> {
        Self::open_db(&AccountsDb::Sqlite(path.to_owned()), clock)
    }

    pub fn open_db(db: &AccountsDb, clock: Arc<dyn Clock>) -> KilnResult<UsageLedger> {
        let mut db = db.open()?;
        let day = utc_day(clock.now_unix_ms());
        let today_neurons = db.neurons_by_account(&day)?;
        let shared = Arc::new(Shared {
            clock,
            state: Mutex::new(State {
                day,
                today_neurons,
                pending: Pending::new(),
                stopping: false,
            }),
            wake: Condvar::new(),
            db: Mutex::new(db),
        });
        let flusher = flusher::spawn(shared.clone())?;
        Ok(UsageLedger {
            shared,
            flusher: Some(flusher),
        })
    }

    /// Adds `usage` to the account's row for today and `model`. Memory only; never blocks on
    /// the backend.
    pub fn record(&self, account_id: &str, model: &str, usage: &Usage) {
        let (mut state, _) = self.shared.state_for_today();
        let key = (account_id.to_owned(), state.day.clone(), model.to_owned());
        let was_idle = state.pending.is_empty();
        state.pending.entry(key).or_default().add(usage);
        *state
            .today_neurons
            .entry(account_id.to_owned())
            .or_insert(0.0) += usage.neurons;
        drop(state);
        if was_idle {
            self.shared.wake.notify_all();
        }
    }

    /// Neurons the account spent in the clock's current UTC day, unflushed amounts included.
    pub fn spent_today(&self, account_id: &str) -> f64 {
        let (state, _) = self.shared.state_for_today();
        state.today_neurons.get(account_id).copied().unwrap_or(0.0)
    }

    /// Free accounts are refused once today's spend reaches `free_neurons_per_day`; paid
    /// accounts never are.
    pub fn check_allowance(
        &self,
        account_id: &str,
        plan: Plan,
        free_neurons_per_day: f64,
    ) -> Result<(), AllowanceExhausted> {
        if plan == Plan::Paid {
            return Ok(());
        }
        let (state, now) = self.shared.state_for_today();
        let spent = state.today_neurons.get(account_id).copied().unwrap_or(0.0);
        if spent >= free_neurons_per_day {
            return Err(AllowanceExhausted {
                spent,
                allocation: free_neurons_per_day,
                resets_at_ms: next_utc_midnight_ms(now),
            });
        }
        Ok(())
    }

    /// Writes everything pending to the backend before returning.
    pub fn flush(&self) -> KilnResult<()> {
        flusher::write_pending(&self.shared)
    }

    /// Rows by day (newest first), account, model; unflushed amounts included.
    pub fn report(&self, filter: UsageFilter) -> KilnResult<Vec<UsageRow>> {
        for day in [&filter.since_day, &filter.until_day].into_iter().flatten() {
            if !is_day(day) {
                return Err(KilnError::bad_input(format!(
                    "day {day:?} is not in YYYY-MM-DD form"
                )));
            }
        }
        self.flush()?;
        self.shared.db().usage_report(&filter)
    }
}

impl Drop for UsageLedger {
    fn drop(&mut self) {
        self.shared.state().stopping = true;
        self.shared.wake.notify_all();
        if let Some(flusher) = self.flusher.take() {
            // The thread flushes on its way out; a panic there is already logged.
            let _ = flusher.join();
        }
        if let Err(error) = self.flush() {
            tracing::error!(%error, "usage ledger: final flush failed; recent usage is lost");
        }
    }
}
