//! Where the face sends an accepted login (`Auth-Server`, `Auth-Port`), and
//! whether it must wait first because its backend is on hold.
//!
//! The route is the account's own backend for the protocol
//! (`saslgate user set-backend`), else `[http.backends]`. Routes and holds
//! move the database generation, so what is read here is kept in memory for
//! as long as the generation stays. The generation itself is read only when
//! the database's change stamp (SQLite's WAL-index header, moved by every
//! commit; `LoginStore::change_stamp`) moved since it was last read, so with
//! no hold anywhere (and a default backend) a login costs no statement here
//! between commits; PostgreSQL (no stamp) reads it once per login.
//!
//! The view is kept with the gate ([`Gate::face_memo`]: a reload's new gate
//! starts without one, the file watch drops it) and tagged with the open of
//! the database it was read on ([`OpenId`]): generations and stamps of
//! another database, or of the file before it was replaced, are never
//! compared with it.
//!
//! A hold or a missing route is told only to a login whose credential
//! verified: the face asks the engine to decide with a stop
//! ([`Gate::decide_routed`]) that [`word`] answers once the block list, the
//! throttle, the credential and the account's policy have passed, before a
//! code is used. A wrong password, for any name, is the ordinary refusal.

use crate::engine::{Gate, OpenId, ViewStamp};
use crate::error::{Error, Result};
use crate::http_config::{backend_address, HttpConfig};
use crate::store::LoginStore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Routes kept per generation at most; the map starts over when full.
const MAX_ROUTES: usize = 100_000;

/// What this process knows at one generation of one open of the database:
/// the holds, and the accounts' own backends looked up so far.
pub struct RouteView {
    open: OpenId,
    generation: i64,
    /// Held backends (as stored, `IP:PORT`) and the start of each hold.
    holds: HashMap<String, i64>,
    /// (account, protocol) → the account's own backend, if any.
    own: Mutex<HashMap<(String, &'static str), Option<String>>>,
}

/// The view, and the stamp under which its generation was last read (the
/// gate's face memo).
struct Current {
    view: Arc<RouteView>,
    stamp: Option<ViewStamp>,
}

/// Whose backend a route is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `saslgate user set-backend`.
    Account,
    /// `[http.backends]`.
    Default,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Account => "account",
            Source::Default => "default",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub backend: SocketAddr,
    pub source: Source,
}

/// The routing word on a verified login.
pub enum Word {
    /// Route it here.
    Go(Route),
    /// The account has no backend for the protocol.
    NoRoute,
    /// The account's backend is on hold since `since` (seconds).
    Held { route: Route, since: i64 },
}

/// The view for the current generation of the database `store` is a
/// connection of (`open`).
///
/// The memo's lock is never held across a statement (a slow database must
/// not stall the other threads' cheap path); each (view, stamp) pair written
/// is consistent on its own, so threads racing to write only cost a re-read.
fn current(gate: &Gate, store: &dyn LoginStore, open: OpenId) -> Result<Arc<RouteView>> {
    let stamp = open.stamp(store);
    let known = gate.face_memo::<Current>();
    if let (Some(s), Some(known)) = (&stamp, &known) {
        if known.stamp.as_ref() == Some(s) {
            // Same open, nothing committed since the generation was read.
            return Ok(known.view.clone());
        }
    }
    let generation = store.generation()?;
    // The stamp vouches for the generation only if it did not move
    // across the read (a commit in between may or may not be seen).
    let steady = stamp.filter(|s| open.stamp(store).as_ref() == Some(s));
    let same = known.and_then(|k| {
        let v = &k.view;
        (v.open == open && v.generation == generation).then(|| v.clone())
    });
    let view = match same {
        Some(view) => view,
        // Read after the generation: what is kept is never older than its tag.
        None => Arc::new(RouteView {
            open,
            generation,
            holds: store.backend_holds()?.into_iter().collect(),
            own: Mutex::new(HashMap::new()),
        }),
    };
    gate.set_face_memo(Arc::new(Current {
        view: view.clone(),
        stamp: steady,
    }));
    Ok(view)
}

impl RouteView {
    /// The account's route for `protocol`: its own backend (looked up by
    /// `lookup` once per generation), else the default, else none.
    fn route(
        &self,
        config: &HttpConfig,
        account: &str,
        protocol: &'static str,
        lookup: impl FnOnce() -> Result<Option<String>>,
    ) -> Result<Option<Route>> {
        let key = (account.to_string(), protocol);
        let cached = self
            .own
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        let own = match cached {
            Some(own) => own,
            None => {
                let own = lookup()?;
                let mut map = self.own.lock().unwrap_or_else(PoisonError::into_inner);
                if map.len() >= MAX_ROUTES {
                    map.clear();
                }
                map.insert(key, own.clone());
                own
            }
        };
        if let Some(text) = own {
            // Written through `set-backend`, which checks it; anything else
            // is a damaged row: unavailable, never a guess.
            let backend = backend_address(&text)
                .map_err(|e| Error::Storage(format!("{account}'s {protocol} backend: {e}")))?;
            return Ok(Some(Route {
                backend,
                source: Source::Account,
            }));
        }
        Ok(config.backends.get(protocol).map(|&backend| Route {
            backend,
            source: Source::Default,
        }))
    }

    /// When `route`'s backend was put on hold, if it is held.
    fn hold_of(&self, route: &Route) -> Option<i64> {
        if self.holds.is_empty() {
            return None;
        }
        self.holds.get(&route.backend.to_string()).copied()
    }
}

/// The current view, before the decision: whether the face must decide
/// with a stop ([`RouteView::may_stop`]) and, if not, how to route after.
pub fn view(gate: &Gate) -> Result<Arc<RouteView>> {
    gate.read_open(|store, open| current(gate, store, open))
}

impl RouteView {
    /// Whether a login for `protocol` might be held or unroutable: some hold
    /// exists, or the protocol has no default backend. Otherwise every
    /// login is decided plainly and routed after.
    pub fn may_stop(&self, config: &HttpConfig, protocol: &'static str) -> bool {
        !self.holds.is_empty() || !config.backends.contains_key(protocol)
    }
}

/// The stop's answer for the verified login of `account` (canonical name),
/// on the engine's connection `store` of `open`: its route, or that it must
/// wait or has none.
pub fn word(
    gate: &Gate,
    store: &dyn LoginStore,
    open: OpenId,
    account: &str,
    protocol: &'static str,
) -> Result<Word> {
    let view = current(gate, store, open)?;
    let config = &gate.config().http;
    let route = view.route(config, account, protocol, || {
        store.account_backend(account, protocol)
    })?;
    Ok(match route {
        None => Word::NoRoute,
        Some(route) => match view.hold_of(&route) {
            Some(since) => Word::Held { route, since },
            None => Word::Go(route),
        },
    })
}

/// After an acceptance: the route of the account the engine verified (the
/// canonical name), with the view read before the decision.
pub fn after_decision(
    gate: &Gate,
    view: &RouteView,
    account: &str,
    protocol: &'static str,
) -> Result<Option<Route>> {
    view.route(&gate.config().http, account, protocol, || {
        gate.read(|store| store.account_backend(account, protocol))
    })
}
