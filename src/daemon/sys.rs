//! The few system calls saslgated needs that std does not offer, through nix's
//! safe wrappers; the unsafe code that remains (fork, `_exit`, taking fd 3 from
//! systemd, borrowing a caller's raw descriptor) is all in this module.

use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, MsgFlags};
use std::io;
use std::os::unix::io::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::time::Duration;

fn os(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Raises the soft open-files limit to at least `want` (up to the hard limit).
/// Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(os)?;
    if soft >= want {
        return Ok(soft);
    }
    let soft = want.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(os)?;
    Ok(soft)
}

/// Detaches from the terminal: fork (the parent exits 0 at once), setsid, stdio
/// to /dev/null. Must be called while the process has a single thread.
pub fn daemonize() -> io::Result<()> {
    use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, fork, setsid, ForkResult};
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    // SAFETY: called before any thread is started (documented precondition), so
    // the child is a complete copy and may run any code.
    match unsafe { fork() }.map_err(os)? {
        ForkResult::Parent { .. } => {
            // SAFETY: _exit ends the parent without running destructors or
            // flushing buffers the child also owns.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Child => {}
    }
    setsid().map_err(os)?;
    dup2_stdin(&devnull).map_err(os)?;
    dup2_stdout(&devnull).map_err(os)?;
    dup2_stderr(&devnull).map_err(os)?;
    Ok(())
}

/// The first socket passed by systemd socket activation (fd 3), when
/// LISTEN_PID is this process and LISTEN_FDS >= 1. The variables are removed
/// so that no child inherits them.
pub fn activated_listener() -> io::Result<Option<UnixListener>> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let fds = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse::<u32>().ok());
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    if !pid_ok || fds.unwrap_or(0) < 1 {
        return Ok(None);
    }
    const FD: RawFd = 3;
    let not_a_listener = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "LISTEN_FDS is set but fd 3 is not a stream socket (check the .socket unit: ListenStream=)",
        )
    };
    // Is fd 3 open at all? (Owning a closed descriptor would be unsound.)
    nix::fcntl::fcntl(
        // SAFETY: borrowed for this one call only; F_GETFD fails with EBADF on a
        // closed descriptor and touches nothing.
        unsafe { BorrowedFd::borrow_raw(FD) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .map_err(|_| not_a_listener())?;
    // SAFETY: fd 3 is open (checked above), was handed to this process by
    // systemd and nothing else in the process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(FD) };
    match socket::getsockopt(&fd, sockopt::SockType) {
        Ok(socket::SockType::Stream) => {}
        _ => return Err(not_a_listener()),
    }
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(os)?;
    Ok(Some(UnixListener::from(fd)))
}

/// The user id of the process at the other end of a UNIX stream socket
/// (`SO_PEERCRED`, as it was when it connected).
pub fn peer_uid(fd: &impl std::os::fd::AsFd) -> io::Result<u32> {
    socket::getsockopt(fd, sockopt::PeerCredentials)
        .map(|c| c.uid())
        .map_err(os)
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Sets `SO_RCVTIMEO` on `fd`. On a listening socket it bounds a blocking
/// `accept`, on a connection a blocking `recv` (EAGAIN when it expires): std
/// offers no way to set it on a listener, nor on a raw descriptor.
pub fn set_recv_timeout(fd: RawFd, timeout: Duration) -> io::Result<()> {
    let tv = nix::sys::time::TimeVal::new(
        timeout.as_secs() as nix::libc::time_t,
        timeout.subsec_micros() as nix::libc::suseconds_t,
    );
    // SAFETY: `fd` is the caller's open socket, borrowed for this call only.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    socket::setsockopt(&fd, sockopt::ReceiveTimeout, &tv).map_err(os)
}

/// Waits until `fd` has something to read (or end of file, or an error), at
/// most `timeout`. Returns whether it is readable.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // SAFETY: `fd` is the caller's open descriptor, borrowed for this call only.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
    let n = poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], timeout).map_err(os)?;
    Ok(n > 0)
}

/// `recv` without blocking (`MSG_DONTWAIT`), whatever the descriptor's mode.
pub fn recv_nowait(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    socket::recv(fd, buf, MsgFlags::MSG_DONTWAIT).map_err(os)
}

/// `send` without blocking and without SIGPIPE (`MSG_DONTWAIT | MSG_NOSIGNAL`):
/// an answer the socket does not take at once goes to the reactor.
pub fn send_nowait(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    socket::send(fd, buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL).map_err(os)
}

/// Accepts one connection (close-on-exec), without asking for the peer's
/// address: nobody uses it, and fetching it costs the kernel a copy per
/// connection. Blocks as the listener does (its `SO_RCVTIMEO` included).
pub fn accept_stream(listener: &UnixListener) -> io::Result<std::os::unix::net::UnixStream> {
    let fd = socket::accept4(listener, socket::SockFlag::SOCK_CLOEXEC).map_err(os)?;
    Ok(std::os::unix::net::UnixStream::from(fd))
}

/// Copies what a socket has queued into `buf` without consuming it
/// (`MSG_PEEK`), never blocking. Returns the number of bytes copied.
pub fn recv_peek(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    socket::recv(fd, buf, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT).map_err(os)
}

/// Like [`recv_peek`] but blocking until something is queued, at most the
/// socket's `SO_RCVTIMEO` (then EAGAIN): set it first, or this may block for
/// ever. One system call that sleeps only when the request is not there yet.
pub fn recv_peek_wait(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    socket::recv(fd, buf, MsgFlags::MSG_PEEK).map_err(os)
}

/// Sends each message (its two parts joined) as one datagram on a connected
/// socket, as many as one `sendmmsg` call takes. Returns how many were sent.
pub fn send_datagrams(
    sock: &std::os::unix::net::UnixDatagram,
    msgs: &[[std::io::IoSlice<'_>; 2]],
) -> io::Result<usize> {
    use std::os::unix::io::AsRawFd;
    let mut headers = socket::MultiHeaders::<socket::UnixAddr>::preallocate(msgs.len(), None);
    // Connected: no address per message.
    let addrs = vec![None; msgs.len()];
    let sent = socket::sendmmsg(
        sock.as_raw_fd(),
        &mut headers,
        msgs,
        &addrs,
        [],
        MsgFlags::MSG_NOSIGNAL,
    )
    .map_err(os)?;
    Ok(sent.count())
}
