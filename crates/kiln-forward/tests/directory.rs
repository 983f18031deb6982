//! Two nodes meeting in the directory, on each backend: the local PostgreSQL (a throwaway
//! schema) and the local NATS (a subject of its own). Needs both on loopback
//! (`KILN_TEST_POSTGRES_URL`, `KILN_TEST_NATS_URL`; `scripts/install-deps` starts them).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_forward::{Announcement, DirectoryBackend, NodeDirectory, ALIVE_WITHIN};
use kiln_http::forward::Affinity;
use kiln_postgres::TestSchema;

/// What a test node announces; `None` while it drains.
type Said = Arc<Mutex<Option<Announcement>>>;

fn join(backend: DirectoryBackend, name: &str, serves: &[&str]) -> (Arc<NodeDirectory>, Said) {
    let said: Said = Arc::new(Mutex::new(Some(Announcement {
        serves: serves.iter().map(|s| (*s).to_owned()).collect(),
        load: 0,
    })));
    let announce = said.clone();
    let directory = NodeDirectory::join(
        backend,
        name,
        &format!("http://{name}.invalid"),
        move || announce.lock().unwrap().clone(),
    )
    .unwrap();
    (directory, said)
}

/// Polls `directory` for `model` until `check` holds, at most `within`.
fn until(
    directory: &NodeDirectory,
    within: Duration,
    check: impl Fn(Result<Option<String>, (u16, u32)>) -> bool,
) {
    let started = Instant::now();
    loop {
        let located = directory
            .locate("m", None, Affinity::None, |_| 0)
            .map(|peer| peer.map(|peer| peer.name))
            .map_err(|error| (error.status(), error.code()));
        if check(located.clone()) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "still {located:?} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// B finds A's model; A draining leaves at once; A gone silent is a 503 after ALIVE_WITHIN.
fn nodes_meet_leave_and_die(backend: impl Fn() -> DirectoryBackend) {
    let (a, said_by_a) = join(backend(), "a", &["m"]);
    let (b, _) = join(backend(), "b", &[]);
    until(&b, Duration::from_secs(3), |found| {
        found == Ok(Some("a".into()))
    });
    // A node never picks itself.
    assert_eq!(a.locate("m", None, Affinity::None, |_| 0).unwrap(), None);

    *said_by_a.lock().unwrap() = None;
    until(&b, Duration::from_secs(3), |found| found == Ok(None));

    *said_by_a.lock().unwrap() = Some(Announcement {
        serves: vec!["m".into()],
        load: 0,
    });
    until(&b, Duration::from_secs(3), |found| {
        found == Ok(Some("a".into()))
    });
    drop(a); // its heartbeat stops
    until(&b, ALIVE_WITHIN + Duration::from_secs(3), |found| {
        found == Err((503, 3053))
    });
}

#[test]
fn on_postgresql() {
    let schema = TestSchema::new("directory");
    nodes_meet_leave_and_die(|| DirectoryBackend::Postgres { url: schema.url() });
}

#[test]
fn on_nats() {
    let bus = Arc::new(kiln_nats::Bus::connect(&kiln_nats::test_url()).unwrap());
    let subject = format!("kiln.test.nodes.{}", uuid::Uuid::new_v4().simple());
    nodes_meet_leave_and_die(|| DirectoryBackend::Nats {
        bus: bus.clone(),
        subject: subject.clone(),
    });
}

/// A node joining a cluster already running knows its peers when `join` returns (they
/// answer its first announcement), not a heartbeat later.
#[test]
fn a_newcomer_on_nats_knows_its_peers_when_it_joins() {
    let bus = Arc::new(kiln_nats::Bus::connect(&kiln_nats::test_url()).unwrap());
    let subject = format!("kiln.test.nodes.{}", uuid::Uuid::new_v4().simple());
    let backend = || DirectoryBackend::Nats {
        bus: bus.clone(),
        subject: subject.clone(),
    };
    let (_a, _) = join(backend(), "a", &["m"]);
    std::thread::sleep(Duration::from_millis(100));
    let (late, _) = join(backend(), "late", &[]);
    assert_eq!(
        late.locate("m", None, Affinity::None, |_| 0)
            .unwrap()
            .map(|peer| peer.name),
        Some("a".into())
    );
}
