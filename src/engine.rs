//! The login decision engine: [`Gate::decide`] implements "How a login is decided"
//! from DESIGN.md. Every face (CLI `verify`, saslgated, the libsasl2 plugin, the C
//! ABI) calls it; none decides anything itself.

use crate::audit;
use crate::cache::PositiveCache;
use crate::config::Config;
use crate::crypto::{
    bcrypt_verify, bcrypt_verify_padded, canonical_generated, HashCounter, APP_PASSWORD_LEN,
    CODE_LEN,
};
use crate::names;
use crate::snapshot::{AccountView, Snapshot};
use crate::store::login::{AccountRow, AppPasswordRow, AuditRecord, LastUse};
use crate::store::Store;
use crate::throttle::{self, Keys};
use crate::timefmt::now;
use crate::totp;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One login attempt, as the faces receive it: raw bytes, validated here.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// Login name as typed (`alice`, `Alice@Example.org`).
    pub login: &'a [u8],
    /// Password, possibly followed by a TOTP code or one-time code.
    pub password: &'a [u8],
    /// Service name (`imap`, `smtp`, `pop3`...), mapped through aliases.
    pub service: &'a [u8],
    /// Realm from libsasl2 / saslauthd; `alice` + `example.org` = `alice@example.org`.
    pub realm: Option<&'a [u8]>,
    /// Client address: `1.2.3.4`, `1.2.3.4;port` (libsasl2 ipremoteport), `::1`.
    pub client_addr: Option<&'a [u8]>,
}

/// Which credential proved the login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Master password on an account without two-step login.
    Master,
    /// Master password followed by a TOTP code.
    MasterAndTotp,
    /// Master password followed by a one-time code (now used up).
    MasterAndCode,
    /// An app password.
    AppPassword { id: i64, label: String },
    /// No credential checked: an account-policy check for a mechanism saslgate does
    /// not verify itself (the auxprop gate).
    PolicyOnly,
}

impl std::fmt::Display for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Master => write!(f, "master"),
            Credential::MasterAndTotp => write!(f, "master+totp"),
            Credential::MasterAndCode => write!(f, "master+code"),
            Credential::AppPassword { id, label } => write!(f, "app-password {id} ({label})"),
            Credential::PolicyOnly => write!(f, "policy-only"),
        }
    }
}

/// Why a login was refused. The faces show [`RefuseReason::public_text`] to the
/// client; `Decision::Refused::detail` goes only to logs and the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// Unknown account, wrong password, wrong/used/missing code, expired or revoked
    /// app password: never says which.
    BadCredentials,
    /// Right credential, account disabled.
    Disabled,
    /// Right credential, service not allowed by policy.
    NotAllowed,
    /// Client address (or account + address) over its failure budget.
    Throttled,
    /// Malformed input: empty fields, NUL bytes, invalid UTF-8, oversized fields.
    BadInput,
    /// Account unknown (only from the policy check [`Gate::check_account`]; logins
    /// answer `BadCredentials` instead so accounts cannot be enumerated).
    NoSuchAccount,
}

impl RefuseReason {
    /// Short, safe text for the client.
    pub fn public_text(self) -> &'static str {
        match self {
            RefuseReason::BadCredentials => "authentication failed",
            RefuseReason::Disabled => "account disabled",
            RefuseReason::NotAllowed => "not allowed for this service",
            RefuseReason::Throttled => "too many failures, try again later",
            RefuseReason::BadInput => "malformed request",
            RefuseReason::NoSuchAccount => "no such account",
        }
    }
    /// Stable lower-case name used in the audit trail and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            RefuseReason::BadCredentials => "bad-credentials",
            RefuseReason::Disabled => "disabled",
            RefuseReason::NotAllowed => "not-allowed",
            RefuseReason::Throttled => "throttled",
            RefuseReason::BadInput => "bad-input",
            RefuseReason::NoSuchAccount => "no-such-account",
        }
    }
}

/// The outcome of [`Gate::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accepted {
        /// Canonical account name.
        account: String,
        credential: Credential,
    },
    Refused {
        reason: RefuseReason,
        /// For logs and audit only (e.g. "app password 3 expired"); never a secret.
        detail: String,
        /// For `Throttled`: when the block ends.
        retry_after: Option<Duration>,
        /// Suggested delay before answering (slow-down of an account attacked
        /// without client addresses). Zero when none.
        delay: Duration,
    },
    /// Storage or internal failure: fail closed, answer "unavailable", never OK.
    Unavailable { cause: String },
}

impl Decision {
    pub fn is_accepted(&self) -> bool {
        matches!(self, Decision::Accepted { .. })
    }
}

/// Counters, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// bcrypt verifications (real or dummy) performed by `decide`.
    pub slow_hashes: u64,
    /// bcrypt hashes computed (rehash on login, dummy hash set-up).
    pub hashes_created: u64,
    pub cache_hits: u64,
    /// App passwords accepted by the fast path (account data from the snapshot).
    pub fast_accepts: u64,
    pub decisions: u64,
}

/// The decision engine over one database. `Send + Sync`: share it across threads
/// (it keeps a small pool of SQLite connections). Fork-safe: a child process never
/// uses a connection opened by its parent (each use checks the process id).
pub struct Gate {
    config: Config,
    pool: Mutex<Pool>,
    counter: HashCounter,
    cache: Option<PositiveCache>,
    /// Login data of recent accounts for the app-password fast path.
    snapshot: Snapshot,
    buffer: Mutex<audit::Buffer>,
    dummy_hash: OnceLock<Option<String>>,
    decisions: AtomicU64,
    cache_hits: AtomicU64,
    fast_accepts: AtomicU64,
    /// Check the process id on every use (see [`Gate::single_process`]).
    fork_checks: bool,
    /// See [`Gate::with_background_flush`].
    background_flush: bool,
    /// The last [`Gate::flush`] failed.
    flush_failed: AtomicBool,
}

/// Idle connections, owned by the process that opened them.
struct Pool {
    pid: u32,
    idle: Vec<Store>,
    /// The database file as last seen (inode, size, mtime): a file deleted,
    /// replaced or copied over under us must not keep being served from what we
    /// read before.
    file: Option<FileState>,
    /// The inode this process last used: a different one at the path is a
    /// replaced file.
    known_inode: Option<(u64, u64)>,
    /// The file was replaced while a write-ahead log from before the replacement
    /// is still beside it: opening it would mix that log into the new file.
    stale_wal: bool,
    /// When `file_id` was last compared with the path.
    checked_at: Option<Instant>,
    /// Bumped when the file changed: a connection taken before goes unpooled.
    epoch: u64,
}

/// How often the database path is checked for a deleted or replaced file. A
/// `stat` per login cost ~3 % of the daemon's time; a tenth of a second is far
/// below how fast an admin can tell whether a replaced file was noticed.
const FILE_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Idle connections kept at most.
const MAX_IDLE: usize = 32;

/// What checking the credential found.
enum CredentialCheck {
    Good {
        credential: Credential,
        app: Option<AppPasswordRow>,
        cacheable: bool,
    },
    Bad {
        detail: String,
    },
}

/// What is compared every [`FILE_CHECK_INTERVAL`]: the inode, and the size and
/// modification time (a file copied over in place keeps its inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    inode: (u64, u64),
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn file_state(path: &std::path::Path) -> Option<FileState> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| FileState {
        inode: (m.dev(), m.ino()),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// A `-wal` file older than the database file's last change of inode data
/// (the rename or creation that put it there) belongs to the file it replaced.
fn wal_predates(path: &std::path::Path, file: &FileState) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    match std::fs::metadata(&wal) {
        Ok(m) => m.len() > 0 && (m.mtime(), m.mtime_nsec()) < file.ctime,
        Err(_) => false,
    }
}

impl Gate {
    /// A gate that opens the database lazily: a missing or broken database makes
    /// each decision "unavailable" until it is repaired (no restart needed).
    pub fn new(config: Config) -> Gate {
        Gate {
            cache: PositiveCache::new(config.cache_ttl),
            config,
            pool: Mutex::new(Pool {
                pid: std::process::id(),
                idle: Vec::new(),
                file: None,
                known_inode: None,
                stale_wal: false,
                checked_at: None,
                epoch: 0,
            }),
            counter: HashCounter::default(),
            snapshot: Snapshot::default(),
            buffer: Mutex::new(audit::Buffer::new(now())),
            dummy_hash: OnceLock::new(),
            decisions: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            fast_accepts: AtomicU64::new(0),
            fork_checks: true,
            background_flush: false,
            flush_failed: AtomicBool::new(false),
        }
    }

    /// Like [`Gate::new`] but checks now that the database opens and is a saslgate
    /// database of a supported version.
    pub fn open(config: Config) -> crate::Result<Gate> {
        let gate = Gate::new(config);
        gate.with_store(|_| Ok(()))?;
        Ok(gate)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        Stats {
            slow_hashes: self.counter.verifies.load(Ordering::Relaxed),
            hashes_created: self.counter.creates.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            fast_accepts: self.fast_accepts.load(Ordering::Relaxed),
            decisions: self.decisions.load(Ordering::Relaxed),
        }
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_buffer(&self) -> std::sync::MutexGuard<'_, audit::Buffer> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on a pooled connection inside one read transaction.
    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> crate::Result<T>) -> crate::Result<T> {
        self.with_connection(|store| in_read(store, f))
    }

    /// Runs `f` on a pooled connection. A connection that failed is dropped (the
    /// next call reopens, so a repaired database is picked up without a restart).
    fn with_connection<T>(
        &self,
        f: impl FnOnce(&mut Store) -> crate::Result<T>,
    ) -> crate::Result<T> {
        // Fork safety costs a getpid() per use; see `Gate::single_process`.
        let pid = self.fork_checks.then(std::process::id);
        let (taken, epoch) = {
            let mut pool = self.lock_pool();
            if let Some(pid) = pid.filter(|p| *p != pool.pid) {
                // Forked: the parent's connections (and its buffered records) are not ours.
                // Leak them rather than close: closing could disturb the parent's locks.
                for store in pool.idle.drain(..) {
                    std::mem::forget(store);
                }
                pool.pid = pid;
                self.lock_buffer().forget();
                self.snapshot.clear();
            }
            let now = Instant::now();
            if pool
                .checked_at
                .map_or(true, |t| now.duration_since(t) >= FILE_CHECK_INTERVAL)
            {
                pool.checked_at = Some(now);
                let current = file_state(&self.config.db);
                if pool.file != current {
                    pool.idle.clear();
                    pool.file = current;
                    pool.epoch += 1;
                    self.snapshot.clear();
                    if let Some(cache) = &self.cache {
                        cache.clear();
                    }
                }
                pool.stale_wal = match (&current, pool.known_inode) {
                    (Some(f), Some(known)) if f.inode != known => wal_predates(&self.config.db, f),
                    _ => false,
                };
            }
            if pool.stale_wal {
                return Err(crate::Error::Storage(format!(
                    "{}: the database file was replaced while its write-ahead log was in use; \
                     restore with `saslgate restore`, or stop every service using it and remove \
                     the old -wal and -shm files",
                    self.config.db.display()
                )));
            }
            if let Some(f) = pool.file {
                pool.known_inode = Some(f.inode);
            }
            (pool.idle.pop(), pool.epoch)
        };
        let mut store = match taken {
            Some(s) => s,
            None => Store::open(&self.config)?,
        };
        let out = f(&mut store);
        if out.is_ok() {
            let mut pool = self.lock_pool();
            let same_process = pid.map_or(true, |p| p == pool.pid);
            if same_process && pool.epoch == epoch && pool.idle.len() < MAX_IDLE {
                pool.idle.push(store);
            }
        }
        out
    }

    /// For a process that does not fork while the gate is alive (saslgated
    /// opens its gate after detaching): skips the per-use fork check, a
    /// `getpid()` syscall on every login.
    pub fn single_process(mut self) -> Gate {
        self.fork_checks = false;
        self
    }

    /// A bcrypt hash of a random password at the configured cost, so an unknown
    /// account costs the same slow hash as a known one.
    fn dummy_verify(&self, store: &Store, password: &[u8]) -> crate::Result<()> {
        store.end_read()?;
        let hash = self.dummy_hash.get_or_init(|| {
            let pw = crate::crypto::random_bytes(16).ok()?;
            crate::crypto::bcrypt_hash(&self.counter, &pw, self.config.bcrypt_cost).ok()
        });
        match hash {
            Some(h) => {
                let _ = bcrypt_verify(&self.counter, password, h);
            }
            // No randomness: still spend the time on a fixed hash of this cost.
            None => {
                let _ = crate::crypto::bcrypt_hash(&self.counter, b"x", self.config.bcrypt_cost);
            }
        }
        Ok(())
    }

    /// bcrypt verify, outside the read transaction (a 50+ ms hash must not pin a
    /// WAL snapshot and hold back checkpoints).
    fn slow_verify(&self, store: &Store, password: &[u8], hash: &str) -> crate::Result<bool> {
        store.end_read()?;
        Ok(bcrypt_verify_padded(
            &self.counter,
            password,
            hash,
            self.config.bcrypt_cost,
        ))
    }

    /// Decides one login attempt. Never panics on any input; any storage or
    /// internal error gives `Decision::Unavailable`.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        self.decisions.fetch_add(1, Ordering::Relaxed);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decide_inner(req)))
            .unwrap_or_else(|_| Decision::Unavailable {
                cause: "internal error".into(),
            })
    }

    fn decide_inner(&self, req: &Request<'_>) -> Decision {
        let now = now();
        let input = match Input::parse(req, &self.config) {
            Ok(i) => i,
            Err(e) => return self.refuse_bad_input(req, &e.to_string(), now),
        };
        let result = self.with_connection(|store| {
            match self.fast_accept(store, &input, req.password, now)? {
                Some(d) => Ok(d),
                None => in_read(store, |s| self.decide_with(s, &input, req.password, now)),
            }
        });
        match result {
            Ok(d) => d,
            Err(e) => Decision::Unavailable {
                cause: e.to_string(),
            },
        }
    }

    /// The common case in one SQLite statement: a valid app password of an
    /// account in the snapshot, allowed for the service, client not throttled.
    /// `None` sends the request down the full path, which decides everything
    /// else (every refusal included) from the database.
    fn fast_accept(
        &self,
        store: &mut Store,
        input: &Input,
        password: &[u8],
        now: i64,
    ) -> crate::Result<Option<Decision>> {
        let Some(canonical) = canonical_generated(password, APP_PASSWORD_LEN) else {
            return Ok(None);
        };
        let Some((generation, view)) = self.snapshot.lookup(&input.candidates) else {
            return Ok(None);
        };
        let lookup = store.app_lookup(view.id, canonical.as_bytes());
        let Some(app) = view.apps.get(&lookup) else {
            return Ok(None);
        };
        let usable = !view.disabled
            && app.revoked.is_none()
            && !app.expires.is_some_and(|e| e <= now)
            && policy_rule(
                &view.plan,
                &input.service,
                view.overrides
                    .get(&input.service)
                    .or_else(|| view.overrides.get("*"))
                    .copied(),
                view.plan_services.as_deref(),
                Some(app),
                &self.config.restricted_services,
            )
            .is_none();
        if !usable {
            return Ok(None);
        }
        let keys = Keys::new(&view.name, input.addr, &self.config);
        let (current, throttle) = store.generation_and_throttle(&keys, now)?;
        if current != generation {
            self.snapshot.forget(generation);
            return Ok(None);
        }
        let throttle::State::Open { has_account_rows } = throttle else {
            return Ok(None);
        };
        let credential = Credential::AppPassword {
            id: app.id,
            label: app.label.clone(),
        };
        let used = Some(LastUse::AppPassword(app.id));
        let decision = self.accept(
            store,
            input,
            &view.name,
            credential,
            &keys,
            has_account_rows,
            used,
            now,
        )?;
        self.fast_accepts.fetch_add(1, Ordering::Relaxed);
        Ok(Some(decision))
    }

    /// After the full path accepted an app password: keeps the account's login
    /// data for the fast path. Runs inside the decision's read transaction, so
    /// the data and the generation belong together.
    fn remember_account(
        &self,
        store: &Store,
        input: &Input,
        acct: &AccountRow,
    ) -> crate::Result<()> {
        let generation = store.generation()?;
        let not_accounts: Vec<String> = input
            .candidates
            .iter()
            .take_while(|c| **c != acct.name)
            .cloned()
            .collect();
        let view = AccountView {
            id: acct.id,
            name: acct.name.clone(),
            plan: acct.plan.clone(),
            disabled: acct.disabled,
            plan_services: store.plan_services(&acct.plan)?,
            overrides: store.service_overrides(acct.id)?.into_iter().collect(),
            apps: store
                .app_passwords_by_lookup(acct.id)?
                .into_iter()
                .collect(),
        };
        self.snapshot.remember(generation, &not_accounts, view);
        Ok(())
    }

    /// A malformed request: counted against the client's address like a wrong
    /// password (so a flood of them from one client is throttled), its audit
    /// record rate limited (it costs the client nothing to send).
    fn refuse_bad_input(&self, req: &Request<'_>, detail: &str, now: i64) -> Decision {
        let addr = req.client_addr.and_then(names::parse_client_addr);
        let keys = addr.and_then(|ip| Keys::address_only(ip, &self.config));
        let wants = audit::wants(&self.config.audit_level, false);
        let record = |reason: RefuseReason| AuditRecord {
            ts: now,
            account: Some(lossy_short(req.login)),
            service: Some(lossy_short(req.service)),
            client_addr: req.client_addr.map(lossy_short),
            outcome: "refused",
            reason: Some(reason.name()),
            detail: Some(detail.to_string()),
            credential: None,
        };
        let result = self.with_connection(|store| {
            if let Some(keys) = &keys {
                let state = in_read(store, |s| s.throttle_state(keys, now))?;
                if let throttle::State::Blocked { retry_after } = state {
                    let reason = RefuseReason::Throttled;
                    if wants && self.admit_cheap(reason, addr, None, now) {
                        let mut r = record(reason);
                        r.detail = Some(format!(
                            "malformed request ({detail}) from a client over its failure budget"
                        ));
                        store.write_batch(&[r], &[])?;
                    }
                    self.flush_if_due(store, now)?;
                    return Ok(Decision::Refused {
                        reason,
                        detail: format!(
                            "client over its failure budget for {retry_after} more seconds"
                        ),
                        retry_after: Some(Duration::from_secs(retry_after as u64)),
                        delay: Duration::ZERO,
                    });
                }
            }
            let reason = RefuseReason::BadInput;
            let r = (wants && self.admit_cheap(reason, addr, None, now)).then(|| record(reason));
            match &keys {
                Some(keys) => store.record_bad_input(keys, now, r.as_ref())?,
                None => {
                    if let Some(r) = r {
                        store.write_batch(&[r], &[])?;
                    }
                }
            }
            self.flush_if_due(store, now)?;
            Ok(Decision::Refused {
                reason,
                detail: detail.to_string(),
                retry_after: None,
                delay: Duration::ZERO,
            })
        });
        result.unwrap_or_else(|e| Decision::Unavailable {
            cause: e.to_string(),
        })
    }

    /// Rate limit of the audit records of refusals that cost no hash (see
    /// `audit`): `true` if this one is written. Limited per client (IPv6 per
    /// `ipv6_prefix` network); a trusted address is limited per account too, as
    /// only its account + address keys ever block.
    fn admit_cheap(
        &self,
        reason: RefuseReason,
        addr: Option<std::net::IpAddr>,
        account: Option<&str>,
        now: i64,
    ) -> bool {
        let client = addr.map(|ip| throttle::client_group(ip, self.config.ipv6_prefix));
        let trusted = addr.is_some_and(|ip| throttle::is_trusted(&self.config, ip));
        let account = account.filter(|_| trusted);
        let key = format!(
            "{} {} {}",
            reason.name(),
            client.as_deref().unwrap_or("-"),
            account.unwrap_or("")
        );
        self.lock_buffer()
            .admit(key, reason.name(), client, account.map(String::from), now)
    }

    /// Writes the buffered records if due (a summary of suppressed refusals
    /// waits there; a process that only refuses must write it too).
    fn flush_if_due(&self, store: &mut Store, now: i64) -> crate::Result<()> {
        let due = self
            .lock_buffer()
            .due(now, self.config.flush_interval.as_secs() as i64);
        if due {
            self.flush_into(store, now)?;
        }
        Ok(())
    }

    fn record(&self, input: &Input, account: &str, outcome: &'static str) -> AuditRecord {
        AuditRecord {
            ts: 0,
            account: Some(account.to_string()),
            service: Some(input.service.clone()),
            client_addr: input.addr.map(|a| a.to_string()),
            outcome,
            reason: None,
            detail: None,
            credential: None,
        }
    }

    /// Writes a refusal that does not touch the failure counters (throttled,
    /// disabled, not allowed) and builds the decision.
    #[allow(clippy::too_many_arguments)] // one call shape for every non-counting refusal
    fn refuse_now(
        &self,
        store: &mut Store,
        input: &Input,
        account: &str,
        reason: RefuseReason,
        detail: String,
        retry_after: Option<Duration>,
        credential: Option<&Credential>,
        now: i64,
    ) -> crate::Result<Decision> {
        if audit::wants(&self.config.audit_level, false) {
            // A throttled refusal costs no hash: its record is rate limited.
            let cheap = reason == RefuseReason::Throttled;
            if !cheap || self.admit_cheap(reason, input.addr, Some(account), now) {
                let mut r = self.record(input, account, "refused");
                r.ts = now;
                r.reason = Some(reason.name());
                r.detail = Some(detail.clone());
                r.credential = credential.map(|c| c.to_string());
                store.write_batch(&[r], &[])?;
            }
            if cheap {
                self.flush_if_due(store, now)?;
            }
        }
        Ok(Decision::Refused {
            reason,
            detail,
            retry_after,
            delay: Duration::ZERO,
        })
    }

    fn decide_with(
        &self,
        store: &mut Store,
        input: &Input,
        password: &[u8],
        now: i64,
    ) -> crate::Result<Decision> {
        // Resolve the account name (alice@realm, then alice).
        let (account, name) = resolve_account(store, &input.candidates)?;

        // 2. Throttle, before any hashing.
        let keys = Keys::new(&name, input.addr, &self.config);
        let throttle = store.throttle_state(&keys, now)?;
        if let throttle::State::Blocked { retry_after } = throttle {
            let retry = Duration::from_secs(retry_after as u64);
            let detail = format!("client over its failure budget for {retry_after} more seconds");
            return self.refuse_now(
                store,
                input,
                &name,
                RefuseReason::Throttled,
                detail,
                Some(retry),
                None,
                now,
            );
        }
        let has_account_rows = matches!(
            throttle,
            throttle::State::Open {
                has_account_rows: true
            }
        );

        // Positive cache (only for accounts without two-step login).
        let cached = match (&self.cache, &account) {
            (Some(cache), Some(a)) if !a.two_step() => {
                let fp = cache.fingerprint(&name, &input.service, password);
                let generation = store.generation()?;
                Some((fp, generation, cache.get(&fp, generation)))
            }
            _ => None,
        };
        if let Some((_, _, Some((acct, credential)))) = &cached {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return self.accept(
                store,
                input,
                acct,
                credential.clone(),
                &keys,
                has_account_rows,
                None,
                now,
            );
        }

        // 3-5. Credentials: at most one slow hash.
        let check = self.check_credential(store, account.as_ref(), password, now)?;
        let (credential, app, cacheable) = match check {
            CredentialCheck::Bad { detail } => {
                let fp = store.fingerprint(&[b"wrong-password", name.as_bytes(), password]);
                let mut record = None;
                if audit::wants(&self.config.audit_level, false) {
                    let mut r = self.record(input, &name, "refused");
                    r.ts = now;
                    r.reason = Some(RefuseReason::BadCredentials.name());
                    r.detail = Some(detail.clone());
                    record = Some(r);
                }
                let delay = store.record_failure(&keys, &fp[..16], now, record.as_ref())?;
                return Ok(Decision::Refused {
                    reason: RefuseReason::BadCredentials,
                    detail,
                    retry_after: None,
                    delay,
                });
            }
            CredentialCheck::Good {
                credential,
                app,
                cacheable,
            } => (credential, app, cacheable),
        };
        let Some(acct) = account else {
            return Err(crate::Error::Storage("credential without account".into()));
        };

        // 6. Account state and policy.
        if acct.disabled {
            return self.refuse_now(
                store,
                input,
                &name,
                RefuseReason::Disabled,
                "account disabled".into(),
                None,
                Some(&credential),
                now,
            );
        }
        if let Some(rule) = policy_denial(store, &acct, &input.service, app.as_ref())? {
            return self.refuse_now(
                store,
                input,
                &name,
                RefuseReason::NotAllowed,
                rule,
                None,
                Some(&credential),
                now,
            );
        }

        if app.is_some() {
            self.remember_account(store, input, &acct)?;
        }
        if let (Some(cache), Some((fp, generation, None)), true) = (&self.cache, cached, cacheable)
        {
            let valid_for = app
                .as_ref()
                .and_then(|a| a.expires)
                .map(|e| Duration::from_secs((e - now).max(0) as u64));
            cache.put(fp, generation, name.clone(), credential.clone(), valid_for);
        }
        let used = match &app {
            Some(a) => LastUse::AppPassword(a.id),
            None => LastUse::Account(acct.id),
        };
        self.accept(
            store,
            input,
            &name,
            credential,
            &keys,
            has_account_rows,
            Some(used),
            now,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn accept(
        &self,
        store: &mut Store,
        input: &Input,
        account: &str,
        credential: Credential,
        keys: &Keys,
        has_account_rows: bool,
        used: Option<LastUse>,
        now: i64,
    ) -> crate::Result<Decision> {
        // 7. Record: clear the account's failure rows, buffer audit + last use.
        if has_account_rows {
            store.record_success(keys)?;
        }
        let record = audit::wants(&self.config.audit_level, true).then(|| {
            let mut r = self.record(input, account, "accepted");
            r.ts = now;
            r.credential = Some(credential.to_string());
            r
        });
        let (due, waiting) = {
            let mut buf = self.lock_buffer();
            buf.push(record, used, now);
            let due = buf.due(now, self.config.flush_interval.as_secs() as i64);
            (due, buf.len())
        };
        // With a background flusher the login does not wait for the batch write,
        // unless the flusher's last write failed or it has fallen behind.
        let leave_to_flusher = self.background_flush
            && !self.config.flush_interval.is_zero()
            && !self.flush_failed.load(Ordering::Relaxed)
            && waiting < audit::BACKGROUND_MAX;
        if due && !leave_to_flusher {
            // Fail closed: if the trail cannot be written, this login is not accepted.
            self.flush_into(store, now)?;
        }
        Ok(Decision::Accepted {
            account: account.to_string(),
            credential,
        })
    }

    fn flush_into(&self, store: &mut Store, now: i64) -> crate::Result<()> {
        let (records, used, prune) = {
            let mut buf = self.lock_buffer();
            let (r, u) = buf.take();
            buf.last_flush = now;
            let prune = now - buf.last_prune >= 60;
            if prune {
                buf.last_prune = now;
            }
            (r, u, prune)
        };
        if let Err(e) = store.write_batch(&records, &used) {
            self.lock_buffer().restore(records, used);
            return Err(e);
        }
        if prune {
            store.prune(now)?;
        }
        Ok(())
    }

    /// Like [`Gate::flush`], and first ends the rate-limit windows of cheap
    /// refusals, so the counts of what was left out are written too (at exit).
    pub fn flush_final(&self) {
        self.lock_buffer().end_windows(now());
        self.flush();
    }

    /// Writes buffered audit records and last-use stamps now (also done on drop).
    pub fn flush(&self) {
        if self.lock_buffer().is_empty() {
            return;
        }
        let written = self.with_store(|s| self.flush_into(s, now()));
        self.flush_failed.store(written.is_err(), Ordering::Relaxed);
    }

    /// Lets the owner write the batched audit records and last-use stamps from
    /// its own thread: it must then call [`Gate::flush`] regularly (saslgated:
    /// every 0.1 s). Logins stop waiting for the batch writes (the writes were
    /// behind the daemon's slowest 1 % of answers). Fail-closed still holds: after a failed
    /// write, or with more than `audit::BACKGROUND_MAX` records waiting, the
    /// login that finds the batch due writes it itself and answers
    /// "unavailable" if it cannot.
    pub fn with_background_flush(mut self) -> Gate {
        self.background_flush = true;
        self
    }

    fn check_credential(
        &self,
        store: &mut Store,
        account: Option<&AccountRow>,
        password: &[u8],
        now: i64,
    ) -> crate::Result<CredentialCheck> {
        let bad = |detail: &str| {
            Ok(CredentialCheck::Bad {
                detail: detail.to_string(),
            })
        };
        let Some(acct) = account else {
            self.dummy_verify(store, password)?;
            return bad("unknown account");
        };

        // 4. App password: fast keyed hash, O(1) through the index.
        if let Some(canonical) = canonical_generated(password, APP_PASSWORD_LEN) {
            if let Some(app) = store.find_app_password(acct.id, canonical.as_bytes())? {
                let id = app.id;
                if app.revoked.is_some() {
                    self.dummy_verify(store, password)?;
                    return bad(&format!("app password {id} is revoked"));
                }
                if app.expires.is_some_and(|e| e <= now) {
                    self.dummy_verify(store, password)?;
                    return bad(&format!("app password {id} has expired"));
                }
                let credential = Credential::AppPassword {
                    id,
                    label: app.label.clone(),
                };
                return Ok(CredentialCheck::Good {
                    credential,
                    app: Some(app),
                    cacheable: true,
                });
            }
        }

        let Some(hash) = acct.password_hash.as_deref() else {
            self.dummy_verify(store, password)?;
            return bad("account has no master password");
        };

        // 5. Master password, alone or followed by a code.
        if !acct.two_step() {
            if !self.slow_verify(store, password, hash)? {
                return bad("wrong password");
            }
            self.upgrade_hash_if_weak(store, acct, password, hash);
            return Ok(CredentialCheck::Good {
                credential: Credential::Master,
                app: None,
                cacheable: true,
            });
        }

        // Two-step: the cheap code check first, then one bcrypt on the prefix.
        match self.find_second_step(store, acct, password, now)? {
            Some((prefix_len, step)) => {
                let prefix = &password[..prefix_len];
                if !self.slow_verify(store, prefix, hash)? {
                    return bad("wrong password (with a valid code)");
                }
                let (consumed, credential) = match step {
                    SecondStep::Totp(s) => (
                        store.consume_totp_step(acct.id, s)?,
                        Credential::MasterAndTotp,
                    ),
                    SecondStep::Code(id) => {
                        (store.consume_code(id, now)?, Credential::MasterAndCode)
                    }
                };
                if !consumed {
                    return bad("code already used");
                }
                self.upgrade_hash_if_weak(store, acct, prefix, hash);
                Ok(CredentialCheck::Good {
                    credential,
                    app: None,
                    cacheable: false,
                })
            }
            None => {
                if self.slow_verify(store, password, hash)? {
                    bad("master password without the second step")
                } else {
                    bad("wrong password or code")
                }
            }
        }
    }

    /// Looks for a valid TOTP code or unused one-time code at the end of `password`.
    /// Returns the length of the password part and the code found.
    fn find_second_step(
        &self,
        store: &Store,
        acct: &AccountRow,
        password: &[u8],
        now: i64,
    ) -> crate::Result<Option<(usize, SecondStep)>> {
        let n = password.len();
        if let Some(secret) = &acct.totp_secret {
            if n > totp::DIGITS {
                let code = &password[n - totp::DIGITS..];
                if let Some(step) = totp::matching_step(secret.as_bytes(), code, now) {
                    if step > acct.totp_last_step {
                        return Ok(Some((n - totp::DIGITS, SecondStep::Totp(step))));
                    }
                }
            }
        }
        // One-time code, typed with or without its dash.
        for suffix in [CODE_LEN + 1, CODE_LEN] {
            if n <= suffix {
                continue;
            }
            let tail = &password[n - suffix..];
            if suffix == CODE_LEN + 1 && tail[5] != b'-' {
                continue;
            }
            if let Some(c) = canonical_generated(tail, CODE_LEN) {
                if let Some(id) = store.find_unused_code(acct.id, c.as_bytes())? {
                    return Ok(Some((n - suffix, SecondStep::Code(id))));
                }
            }
        }
        Ok(None)
    }

    /// Rehashes a master password made at a lower cost than configured (once, at
    /// the first successful login after the cost was raised). Best effort.
    fn upgrade_hash_if_weak(&self, store: &Store, acct: &AccountRow, password: &[u8], hash: &str) {
        let weak = crate::crypto::bcrypt_cost_of(hash).is_some_and(|c| c < self.config.bcrypt_cost);
        if weak {
            if let Ok(new) =
                crate::crypto::bcrypt_hash(&self.counter, password, self.config.bcrypt_cost)
            {
                let _ = store.upgrade_hash(acct.id, hash, &new);
            }
        }
    }

    /// Account-level policy only, no credential (the auxprop gate for mechanisms
    /// saslgate does not verify itself: GSSAPI, EXTERNAL, SCRAM...). Refuses unknown
    /// (`NoSuchAccount`) and disabled accounts, services the account may not use and
    /// throttled addresses. `req.password` is ignored.
    pub fn check_account(&self, req: &Request<'_>) -> Decision {
        let run = || {
            let now = now();
            let probe = Request {
                password: b"-",
                ..*req
            };
            let input = match Input::parse(&probe, &self.config) {
                Ok(i) => i,
                Err(e) => return self.refuse_bad_input(req, &e.to_string(), now),
            };
            let result = self.with_store(|store| {
                let (account, name) = resolve_account(store, &input.candidates)?;
                let pc = Some(&Credential::PolicyOnly);
                let keys = Keys::new(&name, input.addr, &self.config);
                if let throttle::State::Blocked { retry_after } =
                    store.throttle_state(&keys, now)?
                {
                    let retry = Some(Duration::from_secs(retry_after as u64));
                    return self.refuse_now(
                        store,
                        &input,
                        &name,
                        RefuseReason::Throttled,
                        "client over its failure budget".into(),
                        retry,
                        pc,
                        now,
                    );
                }
                let Some(acct) = account else {
                    return self.refuse_now(
                        store,
                        &input,
                        &name,
                        RefuseReason::NoSuchAccount,
                        "unknown account".into(),
                        None,
                        pc,
                        now,
                    );
                };
                if acct.disabled {
                    return self.refuse_now(
                        store,
                        &input,
                        &name,
                        RefuseReason::Disabled,
                        "account disabled".into(),
                        None,
                        pc,
                        now,
                    );
                }
                if let Some(rule) = policy_denial(store, &acct, &input.service, None)? {
                    return self.refuse_now(
                        store,
                        &input,
                        &name,
                        RefuseReason::NotAllowed,
                        rule,
                        None,
                        pc,
                        now,
                    );
                }
                Ok(Decision::Accepted {
                    account: name,
                    credential: Credential::PolicyOnly,
                })
            });
            result.unwrap_or_else(|e| Decision::Unavailable {
                cause: e.to_string(),
            })
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|_| {
            Decision::Unavailable {
                cause: "internal error".into(),
            }
        })
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if self.lock_pool().pid == std::process::id() {
            self.flush_final();
        }
    }
}

/// Runs `f` inside one read transaction (one snapshot, one set of WAL locks
/// instead of one per statement; writes end it first).
fn in_read<T>(
    store: &mut Store,
    f: impl FnOnce(&mut Store) -> crate::Result<T>,
) -> crate::Result<T> {
    store.begin_read()?;
    let v = f(store)?;
    store.end_read()?;
    Ok(v)
}

enum SecondStep {
    Totp(i64),
    Code(i64),
}

/// The first candidate name that is an account (`alice@realm`, then `alice`), and
/// the name to throttle and audit under (the account's, else the first candidate).
fn resolve_account(
    store: &Store,
    candidates: &[String],
) -> crate::Result<(Option<AccountRow>, String)> {
    for name in candidates {
        if let Some(a) = store.find_account(name)? {
            let canonical = a.name.clone();
            return Ok((Some(a), canonical));
        }
    }
    Ok((None, candidates[0].clone()))
}

/// A request after validation and normalisation (step 1).
struct Input {
    candidates: Vec<String>,
    service: String,
    addr: Option<std::net::IpAddr>,
}

impl Input {
    fn parse(req: &Request<'_>, config: &Config) -> Result<Input, names::FieldError> {
        let login = names::text_field("login", req.login, names::MAX_LOGIN)?;
        let realm = match req.realm {
            Some(r) if !r.is_empty() => Some(names::text_field("realm", r, names::MAX_NAME)?),
            _ => None,
        };
        let service = names::text_field("service", req.service, names::MAX_NAME)?;
        let service = names::service_name(service, &config.service_aliases)?;
        names::password_field(req.password)?;
        let candidates = names::login_candidates(login, realm, |r| config.is_local_realm(r))?;
        let addr = req.client_addr.and_then(names::parse_client_addr);
        Ok(Input {
            candidates,
            service,
            addr,
        })
    }
}

/// Bad input still goes to the audit trail, shortened and made printable.
fn lossy_short(bytes: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(&bytes[..bytes.len().min(64)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    s
}

fn lists(list: &[String], service: &str) -> bool {
    list.iter().any(|s| s == service || s == "*")
}

/// Step 6, shared by logins and `saslgate explain`: `Some(rule)` names the rule that
/// stops `service` for this account and credential.
pub fn policy_denial(
    store: &Store,
    acct: &AccountRow,
    service: &str,
    app: Option<&AppPasswordRow>,
) -> crate::Result<Option<String>> {
    let account_override = store.service_override(acct.id, service)?;
    // The plan matters only without an override.
    let plan_services = match account_override {
        None => store.plan_services(&acct.plan)?,
        Some(_) => None,
    };
    Ok(policy_rule(
        &acct.plan,
        service,
        account_override,
        plan_services.as_deref(),
        app,
        &store.config().restricted_services,
    ))
}

/// Step 6 on data already read (from the database or the snapshot).
/// `plan_services`: `None` if the plan does not exist; read only without an override.
fn policy_rule(
    plan: &str,
    service: &str,
    account_override: Option<bool>,
    plan_services: Option<&[String]>,
    app: Option<&AppPasswordRow>,
    restricted: &[String],
) -> Option<String> {
    match account_override {
        Some(false) => return Some(format!("account override denies {service}")),
        Some(true) => {}
        None => match plan_services {
            None => return Some(format!("plan {plan:?} does not exist")),
            Some(list) if !lists(list, service) => {
                return Some(format!("plan {plan} does not include {service}"))
            }
            Some(_) => {}
        },
    }
    if let Some(app) = app {
        if !app.services.is_empty() && !lists(&app.services, service) {
            return Some(format!(
                "app password {} is limited to {}",
                app.id,
                app.services.join(",")
            ));
        }
        if app.restricted && !lists(restricted, service) {
            return Some(format!(
                "app password {} is restricted to {}",
                app.id,
                restricted.join(",")
            ));
        }
    }
    None
}
