//! Time helpers: Unix seconds, RFC 3339 text, "--since" parsing.

use crate::error::{Error, Result};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `2026-11-22T10:00:00Z`
pub fn format(ts: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(ts.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `--since`: a duration ago (`1h`, `7d`) or a date/time (`2026-11-20`,
/// `2026-11-20 10:00:00`, RFC 3339), UTC.
pub fn parse_since(text: &str, now: i64) -> Result<i64> {
    let t = text.trim();
    if let Ok(d) = crate::config::parse_duration(t) {
        // Saturating: `--since 9223372036854775808` overflowed (found by fuzzing).
        return Ok(now.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
    }
    let with_time = if t.len() == 10 {
        format!("{t}T00:00:00Z")
    } else {
        t.to_string()
    };
    let parsed = humantime::parse_rfc3339_weak(&with_time)
        .or_else(|_| humantime::parse_rfc3339(&with_time))
        .map_err(|_| {
            Error::Usage(format!(
                "bad time {t:?}: use a duration (1h, 7d) or a date (2026-11-20)"
            ))
        })?;
    Ok(parsed
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn since() {
        assert_eq!(parse_since("1h", 10_000).unwrap(), 10_000 - 3600);
        assert_eq!(parse_since("1970-01-02", 0).unwrap(), 86400);
        assert!(parse_since("yesterday-ish", 0).is_err());
        // Durations beyond i64 seconds saturate instead of overflowing.
        assert_eq!(
            parse_since("9223372036854775808", 10).unwrap(),
            10 - i64::MAX
        );
        assert_eq!(
            parse_since("18446744073709551615", 10).unwrap(),
            10 - i64::MAX
        );
        assert_eq!(format(86400), "1970-01-02T00:00:00Z");
    }
}
