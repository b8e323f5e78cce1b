//! The plugin's global context: options read through libsasl2's `getopt`, and the
//! [`Gate`]s built from them (one per distinct set of options, shared by every
//! connection that uses those options).
//!
//! Options (in the service's SASL configuration):
//! - `saslgate_config: /etc/saslgate/saslgate.conf`: the saslgate configuration file;
//! - `saslgate_db: /var/lib/saslgate/saslgate.db`: the database (overrides the file's
//!   `db`; alone, the built-in defaults apply to everything else);
//! - `saslgate_auxprop_unknown: nouser | refuse`: what the auxprop gate answers for
//!   an account saslgate does not know (default `nouser`: `SASL_NOUSER`, which
//!   libsasl2 lets other auxprop plugins override; `refuse`: `SASL_NOAUTHZ`).
//!
//! A service whose configuration sets neither `saslgate_config` nor `saslgate_db` is
//! not enabled: the mechanisms behave exactly like the stock ones there and the
//! auxprop plugin stays out of the way.

use super::sys;
use crate::ffi::util;
use crate::{Config, Gate};
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once, Weak};

const OPT_DB: &CStr = util::cstr(b"saslgate_db\0");
const OPT_CONFIG: &CStr = util::cstr(b"saslgate_config\0");
const OPT_UNKNOWN: &CStr = util::cstr(b"saslgate_auxprop_unknown\0");

/// How many distinct option sets keep a cached Gate (a process normally has one).
const MAX_GATES: usize = 8;

/// The saslgate options of one service configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub db: Option<String>,
    pub config: Option<String>,
    /// `saslgate_auxprop_unknown: refuse`.
    pub refuse_unknown: bool,
}

impl Options {
    /// Reads the options through `utils->getopt`.
    ///
    /// # Safety
    /// `utils` is NULL or a valid `sasl_utils_t`.
    pub unsafe fn read(utils: *const sys::sasl_utils_t) -> Options {
        // SAFETY: forwarded caller guarantee.
        unsafe {
            Options {
                db: util::getopt(utils, OPT_DB),
                config: util::getopt(utils, OPT_CONFIG),
                refuse_unknown: util::getopt(utils, OPT_UNKNOWN)
                    .is_some_and(|v| v.eq_ignore_ascii_case("refuse")),
            }
        }
    }

    /// saslgate decides in this service.
    pub fn enabled(&self) -> bool {
        self.db.is_some() || self.config.is_some()
    }

    /// The core configuration these options select.
    pub fn load_config(&self) -> Result<Config, String> {
        let mut cfg = match &self.config {
            Some(path) => Config::load(Path::new(path)).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        if let Some(db) = &self.db {
            cfg.db = PathBuf::from(db);
        }
        Ok(cfg)
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        match (&self.config, &self.db) {
            (None, None) => "not enabled (no saslgate_config / saslgate_db)".into(),
            (Some(c), None) => format!("saslgate_config={c}"),
            (None, Some(d)) => format!("saslgate_db={d}"),
            (Some(c), Some(d)) => format!("saslgate_config={c} saslgate_db={d}"),
        }
    }
}

/// Every Gate the plugin made in this process, for the exit-time flush.
static LIVE_GATES: Mutex<Vec<Weak<Gate>>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

/// Hosts such as Postfix smtpd exit without `sasl_done`; the Gates' buffered
/// audit records and last-use stamps (and the counts of rate-limited refusals)
/// are written by an exit handler then. (The plugin is linked `-z nodelete`, so
/// the handler's code is still mapped at exit.)
extern "C" fn flush_at_exit() {
    crate::ffi::guard::guard((), || {
        // try_lock: never block process exit on a lock a dying thread holds.
        if let Ok(gates) = LIVE_GATES.try_lock() {
            for g in gates.iter().filter_map(Weak::upgrade) {
                g.flush_final();
            }
        }
    })
}

fn register(gate: &Arc<Gate>) {
    AT_EXIT.call_once(|| {
        // SAFETY: atexit only stores the function pointer; flush_at_exit is an
        // extern "C" fn that never unwinds (guard) and stays mapped (nodelete).
        unsafe { libc::atexit(flush_at_exit) };
    });
    let mut gates = LIVE_GATES.lock().unwrap_or_else(|p| p.into_inner());
    gates.retain(|w| w.strong_count() > 0);
    gates.push(Arc::downgrade(gate));
}

/// State shared by all connections of one plugin instance (one per
/// `sasl_server_plug_init` / `sasl_auxprop_plug_init` call; freed by libsasl2's
/// free hooks at `sasl_done`).
#[derive(Default)]
pub struct Shared {
    /// Options from the global configuration, read once at plugin init.
    pub init_options: Options,
    gates: Mutex<Vec<(Options, Arc<Gate>)>>,
}

impl Shared {
    pub fn new(init_options: Options) -> Shared {
        Shared {
            init_options,
            gates: Mutex::new(Vec::new()),
        }
    }

    /// The Gate for these options, built on first use and cached. The Gate opens its
    /// database lazily and re-checks the process id on every use, so one cached here
    /// before a fork() is safe in the child.
    pub fn gate(&self, options: &Options) -> Result<Arc<Gate>, String> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, g)) = gates.iter().find(|(o, _)| o == options) {
            return Ok(Arc::clone(g));
        }
        let gate = Arc::new(Gate::new(options.load_config()?));
        register(&gate);
        if gates.len() >= MAX_GATES {
            gates.remove(0);
        }
        gates.push((options.clone(), Arc::clone(&gate)));
        Ok(gate)
    }

    /// Writes buffered audit records of every cached Gate.
    pub fn flush(&self) {
        let gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        for (_, g) in gates.iter() {
            g.flush();
        }
    }
}
