//! The one table from saslgate's outcomes to libsasl2 result codes. Every place in
//! the plugin that answers libsasl2 with the result of a decision, a refusal, a
//! storage error or a failure of its own takes the code from here.

use super::sys;
use crate::{Decision, Error, RefuseReason};
use std::ffi::c_int;

/// What the plugin answers when it cannot decide (database or configuration
/// unavailable, internal error). Temporary: Postfix answers `454 4.7.0` and the
/// client retries later instead of asking its user for another password.
pub const UNAVAILABLE: c_int = sys::SASL_UNAVAIL;

/// A panic caught in an entry point that decides a login or touches the store
/// (`mech_step`, `auxprop_lookup`, `auxprop_store`): the same "unavailable" a
/// storage failure gets, so a bug fails closed and temporarily.
pub const PANIC_DECIDING: c_int = UNAVAILABLE;

/// A panic caught in plugin set-up (`sasl_*_plug_init`, `mech_new`).
pub const PANIC_SETUP: c_int = sys::SASL_FAIL;

/// `saslgate_auxprop_unknown: refuse`: the auxprop gate's answer for an account
/// saslgate does not know (instead of [`refuse_code`]`(NoSuchAccount)`, which
/// other auxprop plugins may override).
pub const UNKNOWN_REFUSED: c_int = sys::SASL_NOAUTHZ;

/// SASL result code for a refusal.
pub fn refuse_code(reason: RefuseReason) -> c_int {
    match reason {
        RefuseReason::BadCredentials => sys::SASL_BADAUTH,
        RefuseReason::Disabled => sys::SASL_DISABLED,
        RefuseReason::NotAllowed => sys::SASL_NOAUTHZ,
        // Temporary, like UNAVAILABLE: a legitimate client retries later.
        RefuseReason::Throttled => sys::SASL_TRYAGAIN,
        RefuseReason::BadInput => sys::SASL_BADPROT,
        RefuseReason::NoSuchAccount => sys::SASL_NOUSER,
        // Permanent for this client: the admin blocked its address.
        RefuseReason::Blocked => sys::SASL_NOAUTHZ,
        // "Encryption is needed to use this mechanism": start TLS first.
        RefuseReason::TlsRequired => sys::SASL_ENCRYPT,
    }
}

/// SASL result code for a decision of the engine.
pub fn decision_code(decision: &Decision) -> c_int {
    match decision {
        Decision::Accepted { .. } => sys::SASL_OK,
        Decision::Refused { reason, .. } => refuse_code(*reason),
        Decision::Unavailable { .. } => UNAVAILABLE,
    }
}

/// SASL result code for an error of the core (the auxprop store path).
pub fn error_code(error: &Error) -> c_int {
    match error {
        // (braced patterns: they stay valid if a variant gains fields, e.g. a source)
        Error::NotFound { .. } => sys::SASL_NOUSER,
        Error::Usage { .. } => sys::SASL_BADPARAM,
        Error::Storage { .. } | Error::Database(_) | Error::TooNew { .. } => UNAVAILABLE,
        Error::Config { .. } | Error::Exists { .. } | Error::Io { .. } => sys::SASL_FAIL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_table() {
        let refused = |reason| Decision::Refused {
            reason,
            detail: String::new(),
            retry_after: None,
            delay: Duration::ZERO,
        };
        for (reason, code) in [
            (RefuseReason::BadCredentials, sys::SASL_BADAUTH),
            (RefuseReason::Disabled, sys::SASL_DISABLED),
            (RefuseReason::NotAllowed, sys::SASL_NOAUTHZ),
            (RefuseReason::Throttled, sys::SASL_TRYAGAIN),
            (RefuseReason::BadInput, sys::SASL_BADPROT),
            (RefuseReason::NoSuchAccount, sys::SASL_NOUSER),
            (RefuseReason::Blocked, sys::SASL_NOAUTHZ),
            (RefuseReason::TlsRequired, sys::SASL_ENCRYPT),
        ] {
            assert_eq!(decision_code(&refused(reason)), code, "{reason:?}");
        }
        let unavailable = Decision::Unavailable {
            cause: String::new(),
        };
        assert_eq!(decision_code(&unavailable), sys::SASL_UNAVAIL);
        assert_eq!(
            error_code(&Error::NotFound(String::new())),
            sys::SASL_NOUSER
        );
        assert_eq!(error_code(&Error::Usage(String::new())), sys::SASL_BADPARAM);
        let storage = Error::from(rusqlite::Error::InvalidQuery);
        assert_eq!(error_code(&storage), sys::SASL_UNAVAIL);
        let io = Error::from(std::io::Error::other("x"));
        assert_eq!(error_code(&io), sys::SASL_FAIL);
    }
}
