//! saslgated: the saslauthd drop-in. It speaks the saslauthd wire protocol on
//! `DIR/mux` and answers with [`crate::Gate::decide`].
//!
//! - [`protocol`]: counted-string frames, 4- and 5-field requests
//! - [`options`]: the command line (stock saslauthd flags + saslgate ones)
//! - [`server`]: blocking acceptors (fast path) + one reactor (slow clients,
//!   delays, timeouts), shutdown; split by job in `server/`
//! - [`socket`]: socket directory, live/stale socket, pid file, sd_notify
//! - [`log`]: syslog (facility auth) or stderr
//! - [`http`]: the nginx `auth_http` face (`[http]`, `--http`), own threads
//! - [`sys`]: the few libc calls (fork, rlimit, socket activation, accept
//!   timeout, poll, peek/send without blocking); the daemon's
//!   only unsafe code

pub mod answers;
pub mod http;
pub mod log;
pub mod options;
pub mod protocol;
pub mod server;
pub mod socket;
#[allow(unsafe_code)] // system calls std lacks; every block has a SAFETY comment
pub mod sys;

use crate::engine::Gate;
use clap::Parser;
use options::Options;
use std::ffi::OsString;
use std::sync::Arc;

/// Entry point of the `saslgated` binary; returns the process exit code
/// (0 after a clean stop, 1 when it cannot start, 2 for usage errors).
pub fn main_with_args(args: Vec<OsString>) -> i32 {
    let opts = match Options::try_parse_from(args) {
        Ok(o) => o,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    if opts.version {
        println!("saslgated {}", crate::VERSION);
        return 0;
    }
    if let Err(m) = opts.validate() {
        eprintln!("saslgated: {m}");
        eprintln!("Try 'saslgated --help' for more information.");
        return 2;
    }
    let cfg = match opts.load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("saslgated: {e}");
            return e.exit_code().max(1);
        }
    };
    // Check the database before detaching, so that errors reach the terminal.
    if let Err(e) = open_gate(cfg.clone(), |w| eprintln!("saslgated: warning: {w}")) {
        eprintln!("saslgated: cannot start: {e}");
        return 1;
    }
    let gid = match opts.group.as_deref().map(socket::lookup_group).transpose() {
        Ok(g) => g,
        Err(m) => {
            eprintln!("saslgated: --group: {m}");
            return 2;
        }
    };
    let bound = match sys::activated_listener() {
        Ok(Some(listener)) => socket::Bound {
            listener,
            owned_path: None,
        },
        Ok(None) => match socket::bind(&opts.dir, gid) {
            Ok(b) => b,
            Err(m) => {
                eprintln!("saslgated: cannot start: {m}");
                return 1;
            }
        },
        Err(e) => {
            eprintln!("saslgated: cannot start: {e}");
            return 1;
        }
    };
    let activated = bound.owned_path.is_none();
    let under_systemd = activated || std::env::var_os("NOTIFY_SOCKET").is_some();
    if !opts.debug && !opts.foreground && !under_systemd {
        if let Err(e) = sys::daemonize() {
            eprintln!("saslgated: cannot detach: {e}");
            if let Some(p) = &bound.owned_path {
                let _ = std::fs::remove_file(p);
            }
            return 1;
        }
    }
    let log = log::Logger::new(opts.debug, opts.debug);
    // A panic is a bug: say so where the operator looks (syslog once detached).
    let to_stderr = opts.debug;
    std::panic::set_hook(Box::new(move |info| {
        log::Logger::new(to_stderr, false).err(&format!("internal error (bug): {info}"));
    }));
    let code = serve(&opts, cfg, bound, log);
    if code != 0 {
        // Nothing else cleans up after a failed start.
        let _ = std::fs::remove_file(opts.pid_path());
    }
    code
}

fn serve(opts: &Options, cfg: crate::Config, bound: socket::Bound, log: log::Logger) -> i32 {
    let socket_path = bound.owned_path.clone();
    let remove_socket = || {
        if let Some(p) = &socket_path {
            let _ = std::fs::remove_file(p);
        }
    };
    let workers = opts.worker_count();
    // The descriptor budget: the saslauthd face's connections and workers,
    // the auth_http face's threads and its close thread's held connections,
    // and a margin (database, listeners, log). What the limit does not give
    // the close thread, it does not hold (`http_fds`).
    let base_fds = (opts.max_connections + workers + 64) as u64;
    let face_threads = if cfg.http.listen.is_some() {
        http::thread_count(opts.workers_or_cores()) as u64
    } else {
        0
    };
    let reaper_fds = if face_threads > 0 {
        http::reaper::MAX_PENDING as u64
    } else {
        0
    };
    let want_fds = base_fds + face_threads + reaper_fds;
    let limit = match sys::raise_nofile(want_fds) {
        Ok(n) => n,
        Err(e) => {
            log.warn(&format!("cannot raise the open files limit: {e}"));
            base_fds + face_threads
        }
    };
    if limit < base_fds + face_threads {
        log.warn(&format!(
            "open files limit is {limit}, below the {} that --max-connections {} needs",
            base_fds + face_threads,
            opts.max_connections
        ));
    }
    let http_fds = limit
        .saturating_sub(base_fds + face_threads)
        .min(reaper_fds) as usize;
    let db = cfg.db.clone();
    let cache_ttl = cfg.cache_ttl;
    if !cfg.tls_required.is_empty() {
        log.warn(&format!(
            "tls_required ({}) is not enforced on the saslauthd socket: its requests do not say \
             whether the client's connection is encrypted (enforce it in the mail server: \
             Postfix smtpd_tls_auth_only = yes, Cyrus allowplaintext: no); the auth_http face \
             enforces it from Auth-SSL",
            cfg.tls_required.join(", ")
        ));
    }
    // Opened after detaching, and saslgated never forks again.
    let gate = match open_gate(cfg, |w| log.warn(w)) {
        Ok(g) => g
            .single_process()
            .with_background_flush()
            .with_background_checkpoints(),
        Err(e) => {
            log.err(&format!("cannot start: {e}"));
            remove_socket();
            return 1;
        }
    };
    let settings = server::Settings {
        field_limit: opts.field_limit,
        fail_delay: opts.fail_delay,
        timeout: opts.timeout,
        max_connections: opts.max_connections,
        workers,
        noop: opts.bench_noop,
    };
    let server = match server::Server::new(bound.listener, gate, log, settings) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("saslgated: cannot start: {e}");
            remove_socket();
            return 1;
        }
    };
    let shared = server.shared();
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            shared
                .log
                .err(&format!("cannot set up signal handling: {e}"));
            remove_socket();
            return 1;
        }
    };
    let running = match server.start() {
        Ok(r) => r,
        Err(e) => {
            shared.log.err(&format!("cannot start the workers: {e}"));
            remove_socket();
            return 1;
        }
    };
    let http = match start_http(opts, &shared, opts.workers_or_cores(), http_fds) {
        Ok(h) => h,
        Err(e) => {
            shared.log.err(&format!("cannot start: {e}"));
            shared.request_stop();
            running.wait();
            remove_socket();
            return 1;
        }
    };
    let pid_path = opts.pid_path();
    if let Err(e) = socket::write_pid_file(&pid_path) {
        shared.log.warn(&format!(
            "cannot write pid file {}: {e}",
            pid_path.display()
        ));
    }
    let place = socket_path.as_ref().map_or_else(
        || "the socket passed by systemd".to_string(),
        |p| p.display().to_string(),
    );
    shared.log.notice(&format!(
        "saslgated {} ready on {place}: {workers} workers, db {}, cache {}, fail delay {:?}, timeout {:?}, max connections {}",
        crate::VERSION,
        db.display(),
        if cache_ttl.is_zero() { "off".to_string() } else { format!("{}s", cache_ttl.as_secs()) },
        opts.fail_delay,
        opts.timeout,
        opts.max_connections,
    ));
    if opts.bench_noop {
        shared.log.warn(
            "--bench-noop: answering OK to every request without checking it (benchmark only)",
        );
    }
    socket::sd_notify(&format!(
        "READY=1\nMAINPID={}\nSTATUS=serving on {place}",
        std::process::id()
    ));
    // The main thread handles signals; the workers serve.
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGHUP {
            reload(opts, &shared);
        } else {
            shared.log.notice(&format!(
                "signal {sig}: finishing in-flight requests, then stopping"
            ));
            break;
        }
    }
    socket::sd_notify("STOPPING=1");
    // New clients fail fast from now on; the workers finish what they hold.
    remove_socket();
    if let Some(h) = http {
        h.stop();
    }
    shared.request_stop();
    running.wait();
    let _ = std::fs::remove_file(&pid_path);
    shared.log.notice("stopped");
    0
}

/// Starts the `auth_http` face when `[http] listen` or `--http` asks for it.
/// `reaper_max`: the answered connections its close thread may hold (what
/// the open-files limit leaves).
fn start_http(
    opts: &Options,
    shared: &Arc<server::Shared>,
    workers: usize,
    reaper_max: usize,
) -> Result<Option<http::HttpFace>, String> {
    let gate = shared.gate();
    let cfg = &gate.config().http;
    let Some(listen) = cfg.listen.as_ref() else {
        return Ok(None);
    };
    // Its own group ([http] group, made for nginx), never --group: the
    // saslauthd socket's group (Postfix, Cyrus) has no business here.
    let group = cfg.group.as_deref().map(socket::lookup_group).transpose()?;
    if group.is_none() && matches!(listen, http::Listen::Unix(_)) {
        shared.log.notice(
            "auth_http socket without [http] group: mode 0600, only saslgated's own user may ask",
        );
    }
    let settings = http::FaceSettings {
        threads: http::thread_count(workers),
        timeout: opts.timeout,
        reaper_max,
        fail_delay: opts.fail_delay,
        group,
    };
    let face = http::HttpFace::start(listen, cfg, shared.clone(), settings)?;
    shared.log.notice(&format!(
        "auth_http face on {}: {} threads ({} per peer), close thread holds up to {reaper_max}, backends {:?}",
        face.place,
        http::thread_count(workers),
        http::listener::peer_cap(http::thread_count(workers)),
        cfg.backends
    ));
    Ok(Some(face))
}

/// Opens the gate, checking the database. A SQLite file that does not open is
/// an error (a wrong path or permissions: nothing will fix itself). A
/// PostgreSQL server that does not answer is not: the daemon starts, says so
/// through `warn`, answers "unavailable" meanwhile, and each login tries the
/// server again, so service comes back with the database and without a restart.
fn open_gate(cfg: crate::Config, warn: impl FnOnce(&str)) -> crate::Result<Gate> {
    let postgres = matches!(cfg.database(), crate::config::Database::Postgres(_));
    match Gate::open(cfg.clone()) {
        Err(e) if postgres => {
            warn(&format!(
                "the database is not usable now ({e}); answering \"unavailable\" until it is"
            ));
            Ok(Gate::new(cfg))
        }
        other => other,
    }
}

fn reload(opts: &Options, shared: &Arc<server::Shared>) {
    let (path, _) = opts.config_path();
    socket::sd_notify("RELOADING=1");
    match opts.load_config().and_then(Gate::open) {
        Ok(gate) => {
            shared.replace_gate(
                gate.single_process()
                    .with_background_flush()
                    .with_background_checkpoints(),
            );
            shared.log.notice(&format!(
                "SIGHUP: configuration reloaded from {}",
                path.display()
            ));
        }
        Err(e) => shared.log.err(&format!(
            "SIGHUP: reload failed, keeping the previous configuration: {e}"
        )),
    }
    socket::sd_notify("READY=1");
}
