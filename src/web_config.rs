//! `[web]` of saslgate.conf: saslgate-web, the "Password & Security" pages
//! (the `web/` crate). A module of its own so that the configuration does not
//! depend on the web program. Off until `listen` is set (or `--listen` given).

use crate::config_file::{self, Invalid};
use crate::http_config::Listen;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Read straight from `[web]`; [`WebConfig::validate`] then checks the
/// durations.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// `IP:PORT` or a UNIX socket path; `None`: the program refuses to start.
    #[serde(deserialize_with = "listen")]
    pub listen: Option<Listen>,
    /// The address people type (`https://mail.example.org/account`): shown in
    /// the TOTP QR code's issuer and in links. Empty: not shown.
    #[serde(deserialize_with = "public_url")]
    pub public_url: String,
    /// A session unused this long ends.
    #[serde(with = "config_file::duration")]
    pub session_idle: Duration,
    /// A session ends this long after its sign-in, however busy.
    #[serde(with = "config_file::duration")]
    pub session_max: Duration,
    /// A credential change needs the master password typed at most this long ago.
    #[serde(with = "config_file::duration")]
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

fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Listen>, D::Error> {
    config_file::text(d, Listen::parse).map(Some)
}

/// Without its trailing `/`; empty, or an http(s) URL.
fn public_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    config_file::text(d, |u| {
        let u = u.trim().trim_end_matches('/');
        if !u.is_empty() && !u.starts_with("https://") && !u.starts_with("http://") {
            return Err(format!("{u:?} is not an http(s) URL"));
        }
        Ok(u.to_string())
    })
}

impl WebConfig {
    /// Each duration at least one second; a session's idle limit within its
    /// longest life.
    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, d) in [
            ("web.session_idle", self.session_idle),
            ("web.session_max", self.session_max),
            ("web.reauth_window", self.reauth_window),
        ] {
            if d < Duration::from_secs(1) {
                let d = humantime::format_duration(d);
                return Err(Invalid::key(key, format!("{d} is shorter than one second")));
            }
        }
        if self.session_idle > self.session_max {
            return Err(Invalid {
                keys: vec!["web.session_idle", "web.session_max"],
                message: "web.session_idle is longer than web.session_max".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, String> {
        let c: WebConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|i| i.message)?;
        Ok(c)
    }

    #[test]
    fn parses_and_checks() {
        let c = parse(
            "listen = \"127.0.0.1:8443\"\npublic_url = \"https://mail.example.org/account/\"\nsession_idle = \"10m\"\nreauth_window = \"2m\"",
        )
        .unwrap();
        assert_eq!(c.public_url, "https://mail.example.org/account");
        assert_eq!(c.session_idle, Duration::from_secs(600));
        assert_eq!(c.reauth_window, Duration::from_secs(120));
        assert_eq!(c.session_max, WebConfig::default().session_max);
        let e = parse("session_idle = \"13h\"").unwrap_err();
        assert!(e.contains("longer than web.session_max"), "{e}");
        assert!(parse("public_url = \"mail.example.org\"").is_err());
        assert!(parse("reauth_window = \"0s\"").is_err());
        assert!(parse("session_max = \"900\"").is_ok());
        let e = parse("sesion_idle = \"1m\"").unwrap_err();
        assert!(e.contains("unknown field `sesion_idle`"), "{e}");
    }
}
