//! The panic boundary every exported function goes through.
//!
//! A Rust panic must never unwind into C (libsasl2, Postfix, Cyrus, a C caller of
//! `saslgate.h`): that is undefined behaviour. Each `extern "C"` function body runs
//! inside [`guard`], which catches the panic and returns the function's defined
//! "internal error" result instead (`SASL_FAIL` for libsasl2 callbacks,
//! `SASLGATE_INTERNAL` for the C ABI, nothing for `void` functions).
//!
//! Nothing may be written to stdout/stderr from inside a host process, but Rust's
//! default panic hook prints there. So the first guard installs a hook that, for a
//! panic inside a guard, only records the message (the caller then logs it through
//! libsasl2's log callback); panics outside any guard (e.g. other unit tests in the
//! same test binary) still go to the previous hook.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many guards this thread is inside (guards may nest: a callback into
    /// libsasl2 can call back into the plugin).
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// Message of the last panic caught on this thread.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let inside = DEPTH.try_with(|d| d.get() > 0).unwrap_or(false);
            if inside {
                let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                    (*s).to_string()
                } else if let Some(s) = info.payload().downcast_ref::<String>() {
                    s.clone()
                } else {
                    "non-string panic payload".to_string()
                };
                let msg = match info.location() {
                    Some(l) => format!("{msg} at {}:{}", l.file(), l.line()),
                    None => msg,
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

/// Runs `body`; if it panics, calls `on_panic` with the panic message and returns
/// its value. `on_panic` itself runs outside the catch, so it must not panic (keep
/// it to logging and returning a constant).
pub fn guard_with<T>(on_panic: impl FnOnce(&str) -> T, body: impl FnOnce() -> T) -> T {
    install_hook();
    let result = {
        let _depth = DepthGuard::enter();
        panic::catch_unwind(AssertUnwindSafe(body))
    };
    match result {
        Ok(v) => v,
        Err(_) => {
            let msg = LAST_PANIC
                .try_with(|p| p.borrow_mut().take())
                .ok()
                .flatten()
                .unwrap_or_else(|| "panic".to_string());
            // A panic inside on_panic would unwind into C: catch that too.
            match panic::catch_unwind(AssertUnwindSafe(|| on_panic(&msg))) {
                Ok(v) => v,
                Err(_) => std::process::abort(),
            }
        }
    }
}

/// [`guard_with`] for callers that only need a constant on panic.
pub fn guard<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    guard_with(move |_| on_panic, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_without_panic() {
        assert_eq!(guard(-1, || 7), 7);
    }

    #[test]
    fn catches_a_panic_and_reports_its_message() {
        let mut seen = String::new();
        let v = guard_with(
            |m| {
                seen = m.to_string();
                -1
            },
            || -> i32 { panic!("boom {}", 42) },
        );
        assert_eq!(v, -1);
        assert!(seen.contains("boom 42"), "{seen}");
        // depth is back to zero
        assert_eq!(DEPTH.with(|d| d.get()), 0);
    }

    #[test]
    fn nested_guards() {
        let v = guard(1, || guard(2, || -> i32 { panic!("inner") }) + 10);
        assert_eq!(v, 12);
    }
}
