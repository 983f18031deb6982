//! Per-account spending limits (AI Gateway billing, spec §4.11): `{amount, duration, strategy}`
//! stored in the accounts backend, and the account's spend measured against them.
//!
//! Kiln sells nothing, so "spend" is what Cloudflare would charge for the account's neurons:
//! every neuron at [`USD_PER_NEURON`] ($0.011 per 1,000), the free daily allocation included
//! (there are no credits for it to be taken from). `amount` is in US cents, as Cloudflare's API
//! has it.
//!
//! Windows, all in UTC: `fixed` counts the current calendar day, ISO week (from Monday) or
//! month; `sliding` counts the trailing 1, 7 or 30 days. The ledger keeps neurons per UTC day,
//! so the oldest day of a sliding window counts in proportion to how much of it is still inside
//! the window (its neurons taken as spread evenly over that day).
//!
//! Limits are read from memory on the gateway's per-request path: loaded at open, changed by
//! [`SpendingLimits::set`] and [`SpendingLimits::clear`], and reread every [`LIMITS_RECHECK`]
//! so that a limit set through another node (or process) applies here too.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use kiln_core::time::{civil_from_days, format_millis};
use kiln_core::{ErrorKind, KilnError, KilnResult};
use serde::{Deserialize, Serialize};

use crate::backend::{AccountsDb, Backend};
use crate::day::utc_day;
use crate::store::AccountStore;
use crate::usage::{UsageFilter, UsageLedger};

/// Workers AI's list price (spec §7): $0.011 per 1,000 neurons.
pub const USD_PER_NEURON: f64 = 0.011 / 1000.0;

const DAY_MS: i64 = 86_400_000;
/// Days of usage a window may need besides today: a sliding month is the trailing 30 days
/// (the oldest partly inside), a fixed month at most 30 days before today.
const PAST_DAYS: usize = 30;

/// What Cloudflare would charge for `neurons`, in US cents.
pub fn cents_for_neurons(neurons: f64) -> f64 {
    neurons * USD_PER_NEURON * 100.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitDuration {
    Daily,
    Weekly,
    Monthly,
}

impl LimitDuration {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitDuration::Daily => "daily",
            LimitDuration::Weekly => "weekly",
            LimitDuration::Monthly => "monthly",
        }
    }

    /// A sliding window's length in days.
    fn days(self) -> usize {
        match self {
            LimitDuration::Daily => 1,
            LimitDuration::Weekly => 7,
            LimitDuration::Monthly => 30,
        }
    }
}

impl FromStr for LimitDuration {
    type Err = KilnError;

    fn from_str(text: &str) -> KilnResult<Self> {
        match text {
            "daily" => Ok(LimitDuration::Daily),
            "weekly" => Ok(LimitDuration::Weekly),
            "monthly" => Ok(LimitDuration::Monthly),
            _ => Err(KilnError::bad_input(format!(
                "'duration' must be one of daily, weekly, monthly; got {text:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitStrategy {
    /// Calendar windows (day, ISO week, month) that reset at their end.
    Fixed,
    /// The trailing 1, 7 or 30 days.
    Sliding,
}

impl LimitStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitStrategy::Fixed => "fixed",
            LimitStrategy::Sliding => "sliding",
        }
    }
}

impl FromStr for LimitStrategy {
    type Err = KilnError;

    fn from_str(text: &str) -> KilnResult<Self> {
        match text {
            "fixed" => Ok(LimitStrategy::Fixed),
            "sliding" => Ok(LimitStrategy::Sliding),
            _ => Err(KilnError::bad_input(format!(
                "'strategy' must be one of fixed, sliding; got {text:?}"
            ))),
        }
    }
}

/// An account's limit: at most `amount` US cents of spend per window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpendingLimit {
    pub amount: f64,
    pub duration: LimitDuration,
    pub strategy: LimitStrategy,
}

impl SpendingLimit {
    /// Refuses an amount that is not a finite number above zero.
    pub fn new(
        amount: f64,
        duration: LimitDuration,
        strategy: LimitStrategy,
    ) -> KilnResult<SpendingLimit> {
        if !amount.is_finite() || amount <= 0.0 {
            return Err(KilnError::bad_input(format!(
                "'amount' must be a finite number of US cents above 0; got {amount}"
            )));
        }
        Ok(SpendingLimit {
            amount,
            duration,
            strategy,
        })
    }
}

impl fmt::Display for SpendingLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} US cents, {} {}",
            self.amount,
            self.duration.as_str(),
            self.strategy.as_str()
        )
    }
}

/// An account's spend in its limit's current window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spend {
    pub limit: SpendingLimit,
    /// US cents at Cloudflare's price.
    pub spent_cents: f64,
    /// When the spend falls below the limit again if nothing more is spent: the fixed window's
    /// end, or the moment enough of a sliding window has slid out. Now, when under the limit.
    pub resets_at_ms: i64,
}

impl Spend {
    pub fn reached(&self) -> bool {
        self.spent_cents >= self.limit.amount
    }
}

/// The account's spending limit is used up: its AI Gateways refuse requests until
/// `resets_at_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpendLimitReached {
    pub spend: Spend,
    pub now_ms: i64,
}

impl fmt::Display for SpendLimitReached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Spend {
            limit,
            spent_cents,
            resets_at_ms,
        } = self.spend;
        let window = match limit.strategy {
            LimitStrategy::Fixed => "the window resets",
            LimitStrategy::Sliding => "enough of the sliding window has passed",
        };
        write!(
            f,
            "Spending limit reached: this account's AI Gateway spending limit of {} US cents \
             ({} {}) is used up ({spent_cents:.6} cents spent at $0.011 per 1,000 neurons). \
             Requests through its gateways resume at {}, when {window}, or when the limit is \
             raised or removed (DELETE /ai-gateway/billing/spending-limit).",
            limit.amount,
            limit.duration.as_str(),
            limit.strategy.as_str(),
            format_millis(resets_at_ms),
        )
    }
}

impl std::error::Error for SpendLimitReached {}

impl From<SpendLimitReached> for KilnError {
    fn from(reached: SpendLimitReached) -> Self {
        let wait_ms = reached.spend.resets_at_ms.saturating_sub(reached.now_ms);
        let seconds = u64::try_from(wait_ms.saturating_add(999) / 1000).unwrap_or(1);
        KilnError::new(ErrorKind::GatewayRateLimited, reached.to_string()).with_retry_after(seconds)
    }
}

/// How long a node serves limits from memory before rereading them.
const LIMITS_RECHECK: Duration = Duration::from_secs(5);

/// Neurons of the days before today, `[0]` yesterday, as of one UTC day.
struct PastDays {
    today: String,
    neurons: [f64; PAST_DAYS],
}

pub struct SpendingLimits {
    db: Mutex<Box<dyn Backend>>,
    limits: Mutex<HashMap<String, SpendingLimit>>,
    /// When `limits` was last read: limits set through other nodes (or processes) are seen
    /// within [`LIMITS_RECHECK`].
    loaded_at: Mutex<Instant>,
    /// Per account; earlier days do not change, so read once per day.
    past: Mutex<HashMap<String, PastDays>>,
}

impl SpendingLimits {
    /// The limits on the store's database, with their own connection.
    pub fn open(store: &AccountStore) -> KilnResult<SpendingLimits> {
        Self::open_db(store.db())
    }

    pub fn open_db(db: &AccountsDb) -> KilnResult<SpendingLimits> {
        let mut db = db.open()?;
        let limits = db.spending_limits()?;
        Ok(SpendingLimits {
            db: Mutex::new(db),
            limits: Mutex::new(limits),
            loaded_at: Mutex::new(Instant::now()),
            past: Mutex::new(HashMap::new()),
        })
    }

    /// The account's limit; from memory, reread from the backend every [`LIMITS_RECHECK`].
    pub fn get(&self, account_id: &str) -> Option<SpendingLimit> {
        self.reload_if_due();
        lock(&self.limits).get(account_id).copied()
    }

    fn reload_if_due(&self) {
        {
            let mut loaded_at = lock(&self.loaded_at);
            if loaded_at.elapsed() < LIMITS_RECHECK {
                return;
            }
            // Whatever the outcome, the next try waits: an outage costs one call per period.
            *loaded_at = Instant::now();
        }
        match lock(&self.db).spending_limits() {
            Ok(limits) => *lock(&self.limits) = limits,
            Err(error) => tracing::warn!(%error, "spending limits: reload failed; using the last"),
        }
    }

    /// Sets (or replaces) the account's limit.
    pub fn set(&self, account_id: &str, limit: SpendingLimit, now_ms: i64) -> KilnResult<()> {
        let limit = SpendingLimit::new(limit.amount, limit.duration, limit.strategy)?;
        lock(&self.db).set_spending_limit(account_id, &limit, now_ms)?;
        lock(&self.limits).insert(account_id.to_owned(), limit);
        Ok(())
    }

    /// Removes the account's limit; whether it had one.
    pub fn clear(&self, account_id: &str) -> KilnResult<bool> {
        lock(&self.db).clear_spending_limit(account_id)?;
        Ok(lock(&self.limits).remove(account_id).is_some())
    }

    /// The account's spend in its limit's window; `None` without a limit. Reads SQLite at most
    /// once per account and UTC day; today's neurons come from the ledger's memory.
    pub fn spend(
        &self,
        account_id: &str,
        ledger: &UsageLedger,
        now_ms: i64,
    ) -> KilnResult<Option<Spend>> {
        let Some(limit) = self.get(account_id) else {
            return Ok(None);
        };
        let past = self.past_days(account_id, ledger, now_ms)?;
        let mut days = [0.0; PAST_DAYS + 1];
        days[0] = ledger.spent_today(account_id);
        days[1..].copy_from_slice(&past);
        Ok(Some(measure(limit, &days, now_ms)))
    }

    /// `Err` (429, naming the limit) when the account's spend has reached its limit.
    pub fn check(&self, account_id: &str, ledger: &UsageLedger, now_ms: i64) -> KilnResult<()> {
        match self.spend(account_id, ledger, now_ms)? {
            Some(spend) if spend.reached() => Err(SpendLimitReached { spend, now_ms }.into()),
            _ => Ok(()),
        }
    }

    fn past_days(
        &self,
        account_id: &str,
        ledger: &UsageLedger,
        now_ms: i64,
    ) -> KilnResult<[f64; PAST_DAYS]> {
        let today = utc_day(now_ms);
        if let Some(cached) = lock(&self.past).get(account_id) {
            if cached.today == today {
                return Ok(cached.neurons);
            }
        }
        let today_index = now_ms.div_euclid(DAY_MS);
        let day_of = |back: i64| utc_day((today_index - back) * DAY_MS);
        let rows = ledger.report(UsageFilter {
            account_id: Some(account_id.to_owned()),
            model: None,
            since_day: Some(day_of(PAST_DAYS as i64)),
            until_day: Some(day_of(1)),
        })?;
        let mut neurons = [0.0; PAST_DAYS];
        for (back, slot) in neurons.iter_mut().enumerate() {
            let day = day_of(back as i64 + 1);
            *slot = rows
                .iter()
                .filter(|row| row.day == day)
                .map(|row| row.neurons)
                .sum();
        }
        lock(&self.past).insert(account_id.to_owned(), PastDays { today, neurons });
        Ok(neurons)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The first day (days since the epoch) of the fixed window containing `today`, and the first
/// day after it.
pub fn fixed_window_days(duration: LimitDuration, today: i64) -> (i64, i64) {
    match duration {
        LimitDuration::Daily => (today, today + 1),
        LimitDuration::Weekly => {
            // 1970-01-01 was a Thursday: Monday is 3 days before.
            let start = today - (today + 3).rem_euclid(7);
            (start, start + 7)
        }
        LimitDuration::Monthly => month_days(today),
    }
}

/// The first day of the UTC calendar month containing `day`, and of the next month.
pub fn month_days(day: i64) -> (i64, i64) {
    let first = |day: i64| day - i64::from(civil_from_days(day).2) + 1;
    let start = first(day);
    // 32 days after the first of any month falls in the next month.
    (start, first(start + 32))
}

/// Spend and reset time from `days[k]`, the neurons of `k` days before today (`days[0]` today).
fn measure(limit: SpendingLimit, days: &[f64; PAST_DAYS + 1], now_ms: i64) -> Spend {
    let today = now_ms.div_euclid(DAY_MS);
    let cents = |neurons: f64| cents_for_neurons(neurons);
    match limit.strategy {
        LimitStrategy::Fixed => {
            let (start, end) = fixed_window_days(limit.duration, today);
            let back = usize::try_from(today - start).unwrap_or(0).min(PAST_DAYS);
            let spent_cents = cents(days[..=back].iter().sum());
            let resets_at_ms = if spent_cents >= limit.amount {
                end * DAY_MS
            } else {
                now_ms
            };
            Spend {
                limit,
                spent_cents,
                resets_at_ms,
            }
        }
        LimitStrategy::Sliding => {
            let length = limit.duration.days();
            let elapsed = (now_ms - today * DAY_MS) as f64 / DAY_MS as f64;
            // `shift` days from now (no further spend): days `0..length-shift` back are wholly
            // in the window, day `length-shift` back partly, by the part of its day still to
            // come.
            let in_window = |shift: usize, fraction: f64| {
                let whole: f64 = days[..length - shift].iter().sum();
                (whole, days[length - shift] * (1.0 - fraction))
            };
            let (whole, partial) = in_window(0, elapsed);
            let spent_cents = cents(whole + partial);
            let mut resets_at_ms = now_ms;
            if spent_cents >= limit.amount {
                resets_at_ms = (today + length as i64 + 1) * DAY_MS;
                for shift in 0..=length {
                    let day_start = (today + shift as i64) * DAY_MS;
                    let from = if shift == 0 { elapsed } else { 0.0 };
                    let (whole, _) = in_window(shift, from);
                    let oldest = days[length - shift];
                    if cents(whole) >= limit.amount {
                        continue;
                    }
                    if cents(whole + oldest * (1.0 - from)) < limit.amount {
                        resets_at_ms = day_start + (from * DAY_MS as f64).ceil() as i64;
                        break;
                    }
                    // whole + oldest × (1 − f) < amount once f passes this.
                    let budget = limit.amount / cents(1.0) - whole;
                    let fraction = (1.0 - budget / oldest).clamp(from, 1.0);
                    resets_at_ms = day_start + (fraction * DAY_MS as f64).ceil() as i64 + 1;
                    break;
                }
            }
            Spend {
                limit,
                spent_cents,
                resets_at_ms,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Clock, ManualClock, Usage};

    /// 2026-03-14 00:00:00 UTC, a Saturday.
    const DAY: i64 = 20_526;
    const HOUR_MS: i64 = 3_600_000;

    fn limit(amount: f64, duration: &str, strategy: &str) -> SpendingLimit {
        SpendingLimit::new(amount, duration.parse().unwrap(), strategy.parse().unwrap()).unwrap()
    }

    fn neurons(n: f64) -> Usage {
        Usage {
            requests: 1,
            neurons: n,
            ..Usage::default()
        }
    }

    #[test]
    fn validates_amount_and_enums() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let error = SpendingLimit::new(bad, LimitDuration::Daily, LimitStrategy::Fixed)
                .expect_err("refused");
            assert_eq!(error.kind, ErrorKind::BadInput);
            assert!(error.message.contains("'amount'"), "{}", error.message);
        }
        assert!("hourly".parse::<LimitDuration>().is_err());
        assert!("Daily".parse::<LimitDuration>().is_err());
        assert!("leaky".parse::<LimitStrategy>().is_err());
        assert_eq!(
            limit(100.0, "weekly", "sliding").duration,
            LimitDuration::Weekly
        );
    }

    #[test]
    fn calendar_windows() {
        assert_eq!(civil_from_days(DAY), (2026, 3, 14));
        let (start, end) = fixed_window_days(LimitDuration::Weekly, DAY);
        assert_eq!(civil_from_days(start), (2026, 3, 9)); // Monday
        assert_eq!(end - start, 7);
        assert_eq!(fixed_window_days(LimitDuration::Weekly, start).0, start);
        let (start, end) = month_days(DAY);
        assert_eq!(civil_from_days(start), (2026, 3, 1));
        assert_eq!(civil_from_days(end), (2026, 4, 1));
        let (start, end) = month_days(start - 1);
        assert_eq!(civil_from_days(start), (2026, 2, 1));
        assert_eq!(end - start, 28);
        let december = month_days(DAY + 280);
        assert_eq!(civil_from_days(december.0), (2026, 12, 1));
        assert_eq!(civil_from_days(december.1), (2027, 1, 1));
    }

    #[test]
    fn fixed_windows_count_the_calendar_period() {
        let mut days = [0.0; PAST_DAYS + 1];
        days[0] = 1000.0; // today, Saturday: 1.1 cents
        days[5] = 1000.0; // Monday of this week
        days[6] = 1000.0; // Sunday of last week
        let now = DAY * DAY_MS + 12 * HOUR_MS;
        let daily = measure(limit(1.0, "daily", "fixed"), &days, now);
        assert!((daily.spent_cents - 1.1).abs() < 1e-9, "{daily:?}");
        assert!(daily.reached());
        assert_eq!(daily.resets_at_ms, (DAY + 1) * DAY_MS);
        let weekly = measure(limit(3.0, "weekly", "fixed"), &days, now);
        assert!((weekly.spent_cents - 2.2).abs() < 1e-9, "{weekly:?}");
        assert!(!weekly.reached());
        assert_eq!(weekly.resets_at_ms, now);
        let monthly = measure(limit(3.0, "monthly", "fixed"), &days, now);
        assert!((monthly.spent_cents - 3.3).abs() < 1e-9, "{monthly:?}");
        assert_eq!(monthly.resets_at_ms, month_days(DAY).1 * DAY_MS);
    }

    #[test]
    fn sliding_windows_weigh_the_oldest_day_and_reset_as_it_slides_out() {
        let mut days = [0.0; PAST_DAYS + 1];
        days[1] = 1000.0; // yesterday: 1.1 cents
                          // A quarter into today, three quarters of yesterday are still inside the last 24 h.
        let now = DAY * DAY_MS + 6 * HOUR_MS;
        let spend = measure(limit(0.5, "daily", "sliding"), &days, now);
        assert!((spend.spent_cents - 0.825).abs() < 1e-9, "{spend:?}");
        assert!(spend.reached());
        // Under 0.5 cents once less than 0.5/1.1 of yesterday is left: 13:05:27 or so.
        let expected = DAY * DAY_MS + ((1.0 - 0.5 / 1.1) * DAY_MS as f64).ceil() as i64 + 1;
        assert!(
            (spend.resets_at_ms - expected).abs() <= 1,
            "{} vs {expected}",
            spend.resets_at_ms
        );
        let later = measure(limit(0.5, "daily", "sliding"), &days, spend.resets_at_ms);
        assert!(!later.reached(), "{later:?}");

        // Today's own spend above the limit: the whole of today must slide out.
        days[0] = 1000.0;
        let spend = measure(limit(1.0, "daily", "sliding"), &days, now);
        assert!(spend.reached());
        assert!(spend.resets_at_ms > (DAY + 1) * DAY_MS, "{spend:?}");
        assert!(spend.resets_at_ms < (DAY + 2) * DAY_MS, "{spend:?}");

        // A week slides over 7 days.
        let mut days = [0.0; PAST_DAYS + 1];
        days[6] = 1000.0;
        days[7] = 1000.0;
        let weekly = measure(limit(5.0, "weekly", "sliding"), &days, now);
        assert!(
            (weekly.spent_cents - 1.1 - 0.825).abs() < 1e-9,
            "{weekly:?}"
        );
        let monthly = measure(limit(5.0, "monthly", "sliding"), &days, now);
        assert!((monthly.spent_cents - 2.2).abs() < 1e-9, "{monthly:?}");
    }

    crate::tests::on_every_backend!(
        stored_limits_survive_reopening_and_are_enforced_from_the_ledger
    );

    fn stored_limits_survive_reopening_and_are_enforced_from_the_ledger(
        new_db: crate::tests::NewDb,
    ) {
        let test_db = new_db();
        let clock = Arc::new(ManualClock::at(DAY * DAY_MS + 23 * HOUR_MS));
        let ledger = UsageLedger::open_db(&test_db.db, clock.clone() as Arc<dyn Clock>).unwrap();
        let limits = SpendingLimits::open_db(&test_db.db).unwrap();
        let now = clock.now_unix_ms();
        assert_eq!(limits.get("a"), None);
        assert_eq!(limits.spend("a", &ledger, now).unwrap(), None);
        limits.check("a", &ledger, now).unwrap();

        limits.set("a", limit(1.0, "weekly", "fixed"), now).unwrap();
        assert_eq!(
            SpendingLimits::open_db(&test_db.reopen()).unwrap().get("a"),
            Some(limit(1.0, "weekly", "fixed"))
        );
        ledger.record("a", "m", &neurons(500.0));
        limits.check("a", &ledger, now).unwrap();
        ledger.record("a", "m", &neurons(500.0));
        let error = limits.check("a", &ledger, now).expect_err("limit reached");
        assert_eq!(error.kind, ErrorKind::GatewayRateLimited);
        assert_eq!(error.status(), 429);
        assert!(
            error
                .message
                .contains("spending limit of 1 US cents (weekly fixed)"),
            "{}",
            error.message
        );
        // Monday 2026-03-16 00:00 UTC: a new week.
        assert_eq!(error.retry_after_secs, Some(25 * 3600));
        // Yesterday's spend, read back from the backend, still counts on Sunday.
        clock.set((DAY + 1) * DAY_MS + HOUR_MS);
        let now = clock.now_unix_ms();
        let spend = limits.spend("a", &ledger, now).unwrap().unwrap();
        assert!((spend.spent_cents - 1.1).abs() < 1e-9, "{spend:?}");
        assert!(limits.check("a", &ledger, now).is_err());
        clock.set((DAY + 2) * DAY_MS);
        limits.check("a", &ledger, clock.now_unix_ms()).unwrap();

        // Replacing and clearing.
        clock.set((DAY + 1) * DAY_MS + HOUR_MS);
        let now = clock.now_unix_ms();
        limits.set("a", limit(2.0, "daily", "fixed"), now).unwrap();
        limits.check("a", &ledger, now).unwrap();
        limits.set("a", limit(1.0, "weekly", "fixed"), now).unwrap();
        assert!(limits.clear("a").unwrap());
        assert!(!limits.clear("a").unwrap());
        limits.check("a", &ledger, now).unwrap();
        assert_eq!(
            SpendingLimits::open_db(&test_db.reopen()).unwrap().get("a"),
            None
        );
        // Other accounts are untouched by it.
        assert_eq!(limits.get("b"), None);
    }
}
