use std::sync::Arc;
use std::time::Duration;

use kiln_core::ErrorKind;
use proptest::prelude::*;

use super::{eventually, on_every_backend, temp_db, NewDb, TestDb};
use crate::{AccountStore, AccountsDb, Plan, Scope, SystemClock};

on_every_backend!(
    secret_has_the_documented_shape,
    authenticate_accepts_only_the_exact_unrevoked_secret,
    a_second_store_sees_creations_and_revocations,
    accounts_ids_plans_and_errors,
    tokens_lists_by_account,
);

/// How soon another store (process or node) must see a change: the bar for a
/// revocation across a cluster.
const PROPAGATION: Duration = Duration::from_secs(1);

fn open(db: AccountsDb) -> AccountStore {
    AccountStore::open_db(db, Arc::new(SystemClock)).unwrap()
}

fn store_with_account(new_db: NewDb) -> (TestDb, AccountStore) {
    let test_db = new_db();
    let store = open(test_db.db.clone());
    store
        .create_account(Some("acct"), "Test", Plan::Free)
        .unwrap();
    (test_db, store)
}

fn secret_has_the_documented_shape(new_db: NewDb) {
    let (_db, store) = store_with_account(new_db);
    let (info, secret) = store
        .create_token("acct", "ci", &[Scope::WorkersAiRead])
        .unwrap();
    assert_eq!(info.id.len(), 16);
    assert!(info
        .id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    let random = secret
        .strip_prefix(&format!("kiln_{}_", info.id))
        .expect("prefix and id");
    assert_eq!(random.len(), 43);
    assert!(random.bytes().all(|b| b.is_ascii_alphanumeric()));
}

fn authenticate_accepts_only_the_exact_unrevoked_secret(new_db: NewDb) {
    let (_db, store) = store_with_account(new_db);
    assert!(!store.has_tokens());
    let (info, secret) = store
        .create_token("acct", "ci", &[Scope::VectorizeEdit])
        .unwrap();
    assert!(store.has_tokens());
    assert_eq!(store.authenticate(&secret), Some(info.clone()));

    // Same id, different random part.
    let last = secret.chars().last().unwrap();
    let flipped = if last == 'A' { 'B' } else { 'A' };
    let wrong = format!("{}{flipped}", &secret[..secret.len() - 1]);
    assert_eq!(store.authenticate(&wrong), None);
    assert_eq!(store.authenticate(&format!("{secret}x")), None);
    assert_eq!(store.authenticate(&secret.to_uppercase()), None);
    assert_eq!(store.authenticate(""), None);
    let other_db = new_db();
    let other = open(other_db.db.clone());
    other
        .create_account(Some("acct"), "Other", Plan::Free)
        .unwrap();
    let (_, foreign) = other
        .create_token("acct", "x", &[Scope::WorkersAiRead])
        .unwrap();
    assert_eq!(store.authenticate(&foreign), None);
    drop(other);
    drop(other_db);

    store.revoke_token(&info.id).unwrap();
    assert_eq!(store.authenticate(&secret), None);
    assert!(!store.has_tokens());
    assert!(store.tokens(Some("acct")).unwrap()[0].revoked);
    // Revoking twice is fine; an unknown id is not.
    store.revoke_token(&info.id).unwrap();
    assert_eq!(
        store.revoke_token("ffffffffffffffff").unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn the_secret_is_never_stored() {
    let (dir, path) = temp_db();
    let store = AccountStore::open(&path).unwrap();
    store
        .create_account(Some("acct"), "Test", Plan::Free)
        .unwrap();
    let (info, secret) = store.create_token("acct", "ci", &Scope::ALL).unwrap();
    let random = &secret[secret.len() - 43..];
    let conn = rusqlite::Connection::open(&path).unwrap();
    let row: String = conn
        .query_row(
            "SELECT id || account_id || name || scopes || hex(secret_sha256) FROM api_tokens",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(row.contains(&info.id) && !row.contains(random));
    drop(conn);
    for entry in std::fs::read_dir(path.parent().unwrap()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let found = bytes.windows(random.len()).any(|w| w == random.as_bytes());
        assert!(!found, "secret found in a database file");
    }
    drop(dir);
}

/// SQLite: the server and a CLI process on one file. PostgreSQL: two nodes, each with its own
/// pool and listener; the server sees each change within [`PROPAGATION`].
fn a_second_store_sees_creations_and_revocations(new_db: NewDb) {
    let test_db = new_db();
    let server = open(test_db.db.clone());
    assert!(!server.has_tokens());
    let cli = open(test_db.reopen());
    cli.create_account(Some("acct"), "Test", Plan::Free)
        .unwrap();
    let (info, secret) = cli
        .create_token("acct", "ci", &[Scope::WorkersAiRead])
        .unwrap();

    assert!(eventually(PROPAGATION, || server.has_tokens()));
    assert_eq!(server.authenticate(&secret), Some(info.clone()));
    assert_eq!(server.account("acct").unwrap().unwrap().plan, Plan::Free);

    cli.set_plan("acct", Plan::Paid).unwrap();
    assert!(eventually(PROPAGATION, || {
        server.account("acct").unwrap().unwrap().plan == Plan::Paid
    }));

    // A fresh process per command, as the CLI runs.
    drop(cli);
    open(test_db.reopen()).revoke_token(&info.id).unwrap();
    assert!(eventually(PROPAGATION, || server
        .authenticate(&secret)
        .is_none()));
    assert!(!server.has_tokens());
    assert!(
        server.ever_had_tokens(),
        "a revoked token still counts as having existed"
    );
}

fn accounts_ids_plans_and_errors(new_db: NewDb) {
    let test_db = new_db();
    let store = open(test_db.db.clone());
    let generated = store.create_account(None, "Generated", Plan::Paid).unwrap();
    assert_eq!(generated.id.len(), 32);
    assert!(generated
        .id
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));

    let long_ok = "a".repeat(64);
    for ok in ["x", "Team_1-a", long_ok.as_str()] {
        store.create_account(Some(ok), "ok", Plan::Free).unwrap();
    }
    let too_long = "a".repeat(65);
    for bad in ["", "has space", "slash/", "dot.", "ünï", too_long.as_str()] {
        let error = store
            .create_account(Some(bad), "bad", Plan::Free)
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadInput, "{bad:?}");
    }
    let conflict = store
        .create_account(Some("x"), "again", Plan::Free)
        .unwrap_err();
    assert_eq!(conflict.kind, ErrorKind::Conflict);

    assert_eq!(store.accounts().unwrap().len(), 4);
    assert_eq!(store.account("nope").unwrap(), None);
    assert_eq!(
        store.set_plan("nope", Plan::Paid).unwrap_err().kind,
        ErrorKind::NotFound
    );
    store.set_plan("x", Plan::Paid).unwrap();
    assert_eq!(store.account("x").unwrap().unwrap().plan, Plan::Paid);

    let missing = store
        .create_token("nope", "t", &[Scope::WorkersAiRead])
        .unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound);
    let empty = store.create_token("x", "t", &[]).unwrap_err();
    assert_eq!(empty.kind, ErrorKind::BadInput);
}

fn tokens_lists_by_account(new_db: NewDb) {
    let (_db, store) = store_with_account(new_db);
    store
        .create_account(Some("other"), "Other", Plan::Free)
        .unwrap();
    let (a, _) = store
        .create_token("acct", "a", &[Scope::WorkersAiRead])
        .unwrap();
    let (b, _) = store
        .create_token("other", "b", &[Scope::AiGatewayRun])
        .unwrap();
    assert_eq!(store.tokens(Some("acct")).unwrap(), vec![a.clone()]);
    assert_eq!(store.tokens(Some("other")).unwrap(), vec![b.clone()]);
    assert_eq!(store.tokens(None).unwrap().len(), 2);
    let debug = format!("{a:?}");
    assert!(debug.contains(&a.id));
}

proptest! {
    #[test]
    fn arbitrary_strings_never_authenticate(
        garbage in any::<String>(),
        tail in "[A-Za-z0-9]{43}",
    ) {
        let (_db, store) = shared_store();
        prop_assert_eq!(store.authenticate(&garbage), None);
        // Well-formed, with a real token's id, but a guessed random part.
        let guess = format!("kiln_{}_{tail}", store.tokens(None).unwrap()[0].id);
        prop_assert_eq!(store.authenticate(&guess), None);
    }
}

/// One SQLite store for all proptest cases, so cases do not each create a database.
fn shared_store() -> (&'static TestDb, &'static AccountStore) {
    use std::sync::OnceLock;
    static SHARED: OnceLock<(TestDb, AccountStore)> = OnceLock::new();
    let (db, store) = SHARED.get_or_init(|| {
        let (db, store) = store_with_account(super::sqlite_db);
        store.create_token("acct", "real", &Scope::ALL).unwrap();
        (db, store)
    });
    (db, store)
}
