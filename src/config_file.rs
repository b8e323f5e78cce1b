//! What the three parts of saslgate.conf (`config`, `http_config`,
//! `web_config`) share to read it: durations through humantime, strings
//! parsed into addresses, networks and names, and error messages that name
//! the file, the line and the key.
//!
//! Every reader fails inside the value's own deserializer, so the toml crate
//! marks its error with the value's place in the file; [`deserialize_error`]
//! turns that place into a line number and a dotted key.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;
use toml_edit::{ImDocument, TableLike};

/// Parses "90d", "10m", "30s", "1h 30m" (humantime syntax) or a bare number
/// of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("duration out of range: {t:?}"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("bad duration {t:?}: {e} (examples: 30s, 10m, 90d)"))
}

/// `#[serde(with = "crate::config_file::duration")]`: a duration written as
/// a string ([`parse_duration`]).
pub mod duration {
    use serde::Deserializer;
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::text(d, super::parse_duration)
    }
}

/// A string value read through `parse`.
pub fn text<'de, D, T, F>(d: D, parse: F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: Fn(&str) -> Result<T, String>,
{
    d.deserialize_str(Text(&parse))
}

/// An array of strings, each read through `parse`.
pub fn list<'de, D, T, F>(d: D, parse: F) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    F: Fn(&str) -> Result<T, String>,
{
    d.deserialize_seq(List(&parse))
}

/// A table of strings, each key read through `key` and each value through
/// `value`, in the file's order.
pub fn table<'de, D, K, V, FK, FV>(d: D, key: FK, value: FV) -> Result<Vec<(K, V)>, D::Error>
where
    D: Deserializer<'de>,
    FK: Fn(&str) -> Result<K, String>,
    FV: Fn(&str) -> Result<V, String>,
{
    d.deserialize_map(Table(&key, &value))
}

/// `[throttle] trusted_networks`, `[http] trusted_peers`.
pub fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<crate::names::Network>, D::Error> {
    list(d, crate::names::Network::parse)
}

/// Reads one string; the parser's refusal is raised while the toml crate's
/// value deserializer is still on the stack, so it gets the value's span.
struct Text<'a, F>(&'a F);

impl<'de, T, F: Fn(&str) -> Result<T, String>> Visitor<'de> for Text<'_, F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

impl<'de, T, F: Fn(&str) -> Result<T, String>> DeserializeSeed<'de> for Text<'_, F> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_str(self)
    }
}

struct List<'a, F>(&'a F);

impl<'de, T, F: Fn(&str) -> Result<T, String>> Visitor<'de> for List<'_, F> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of strings")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Text(self.0))? {
            out.push(v);
        }
        Ok(out)
    }
}

struct Table<'a, FK, FV>(&'a FK, &'a FV);

impl<'de, K, V, FK, FV> Visitor<'de> for Table<'_, FK, FV>
where
    FK: Fn(&str) -> Result<K, String>,
    FV: Fn(&str) -> Result<V, String>,
{
    type Value = Vec<(K, V)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a table of strings")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<(K, V)>, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = map.next_key_seed(Text(self.0))? {
            out.push((k, map.next_value_seed(Text(self.1))?));
        }
        Ok(out)
    }
}

/// A rule across keys or a range broken (found by a `validate` after the
/// file was read): the keys it is about, dotted, the first one found in the
/// file giving the line, and a message that names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub keys: Vec<&'static str>,
    pub message: String,
}

impl Invalid {
    /// A rule about one key: the message is `KEY: what`.
    pub fn key(key: &'static str, what: impl fmt::Display) -> Invalid {
        Invalid {
            keys: vec![key],
            message: format!("{key}: {what}"),
        }
    }
}

/// A deserialization error as `FILE, line N: KEY: what` (the file when
/// known; the line and key when the error has a place in `text`).
pub fn deserialize_error(text: &str, file: Option<&Path>, e: &toml::de::Error) -> String {
    // The parser's messages span lines ("invalid string\nexpected ..."); a
    // configuration error is one line (logs, the plugin's syslog line).
    let what: Vec<&str> = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let what = what.join("; ");
    let Some(span) = e.span() else {
        return compose(file, None, None, &what);
    };
    let key = ImDocument::parse(text)
        .ok()
        .and_then(|doc| key_at(doc.as_table(), span.start, ""));
    compose(file, Some(line_at(text, span.start)), key.as_deref(), &what)
}

/// An [`Invalid`] as `FILE, line N: KEY: what`.
pub fn invalid_error(text: &str, file: Option<&Path>, invalid: &Invalid) -> String {
    let line = ImDocument::parse(text).ok().and_then(|doc| {
        invalid
            .keys
            .iter()
            .find_map(|k| key_span(doc.as_table(), k))
            .map(|span| line_at(text, span.start))
    });
    compose(file, line, None, &invalid.message)
}

fn compose(file: Option<&Path>, line: Option<usize>, key: Option<&str>, what: &str) -> String {
    let place = match (file, line) {
        (Some(f), Some(n)) => format!("{}, line {n}: ", f.display()),
        (Some(f), None) => format!("{}: ", f.display()),
        (None, Some(n)) => format!("line {n}: "),
        (None, None) => String::new(),
    };
    match key {
        Some(k) => format!("{place}{k}: {what}"),
        None => format!("{place}{what}"),
    }
}

/// 1-based line of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The innermost dotted key whose name or value covers `offset`.
fn key_at(table: &dyn TableLike, offset: usize, prefix: &str) -> Option<String> {
    let covers =
        |span: Option<Range<usize>>| span.is_some_and(|s| s.contains(&offset) || s.start == offset);
    for (name, item) in table.iter() {
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        // A `[table]`'s keys are not inside its header's span: look at them first.
        if let Some(inner) = item.as_table_like() {
            if let Some(found) = key_at(inner, offset, &path) {
                return Some(found);
            }
        }
        if covers(table.key(name).and_then(|k| k.span())) || covers(item.span()) {
            return Some(path);
        }
    }
    None
}

/// Where a dotted key's name is in the file, if it is there.
fn key_span(root: &dyn TableLike, dotted: &str) -> Option<Range<usize>> {
    let mut table = root;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        let (key, item) = table.get_key_value(part)?;
        if parts.peek().is_none() {
            return key.span().or_else(|| item.span());
        }
        table = item.as_table_like()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_lines_of_places() {
        let text =
            "a = 1\n[t]\nb = \"x\"\nc = [\"p\",\n  \"q\"]\n[t.u]\nd = 2\n[v]\ne = { f = 3 }\n";
        let doc = ImDocument::parse(text).unwrap();
        let at = |needle: &str| key_at(doc.as_table(), text.find(needle).unwrap(), "");
        assert_eq!(at("a =").as_deref(), Some("a"));
        assert_eq!(at("\"x\"").as_deref(), Some("t.b"));
        assert_eq!(at("\"q\"").as_deref(), Some("t.c"));
        assert_eq!(at("d =").as_deref(), Some("t.u.d"));
        assert_eq!(at("3 }").as_deref(), Some("v.e.f"));
        assert_eq!(line_at(text, text.find("\"q\"").unwrap()), 5);
        let line = |k| key_span(doc.as_table(), k).map(|s| line_at(text, s.start));
        assert_eq!(line("t.u.d"), Some(7));
        assert_eq!(line("v.e.f"), Some(9));
        assert_eq!(line("t.zz"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86400)));
        assert_eq!(parse_duration(" 45 "), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-3d").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
    }
}
