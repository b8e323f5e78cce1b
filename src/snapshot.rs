//! The login data of recently seen accounts, held in memory so that accepting an
//! app password costs at most one SQLite statement instead of seven (see
//! `Attempt::fast_accept` in engine/attempt.rs).
//!
//! Never stale: an entry belongs to the database generation it was read at, and
//! every use checks the current generation together with the throttle rows:
//! one statement, or none while the database's change stamp (SQLite's
//! WAL-index header, moved by every commit of any process) is the one they
//! were read under (engine/fresh.rs). If the generations differ the whole
//! snapshot is dropped and the request takes the full path. Every admin change
//! sets a new generation (store/sql/admin.rs). What logins change themselves (TOTP
//! steps, one-time codes, hash upgrades, last-use stamps) is not kept here.
//!
//! The engine keys it by the open of the database as well as the generation
//! (`Snapshot<(OpenId, i64)>`): generations of two databases, or of a file
//! before and after it was replaced, are not comparable.
//!
//! Not a credential cache: no verification result is kept; the app password is
//! checked against its stored keyed hash on every request, and refusals always
//! take the full path.

use crate::store::types::AppPasswordRow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Accounts and app passwords kept at most (a few tens of MiB); the snapshot
/// starts over when full.
const MAX_ACCOUNTS: usize = 10_000;
const MAX_APP_PASSWORDS: usize = 100_000;

/// What the fast path needs to know about one account.
#[derive(Debug)]
pub struct AccountView {
    pub id: i64,
    pub name: String,
    pub plan: String,
    pub disabled: bool,
    /// `None`: the plan does not exist.
    pub plan_services: Option<Vec<String>>,
    pub overrides: HashMap<String, bool>,
    /// App passwords by their index key (HMAC of account id and password).
    pub apps: HashMap<[u8; 32], AppPasswordRow>,
}

struct Inner<G> {
    generation: Option<G>,
    /// App passwords held in all the views.
    app_passwords: usize,
    /// Login names: `Some` an account, `None` known not to be one (so that
    /// `alice@realm` falling back to `alice` needs no lookup either).
    by_name: HashMap<String, Option<Arc<AccountView>>>,
}

/// The snapshot, by the generation (`G`) its views were read at.
pub struct Snapshot<G = i64> {
    inner: RwLock<Inner<G>>,
}

impl<G> Default for Snapshot<G> {
    fn default() -> Self {
        Snapshot {
            inner: RwLock::new(Inner {
                generation: None,
                app_passwords: 0,
                by_name: HashMap::new(),
            }),
        }
    }
}

impl<G: Copy + Eq> Snapshot<G> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner<G>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner<G>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The account the first known candidate name resolves to, with the
    /// generation it was read at. `None` when a candidate is not known here
    /// (only the database can say).
    pub fn lookup(&self, candidates: &[String]) -> Option<(G, Arc<AccountView>)> {
        let inner = self.read();
        let generation = inner.generation?;
        for name in candidates {
            if let Some(view) = inner.by_name.get(name)? {
                return Some((generation, view.clone()));
            }
        }
        None
    }

    /// Keeps `view`, read at `generation`, the candidate names tried before
    /// it that are neither accounts nor aliases, and the login alias it was
    /// found by (aliases move the generation, so this stays exact). A
    /// different generation replaces everything.
    pub fn remember(
        &self,
        generation: G,
        not_accounts: &[String],
        alias: Option<&str>,
        view: AccountView,
    ) {
        let mut inner = self.write();
        let full = inner.by_name.len() >= MAX_ACCOUNTS
            || inner.app_passwords + view.apps.len() > MAX_APP_PASSWORDS;
        if inner.generation != Some(generation) || full {
            inner.by_name.clear();
            inner.app_passwords = 0;
            inner.generation = Some(generation);
        }
        for name in not_accounts {
            inner.by_name.insert(name.clone(), None);
        }
        inner.app_passwords += view.apps.len();
        let view = Arc::new(view);
        if let Some(alias) = alias {
            inner.by_name.insert(alias.to_string(), Some(view.clone()));
        }
        let replaced = inner.by_name.insert(view.name.clone(), Some(view));
        if let Some(Some(old)) = replaced {
            inner.app_passwords -= old.apps.len();
        }
    }

    /// Drops everything read at `generation` (the database has moved on).
    pub fn forget(&self, generation: G) {
        let mut inner = self.write();
        if inner.generation == Some(generation) {
            inner.by_name.clear();
            inner.app_passwords = 0;
            inner.generation = None;
        }
    }

    /// Drops everything (database file replaced, process forked).
    pub fn clear(&self) {
        let mut inner = self.write();
        inner.by_name.clear();
        inner.app_passwords = 0;
        inner.generation = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: i64, name: &str) -> AccountView {
        AccountView {
            id,
            name: name.into(),
            plan: "default".into(),
            disabled: false,
            plan_services: Some(vec!["*".into()]),
            overrides: HashMap::new(),
            apps: HashMap::new(),
        }
    }

    #[test]
    fn unknown_names_go_to_the_database() {
        let s = Snapshot::default();
        assert!(s.lookup(&["alice".into()]).is_none());
        s.remember(7, &["alice@example.org".into()], None, view(1, "alice"));
        let (g, v) = s
            .lookup(&["alice@example.org".into(), "alice".into()])
            .unwrap();
        assert_eq!((g, v.id), (7, 1));
        // A candidate never looked up: unknown, even if a later one is known.
        assert!(s
            .lookup(&["alice@other.org".into(), "alice".into()])
            .is_none());
    }

    #[test]
    fn an_alias_finds_its_account() {
        let s = Snapshot::default();
        s.remember(7, &["al@example.org".into()], Some("al"), view(1, "alice"));
        let (_, v) = s.lookup(&["al@example.org".into(), "al".into()]).unwrap();
        assert_eq!(v.name, "alice");
        assert_eq!(s.lookup(&["alice".into()]).unwrap().1.id, 1);
        assert!(s.lookup(&["alias-never-seen".into()]).is_none());
    }

    #[test]
    fn bounded() {
        let s = Snapshot::default();
        for i in 0..(MAX_ACCOUNTS as i64 + 5) {
            s.remember(1, &[], None, view(i, &format!("u{i}")));
        }
        let inner = s.read();
        assert!(inner.by_name.len() <= MAX_ACCOUNTS);
        assert!(inner
            .by_name
            .contains_key(&format!("u{}", MAX_ACCOUNTS + 4)));
    }

    #[test]
    fn a_new_generation_replaces_everything() {
        let s = Snapshot::default();
        s.remember(7, &[], None, view(1, "alice"));
        s.remember(8, &[], None, view(2, "bob"));
        assert!(s.lookup(&["alice".into()]).is_none());
        assert_eq!(s.lookup(&["bob".into()]).unwrap().0, 8);
        s.forget(7); // not the current one: nothing happens
        assert!(s.lookup(&["bob".into()]).is_some());
        s.forget(8);
        assert!(s.lookup(&["bob".into()]).is_none());
        s.remember(9, &[], None, view(2, "bob"));
        s.clear();
        assert!(s.lookup(&["bob".into()]).is_none());
    }
}
