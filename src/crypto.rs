//! Hashing and random secrets: bcrypt for master passwords (slow), HMAC-SHA256 for
//! app passwords, one-time codes and cache keys (fast: those secrets are generated
//! with enough entropy that a fast keyed hash is safe).

use crate::secret::SecretBytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroize;

/// Alphabet of generated secrets: 32 symbols, no look-alikes (0/o, 1/l).
pub const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
/// App passwords: 20 symbols = 100 bits, shown as five groups of four.
pub const APP_PASSWORD_LEN: usize = 20;
// Generated app passwords carry at least 80 bits (doc/design.md, step 4).
const _: () = assert!(APP_PASSWORD_LEN * 5 >= 80);
/// One-time codes: 10 symbols = 50 bits, shown as two groups of five.
pub const CODE_LEN: usize = 10;
/// bcrypt looks at 72 bytes; longer master passwords are refused when set, so two
/// different passwords can never verify as the same.
pub const BCRYPT_MAX: usize = 72;

/// Counts slow hashes, so tests can prove the "one slow hash at most" rule.
#[derive(Debug, Default)]
pub struct HashCounter {
    pub verifies: AtomicU64,
    pub creates: AtomicU64,
}

/// Verifies `password` against a bcrypt hash. A malformed hash verifies as false.
pub fn bcrypt_verify(counter: &HashCounter, password: &[u8], hash: &str) -> bool {
    counter.verifies.fetch_add(1, Ordering::Relaxed);
    if password.len() > BCRYPT_MAX {
        // Still spend the time, so length does not show in the timing.
        let _ = bcrypt::verify(&password[..BCRYPT_MAX], hash);
        return false;
    }
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// Verifies like [`bcrypt_verify`], but always spends the work of one hash at
/// `cost`: a hash stored at a lower cost (made before the cost was raised) is
/// padded with uncounted bcrypt work at costs `stored, stored + 1, ..., cost - 1`,
/// which adds up to `2^cost - 2^stored` rounds, so the whole takes as long as
/// one hash at `cost`. Without it a dormant account with an old, cheaper hash
/// refuses a wrong password faster than an unknown account, and can be told
/// apart by timing.
pub fn bcrypt_verify_padded(counter: &HashCounter, password: &[u8], hash: &str, cost: u32) -> bool {
    let ok = bcrypt_verify(counter, password, hash);
    if let Some(stored) = bcrypt_cost_of(hash).filter(|c| (4..cost).contains(c)) {
        for c in stored..cost {
            let _ = bcrypt::hash_with_salt(b"padding", c, [0x5a; 16]);
        }
    }
    ok
}

/// Hashes a master password with bcrypt at `cost`.
pub fn bcrypt_hash(counter: &HashCounter, password: &[u8], cost: u32) -> Result<String, String> {
    if password.len() > BCRYPT_MAX {
        return Err(format!("password longer than {BCRYPT_MAX} bytes"));
    }
    counter.creates.fetch_add(1, Ordering::Relaxed);
    bcrypt::hash(password, cost).map_err(|e| e.to_string())
}

#[cfg(test)]
mod padding_tests {
    use super::*;

    #[test]
    fn a_cheap_hash_is_padded_to_the_configured_cost() {
        let counter = HashCounter::default();
        let cheap = bcrypt::hash("right", 4).unwrap();
        let full = bcrypt::hash("right", 9).unwrap();
        let time = |h: &str, cost| {
            let t = std::time::Instant::now();
            assert!(!bcrypt_verify_padded(&counter, b"wrong", h, cost));
            t.elapsed()
        };
        // The fastest of five each: other work on a busy machine only adds
        // time (a median of ratios moved with CI load). Unpadded, cost 4
        // against cost 9 is about 1/32.
        let (mut cheap_min, mut full_min) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            cheap_min = cheap_min.min(time(&cheap, 9).as_secs_f64());
            full_min = full_min.min(time(&full, 9).as_secs_f64());
        }
        let ratio = cheap_min / full_min;
        assert!(
            ratio > 0.8 && ratio < 1.25,
            "{cheap_min} s against {full_min} s"
        );
        assert!(bcrypt_verify_padded(&counter, b"right", &cheap, 9));
        assert_eq!(counter.verifies.load(Ordering::Relaxed), 11);
    }
}

/// The cost a bcrypt hash was made with (`$2b$10$...` -> 10).
pub fn bcrypt_cost_of(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

/// HMAC-SHA256 over `parts`, each prefixed with its length (no ambiguity between
/// `("ab","c")` and `("a","bc")`).
pub fn keyed_hash(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    KeyedHasher::new(key).hash(parts)
}

/// [`keyed_hash`] with the key already absorbed: HMAC hashes the key's inner
/// and outer pads first (two SHA-256 blocks of the five a login's lookup
/// costs), the same for every message under one key, so a store keeps this
/// state and copies it per hash instead of hashing its key again.
#[derive(Clone)]
pub struct KeyedHasher(Hmac<Sha256>);

impl KeyedHasher {
    pub fn new(key: &[u8]) -> KeyedHasher {
        KeyedHasher(
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length"),
        )
    }

    /// The same value as [`keyed_hash`] with this hasher's key.
    pub fn hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for KeyedHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHasher(..)") // key-derived state: never shown
    }
}

/// Cryptographically random bytes. Fails only if the OS has no randomness.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf).map_err(|e| format!("no randomness: {e}"))?;
    Ok(buf)
}

/// `len` symbols drawn uniformly from [`ALPHABET`] (32 divides 256: no bias).
fn random_symbols(len: usize) -> Result<SecretBytes, String> {
    let raw = SecretBytes::new(random_bytes(len)?);
    Ok(SecretBytes::new(
        raw.as_bytes()
            .iter()
            .map(|b| ALPHABET[(b & 31) as usize])
            .collect(),
    ))
}

fn grouped(symbols: &[u8], group: usize) -> SecretBytes {
    let mut out = Vec::with_capacity(symbols.len() + symbols.len() / group);
    for (i, chunk) in symbols.chunks(group).enumerate() {
        if i > 0 {
            out.push(b'-');
        }
        out.extend_from_slice(chunk);
    }
    SecretBytes::new(out)
}

/// A new app password, e.g. `k7pq-3mza-...` (canonical form without dashes, display form).
pub fn new_app_password() -> Result<(SecretBytes, SecretBytes), String> {
    let s = random_symbols(APP_PASSWORD_LEN)?;
    let shown = grouped(s.as_bytes(), 4);
    Ok((s, shown))
}

/// A new one-time code (canonical, display `xxxxx-xxxxx`).
pub fn new_one_time_code() -> Result<(SecretBytes, SecretBytes), String> {
    let s = random_symbols(CODE_LEN)?;
    let shown = grouped(s.as_bytes(), 5);
    Ok((s, shown))
}

/// `IN_ALPHABET[b]`: `b` is a symbol of [`ALPHABET`] (one load per byte of
/// every password typed, instead of a search of the alphabet).
const IN_ALPHABET: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        t[ALPHABET[i] as usize] = true;
        i += 1;
    }
    t
};

/// The longest generated secret [`canonical_generated`] takes.
const GENERATED_MAX: usize = if APP_PASSWORD_LEN > CODE_LEN {
    APP_PASSWORD_LEN
} else {
    CODE_LEN
};

/// A generated secret in canonical form, on the stack (no allocation per
/// login); wiped when dropped.
pub struct Canonical {
    buf: [u8; GENERATED_MAX],
    len: usize,
}

impl Canonical {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Canonical {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

/// Canonical form of typed input that may be a generated secret of `len` symbols
/// (at most the longest kind): spaces and dashes dropped, lower-cased. `None` if
/// it cannot be one.
pub fn canonical_generated(input: &[u8], len: usize) -> Option<Canonical> {
    let mut out = Canonical {
        buf: [0; GENERATED_MAX],
        len: 0,
    };
    if len > GENERATED_MAX {
        return None;
    }
    for &b in input {
        match b {
            b' ' | b'-' => continue,
            _ => {
                let c = b.to_ascii_lowercase();
                // `out` wipes what was copied so far when it drops.
                if !IN_ALPHABET[usize::from(c)] || out.len == len {
                    return None;
                }
                out.buf[out.len] = c;
                out.len += 1;
            }
        }
    }
    (out.len == len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_have_the_promised_shape() {
        let (canon, shown) = new_app_password().unwrap();
        assert_eq!(canon.len(), APP_PASSWORD_LEN);
        assert_eq!(shown.len(), APP_PASSWORD_LEN + 4);
        assert_eq!(
            canonical_generated(shown.as_bytes(), APP_PASSWORD_LEN)
                .unwrap()
                .as_bytes(),
            canon.as_bytes()
        );
        let (c, s) = new_one_time_code().unwrap();
        assert_eq!(c.len(), CODE_LEN);
        assert_eq!(s.as_bytes()[5], b'-');
    }

    #[test]
    fn typed_input_is_forgiving_about_spaces_dashes_case() {
        let c = canonical_generated(b"ABCD efgh-ijkm npqr-stuv", 20).unwrap();
        assert_eq!(c.as_bytes(), b"abcdefghijkmnpqrstuv");
        assert!(canonical_generated(b"abcd", 20).is_none());
        assert!(canonical_generated(b"abcdefghijkmnpqrstuv0", 20).is_none());
        assert!(canonical_generated(b"abcdefghijkmnpqrstu0", 20).is_none());
    }

    #[test]
    fn prepared_key_gives_the_same_hash() {
        let k = KeyedHasher::new(b"some key");
        for parts in [
            &[][..],
            &[&b"a"[..]][..],
            &[&b"app-password"[..], &[0u8; 8][..], &[b'x'; 20][..]][..],
        ] {
            assert_eq!(k.hash(parts), keyed_hash(b"some key", parts));
            assert_eq!(k.hash(parts), k.clone().hash(parts));
        }
        for b in 0..=255u8 {
            assert_eq!(IN_ALPHABET[usize::from(b)], ALPHABET.contains(&b), "{b}");
        }
    }

    #[test]
    fn keyed_hash_separates_parts() {
        assert_ne!(
            keyed_hash(b"k", &[b"ab", b"c"]),
            keyed_hash(b"k", &[b"a", b"bc"])
        );
        assert_ne!(keyed_hash(b"k1", &[b"a"]), keyed_hash(b"k2", &[b"a"]));
    }

    #[test]
    fn bcrypt_roundtrip_and_counter() {
        let c = HashCounter::default();
        let h = bcrypt_hash(&c, b"pw", 4).unwrap();
        assert_eq!(bcrypt_cost_of(&h), Some(4));
        assert!(bcrypt_verify(&c, b"pw", &h));
        assert!(!bcrypt_verify(&c, b"px", &h));
        assert!(!bcrypt_verify(&c, b"pw", "not a hash"));
        assert!(bcrypt_hash(&c, &[b'a'; 73], 4).is_err());
        assert_eq!(c.verifies.load(Ordering::Relaxed), 3);
    }
}
