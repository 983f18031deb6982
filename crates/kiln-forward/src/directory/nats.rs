//! The directory over NATS: each beat publishes this node's announcement on the cluster's
//! subject, and every node records the announcements it hears, aged on its own clock. A node
//! that leaves says so, so the others stop sending it requests at once; a newcomer is
//! answered with an announcement straight away, so it knows its peers before it serves.

use std::sync::{Arc, Weak};
use std::time::Duration;

use kiln_core::KilnResult;
use kiln_http::forward::Peer;
use serde::{Deserialize, Serialize};

use super::{Announcement, Beacon, NodeDirectory, PeerRow};

/// How long joining waits for the others' answers to its first announcement.
const FIRST_ANSWERS: Duration = Duration::from_millis(300);
/// Largest announcement read (a node serving thousands of aliases stays far below).
const MAX_ANNOUNCEMENT_BYTES: usize = 256 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Message {
    name: String,
    url: String,
    /// Empty when leaving.
    #[serde(default)]
    serves: Vec<String>,
    #[serde(default)]
    load: u32,
    #[serde(default)]
    leaving: bool,
    /// Set on a node's first announcement: everyone answers with theirs.
    #[serde(default)]
    hello: bool,
}

pub(super) struct BusBeacon {
    bus: Arc<kiln_nats::Bus>,
    subject: String,
    /// The announcement to answer a newcomer with (this node's latest), shared with the
    /// subscription.
    latest: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    first: std::sync::atomic::AtomicBool,
}

impl BusBeacon {
    pub(super) fn listen(
        bus: Arc<kiln_nats::Bus>,
        subject: String,
        directory: Weak<NodeDirectory>,
    ) -> KilnResult<Self> {
        let latest: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
        let (answer_bus, answer_subject, answer_with) =
            (bus.clone(), subject.clone(), latest.clone());
        bus.subscribe(&subject, move |payload| {
            let Some(directory) = directory.upgrade() else {
                return;
            };
            if payload.len() > MAX_ANNOUNCEMENT_BYTES {
                return;
            }
            let Ok(message) = serde_json::from_slice::<Message>(payload) else {
                tracing::debug!("cluster directory: an announcement that is not one; ignored");
                return;
            };
            if message.name == directory.name {
                return;
            }
            if message.hello {
                let mine = answer_with
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if let Some(mine) = mine {
                    answer_bus.publish(&answer_subject, mine);
                }
            }
            let row = (!message.leaving).then(|| {
                PeerRow::seen(
                    Peer {
                        name: message.name.clone(),
                        url: message.url,
                    },
                    message.serves.into_iter().collect(),
                    message.load,
                    Duration::ZERO,
                )
            });
            directory.heard(&message.name, row);
        })?;
        Ok(Self {
            bus,
            subject,
            latest,
            first: std::sync::atomic::AtomicBool::new(true),
        })
    }
}

impl Beacon for BusBeacon {
    fn beat(
        &self,
        directory: &NodeDirectory,
        url: &str,
        announcement: Option<Announcement>,
    ) -> KilnResult<()> {
        let first = self.first.swap(false, std::sync::atomic::Ordering::SeqCst);
        let leaving = announcement.is_none();
        let announcement = announcement.unwrap_or_default();
        let mut message = Message {
            name: directory.name.clone(),
            url: url.to_owned(),
            serves: announcement.serves,
            load: announcement.load,
            leaving,
            hello: false,
        };
        let answer = serde_json::to_vec(&message).unwrap_or_default();
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) =
            (!leaving).then_some(answer.clone());
        if first {
            message.hello = true;
            self.bus.publish(
                &self.subject,
                serde_json::to_vec(&message).unwrap_or_default(),
            );
            std::thread::sleep(FIRST_ANSWERS);
        } else {
            self.bus.publish(&self.subject, answer);
        }
        Ok(())
    }
}
