use super::*;

fn queue(dir: &tempfile::TempDir) -> BatchQueue {
    BatchQueue::open(&dir.path().join("batches.db")).expect("queue opens")
}

fn ok(value: Value) -> ItemOutcome {
    ItemOutcome {
        success: true,
        result: value,
        errors: json!([]),
    }
}

#[test]
fn a_batch_goes_queued_running_done_with_every_response_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue(&dir);
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

#[test]
fn another_accounts_batch_is_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue(&dir);
    let submitted = queue.submit("a", "m", &[json!({"text": "x"})]).unwrap();
    assert_eq!(queue.poll("b", &submitted.request_id).unwrap(), None);
    assert_eq!(queue.poll("a", "no-such-id").unwrap(), None);
}

#[test]
fn a_reopened_queue_runs_exactly_the_unfinished_items() {
    let dir = tempfile::tempdir().unwrap();
    let request_id = {
        let queue = queue(&dir);
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
    let queue = queue(&dir);
    let items = queue.claim(8).unwrap();
    let indexes: Vec<usize> = items.iter().map(|item| item.index).collect();
    assert_eq!(indexes, vec![1, 2]);
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

#[test]
fn failures_carry_their_errors_and_bad_batches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue(&dir);
    let submitted = queue.submit("a", "m", &[json!({"prompt": ""})]).unwrap();
    let items = queue.claim(1).unwrap();
    let failure = ItemOutcome {
        success: false,
        result: Value::Null,
        errors: json!([{"code": 5006, "message": "AiError: Bad input"}]),
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
