//! A full disk: a batch the queue cannot store is refused with an error (no request_id), an
//! item whose outcome cannot be saved is released to run again, everything acknowledged stays
//! readable, and once space is back the queue takes batches again and keeps them across a
//! restart.

#[path = "../../../tests/disk_full.rs"]
mod disk_full;

use kiln_batch::{BatchQueue, ItemOutcome, Poll};
use serde_json::json;

const MODEL: &str = "@cf/baai/bge-small-en-v1.5";

fn done(text: &str) -> ItemOutcome {
    ItemOutcome {
        success: true,
        result: json!({"text": text}),
        errors: json!([]),
        usage: None,
    }
}

/// Inputs big enough to need fresh pages of the disk.
fn inputs(count: usize) -> Vec<serde_json::Value> {
    (0..count)
        .map(|n| json!({"text": format!("{n}{}", "x".repeat(64 * 1024))}))
        .collect()
}

#[test]
fn a_full_disk_refuses_batches_and_loses_none_acknowledged() {
    let Some(disk) = disk_full::SmallDisk::mount("batch queue") else {
        return;
    };
    let path = disk.path().join("batches.db");
    let queue = BatchQueue::open(&path).expect("opens");
    let first = queue.submit("acct", MODEL, &inputs(2)).expect("queued");
    let claimed = queue.claim(1).expect("claim");
    queue.complete(&claimed[0], &done("one")).expect("saved");

    disk.fill();
    let error = queue.submit("acct", MODEL, &inputs(4)).unwrap_err();
    assert!(
        disk_full::says_disk_full(&error.message),
        "{}",
        error.message
    );
    // Saving an outcome may or may not find room; if it does not, the item runs again later.
    let second_item = queue.claim(1).expect("claim");
    assert_eq!(second_item.len(), 1);
    if queue.complete(&second_item[0], &done("two")).is_err() {
        assert_eq!(queue.claim(1).expect("claim").len(), 1, "released");
    }
    assert!(queue
        .poll("acct", &first.request_id)
        .expect("poll")
        .is_some());

    disk.free();
    let second = queue.submit("acct", MODEL, &inputs(4)).expect("queued");
    drop(queue);
    let queue = BatchQueue::open(&path).expect("reopens");
    // Everything not done is claimed again after a restart, the refused batch never existed.
    let pending = queue.claim(16).expect("claim");
    let of = |id: &str| pending.iter().filter(|item| item.request_id == id).count();
    assert_eq!(of(&second.request_id), 4);
    assert!(of(&first.request_id) <= 1, "the saved outcome was lost");
    for item in &pending {
        queue.complete(item, &done("later")).expect("saved");
    }
    let Some(Poll::Done(responses)) = queue.poll("acct", &first.request_id).expect("poll") else {
        panic!("the first batch is not done");
    };
    assert_eq!(responses["responses"][0]["result"], json!({"text": "one"}));
    assert_eq!(queue.unfinished().expect("count"), 0);
}
