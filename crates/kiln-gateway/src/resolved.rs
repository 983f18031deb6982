//! The gateways requests name, kept in memory: read on every proxied request, so a gateway is
//! read from the database once, not per request.
//!
//! With SQLite every change goes through this process's store, which forgets what it changes:
//! an entry is good until then. With a shared database another node may change a gateway: the
//! PostgreSQL backend's notifications clear the map, and an entry older than `recheck` is read
//! again anyway, in case a notification was lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::Gateway;

type Key = (String, String);

pub(crate) struct ResolvedGateways {
    map: RwLock<HashMap<Key, (Arc<Gateway>, Instant)>>,
    /// How long an entry is trusted; `None`: until this store forgets it.
    recheck: Option<Duration>,
    /// Moved by every forget and clear: a read that began before one is not kept, since it
    /// may predate the change that caused it.
    generation: AtomicU64,
}

impl ResolvedGateways {
    pub(crate) fn new(recheck: Option<Duration>) -> Self {
        ResolvedGateways {
            map: RwLock::default(),
            recheck,
            generation: AtomicU64::new(0),
        }
    }

    /// The gateway, unless it is absent or due for a reread.
    pub(crate) fn fresh(&self, account: &str, id: &str) -> Option<Arc<Gateway>> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        let (gateway, read_at) = map.get(&(account.to_owned(), id.to_owned()))?;
        match self.recheck {
            Some(recheck) if read_at.elapsed() >= recheck => None,
            _ => Some(gateway.clone()),
        }
    }

    /// The gateway however old (to serve while the database is unreachable).
    pub(crate) fn any(&self, account: &str, id: &str) -> Option<Arc<Gateway>> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&(account.to_owned(), id.to_owned()))
            .map(|(gateway, _)| gateway.clone())
    }

    /// To pass to [`ResolvedGateways::keep`] with what is read next.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Keeps `gateway`, read when the generation was `read_at_generation`.
    pub(crate) fn keep(
        &self,
        account: &str,
        id: &str,
        gateway: Arc<Gateway>,
        read_at_generation: u64,
    ) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(Ordering::SeqCst) == read_at_generation {
            map.insert(
                (account.to_owned(), id.to_owned()),
                (gateway, Instant::now()),
            );
        }
    }

    pub(crate) fn forget(&self, account: &str, id: &str) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::SeqCst);
        map.remove(&(account.to_owned(), id.to_owned()));
    }

    pub(crate) fn clear(&self) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::SeqCst);
        map.clear();
    }
}

/// Shared so the PostgreSQL listener's thread can clear it.
pub(crate) type SharedResolved = Arc<ResolvedGateways>;
