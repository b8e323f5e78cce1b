//! Fixtures shared by the core integration tests.
#![allow(dead_code)]

use saslgate::secret::SecretBytes;
pub use saslgate::store::{AdminStore, LoginStore, Store};
use saslgate::{Config, Decision, Gate, RefuseReason, Request};
use std::path::PathBuf;
use std::process::Command;

pub const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXP";

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl Fixture {
    /// A fresh database with bcrypt cost 4 (fast tests; the engine's logic does not
    /// depend on the cost).
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            db: dir.path().join("saslgate.db"),
            bcrypt_cost: 4,
            flush_interval: std::time::Duration::ZERO,
            ..Config::default()
        };
        Store::create(&config).unwrap();
        Fixture { dir, config }
    }

    pub fn store(&self) -> Store {
        Store::open(&self.config).unwrap()
    }

    pub fn gate(&self) -> Gate {
        Gate::open(self.config.clone()).unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Account with a master password.
    pub fn user(&self, name: &str, password: &str) {
        let mut s = self.store();
        s.add_account(name, "default").unwrap();
        s.set_master_password(name, &SecretBytes::from_slice(password.as_bytes()), false)
            .unwrap();
    }

    pub fn app_password(
        &self,
        name: &str,
        services: &[&str],
        restricted: bool,
        expires: Option<i64>,
    ) -> String {
        let services: Vec<String> = services.iter().map(|s| s.to_string()).collect();
        let (_, shown) = self
            .store()
            .add_app_password(name, "test", &services, restricted, expires)
            .unwrap();
        String::from_utf8(shown.as_bytes().to_vec()).unwrap()
    }
}

pub fn req<'a>(login: &'a str, password: &'a str, service: &'a str) -> Request<'a> {
    Request {
        login: login.as_bytes(),
        password: password.as_bytes(),
        service: service.as_bytes(),
        realm: None,
        client_addr: None,
    }
}

pub fn refused(d: &Decision) -> Option<RefuseReason> {
    match d {
        Decision::Refused { reason, .. } => Some(*reason),
        _ => None,
    }
}

/// The current TOTP code, from the real `oathtool` (package oathtool).
pub fn oathtool(secret: &str) -> String {
    let out = Command::new("oathtool")
        .args(["--totp", "-b", secret])
        .output()
        .expect("oathtool is required for the TOTP tests (apt-get install oathtool)");
    assert!(out.status.success(), "oathtool failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
