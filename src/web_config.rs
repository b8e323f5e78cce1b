//! `[web]` of saslgate.conf: saslgate-web, the "Password & Security" pages
//! (the `web/` crate). A module of its own so that the configuration does not
//! depend on the web program. Off until `listen` is set (or `--listen` given).

use crate::error::{Error, Result};
use crate::http_config::Listen;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// `IP:PORT` or a UNIX socket path; `None`: the program refuses to start.
    pub listen: Option<Listen>,
    /// The address people type (`https://mail.example.org/account`): shown in
    /// the TOTP QR code's issuer and in links. Empty: not shown.
    pub public_url: String,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// A session ends this long after its sign-in, however busy.
    pub session_max: Duration,
    /// A credential change needs the master password typed at most this long ago.
    pub reauth_window: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: None,
            public_url: String::new(),
            session_idle: Duration::from_secs(15 * 60),
            session_max: Duration::from_secs(12 * 3600),
            reauth_window: Duration::from_secs(5 * 60),
        }
    }
}

/// `"15m"`, `"12h"`, `"300"` (seconds): at least one second.
fn duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let d = match t.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(t)
            .map_err(|e| format!("bad duration {t:?}: {e} (examples: 15m, 12h)"))?,
    };
    if d < Duration::from_secs(1) {
        return Err(format!("{t:?} is shorter than one second"));
    }
    Ok(d)
}

/// The file's shape of `[web]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebFile {
    listen: Option<String>,
    public_url: Option<String>,
    session_idle: Option<String>,
    session_max: Option<String>,
    reauth_window: Option<String>,
}

impl WebFile {
    pub fn resolve(self) -> Result<WebConfig> {
        let bad = |m: String| Error::Config(format!("web.{m}"));
        let mut c = WebConfig::default();
        if let Some(l) = self.listen {
            c.listen = Some(Listen::parse(&l).map_err(|e| bad(format!("listen: {e}")))?);
        }
        if let Some(u) = self.public_url {
            let u = u.trim().trim_end_matches('/').to_string();
            if !u.is_empty() && !u.starts_with("https://") && !u.starts_with("http://") {
                return Err(bad(format!("public_url: {u:?} is not an http(s) URL")));
            }
            c.public_url = u;
        }
        for (key, text, into) in [
            ("session_idle", self.session_idle, &mut c.session_idle),
            ("session_max", self.session_max, &mut c.session_max),
            ("reauth_window", self.reauth_window, &mut c.reauth_window),
        ] {
            if let Some(t) = text {
                *into = duration(&t).map_err(|e| bad(format!("{key}: {e}")))?;
            }
        }
        if c.session_idle > c.session_max {
            return Err(bad("session_idle is longer than session_max".into()));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let f: WebFile = toml::from_str(
            "listen = \"127.0.0.1:8443\"\npublic_url = \"https://mail.example.org/account/\"\nsession_idle = \"10m\"\nreauth_window = \"2m\"",
        )
        .unwrap();
        let c = f.resolve().unwrap();
        assert_eq!(c.public_url, "https://mail.example.org/account");
        assert_eq!(c.session_idle, Duration::from_secs(600));
        assert_eq!(c.reauth_window, Duration::from_secs(120));
        let f: WebFile = toml::from_str("session_idle = \"13h\"").unwrap();
        assert!(f.resolve().is_err());
        let f: WebFile = toml::from_str("public_url = \"mail.example.org\"").unwrap();
        assert!(f.resolve().is_err());
    }
}
