//! [`Dump`] for the SQLite store: the whole database read in one read
//! transaction, and written in one write transaction (checked before it
//! commits).

use super::dump::{
    AccountBackendDump, AccountDump, AliasDump, AppPasswordDump, AuditDump, BackendHoldDump,
    BlockDump, CodeDump, Dump, DumpCounts, DumpSecret, OverrideDump, PlanDump, ThrottleDump,
};
use super::{LoginStore, Store};
use crate::error::{Error, Result};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, Row};

/// A nullable secret column (TEXT or BLOB) copied straight into a wiping
/// buffer, with no intermediate `String` left behind.
fn secret_column(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<DumpSecret>> {
    Ok(match row.get_ref(index)? {
        ValueRef::Null => None,
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(DumpSecret::new(b.to_vec())),
        other => {
            return Err(rusqlite::Error::InvalidColumnType(
                index,
                "secret".into(),
                other.data_type(),
            ))
        }
    })
}

fn rows<T>(
    conn: &Connection,
    sql: &str,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    Ok(conn
        .prepare(sql)?
        .query_map([], map)?
        .collect::<std::result::Result<_, _>>()?)
}

/// Rows per table as the database holds them now.
fn table_counts(conn: &Connection) -> Result<DumpCounts> {
    let count = |table: &str| -> Result<usize> {
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        Ok(n as usize)
    };
    Ok(DumpCounts {
        plans: count("plans")?,
        accounts: count("accounts")?,
        overrides: count("service_overrides")?,
        app_passwords: count("app_passwords")?,
        codes: count("one_time_codes")?,
        throttle: count("throttle")?,
        audit: count("audit")?,
        aliases: count("aliases")?,
        blocks: count("blocks")?,
        account_backends: count("account_backends")?,
        backend_holds: count("backend_holds")?,
    })
}

fn read_plans(conn: &Connection) -> Result<Vec<PlanDump>> {
    rows(
        conn,
        "SELECT name, services FROM plans ORDER BY name",
        |r| {
            Ok(PlanDump {
                name: r.get(0)?,
                services: r.get(1)?,
            })
        },
    )
}

/// The tables of schema version 3 (plain rows).
fn read_names_and_routes(conn: &Connection, dump: &mut Dump) -> Result<()> {
    dump.aliases = rows(
        conn,
        "SELECT alias, account_id, created FROM aliases ORDER BY alias",
        |r| {
            Ok(AliasDump {
                alias: r.get(0)?,
                account_id: r.get(1)?,
                created: r.get(2)?,
            })
        },
    )?;
    dump.blocks = rows(
        conn,
        "SELECT network, note, created FROM blocks ORDER BY network",
        |r| {
            Ok(BlockDump {
                network: r.get(0)?,
                note: r.get(1)?,
                created: r.get(2)?,
            })
        },
    )?;
    dump.account_backends = rows(
        conn,
        "SELECT account_id, protocol, backend FROM account_backends ORDER BY account_id, protocol",
        |r| {
            Ok(AccountBackendDump {
                account_id: r.get(0)?,
                protocol: r.get(1)?,
                backend: r.get(2)?,
            })
        },
    )?;
    dump.backend_holds = rows(
        conn,
        "SELECT backend, since FROM backend_holds ORDER BY backend",
        |r| {
            Ok(BackendHoldDump {
                backend: r.get(0)?,
                since: r.get(1)?,
            })
        },
    )?;
    Ok(())
}

fn write_names_and_routes(conn: &Connection, dump: &Dump) -> Result<()> {
    let mut insert =
        conn.prepare("INSERT INTO aliases (alias, account_id, created) VALUES (?1, ?2, ?3)")?;
    for a in &dump.aliases {
        insert.execute(params![a.alias, a.account_id, a.created])?;
    }
    let mut insert =
        conn.prepare("INSERT INTO blocks (network, note, created) VALUES (?1, ?2, ?3)")?;
    for b in &dump.blocks {
        insert.execute(params![b.network, b.note, b.created])?;
    }
    let mut insert = conn.prepare(
        "INSERT INTO account_backends (account_id, protocol, backend) VALUES (?1, ?2, ?3)",
    )?;
    for b in &dump.account_backends {
        insert.execute(params![b.account_id, b.protocol, b.backend])?;
    }
    let mut insert = conn.prepare("INSERT INTO backend_holds (backend, since) VALUES (?1, ?2)")?;
    for h in &dump.backend_holds {
        insert.execute(params![h.backend, h.since])?;
    }
    Ok(())
}

fn read_all(conn: &Connection) -> Result<Dump> {
    let mut dump = read_base(conn)?;
    read_names_and_routes(conn, &mut dump)?;
    Ok(dump)
}

fn read_base(conn: &Connection) -> Result<Dump> {
    let hmac_key = conn.query_row("SELECT value FROM meta WHERE key = 'hmac_key'", [], |r| {
        secret_column(r, 0)
    })?;
    let hmac_key = hmac_key.ok_or_else(|| Error::Storage("the database has no key".into()))?;
    Ok(Dump {
        hmac_key,
        plans: read_plans(conn)?,
        accounts: rows(
            conn,
            "SELECT id, name, plan, disabled, password_hash, password_changed, totp_secret,
                    totp_last_step, created, last_login
             FROM accounts ORDER BY id",
            |r| {
                Ok(AccountDump {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    plan: r.get(2)?,
                    disabled: r.get(3)?,
                    password_hash: secret_column(r, 4)?,
                    password_changed: r.get(5)?,
                    totp_secret: secret_column(r, 6)?,
                    totp_last_step: r.get(7)?,
                    created: r.get(8)?,
                    last_login: r.get(9)?,
                })
            },
        )?,
        overrides: rows(
            conn,
            "SELECT account_id, service, allow FROM service_overrides
             ORDER BY account_id, service",
            |r| {
                Ok(OverrideDump {
                    account_id: r.get(0)?,
                    service: r.get(1)?,
                    allow: r.get(2)?,
                })
            },
        )?,
        app_passwords: rows(
            conn,
            "SELECT id, account_id, label, lookup, services, restricted, created, expires,
                    revoked, last_used
             FROM app_passwords ORDER BY id",
            |r| {
                Ok(AppPasswordDump {
                    id: r.get(0)?,
                    account_id: r.get(1)?,
                    label: r.get(2)?,
                    lookup: r.get(3)?,
                    services: r.get(4)?,
                    restricted: r.get(5)?,
                    created: r.get(6)?,
                    expires: r.get(7)?,
                    revoked: r.get(8)?,
                    last_used: r.get(9)?,
                })
            },
        )?,
        codes: rows(
            conn,
            "SELECT id, account_id, lookup, created, used FROM one_time_codes ORDER BY id",
            |r| {
                Ok(CodeDump {
                    id: r.get(0)?,
                    account_id: r.get(1)?,
                    lookup: r.get(2)?,
                    created: r.get(3)?,
                    used: r.get(4)?,
                })
            },
        )?,
        throttle: rows(
            conn,
            "SELECT key, failures, window_start, blocked_until, last_bad FROM throttle
             ORDER BY key",
            |r| {
                Ok(ThrottleDump {
                    key: r.get(0)?,
                    failures: r.get(1)?,
                    window_start: r.get(2)?,
                    blocked_until: r.get(3)?,
                    last_bad: secret_column(r, 4)?,
                })
            },
        )?,
        audit: rows(
            conn,
            "SELECT id, ts, account, service, client_addr, outcome, reason, detail, credential
             FROM audit ORDER BY id",
            |r| {
                Ok(AuditDump {
                    id: r.get(0)?,
                    ts: r.get(1)?,
                    account: r.get(2)?,
                    service: r.get(3)?,
                    client_addr: r.get(4)?,
                    outcome: r.get(5)?,
                    reason: r.get(6)?,
                    detail: r.get(7)?,
                    credential: r.get(8)?,
                })
            },
        )?,
        aliases: Vec::new(),
        blocks: Vec::new(),
        account_backends: Vec::new(),
        backend_holds: Vec::new(),
    })
}

/// Replaces every row of `conn`'s tables by the dump's (inside the caller's
/// transaction).
fn write_all(conn: &Connection, dump: &Dump) -> Result<()> {
    // Children first (foreign keys); the generation triggers fire, harmlessly.
    // Tickets are not copied (src/store/dump.rs): the target's go too.
    conn.execute_batch(
        "DELETE FROM proxy_tickets; DELETE FROM aliases; DELETE FROM account_backends;
         DELETE FROM backend_holds; DELETE FROM blocks;
         DELETE FROM audit; DELETE FROM throttle; DELETE FROM one_time_codes;
         DELETE FROM app_passwords; DELETE FROM service_overrides; DELETE FROM accounts;
         DELETE FROM plans;",
    )?;
    let n = conn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'hmac_key'",
        [dump.hmac_key.as_bytes()],
    )?;
    if n != 1 {
        return Err(Error::Storage("the target database has no key row".into()));
    }
    let mut insert = conn.prepare("INSERT INTO plans (name, services) VALUES (?1, ?2)")?;
    for p in &dump.plans {
        insert.execute(params![p.name, p.services])?;
    }
    let mut insert = conn.prepare(
        "INSERT INTO accounts (id, name, plan, disabled, password_hash, password_changed,
                               totp_secret, totp_last_step, created, last_login)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for a in &dump.accounts {
        let hash = a.password_hash.as_ref().map(|h| h.as_str()).transpose()?;
        insert.execute(params![
            a.id,
            a.name,
            a.plan,
            a.disabled,
            hash,
            a.password_changed,
            a.totp_secret.as_ref().map(|s| s.as_bytes()),
            a.totp_last_step,
            a.created,
            a.last_login
        ])?;
    }
    let mut insert = conn.prepare(
        "INSERT INTO service_overrides (account_id, service, allow) VALUES (?1, ?2, ?3)",
    )?;
    for o in &dump.overrides {
        insert.execute(params![o.account_id, o.service, o.allow])?;
    }
    let mut insert = conn.prepare(
        "INSERT INTO app_passwords (id, account_id, label, lookup, services, restricted,
                                    created, expires, revoked, last_used)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for p in &dump.app_passwords {
        insert.execute(params![
            p.id,
            p.account_id,
            p.label,
            p.lookup,
            p.services,
            p.restricted,
            p.created,
            p.expires,
            p.revoked,
            p.last_used
        ])?;
    }
    let mut insert = conn.prepare(
        "INSERT INTO one_time_codes (id, account_id, lookup, created, used)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for c in &dump.codes {
        insert.execute(params![c.id, c.account_id, c.lookup, c.created, c.used])?;
    }
    let mut insert = conn.prepare(
        "INSERT INTO throttle (key, failures, window_start, blocked_until, last_bad)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for t in &dump.throttle {
        insert.execute(params![
            t.key,
            t.failures,
            t.window_start,
            t.blocked_until,
            t.last_bad.as_ref().map(|s| s.as_bytes())
        ])?;
    }
    let mut insert = conn.prepare(
        "INSERT INTO audit (id, ts, account, service, client_addr, outcome, reason, detail,
                            credential)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for e in &dump.audit {
        insert.execute(params![
            e.id,
            e.ts,
            e.account,
            e.service,
            e.client_addr,
            e.outcome,
            e.reason,
            e.detail,
            e.credential
        ])?;
    }
    write_names_and_routes(conn, dump)?;
    conn.execute(
        "UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'",
        [],
    )?;
    Ok(())
}

impl Store {
    /// [`AdminStore::export_all`](super::AdminStore::export_all) for SQLite: one
    /// read transaction, so a database in use gives a consistent snapshot.
    pub(crate) fn export_sqlite(&self) -> Result<Dump> {
        self.end_read()?;
        self.begin_read()?;
        let dump = read_all(&self.conn);
        let ended = self.end_read();
        let dump = dump?;
        ended?;
        Ok(dump)
    }

    /// [`AdminStore::import_all`](super::AdminStore::import_all) for SQLite.
    pub(crate) fn import_sqlite(&mut self, dump: &Dump, force: bool) -> Result<DumpCounts> {
        let want = dump.counts();
        let counts = self.write(|tx| {
            let found = table_counts(tx)?;
            if !force && !Dump::is_empty_database(&found, &read_plans(tx)?) {
                return Err(Error::Exists(format!(
                    "the target database is in use ({found}); \
                     --force replaces its whole content"
                )));
            }
            write_all(tx, dump)?;
            // Checked before the commit: a short copy never becomes visible.
            let got = table_counts(tx)?;
            if got != want {
                return Err(Error::Storage(format!(
                    "copy check failed: wrote {want}, the target holds {got}; nothing copied"
                )));
            }
            Ok(got)
        })?;
        self.hmac_key = dump.hmac_key.as_bytes().to_vec();
        Ok(counts)
    }
}
