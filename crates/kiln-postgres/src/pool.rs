//! A fixed set of threads, each holding one connection, fed closures through a channel.

use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use postgres::{Client, Config, NoTls};

use crate::error::{PgError, PgErrorKind};
use crate::listen::Listener;
use crate::migrate::{self, Migration};

/// The longest a caller waits for its answer, queueing and reconnecting included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one statement may run on the server.
const STATEMENT_TIMEOUT_MS: u64 = 8_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

type Job = Box<dyn FnOnce(&mut Option<Client>) + Send>;

/// Cheap to clone; the threads end when the last clone is dropped.
#[derive(Clone)]
pub struct Pool {
    jobs: Sender<Job>,
    config: Arc<Config>,
    describe: Arc<str>,
}

impl Pool {
    /// Parses `url` (`postgres://user:password@host:port/database?options=…`) and starts
    /// `threads` connection threads. Connects lazily; call [`Pool::ping`] to check now.
    pub fn open(url: &str, threads: usize) -> Result<Pool, PgError> {
        let mut config = Config::from_str(url).map_err(|error| {
            PgError::new(
                PgErrorKind::Other,
                format!("invalid PostgreSQL URL: {error}"),
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives(true);
        config.application_name("kiln");
        let describe: Arc<str> = describe(&config).into();
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            thread::Builder::new()
                .name(format!("kiln-pg-{index}"))
                .spawn(move || serve(&queue))
                .map_err(|error| {
                    PgError::new(
                        PgErrorKind::Other,
                        format!("starting a pool thread: {error}"),
                    )
                })?;
        }
        Ok(Pool {
            jobs,
            config: Arc::new(config),
            describe,
        })
    }

    /// Where it connects, without the password (for logs and errors).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Runs `job` on a pooled connection and waits for its result for at most
    /// [`CALL_TIMEOUT`]. A connection that failed is replaced on its next use.
    pub fn run<T, F>(&self, job: F) -> Result<T, PgError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Client) -> Result<T, PgError> + Send + 'static,
    {
        let (answer, answered) = mpsc::sync_channel(1);
        let config = self.config.clone();
        let describe = self.describe.clone();
        let boxed: Job = Box::new(move |slot: &mut Option<Client>| {
            let outcome = connected(slot, &config, &describe).and_then(job);
            if matches!(&outcome, Err(error) if error.kind == PgErrorKind::Unavailable) {
                // Whatever state the connection is in, the next job starts afresh.
                *slot = None;
            }
            let _ = answer.send(outcome);
        });
        self.jobs
            .send(boxed)
            .map_err(|_| unavailable(&self.describe, "the pool has stopped"))?;
        answered
            .recv_timeout(CALL_TIMEOUT)
            .map_err(|_| unavailable(&self.describe, "no answer in time"))?
    }

    /// One round trip, for start-up checks.
    pub fn ping(&self) -> Result<(), PgError> {
        self.run(|client| Ok(client.simple_query("SELECT 1").map(drop)?))
    }

    /// Applies the component's migrations that this database has not seen, in order, in one
    /// transaction, serialised across nodes starting together.
    pub fn migrate(
        &self,
        component: &'static str,
        migrations: &'static [Migration],
    ) -> Result<(), PgError> {
        self.run(move |client| migrate::apply(client, component, migrations))
    }

    /// Starts a thread that LISTENs on `channel` and calls `on_event` with each payload,
    /// and with `None` after every (re)connection, when notifications may have been missed.
    pub fn listen(
        &self,
        channel: &str,
        on_event: impl Fn(Option<&str>) + Send + 'static,
    ) -> Result<Listener, PgError> {
        Listener::start(
            Config::clone(&self.config),
            self.describe.clone(),
            channel,
            on_event,
        )
    }
}

fn serve(queue: &Mutex<Receiver<Job>>) {
    let mut slot: Option<Client> = None;
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        job(&mut slot);
    }
}

/// The slot's connection, connecting first if there is none or it closed.
fn connected<'a>(
    slot: &'a mut Option<Client>,
    config: &Config,
    describe: &str,
) -> Result<&'a mut Client, PgError> {
    if slot.as_ref().is_some_and(Client::is_closed) {
        *slot = None;
    }
    if slot.is_none() {
        *slot = Some(connect(config, describe)?);
    }
    slot.as_mut()
        .ok_or_else(|| unavailable(describe, "no connection"))
}

pub(crate) fn connect(config: &Config, describe: &str) -> Result<Client, PgError> {
    let mut client = config
        .connect(NoTls)
        .map_err(|error| unavailable(describe, &error.to_string()))?;
    client.batch_execute(&format!("SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))?;
    Ok(client)
}

fn unavailable(describe: &str, why: &str) -> PgError {
    PgError::new(
        PgErrorKind::Unavailable,
        format!("PostgreSQL at {describe} unavailable: {why}"),
    )
}

/// `user@host:port/database`, never the password.
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}
