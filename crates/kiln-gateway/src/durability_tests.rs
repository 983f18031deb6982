//! The journal on a full disk and the apply thread on a locked database: nothing acknowledged
//! is lost, a write the journal refused is not acknowledged, and writing resumes once the
//! disk or the database is back.

use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::journal::tests::sample;
use crate::{GatewayStore, RequestWrite};

#[path = "../../../tests/disk_full.rs"]
mod disk_full;

fn write(id: &str, body_bytes: usize) -> RequestWrite {
    let mut write = sample();
    write.record.id = id.to_owned();
    write.record.response_body = vec![b'x'; body_bytes];
    write.cache = None;
    write
}

/// Submits and waits for the journal's answer: `true` when acknowledged.
fn journaled(store: &GatewayStore, write: RequestWrite) -> bool {
    store.submit(write).expect("queued").blocking_recv().is_ok()
}

fn has_log(store: &GatewayStore, id: &str) -> bool {
    store.get_log("a", "g", id).is_ok()
}

#[test]
fn a_full_disk_refuses_writes_and_loses_none_acknowledged() {
    let Some(disk) = disk_full::SmallDisk::mount("gateway journal") else {
        return;
    };
    let path = disk.path().join("gateway.db");
    let store = GatewayStore::open(&path).expect("opens");
    assert!(journaled(&store, write("before", 100)));
    assert!(has_log(&store, "before"));

    disk.fill();
    // Bigger than any page left half-used: the append needs new space.
    assert!(
        !journaled(&store, write("refused", 64 * 1024)),
        "a write the journal could not store was acknowledged"
    );
    assert!(has_log(&store, "before"), "an acknowledged log was lost");
    assert!(!has_log(&store, "refused"));

    disk.free();
    assert!(journaled(&store, write("after", 64 * 1024)));
    assert!(has_log(&store, "after"));
    drop(store);
    // And after a restart (replay of whatever was not applied).
    let store = GatewayStore::open(&path).expect("reopens");
    for id in ["before", "after"] {
        assert!(has_log(&store, id), "{id} lost across a restart");
    }
    assert!(!has_log(&store, "refused"));
}

/// A transaction that fails (here: another connection holds the write lock past the busy
/// timeout) is retried with what came after it, not skipped.
#[test]
fn a_failed_apply_is_retried() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.db");
    let store = GatewayStore::open(&path).expect("opens");
    let blocker = Connection::open(&path).expect("second connection");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("write lock");
    assert!(journaled(&store, write("first", 10)));
    // The apply thread waits 5 s for the lock, fails, and retries every second.
    std::thread::sleep(Duration::from_secs(6));
    assert!(journaled(&store, write("second", 10)));
    blocker.execute_batch("COMMIT").expect("unlock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(has_log(&store, "first") && has_log(&store, "second")) {
        assert!(Instant::now() < deadline, "a failed batch was skipped");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A crash before the apply thread of a second run committed anything: the second run's
/// journal segment must not be taken for the one SQLite already applied (segment numbers keep
/// growing across restarts). The crash is a copy of the files while the apply thread is held
/// off.
#[test]
fn records_of_a_later_run_are_replayed_after_a_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.db");
    let store = GatewayStore::open(&path).expect("opens");
    assert!(journaled(&store, write("first-run", 1000)));
    assert!(has_log(&store, "first-run"));
    drop(store);

    let store = GatewayStore::open(&path).expect("reopens");
    let blocker = Connection::open(&path).expect("second connection");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("write lock");
    assert!(journaled(&store, write("second-run", 10)));
    let crashed = tempfile::tempdir().expect("temp dir");
    let journal = crate::writer::journal_dir(&path);
    let copied_journal = crate::writer::journal_dir(&crashed.path().join("gateway.db"));
    std::fs::create_dir_all(&copied_journal).expect("journal dir");
    for (from, to) in [
        (path.clone(), crashed.path().join("gateway.db")),
        (
            dir.path().join("gateway.db-wal"),
            crashed.path().join("gateway.db-wal"),
        ),
    ] {
        std::fs::copy(from, to).expect("copied");
    }
    for (_, segment) in crate::journal::segments(&journal).expect("segments") {
        let name = segment.file_name().expect("name");
        std::fs::copy(&segment, copied_journal.join(name)).expect("copied");
    }
    blocker.execute_batch("COMMIT").expect("unlock");
    drop(store);

    let store = GatewayStore::open(&crashed.path().join("gateway.db")).expect("recovers");
    for id in ["first-run", "second-run"] {
        assert!(has_log(&store, id), "{id} lost in the crash");
    }
}
