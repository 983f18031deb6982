//! A thread that LISTENs on one channel and survives reconnections.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::Config;

use crate::error::{PgError, PgErrorKind};
use crate::pool::connect;

/// How often the thread looks up from waiting to check the connection and whether to stop.
const TICK: Duration = Duration::from_millis(250);
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Stops its thread when dropped (within one tick).
pub struct Listener {
    stop: Arc<AtomicBool>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Listener {
    pub(crate) fn start(
        config: Config,
        describe: Arc<str>,
        channel: &str,
        on_event: impl Fn(Option<&str>) + Send + 'static,
    ) -> Result<Listener, PgError> {
        if !channel.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') || channel.is_empty() {
            return Err(PgError::new(
                PgErrorKind::Other,
                format!("invalid channel name {channel:?}"),
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let listen = format!("LISTEN {channel}");
        thread::Builder::new()
            .name(format!("kiln-pg-listen-{channel}"))
            .spawn(move || {
                while !stopping.load(Ordering::SeqCst) {
                    if let Err(error) =
                        listen_until_lost(&config, &describe, &listen, &stopping, &on_event)
                    {
                        tracing::warn!(%error, "PostgreSQL notifications lost; reconnecting");
                    }
                    thread::sleep(RECONNECT_DELAY);
                }
            })
            .map_err(|error| {
                PgError::new(PgErrorKind::Other, format!("starting a listener: {error}"))
            })?;
        Ok(Listener { stop })
    }
}

fn listen_until_lost(
    config: &Config,
    describe: &str,
    listen: &str,
    stop: &AtomicBool,
    on_event: &dyn Fn(Option<&str>),
) -> Result<(), PgError> {
    let mut client = connect(config, describe)?;
    client.batch_execute(listen)?;
    // Anything sent while we were not listening is unknown: the receiver rereads.
    on_event(None);
    while !stop.load(Ordering::SeqCst) {
        {
            let mut notifications = client.notifications();
            let mut waiting = notifications.timeout_iter(TICK);
            while let Some(notification) = waiting.next()? {
                on_event(Some(notification.payload()));
            }
        }
        if client.is_closed() {
            return Err(PgError::new(PgErrorKind::Unavailable, "connection closed"));
        }
    }
    Ok(())
}
