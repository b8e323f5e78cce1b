//! saslgated's `auth_http` face: answers nginx's mail proxy
//! (`ngx_mail_auth_http_module`) with the same [`Gate`](crate::Gate) as the
//! saslauthd socket, on its own threads.
//!
//! - [`config`] (the crate's `http_config`): `[http]` (`listen`,
//!   `trusted_peers`) and `[http.backends]`
//! - [`request`]: the request head (`httparse`), header mapping, nginx's
//!   `%XX` escaping undone
//! - [`face`]: request → engine → answer, and the log line
//! - [`response`]: `Auth-Status`, `Auth-Wait`, `Auth-Error-Code`, `Auth-Server`...
//! - [`ticket`]: `Auth-Pass` with a proxy ticket after a two-step login
//! - [`route`]: the account's backend (its own or `[http.backends]`) and
//!   backend holds, kept per database generation
//! - [`listener`]: TCP or UNIX socket, peers, bounds, timeouts, threads
//! - [`reaper`]: closes answered TCP connections once nginx has closed first

pub use crate::http_config as config;
pub mod face;
pub mod listener;
pub mod reaper;
pub mod request;
pub mod response;
pub mod route;
pub mod ticket;

pub use config::{HttpConfig, Listen};
pub use listener::{FaceSettings, HttpFace};

/// Threads of the face for saslgated's `-n` (else the cores): each serves one
/// connection at a time, so this is also the face's connection cap. Four per
/// worker: a thread may wait for a slow client's head (idle, not hashing),
/// and hashing stays bounded by the machine's cores anyway.
pub fn thread_count(workers: usize) -> usize {
    (workers * 4).clamp(4, 256)
}
