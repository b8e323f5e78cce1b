//! The admin's address block list (`saslgate block add`), held in memory per
//! database generation: the `blocks` table moves the generation, so the list
//! read at the current generation is the list. Generations of two databases
//! (or of one file before and after it was replaced) are not comparable: the
//! list is also tagged with the open it was read on (`pool::OpenId`), and
//! one of another open is never used. A blocked client is refused
//! before the login name is looked up, before the throttle and before any hash.

use super::pool::OpenId;
use super::Gate;
use crate::error::{Error, Result};
use crate::names::{Network, NetworkSet};
use crate::store::LoginStore;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// The list as last read, and the open and generation it was read at.
#[derive(Default)]
pub(super) struct BlockCache {
    held: RwLock<Option<(OpenId, i64, Arc<NetworkSet>)>>,
}

impl BlockCache {
    fn get(&self, open: OpenId, generation: i64) -> Option<Arc<NetworkSet>> {
        let held = self.held.read().unwrap_or_else(|p| p.into_inner());
        match &*held {
            Some((o, g, set)) if *o == open && *g == generation => Some(set.clone()),
            _ => None,
        }
    }

    fn put(&self, open: OpenId, generation: i64, set: Arc<NetworkSet>) {
        *self.held.write().unwrap_or_else(|p| p.into_inner()) = Some((open, generation, set));
    }

    /// Drops the list (database file replaced, process forked).
    pub(super) fn clear(&self) {
        *self.held.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Gate {
    /// From memory only: whether `ip` is blocked at `generation`, `None` when
    /// the list of that generation is not held (the fast path then leaves the
    /// request to the full path, which reads it).
    pub(super) fn blocked_in_memory(
        &self,
        open: OpenId,
        generation: i64,
        ip: IpAddr,
    ) -> Option<bool> {
        self.blocks
            .get(open, generation)
            .map(|set| set.contains(ip))
    }

    /// Whether `ip` is blocked at `generation` (the store's current one, read
    /// in the caller's transaction on a connection of `open`), reading the
    /// list if it is not held.
    /// A stored entry that does not parse fails closed (an error: unavailable).
    pub(super) fn is_blocked(
        &self,
        store: &dyn LoginStore,
        open: OpenId,
        generation: i64,
        ip: IpAddr,
    ) -> Result<bool> {
        if let Some(set) = self.blocks.get(open, generation) {
            return Ok(set.contains(ip));
        }
        let networks = store
            .blocked_networks()?
            .iter()
            .map(|text| {
                Network::parse(text)
                    .map_err(|e| Error::Storage(format!("block list entry {text:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let set = Arc::new(NetworkSet::new(&networks));
        let blocked = set.contains(ip);
        self.blocks.put(open, generation, set);
        Ok(blocked)
    }
}
