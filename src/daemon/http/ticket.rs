//! Proxy tickets on the `auth_http` face: after a two-step login (password
//! and TOTP or one-time code) to IMAP or POP3, nginx is given `Auth-Pass`
//! with a single-use ticket for the backend it proxies to, instead of the
//! password and the code it has just used (the backend's saslgate would
//! refuse that code a second time). SMTP gets none: nginx hands SMTP logins
//! to Postfix with XCLIENT, without a password.

use crate::engine::{is_ticket_shaped, Credential, Gate};
use crate::secret::SecretBytes;
use std::net::SocketAddr;

/// The `Auth-Pass` for an accepted login, if it needs one. `Err`: a ticket
/// was needed and could not be issued; the face then answers "unavailable"
/// (an OK without it would hand the backend a code it refuses).
pub fn pass_for(
    gate: &Gate,
    account: &str,
    credential: &Credential,
    protocol: &str,
    backend: SocketAddr,
) -> Result<Option<SecretBytes>, String> {
    let two_step = matches!(
        credential,
        Credential::MasterAndTotp | Credential::MasterAndCode
    );
    if !two_step || !matches!(protocol, "imap" | "pop3") {
        return Ok(None);
    }
    let issued = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        gate.issue_ticket(account, protocol, backend)
    }))
    .map_err(|_| "internal error (panic issuing a proxy ticket)".to_string())?
    .map_err(|e| format!("cannot issue a proxy ticket: {e}"))?;
    // nginx copies Auth-Pass into the backend's LOGIN / PASS as is.
    if !is_ticket_shaped(issued.as_bytes()) {
        return Err("issued proxy ticket has the wrong shape".into());
    }
    Ok(Some(issued))
}
