//! The host's own names, as libsasl2 finds them when a server passes no realm
//! (`gethostname`, then the canonical name from `getaddrinfo` with
//! `AI_CANONNAME`). They are the default `local_realms`: a login whose realm is
//! one of them may fall back to a plain account name. Also the host's groups,
//! as NSS knows them.

use std::ffi::{c_char, CStr};

/// `gethostname` and its canonical (fully qualified) name, lower-cased,
/// without duplicates. Empty if the system cannot tell.
pub fn own_names() -> Vec<String> {
    let mut names = Vec::new();
    let Some(short) = hostname() else {
        return names;
    };
    if let Some(full) = canonical_name(&short) {
        names.push(full.to_ascii_lowercase());
    }
    let short = short.to_ascii_lowercase();
    if !names.contains(&short) {
        names.push(short);
    }
    names
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for buf.len() bytes; gethostname writes at most that
    // many and we read only up to the first NUL below (or reject the result).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast::<c_char>(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let name = CStr::from_bytes_until_nul(&buf).ok()?.to_str().ok()?;
    (!name.is_empty()).then(|| name.to_string())
}

fn canonical_name(host: &str) -> Option<String> {
    let node = std::ffi::CString::new(host).ok()?;
    // SAFETY: an all-zero addrinfo is a valid "no hints" value; we then set flags.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_flags = libc::AI_CANONNAME;
    hints.ai_family = libc::AF_UNSPEC;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: node is NUL-terminated, hints is initialised, res receives a list
    // that we free with freeaddrinfo exactly once below.
    let rc = unsafe { libc::getaddrinfo(node.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 || res.is_null() {
        return None;
    }
    // SAFETY: res is non-NULL and points to the first entry getaddrinfo returned;
    // ai_canonname is NULL or a NUL-terminated string owned by that list.
    let name = unsafe {
        let canon = (*res).ai_canonname;
        let name = (!canon.is_null())
            .then(|| CStr::from_ptr(canon).to_str().ok().map(str::to_string))
            .flatten();
        libc::freeaddrinfo(res);
        name
    };
    name.filter(|n| !n.is_empty())
}

/// A group name (or a number) as a gid, looked up through NSS (`getgrnam_r`), so
/// groups from sssd, LDAP or systemd resolve as they do for `chgrp`.
/// `Ok(None)`: no such group.
pub fn group_id(name: &str) -> std::io::Result<Option<u32>> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Some(gid));
    }
    nix::unistd::Group::from_name(name)
        .map(|g| g.map(|g| g.gid.as_raw()))
        .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_names_include_the_hostname() {
        let names = super::own_names();
        let short = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert!(
            names.contains(&short.trim().to_ascii_lowercase()),
            "{names:?}"
        );
    }
}
