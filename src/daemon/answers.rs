//! What the saslauthd face answers: one table from each outcome to its
//! answer, the only place these texts are made. `OK` for an accepted login;
//! `NO` and the engine's client-safe text for a refusal
//! ([`RefuseReason::public_text`], the same text every face shows); `NO` and
//! [`UNAVAILABLE_TEXT`] when saslgate cannot decide. libsasl2 only looks at
//! the first two letters; people read the rest in their client's error.
//!
//! The answers are encoded (counted strings, [`super::protocol`]) at compile
//! time: none is built per request.

use crate::decision::{Decision, RefuseReason};

/// The saslauthd face's text when saslgate cannot decide (storage,
/// configuration or internal error): the answer is `NO unavailable`.
pub const UNAVAILABLE_TEXT: &str = "unavailable";

/// An outcome as the saslauthd face tells it apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Refused(RefuseReason),
    Unavailable,
}

/// The table: every outcome with its answer, in `Outcome::index` order
/// (a test checks the order and that no outcome is missing).
pub static ANSWERS: [(Outcome, Counted); 10] = [
    (Outcome::Accepted, Counted::new("OK", "")),
    (Outcome::Unavailable, Counted::new("NO", UNAVAILABLE_TEXT)),
    refusal(RefuseReason::BadCredentials),
    refusal(RefuseReason::Disabled),
    refusal(RefuseReason::NotAllowed),
    refusal(RefuseReason::Throttled),
    refusal(RefuseReason::BadInput),
    refusal(RefuseReason::NoSuchAccount),
    refusal(RefuseReason::Blocked),
    refusal(RefuseReason::TlsRequired),
];

const fn refusal(reason: RefuseReason) -> (Outcome, Counted) {
    (
        Outcome::Refused(reason),
        Counted::new("NO", reason.public_text()),
    )
}

impl Outcome {
    /// The outcome of a decision of the engine.
    pub fn of(decision: &Decision) -> Outcome {
        match decision {
            Decision::Accepted { .. } => Outcome::Accepted,
            Decision::Refused { reason, .. } => Outcome::Refused(*reason),
            Decision::Unavailable { .. } => Outcome::Unavailable,
        }
    }

    /// The answer on the wire (a counted string), from [`ANSWERS`].
    pub fn answer(self) -> &'static [u8] {
        ANSWERS[self.index()].1.as_bytes()
    }

    /// The answer's text (after its length), from [`ANSWERS`].
    pub fn text(self) -> &'static str {
        ANSWERS[self.index()].1.text()
    }

    /// Where the outcome sits in [`ANSWERS`] (a new refusal reason does not
    /// compile until it has its row: the match is exhaustive).
    fn index(self) -> usize {
        match self {
            Outcome::Accepted => 0,
            Outcome::Unavailable => 1,
            Outcome::Refused(reason) => {
                2 + match reason {
                    RefuseReason::BadCredentials => 0,
                    RefuseReason::Disabled => 1,
                    RefuseReason::NotAllowed => 2,
                    RefuseReason::Throttled => 3,
                    RefuseReason::BadInput => 4,
                    RefuseReason::NoSuchAccount => 5,
                    RefuseReason::Blocked => 6,
                    RefuseReason::TlsRequired => 7,
                }
            }
        }
    }
}

/// Room for the longest answer text (the longest today is 38 bytes; a longer
/// one fails the build).
const MAX_TEXT: usize = 64;

/// One answer as sent: a 2-byte big-endian length, then `WORD` or `WORD TEXT`.
pub struct Counted {
    bytes: [u8; 2 + MAX_TEXT],
    len: usize,
}

impl Counted {
    const fn new(word: &str, text: &str) -> Counted {
        let (word, text) = (word.as_bytes(), text.as_bytes());
        let body = if text.is_empty() {
            word.len()
        } else {
            word.len() + 1 + text.len()
        };
        assert!(body <= MAX_TEXT, "a saslauthd answer longer than MAX_TEXT");
        let mut bytes = [0u8; 2 + MAX_TEXT];
        bytes[0] = (body >> 8) as u8;
        bytes[1] = body as u8;
        let mut at = 2;
        let mut i = 0;
        while i < word.len() {
            bytes[at] = word[i];
            at += 1;
            i += 1;
        }
        if !text.is_empty() {
            bytes[at] = b' ';
            at += 1;
        }
        let mut i = 0;
        while i < text.len() {
            bytes[at] = text[i];
            at += 1;
            i += 1;
        }
        Counted { bytes, len: at }
    }

    /// The whole answer, length included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The text after the length (`OK`, `NO authentication failed`).
    pub fn text(&self) -> &str {
        // Built from two &str joined by a space: always UTF-8.
        std::str::from_utf8(&self.bytes[2..self.len]).unwrap_or("NO")
    }
}

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::protocol::encode_answer;

    const REASONS: [RefuseReason; 8] = [
        RefuseReason::BadCredentials,
        RefuseReason::Disabled,
        RefuseReason::NotAllowed,
        RefuseReason::Throttled,
        RefuseReason::BadInput,
        RefuseReason::NoSuchAccount,
        RefuseReason::Blocked,
        RefuseReason::TlsRequired,
    ];

    #[test]
    fn every_outcome_has_its_row_in_order() {
        let outcomes: Vec<Outcome> = [Outcome::Accepted, Outcome::Unavailable]
            .into_iter()
            .chain(REASONS.map(Outcome::Refused))
            .collect();
        assert_eq!(outcomes.len(), ANSWERS.len());
        for (i, (outcome, _)) in ANSWERS.iter().enumerate() {
            assert_eq!(outcome.index(), i, "{outcome:?}");
            assert!(outcomes.contains(outcome), "{outcome:?}");
        }
    }

    /// The texts clients see: `OK`, `NO` + the engine's public text, `NO
    /// unavailable`; each encoded as the protocol's counted string.
    #[test]
    fn the_table_says_what_the_face_promises() {
        assert_eq!(Outcome::Accepted.text(), "OK");
        assert_eq!(Outcome::Accepted.answer(), b"\x00\x02OK");
        assert_eq!(Outcome::Unavailable.text(), "NO unavailable");
        assert_eq!(
            Outcome::Unavailable.text(),
            format!("NO {UNAVAILABLE_TEXT}")
        );
        assert_eq!(
            Outcome::Refused(RefuseReason::BadCredentials).text(),
            "NO authentication failed"
        );
        for reason in REASONS {
            let o = Outcome::Refused(reason);
            assert_eq!(o.text(), format!("NO {}", reason.public_text()));
        }
        for (outcome, counted) in &ANSWERS {
            assert_eq!(
                counted.as_bytes(),
                encode_answer(counted.text()),
                "{outcome:?}"
            );
            assert_eq!(outcome.answer(), counted.as_bytes());
        }
    }

    #[test]
    fn decisions_map_to_their_outcome() {
        use std::time::Duration;
        let refused = Decision::Refused {
            reason: RefuseReason::Throttled,
            detail: String::new(),
            retry_after: None,
            delay: Duration::ZERO,
        };
        assert_eq!(
            Outcome::of(&refused),
            Outcome::Refused(RefuseReason::Throttled)
        );
        let unavailable = Decision::Unavailable {
            cause: String::new(),
        };
        assert_eq!(Outcome::of(&unavailable), Outcome::Unavailable);
    }
}
