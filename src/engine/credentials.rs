//! Steps 3 to 5: which credential the password is (unknown account, proxy
//! ticket, app password, master password alone or followed by a TOTP or
//! one-time code), at most one slow hash per attempt, and the rehash of weak
//! master hashes.
//!
//! Checking does not use anything up (except a proxy ticket, used up first,
//! see `tickets`): a right password followed by a valid code is `Good` with
//! the code still to use ([`Pending`]); the caller uses it
//! ([`Gate::use_credential`]) only once nothing else stops the login (a face
//! that makes a verified login wait keeps the code for the next try).

use super::tickets::{Binding, TicketCheck};
use super::Gate;
use crate::crypto::{
    bcrypt_verify, bcrypt_verify_padded, canonical_generated, APP_PASSWORD_LEN, CODE_LEN,
};
use crate::decision::Credential;
use crate::store::types::{AccountRow, AppPasswordRow};
use crate::store::LoginStore;
use crate::totp;

/// What checking the credential found.
pub(super) enum CredentialCheck {
    Good {
        credential: Credential,
        app: Option<AppPasswordRow>,
        cacheable: bool,
        /// What accepting it uses up, not used yet.
        pending: Option<Pending>,
    },
    Bad {
        detail: String,
    },
}

/// A verified master password's second step, to use up at acceptance, and
/// the password part (for the rehash of a weak hash, done then too).
pub(super) struct Pending {
    step: SecondStep,
    account_id: i64,
    prefix_len: usize,
    hash: String,
}

enum SecondStep {
    Totp(i64),
    Code(i64),
}

impl Gate {
    /// A bcrypt hash of a random password at the configured cost, so an unknown
    /// account costs the same slow hash as a known one.
    pub(super) fn dummy_verify(
        &self,
        store: &dyn LoginStore,
        password: &[u8],
    ) -> crate::Result<()> {
        store.end_read()?;
        let hash = self.dummy_hash.get_or_init(|| {
            let pw = crate::crypto::random_bytes(16).ok()?;
            crate::crypto::bcrypt_hash(&self.counter, &pw, self.config.bcrypt_cost).ok()
        });
        match hash {
            Some(h) => {
                let _ = bcrypt_verify(&self.counter, password, h);
            }
            // No randomness: still spend the time on a fixed hash of this cost.
            None => {
                let _ = crate::crypto::bcrypt_hash(&self.counter, b"x", self.config.bcrypt_cost);
            }
        }
        Ok(())
    }

    /// bcrypt verify, outside the read transaction (a 50+ ms hash must not pin a
    /// WAL snapshot and hold back checkpoints).
    fn slow_verify(
        &self,
        store: &dyn LoginStore,
        password: &[u8],
        hash: &str,
    ) -> crate::Result<bool> {
        store.end_read()?;
        Ok(bcrypt_verify_padded(
            &self.counter,
            password,
            hash,
            self.config.bcrypt_cost,
        ))
    }

    pub(super) fn check_credential(
        &self,
        store: &mut dyn LoginStore,
        account: Option<&AccountRow>,
        binding: &Binding<'_>,
        password: &[u8],
        now: i64,
    ) -> crate::Result<CredentialCheck> {
        let bad = |detail: &str| {
            Ok(CredentialCheck::Bad {
                detail: detail.to_string(),
            })
        };
        // 4a. Proxy ticket: used up first, even for an unknown account.
        match self.check_ticket(store, account, binding, password, now)? {
            Some(TicketCheck::Good) => {
                return Ok(CredentialCheck::Good {
                    credential: Credential::ProxyTicket,
                    app: None,
                    cacheable: false,
                    pending: None,
                })
            }
            Some(TicketCheck::Bad(detail)) => return Ok(CredentialCheck::Bad { detail }),
            None => {}
        }
        let Some(acct) = account else {
            self.dummy_verify(store, password)?;
            return bad("unknown account");
        };

        // 4. App password: fast keyed hash, O(1) through the index.
        if let Some(canonical) = canonical_generated(password, APP_PASSWORD_LEN) {
            if let Some(app) = store.find_app_password(acct.id, canonical.as_bytes())? {
                let id = app.id;
                if app.revoked.is_some() {
                    self.dummy_verify(store, password)?;
                    return bad(&format!("app password {id} is revoked"));
                }
                if app.expires.is_some_and(|e| e <= now) {
                    self.dummy_verify(store, password)?;
                    return bad(&format!("app password {id} has expired"));
                }
                let credential = Credential::AppPassword {
                    id,
                    label: app.label.clone(),
                };
                return Ok(CredentialCheck::Good {
                    credential,
                    app: Some(app),
                    cacheable: true,
                    pending: None,
                });
            }
        }

        let Some(hash) = acct.password_hash.as_deref() else {
            self.dummy_verify(store, password)?;
            return bad("account has no master password");
        };

        // 5. Master password, alone or followed by a code.
        if !acct.two_step() {
            if !self.slow_verify(store, password, hash)? {
                return bad("wrong password");
            }
            self.upgrade_hash_if_weak(store, acct.id, password, hash);
            return Ok(CredentialCheck::Good {
                credential: Credential::Master,
                app: None,
                cacheable: true,
                pending: None,
            });
        }

        // Two-step: the cheap code check first, then one bcrypt on the prefix.
        match self.find_second_step(store, acct, password, now)? {
            Some((prefix_len, step)) => {
                let prefix = &password[..prefix_len];
                if !self.slow_verify(store, prefix, hash)? {
                    return bad("wrong password (with a valid code)");
                }
                let credential = match step {
                    SecondStep::Totp(_) => Credential::MasterAndTotp,
                    SecondStep::Code(_) => Credential::MasterAndCode,
                };
                Ok(CredentialCheck::Good {
                    credential,
                    app: None,
                    cacheable: false,
                    pending: Some(Pending {
                        step,
                        account_id: acct.id,
                        prefix_len,
                        hash: hash.to_string(),
                    }),
                })
            }
            None => {
                if self.slow_verify(store, password, hash)? {
                    bad("master password without the second step")
                } else {
                    bad("wrong password or code")
                }
            }
        }
    }

    /// Uses up what a `Good` check left pending (the TOTP step or the
    /// one-time code), then rehashes a weak master hash. `Some(detail)`: the
    /// code was used by another login meanwhile (a wrong credential now).
    pub(super) fn use_credential(
        &self,
        store: &dyn LoginStore,
        pending: Pending,
        password: &[u8],
        now: i64,
    ) -> crate::Result<Option<String>> {
        let consumed = match pending.step {
            SecondStep::Totp(s) => store.consume_totp_step(pending.account_id, s)?,
            SecondStep::Code(id) => store.consume_code(id, now)?,
        };
        if !consumed {
            return Ok(Some("code already used".into()));
        }
        let prefix = &password[..pending.prefix_len.min(password.len())];
        self.upgrade_hash_if_weak(store, pending.account_id, prefix, &pending.hash);
        Ok(None)
    }

    /// Looks for a valid TOTP code or unused one-time code at the end of `password`.
    /// Returns the length of the password part and the code found.
    fn find_second_step(
        &self,
        store: &dyn LoginStore,
        acct: &AccountRow,
        password: &[u8],
        now: i64,
    ) -> crate::Result<Option<(usize, SecondStep)>> {
        let n = password.len();
        if let Some(secret) = &acct.totp_secret {
            if n > totp::DIGITS {
                let code = &password[n - totp::DIGITS..];
                if let Some(step) = totp::matching_step(secret.as_bytes(), code, now) {
                    if step > acct.totp_last_step {
                        return Ok(Some((n - totp::DIGITS, SecondStep::Totp(step))));
                    }
                }
            }
        }
        // One-time code, typed with or without its dash.
        for suffix in [CODE_LEN + 1, CODE_LEN] {
            if n <= suffix {
                continue;
            }
            let tail = &password[n - suffix..];
            if suffix == CODE_LEN + 1 && tail[5] != b'-' {
                continue;
            }
            if let Some(c) = canonical_generated(tail, CODE_LEN) {
                if let Some(id) = store.find_unused_code(acct.id, c.as_bytes())? {
                    return Ok(Some((n - suffix, SecondStep::Code(id))));
                }
            }
        }
        Ok(None)
    }

    /// Rehashes a master password made at a lower cost than configured (once, at
    /// the first successful login after the cost was raised). Best effort.
    fn upgrade_hash_if_weak(
        &self,
        store: &dyn LoginStore,
        account_id: i64,
        password: &[u8],
        hash: &str,
    ) {
        let weak = store.may_rehash()
            && crate::crypto::bcrypt_cost_of(hash).is_some_and(|c| c < self.config.bcrypt_cost);
        if weak {
            if let Ok(new) =
                crate::crypto::bcrypt_hash(&self.counter, password, self.config.bcrypt_cost)
            {
                let _ = store.upgrade_hash(account_id, hash, &new);
            }
        }
    }
}
