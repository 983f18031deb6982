use std::sync::Arc;
use std::time::Duration;

use super::{eventually, on_every_backend, NewDb};
use crate::{
    next_utc_midnight_ms, utc_day, AccountStore, Clock, ManualClock, Plan, Usage, UsageFilter,
    UsageLedger,
};

on_every_backend!(
    free_allocation_is_enforced_and_resets_at_utc_midnight,
    a_restart_remembers_todays_spend,
    the_background_thread_flushes_without_being_asked,
    report_groups_by_day_account_and_model,
    ledgers_sharing_a_database_see_each_others_spend,
);

/// 2026-03-14 00:00:00 UTC.
const DAY_START: i64 = 20_526 * 86_400_000;
const DAY_MS: i64 = 86_400_000;

fn neurons(n: f64) -> Usage {
    Usage {
        requests: 1,
        input_tokens: 10,
        output_tokens: 20,
        neurons: n,
    }
}

#[test]
fn utc_days() {
    assert_eq!(utc_day(DAY_START), "2026-03-14");
    assert_eq!(utc_day(DAY_START + DAY_MS - 1), "2026-03-14");
    assert_eq!(next_utc_midnight_ms(DAY_START + 5), DAY_START + DAY_MS);
    assert_eq!(next_utc_midnight_ms(DAY_START), DAY_START + DAY_MS);
}

fn free_allocation_is_enforced_and_resets_at_utc_midnight(new_db: NewDb) {
    let test_db = new_db();
    let clock = Arc::new(ManualClock::at(DAY_START + 23 * 3_600_000));
    let ledger = UsageLedger::open_db(&test_db.db, clock.clone() as Arc<dyn Clock>).unwrap();
    for _ in 0..4 {
        ledger.check_allowance("a", Plan::Free, 10_000.0).unwrap();
        ledger.record("a", "m", &neurons(2_500.0));
    }
    assert_eq!(ledger.spent_today("a"), 10_000.0);
    let refused = ledger
        .check_allowance("a", Plan::Free, 10_000.0)
        .unwrap_err();
    assert_eq!(refused.spent, 10_000.0);
    assert_eq!(refused.allocation, 10_000.0);
    assert_eq!(refused.resets_at_ms, DAY_START + DAY_MS);
    assert!(refused.to_string().contains("10,000 neurons"));
    let error: kiln_core::KilnError = refused.into();
    assert_eq!((error.status(), error.code()), (429, 3036));
    // Paid accounts and other accounts are unaffected.
    ledger.check_allowance("a", Plan::Paid, 10_000.0).unwrap();
    ledger.check_allowance("b", Plan::Free, 10_000.0).unwrap();

    clock.set(DAY_START + DAY_MS + 1);
    assert_eq!(ledger.spent_today("a"), 0.0);
    ledger.check_allowance("a", Plan::Free, 10_000.0).unwrap();
}

fn a_restart_remembers_todays_spend(new_db: NewDb) {
    let test_db = new_db();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(DAY_START + 1_000));
    let store = AccountStore::open_db(test_db.db.clone(), clock.clone()).unwrap();
    let ledger = UsageLedger::open(&store, clock.clone()).unwrap();
    ledger.record("a", "m", &neurons(9_000.0));
    ledger.record("a", "n", &neurons(999.5));
    drop(ledger); // flushes

    let ledger = UsageLedger::open(&store, clock.clone()).unwrap();
    assert_eq!(ledger.spent_today("a"), 9_999.5);
    ledger.check_allowance("a", Plan::Free, 10_000.0).unwrap();
    ledger.record("a", "m", &neurons(0.5));
    assert!(ledger.check_allowance("a", Plan::Free, 10_000.0).is_err());
}

fn the_background_thread_flushes_without_being_asked(new_db: NewDb) {
    let test_db = new_db();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(DAY_START));
    let ledger = UsageLedger::open_db(&test_db.db, clock).unwrap();
    ledger.record("a", "m", &neurons(1.0));
    // Read with a connection of its own, as another process would.
    let mut reader = test_db.db.open().unwrap();
    let stored = || reader.neurons_by_account(&utc_day(DAY_START)).unwrap();
    let mut stored = stored;
    assert!(
        eventually(Duration::from_secs(5), || stored().get("a") == Some(&1.0)),
        "usage was not flushed within 5 s"
    );
    drop(ledger);
}

/// Two nodes (or processes) on one ledger: each one's allowance check counts the other's
/// spend once it is flushed (within about a second).
fn ledgers_sharing_a_database_see_each_others_spend(new_db: NewDb) {
    let test_db = new_db();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at(DAY_START + 5));
    let node_a = UsageLedger::open_db(&test_db.db, clock.clone()).unwrap();
    let node_b = UsageLedger::open_db(&test_db.reopen(), clock).unwrap();
    node_a.record("acct", "m", &neurons(6_000.0));
    node_b.record("acct", "m", &neurons(3_000.0));
    assert!(
        eventually(Duration::from_secs(5), || node_a.spent_today("acct")
            == 9_000.0
            && node_b.spent_today("acct") == 9_000.0),
        "a: {}, b: {}",
        node_a.spent_today("acct"),
        node_b.spent_today("acct")
    );
    node_b.record("acct", "m", &neurons(1_000.0));
    assert!(eventually(Duration::from_secs(5), || node_a
        .check_allowance("acct", Plan::Free, 10_000.0)
        .is_err()));
    let rows = node_b.report(UsageFilter::default()).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].requests, rows[0].neurons), (3, 10_000.0));
}

fn report_groups_by_day_account_and_model(new_db: NewDb) {
    let test_db = new_db();
    let clock = Arc::new(ManualClock::at(DAY_START + 10));
    let ledger = UsageLedger::open_db(&test_db.db, clock.clone() as Arc<dyn Clock>).unwrap();
    ledger.record("a", "m1", &neurons(1.0));
    ledger.record("a", "m1", &neurons(2.0));
    ledger.record("a", "m2", &neurons(4.0));
    ledger.record("b", "m1", &neurons(8.0));
    ledger.flush().unwrap();
    ledger.record("a", "m1", &neurons(16.0)); // unflushed, still reported
    clock.advance(Duration::from_millis(DAY_MS as u64));
    ledger.record("a", "m1", &neurons(32.0));

    let rows = ledger.report(UsageFilter::default()).unwrap();
    let keys: Vec<(&str, &str, &str, f64)> = rows
        .iter()
        .map(|r| {
            (
                r.day.as_str(),
                r.account_id.as_str(),
                r.model.as_str(),
                r.neurons,
            )
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            ("2026-03-15", "a", "m1", 32.0),
            ("2026-03-14", "a", "m1", 19.0),
            ("2026-03-14", "a", "m2", 4.0),
            ("2026-03-14", "b", "m1", 8.0),
        ]
    );
    assert_eq!(rows[1].requests, 3);
    assert_eq!((rows[1].input_tokens, rows[1].output_tokens), (30, 60));

    let only_a_m1 = ledger
        .report(UsageFilter {
            account_id: Some("a".into()),
            model: Some("m1".into()),
            since_day: Some("2026-03-14".into()),
            until_day: Some("2026-03-14".into()),
        })
        .unwrap();
    assert_eq!(only_a_m1.len(), 1);
    assert_eq!(only_a_m1[0].neurons, 19.0);
    let bad = ledger.report(UsageFilter {
        since_day: Some("yesterday".into()),
        ..UsageFilter::default()
    });
    assert!(bad.is_err());
}
