//! [`Dump`] for the PostgreSQL store (`saslgate copy`): the whole database
//! read in one REPEATABLE READ snapshot, and written in one transaction that
//! checks its row counts before it commits.
//!
//! Rows are read in pages (keyset: `WHERE id > $1 ... LIMIT $2`) and written
//! in chunks through `unnest` of parameter arrays: one round trip per page or
//! chunk, each bounded by `db_statement_timeout` like every other statement,
//! so a large audit trail is neither one huge statement nor a round trip per
//! row. Ids are written as they are (the keyed hashes of app
//! passwords and codes include the account id), then the identity sequences
//! are moved past them.

use super::{get, PgStore};
use crate::error::{Error, Result};
use crate::store::dump::{
    AccountBackendDump, AccountDump, AliasDump, AppPasswordDump, AuditDump, BackendHoldDump,
    BlockDump, CodeDump, Dump, DumpCounts, DumpSecret, OverrideDump, PlanDump, ThrottleDump,
};
use tokio_postgres::Row;
use zeroize::Zeroizing;

/// Rows per insert statement.
const CHUNK: usize = 2000;
/// Rows per read: each page is one round trip, bounded like any statement.
const PAGE: i64 = 5000;

const COUNTS: &str = "SELECT (SELECT count(*) FROM plans), (SELECT count(*) FROM accounts),
        (SELECT count(*) FROM service_overrides), (SELECT count(*) FROM app_passwords),
        (SELECT count(*) FROM one_time_codes), (SELECT count(*) FROM throttle),
        (SELECT count(*) FROM audit), (SELECT count(*) FROM aliases),
        (SELECT count(*) FROM blocks), (SELECT count(*) FROM account_backends),
        (SELECT count(*) FROM backend_holds)";

fn counts(s: &PgStore) -> Result<DumpCounts> {
    let row = s.query_one(COUNTS, &[])?;
    let n = |i: usize| -> Result<usize> { Ok(get::<i64>(&row, i)? as usize) };
    Ok(DumpCounts {
        plans: n(0)?,
        accounts: n(1)?,
        overrides: n(2)?,
        app_passwords: n(3)?,
        codes: n(4)?,
        throttle: n(5)?,
        audit: n(6)?,
        aliases: n(7)?,
        blocks: n(8)?,
        account_backends: n(9)?,
        backend_holds: n(10)?,
    })
}

/// Every row of a keyset-paged query: `sql` takes the last key seen as $1 and
/// the page size as $2, and returns the key as column 0.
fn paged<K, T>(
    s: &PgStore,
    sql: &'static str,
    first: K,
    mut map: impl FnMut(&Row) -> Result<T>,
) -> Result<Vec<T>>
where
    K: tokio_postgres::types::ToSql + Sync + for<'a> tokio_postgres::types::FromSql<'a>,
{
    let mut out = Vec::new();
    let mut last = first;
    loop {
        let rows = s.query(sql, &[&last, &PAGE])?;
        for row in &rows {
            out.push(map(row)?);
        }
        match rows.last() {
            Some(row) if rows.len() as i64 == PAGE => last = get(row, 0)?,
            _ => return Ok(out),
        }
    }
}

fn secret(row: &Row, i: usize) -> Result<Option<DumpSecret>> {
    Ok(get::<Option<Vec<u8>>>(row, i)?.map(DumpSecret::new))
}

fn read_plans(s: &PgStore) -> Result<Vec<PlanDump>> {
    s.query(
        "SELECT name, services FROM plans ORDER BY name COLLATE \"C\"",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(PlanDump {
            name: get(r, 0)?,
            services: get(r, 1)?,
        })
    })
    .collect()
}

fn read_all(s: &PgStore) -> Result<Dump> {
    let key = s.query_opt("SELECT value FROM meta WHERE key = 'hmac_key'", &[])?;
    let hmac_key = key
        .map(|r| get::<Vec<u8>>(&r, 0))
        .transpose()?
        .map(DumpSecret::new)
        .ok_or_else(|| Error::Storage("the database has no key".into()))?;
    let accounts = paged(
        s,
        "SELECT id, name, plan, disabled, password_hash, password_changed, totp_secret,
                totp_last_step, created, last_login
         FROM accounts WHERE id > $1 ORDER BY id LIMIT $2",
        i64::MIN,
        |r| {
            Ok(AccountDump {
                id: get(r, 0)?,
                name: get(r, 1)?,
                plan: get(r, 2)?,
                disabled: get(r, 3)?,
                password_hash: get::<Option<String>>(r, 4)?
                    .map(|h| DumpSecret::new(h.into_bytes())),
                password_changed: get(r, 5)?,
                totp_secret: secret(r, 6)?,
                totp_last_step: get(r, 7)?,
                created: get(r, 8)?,
                last_login: get(r, 9)?,
            })
        },
    )?;
    let overrides = s
        .query(
            "SELECT account_id, service, allow FROM service_overrides
             ORDER BY account_id, service COLLATE \"C\"",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(OverrideDump {
                account_id: get(r, 0)?,
                service: get(r, 1)?,
                allow: get(r, 2)?,
            })
        })
        .collect::<Result<_>>()?;
    let app_passwords = paged(
        s,
        "SELECT id, account_id, label, lookup, services, restricted, created, expires,
                revoked, last_used
         FROM app_passwords WHERE id > $1 ORDER BY id LIMIT $2",
        i64::MIN,
        |r| {
            Ok(AppPasswordDump {
                id: get(r, 0)?,
                account_id: get(r, 1)?,
                label: get(r, 2)?,
                lookup: get(r, 3)?,
                services: get(r, 4)?,
                restricted: get(r, 5)?,
                created: get(r, 6)?,
                expires: get(r, 7)?,
                revoked: get(r, 8)?,
                last_used: get(r, 9)?,
            })
        },
    )?;
    let codes = paged(
        s,
        "SELECT id, account_id, lookup, created, used FROM one_time_codes
         WHERE id > $1 ORDER BY id LIMIT $2",
        i64::MIN,
        |r| {
            Ok(CodeDump {
                id: get(r, 0)?,
                account_id: get(r, 1)?,
                lookup: get(r, 2)?,
                created: get(r, 3)?,
                used: get(r, 4)?,
            })
        },
    )?;
    let throttle = paged(
        s,
        "SELECT key, failures, window_start, blocked_until, last_bad FROM throttle
         WHERE key COLLATE \"C\" > $1 ORDER BY key COLLATE \"C\" LIMIT $2",
        String::new(),
        |r| {
            Ok(ThrottleDump {
                key: get(r, 0)?,
                failures: get(r, 1)?,
                window_start: get(r, 2)?,
                blocked_until: get(r, 3)?,
                last_bad: secret(r, 4)?,
            })
        },
    )?;
    let audit = paged(
        s,
        "SELECT id, ts, account, service, client_addr, outcome, reason, detail, credential
         FROM audit WHERE id > $1 ORDER BY id LIMIT $2",
        i64::MIN,
        |r| {
            Ok(AuditDump {
                id: get(r, 0)?,
                ts: get(r, 1)?,
                account: get(r, 2)?,
                service: get(r, 3)?,
                client_addr: get(r, 4)?,
                outcome: get(r, 5)?,
                reason: get(r, 6)?,
                detail: get(r, 7)?,
                credential: get(r, 8)?,
            })
        },
    )?;
    Ok(Dump {
        hmac_key,
        plans: read_plans(s)?,
        accounts,
        overrides,
        app_passwords,
        codes,
        throttle,
        audit,
        aliases: Vec::new(),
        blocks: Vec::new(),
        account_backends: Vec::new(),
        backend_holds: Vec::new(),
    })
}

/// The tables of schema version 2 (plain rows; small, read whole). Text
/// keys in byte order, as SQLite orders them.
fn read_names_and_routes(s: &PgStore, dump: &mut Dump) -> Result<()> {
    dump.aliases = s
        .query(
            "SELECT alias, account_id, created FROM aliases ORDER BY alias COLLATE \"C\"",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(AliasDump {
                alias: get(r, 0)?,
                account_id: get(r, 1)?,
                created: get(r, 2)?,
            })
        })
        .collect::<Result<_>>()?;
    dump.blocks = s
        .query(
            "SELECT network, note, created FROM blocks ORDER BY network COLLATE \"C\"",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(BlockDump {
                network: get(r, 0)?,
                note: get(r, 1)?,
                created: get(r, 2)?,
            })
        })
        .collect::<Result<_>>()?;
    dump.account_backends = s
        .query(
            "SELECT account_id, protocol, backend FROM account_backends
             ORDER BY account_id, protocol COLLATE \"C\"",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(AccountBackendDump {
                account_id: get(r, 0)?,
                protocol: get(r, 1)?,
                backend: get(r, 2)?,
            })
        })
        .collect::<Result<_>>()?;
    dump.backend_holds = s
        .query(
            "SELECT backend, since FROM backend_holds ORDER BY backend COLLATE \"C\"",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(BackendHoldDump {
                backend: get(r, 0)?,
                since: get(r, 1)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(())
}

fn write_names_and_routes(s: &PgStore, dump: &Dump) -> Result<()> {
    for chunk in dump.aliases.chunks(CHUNK) {
        let aliases: Vec<&str> = chunk.iter().map(|a| a.alias.as_str()).collect();
        let accounts: Vec<i64> = chunk.iter().map(|a| a.account_id).collect();
        let created: Vec<i64> = chunk.iter().map(|a| a.created).collect();
        s.execute(
            "INSERT INTO aliases (alias, account_id, created)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])",
            &[&aliases, &accounts, &created],
        )?;
    }
    for chunk in dump.blocks.chunks(CHUNK) {
        let networks: Vec<&str> = chunk.iter().map(|b| b.network.as_str()).collect();
        let notes: Vec<Option<&str>> = chunk.iter().map(|b| b.note.as_deref()).collect();
        let created: Vec<i64> = chunk.iter().map(|b| b.created).collect();
        s.execute(
            "INSERT INTO blocks (network, note, created)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])",
            &[&networks, &notes, &created],
        )?;
    }
    for chunk in dump.account_backends.chunks(CHUNK) {
        let accounts: Vec<i64> = chunk.iter().map(|b| b.account_id).collect();
        let protocols: Vec<&str> = chunk.iter().map(|b| b.protocol.as_str()).collect();
        let backends: Vec<&str> = chunk.iter().map(|b| b.backend.as_str()).collect();
        s.execute(
            "INSERT INTO account_backends (account_id, protocol, backend)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])",
            &[&accounts, &protocols, &backends],
        )?;
    }
    for chunk in dump.backend_holds.chunks(CHUNK) {
        let backends: Vec<&str> = chunk.iter().map(|h| h.backend.as_str()).collect();
        let since: Vec<i64> = chunk.iter().map(|h| h.since).collect();
        s.execute(
            "INSERT INTO backend_holds (backend, since)
             SELECT * FROM unnest($1::text[], $2::bigint[])",
            &[&backends, &since],
        )?;
    }
    Ok(())
}

fn write_accounts(s: &PgStore, rows: &[AccountDump]) -> Result<()> {
    for chunk in rows.chunks(CHUNK) {
        let ids: Vec<i64> = chunk.iter().map(|a| a.id).collect();
        let names: Vec<&str> = chunk.iter().map(|a| a.name.as_str()).collect();
        let plans: Vec<&str> = chunk.iter().map(|a| a.plan.as_str()).collect();
        let disabled: Vec<bool> = chunk.iter().map(|a| a.disabled).collect();
        let hashes: Vec<Option<&str>> = chunk
            .iter()
            .map(|a| a.password_hash.as_ref().map(|h| h.as_str()).transpose())
            .collect::<Result<_>>()?;
        let changed: Vec<Option<i64>> = chunk.iter().map(|a| a.password_changed).collect();
        let secrets: Vec<Option<&[u8]>> = chunk
            .iter()
            .map(|a| a.totp_secret.as_ref().map(|t| t.as_bytes()))
            .collect();
        let steps: Vec<i64> = chunk.iter().map(|a| a.totp_last_step).collect();
        let created: Vec<i64> = chunk.iter().map(|a| a.created).collect();
        let last: Vec<Option<i64>> = chunk.iter().map(|a| a.last_login).collect();
        s.execute(
            "INSERT INTO accounts (id, name, plan, disabled, password_hash, password_changed,
                                   totp_secret, totp_last_step, created, last_login)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::boolean[],
                                  $5::text[], $6::bigint[], $7::bytea[], $8::bigint[],
                                  $9::bigint[], $10::bigint[])",
            &[
                &ids, &names, &plans, &disabled, &hashes, &changed, &secrets, &steps, &created,
                &last,
            ],
        )?;
    }
    Ok(())
}

fn write_app_passwords(s: &PgStore, rows: &[AppPasswordDump]) -> Result<()> {
    for chunk in rows.chunks(CHUNK) {
        let ids: Vec<i64> = chunk.iter().map(|a| a.id).collect();
        let accounts: Vec<i64> = chunk.iter().map(|a| a.account_id).collect();
        let labels: Vec<&str> = chunk.iter().map(|a| a.label.as_str()).collect();
        let lookups: Vec<&[u8]> = chunk.iter().map(|a| a.lookup.as_slice()).collect();
        let services: Vec<&str> = chunk.iter().map(|a| a.services.as_str()).collect();
        let restricted: Vec<bool> = chunk.iter().map(|a| a.restricted).collect();
        let created: Vec<i64> = chunk.iter().map(|a| a.created).collect();
        let expires: Vec<Option<i64>> = chunk.iter().map(|a| a.expires).collect();
        let revoked: Vec<Option<i64>> = chunk.iter().map(|a| a.revoked).collect();
        let used: Vec<Option<i64>> = chunk.iter().map(|a| a.last_used).collect();
        s.execute(
            "INSERT INTO app_passwords (id, account_id, label, lookup, services, restricted,
                                        created, expires, revoked, last_used)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bytea[],
                                  $5::text[], $6::boolean[], $7::bigint[], $8::bigint[],
                                  $9::bigint[], $10::bigint[])",
            &[
                &ids,
                &accounts,
                &labels,
                &lookups,
                &services,
                &restricted,
                &created,
                &expires,
                &revoked,
                &used,
            ],
        )?;
    }
    Ok(())
}

fn write_plans(s: &PgStore, rows: &[PlanDump]) -> Result<()> {
    for chunk in rows.chunks(CHUNK) {
        let names: Vec<&str> = chunk.iter().map(|p| p.name.as_str()).collect();
        let services: Vec<&str> = chunk.iter().map(|p| p.services.as_str()).collect();
        s.execute(
            "INSERT INTO plans (name, services) SELECT * FROM unnest($1::text[], $2::text[])",
            &[&names, &services],
        )?;
    }
    Ok(())
}

/// Overrides, codes and throttle rows (after the accounts they reference).
fn write_account_rows(s: &PgStore, dump: &Dump) -> Result<()> {
    for chunk in dump.overrides.chunks(CHUNK) {
        let accounts: Vec<i64> = chunk.iter().map(|o| o.account_id).collect();
        let services: Vec<&str> = chunk.iter().map(|o| o.service.as_str()).collect();
        let allow: Vec<bool> = chunk.iter().map(|o| o.allow).collect();
        s.execute(
            "INSERT INTO service_overrides (account_id, service, allow)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::boolean[])",
            &[&accounts, &services, &allow],
        )?;
    }
    for chunk in dump.codes.chunks(CHUNK) {
        let ids: Vec<i64> = chunk.iter().map(|c| c.id).collect();
        let accounts: Vec<i64> = chunk.iter().map(|c| c.account_id).collect();
        let lookups: Vec<&[u8]> = chunk.iter().map(|c| c.lookup.as_slice()).collect();
        let created: Vec<i64> = chunk.iter().map(|c| c.created).collect();
        let used: Vec<Option<i64>> = chunk.iter().map(|c| c.used).collect();
        s.execute(
            "INSERT INTO one_time_codes (id, account_id, lookup, created, used)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bigint[],
                                  $5::bigint[])",
            &[&ids, &accounts, &lookups, &created, &used],
        )?;
    }
    for chunk in dump.throttle.chunks(CHUNK) {
        let keys: Vec<&str> = chunk.iter().map(|t| t.key.as_str()).collect();
        let failures: Vec<i64> = chunk.iter().map(|t| t.failures).collect();
        let starts: Vec<i64> = chunk.iter().map(|t| t.window_start).collect();
        let blocked: Vec<i64> = chunk.iter().map(|t| t.blocked_until).collect();
        let last_bad: Vec<Option<&[u8]>> = chunk
            .iter()
            .map(|t| t.last_bad.as_ref().map(|b| b.as_bytes()))
            .collect();
        s.execute(
            "INSERT INTO throttle (key, failures, window_start, blocked_until, last_bad)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[],
                                  $5::bytea[])",
            &[&keys, &failures, &starts, &blocked, &last_bad],
        )?;
    }
    Ok(())
}

fn write_audit(s: &PgStore, rows: &[AuditDump]) -> Result<()> {
    let text = |f: fn(&AuditDump) -> &Option<String>, chunk: &[AuditDump]| -> Vec<Option<String>> {
        chunk.iter().map(|e| f(e).clone()).collect()
    };
    for chunk in rows.chunks(CHUNK) {
        let ids: Vec<i64> = chunk.iter().map(|e| e.id).collect();
        let ts: Vec<i64> = chunk.iter().map(|e| e.ts).collect();
        let outcomes: Vec<&str> = chunk.iter().map(|e| e.outcome.as_str()).collect();
        s.execute(
            "INSERT INTO audit (id, ts, account, service, client_addr, outcome, reason, detail,
                                credential)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[],
                                  $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])",
            &[
                &ids,
                &ts,
                &text(|e| &e.account, chunk),
                &text(|e| &e.service, chunk),
                &text(|e| &e.client_addr, chunk),
                &outcomes,
                &text(|e| &e.reason, chunk),
                &text(|e| &e.detail, chunk),
                &text(|e| &e.credential, chunk),
            ],
        )?;
    }
    Ok(())
}

/// Replaces every row by the dump's (inside the caller's transaction).
fn write_all(s: &PgStore, dump: &Dump) -> Result<()> {
    // Children first (foreign keys); the generation triggers fire, harmlessly.
    // Tickets are not copied (src/store/dump.rs): the target's go too.
    s.batch(
        "DELETE FROM proxy_tickets; DELETE FROM aliases; DELETE FROM account_backends;
         DELETE FROM backend_holds; DELETE FROM blocks;
         DELETE FROM audit; DELETE FROM throttle; DELETE FROM one_time_codes;
         DELETE FROM app_passwords; DELETE FROM service_overrides; DELETE FROM accounts;
         DELETE FROM plans;",
    )?;
    let key = Zeroizing::new(dump.hmac_key.as_bytes().to_vec());
    let n = s.execute(
        "UPDATE meta SET value = $1 WHERE key = 'hmac_key'",
        &[&*key],
    )?;
    if n != 1 {
        return Err(Error::Storage("the target database has no key row".into()));
    }
    write_plans(s, &dump.plans)?;
    write_accounts(s, &dump.accounts)?;
    write_account_rows(s, dump)?;
    write_app_passwords(s, &dump.app_passwords)?;
    write_audit(s, &dump.audit)?;
    write_names_and_routes(s, dump)?;
    // New rows made later (by the CLI, by logins' audit) take ids past the copied ones.
    s.batch(
        "SELECT setval(pg_get_serial_sequence('accounts', 'id'),
                       coalesce((SELECT max(id) FROM accounts), 0) + 1, false);
         SELECT setval(pg_get_serial_sequence('app_passwords', 'id'),
                       coalesce((SELECT max(id) FROM app_passwords), 0) + 1, false);
         SELECT setval(pg_get_serial_sequence('one_time_codes', 'id'),
                       coalesce((SELECT max(id) FROM one_time_codes), 0) + 1, false);
         SELECT setval(pg_get_serial_sequence('audit', 'id'),
                       coalesce((SELECT max(id) FROM audit), 0) + 1, false);",
    )
}

impl PgStore {
    /// [`AdminStore::export_all`](crate::store::AdminStore::export_all): one
    /// REPEATABLE READ snapshot.
    pub(crate) fn export_pg(&self) -> Result<Dump> {
        self.end_read_tx()?;
        self.begin_read_tx()?;
        let dump = read_all(self).and_then(|mut d| {
            read_names_and_routes(self, &mut d)?;
            Ok(d)
        });
        let ended = self.end_read_tx();
        let dump = dump?;
        ended?;
        Ok(dump)
    }

    /// [`AdminStore::import_all`](crate::store::AdminStore::import_all).
    pub(crate) fn import_pg(&mut self, dump: &Dump, force: bool) -> Result<DumpCounts> {
        let want = dump.counts();
        let got = self.write(|s| {
            // Serialise with another copy or an init of the same database.
            s.execute(
                "LOCK TABLE accounts, app_passwords, one_time_codes, meta IN EXCLUSIVE MODE",
                &[],
            )?;
            let found = counts(s)?;
            if !force && !Dump::is_empty_database(&found, &read_plans(s)?) {
                return Err(Error::Exists(format!(
                    "the target database is in use ({found}); \
                     --force replaces its whole content"
                )));
            }
            write_all(s, dump)?;
            let got = counts(s)?;
            if got != want {
                return Err(Error::Storage(format!(
                    "copy check failed: wrote {want}, the target holds {got}; nothing copied"
                )));
            }
            Ok(got)
        })?;
        self.hmac_key = Zeroizing::new(dump.hmac_key.as_bytes().to_vec());
        Ok(got)
    }
}
