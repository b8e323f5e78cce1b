//! Versioned migrations. `PRAGMA user_version` holds the schema version; a database
//! with a higher version than [`SCHEMA_VERSION`] is refused, never touched.

use crate::error::{Error, Result};
use rusqlite::Connection;

/// The schema this saslgate writes.
pub const SCHEMA_VERSION: i64 = 6;

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE plans (
        name TEXT PRIMARY KEY,
        services TEXT NOT NULL          -- comma list, '*' = every service
    );
    INSERT INTO plans (name, services) VALUES ('default', '*');
    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        plan TEXT NOT NULL DEFAULT 'default',
        disabled INTEGER NOT NULL DEFAULT 0,
        password_hash TEXT,             -- bcrypt; NULL = no master password
        password_changed INTEGER,
        totp_secret BLOB,               -- NULL = no TOTP
        totp_last_step INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL,
        last_login INTEGER
    );
    CREATE TABLE service_overrides (
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        service TEXT NOT NULL,
        allow INTEGER NOT NULL,
        PRIMARY KEY (account_id, service)
    ) WITHOUT ROWID;
    CREATE TABLE app_passwords (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        lookup BLOB NOT NULL UNIQUE,    -- HMAC(key, account id, password)
        services TEXT NOT NULL,         -- comma list, '' = whatever the account may use
        restricted INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL,
        expires INTEGER,
        revoked INTEGER,
        last_used INTEGER
    );
    CREATE INDEX app_passwords_account ON app_passwords(account_id);
    CREATE TABLE one_time_codes (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        lookup BLOB NOT NULL UNIQUE,    -- HMAC(key, account id, code)
        created INTEGER NOT NULL,
        used INTEGER
    );
    CREATE INDEX one_time_codes_account ON one_time_codes(account_id);
    CREATE TABLE throttle (
        key TEXT PRIMARY KEY,           -- 'a:IP', 'p:ACCOUNT|IP', 's:ACCOUNT'
        failures INTEGER NOT NULL,
        window_start INTEGER NOT NULL,
        blocked_until INTEGER NOT NULL DEFAULT 0,
        last_bad BLOB                   -- fingerprint of the last wrong password
    ) WITHOUT ROWID;
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        account TEXT,
        service TEXT,
        client_addr TEXT,
        outcome TEXT NOT NULL,          -- accepted | refused | unavailable
        reason TEXT,
        detail TEXT,
        credential TEXT
    );
    CREATE INDEX audit_ts ON audit(ts);
    CREATE INDEX audit_account_ts ON audit(account, ts);
    "#,
    // 1 -> 2: any change to the data a login is decided on moves the generation,
    // whoever makes it (the CLI, the plugin's auxprop_store, SQL typed by hand), so
    // the app-password fast path and the positive cache never serve data older
    // than the database. What logins themselves write (last use, TOTP step, used
    // codes, throttle, audit) is left out: it would empty both at every login.
    r#"
    CREATE TRIGGER generation_accounts_insert AFTER INSERT ON accounts
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_accounts_delete AFTER DELETE ON accounts
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_accounts_update
        AFTER UPDATE OF id, name, plan, disabled, password_hash, totp_secret ON accounts
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_apps_insert AFTER INSERT ON app_passwords
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_apps_delete AFTER DELETE ON app_passwords
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_apps_update
        AFTER UPDATE OF id, account_id, label, lookup, services, restricted, expires, revoked
        ON app_passwords
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_overrides_insert AFTER INSERT ON service_overrides
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_overrides_delete AFTER DELETE ON service_overrides
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_overrides_update AFTER UPDATE ON service_overrides
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_plans_insert AFTER INSERT ON plans
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_plans_delete AFTER DELETE ON plans
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_plans_update AFTER UPDATE ON plans
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_key_update AFTER UPDATE ON meta WHEN NEW.key <> 'generation'
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation';
    "#,
    // 2 -> 3: login aliases, the address block list, per-account backends and
    // backend holds (the auth_http face's routing) and proxy tickets. Aliases
    // and account names share one namespace: the triggers refuse an alias that
    // is an account's name and an account named like an alias, whoever writes.
    // Every table but the tickets moves the generation (the engine keeps them
    // in memory per generation); a ticket is login state, like a used code.
    r#"
    CREATE TABLE aliases (
        alias TEXT PRIMARY KEY,         -- a login name that is not an account's
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        created INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX aliases_account ON aliases(account_id);
    CREATE TRIGGER alias_is_not_an_account BEFORE INSERT ON aliases
        WHEN EXISTS (SELECT 1 FROM accounts WHERE name = NEW.alias)
        BEGIN SELECT RAISE(ABORT, 'saslgate: an account has this name'); END;
    CREATE TRIGGER alias_rename_is_not_an_account BEFORE UPDATE OF alias ON aliases
        WHEN EXISTS (SELECT 1 FROM accounts WHERE name = NEW.alias)
        BEGIN SELECT RAISE(ABORT, 'saslgate: an account has this name'); END;
    CREATE TRIGGER account_is_not_an_alias BEFORE INSERT ON accounts
        WHEN EXISTS (SELECT 1 FROM aliases WHERE alias = NEW.name)
        BEGIN SELECT RAISE(ABORT, 'saslgate: an alias has this name'); END;
    CREATE TRIGGER account_rename_is_not_an_alias BEFORE UPDATE OF name ON accounts
        WHEN EXISTS (SELECT 1 FROM aliases WHERE alias = NEW.name)
        BEGIN SELECT RAISE(ABORT, 'saslgate: an alias has this name'); END;
    CREATE TABLE blocks (
        network TEXT PRIMARY KEY,       -- 'ADDRESS/LEN', the network address
        note TEXT,
        created INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE account_backends (
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        protocol TEXT NOT NULL,         -- imap | pop3 | smtp
        backend TEXT NOT NULL,          -- 'IP:PORT' as nginx takes it
        PRIMARY KEY (account_id, protocol)
    ) WITHOUT ROWID;
    CREATE TABLE backend_holds (
        backend TEXT PRIMARY KEY,       -- 'IP:PORT'
        since INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE proxy_tickets (
        lookup BLOB PRIMARY KEY,        -- HMAC(key, ticket): the ticket is never stored
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        service TEXT NOT NULL,
        backend TEXT NOT NULL,          -- 'IP:PORT' the ticket was issued for
        expires INTEGER NOT NULL,
        used INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX proxy_tickets_expires ON proxy_tickets(expires);
    CREATE TRIGGER generation_aliases_insert AFTER INSERT ON aliases
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_aliases_delete AFTER DELETE ON aliases
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_aliases_update AFTER UPDATE ON aliases
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_blocks_insert AFTER INSERT ON blocks
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_blocks_delete AFTER DELETE ON blocks
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_blocks_update AFTER UPDATE ON blocks
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_account_backends_insert AFTER INSERT ON account_backends
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_account_backends_delete AFTER DELETE ON account_backends
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_account_backends_update AFTER UPDATE ON account_backends
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_backend_holds_insert AFTER INSERT ON backend_holds
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_backend_holds_delete AFTER DELETE ON backend_holds
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    CREATE TRIGGER generation_backend_holds_update AFTER UPDATE ON backend_holds
        BEGIN UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation'; END;
    UPDATE meta SET value = (random() & 9223372036854775807) WHERE key = 'generation';
    "#,
    // 3 -> 4: the audit table keeps only its rowid order. Every login inserts
    // an audit row and pruning deletes one, and each index cost a b-tree seek
    // on both: measured, the two indexes were most of a login's SQLite work
    // (issue 15). Ids grow with time, so pruning walks ids; the admin's
    // `saslgate audit` reads newest first by id and stops at its limit.
    r#"
    DROP INDEX audit_ts;
    DROP INDEX audit_account_ts;
    "#,
    // 4 -> 5: a proxy ticket carries the generation it was stored at; the
    // consuming statement uses it only while the generation is the same
    // (round 3, finding 2). Outstanding tickets (seconds old) are dropped:
    // without a generation none could be used.
    r#"
    DELETE FROM proxy_tickets;
    ALTER TABLE proxy_tickets ADD COLUMN generation INTEGER;
    "#,
    // 5 -> 6: saslgate-web's sessions (src/store/web.rs). Only a keyed hash
    // of each token is stored. Session state, like the throttle: no
    // generation trigger.
    r#"
    CREATE TABLE web_sessions (
        id INTEGER PRIMARY KEY,
        token_hash BLOB NOT NULL UNIQUE, -- HMAC(key, 'web-session', token)
        account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
        created INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        reauth_at INTEGER NOT NULL,     -- when the master password was last typed
        client_addr TEXT NOT NULL,
        user_agent TEXT NOT NULL
    );
    CREATE INDEX web_sessions_account ON web_sessions(account_id);
    "#,
];

/// Brings the database to [`SCHEMA_VERSION`], in one transaction per step.
pub fn migrate(conn: &mut Connection, creating: bool) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(Error::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found > 0 {
        // A saslgate database must have our meta table; anything else is foreign.
        let ok: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |r| r.get(0),
        )?;
        if ok == 0 {
            return Err(Error::Storage("not a saslgate database".into()));
        }
    } else if !creating {
        return Err(Error::Storage(
            "not a saslgate database (empty or uninitialised: run `saslgate init`)".into(),
        ));
    } else {
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables > 0 {
            return Err(Error::Storage(
                "not a saslgate database (it has tables but no saslgate schema version)".into(),
            ));
        }
    }
    for version in found..SCHEMA_VERSION {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Re-read inside the write lock: another process may have migrated meanwhile.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now != version {
            continue;
        }
        tx.execute_batch(MIGRATIONS[version as usize])?;
        if version == 0 {
            let key = crate::crypto::random_bytes(32).map_err(Error::Storage)?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('hmac_key', ?1)",
                [key],
            )?;
            tx.execute("INSERT INTO meta (key, value) VALUES ('generation', 1)", [])?;
        }
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
    Ok(())
}
