//! What a login attempt is and what the engine answers: the types every face
//! and the engine share. Kept apart from the engine so the modules that only
//! need the types (the positive cache, the faces) do not import the engine.

use std::time::Duration;

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
    /// The address the mail server received the connection on, `IP;PORT`
    /// (libsasl2 iplocalport) or `IP:PORT`: a proxy ticket issued for it is
    /// accepted (besides `proxy_ticket_backends`). `None`: the face cannot tell.
    pub local_addr: Option<&'a [u8]>,
    /// Whether the client's connection is encrypted (TLS under the login):
    /// `None` when the face cannot tell (saslauthd requests), and then the
    /// `tls_required` services are not enforced.
    pub secure: Option<bool>,
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
    /// A single-use proxy ticket (issued by the `auth_http` face after a
    /// two-step login, for the backend nginx hands the login to).
    ProxyTicket,
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
            Credential::ProxyTicket => write!(f, "proxy-ticket"),
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
    /// Account unknown (only from the policy check [`Gate::check_account`](crate::Gate::check_account); logins
    /// answer `BadCredentials` instead so accounts cannot be enumerated).
    NoSuchAccount,
    /// The client address is inside a network of the admin's block list
    /// (`saslgate block add`): refused before any lookup of the login.
    Blocked,
    /// A service of `tls_required` over a connection the face knows is not
    /// encrypted: refused before any hashing.
    TlsRequired,
}

impl RefuseReason {
    /// Short, safe text for the client.
    pub const fn public_text(self) -> &'static str {
        match self {
            RefuseReason::BadCredentials => "authentication failed",
            RefuseReason::Disabled => "account disabled",
            RefuseReason::NotAllowed => "not allowed for this service",
            RefuseReason::Throttled => "too many failures, try again later",
            RefuseReason::BadInput => "malformed request",
            RefuseReason::NoSuchAccount => "no such account",
            RefuseReason::Blocked => "access denied",
            RefuseReason::TlsRequired => "encryption required",
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
            RefuseReason::Blocked => "blocked",
            RefuseReason::TlsRequired => "tls-required",
        }
    }
}

/// The outcome of [`Gate::decide`](crate::Gate::decide).
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
    /// Statements the fast path ran for the generation and throttle rows
    /// (what was not known current without one, see `engine::fresh`).
    pub state_reads: u64,
    /// Rows the fast path forgot because a broadcast notice named them
    /// (PostgreSQL, see `engine::fresh`).
    pub notice_drops: u64,
    pub decisions: u64,
}
