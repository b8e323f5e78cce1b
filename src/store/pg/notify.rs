//! The listening side of the broadcast (issue 28): one connection per process
//! that `LISTEN`s on `saslgate_changes`, where the triggers of `notify.sql`
//! announce, after each commit, what changed (`all`, `acct:ID`, `addr`).
//! The engine's fast path (`engine::fresh`) keeps the generation and
//! throttle rows it read, and drops exactly what a notice names.
//!
//! No thread: the connection is polled by the logins themselves, under one
//! lock, before each use of the kept knowledge (a non-blocking read of what
//! the server has sent). So nothing runs between logins, nothing is left
//! behind across `fork` (a child forgets its parent's connection without
//! touching it and listens anew), every wait is bounded by the database
//! timeouts, and nothing is printed (the plugin lives inside Postfix and
//! Cyrus).
//!
//! Knowledge is trusted only under a [`Position`] of a live listener:
//! - `epoch` moves at every (re)connection, fork, loss and change of database:
//!   what was read under an older epoch is never used (a notice may have been
//!   missed while nobody listened);
//! - the listener proves it is alive by a round trip at least every
//!   [`BEAT`]; when it is due and fails, or the connection is closed, or
//!   the triggers are missing or disabled, there is no position and every
//!   login reads the database, as before the broadcast.

use super::{connected_or_err, describe, dialing};
use crate::config::Config;
use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
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
    dyn FnMut(&mut Context<'_>) -> Poll<Option<Result<AsyncMessage, tokio_postgres::Error>>>
        + Send,
>;

struct Listener {
    /// Dropped before `messages` and `runtime` (field order).
    client: tokio_postgres::Client,
    messages: MessagePoll,
    runtime: tokio::runtime::Runtime,
    beat_at: Instant,
    statement_timeout: Duration,
    backend_pid: i32,
}

struct State {
    pid: u32,
    db: PathBuf,
    listener: Option<Listener>,
    epoch: u64,
    seq: u64,
    ring: VecDeque<(u64, Notice)>,
    retry_at: Option<Instant>,
    stats: Stats,
}

static STATE: Mutex<State> = Mutex::new(State {
    pid: 0,
    db: PathBuf::new(),
    listener: None,
    epoch: 0,
    seq: 0,
    ring: VecDeque::new(),
    retry_at: None,
    stats: Stats {
        live: false,
        epoch: 0,
        notices: 0,
        connects: 0,
        losses: 0,
    },
});

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
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
        self.epoch += 1;
        self.ring.clear();
        self.stats.epoch = self.epoch;
    }

    fn lose(&mut self) {
        self.listener = None;
        self.stats.losses += 1;
        self.new_epoch();
    }

    fn live(&self) -> Option<Position> {
        self.listener.as_ref().map(|_| Position {
            epoch: self.epoch,
            seq: self.seq,
        })
    }
}

/// Polls the listener (connecting, or proving it alive, when due) and
/// returns where it stands; `None`: not listening, read the database.
pub fn position(config: &Config) -> Option<Position> {
    let mut st = state();
    let pid = std::process::id();
    if st.pid != pid {
        // Forked: the parent's connection is not ours. Leak it untouched
        // (closing would end the parent's session; its runtime's I/O driver
        // is shared with the parent).
        if let Some(l) = st.listener.take() {
            std::mem::forget(l);
        }
        st.pid = pid;
        st.retry_at = None;
        st.new_epoch();
    }
    if st.db != config.db {
        st.listener = None;
        st.db = config.db.clone();
        st.retry_at = None;
        st.new_epoch();
    }
    let now = Instant::now();
    if st.listener.is_none() {
        if st.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        match Listener::connect(config) {
            Ok(l) => {
                st.listener = Some(l);
                st.retry_at = None;
                st.stats.connects += 1;
                // Knowledge read before this connection listened is never used.
                st.new_epoch();
            }
            Err(_) => {
                st.retry_at = Some(now + RETRY);
                return None;
            }
        }
    }
    let mut heard = Vec::new();
    let polled = {
        let l = st.listener.as_mut()?;
        if now.duration_since(l.beat_at) >= BEAT {
            l.beat(&mut heard)
        } else {
            l.drain(&mut heard)
        }
    };
    st.stats.notices += heard.len() as u64;
    for n in heard {
        st.push(n);
    }
    if polled.is_err() {
        st.lose();
        st.retry_at = None;
        return None;
    }
    st.stats.live = true;
    st.live()
}

/// The notices after `after` and the current position; `None` when some
/// are lost or the listener's epoch is another.
pub fn since(after: Position) -> Option<Heard> {
    let st = state();
    let now = st.live()?;
    if now.epoch != after.epoch || st.pid != std::process::id() {
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
pub fn wrote<'a>(keys: impl IntoIterator<Item = &'a str>) {
    let mut st = state();
    if st.listener.is_some() {
        for k in keys {
            st.push(Notice::Key(k.to_string()));
        }
    }
}

/// The listener's counters.
pub fn stats() -> Stats {
    let st = state();
    let mut s = st.stats;
    s.live = st.listener.is_some() && st.pid == std::process::id();
    s
}

/// The server process id of this process's listening session (tests end it
/// with `pg_terminate_backend`); `None` when not listening.
pub fn listener_backend() -> Option<i32> {
    state().listener.as_ref().map(|l| l.backend_pid)
}

impl Listener {
    fn connect(config: &Config) -> crate::Result<Listener> {
        let d = dialing(config)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| crate::Error::Storage(format!("PostgreSQL: cannot start its I/O: {e}")))?;
        let bound = d.bound;
        let pg = d.pg;
        let connected = runtime.block_on(async {
            tokio::time::timeout(bound, async {
                match d.connector {
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
            })
            .await
        });
        drop(pg);
        let (client, messages) = connected_or_err(connected, bound)?;
        let mut l = Listener {
            client,
            messages,
            runtime,
            beat_at: Instant::now(),
            statement_timeout: config.db_statement_timeout,
            backend_pid: 0,
        };
        let mut ignored = Vec::new();
        let setup = format!("LISTEN {CHANNEL}; SET idle_session_timeout = '{IDLE_SESSION}'");
        let bound = l.statement_timeout;
        drive(
            &mut l.messages,
            &l.runtime,
            bound,
            l.client.batch_execute(&setup),
            &mut ignored,
        )
        .map_err(crate::Error::Storage)?;
        let row = drive(
            &mut l.messages,
            &l.runtime,
            bound,
            l.client.query_one("SELECT pg_backend_pid()", &[]),
            &mut ignored,
        )
        .map_err(crate::Error::Storage)?;
        l.backend_pid = row.try_get(0).unwrap_or(0);
        l.beat(&mut ignored).map_err(crate::Error::Storage)?;
        Ok(l)
    }

    /// A round trip that also checks the triggers are there and enabled.
    fn beat(&mut self, heard: &mut Vec<Notice>) -> Result<(), String> {
        let row = drive(
            &mut self.messages,
            &self.runtime,
            self.statement_timeout,
            self.client.query_one(TRIGGERS, &[]),
            heard,
        )?;
        let version: Option<i64> = row.try_get(0).map_err(|e| describe(&e))?;
        let triggers: i64 = row.try_get(1).map_err(|e| describe(&e))?;
        if version.unwrap_or(0) < 5 || triggers != 3 {
            return Err("the broadcast's triggers are missing or disabled".into());
        }
        self.beat_at = Instant::now();
        Ok(())
    }

    /// Reads what the server has sent, without waiting for more: once, then
    /// again after letting the runtime look at the socket (its readiness is
    /// only learnt from the I/O driver).
    fn drain(&mut self, heard: &mut Vec<Notice>) -> Result<(), String> {
        let messages = &mut self.messages;
        self.runtime.block_on(async {
            for round in 0..2 {
                if round > 0 {
                    tokio::task::yield_now().await;
                }
                std::future::poll_fn(|cx| match read_messages(messages, cx, heard) {
                    Poll::Ready(r) => Poll::Ready(r),
                    Poll::Pending => Poll::Ready(Ok(())),
                })
                .await?;
            }
            Ok(())
        })
    }
}

/// Runs `fut` (a request on the listener's client) while reading its
/// connection, bounded by the statement timeout.
fn drive<T>(
    messages: &mut MessagePoll,
    runtime: &tokio::runtime::Runtime,
    bound: Duration,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    heard: &mut Vec<Notice>,
) -> Result<T, String> {
    let mut fut = std::pin::pin!(fut);
    let done = runtime.block_on(async {
        tokio::time::timeout(
            bound,
            std::future::poll_fn(|cx| {
                if let Poll::Ready(Err(e)) = read_messages(messages, cx, heard) {
                    return Poll::Ready(Err(e));
                }
                fut.as_mut().poll(cx).map_err(|e| describe(&e))
            }),
        )
        .await
    });
    done.unwrap_or_else(|_| Err(format!("no answer within {} ms", bound.as_millis())))
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
