//! AI Gateway's log query language (`GET …/logs?…`): one `name=value` per line (already
//! URL-decoded, as the router hands them over), parsed and then run against an empty log table,
//! so a parse that yields invalid SQL fails here too.
#![no_main]
use std::sync::Mutex;

use kiln_core::ErrorKind;
use kiln_gateway::{logs, LogQuery};
use libfuzzer_sys::fuzz_target;
use rusqlite::Connection;

static DB: std::sync::LazyLock<Mutex<Connection>> = std::sync::LazyLock::new(|| {
    let db = Connection::open_in_memory().expect("in-memory db");
    logs::create_schema(&db).expect("schema");
    Mutex::new(db)
});

fuzz_target!(|data: &[u8]| {
    let pairs = kiln_fuzz::pairs(data, '=');
    match LogQuery::from_pairs(&pairs) {
        Ok(query) => {
            let db = DB.lock().unwrap();
            if let Err(error) = logs::list(&db, "acct", "gw", &query) {
                panic!("a parsed query failed to run: {error:?} ({query:?})");
            }
        }
        Err(error) => assert_eq!(error.kind, ErrorKind::BadInput, "{}", error.message),
    }
});
