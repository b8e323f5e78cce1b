//! The saslauthd wire protocol.
//!
//! A request is a run of counted strings (2-byte big-endian length, then the
//! bytes): login, password, service, realm and, from libsasl2 releases after
//! 2.1.28, the client address. The answer is one counted string starting with
//! `OK` or `NO`.
//!
//! libsasl2 writes the whole request with one `writev` and only then reads, so
//! the number of fields is told by what is already there once the first four
//! are complete: the caller reads until the socket would block, and only then
//! asks [`parse`] with everything it has. No timing guesses.

/// Default longest field accepted (bytes). saslauthd 2.1.28 stops at 256.
pub const DEFAULT_FIELD_LIMIT: usize = 1024;

/// One complete request: views into the caller's buffer, which holds the
/// password and is the caller's to wipe once the request is decided (no copy
/// of the password, no allocation per request).
pub struct WireRequest<'a> {
    pub login: &'a [u8],
    pub password: &'a [u8],
    pub service: &'a [u8],
    /// Empty realm on the wire = no realm.
    pub realm: Option<&'a [u8]>,
    /// Present only in 5-field requests (and then non-empty).
    pub client_addr: Option<&'a [u8]>,
    /// 4 or 5.
    pub fields: u8,
}

/// Never shows the password (only its length).
impl std::fmt::Debug for WireRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireRequest")
            .field("login", &String::from_utf8_lossy(self.login))
            .field("password", &format_args!("<{} bytes>", self.password.len()))
            .field("service", &String::from_utf8_lossy(self.service))
            .field("realm", &self.realm.map(String::from_utf8_lossy))
            .field(
                "client_addr",
                &self.client_addr.map(String::from_utf8_lossy),
            )
            .field("fields", &self.fields)
            .finish()
    }
}

/// Why a frame is refused before it reaches the core. Never carries input bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A declared length over the limit (the field is not read).
    TooLong { field: &'static str, len: usize },
    /// A NUL byte inside a field (stock saslauthd would cut the password there).
    Nul { field: &'static str },
    /// Bytes after the fifth field.
    Trailing,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLong { field, len } => {
                write!(f, "{field} field of {len} bytes over the limit")
            }
            FrameError::Nul { field } => write!(f, "NUL byte in the {field} field"),
            FrameError::Trailing => write!(f, "bytes after the last field"),
        }
    }
}

#[derive(Debug)]
pub enum Parse<'a> {
    /// Not a whole request yet: keep reading (until the deadline).
    NeedMore,
    Bad(FrameError),
    Complete(WireRequest<'a>),
}

const NAMES: [&str; 5] = ["login", "password", "service", "realm", "client address"];

/// Largest buffer a valid request can need with this field limit.
pub fn max_frame(limit: usize) -> usize {
    5 * (2 + limit)
}

/// Parses `buf`, which holds every byte received so far (the caller has read
/// until the socket would block or reached end of file). Four complete fields
/// and nothing more is a 4-field request; anything more must be a complete
/// fifth field.
pub fn parse(buf: &[u8], limit: usize) -> Parse<'_> {
    let mut spans: [(usize, usize); 5] = [(0, 0); 5];
    let mut pos = 0usize;
    let mut count = 0usize;
    while count < 5 {
        if count == 4 && pos == buf.len() {
            break; // exactly four fields and nothing waiting: a 4-field request
        }
        let Some(head) = buf.get(pos..pos + 2) else {
            return Parse::NeedMore;
        };
        let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
        if len > limit {
            return Parse::Bad(FrameError::TooLong {
                field: NAMES[count],
                len,
            });
        }
        let start = pos + 2;
        let Some(body) = buf.get(start..start + len) else {
            // Refuse a NUL already visible without waiting for the rest.
            if buf[start.min(buf.len())..].contains(&0) {
                return Parse::Bad(FrameError::Nul {
                    field: NAMES[count],
                });
            }
            return Parse::NeedMore;
        };
        if body.contains(&0) {
            return Parse::Bad(FrameError::Nul {
                field: NAMES[count],
            });
        }
        spans[count] = (start, len);
        pos = start + len;
        count += 1;
    }
    if pos != buf.len() {
        return Parse::Bad(FrameError::Trailing);
    }
    let field = |i: usize| -> &[u8] {
        let (s, l) = spans[i];
        &buf[s..s + l]
    };
    let realm = field(3);
    let client = if count == 5 { Some(field(4)) } else { None };
    Parse::Complete(WireRequest {
        login: field(0),
        password: field(1),
        service: field(2),
        realm: (!realm.is_empty()).then_some(realm),
        client_addr: client.filter(|c| !c.is_empty()),
        fields: count as u8,
    })
}

/// Encodes one counted string (answers are short; longer text is cut).
pub fn encode_answer(text: &str) -> Vec<u8> {
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// Encodes a request (for clients: tests and the load generator).
pub fn encode_request(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        let len = f.len().min(u16::MAX as usize);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&f[..len]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(p: Parse<'_>) -> WireRequest<'_> {
        match p {
            Parse::Complete(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn four_and_five_fields() {
        let four = encode_request(&[b"alice", b"pw", b"imap", b""]);
        let r = complete(parse(&four, 1024));
        assert_eq!(r.fields, 4);
        assert_eq!(r.login, b"alice");
        assert_eq!(r.password, b"pw");
        assert!(
            !format!("{r:?}").contains("pw\""),
            "Debug hides the password"
        );
        assert_eq!(r.realm, None);
        assert_eq!(r.client_addr, None);
        let five = encode_request(&[b"alice", b"pw", b"imap", b"example.org", b"127.0.0.1;4242"]);
        let r = complete(parse(&five, 1024));
        assert_eq!(r.fields, 5);
        assert_eq!(r.realm, Some(&b"example.org"[..]));
        assert_eq!(r.client_addr, Some(&b"127.0.0.1;4242"[..]));
    }

    #[test]
    fn partial_frames_wait() {
        let five = encode_request(&[b"alice", b"pw", b"imap", b"", b"::1"]);
        for cut in 0..five.len() {
            let p = parse(&five[..cut], 1024);
            if cut == 2 + 5 + 2 + 2 + 2 + 4 + 2 {
                assert!(
                    matches!(p, Parse::Complete(ref r) if r.fields == 4),
                    "cut {cut}"
                );
            } else {
                assert!(matches!(p, Parse::NeedMore), "cut {cut}: {p:?}");
            }
        }
    }

    #[test]
    fn refusals() {
        let mut long = vec![0x04, 0x01];
        long.extend_from_slice(b"x");
        assert_eq!(
            format!("{:?}", parse(&long, 1024)),
            format!(
                "{:?}",
                Parse::Bad(FrameError::TooLong {
                    field: "login",
                    len: 1025
                })
            )
        );
        let nul = encode_request(&[b"alice", b"p\0w", b"imap", b""]);
        assert!(matches!(
            parse(&nul, 1024),
            Parse::Bad(FrameError::Nul { field: "password" })
        ));
        let mut trailing = encode_request(&[b"a", b"b", b"c", b"", b"e"]);
        trailing.push(7);
        assert!(matches!(
            parse(&trailing, 1024),
            Parse::Bad(FrameError::Trailing)
        ));
        // Early NUL in a partial field is refused without waiting.
        let mut part = vec![0, 10];
        part.extend_from_slice(b"ab\0");
        assert!(matches!(
            parse(&part, 1024),
            Parse::Bad(FrameError::Nul { .. })
        ));
    }

    #[test]
    fn answers() {
        assert_eq!(encode_answer("OK"), b"\x00\x02OK");
        assert_eq!(encode_answer("NO authentication failed")[..2], [0, 24]);
    }
}
