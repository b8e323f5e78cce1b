//! Drives the plugin's PLAIN and LOGIN mechanisms through the C entry points the
//! way libsasl2 does, with the project's fake libsasl2
//! (`saslgate_testkit::fake_sasl`): getopt hands out the fixture's config, the
//! stock checkpass accepts nobody, canon_user copies the identities.

use super::{fixture, Fixture, ALICE_PW, BOB_PW};
use saslgate::ffi::sys;
use saslgate_testkit::fake_sasl::{exchange, reset_fake, with_fake, Conn, Plugs, LOGIN, PLAIN};
use std::sync::OnceLock;

thread_local! {
    /// The mechanism plugs, initialised once per thread (as libsasl2 does once
    /// per process).
    static PLUGS: Plugs = Plugs::init();
}

fn config_path(f: &Fixture) -> String {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = f.config.db.with_file_name("plugin.conf");
        let text = format!(
            "db = \"{}\"\nbcrypt_cost = 4\n[throttle]\naddress_failures = 40\n\
             address_window = \"10s\"\naddress_block = \"2s\"\n\
             account_address_failures = 20\naccount_address_window = \"10s\"\n\
             account_address_block = \"2s\"\nslowdown_failures = 1000000\n",
            f.config.db.display()
        );
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    })
    .clone()
}

/// First byte: bit 0 LOGIN (else PLAIN), bit 1 the stock path (no saslgate
/// config), bits 2-3 the service, bit 4 a server realm, bit 5 no client address;
/// the rest: up to four client responses separated by 0xff.
pub fn check_mech(data: &[u8]) {
    let f = fixture();
    let (flags, rest) = data.split_first().map_or((0, data), |(a, b)| (*a, b));
    let login_mech = flags & 1 != 0;
    let stock = flags & 2 != 0;
    let service = ["imap", "smtp", "pop3", ""][usize::from((flags >> 2) & 3)];
    let steps: Vec<Vec<u8>> = rest
        .split(|&b| b == 0xff)
        .take(4)
        .map(|p| super::expand(f, p))
        .collect();

    let config = config_path(f);
    let options = [("saslgate_config", config.as_str())];
    reset_fake(if stock { &[] } else { &options });
    with_fake(|fake| fake.stock_accounts.clear());
    let mut conn = Conn::new(service);
    if flags & 0x10 != 0 {
        conn = conn.with_realm("example.org");
    }
    if flags & 0x20 != 0 {
        conn = conn.without_remote();
    }
    let inputs: Vec<&[u8]> = steps.iter().map(|s| s.as_slice()).collect();
    let mech = if login_mech { LOGIN } else { PLAIN };
    let outcome = PLUGS.with(|plugs| exchange(plugs, &mut conn, mech, &inputs, true));
    for p in &outcome.prompts {
        assert!(
            p == "Username:" || p == "Password:",
            "unexpected server challenge"
        );
    }
    let rc = outcome.rc;
    // The inputs the exchange consumed.
    let sent = &inputs[..outcome.rcs.len()];
    if std::env::var_os("FUZZKIT_VERBOSE").is_some() {
        eprintln!("mech login={login_mech} stock={stock} service={service:?} -> rc {rc}");
    }
    if rc == sys::SASL_OK {
        assert!(
            !stock,
            "stock path accepted although checkpass always refuses"
        );
        let authid = outcome.authid.clone();
        let password: &[u8] = if login_mech {
            // The password is the last input the exchange consumed.
            sent.last().copied().unwrap_or_default()
        } else {
            let msg = sent.last().copied().unwrap_or_default();
            saslgate::ffi::plugin::parse_plain(msg)
                .expect("accepted PLAIN message")
                .2
        };
        let canon_service =
            saslgate::names::service_name(service, &f.config.service_aliases).unwrap_or_default();
        let app =
            saslgate::crypto::canonical_generated(password, saslgate::crypto::APP_PASSWORD_LEN);
        let is_app = |s: &saslgate::SecretBytes| {
            let k = saslgate::crypto::canonical_generated(
                s.as_bytes(),
                saslgate::crypto::APP_PASSWORD_LEN,
            );
            matches!((&app, k), (Some(a), Some(k)) if a.as_bytes() == k.as_bytes())
        };
        let ok = match authid.as_slice() {
            b"alice" => {
                password == ALICE_PW
                    || (is_app(&f.app_imap) && canon_service == "imap")
                    || (is_app(&f.app_restricted) && canon_service == "smtp")
            }
            b"bob" => password.starts_with(BOB_PW) && password.len() > BOB_PW.len(),
            b"dave@example.org" => password == b"dave pw",
            b"eve" => password == b"eve pw" && canon_service == "smtp",
            _ => false,
        };
        assert!(
            ok,
            "plugin accepted {:?} with a password that is not theirs",
            String::from_utf8_lossy(&authid)
        );
    }
}
