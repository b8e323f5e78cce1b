//! What an admin change accepts, and the secrets it makes, the same on every
//! backend: a backend only stores the result. (Kept apart from the SQL so that
//! SQLite and PostgreSQL cannot drift on what a valid name or password is.)

use crate::config::Config;
use crate::crypto::{self, HashCounter};
use crate::error::{Error, Result};
use crate::names;
use crate::secret::SecretBytes;

/// An account name as stored (normalised), or a usage error naming it.
pub(crate) fn account_name(name: &str) -> Result<String> {
    names::account_name(name).map_err(|e| Error::Usage(format!("{e}: {name:?}")))
}

/// The bcrypt hash of a new master password, at the configured cost.
pub(crate) fn master_password_hash(config: &Config, password: &SecretBytes) -> Result<String> {
    let pw = names::password_field(password.as_bytes()).map_err(|e| Error::Usage(e.to_string()))?;
    if pw.len() > crypto::BCRYPT_MAX {
        return Err(Error::Usage(format!(
            "password longer than {} bytes (bcrypt would ignore the rest)",
            crypto::BCRYPT_MAX
        )));
    }
    crypto::bcrypt_hash(&HashCounter::default(), pw, config.bcrypt_cost).map_err(Error::Usage)
}

/// An app password's label: 1-100 printable characters, trimmed.
pub(crate) fn app_password_label(label: &str) -> Result<&str> {
    let label = label.trim();
    if label.is_empty() || label.len() > 100 || label.chars().any(char::is_control) {
        return Err(Error::Usage(
            "label must be 1-100 printable characters".into(),
        ));
    }
    Ok(label)
}

/// `count` new one-time codes (1 to 100), each as (canonical, shown).
pub(crate) fn new_codes(count: usize) -> Result<Vec<(SecretBytes, SecretBytes)>> {
    if !(1..=100).contains(&count) {
        return Err(Error::Usage("--count must be 1 to 100".into()));
    }
    (0..count)
        .map(|_| crypto::new_one_time_code().map_err(Error::Storage))
        .collect()
}

/// A service name as the engine compares it (aliases applied).
pub(crate) fn service_name(config: &Config, service: &str) -> Result<String> {
    names::service_name(service, &config.service_aliases).map_err(|e| Error::Usage(e.to_string()))
}

/// A plan name: letters, digits, `-`, `_`, `.`; trimmed.
pub(crate) fn plan_name(plan: &str) -> Result<&str> {
    let plan = plan.trim();
    if plan.is_empty()
        || !plan
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(Error::Usage(format!("bad plan name {plan:?}")));
    }
    Ok(plan)
}

/// A login alias as stored: the account-name rules (one namespace with them).
pub(crate) fn alias_name(alias: &str) -> Result<String> {
    names::account_name(alias).map_err(|e| Error::Usage(format!("{e}: {alias:?}")))
}

/// A block-list entry as stored: `ADDRESS/LEN` with the host bits cleared.
pub(crate) fn block_network(text: &str) -> Result<String> {
    let network = names::Network::parse(text).map_err(Error::Usage)?;
    Ok(network.masked().to_string())
}

/// The namespace triggers' refusals (an alias named like an account, an
/// account named like an alias; possibly from a concurrent writer the Rust
/// check could not see) as the clear error they are; any other error as is.
pub(crate) fn namespace_clash(e: Error, name: &str) -> Error {
    let text = e.to_string();
    if text.contains("saslgate: an account has this name") {
        Error::Exists(format!(
            "{name} is an account's name (an alias cannot shadow it)"
        ))
    } else if text.contains("saslgate: an alias has this name") {
        Error::Exists(format!(
            "{name} is a login alias (remove it with `saslgate alias remove {name}` first)"
        ))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_a_usage_error() {
        assert!(matches!(app_password_label("  "), Err(Error::Usage(_))));
        assert!(matches!(
            app_password_label("a\u{7}b"),
            Err(Error::Usage(_))
        ));
        assert_eq!(app_password_label(" phone ").unwrap(), "phone");
        assert!(matches!(new_codes(0), Err(Error::Usage(_))));
        assert!(matches!(new_codes(101), Err(Error::Usage(_))));
        assert_eq!(new_codes(3).unwrap().len(), 3);
        assert!(matches!(plan_name("a b"), Err(Error::Usage(_))));
        assert_eq!(plan_name(" mail-1 ").unwrap(), "mail-1");
        let long = SecretBytes::from_slice(&[b'x'; 100]);
        assert!(matches!(
            master_password_hash(&Config::default(), &long),
            Err(Error::Usage(_))
        ));
    }
}
