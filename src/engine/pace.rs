//! Step 2b, the account's pace: the account-wide budget made real.
//!
//! Every wrong password counts on the account's `s:ACCOUNT` row, from any
//! address or none (`crate::throttle`). Past `[throttle] slowdown_failures`
//! of them in `slowdown_window`, each refusal carries a delay (1 s, 2 s, 4 s
//! ... up to `slowdown_max_delay`). Here, in memory and per process, that
//! delay is enforced whatever the client does with it: while an account is
//! paced, its credentials are verified one at a time, and after a wrong one
//! the next verification waits out the delay. So a client that opens many
//! connections, ignores `Auth-Wait` or rotates its address gets no more
//! verifications per hour for the account than one that waits as told
//! (about 3600 / `slowdown_max_delay`).
//!
//! The owner is never locked out: a request waits its turn (at most
//! [`Pace::max_wait`], and only [`MAX_WAITERS`] at a time per account and
//! class) and is then verified like any other, a right password accepted.
//! Past the wait or the waiters, the answer is a temporary refusal without a
//! hash (never "authentication failed"). Requests from an address with no
//! failure on record ("clean": the owner's, usually) go before the others:
//! to compete with the owner for a turn, an attacker must spend a fresh
//! address on each guess.

use super::clock::{Clock, SystemClock};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Requests of one paced account that may wait for its turn at once; the
/// others are refused at once (each waiter holds a face's thread).
pub const MAX_WAITERS: u32 = 2;
/// Lanes kept before the expired ones are swept.
const SWEEP_AT: usize = 1024;

struct Lane {
    /// A verification of the account is in flight.
    busy: bool,
    /// No verification starts before this (the last wrong one's delay).
    next_at: Instant,
    waiting: u32,
    /// Of which from a clean address: these go first.
    waiting_clean: u32,
    /// Forgotten after this (the slow-down window from the last delay).
    until: Instant,
}

/// The paced accounts of a gate.
pub struct Pace {
    lanes: Mutex<HashMap<String, Lane>>,
    freed: Condvar,
    /// The gate's clock (its monotonic reading).
    clock: Arc<dyn Clock>,
}

impl Default for Pace {
    fn default() -> Self {
        Pace::new(Arc::new(SystemClock))
    }
}

/// One decision's dealings with the pace (see `Gate::decide`).
#[derive(Default)]
pub struct Paced<'a> {
    /// The account's turn, once taken.
    pub turn: RefCell<Option<Turn<'a>>>,
    /// The paced account this decision found busy, and whether the
    /// request's address is clean.
    pub busy: RefCell<Option<(String, bool)>>,
    /// The decision's last round: a busy account is refused, not waited for.
    pub last_round: Cell<bool>,
}

/// What [`Pace::try_enter`] says.
pub enum Entry<'a> {
    /// The account is not paced: go ahead.
    Free,
    /// The account's turn, held until dropped.
    Turn(Turn<'a>),
    /// Another verification is in flight, or the delay is not over.
    Busy,
}

/// The right to verify a paced account's credential; released when dropped.
pub struct Turn<'a> {
    pace: &'a Pace,
    account: String,
}

impl Turn<'_> {
    pub fn account(&self) -> &str {
        &self.account
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(lane) = self.pace.lock().get_mut(&self.account) {
            lane.busy = false;
        }
        self.pace.freed.notify_all();
    }
}

impl Pace {
    pub fn new(clock: Arc<dyn Clock>) -> Pace {
        Pace {
            lanes: Mutex::default(),
            freed: Condvar::new(),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Lane>> {
        // The lanes are plain data, right after any panic: use them anyway.
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The longest a request waits for its turn: the longest delay, twice
    /// (the delay being served, and one verification).
    pub fn max_wait(max_delay: Duration) -> Duration {
        max_delay.saturating_mul(2).max(Duration::from_millis(100))
    }

    /// The account's turn without waiting.
    pub fn try_enter(&self, account: &str) -> Entry<'_> {
        let now = self.clock.instant();
        let mut lanes = self.lock();
        let Some(lane) = lanes.get_mut(account) else {
            return Entry::Free;
        };
        if lane.until <= now && !lane.busy && lane.waiting == 0 {
            lanes.remove(account);
            return Entry::Free;
        }
        if lane.busy || lane.next_at > now || lane.waiting > 0 {
            return Entry::Busy;
        }
        lane.busy = true;
        Entry::Turn(Turn {
            pace: self,
            account: account.to_string(),
        })
    }

    /// Waits for the account's turn, at most `max_wait`, if fewer than
    /// [`MAX_WAITERS`] of its class (`clean` address or not) wait already;
    /// the clean ones go first. `None`: not in time, or too many waiting.
    pub fn wait_turn(&self, account: &str, clean: bool, max_wait: Duration) -> Option<Turn<'_>> {
        let deadline = self.clock.instant() + max_wait;
        let mut lanes = self.lock();
        let lane = lanes.get_mut(account)?;
        let mine = if clean {
            lane.waiting_clean
        } else {
            lane.waiting - lane.waiting_clean
        };
        if mine >= MAX_WAITERS {
            return None;
        }
        lane.waiting += 1;
        lane.waiting_clean += u32::from(clean);
        loop {
            let now = self.clock.instant();
            // A lane is never removed while someone waits on it.
            let lane = lanes.get_mut(account)?;
            let first = clean || lane.waiting_clean == 0;
            let mine = first && !lane.busy && lane.next_at <= now;
            if mine || now >= deadline {
                lane.waiting -= 1;
                lane.waiting_clean -= u32::from(clean);
                lane.busy |= mine;
                // The others look again (one of them may now go first).
                self.freed.notify_all();
                return mine.then(|| Turn {
                    pace: self,
                    account: account.to_string(),
                });
            }
            let until = if lane.busy || !first {
                deadline
            } else {
                lane.next_at.min(deadline)
            };
            lanes = self
                .freed
                .wait_timeout(
                    lanes,
                    self.clock.wait_slice(until.saturating_duration_since(now)),
                )
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// After a wrong credential of `account` whose refusal carries `delay`:
    /// no verification of it starts before the delay is over; the account
    /// stays paced for `window` (a zero delay: no longer paced once free).
    pub fn refused(&self, account: &str, delay: Duration, window: Duration) {
        let now = self.clock.instant();
        let mut lanes = self.lock();
        if delay.is_zero() {
            if let Some(lane) = lanes.get_mut(account) {
                lane.until = now;
            }
            return;
        }
        if lanes.len() >= SWEEP_AT {
            lanes.retain(|_, l| l.busy || l.waiting > 0 || l.until > now);
        }
        let lane = lanes.entry(account.to_string()).or_insert(Lane {
            busy: false,
            next_at: now,
            waiting: 0,
            waiting_clean: 0,
            until: now,
        });
        lane.next_at = lane.next_at.max(now + delay);
        lane.until = lane.until.max(now + window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_at_a_time_and_the_delay_between() {
        let pace = Pace::default();
        let window = Duration::from_secs(60);
        assert!(matches!(pace.try_enter("a"), Entry::Free));
        pace.refused("a", Duration::from_millis(200), window);
        assert!(matches!(pace.try_enter("a"), Entry::Busy));
        assert!(matches!(pace.try_enter("b"), Entry::Free));
        let t = Instant::now();
        let turn = pace.wait_turn("a", false, Duration::from_secs(5)).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(190));
        assert!(matches!(pace.try_enter("a"), Entry::Busy), "in flight");
        // Too short a wait: refused.
        assert!(pace
            .wait_turn("a", false, Duration::from_millis(50))
            .is_none());
        drop(turn);
        assert!(matches!(pace.try_enter("a"), Entry::Turn(_)));
        // A zero delay ends the pacing.
        pace.refused("a", Duration::ZERO, window);
        assert!(matches!(pace.try_enter("a"), Entry::Free));
    }

    #[test]
    fn waiters_are_bounded() {
        let pace = Pace::default();
        pace.refused("a", Duration::from_millis(300), Duration::from_secs(60));
        std::thread::scope(|s| {
            let got: Vec<_> = (0..MAX_WAITERS + 2)
                .map(|_| {
                    s.spawn(|| {
                        pace.wait_turn("a", false, Duration::from_millis(100))
                            .is_some()
                    })
                })
                .collect();
            for g in got {
                assert!(!g.join().unwrap(), "nobody is in within 100 ms");
            }
        });
        assert_eq!(pace.lock()["a"].waiting, 0);
    }

    #[test]
    fn a_clean_address_goes_first() {
        let pace = Pace::default();
        pace.refused("a", Duration::from_millis(300), Duration::from_secs(60));
        let order = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for (i, clean) in [(0, false), (1, false), (2, true)] {
                let (pace, order) = (&pace, &order);
                s.spawn(move || {
                    // The dirty ones are waiting first.
                    std::thread::sleep(Duration::from_millis(50 * i));
                    let turn = pace.wait_turn("a", clean, Duration::from_secs(5)).unwrap();
                    order.lock().unwrap().push(clean);
                    drop(turn);
                });
            }
        });
        assert!(order.into_inner().unwrap()[0], "the clean one first");
    }
}
