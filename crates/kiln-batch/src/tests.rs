//! The queue's cases run on both backends: `sqlite::…` on a file, `postgres::…` on a fresh
//! schema of the test PostgreSQL (`kiln_postgres::TestSchema`) with a short lease.

use std::time::{Duration, Instant};

use kiln_postgres::TestSchema;

use super::*;

/// A queue's database for one test, deleted when dropped.
struct TestDb {
    db: BatchDb,
    _dir: Option<tempfile::TempDir>,
    _schema: Option<TestSchema>,
}

type NewDb = fn() -> TestDb;

/// Short, so a dropped queue's claims lapse within the test.
const TEST_LEASE: Duration = Duration::from_millis(600);

fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    TestDb {
        db: BatchDb::Sqlite(dir.path().join("batches.db")),
        _dir: Some(dir),
        _schema: None,
    }
}

fn postgres_db() -> TestDb {
    let schema = TestSchema::new("batches");
    TestDb {
        db: BatchDb::Postgres {
            url: schema.url(),
            lease: TEST_LEASE,
            node: "test-node".to_owned(),
        },
        _dir: None,
        _schema: Some(schema),
    }
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(super::sqlite_db) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(super::postgres_db) })*
        }
    };
}

on_every_backend!(
    a_batch_goes_queued_running_done_with_every_response_in_order,
    another_accounts_batch_is_invisible,
    a_reopened_queue_runs_exactly_the_unfinished_items,
    failures_carry_their_errors_and_bad_batches_are_refused,
    reported_usage_counts_for_outputs_without_their_own,
    a_batch_over_the_limits_is_refused_before_anything_is_stored,
    a_claim_passes_over_models_this_node_does_not_run,
);

fn open(test_db: &TestDb) -> BatchQueue {
    BatchQueue::open_db(&test_db.db, BatchLimits::default()).expect("queue opens")
}

fn ok(value: Value) -> ItemOutcome {
    ItemOutcome {
        success: true,
        result: value,
        errors: json!([]),
        usage: None,
    }
}

fn a_batch_goes_queued_running_done_with_every_response_in_order(new_db: NewDb) {
    let test_db = new_db();
    let queue = open(&test_db);
    let submitted = queue
        .submit(
            "acct",
            "@cf/baai/bge-small-en-v1.5",
            &[
                json!({"text": "a", "external_reference": "first"}),
                json!({"text": "b"}),
            ],
        )
        .unwrap();
    let poll = queue.poll("acct", &submitted.request_id).unwrap();
    assert!(matches!(poll, Some(Poll::Queued { .. })));

    let items = queue.claim(8).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[0].input,
        json!({"text": "a"}),
        "external_reference is not an input"
    );
    assert!(
        queue.claim(8).unwrap().is_empty(),
        "in-flight items are not claimed twice"
    );
    assert!(matches!(
        queue.poll("acct", &submitted.request_id).unwrap(),
        Some(Poll::Running { .. })
    ));

    // Finish them out of order: responses still come back by index.
    queue
        .complete(&items[1], &ok(json!({"usage": {"prompt_tokens": 2}})))
        .unwrap();
    queue
        .complete(&items[0], &ok(json!({"usage": {"prompt_tokens": 3}})))
        .unwrap();
    let Some(Poll::Done(done)) = queue.poll("acct", &submitted.request_id).unwrap() else {
        panic!("batch is done");
    };
    assert_eq!(done["responses"][0]["id"], 0);
    assert_eq!(done["responses"][0]["external_reference"], "first");
    assert_eq!(done["responses"][1]["external_reference"], Value::Null);
    assert_eq!(done["responses"][1]["success"], true);
    assert_eq!(done["usage"]["prompt_tokens"], 5);
}

fn another_accounts_batch_is_invisible(new_db: NewDb) {
    let test_db = new_db();
    let queue = open(&test_db);
    let submitted = queue.submit("a", "m", &[json!({"text": "x"})]).unwrap();
    assert_eq!(queue.poll("b", &submitted.request_id).unwrap(), None);
    assert_eq!(queue.poll("a", "no-such-id").unwrap(), None);
}

/// The first queue stops (a process or node dies) holding a claim: a queue opened on the
/// same database runs exactly the unfinished items (on PostgreSQL, the held one once its lease
/// lapses).
fn a_reopened_queue_runs_exactly_the_unfinished_items(new_db: NewDb) {
    let test_db = new_db();
    let request_id = {
        let queue = open(&test_db);
        let submitted = queue
            .submit(
                "a",
                "m",
                &[json!({"n": 0}), json!({"n": 1}), json!({"n": 2})],
            )
            .unwrap();
        let items = queue.claim(2).unwrap();
        queue.complete(&items[0], &ok(json!({"n": 0}))).unwrap();
        // items[1] was in flight when the process died.
        submitted.request_id
    };
    let queue = open(&test_db);
    let mut items = Vec::new();
    let deadline = Instant::now() + TEST_LEASE * 5;
    while items.len() < 2 && Instant::now() < deadline {
        items.extend(queue.claim(8).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut indexes: Vec<usize> = items.iter().map(|item| item.index).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, vec![1, 2]);
    assert!(queue.claim(8).unwrap().is_empty(), "each claimed once");
    for item in &items {
        queue.complete(item, &ok(item.input.clone())).unwrap();
    }
    let Some(Poll::Done(done)) = queue.poll("a", &request_id).unwrap() else {
        panic!("batch is done");
    };
    let results: Vec<&Value> = done["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["result"]["n"])
        .collect();
    assert_eq!(results, vec![&json!(0), &json!(1), &json!(2)]);
}

fn failures_carry_their_errors_and_bad_batches_are_refused(new_db: NewDb) {
    let test_db = new_db();
    let queue = open(&test_db);
    let submitted = queue.submit("a", "m", &[json!({"prompt": ""})]).unwrap();
    let items = queue.claim(1).unwrap();
    let failure = ItemOutcome {
        success: false,
        result: Value::Null,
        errors: json!([{"code": 5006, "message": "AiError: Bad input"}]),
        usage: None,
    };
    queue.complete(&items[0], &failure).unwrap();
    let Some(Poll::Done(done)) = queue.poll("a", &submitted.request_id).unwrap() else {
        panic!("batch is done");
    };
    assert_eq!(done["responses"][0]["success"], false);
    assert_eq!(done["responses"][0]["errors"][0]["code"], 5006);

    assert!(queue.submit("a", "m", &[]).is_err());
    assert!(queue.submit("a", "m", &[json!("not an object")]).is_err());
    assert!(queue
        .submit("a", "m", &[json!({"external_reference": 7})])
        .is_err());
    assert_eq!(queue.unfinished().unwrap(), 0);
}

fn reported_usage_counts_for_outputs_without_their_own(new_db: NewDb) {
    let test_db = new_db();
    let queue = open(&test_db);
    let submitted = queue
        .submit("a", "m", &[json!({"text": "x"}), json!({"prompt": "y"})])
        .unwrap();
    let items = queue.claim(2).unwrap();
    let embedding = ItemOutcome {
        usage: Some(json!({"prompt_tokens": 4, "completion_tokens": 0, "total_tokens": 4})),
        ..ok(json!({"shape": [1, 3], "data": [[0.1, 0.2, 0.3]]}))
    };
    queue.complete(&items[0], &embedding).unwrap();
    let generation = ok(
        json!({"response": "z", "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}),
    );
    queue.complete(&items[1], &generation).unwrap();
    let Some(Poll::Done(done)) = queue.poll("a", &submitted.request_id).unwrap() else {
        panic!("batch is done");
    };
    assert_eq!(done["responses"][0]["usage"]["prompt_tokens"], 4);
    assert_eq!(done["responses"][1]["usage"]["completion_tokens"], 1);
    assert_eq!(
        done["usage"],
        json!({"prompt_tokens": 6, "completion_tokens": 1, "total_tokens": 7})
    );
}

#[test]
fn a_queue_from_before_usage_was_recorded_opens_and_keeps_its_items() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batches.db");
    let old = rusqlite::Connection::open(&path).unwrap();
    old.execute_batch(
        "CREATE TABLE batches (request_id TEXT PRIMARY KEY, account_id TEXT NOT NULL,
             model TEXT NOT NULL, status TEXT NOT NULL, created_ms INTEGER NOT NULL);
         CREATE TABLE batch_items (request_id TEXT NOT NULL, idx INTEGER NOT NULL,
             input TEXT NOT NULL, external_reference TEXT, done INTEGER NOT NULL DEFAULT 0,
             success INTEGER, result TEXT, errors TEXT, PRIMARY KEY (request_id, idx));
         INSERT INTO batches VALUES ('r', 'a', 'm', 'queued', 0);
         INSERT INTO batch_items (request_id, idx, input) VALUES ('r', 0, '{\"text\":\"x\"}');",
    )
    .unwrap();
    drop(old);
    let queue = BatchQueue::open(&path).expect("an old queue opens");
    let items = queue.claim(1).unwrap();
    assert_eq!(items[0].input, json!({"text": "x"}));
    queue.complete(&items[0], &ok(json!({"data": []}))).unwrap();
    assert!(matches!(queue.poll("a", "r").unwrap(), Some(Poll::Done(_))));
    drop(queue);
    BatchQueue::open(&path).expect("and opens again once migrated");
}

fn small_limits() -> BatchLimits {
    BatchLimits {
        max_requests: 3,
        max_stored_bytes: 100,
    }
}

fn stored_items(queue: &BatchQueue) -> usize {
    queue.unfinished().unwrap()
}

fn a_batch_over_the_limits_is_refused_before_anything_is_stored(new_db: NewDb) {
    let test_db = new_db();
    let queue = BatchQueue::open_db(&test_db.db, small_limits()).unwrap();
    let four: Vec<Value> = (0..4).map(|n| json!({"text": n.to_string()})).collect();
    let error = queue.submit("a", "m", &four).unwrap_err();
    assert_eq!((error.status(), error.code()), (400, 5006));
    assert!(
        error.message.contains("limits.batch.max_requests"),
        "{}",
        error.message
    );

    let big = [json!({"text": "x".repeat(101)})];
    let error = queue.submit("a", "m", &big).unwrap_err();
    assert_eq!((error.status(), error.code()), (413, 3006));
    assert!(
        error.message.contains("limits.batch.max_stored_bytes"),
        "{}",
        error.message
    );
    // The external reference is stored too.
    let referenced = [json!({"text": "x", "external_reference": "r".repeat(100)})];
    assert!(queue.submit("a", "m", &referenced).is_err());
    assert_eq!(stored_items(&queue), 0, "nothing was written");

    queue.submit("a", "m", &four[..3]).expect("at the limit");
    assert_eq!(stored_items(&queue), 3);
}

#[test]
fn a_body_is_read_within_the_limits_without_becoming_a_tree() {
    let limits = small_limits();
    let read = |body: &str| read_submission(body.as_bytes(), &limits);
    assert_eq!(
        read(r#"{"request_id": "abc"}"#).unwrap(),
        Submission::Poll("abc".into())
    );
    let Submission::Requests(inputs) = read(
        r#"{"requests": [{"text": "a", "external_reference": "first", "n": [1, 2]}, {"text": "b", "external_reference": null}]}"#,
    )
    .unwrap() else {
        panic!("requests");
    };
    assert_eq!(inputs.len(), 2);
    assert_eq!(inputs[0].external_reference.as_deref(), Some("first"));
    let first: Value = serde_json::from_str(&inputs[0].input).unwrap();
    assert_eq!(first, json!({"text": "a", "n": [1, 2]}));
    assert_eq!(inputs[1].external_reference, None);

    let error = read(r#"{"requests": [{"a":1},{"a":2},{"a":3},{"a":4},{"a":5}]}"#).unwrap_err();
    assert!(error.message.contains("max_requests"), "{}", error.message);
    let error = read(&format!(
        r#"{{"requests": [{{"text": "{}"}}]}}"#,
        "x".repeat(200)
    ))
    .unwrap_err();
    assert_eq!(error.code(), 3006);

    for (body, expected) in [
        (r#"{"requests": [7]}"#, "'/requests/0', 'object' expected"),
        (
            r#"{"requests": [{"external_reference": 7}]}"#,
            "'/requests/0/external_reference'",
        ),
        (r#"{"requests": "no"}"#, "a queued request takes"),
        (r#"{"prompt": "x"}"#, "a queued request takes"),
        (
            r#"{"request_id": "x", "prompt": "y"}"#,
            "a queued request takes",
        ),
        (r#"[1]"#, "a queued request takes"),
        ("{not json", "not valid JSON"),
    ] {
        let error = read(body).unwrap_err();
        assert!(
            error.message.contains(expected),
            "{body}: {}",
            error.message
        );
    }
    // A batch of ten thousand requests is refused at the default limit of 1000.
    let body = format!(
        r#"{{"requests": [{}]}}"#,
        vec![r#"{"text":"x"}"#; 10_000].join(",")
    );
    let error = read_submission(body.as_bytes(), &BatchLimits::default()).unwrap_err();
    assert!(
        error.message.contains("more than 1000"),
        "{}",
        error.message
    );
}

/// Two nodes claiming from one PostgreSQL queue at once never take the same item, and an
/// outcome saved by a node that lost its lease (it stalled; another node took the item) is
/// dropped: each item's outcome is saved exactly once.
#[test]
fn nodes_sharing_a_postgres_queue_claim_each_item_once() {
    let test_db = postgres_db();
    let node_a = open(&test_db);
    let node_b = open(&test_db);
    let inputs: Vec<Value> = (0..40).map(|n| json!({"n": n})).collect();
    let submitted = node_a.submit("a", "m", &inputs).unwrap();
    fn claim_all(queue: &BatchQueue) -> Vec<PendingItem> {
        let mut mine = Vec::new();
        loop {
            let claimed = queue.claim(3).unwrap();
            if claimed.is_empty() {
                return mine;
            }
            mine.extend(claimed);
        }
    }
    let (from_a, from_b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| claim_all(&node_a));
        let b = scope.spawn(|| claim_all(&node_b));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut all: Vec<usize> = from_a.iter().chain(&from_b).map(|i| i.index).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..40).collect::<Vec<_>>(),
        "every item claimed exactly once"
    );

    // Node B stops renewing (it stalls, then comes back): its items go to node A.
    let stalled: Vec<PendingItem> = from_b;
    let lost_index = stalled.first().map(|item| item.index);
    drop(node_b);
    std::thread::sleep(TEST_LEASE * 2);
    let retaken = node_a.claim(100).unwrap();
    assert_eq!(retaken.len(), stalled.len());
    for item in from_a.iter().chain(&retaken) {
        node_a.complete(item, &ok(json!({"by": "a"}))).unwrap();
    }
    // B's late outcome (from a queue reopened with B's items in hand) changes nothing.
    if let (Some(index), Some(item)) = (lost_index, stalled.first()) {
        let late_b = open(&test_db);
        late_b.complete(item, &ok(json!({"by": "b"}))).unwrap();
        let Some(Poll::Done(done)) = node_a.poll("a", &submitted.request_id).unwrap() else {
            panic!("batch is done");
        };
        assert_eq!(done["responses"][index]["result"]["by"], "a");
        assert_eq!(done["responses"].as_array().unwrap().len(), 40);
    }
    assert_eq!(node_a.unfinished().unwrap(), 0);
}

/// In a cluster each node claims only what it can run; the rest stays for the others.
fn a_claim_passes_over_models_this_node_does_not_run(new_db: NewDb) {
    let test_db = new_db();
    let queue = open(&test_db);
    queue
        .submit("a", "speech", &[json!({"n": 0}), json!({"n": 1})])
        .unwrap();
    let text = queue
        .submit("a", "text", &[json!({"n": 2}), json!({"n": 3})])
        .unwrap();
    let mine = queue.claim_runnable(8, &|model| model == "text").unwrap();
    assert_eq!(mine.len(), 2);
    assert!(mine.iter().all(|item| item.request_id == text.request_id));
    assert!(queue
        .claim_runnable(8, &|model| model == "text")
        .unwrap()
        .is_empty());
    let theirs = queue.claim_runnable(8, &|_| true).unwrap();
    assert_eq!(theirs.len(), 2);
    assert!(theirs.iter().all(|item| item.model == "speech"));
}
