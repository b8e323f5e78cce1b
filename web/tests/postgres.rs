//! saslgate-web on PostgreSQL with its own role (`saslgate init
//! --web-role`): the pages' work end to end as that role, two hosts sharing
//! one database's sessions, and what a thief of the role can and cannot do
//! (SECURITY.md, "PostgreSQL roles": each line of the web role's entry is
//! tried here). pages.rs and protections.rs run their tests on PostgreSQL
//! as the web role too.

mod common;
use common::*;
use saslgate::store::open_admin;
use saslgate::Gate;
use saslgate_testkit::{on_postgresql, req, Fixture};
use std::process::Command;

const BOB: &str = "bob@example.org";
const BACKEND: &str = "127.0.0.1:10143";

fn create(host: &Host, b: &Browser, label: &str) -> Resp {
    host.post(
        "/apps/new",
        b,
        &[("csrf", &b.csrf), ("label", label), ("expires", "never")],
    )
}

/// Runs SQL as `role` through psql on the cluster's socket; Err is psql's
/// message.
fn psql_as(fx: &Fixture, role: &str, sql: &str) -> Result<String, String> {
    let cluster = fx.pg.as_ref().expect("on PostgreSQL");
    let out = Command::new(cluster.program("psql"))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(fx.pg_url_as(role))
        .args(["-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn web_role_signs_in_creates_and_revokes_app_passwords() {
    on_postgresql(signs_in_creates_and_revokes);
}

fn signs_in_creates_and_revokes() {
    let web = Web::start();
    assert!(web.fx.pg.is_some(), "on PostgreSQL");
    let b = web.alice();
    // The database has the keyed hash of the token only.
    let token = b.session().unwrap();
    let stored = web.sql("SELECT encode(token_hash, 'hex') FROM web_sessions");
    let keyed = web
        .fx
        .admin()
        .fingerprint(&[b"web-session", token.as_bytes()]);
    assert_eq!(stored, hex(&keyed));
    assert!(!web.sql("SELECT * FROM web_sessions").contains(token));

    let r = create(&web, &b, "phone");
    assert_eq!(r.status, 200, "{}", r.body);
    let shown = r.by_id("secret").expect("the new password on the page");
    let typed: String = shown.chars().filter(|c| !c.is_whitespace()).collect();
    let mail_host = web.fx.gate();
    assert!(mail_host.decide(&req(ALICE, &shown, "imap")).is_accepted());
    mail_host.flush();
    let everything = web.sql(
        "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM app_passwords) t;
         SELECT string_agg(t::text, ' ') FROM (SELECT * FROM audit) t;
         SELECT string_agg(t::text, ' ') FROM (SELECT * FROM web_sessions) t",
    );
    assert!(!everything.to_lowercase().contains(&typed.to_lowercase()));
    // Its last use is on the list (the web role reads the audit).
    let list = web.get("/apps", &b);
    assert_eq!(list.status, 200);
    assert!(list.body.contains("phone") && list.body.contains("imap"));

    let id = web.sql("SELECT id FROM app_passwords");
    let r = web.post("/apps/revoke", &b, &[("csrf", &b.csrf), ("id", &id)]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("revoked"));
    assert_eq!(
        web.sql("SELECT count(*) FROM app_passwords WHERE revoked IS NOT NULL"),
        "1"
    );
    assert!(!mail_host.decide(&req(ALICE, &shown, "imap")).is_accepted());
    // Signed out: the row is gone.
    let r = web.post("/signout", &b, &[("csrf", &b.csrf)]);
    assert!(r.body.contains("You are signed out"), "{}", r.body);
    assert_eq!(web.sql("SELECT count(*) FROM web_sessions"), "0");
}

#[test]
fn a_session_on_host_a_is_honoured_on_host_b() {
    on_postgresql(session_on_two_hosts);
}

fn session_on_two_hosts() {
    let web = Web::start();
    // Host B: another saslgate-web on the same database, its own role grant
    // run again (idempotent).
    let host_b = Host::serve(web_config(&web.fx));
    let b = web.alice();
    let r = host_b.get("/apps", &b);
    assert_eq!(r.status, 200, "signed in on A, known on B");
    assert_eq!(
        r.csrf().as_deref(),
        Some(b.csrf.as_str()),
        "same form token"
    );
    assert_eq!(create(&host_b, &b, "made on B").status, 200);
    assert_eq!(web.app_count(), 1);
    assert!(web.get("/apps", &b).body.contains("made on B"));
    // Signed out on B: A no longer knows the session.
    let r = host_b.post("/signout", &b, &[("csrf", &b.csrf)]);
    assert!(r.body.contains("You are signed out"), "{}", r.body);
    assert_eq!(web.get("/apps", &b).status, 303);
    assert_eq!(create(&web, &b, "late").status, 401);
    assert_eq!(web.app_count(), 1);
}

/// Collects what was not refused with "permission denied".
fn refused<T>(wrong: &mut Vec<String>, what: &str, r: Result<T, String>) {
    match r {
        Ok(_) => wrong.push(format!("{what}: allowed")),
        Err(e) if !e.contains("permission denied") => wrong.push(format!("{what}: {e}")),
        Err(_) => {}
    }
}

/// SECURITY.md, the web role's "cannot" lines: through saslgate's own
/// calls with the web role's configuration, and by SQL as that role.
#[test]
fn web_role_is_refused_plans_overrides_blocks_the_key_and_tickets() {
    on_postgresql(web_role_refusals);
}

fn web_role_refusals() {
    let web = Web::start();
    web.fx.user(BOB, "bob password");
    web.fx
        .admin()
        .set_plan_services("other", &["imap".to_string()])
        .unwrap();
    let as_web = web_config(&web.fx);
    let mut s = open_admin(&as_web).unwrap();
    let mut wrong = Vec::new();
    let e = |r: saslgate::Result<()>| r.map_err(|e| e.to_string());
    refused(&mut wrong, "set_plan", e(s.set_plan(BOB, "other")));
    refused(
        &mut wrong,
        "set_plan_services",
        e(s.set_plan_services("default", &["imap".to_string()])),
    );
    refused(
        &mut wrong,
        "set_service_override",
        e(s.set_service_override(BOB, "imap", Some(false))),
    );
    refused(
        &mut wrong,
        "add_alias",
        e(s.add_alias(BOB, "robert@example.org").map(|_| ())),
    );
    refused(
        &mut wrong,
        "add_block",
        e(s.add_block("192.0.2.0/24", None).map(|_| ())),
    );
    refused(&mut wrong, "set_disabled", e(s.set_disabled(BOB, true)));
    refused(&mut wrong, "delete_account", e(s.delete_account(BOB)));
    refused(
        &mut wrong,
        "add_account",
        e(s.add_account("mallory@example.org", "default").map(|_| ())),
    );
    refused(
        &mut wrong,
        "set_account_backend",
        e(s.set_account_backend(BOB, "imap", Some(BACKEND))
            .map(|_| ())),
    );
    refused(
        &mut wrong,
        "hold_backend",
        e(s.hold_backend(BACKEND).map(|_| ())),
    );
    let gate = Gate::open(as_web.clone()).unwrap();
    refused(
        &mut wrong,
        "issue_ticket",
        gate.issue_ticket(BOB, "imap", BACKEND.parse().unwrap())
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    let lookup = hex(&web
        .fx
        .admin()
        .ticket_lookup(b"sgt.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA1"));
    for (what, sql) in [
        (
            "meta: the key",
            "UPDATE meta SET value = '\\x00'::bytea WHERE key = 'hmac_key'".to_string(),
        ),
        (
            "meta: insert",
            "INSERT INTO meta (key, value) VALUES ('x', '\\x00'::bytea)".into(),
        ),
        (
            "saslgate_meta",
            "UPDATE saslgate_meta SET value = 1 WHERE key = 'generation'".into(),
        ),
        ("plans", "UPDATE plans SET services = '*'".into()),
        (
            "overrides",
            format!(
                "INSERT INTO service_overrides (account_id, service, allow)
             SELECT id, 'smtp', true FROM accounts WHERE name = '{BOB}'"
            ),
        ),
        (
            "aliases",
            format!(
                "INSERT INTO aliases (alias, account_id, created)
             SELECT 'bobby', id, 0 FROM accounts WHERE name = '{BOB}'"
            ),
        ),
        ("blocks", "DELETE FROM blocks".into()),
        ("backends", "DELETE FROM account_backends".into()),
        (
            "holds",
            "INSERT INTO backend_holds (backend, since) VALUES ('127.0.0.1:1', 0)".into(),
        ),
        (
            "accounts: plan",
            format!("UPDATE accounts SET plan = 'other' WHERE name = '{BOB}'"),
        ),
        (
            "accounts: disabled",
            format!("UPDATE accounts SET disabled = false WHERE name = '{BOB}'"),
        ),
        (
            "accounts: name",
            format!("UPDATE accounts SET name = 'x' WHERE name = '{BOB}'"),
        ),
        (
            "accounts: delete",
            format!("DELETE FROM accounts WHERE name = '{BOB}'"),
        ),
        (
            "app_passwords: services",
            "UPDATE app_passwords SET services = ''".into(),
        ),
        (
            "app_passwords: expires",
            "UPDATE app_passwords SET expires = NULL".into(),
        ),
        ("app_passwords: delete", "DELETE FROM app_passwords".into()),
        ("audit: delete", "DELETE FROM audit".into()),
        (
            "audit: update",
            "UPDATE audit SET outcome = 'accepted'".into(),
        ),
        (
            "web_sessions: move",
            "UPDATE web_sessions SET account_id = 1".into(),
        ),
        (
            "tickets: insert",
            format!(
                "INSERT INTO proxy_tickets (lookup, account_id, service, backend, expires)
             SELECT '\\x{lookup}'::bytea, id, 'imap', '{BACKEND}', 0 FROM accounts
             WHERE name = '{BOB}'"
            ),
        ),
        (
            "tickets: function",
            format!(
                "SELECT saslgate_issue_ticket('\\x{lookup}'::bytea, '{BOB}', 'imap', '{BACKEND}',
                 floor(extract(epoch FROM now()))::bigint + 60)"
            ),
        ),
    ] {
        refused(&mut wrong, what, psql_as(&web.fx, WEB_ROLE, &sql));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(web.sql("SELECT count(*) FROM proxy_tickets"), "0");
    assert_eq!(
        web.sql(&format!(
            "SELECT plan || disabled::text FROM accounts WHERE name = '{BOB}'"
        )),
        "defaultfalse"
    );
}

/// SECURITY.md, the web role's "can" lines, as they are: the database
/// cannot check a password (bcrypt, TOTP), so the role's writes are not
/// tied to a signed-in account. A thief of the role can give any account a
/// session, an app password, a master password, two-step settings, and
/// read every account's audit; a revoked app password stays revoked and a
/// used code stays used.
#[test]
fn web_role_thief_can_change_any_accounts_credentials_but_not_bring_back_revoked_ones() {
    on_postgresql(web_role_thief);
}

fn web_role_thief() {
    let web = Web::start();
    web.fx.user(BOB, "bob password");
    let bob = format!("(SELECT id FROM accounts WHERE name = '{BOB}')");
    let q = |sql: &str| psql_as(&web.fx, WEB_ROLE, sql);
    // Can: what the pages write, for any account.
    q(&format!(
        "INSERT INTO web_sessions (token_hash, account_id, created, last_seen, reauth_at,
             client_addr, user_agent) VALUES ('\\x01'::bytea, {bob}, 0, 0, 0, '', '')"
    ))
    .unwrap();
    // An app password of the thief's making: the role reads the key, so
    // it can compute the row's lookup, and bob's mail takes the password.
    let as_web = saslgate::store::open_login(&web_config(&web.fx)).unwrap();
    let bob_id: i64 = web
        .sql(&format!("SELECT id FROM accounts WHERE name = '{BOB}'"))
        .parse()
        .unwrap();
    let (canonical, shown) = saslgate::crypto::new_app_password().unwrap();
    let lookup = hex(&as_web.app_lookup(bob_id, canonical.as_bytes()));
    q(&format!(
        "INSERT INTO app_passwords (account_id, label, lookup, services, created)
         VALUES ({bob}, 'planted', '\\x{lookup}'::bytea, '', 0)"
    ))
    .unwrap();
    let shown = String::from_utf8(shown.as_bytes().to_vec()).unwrap();
    assert!(web
        .fx
        .gate()
        .decide(&req(BOB, &shown, "imap"))
        .is_accepted());
    q(&format!(
        "UPDATE accounts SET password_hash = 'x', password_changed = 0 WHERE id = {bob}"
    ))
    .unwrap();
    q(&format!(
        "UPDATE accounts SET totp_secret = NULL WHERE id = {bob}"
    ))
    .unwrap();
    q(&format!(
        "DELETE FROM one_time_codes WHERE account_id = {bob};
         INSERT INTO one_time_codes (account_id, lookup, created) VALUES ({bob}, '\\x03'::bytea, 0)"
    ))
    .unwrap();
    q("SELECT count(*) FROM audit").unwrap();
    q("SELECT client_addr, user_agent FROM web_sessions").unwrap();
    // End anyone's sessions (deny service).
    q("DELETE FROM web_sessions WHERE token_hash = '\\x01'::bytea").unwrap();
    // Cannot: bring a revoked app password back, or a used code.
    q("UPDATE app_passwords SET revoked = 1 WHERE label = 'planted'").unwrap();
    let e = q("UPDATE app_passwords SET revoked = NULL").unwrap_err();
    assert!(e.contains("only moves forward"), "{e}");
    q("UPDATE one_time_codes SET used = 1").unwrap();
    let e = q("UPDATE one_time_codes SET used = NULL").unwrap_err();
    assert!(e.contains("only moves forward"), "{e}");
}

/// The login role has no access to the sessions, and a web role granted
/// the login role's privileges instead (re-granting revokes first) loses
/// them: a running saslgate-web then answers "unavailable", never a page,
/// and one starting as either role refuses to start.
#[test]
fn a_web_role_made_a_login_role_loses_the_sessions() {
    on_postgresql(web_role_made_login_role);
}

fn web_role_made_login_role() {
    let web = Web::start();
    let host_b = Host::serve(web_config(&web.fx));
    let b = web.alice();
    assert_eq!(host_b.get("/apps", &b).status, 200);
    // The login role has no access to the sessions.
    let admin = saslgate::store::pg::PgStore::open(&web.fx.config).unwrap();
    use saslgate::store::pg::schema::RoleKind;
    grant_role(&admin, "sg_login", RoleKind::Login);
    let e = psql_as(&web.fx, "sg_login", "SELECT count(*) FROM web_sessions").unwrap_err();
    assert!(e.contains("permission denied"), "{e}");
    // A web role made a login role loses the web privileges.
    grant_role(&admin, WEB_ROLE, RoleKind::Login);
    let e = psql_as(&web.fx, WEB_ROLE, "SELECT count(*) FROM web_sessions").unwrap_err();
    assert!(e.contains("permission denied"), "{e}");
    assert_eq!(host_b.get("/apps", &b).status, 503, "fails closed");
    // Nor does saslgate-web start as that role, or as the login role.
    for role in [WEB_ROLE, "sg_login"] {
        let mut config = web.fx.config.clone();
        config.db = web.fx.pg_url_as(role).into();
        match Host::try_serve(config) {
            Ok(_) => panic!("saslgate-web started as {role}"),
            Err(e) => assert!(e.to_string().contains("--web-role"), "{e}"),
        }
    }
}

/// The program itself (`saslgate-web --config --listen`) on PostgreSQL as
/// the web role: signs alice in over its UNIX socket, and on SIGTERM exits
/// 0 (its stores' own runtimes are dropped outside the server's runtime;
/// inside it, tokio panicked at every shutdown).
#[test]
fn the_program_serves_as_the_web_role_and_stops_cleanly() {
    on_postgresql(program_on_postgresql);
}

fn ask(path: &std::path::Path, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn program_on_postgresql() {
    use std::time::{Duration, Instant};
    let fx = Fixture::new();
    fx.user(ALICE, ALICE_PW);
    let config = web_config(&fx);
    let conf = fx.path("web.conf");
    std::fs::write(
        &conf,
        format!("db = {:?}\nbcrypt_cost = 4\n", config.db.to_str().unwrap()),
    )
    .unwrap();
    let sock = fx.path("web.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_saslgate-web"))
        .arg("--config")
        .arg(&conf)
        .arg("--listen")
        .arg(&sock)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("never served: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let page = ask(
        &sock,
        "GET /signin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let pre = page
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let i = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    let body = form(&[
        ("csrf", &page[i..i + 64]),
        ("account", ALICE),
        ("password", ALICE_PW),
    ]);
    let answer = ask(
        &sock,
        &format!(
            "POST /signin HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: {pre}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 303"), "{answer}");
    assert_eq!(fx.sql("SELECT count(*) FROM web_sessions"), "1");
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
