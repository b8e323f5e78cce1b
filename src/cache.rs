//! Positive cache: lets a repeat login skip the slow hash. Keyed by a keyed hash of
//! (account, service, password) under a random per-process key, so it never holds a
//! password or anything that could be checked offline. Entries die with the TTL or
//! when the database's generation counter moves (any admin change). Failures are
//! never cached. The engine keys the generation with the open of the database
//! (`PositiveCache<(OpenId, i64)>`): generations of two databases, or of a file
//! before and after it was replaced, are not comparable.

use crate::decision::Credential;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries at most; the cache is emptied when full (simple, bounded, rare).
const MAX_ENTRIES: usize = 50_000;

struct Entry<G> {
    expires: Instant,
    generation: G,
    account: String,
    credential: Credential,
}

/// The cache, by the generation (`G`) its entries were verified at.
pub struct PositiveCache<G = i64> {
    key: Vec<u8>,
    ttl: Duration,
    map: Mutex<HashMap<[u8; 32], Entry<G>>>,
}

impl<G: Copy + Eq> PositiveCache<G> {
    pub fn new(ttl: Duration) -> Option<PositiveCache<G>> {
        if ttl.is_zero() {
            return None;
        }
        let key = crate::crypto::random_bytes(32).ok()?;
        Some(PositiveCache {
            key,
            ttl,
            map: Mutex::new(HashMap::new()),
        })
    }

    pub fn fingerprint(&self, account: &str, service: &str, password: &[u8]) -> [u8; 32] {
        crate::crypto::keyed_hash(
            &self.key,
            &[account.as_bytes(), service.as_bytes(), password],
        )
    }

    pub fn get(&self, fp: &[u8; 32], generation: G) -> Option<(String, Credential)> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let hit = match map.get(fp) {
            Some(e) if e.generation == generation && e.expires > Instant::now() => {
                Some((e.account.clone(), e.credential.clone()))
            }
            Some(_) => {
                map.remove(fp);
                None
            }
            None => None,
        };
        hit
    }

    /// Forgets everything (the database file changed under the process).
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// `valid_for`: a shorter life than the TTL (an app password that expires soon).
    pub fn put(
        &self,
        fp: [u8; 32],
        generation: G,
        account: String,
        credential: Credential,
        valid_for: Option<Duration>,
    ) {
        let life = valid_for.map_or(self.ttl, |v| v.min(self.ttl));
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(
            fp,
            Entry {
                expires: Instant::now() + life,
                generation,
                account,
                credential,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn generation_and_ttl_invalidate() {
        let c = PositiveCache::new(Duration::from_secs(60)).unwrap();
        let fp = c.fingerprint("alice", "imap", b"pw");
        assert_ne!(fp, c.fingerprint("alice", "imap", b"px"));
        c.put(fp, 5, "alice".into(), Credential::Master, None);
        assert!(c.get(&fp, 5).is_some());
        assert!(c.get(&fp, 6).is_none());
        assert!(c.get(&fp, 5).is_none(), "stale entry removed");
        c.put(
            fp,
            5,
            "alice".into(),
            Credential::Master,
            Some(Duration::ZERO),
        );
        assert!(c.get(&fp, 5).is_none());
        assert!(PositiveCache::<i64>::new(Duration::ZERO).is_none());
    }
}
