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

use crate::engine::{Gate, Request};
use crate::error::{Error, Result};
use crate::http_config::{backend_address, HttpConfig};
use crate::store::{ChangeStamp, LoginStore};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Routes kept per generation at most; the map starts over when full.
const MAX_ROUTES: usize = 100_000;

/// What this process knows at one generation: the holds, and the accounts'
/// own backends looked up so far.
pub struct RouteView {
    generation: i64,
    /// Held backends (as stored, `IP:PORT`) and the start of each hold.
    holds: HashMap<String, i64>,
    /// (account, protocol) → the account's own backend, if any.
    own: Mutex<HashMap<(String, &'static str), Option<String>>>,
}

/// The view, and the change stamp under which its generation was last read.
struct Current {
    view: Option<Arc<RouteView>>,
    stamp: Option<ChangeStamp>,
}

/// One process has one database; a view of another generation (a change,
/// or another database after a reload) is replaced at the next request.
static CURRENT: Mutex<Current> = Mutex::new(Current {
    view: None,
    stamp: None,
});

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

/// The routing word before the decision.
pub enum Before {
    /// Decide; route with this view afterwards.
    Decide(Arc<RouteView>),
    /// The account has no backend for the protocol: refuse, no hashing.
    /// (`None`: the login names no account; answered alike, so that the
    /// answer does not tell which names are accounts.)
    NoRoute { account: Option<String> },
    /// The account's backend is on hold since `since` (seconds).
    Held {
        account: Option<String>,
        route: Route,
        since: i64,
    },
}

/// The view for the database's current generation.
///
/// The lock is never held across a statement (a slow database must not
/// stall the other threads' cheap path); each (view, stamp) pair written is
/// consistent on its own, so threads racing to write only cost a re-read.
fn current(store: &dyn LoginStore) -> Result<Arc<RouteView>> {
    let lock = || CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
    let stamp = store.change_stamp();
    if let Some(s) = &stamp {
        let slot = lock();
        if let (Some(view), Some(known)) = (&slot.view, &slot.stamp) {
            if known == s {
                // Nothing committed since the generation was read.
                return Ok(view.clone());
            }
        }
    }
    let generation = store.generation()?;
    // The stamp vouches for the generation only if it did not move
    // across the read (a commit in between may or may not be seen).
    let steady = stamp.filter(|s| store.change_stamp().as_ref() == Some(s));
    {
        let mut slot = lock();
        if let Some(view) = slot.view.clone().filter(|v| v.generation == generation) {
            slot.stamp = steady;
            return Ok(view);
        }
    }
    // Read after the generation: what is kept is never older than its tag.
    let view = Arc::new(RouteView {
        generation,
        holds: store.backend_holds()?.into_iter().collect(),
        own: Mutex::new(HashMap::new()),
    });
    let mut slot = lock();
    slot.view = Some(view.clone());
    slot.stamp = steady;
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

/// Before the decision (so that a waiting login uses up no code): the
/// account the login names, its route, and whether that is held. Without any
/// hold, and with a default backend, this resolves nothing.
pub fn before_decision(gate: &Gate, req: &Request<'_>, protocol: &'static str) -> Result<Before> {
    gate.read(|store| {
        let view = current(store)?;
        let config = &gate.config().http;
        if view.holds.is_empty() && config.backends.contains_key(protocol) {
            return Ok(Before::Decide(view));
        }
        // A blocked client or a plain connection to a TLS-only service is
        // refused by the decision at once, never made to wait on a hold.
        if gate.refused_before_name(store, req)? {
            return Ok(Before::Decide(view));
        }
        // A name that is no account (or malformed) goes where an account
        // without a backend of its own would: held or unroutable alike, so
        // that a hold does not tell which names are accounts.
        let account = gate.resolve_login(store, req)?;
        let route = match &account {
            Some(a) => view.route(config, a, protocol, || store.account_backend(a, protocol))?,
            None => config.backends.get(protocol).map(|&backend| Route {
                backend,
                source: Source::Default,
            }),
        };
        Ok(match route {
            None => Before::NoRoute { account },
            Some(route) => match view.hold_of(&route) {
                Some(since) => Before::Held {
                    account,
                    route,
                    since,
                },
                None => Before::Decide(view),
            },
        })
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
