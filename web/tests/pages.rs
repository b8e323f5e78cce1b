//! saslgate-web's two-step, sessions and recent-logins pages over HTTP.

mod common;
use common::*;
use saslgate::totp;

fn code(secret: &[u8], at: i64) -> String {
    String::from_utf8(totp::code_at(secret, totp::step_of(at)).to_vec()).unwrap()
}

#[test]
fn totp_enrolment_needs_a_right_code_and_ends_other_sessions() {
    let web = Web::start();
    let b = web.alice();
    let other = web.alice();
    let r = web.post("/two-step/start", &b, &[("csrf", &b.csrf)]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<svg"), "QR code inline");
    let key: String = r.by_id("totp-secret").unwrap().split_whitespace().collect();
    let secret = totp::decode_secret(&key).unwrap();
    let now = saslgate::timefmt::now();
    let confirm = |c: &str| {
        web.post(
            "/two-step/confirm",
            &b,
            &[("csrf", &b.csrf), ("secret", &key), ("code", c)],
        )
    };
    let r = confirm("000000");
    assert_eq!(r.status, 400);
    assert_eq!(
        web.sql("SELECT count(*) FROM accounts WHERE totp_secret IS NULL")
            .trim(),
        "1",
        "still off"
    );
    let r = confirm(&code(&secret, now - 30));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Other sessions ended: 1"));
    assert_eq!(web.get("/apps", &other).status, 303);
    // The secret went into the account only: not the sessions, not the audit.
    let dump = web.sql("SELECT * FROM web_sessions; SELECT * FROM audit;");
    assert!(!dump.contains(&key));
    // Signing in now needs the code (the confirming step is used up).
    let mut again = Browser::default();
    assert_eq!(web.sign_in(&mut again, ALICE, ALICE_PW, "").status, 401);
    assert_eq!(
        web.sign_in(&mut again, ALICE, ALICE_PW, &code(&secret, now))
            .status,
        303
    );
}

#[test]
fn one_time_codes_are_shown_once_and_sign_in() {
    let web = Web::start();
    let b = web.alice();
    let r = web.post("/codes/new", &b, &[("csrf", &b.csrf)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let first = r.between("<li>", "</li>").unwrap();
    assert!(!web.get("/two-step", &b).body.contains(&first));
    let mut again = Browser::default();
    assert_eq!(
        web.sign_in(&mut again, ALICE, ALICE_PW, "").status,
        401,
        "two-step on"
    );
    assert_eq!(web.sign_in(&mut again, ALICE, ALICE_PW, &first).status, 303);
    assert_eq!(
        web.sign_in(&mut again, ALICE, ALICE_PW, &first).status,
        401,
        "used up"
    );
}

#[test]
fn sessions_page_ends_one_or_all_others() {
    let web = Web::start();
    let b = web.alice();
    let two = web.alice();
    let three = web.alice();
    let page = web.get("/sessions", &b);
    assert_eq!(page.body.matches("class=\"end\"").count(), 2);
    let id = web
        .sql("SELECT max(id) FROM web_sessions")
        .trim()
        .to_string();
    let r = web.post("/sessions/end", &b, &[("csrf", &b.csrf), ("id", &id)]);
    assert_eq!(r.status, 200);
    assert_eq!(web.get("/apps", &three).status, 303);
    assert_eq!(web.get("/apps", &two).status, 200);
    let r = web.post("/sessions/end", &b, &[("csrf", &b.csrf), ("id", &id)]);
    assert_eq!(r.status, 400, "ended already");
    let r = web.post("/sessions/end-others", &b, &[("csrf", &b.csrf)]);
    assert!(r.body.contains("Other sessions signed out: 1"));
    assert_eq!(web.get("/apps", &two).status, 303);
    assert_eq!(web.get("/apps", &b).status, 200);
}

#[test]
fn recent_logins_are_the_accounts_own_and_paged() {
    // 30 wrong passwords of one account: past the default budget (5) each
    // would wait out the account's delay (src/engine/pace.rs), minutes of
    // real time for a test of the page.
    let web = Web::with(|c| c.slowdown_failures = 100);
    web.fx.user("bob@example.org", "bob password 1");
    let gate = web.fx.gate();
    for i in 0..30 {
        let pw = format!("wrong {i}");
        gate.decide(&saslgate_testkit::req(ALICE, &pw, "imap"));
    }
    gate.decide(&saslgate_testkit::req("bob@example.org", "x", "imap"));
    let b = web.alice();
    let r = web.get("/logins", &b);
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("bob@example.org") && r.body.contains("older"));
    let before = r.between("/logins?before=", "\"").unwrap();
    let older = web.get(&format!("/logins?before={before}"), &b);
    assert_eq!(
        older.body.matches("<tr>").count() - 1,
        31 - 25,
        "the rest: 30 refusals + 1 sign-in"
    );
}

// The same pages on PostgreSQL, saslgate-web connected as the web role
// (`saslgate init --web-role`; common::web_config).
saslgate_testkit::backends! {
    source: include_str!("pages.rs"),
    on_postgresql: [
        totp_enrolment_needs_a_right_code_and_ends_other_sessions,
        one_time_codes_are_shown_once_and_sign_in,
        sessions_page_ends_one_or_all_others,
        recent_logins_are_the_accounts_own_and_paged,
    ],
    sqlite_only: [],
}
