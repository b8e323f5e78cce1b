//! The fields of a log line: every value that comes from a client is quoted and
//! escaped so that it can never end its field or start another.

/// Printable, bounded form of untrusted bytes for a log line (see
/// [`value_into`]), without the quotes.
pub fn clean(bytes: &[u8]) -> String {
    let mut out = String::new();
    escape_into(&mut out, bytes, 64, false);
    out
}

/// Appends ` key="value"`: the value quoted and escaped so that it can never
/// end its field or start another, whatever the client sent (security finding
/// 10: a login `x client=203.0.113.5 result=OK` once forged fields for
/// fail2ban-style parsers). Escaped as `\xNN` (or `\u{N}` beyond ASCII): `"`,
/// `\`, `=`, spaces and every other whitespace or control character; so a
/// parser splitting on spaces, a quote-aware one and a `key=(\S+)` regex all
/// read the same fields. At most 64 characters, then `...`.
pub fn value_into(out: &mut String, key: &str, bytes: &[u8]) {
    out.push(' ');
    out.push_str(key);
    out.push_str("=\"");
    escape_into(out, bytes, 64, false);
    out.push('"');
}

/// Appends ` key="text"` for the daemon's and the core's own explanations
/// (detail, cause, credential): escaped like [`value_into`] except that plain
/// spaces stay readable. `=` is still escaped, so a text can hold no `key=`.
pub fn text_into(out: &mut String, key: &str, text: &str) {
    out.push(' ');
    out.push_str(key);
    out.push_str("=\"");
    escape_into(out, text.as_bytes(), 200, true);
    out.push('"');
}

/// What [`text_into`] writes between the quotes.
pub fn escape_text_into(out: &mut String, text: &str) {
    escape_into(out, text.as_bytes(), 200, true);
}

/// [`text_into`] for a value that displays itself (e.g. the credential, whose
/// label is the admin's text), escaped as it is written: no extra buffer.
pub fn display_into(out: &mut String, key: &str, value: &dyn std::fmt::Display) {
    use std::fmt::Write as _;
    struct Escaping<'a>(&'a mut String);
    impl std::fmt::Write for Escaping<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            escape_into(self.0, s.as_bytes(), usize::MAX, true);
            Ok(())
        }
    }
    out.push(' ');
    out.push_str(key);
    out.push_str("=\"");
    let _ = write!(Escaping(out), "{value}");
    out.push('"');
}

/// Printable ASCII that needs no escape.
fn plain_ascii(b: u8, keep_spaces: bool) -> bool {
    match b {
        b'"' | b'\\' | b'=' => false,
        b' ' => keep_spaces,
        _ => b.is_ascii_graphic(),
    }
}

fn escape_into(out: &mut String, bytes: &[u8], max: usize, keep_spaces: bool) {
    use std::fmt::Write as _;
    // The usual case (`alice`, `imap`, `192.0.2.7;40002`): copied as it is.
    if bytes.len() <= max && bytes.iter().all(|&b| plain_ascii(b, keep_spaces)) {
        if let Ok(text) = std::str::from_utf8(bytes) {
            out.push_str(text);
            return;
        }
    }
    for (n, ch) in String::from_utf8_lossy(bytes).chars().enumerate() {
        if n >= max {
            out.push_str("...");
            break;
        }
        let plain = match ch {
            ' ' => keep_spaces,
            '"' | '\\' | '=' => false,
            c => !(c.is_control() || c.is_whitespace()),
        };
        if plain {
            out.push(ch);
        } else if ch.is_ascii() {
            let _ = write!(out, "\\x{:02x}", ch as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", ch as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clean_escapes() {
        assert_eq!(super::clean(b"ali\nce\""), "ali\\x0ace\\x22");
        assert_eq!(super::clean(b""), "");
        assert_eq!(super::clean(&[b'a'; 100]).len(), 67);
        assert_eq!(
            super::clean("a b=c\\\u{2028}\u{e9}".as_bytes()),
            "a\\x20b\\x3dc\\x5c\\u{2028}\u{e9}"
        );
    }

    #[test]
    fn fields_cannot_start_fields() {
        let mut line = String::from("result=NO");
        super::value_into(&mut line, "login", b"x client=203.0.113.5 result=OK\" y=\"");
        super::text_into(&mut line, "detail", "a \"b\" c=d");
        super::display_into(&mut line, "credential", &"app-password 3 (x=\"y\")");
        assert_eq!(
            line,
            "result=NO login=\"x\\x20client\\x3d203.0.113.5\\x20result\\x3dOK\\x22\\x20y\\x3d\\x22\" \
             detail=\"a \\x22b\\x22 c\\x3dd\" credential=\"app-password 3 (x\\x3d\\x22y\\x22)\""
        );
    }
}
