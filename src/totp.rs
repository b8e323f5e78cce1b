//! TOTP (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps), compatible with
//! `oathtool --totp -b SECRET` and authenticator apps.

use crate::secret::ct_eq;

pub const DIGITS: usize = 6;
pub const PERIOD: i64 = 30;
/// Steps of clock skew accepted either side.
pub const SKEW: i64 = 1;

/// The 6-digit code for a time step (RFC 6238 over RFC 4226, by totp-rs; the
/// window and the once-per-step rule are ours, see [`matching_step`]).
pub fn code_at(secret: &[u8], step: i64) -> [u8; DIGITS] {
    // Non-compliant build: RFC 4226 asks for 128-bit secrets, and many tools
    // (and our `decode_secret`) accept 80 bits.
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(DIGITS as u8)
        .with_skew(0)
        .with_step_duration(PERIOD as u64)
        .with_secret(secret.to_vec())
        .build_noncompliant();
    let time = (step.max(0) as u64) * PERIOD as u64;
    let text = totp.generate(time).to_string();
    let mut out = [b'0'; DIGITS];
    let digits = text.as_bytes();
    let n = digits.len().min(DIGITS);
    out[DIGITS - n..].copy_from_slice(&digits[digits.len() - n..]);
    out
}

pub fn step_of(unix_time: i64) -> i64 {
    unix_time.div_euclid(PERIOD)
}

/// The time step `code` is valid for at `unix_time` (± SKEW), if any, newest
/// first. All candidates are compared in constant time.
pub fn matching_step(secret: &[u8], code: &[u8], unix_time: i64) -> Option<i64> {
    if code.len() != DIGITS || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let now = step_of(unix_time);
    let mut found = None;
    for step in (now - SKEW..=now + SKEW).rev() {
        if ct_eq(&code_at(secret, step), code) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// Decodes a base32 secret as typed (spaces ignored, case-insensitive, padding optional).
pub fn decode_secret(text: &str) -> Option<Vec<u8>> {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-' && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let bytes = data_encoding::BASE32_NOPAD
        .decode(cleaned.as_bytes())
        .ok()?;
    // RFC 4226 asks for at least 128 bits; accept 80 (what many tools generate).
    if bytes.len() < 10 {
        return None;
    }
    Some(bytes)
}

pub fn encode_secret(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// `otpauth://` URI for authenticator apps.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    fn esc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={}&period={}",
        esc(issuer),
        esc(account),
        encode_secret(secret),
        esc(issuer),
        DIGITS,
        PERIOD
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_test_vectors() {
        // RFC 6238 appendix B, SHA-1 secret, last 6 digits of the 8-digit values.
        let secret = b"12345678901234567890";
        assert_eq!(&code_at(secret, step_of(59)), b"287082");
        assert_eq!(&code_at(secret, step_of(1111111109)), b"081804");
        assert_eq!(&code_at(secret, step_of(1234567890)), b"005924");
        assert_eq!(&code_at(secret, step_of(2000000000)), b"279037");
    }

    #[test]
    fn skew_window() {
        let secret = b"12345678901234567890";
        let t = 1234567890;
        let code = code_at(secret, step_of(t) - 1);
        assert_eq!(matching_step(secret, &code, t), Some(step_of(t) - 1));
        let old = code_at(secret, step_of(t) - 2);
        assert_eq!(matching_step(secret, &old, t), None);
        assert_eq!(matching_step(secret, b"12345", t), None);
        assert_eq!(matching_step(secret, b"12345a", t), None);
    }

    #[test]
    fn base32() {
        let s = decode_secret("jbsw y3dp ehpk 3pxp").unwrap();
        assert_eq!(encode_secret(&s), "JBSWY3DPEHPK3PXP");
        assert!(decode_secret("not base32!").is_none());
        assert!(decode_secret("JBSW").is_none());
        let uri = otpauth_uri("saslgate", "alice@example.org", &s);
        assert!(
            uri.starts_with("otpauth://totp/saslgate:alice@example.org?secret=JBSWY3DPEHPK3PXP")
        );
    }
}
