//! The decision flow for one attempt after step 1: the app-password fast path,
//! the full path (steps 2 to 7) and the policy-only check for mechanisms
//! saslgate does not verify itself. [`Attempt`] carries what every step needs
//! (the gate, the normalised input, the time), so the steps take only what is
//! theirs.

use super::credentials::CredentialCheck;
use super::input::{resolve_account, Input, Resolved};
use super::pace::{Entry, Paced};
use super::policy::{policy_denial, policy_rule};
use super::pool::OpenId;
use super::tickets::Binding;
use super::Gate;
use crate::audit;
use crate::crypto::{canonical_generated, APP_PASSWORD_LEN};
use crate::decision::{Credential, Decision, RefuseReason};
use crate::snapshot::AccountView;
use crate::store::types::{AccountRow, AppPasswordRow, AuditRecord, AuditText, LastUse};
use crate::store::LoginStore;
use crate::throttle::{self, Keys};
use compact_str::ToCompactString;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A face's last word on a verified login, asked after the block list, the
/// throttle, the credential check and the account's policy, before anything
/// is used up or recorded: with the connection, its open and the canonical
/// account name; `true` stops the login there (the face answers it, e.g.
/// "wait": the backend is on hold). See [`Gate::decide_routed`].
pub type Stop<'a> = &'a dyn Fn(&dyn LoginStore, OpenId, &str) -> crate::Result<bool>;

/// One attempt in flight.
pub(super) struct Attempt<'a> {
    pub(super) gate: &'a Gate,
    pub(super) input: &'a Input,
    /// The password as typed (possibly followed by a code); empty for a
    /// policy-only check.
    pub(super) password: &'a [u8],
    pub(super) now: i64,
    /// The open of the connection the attempt runs on (set by each run:
    /// a paced login may run twice, on two connections).
    pub(super) open: std::cell::Cell<OpenId>,
    /// The face's stop, if it has one.
    pub(super) stop: Option<Stop<'a>>,
    /// Set when `stop` stopped the login: the canonical account name.
    pub(super) stopped: std::cell::RefCell<Option<String>>,
    pub(super) paced: Paced<'a>,
}

/// Steps 1b and 2, shared by logins and the policy-only check: the account the
/// name resolves to, and the throttle's word before any hashing.
struct Admission {
    account: Option<AccountRow>,
    /// The account's canonical name, else the first candidate (what unknown
    /// names are throttled and audited under).
    name: String,
    /// The login alias the name resolved through, if any.
    alias: Option<String>,
    keys: Keys,
    has_account_rows: bool,
    /// An address with no failure on record (see `throttle::State`).
    clean: bool,
}

impl Attempt<'_> {
    /// The common case in one statement: a valid app password of an account in
    /// the snapshot, allowed for the service, client not throttled. `None` sends
    /// the request down the full path, which decides everything else (every
    /// refusal included) from the database.
    pub(super) fn fast_accept(
        &self,
        store: &mut dyn LoginStore,
    ) -> crate::Result<Option<Decision>> {
        let gate = self.gate;
        let input = self.input;
        if input.tls_missing {
            return Ok(None);
        }
        let Some(canonical) = canonical_generated(self.password, APP_PASSWORD_LEN) else {
            return Ok(None);
        };
        let Some(((open, generation), view)) = gate.snapshot.lookup(&input.candidates) else {
            return Ok(None);
        };
        if open != self.open.get() {
            // Read on another open of the database (before a reopen).
            return Ok(None);
        }
        let lookup = store.app_lookup(view.id, canonical.as_bytes());
        let Some(app) = view.apps.get(&lookup) else {
            return Ok(None);
        };
        let usable = !view.disabled
            && app.revoked.is_none()
            && app.expires.is_none_or(|e| e > self.now)
            && policy_rule(
                &view.plan,
                &input.service,
                view.overrides
                    .get(&input.service)
                    .or_else(|| view.overrides.get("*"))
                    .copied(),
                view.plan_services.as_deref(),
                Some(app),
                &gate.config.restricted_services,
            )
            .is_none();
        if !usable {
            return Ok(None);
        }
        let keys = Keys::new(&view.name, input.addr, &gate.config);
        let (current, throttle) =
            gate.fresh
                .generation_and_throttle(store, self.open.get(), view.id, &keys, self.now)?;
        if current != generation {
            gate.snapshot.forget((open, generation));
            return Ok(None);
        }
        // A blocked client (or a list not held for this generation) is the
        // full path's to refuse.
        if let Some(ip) = input.addr {
            if gate.blocked_in_memory(self.open.get(), generation, ip) != Some(false) {
                return Ok(None);
            }
        }
        let throttle::State::Open {
            has_account_rows, ..
        } = throttle
        else {
            return Ok(None);
        };
        let admitted = Admission {
            account: None,
            name: view.name.clone(),
            alias: None,
            keys,
            has_account_rows,
            clean: false,
        };
        let credential = Credential::AppPassword {
            id: app.id,
            label: app.label.clone(),
        };
        if self.stops(store, &view.name)? {
            return Ok(Some(self.stopped_decision()));
        }
        let used = Some(LastUse::AppPassword(app.id));
        let decision = self.accept(store, admitted, credential, used)?;
        gate.fast_accepts.fetch_add(1, Ordering::Relaxed);
        Ok(Some(decision))
    }

    /// Steps 2 to 7 from the database, inside the caller's read transaction.
    pub(super) fn full_path(&self, store: &mut dyn LoginStore) -> crate::Result<Decision> {
        let gate = self.gate;
        let admitted = match self.admit(store)? {
            Ok(a) => a,
            Err(throttled) => return Ok(throttled),
        };
        let name = &admitted.name;

        // Positive cache (only for accounts without two-step login).
        let cached = match (&gate.cache, &admitted.account) {
            (Some(cache), Some(a)) if !a.two_step() => {
                let fp = cache.fingerprint(name, &self.input.service, self.password);
                let generation = (self.open.get(), store.generation()?);
                Some((fp, generation, cache.get(&fp, generation)))
            }
            _ => None,
        };
        if let Some((_, _, Some((_, credential)))) = &cached {
            gate.cache_hits.fetch_add(1, Ordering::Relaxed);
            if self.stops(store, name)? {
                return Ok(self.stopped_decision());
            }
            return self.accept(store, admitted, credential.clone(), None);
        }

        // 2b. An account over its slow-down budget: one credential at a time,
        // the account's delay between (`pace`).
        if !self.take_turn(name, admitted.clean) {
            return self.refuse_busy(store, name);
        }

        // 3-5. Credentials: at most one slow hash.
        let account = admitted.account.as_ref();
        let binding = Binding {
            service: &self.input.service,
            local: self.input.local,
        };
        let check = gate.check_credential(store, account, &binding, self.password, self.now)?;
        let (credential, app, cacheable, pending) = match check {
            CredentialCheck::Bad { detail } => {
                return self.refuse_credential(store, &admitted, detail)
            }
            CredentialCheck::Good {
                credential,
                app,
                cacheable,
                pending,
            } => (credential, app, cacheable, pending),
        };
        let Some(acct) = &admitted.account else {
            return Err(crate::Error::Storage("credential without account".into()));
        };

        // 6. Account state and policy.
        if let Some(refusal) = self.account_gate(store, acct, name, app.as_ref(), &credential)? {
            return Ok(refusal);
        }

        // The face's word, then what the credential uses up (a waiting
        // login keeps its code for the next try).
        if self.stops(store, name)? {
            return Ok(self.stopped_decision());
        }
        if let Some(pending) = pending {
            if let Some(detail) = gate.use_credential(store, pending, self.password, self.now)? {
                return self.refuse_credential(store, &admitted, detail);
            }
        }

        if app.is_some() {
            self.remember_account(store, acct, admitted.alias.as_deref())?;
        }
        if let (Some(cache), Some((fp, generation, None)), true) = (&gate.cache, cached, cacheable)
        {
            let valid_for = app
                .as_ref()
                .and_then(|a| a.expires)
                .map(|e| Duration::from_secs((e - self.now).max(0) as u64));
            cache.put(fp, generation, name.clone(), credential.clone(), valid_for);
        }
        let used = match &app {
            Some(a) => LastUse::AppPassword(a.id),
            None => LastUse::Account(acct.id),
        };
        self.accept(store, admitted, credential, Some(used))
    }

    /// The policy-only check (the auxprop gate): the same admission and account
    /// gate as a login, without a credential. An unknown account is told as
    /// such here (`NoSuchAccount`): no password is at stake.
    pub(super) fn policy_only(&self, store: &mut dyn LoginStore) -> crate::Result<Decision> {
        let admitted = match self.admit(store)? {
            Ok(a) => a,
            Err(throttled) => return Ok(throttled),
        };
        let credential = Credential::PolicyOnly;
        let Some(acct) = &admitted.account else {
            return self.refuse_now(
                store,
                &admitted.name,
                RefuseReason::NoSuchAccount,
                "unknown account".into(),
                None,
                Some(&credential),
            );
        };
        if let Some(refusal) = self.account_gate(store, acct, &admitted.name, None, &credential)? {
            return Ok(refusal);
        }
        Ok(Decision::Accepted {
            account: admitted.name,
            credential,
        })
    }

    /// Whether `account`'s credential may be verified now (step 2b): not
    /// paced, or its turn taken (before this round, or now).
    fn take_turn(&self, account: &str, clean: bool) -> bool {
        let mut turn = self.paced.turn.borrow_mut();
        if turn.as_ref().is_some_and(|t| t.account() == account) {
            return true;
        }
        match self.gate.pace.try_enter(account) {
            Entry::Free => true,
            Entry::Turn(t) => {
                *turn = Some(t);
                true
            }
            Entry::Busy => {
                *self.paced.busy.borrow_mut() = Some((account.to_string(), clean));
                false
            }
        }
    }

    /// A paced account busy: a temporary refusal without a hash in the last
    /// round; before it, a stand-in (`Gate::decide` waits for the turn).
    fn refuse_busy(&self, store: &mut dyn LoginStore, name: &str) -> crate::Result<Decision> {
        let detail = "account over its failure budget: one password at a time, \
                      another is being checked or its delay is not over"
            .to_string();
        if !self.paced.last_round.get() {
            let (retry_after, delay) = (None, Duration::ZERO);
            let reason = RefuseReason::Throttled;
            return Ok(Decision::Refused {
                reason,
                detail,
                retry_after,
                delay,
            });
        }
        let retry = Some(self.gate.config.slowdown_max_delay);
        self.refuse_now(store, name, RefuseReason::Throttled, detail, retry, None)
    }

    /// Refuses a blocked client address, resolves the account name (the first
    /// candidate that is an account or an alias), refuses a plain connection
    /// to a `tls_required` service, and asks the throttle; all before any
    /// hashing. `Err(decision)`: refused.
    fn admit(&self, store: &mut dyn LoginStore) -> crate::Result<Result<Admission, Decision>> {
        let policy_only = self.password.is_empty().then_some(&Credential::PolicyOnly);
        if let Some(ip) = self.input.addr {
            let generation = store.generation()?;
            if self
                .gate
                .is_blocked(store, self.open.get(), generation, ip)?
            {
                let detail = format!("client address {ip} is on the block list");
                let name = &self.input.candidates[0];
                let refusal = self.refuse_now(
                    store,
                    name,
                    RefuseReason::Blocked,
                    detail,
                    None,
                    policy_only,
                )?;
                return Ok(Err(refusal));
            }
        }
        let Resolved {
            account,
            name,
            alias,
        } = resolve_account(store, &self.input.candidates)?;
        if self.input.tls_missing {
            let detail = format!(
                "{} is tls_required and the connection is not encrypted",
                self.input.service
            );
            let refusal = self.refuse_now(
                store,
                &name,
                RefuseReason::TlsRequired,
                detail,
                None,
                policy_only,
            )?;
            return Ok(Err(refusal));
        }
        let keys = Keys::new(&name, self.input.addr, &self.gate.config);
        match store.throttle_state(&keys, self.now)? {
            throttle::State::Blocked { retry_after } => {
                let detail =
                    format!("client over its failure budget for {retry_after} more seconds");
                let retry = Some(Duration::from_secs(retry_after as u64));
                let refusal = self.refuse_now(
                    store,
                    &name,
                    RefuseReason::Throttled,
                    detail,
                    retry,
                    policy_only,
                )?;
                Ok(Err(refusal))
            }
            throttle::State::Open {
                has_account_rows,
                clean,
            } => Ok(Ok(Admission {
                account,
                name,
                alias,
                keys,
                has_account_rows,
                clean,
            })),
        }
    }

    /// Asks the face's stop (if any) about the verified login of `account`;
    /// `true`: stopped (nothing used up, nothing recorded).
    fn stops(&self, store: &dyn LoginStore, account: &str) -> crate::Result<bool> {
        let Some(stop) = self.stop else {
            return Ok(false);
        };
        let stopped = stop(store, self.open.get(), account)?;
        if stopped {
            *self.stopped.borrow_mut() = Some(account.to_string());
        }
        Ok(stopped)
    }

    /// What a stopped login returns inside the engine: "unavailable" (fail
    /// closed), replaced by `Routed::Stopped` in [`Gate::decide_routed`].
    fn stopped_decision(&self) -> Decision {
        Decision::Unavailable {
            cause: "stopped by the face after verification".into(),
        }
    }

    /// Step 6, shared by logins and the policy-only check: a disabled account,
    /// or a service the policy does not allow for this account and credential.
    fn account_gate(
        &self,
        store: &mut dyn LoginStore,
        acct: &AccountRow,
        name: &str,
        app: Option<&AppPasswordRow>,
        credential: &Credential,
    ) -> crate::Result<Option<Decision>> {
        let (reason, detail) = if acct.disabled {
            (RefuseReason::Disabled, "account disabled".to_string())
        } else if let Some(rule) = policy_denial(store, acct, &self.input.service, app)? {
            (RefuseReason::NotAllowed, rule)
        } else {
            return Ok(None);
        };
        self.refuse_now(store, name, reason, detail, None, Some(credential))
            .map(Some)
    }

    /// A wrong credential: counted against the throttle keys (with its audit
    /// record in the same write), and a suggested delay for slowed-down accounts.
    fn refuse_credential(
        &self,
        store: &mut dyn LoginStore,
        admitted: &Admission,
        detail: String,
    ) -> crate::Result<Decision> {
        let name = &admitted.name;
        let fp = store.fingerprint(&[b"wrong-password", name.as_bytes(), self.password]);
        let record = audit::wants(&self.gate.config.audit_level, false).then(|| {
            let mut r = self.record(name, "refused");
            r.reason = Some(RefuseReason::BadCredentials.name());
            r.detail = Some(detail.clone());
            r
        });
        let recorded = store.record_failure(&admitted.keys, &fp[..16], self.now, record.as_ref());
        self.gate.fresh.wrote(store, &admitted.keys);
        let delay = recorded?;
        let window = self.gate.config.slowdown_window;
        self.gate.pace.refused(name, delay, window);
        Ok(Decision::Refused {
            reason: RefuseReason::BadCredentials,
            detail,
            retry_after: None,
            delay,
        })
    }

    /// After the full path accepted an app password: keeps the account's login
    /// data for the fast path. Runs inside the decision's read transaction, so
    /// the data and the generation belong together.
    fn remember_account(
        &self,
        store: &dyn LoginStore,
        acct: &AccountRow,
        alias: Option<&str>,
    ) -> crate::Result<()> {
        let generation = store.generation()?;
        let not_accounts: Vec<String> = self
            .input
            .candidates
            .iter()
            .take_while(|c| **c != acct.name && Some(c.as_str()) != alias)
            .cloned()
            .collect();
        let view = AccountView {
            id: acct.id,
            name: acct.name.clone(),
            plan: acct.plan.clone(),
            disabled: acct.disabled,
            plan_services: store.plan_services(&acct.plan)?,
            overrides: store.service_overrides(acct.id)?.into_iter().collect(),
            apps: store
                .app_passwords_by_lookup(acct.id)?
                .into_iter()
                .collect(),
        };
        self.gate
            .snapshot
            .remember((self.open.get(), generation), &not_accounts, alias, view);
        Ok(())
    }

    fn record(&self, account: &str, outcome: &'static str) -> AuditRecord {
        AuditRecord {
            ts: self.now,
            account: Some(account.into()),
            service: Some(self.input.service.as_str().into()),
            client_addr: self.input.addr.map(|a| a.to_compact_string()),
            outcome,
            reason: None,
            detail: None,
            credential: None,
        }
    }

    /// Writes a refusal that does not touch the failure counters (throttled,
    /// disabled, not allowed, unknown in a policy check) and builds the decision.
    fn refuse_now(
        &self,
        store: &mut dyn LoginStore,
        account: &str,
        reason: RefuseReason,
        detail: String,
        retry_after: Option<Duration>,
        credential: Option<&Credential>,
    ) -> crate::Result<Decision> {
        let gate = self.gate;
        if audit::wants(&gate.config.audit_level, false) {
            // These refusals cost no hash: their records are rate limited.
            let cheap = matches!(
                reason,
                RefuseReason::Throttled | RefuseReason::Blocked | RefuseReason::TlsRequired
            );
            if !cheap || gate.admit_cheap(reason, self.input.addr, Some(account), self.now) {
                let mut r = self.record(account, "refused");
                r.reason = Some(reason.name());
                r.detail = Some(detail.clone());
                r.credential = credential.map(|c| c.to_compact_string());
                store.write_batch(&[r], &[])?;
            }
            if cheap {
                gate.flush_if_due(store, self.open.get(), self.now)?;
            }
        }
        Ok(Decision::Refused {
            reason,
            detail,
            retry_after,
            delay: Duration::ZERO,
        })
    }

    /// Step 7 for an acceptance: clears the account's failure rows, buffers the
    /// audit record and the last-use stamp.
    fn accept(
        &self,
        store: &mut dyn LoginStore,
        admitted: Admission,
        credential: Credential,
        used: Option<LastUse>,
    ) -> crate::Result<Decision> {
        let gate = self.gate;
        let now = self.now;
        if admitted.has_account_rows {
            let cleared = store.record_success(&admitted.keys);
            gate.fresh.wrote(store, &admitted.keys);
            cleared?;
        }
        let record = audit::wants(&gate.config.audit_level, true).then(|| {
            let mut r = self.record(&admitted.name, "accepted");
            r.credential = Some(credential_text(&credential));
            r
        });
        let (due, waiting, batch_ready) = {
            let mut buf = gate.lock_buffer();
            buf.push(record, used, now);
            let due = buf.due(now, gate.config.flush_interval.as_secs() as i64);
            (due, buf.len(), gate.background_flush && buf.batch_ready())
        };
        if batch_ready {
            gate.announce_batch();
        }
        // With a background flusher the login does not wait for the batch write,
        // unless the flusher's last write failed or it has fallen behind.
        let leave_to_flusher = gate.background_flush
            && !gate.config.flush_interval.is_zero()
            && !gate.flush_failed.load(Ordering::Relaxed)
            && waiting < audit::BACKGROUND_MAX;
        if due && !leave_to_flusher {
            // Fail closed: if the trail cannot be written, this login is not accepted.
            gate.flush_into(store, self.open.get(), now)?;
        }
        Ok(Decision::Accepted {
            account: admitted.name,
            credential,
        })
    }
}

/// The credential as the audit trail shows it (its `Display` text), built
/// without the formatting machinery: it runs for every success.
fn credential_text(credential: &Credential) -> AuditText {
    let Credential::AppPassword { id, label } = credential else {
        return credential.to_compact_string();
    };
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut v = id.unsigned_abs();
    loop {
        start -= 1;
        digits[start] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut out = AuditText::with_capacity(16 + digits.len() - start + label.len());
    out.push_str("app-password ");
    if *id < 0 {
        out.push('-');
    }
    out.extend(digits[start..].iter().map(|&d| char::from(d)));
    out.push_str(" (");
    out.push_str(label);
    out.push(')');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_text_is_the_display_text() {
        for id in [0, 7, 10, 12_345, i64::MAX, -3, i64::MIN] {
            for label in ["", "phone", "a (b) \"c\""] {
                let c = Credential::AppPassword {
                    id,
                    label: label.into(),
                };
                assert_eq!(credential_text(&c), c.to_string());
            }
        }
        assert_eq!(credential_text(&Credential::Master), "master");
    }
}
