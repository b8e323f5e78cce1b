//! The panic boundary every exported function goes through: the one place a panic
//! of the plugin or of the C ABI is caught.
//!
//! A Rust panic must never unwind into C (libsasl2, Postfix, Cyrus, a C caller of
//! `saslgate.h`): that is undefined behaviour. Each `extern "C"` function body runs
//! inside [`guard_with`], which catches the panic, hands its message and location
//! (`"<message> at <file>:<line>:<column>"`) to the face's own handler (the plugin
//! logs through libsasl2's log callback, the C ABI through syslog) and returns the
//! face's defined answer for a panic (`plugin::codes::PANIC_*`,
//! `SaslgateResult::Internal`, nothing for `void` functions).
//!
//! The engine does not catch panics itself, so this is where they end, with their
//! location in the log.
//!
//! Nothing may be written to stdout/stderr from inside a host process, but Rust's
//! default panic hook prints there. So the first guard installs (once per process:
//! `Once`, thread-safe, and inherited as-is by a forked child) a hook that, for a
//! panic inside a guard on this thread, prints nothing and only records the message
//! and location in a thread-local for the guard to hand on. Panics outside every
//! guard (the library starts no threads; this is for the test binaries) still go to
//! the previous hook.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many guards this thread is inside (guards may nest: a callback into
    /// libsasl2 can call back into the plugin).
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// Message and location of the last panic caught on this thread.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let inside = DEPTH.try_with(|d| d.get() > 0).unwrap_or(false);
            if inside {
                let msg = payload_text(info.payload());
                let msg = match info.location() {
                    Some(l) => format!("{msg} at {}:{}:{}", l.file(), l.line(), l.column()),
                    None => format!("{msg} at an unknown location"),
                };
                let _ = LAST_PANIC.try_with(|p| *p.borrow_mut() = Some(msg));
            } else {
                previous(info);
            }
        }));
    });
}

struct DepthGuard;

impl DepthGuard {
    fn enter() -> DepthGuard {
        DEPTH.with(|d| d.set(d.get() + 1));
        DepthGuard
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Runs `body`; if it panics, calls `on_panic` with the panic's message and location
/// and returns its value. `on_panic` runs outside the catch: keep it to logging and
/// returning a constant (a panic there aborts the process rather than unwind into C).
pub fn guard_with<T>(on_panic: impl FnOnce(&str) -> T, body: impl FnOnce() -> T) -> T {
    install_hook();
    let result = {
        let _depth = DepthGuard::enter();
        panic::catch_unwind(AssertUnwindSafe(body))
    };
    match result {
        Ok(v) => v,
        Err(payload) => {
            let msg = LAST_PANIC
                .try_with(|p| p.borrow_mut().take())
                .ok()
                .flatten()
                // resume_unwind does not run the hook: the payload is all there is.
                .unwrap_or_else(|| payload_text(&*payload));
            drop(payload);
            match panic::catch_unwind(AssertUnwindSafe(|| on_panic(&msg))) {
                Ok(v) => v,
                Err(_) => std::process::abort(),
            }
        }
    }
}

/// [`guard_with`] for `void` functions and callers with nothing to log.
pub fn guard<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    guard_with(move |_| on_panic, body)
}

/// Test-only fault injection: arm a named point, and the next [`inject::point`]
/// call with that name on this thread panics (at the caller's location).
#[cfg(test)]
pub mod inject {
    use std::cell::Cell;

    thread_local! {
        static ARMED: Cell<Option<&'static str>> = const { Cell::new(None) };
    }

    pub fn arm(name: &'static str) {
        ARMED.with(|a| a.set(Some(name)));
    }

    #[track_caller]
    pub fn point(name: &'static str) {
        if ARMED.with(|a| a.get()) == Some(name) {
            ARMED.with(|a| a.set(None));
            panic!("injected panic in {name}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_without_panic() {
        assert_eq!(guard(-1, || 7), 7);
    }

    #[test]
    fn catches_a_panic_and_reports_its_message_and_location() {
        let mut seen = String::new();
        let line = line!() + 6;
        let v = guard_with(
            |m| {
                seen = m.to_string();
                -1
            },
            || -> i32 { panic!("boom {}", 42) },
        );
        assert_eq!(v, -1);
        assert!(seen.starts_with("boom 42 at "), "{seen}");
        assert!(
            seen.contains(&format!("src/ffi/guard.rs:{line}:")),
            "{seen}"
        );
        // depth is back to zero
        assert_eq!(DEPTH.with(|d| d.get()), 0);
    }

    #[test]
    fn resume_unwind_gives_the_payload() {
        let mut seen = String::new();
        guard_with(
            |m| seen = m.to_string(),
            || panic::resume_unwind(Box::new("raw payload")),
        );
        assert_eq!(seen, "raw payload");
    }

    #[test]
    fn nested_guards() {
        let v = guard(1, || guard(2, || -> i32 { panic!("inner") }) + 10);
        assert_eq!(v, 12);
    }
}
