//! Waiting for something a test cannot be told about (a daemon's log line, a
//! file, a row another process writes): the condition is checked every few
//! milliseconds until a deadline, instead of a fixed sleep that is too long
//! on a quiet machine and too short on a loaded one. The deadline is a
//! failure bound, never a timing assertion.

use std::time::{Duration, Instant};

/// How long [`wait_until`] waits by default: far longer than anything takes,
/// so only a real failure reaches it.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// Between two checks.
const INTERVAL: Duration = Duration::from_millis(5);

/// The first `Some` of `check`, tried until `within` has passed; `None` if
/// none came.
pub fn poll<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(INTERVAL);
    }
}

/// Waits until `cond` holds, at most [`DEADLINE`]; panics naming `what`
/// when it never does.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    if poll(DEADLINE, || cond().then_some(())).is_none() {
        panic!("waited {DEADLINE:?} for {what}");
    }
}

/// Checks that `cond` keeps holding for `during` (what must not happen,
/// such as an early accept while a delay runs): the first failure panics.
pub fn holds_for(what: &str, during: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + during;
    while Instant::now() < deadline {
        assert!(cond(), "{what}");
        std::thread::sleep(INTERVAL);
    }
}

/// The value `read` gives once it has not changed for `quiet` (a count of
/// a daemon's open files after its clients are gone), at most [`DEADLINE`].
pub fn settled<T: PartialEq>(quiet: Duration, mut read: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + DEADLINE;
    let mut value = read();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(INTERVAL);
        let now = read();
        if now != value {
            value = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet || Instant::now() >= deadline {
            return value;
        }
    }
}
