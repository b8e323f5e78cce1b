//! The engine's time, in one place: the wall clock (whole seconds since the
//! epoch: throttle windows, expiries, one-time codes, TOTP steps, audit
//! stamps) and the monotonic clock (the pace's delays, the file watch's
//! interval). A gate reads both through one [`Clock`]: the system's, always,
//! in every face (saslgated, the plugin, the CLI; nothing outside the code
//! can choose another); tests hand a [`ManualClock`] to
//! [`Gate::with_clock`](super::Gate::with_clock) and move it instead of
//! sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub trait Clock: Send + Sync {
    /// Seconds since the Unix epoch.
    fn unix_now(&self) -> i64;
    /// The monotonic clock.
    fn instant(&self) -> Instant;
    /// How long one real wait for `wanted` of this clock's time may last
    /// before the clock is read again: a clock moved from outside does not
    /// wake the waiters.
    fn wait_slice(&self, wanted: Duration) -> Duration {
        wanted
    }
}

/// The system's clocks.
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_now(&self) -> i64 {
        crate::timefmt::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told ([`ManualClock::advance`]), both its
/// readings together; it starts at the system's time. For tests.
pub struct ManualClock {
    start_unix: i64,
    start: Instant,
    advanced: Mutex<Duration>,
}

/// Longest real wait between two readings of a [`ManualClock`] by a waiter.
const MANUAL_SLICE: Duration = Duration::from_millis(2);

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock {
            start_unix: crate::timefmt::now(),
            start: Instant::now(),
            advanced: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.lock() += by;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Duration> {
        self.advanced.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn unix_now(&self) -> i64 {
        self.start_unix + self.lock().as_secs() as i64
    }

    fn instant(&self) -> Instant {
        self.start + *self.lock()
    }

    fn wait_slice(&self, wanted: Duration) -> Duration {
        wanted.min(MANUAL_SLICE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new();
        let (unix, mono) = (clock.unix_now(), clock.instant());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!((clock.unix_now(), clock.instant()), (unix, mono));
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.unix_now(), unix + 1);
        assert_eq!(clock.instant() - mono, Duration::from_millis(1500));
        assert!(clock.wait_slice(Duration::from_secs(9)) <= MANUAL_SLICE);
        assert_eq!(
            SystemClock.wait_slice(Duration::from_secs(9)),
            Duration::from_secs(9)
        );
    }
}
