//! The listening side of the broadcast (issue 28): one connection per process
//! that `LISTEN`s on `saslgate_changes`, where the triggers of `notify.sql`
//! announce, after each commit, what changed (`all`, `acct:ID`, `addr`).
//! The engine's fast path (`engine::fresh`) keeps the generation and
//! throttle rows it read, and drops exactly what a notice names.
//!
//! No thread and no wait: the connection is polled by the logins
//! themselves, under one lock, before each use of the kept knowledge (a
//! non-blocking read of what the server has sent; connecting and the
//! heartbeat are futures advanced by these polls, never awaited). So
//! nothing runs between logins, nothing is left behind across `fork` (a
//! child forgets its parent's connection without touching it and listens
//! anew), a login never waits on the listener (a hung server costs the
//! login's own read only), and nothing is printed (the plugin lives inside
//! Postfix and Cyrus).
//!
//! Knowledge is trusted only under a [`Position`] of a live listener:
//! - `epoch` moves at every (re)connection, fork, loss and change of database:
//!   what was read under an older epoch is never used (a notice may have been
//!   missed while nobody listened);
//! - the listener proves it is alive by a round trip (which also checks the
//!   triggers are there and enabled) sent every `BEAT / 2`; knowledge is
//!   used only while the last answered one was sent less than [`BEAT`]
//!   ago. Otherwise (not connected yet, closed, no answer, triggers missing
//!   or disabled) there is no position and every login reads the database,
//!   as before the broadcast.

use super::{describe, dialing, Dialing};
use crate::config::Config;
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio_postgres::AsyncMessage;

/// The channel the triggers notify on.
pub const CHANNEL: &str = "saslgate_changes";

/// The longest the listener goes without a round trip proving it alive
/// while its knowledge is used: the bound on a silent loss (a cable pulled,
/// a frozen server) going unnoticed.
pub const BEAT: Duration = Duration::from_millis(200);

/// After a failed connection, logins read the database for this long before
/// the next attempt (an attempt costs up to `db_connect_timeout`).
const RETRY: Duration = Duration::from_secs(1);

/// The server closes a listening session idle this long (a process with no
/// logins polls nothing; unread notices would hold the server's queue).
const IDLE_SESSION: &str = "60s";

/// Notices kept for readers that are behind; an older one is lost and a
/// reader that needs it drops everything.
const RING: usize = 4096;

/// The triggers of `notify.sql` that must exist and be enabled.
const TRIGGERS: &str = "SELECT (SELECT value FROM saslgate_meta WHERE key = 'schema_version'),
        (SELECT count(*) FROM pg_catalog.pg_trigger t
          WHERE t.tgname IN ('saslgate_notify_meta', 'saslgate_notify_throttle_truncate',
                             'saslgate_notify_throttle_rows')
            AND t.tgrelid IN ('saslgate_meta'::regclass, 'throttle'::regclass)
            AND t.tgenabled IN ('O', 'A'))";

/// What changed, as a notice says (or this process's own write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Anything may have changed (the generation moved).
    All,
    /// A throttle row of this account (by id).
    Account(i64),
    /// Some address's throttle row started or stopped refusing.
    Addresses,
    /// A throttle row this process wrote itself (the key).
    Key(String),
}

impl Notice {
    fn parse(payload: &str) -> Notice {
        match payload {
            "addr" => Notice::Addresses,
            p => match p.strip_prefix("acct:").map(str::parse) {
                Some(Ok(id)) => Notice::Account(id),
                // 'all', and anything unknown (fail closed).
                _ => Notice::All,
            },
        }
    }
}

/// A point in the notices heard by this process's listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub epoch: u64,
    pub seq: u64,
}

/// Notices after a position, up to `now`; `None` in `since`'s answer: some
/// are no longer kept, or the epoch moved (drop everything).
pub type Heard = (Vec<(u64, Notice)>, Position);

/// Counters, for `saslgate stats`-like output and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub live: bool,
    pub epoch: u64,
    pub notices: u64,
    pub connects: u64,
    pub losses: u64,
}

type MessagePoll = Box<
    dyn FnMut(&mut Context<'_>) -> Poll<Option<Result<AsyncMessage, tokio_postgres::Error>>> + Send,
>;
type Setup = Pin<Box<dyn Future<Output = Result<Listener, String>> + Send>>;
type Beat = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

struct Listener {
    /// Dropped before `messages` (field order).
    client: Arc<tokio_postgres::Client>,
    beat: Option<(Instant, Beat)>,
    messages: MessagePoll,
    backend_pid: i32,
    /// When the last answered heartbeat was sent: every notice of a commit
    /// before it had arrived when its answer did.
    beat_at: Instant,
}

struct State {
    pid: u32,
    db: PathBuf,
    /// Dropped before `runtime` (field order).
    listener: Option<Listener>,
    setup: Option<(Instant, Setup)>,
    runtime: Option<tokio::runtime::Runtime>,
    statement_timeout: Duration,
    epoch: u64,
    seq: u64,
    ring: VecDeque<(u64, Notice)>,
    retry_at: Option<Instant>,
    stats: Stats,
}

/// One listener per database this process uses (a test binary, or a
/// reload onto another database, may use several).
static STATES: Mutex<Vec<State>> = Mutex::new(Vec::new());

/// Epochs are unique in the process (a position names its listener).
static EPOCHS: AtomicU64 = AtomicU64::new(1);

/// Listeners kept at most; the least recently added goes first.
const MAX_DATABASES: usize = 4;

fn states() -> std::sync::MutexGuard<'static, Vec<State>> {
    STATES.lock().unwrap_or_else(|p| p.into_inner())
}

/// The state of `db`, made if new.
fn state_of<'a>(states: &'a mut Vec<State>, db: &Path) -> &'a mut State {
    let i = match states.iter().position(|s| s.db == db) {
        Some(i) => i,
        None => {
            if states.len() >= MAX_DATABASES {
                let mut old = states.remove(0);
                if old.pid != std::process::id() {
                    old.forget_parents();
                }
            }
            states.push(State {
                pid: std::process::id(),
                db: db.to_path_buf(),
                listener: None,
                setup: None,
                runtime: None,
                statement_timeout: Duration::from_secs(1),
                epoch: EPOCHS.fetch_add(1, Ordering::Relaxed),
                seq: 0,
                ring: VecDeque::new(),
                retry_at: None,
                stats: Stats::default(),
            });
            states.len() - 1
        }
    };
    &mut states[i]
}

impl State {
    fn push(&mut self, notice: Notice) {
        self.seq += 1;
        if self.ring.len() >= RING {
            self.ring.pop_front();
        }
        self.ring.push_back((self.seq, notice));
    }

    /// Stops trusting anything heard so far.
    fn new_epoch(&mut self) {
        self.epoch = EPOCHS.fetch_add(1, Ordering::Relaxed);
        self.ring.clear();
        self.stats.epoch = self.epoch;
    }

    fn lose(&mut self) {
        self.listener = None;
        self.stats.losses += 1;
        self.new_epoch();
    }

    /// After a fork: the parent's connection, setup and runtime (whose I/O
    /// driver is shared with the parent) are leaked untouched; dropping
    /// them would end the parent's session.
    fn forget_parents(&mut self) {
        std::mem::forget(self.listener.take());
        std::mem::forget(self.setup.take());
        std::mem::forget(self.runtime.take());
        self.pid = std::process::id();
        self.retry_at = None;
        self.new_epoch();
    }

    fn live(&self) -> Option<Position> {
        self.listener.as_ref().map(|_| Position {
            epoch: self.epoch,
            seq: self.seq,
        })
    }
}

/// Polls the listener (advancing its connection or heartbeat, never
/// waiting) and returns where it stands; `None`: not listening, or not
/// proven alive lately: read the database.
pub fn position(config: &Config) -> Option<Position> {
    if switched_off(config) {
        return None;
    }
    let mut states = states();
    let st = state_of(&mut states, &config.db);
    if st.pid != std::process::id() {
        st.forget_parents();
    }
    if st.runtime.is_none() {
        st.runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .ok();
    }
    st.statement_timeout = config.db_statement_timeout;
    let now = Instant::now();
    if st.listener.is_none() {
        if st.setup.is_none() {
            if st.retry_at.is_some_and(|t| now < t) {
                return None;
            }
            let Ok(d) = dialing(config) else {
                st.retry_at = Some(now + RETRY);
                return None;
            };
            let bound = d.bound + config.db_statement_timeout;
            // The timer is made inside the runtime (at the first poll).
            let setup: Setup = Box::pin(async move {
                tokio::time::timeout(bound, set_up(d))
                    .await
                    .unwrap_or_else(|_| Err(format!("no listener within {} ms", bound.as_millis())))
            });
            st.setup = Some((now, setup));
        }
        let runtime = st.runtime.as_ref()?;
        let (_, setup) = st.setup.as_mut()?;
        let ready = runtime.block_on(poll_twice(setup.as_mut()));
        match ready {
            Poll::Pending => return None,
            Poll::Ready(Err(_)) => {
                st.setup = None;
                st.retry_at = Some(now + RETRY);
                return None;
            }
            Poll::Ready(Ok(listener)) => {
                st.setup = None;
                st.listener = Some(listener);
                st.stats.connects += 1;
                // Knowledge read before this connection listened is never used.
                st.new_epoch();
            }
        }
    }
    let timeout = st.statement_timeout;
    let runtime = st.runtime.as_ref()?;
    let l = st.listener.as_mut()?;
    if l.beat.is_none() && now.duration_since(l.beat_at) >= BEAT / 2 {
        let client = Arc::clone(&l.client);
        let beat: Beat = Box::pin(async move { check(client.query_one(TRIGGERS, &[]).await) });
        l.beat = Some((now, beat));
    }
    let mut heard = Vec::new();
    let polled = runtime.block_on(poll_listener(l, &mut heard));
    let overdue = l
        .beat
        .as_ref()
        .is_some_and(|(sent, _)| now.duration_since(*sent) > timeout);
    let confirmed = now.duration_since(l.beat_at) < BEAT;
    st.stats.notices += heard.len() as u64;
    for n in heard {
        st.push(n);
    }
    if polled.is_err() || overdue {
        st.lose();
        return None;
    }
    st.stats.live = true;
    if !confirmed {
        return None;
    }
    st.live()
}

/// `pg_broadcast = false` in the configuration (the admin's switch), or
/// `SASLGATE_PG_BROADCAST=off` in the environment (the benchmarks' "before"
/// rows, and ruling the broadcast out when diagnosing without editing the
/// file): no listener, every login reads the database, as before the
/// broadcast.
fn switched_off(config: &Config) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !config.pg_broadcast
        || *OFF
            .get_or_init(|| std::env::var_os("SASLGATE_PG_BROADCAST").is_some_and(|v| v == "off"))
}

/// The notices after `after` and the current position; `None` when some
/// are lost or the listener's epoch is another.
pub fn since(after: Position) -> Option<Heard> {
    let states = states();
    let st = states.iter().find(|s| s.epoch == after.epoch)?;
    let now = st.live()?;
    if st.pid != std::process::id() {
        return None;
    }
    if after.seq < now.seq {
        let oldest = st.ring.front().map_or(now.seq + 1, |(s, _)| *s);
        if oldest > after.seq + 1 {
            return None;
        }
    }
    let notices = st
        .ring
        .iter()
        .filter(|(s, _)| *s > after.seq)
        .cloned()
        .collect();
    Some((notices, now))
}

/// This process wrote these throttle keys (its own notice comes later).
pub fn wrote<'a>(config: &Config, keys: impl IntoIterator<Item = &'a str>) {
    let mut states = states();
    let st = state_of(&mut states, &config.db);
    if st.listener.is_some() {
        for k in keys {
            st.push(Notice::Key(k.to_string()));
        }
    }
}

/// The counters of the listener of `config`'s database.
pub fn stats(config: &Config) -> Stats {
    let mut states = states();
    let st = state_of(&mut states, &config.db);
    let mut s = st.stats;
    s.live = st.listener.is_some() && st.pid == std::process::id();
    s
}

/// The server process id of this process's listening session for
/// `config`'s database (tests end it with `pg_terminate_backend`).
pub fn listener_backend(config: &Config) -> Option<i32> {
    let mut states = states();
    let st = state_of(&mut states, &config.db);
    st.listener.as_ref().map(|l| l.backend_pid)
}

/// Connects, listens, limits the session's idleness and checks the
/// triggers (one future: advanced by logins, never awaited by one).
async fn set_up(d: Dialing) -> Result<Listener, String> {
    let pg = d.pg;
    let (client, mut messages) = match d.connector {
        Some(c) => pg.connect(c).await.map(|(client, mut conn)| {
            let poll: MessagePoll = Box::new(move |cx| conn.poll_message(cx));
            (client, poll)
        }),
        None => pg
            .connect(tokio_postgres::NoTls)
            .await
            .map(|(client, mut conn)| {
                let poll: MessagePoll = Box::new(move |cx| conn.poll_message(cx));
                (client, poll)
            }),
    }
    .map_err(|e| describe(&e))?;
    drop(pg);
    // Notices heard before the listener is installed belong to no epoch.
    let mut ignored = Vec::new();
    // idle_session_timeout exists from PostgreSQL 14 on; older servers
    // keep an idle process's session (and its unread notices) open.
    let setup = format!(
        "LISTEN {CHANNEL}; SELECT set_config('idle_session_timeout', '{IDLE_SESSION}', false) \
         WHERE current_setting('server_version_num')::int >= 140000"
    );
    along(&mut messages, client.batch_execute(&setup), &mut ignored).await?;
    let row = along(
        &mut messages,
        client.query_one("SELECT pg_backend_pid()", &[]),
        &mut ignored,
    )
    .await?;
    let backend_pid = row.try_get(0).map_err(|e| describe(&e))?;
    let beat_at = Instant::now();
    let checked = along(&mut messages, client.query_one(TRIGGERS, &[]), &mut ignored).await;
    check(checked)?;
    Ok(Listener {
        client: Arc::new(client),
        beat: None,
        messages,
        backend_pid,
        beat_at,
    })
}

/// The heartbeat's answer: the schema has the triggers, all enabled.
fn check(row: Result<tokio_postgres::Row, impl Into<Failure>>) -> Result<(), String> {
    let row = row.map_err(|e| e.into().0)?;
    let version: Option<i64> = row.try_get(0).map_err(|e| describe(&e))?;
    let triggers: i64 = row.try_get(1).map_err(|e| describe(&e))?;
    if version.unwrap_or(0) < 5 || triggers != 3 {
        return Err("the broadcast's triggers are missing or disabled".into());
    }
    Ok(())
}

/// An error as text.
struct Failure(String);

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        Failure(describe(&e))
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure(e)
    }
}

/// Awaits `fut` (a request on the listener's client) while reading its
/// connection (which carries the request and its answer).
async fn along<T>(
    messages: &mut MessagePoll,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    heard: &mut Vec<Notice>,
) -> Result<T, String> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(Err(e)) = read_messages(messages, cx, heard) {
            return Poll::Ready(Err(e));
        }
        fut.as_mut().poll(cx).map_err(|e| describe(&e))
    })
    .await
}

/// Polls `fut` now and once more after the runtime has looked at its
/// sockets and timers (readiness is only learnt from the I/O driver).
async fn poll_twice<T>(mut fut: Pin<&mut (dyn Future<Output = T> + Send)>) -> Poll<T> {
    for round in 0..2 {
        if round > 0 {
            tokio::task::yield_now().await;
        }
        let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        if polled.is_ready() {
            return polled;
        }
    }
    Poll::Pending
}

/// Reads what the server has sent and advances the heartbeat, without
/// waiting for more; `Err` when the connection failed or closed, or the
/// heartbeat's answer says the triggers are not all there.
async fn poll_listener(l: &mut Listener, heard: &mut Vec<Notice>) -> Result<(), String> {
    for round in 0..2 {
        if round > 0 {
            tokio::task::yield_now().await;
        }
        std::future::poll_fn(|cx| {
            if let Poll::Ready(Err(e)) = read_messages(&mut l.messages, cx, heard) {
                return Poll::Ready(Err(e));
            }
            if let Some((sent, beat)) = &mut l.beat {
                if let Poll::Ready(answer) = beat.as_mut().poll(cx) {
                    let sent = *sent;
                    l.beat = None;
                    answer?;
                    l.beat_at = sent;
                }
            }
            Poll::Ready(Ok(()))
        })
        .await?;
    }
    Ok(())
}

/// Takes every message already received; `Ready(Err)` when the connection
/// failed or closed, `Pending` when nothing more is there.
fn read_messages(
    messages: &mut MessagePoll,
    cx: &mut Context<'_>,
    heard: &mut Vec<Notice>,
) -> Poll<Result<(), String>> {
    loop {
        match messages(cx) {
            Poll::Ready(Some(Ok(AsyncMessage::Notification(n)))) => {
                if n.channel() == CHANNEL {
                    heard.push(Notice::parse(n.payload()));
                }
            }
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(describe(&e))),
            Poll::Ready(None) => return Poll::Ready(Err("connection closed".into())),
            Poll::Pending => return Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_fail_closed() {
        assert_eq!(Notice::parse("all"), Notice::All);
        assert_eq!(Notice::parse("addr"), Notice::Addresses);
        assert_eq!(Notice::parse("acct:42"), Notice::Account(42));
        assert_eq!(Notice::parse("acct:x"), Notice::All);
        assert_eq!(Notice::parse(""), Notice::All);
    }
}
