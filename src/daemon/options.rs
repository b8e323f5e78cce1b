//! Command line of `saslgated`: the stock saslauthd flags that make sense here,
//! plus the saslgate ones.

use crate::config::{parse_duration, Config, DEFAULT_CONFIG};
use crate::daemon::protocol::DEFAULT_FIELD_LIMIT;
use clap::{ArgAction, Parser};
use std::path::PathBuf;
use std::time::Duration;

/// Debian's saslauthd socket directory.
pub const DEFAULT_DIR: &str = "/run/saslauthd";
/// Cache lifetime used by `-c` when neither `-t` nor the config file give one.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(600);

/// Acceptor threads per CPU core when `-n` is not given (see
/// [`Options::worker_count`]).
pub const ACCEPTORS_PER_CORE: usize = 4;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "saslgated",
    disable_version_flag = true,
    about = "saslauthd drop-in that decides logins with saslgate",
    long_about = "saslgated answers libsasl2's `pwcheck_method: saslauthd` (and testsaslauthd) \
on DIR/mux with saslgate's login decisions: master passwords, app passwords, two-step logins, \
service policy and throttling, all from the saslgate database.",
    after_help = "Examples:\n  saslgated -a saslgate -m /run/saslauthd -n 4 -c\n  \
saslgated -a saslgate -d -m /tmp/sg --config /etc/saslgate/saslgate.conf --group mail"
)]
pub struct Options {
    /// Authentication mechanism; only `saslgate` exists here.
    #[arg(short = 'a', value_name = "MECH", default_value = "saslgate")]
    pub mech: String,

    /// Socket directory: the socket is DIR/mux, the pid file DIR/saslauthd.pid.
    #[arg(short = 'm', value_name = "DIR", default_value = DEFAULT_DIR)]
    pub dir: PathBuf,

    /// Acceptor threads, which also decide (hash); 0 = four per CPU core.
    #[arg(short = 'n', value_name = "N", default_value_t = 0)]
    pub workers: usize,

    /// Stay in the foreground and log (with debug lines) to stderr.
    #[arg(short = 'd', action = ArgAction::SetTrue)]
    pub debug: bool,

    /// Stay in the foreground (systemd); logs still go to syslog.
    #[arg(short = 'f', long = "foreground", action = ArgAction::SetTrue)]
    pub foreground: bool,

    /// Turn on the positive credential cache (see -t).
    #[arg(short = 'c', action = ArgAction::SetTrue)]
    pub cache: bool,

    /// Cache lifetime in seconds (implies -c); default: cache_ttl from the
    /// config file, else 600.
    #[arg(short = 't', value_name = "SECONDS")]
    pub cache_ttl: Option<u64>,

    /// Accepted for compatibility and ignored: the request's realm always goes
    /// to saslgate, which checks `login@realm` (plain `login` only for the
    /// config file's `local_realms`).
    #[arg(short = 'r', action = ArgAction::SetTrue)]
    pub realm: bool,

    /// Configuration file (same as --config).
    #[arg(short = 'O', value_name = "FILE", conflicts_with = "config")]
    pub config_o: Option<PathBuf>,

    /// Configuration file (TOML); default /etc/saslgate/saslgate.conf if it exists.
    #[arg(long = "config", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Database path (overrides the config file).
    #[arg(long = "db", value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// Group owning the socket (mode 0660) and its directory (0710).
    #[arg(long = "group", short = 'g', value_name = "GROUP")]
    pub group: Option<String>,

    /// Longest field accepted, in bytes; longer requests are refused unread.
    #[arg(long = "field-limit", value_name = "BYTES", default_value_t = DEFAULT_FIELD_LIMIT,
          value_parser = clap::value_parser!(usize))]
    pub field_limit: usize,

    /// Delay before answering NO (does not hold a worker): 1s, 250ms, 0.
    #[arg(long = "fail-delay", value_name = "DURATION", default_value = "1s",
          value_parser = parse_dur)]
    pub fail_delay: Duration,

    /// Per-connection time to send a whole request, and to take the answer.
    #[arg(long = "timeout", value_name = "DURATION", default_value = "10s", value_parser = parse_dur)]
    pub timeout: Duration,

    /// Cap on open client connections; past it new ones wait in the listen queue.
    #[arg(long = "max-connections", value_name = "N", default_value_t = 1000)]
    pub max_connections: usize,

    /// Accepted for compatibility with saslauthd (no accept lock is needed).
    #[arg(short = 'l', action = ArgAction::SetTrue, hide = true)]
    pub no_lock: bool,

    /// Benchmark only: answer every request `OK` without deciding or logging
    /// (the serving path's own ceiling; scripts/bench-daemon.sh). Never in
    /// production: it lets anyone in.
    #[arg(long = "bench-noop", action = ArgAction::SetTrue, hide = true)]
    pub bench_noop: bool,

    /// Also answer nginx's `auth_http` on ADDR (`127.0.0.1:9143` or a UNIX
    /// socket path); overrides `[http] listen`.
    #[arg(long = "http", value_name = "ADDR", value_parser = crate::daemon::http::Listen::parse)]
    pub http: Option<crate::daemon::http::Listen>,

    /// Print the version and exit.
    #[arg(short = 'v', long = "version", action = ArgAction::SetTrue)]
    pub version: bool,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(s).map_err(|e| e.to_string())
}

impl Options {
    /// Checks what clap cannot: returns a message for exit code 2.
    pub fn validate(&self) -> Result<(), String> {
        if self.mech != "saslgate" {
            return Err(format!(
                "authentication mechanism {:?} is not supported: saslgated only implements \
                 `-a saslgate` (logins decided from the saslgate database); use the stock \
                 saslauthd for other mechanisms",
                self.mech
            ));
        }
        if !(1..=u16::MAX as usize).contains(&self.field_limit) {
            return Err(format!(
                "--field-limit must be 1..=65535, got {}",
                self.field_limit
            ));
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be more than zero".into());
        }
        if self.workers > 1024 {
            return Err(format!(
                "-n {} is too many workers (at most 1024)",
                self.workers
            ));
        }
        if self.dir.as_os_str().is_empty() {
            return Err("-m needs a directory".into());
        }
        Ok(())
    }

    /// The config file to read: explicit path (must exist) or the default (may be absent).
    pub fn config_path(&self) -> (PathBuf, bool) {
        match self.config.as_ref().or(self.config_o.as_ref()) {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        }
    }

    /// Loads the config file and applies the command-line overrides. Used at
    /// start and on SIGHUP.
    pub fn load_config(&self) -> crate::Result<Config> {
        let (path, explicit) = self.config_path();
        let mut cfg = if explicit {
            Config::load(&path)?
        } else {
            Config::load_optional(&path)?
        };
        if let Some(db) = &self.db {
            cfg.db = db.clone();
        }
        if let Some(listen) = &self.http {
            cfg.http.check_listen(listen).map_err(crate::Error::Usage)?;
            cfg.http.listen = Some(listen.clone());
        }
        if let Some(t) = self.cache_ttl {
            cfg.cache_ttl = Duration::from_secs(t);
        } else if self.cache && cfg.cache_ttl.is_zero() {
            cfg.cache_ttl = DEFAULT_CACHE_TTL;
        }
        Ok(cfg)
    }

    /// Acceptor threads: `-n`, else four per core. More acceptors than cores
    /// keep one ready in `accept4` while others finish a connection (close, log
    /// line) or are preempted by the client they just answered: measured on
    /// 2 cores (doc/saslgated.md), one per core left the machine idle between
    /// requests at concurrency 1, and sixteen woke acceptors before the
    /// client's request was there at concurrency 8. Hashing is still bounded
    /// by the cores: extra threads only share them.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            ACCEPTORS_PER_CORE * Self::cores()
        }
    }

    /// `-n` if given, else the CPU cores: what the `auth_http` face sizes its
    /// threads by.
    pub fn workers_or_cores(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            Self::cores()
        }
    }

    fn cores() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("mux")
    }

    pub fn pid_path(&self) -> PathBuf {
        self.dir.join("saslauthd.pid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("saslgated").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn stock_flags() {
        let o = parse(&[
            "-a", "saslgate", "-m", "/tmp/x", "-n", "3", "-c", "-t", "30", "-r", "-d",
        ]);
        assert_eq!(o.dir, PathBuf::from("/tmp/x"));
        assert_eq!(o.workers, 3);
        assert!(o.cache && o.realm && o.debug);
        assert_eq!(o.cache_ttl, Some(30));
        assert!(o.validate().is_ok());
        assert_eq!(o.socket_path(), PathBuf::from("/tmp/x/mux"));
        assert!(parse(&["-a", "pam"]).validate().is_err());
        assert!(Options::try_parse_from(["saslgated", "--bogus"]).is_err());
        assert_eq!(
            parse(&["--fail-delay", "250ms"]).fail_delay,
            Duration::from_millis(250)
        );
        assert_eq!(parse(&["--fail-delay", "0"]).fail_delay, Duration::ZERO);
    }
}
