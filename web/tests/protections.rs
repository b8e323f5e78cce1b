//! saslgate-web over real HTTP: each test checks one protection of issue 25
//! (doc/web.md lists which ASVS requirement each covers) and fails when the
//! protection is taken out.

mod common;
use common::*;

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn create(web: &Web, b: &Browser, label: &str) -> Resp {
    web.post(
        "/apps/new",
        b,
        &[("csrf", &b.csrf), ("label", label), ("expires", "never")],
    )
}

#[test]
fn security_headers_on_every_page() {
    let web = Web::start();
    let b = web.alice();
    let created = create(&web, &b, "phone");
    assert_eq!(created.status, 200, "{}", created.body);
    for r in [
        web.get("/signin", &Browser::default()),
        web.get("/apps", &b),
        created,
        web.get("/nowhere", &b),
    ] {
        assert_eq!(r.header("content-security-policy"), Some(CSP));
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        // ASVS 5.0 3.4.1: the pages are only ever served over TLS (the
        // session cookie is a __Host- cookie), so every answer pins HTTPS.
        assert_eq!(
            r.header("strict-transport-security"),
            Some("max-age=31536000; includeSubDomains")
        );
        assert!(!r.body.contains("<script"), "no script anywhere");
    }
}

#[test]
fn session_cookie_flags_and_only_a_hash_stored() {
    let web = Web::start();
    let mut b = Browser::default();
    let r = web.sign_in(&mut b, ALICE, ALICE_PW, "");
    assert_eq!(r.status, 303);
    let cookie = r
        .all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("__Host-saslgate="))
        .expect("session cookie")
        .to_string();
    for flag in ["; Path=/", "; Secure", "; HttpOnly", "; SameSite=Strict"] {
        assert!(cookie.contains(flag), "{flag} missing: {cookie}");
    }
    assert!(!cookie.to_ascii_lowercase().contains("domain="), "{cookie}");
    let token = b.session().unwrap().to_string();
    assert_eq!(token.len(), 43, "256 random bits, base64url");
    let stored = web.sql("SELECT hex(token_hash) FROM web_sessions");
    assert_eq!(stored.trim().len(), 64);
    let db = std::fs::read(&web.fx.config.db).unwrap();
    let wal = std::fs::read(web.fx.config.db.with_extension("db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "token stored in the clear"
        );
    }
}

#[test]
fn sign_in_gives_a_new_token() {
    let web = Web::start();
    let mut b = Browser::default();
    web.sign_in(&mut b, ALICE, ALICE_PW, "");
    let first = b.session().unwrap().to_string();
    // Signing in again from the same browser (cookie sent) never keeps it.
    web.sign_in(&mut b, ALICE, ALICE_PW, "");
    assert_ne!(b.session().unwrap(), first);
    // A token planted by someone else before sign-in is not adopted.
    let mut planted = Browser::default();
    planted
        .cookies
        .push(("__Host-saslgate".into(), "A".repeat(43)));
    web.sign_in(&mut planted, ALICE, ALICE_PW, "");
    assert_ne!(planted.session().unwrap(), "A".repeat(43));
}

#[test]
fn a_post_without_the_session_form_token_changes_nothing() {
    let web = Web::start();
    let b = web.alice();
    let other = web.alice();
    for token in ["", "0000", other.csrf.as_str()] {
        let r = web.post(
            "/apps/new",
            &b,
            &[("csrf", token), ("label", "x"), ("expires", "never")],
        );
        assert_eq!(r.status, 403, "token {token:?}: {}", r.body);
    }
    assert_eq!(web.app_count(), 0);
    // The sign-in form has its own token, bound to its cookie.
    let mut fresh = Browser::default();
    let page = web.get("/signin", &fresh);
    fresh.take_cookies(&page);
    let r = web.post(
        "/signin",
        &fresh,
        &[("csrf", "f00"), ("account", ALICE), ("password", ALICE_PW)],
    );
    assert_eq!(r.status, 403);
    assert!(
        fresh.session().is_none()
            && r.all("set-cookie")
                .iter()
                .all(|c| !c.starts_with("__Host-saslgate="))
    );
}

#[test]
fn a_cross_site_post_is_refused_even_with_the_token() {
    let web = Web::start();
    let b = web.alice();
    for site in ["cross-site", "same-site"] {
        let mut h = b.headers();
        h.push(format!("Sec-Fetch-Site: {site}"));
        let body = form(&[("csrf", &b.csrf), ("label", "x"), ("expires", "never")]);
        let r = web.request("POST", "/apps/new", &h, &body);
        assert_eq!(r.status, 403, "{site}");
        assert!(r.body.contains("another site"));
    }
    assert_eq!(web.app_count(), 0);
    assert_eq!(create(&web, &b, "ok").status, 200);
}

#[test]
fn state_never_changes_on_get() {
    let web = Web::start();
    let b = web.alice();
    for path in [
        "/apps/new?label=x&expires=never",
        "/signout?x=1",
        "/sessions/end-others?x=1",
        "/apps/revoke?id=1",
    ] {
        let r = web.get(&format!("{path}&csrf={}", b.csrf), &b);
        assert_eq!(r.status, 405, "{path}");
    }
    assert_eq!(web.app_count(), 0);
    assert_eq!(web.get("/apps", &b).status, 200, "still signed in");
}

#[test]
fn credential_changes_need_the_password_within_the_reauth_window() {
    let web = Web::start();
    let mut b = web.alice();
    assert_eq!(create(&web, &b, "one").status, 200, "just signed in");
    web.advance(4 * 60);
    web.get("/apps", &b); // used: not idle
    web.advance(2 * 60); // 6 minutes after the password was typed
    let r = create(&web, &b, "two");
    assert_eq!(r.status, 403);
    assert!(r.body.contains("Confirm it is you"));
    assert_eq!(web.app_count(), 1, "nothing created");
    // A wrong password does not open the window.
    let r = web.post(
        "/reauth",
        &b,
        &[("csrf", &b.csrf), ("password", "wrong"), ("next", "/apps")],
    );
    assert_eq!(r.status, 401);
    assert_eq!(create(&web, &b, "two").status, 403);
    let r = web.post(
        "/reauth",
        &b,
        &[("csrf", &b.csrf), ("password", ALICE_PW), ("next", "/apps")],
    );
    assert_eq!(r.status, 303);
    b.csrf = web.get("/apps", &b).csrf().unwrap();
    assert_eq!(create(&web, &b, "two").status, 200);
    assert_eq!(web.app_count(), 2);
}

#[test]
fn sessions_end_when_idle_or_too_old() {
    let web = Web::start();
    let b = web.alice();
    web.advance(14 * 60);
    assert_eq!(
        web.get("/apps", &b).status,
        200,
        "14 idle minutes: still on"
    );
    web.advance(16 * 60);
    let r = create(&web, &b, "late");
    assert_eq!(r.status, 401, "idle 16 minutes: ended");
    assert!(r.body.contains("session has ended"));
    assert_eq!(web.app_count(), 0);
    // Absolute: busy all the time, but 12 hours after sign-in it ends.
    let b = web.alice();
    for _ in 0..(12 * 6) {
        web.advance(10 * 60);
        assert_eq!(web.get("/apps", &b).status, 200);
    }
    web.advance(60);
    let r = web.get("/apps", &b);
    assert_eq!(r.status, 401, "12 h 1 min after sign-in");
    assert!(r.body.contains("session has ended"));
    assert_eq!(web.sql("SELECT count(*) FROM web_sessions").trim(), "0");
    // A session nobody comes back to is deleted at the next sign-in.
    let _abandoned = web.alice();
    web.advance(16 * 60);
    let _next = web.alice();
    assert_eq!(web.sql("SELECT count(*) FROM web_sessions").trim(), "1");
}

#[test]
fn a_password_change_ends_the_other_sessions() {
    let web = Web::start();
    let b = web.alice();
    let other = web.alice();
    let new = "a brand new password";
    let r = web.post(
        "/password",
        &b,
        &[
            ("csrf", &b.csrf),
            ("password", ALICE_PW),
            ("new", new),
            ("new2", new),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Other sessions ended: 1"));
    assert_eq!(
        web.get("/apps", &other).status,
        303,
        "the other session is gone"
    );
    assert_eq!(web.get("/apps", &b).status, 200, "this one stays");
    let mut again = Browser::default();
    assert_eq!(web.sign_in(&mut again, ALICE, ALICE_PW, "").status, 401);
    assert_eq!(web.sign_in(&mut again, ALICE, new, "").status, 303);
}

#[test]
fn sign_in_is_throttled_like_mail_logins() {
    let web = Web::with(|c| c.throttle_account_address.failures = 3);
    // Different wrong passwords (the same one again counts once).
    for wrong in ["wrong 1", "wrong 2", "wrong 3", "wrong 4"] {
        let mut b = Browser::default();
        let status = web.sign_in(&mut b, ALICE, wrong, "").status;
        assert!(status == 401 || status == 429);
    }
    let mut b = Browser::default();
    let r = web.sign_in(&mut b, ALICE, ALICE_PW, "");
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(b.session().is_none());
    let audit = web.sql("SELECT count(*) FROM audit WHERE service = 'web' AND outcome = 'refused'");
    assert!(
        audit.trim().parse::<i64>().unwrap() >= 4,
        "refusals audited under service web: {audit}"
    );
}

#[test]
fn an_app_password_cannot_sign_in() {
    let web = Web::start();
    let app = web.fx.app_password(ALICE, &[], false, None);
    let mut b = Browser::default();
    let r = web.sign_in(&mut b, ALICE, &app, "");
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(b.session().is_none());
    assert_eq!(web.sql("SELECT count(*) FROM web_sessions").trim(), "0");
}

#[test]
fn bad_input_gets_a_page_and_changes_nothing() {
    let web = Web::start();
    let b = web.alice();
    let big = "x".repeat(20_000);
    let r = web.post(
        "/apps/new",
        &b,
        &[("csrf", &b.csrf), ("label", &big), ("expires", "never")],
    );
    assert_eq!(r.status, 413);
    assert!(r.body.contains("larger than"));
    let r = web.post(
        "/apps/new",
        &b,
        &[
            ("csrf", &b.csrf),
            ("label", "x"),
            ("service", "gopher"),
            ("expires", "never"),
        ],
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("gopher"));
    let r = web.post(
        "/apps/new",
        &b,
        &[("csrf", &b.csrf), ("label", "x"), ("expires", "forever")],
    );
    assert_eq!(r.status, 400);
    assert_eq!(web.app_count(), 0);
    // A double submit makes one app password.
    assert_eq!(create(&web, &b, "phone").status, 200);
    let r = create(&web, &b, "phone");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("sent twice"));
    assert_eq!(web.app_count(), 1);
    let id = web.sql("SELECT id FROM app_passwords").trim().to_string();
    let revoke = |b: &Browser| web.post("/apps/revoke", b, &[("csrf", &b.csrf), ("id", &id)]);
    assert_eq!(revoke(&b).status, 200);
    let r = revoke(&b);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("revoked already"));
}

#[test]
fn a_stale_form_after_sign_out_is_refused() {
    let web = Web::start();
    let b = web.alice();
    let r = web.post("/signout", &b, &[("csrf", &b.csrf)]);
    assert_eq!(r.status, 401);
    assert!(r
        .all("set-cookie")
        .iter()
        .any(|c| c.starts_with("__Host-saslgate=;")));
    let r = create(&web, &b, "after");
    assert_eq!(r.status, 401);
    assert!(r.body.contains("not signed in"));
    assert_eq!(web.app_count(), 0);
}

#[test]
fn the_new_app_password_is_shown_once_and_stored_nowhere() {
    let web = Web::start();
    let b = web.alice();
    let r = create(&web, &b, "phone");
    let shown = r.by_id("secret").expect("secret on the page");
    let typed: String = shown.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(typed.len() >= 16);
    // It logs in to mail (through the engine, as saslgated would).
    let gate = web.fx.gate();
    assert!(gate
        .decide(&saslgate_testkit::req(ALICE, &shown, "imap"))
        .is_accepted());
    gate.flush();
    assert!(
        !web.get("/apps", &b).body.contains(&shown),
        "never shown again"
    );
    let dump = web.sql(".dump");
    assert!(!dump.contains(&typed) && !dump.to_lowercase().contains(&typed.to_lowercase()));
}

// The same protections on PostgreSQL, saslgate-web connected as the web
// role (`saslgate init --web-role`; common::web_config).
saslgate_testkit::backends! {
    source: include_str!("protections.rs"),
    on_postgresql: [
        security_headers_on_every_page,
        sign_in_gives_a_new_token,
        a_post_without_the_session_form_token_changes_nothing,
        a_cross_site_post_is_refused_even_with_the_token,
        state_never_changes_on_get,
        credential_changes_need_the_password_within_the_reauth_window,
        sessions_end_when_idle_or_too_old,
        a_password_change_ends_the_other_sessions,
        sign_in_is_throttled_like_mail_logins,
        an_app_password_cannot_sign_in,
        bad_input_gets_a_page_and_changes_nothing,
        a_stale_form_after_sign_out_is_refused,
    ],
    sqlite_only: [
        session_cookie_flags_and_only_a_hash_stored:
            "reads the database with SQLite's hex(); web/tests/postgres.rs checks the same on PostgreSQL",
        the_new_app_password_is_shown_once_and_stored_nowhere:
            "reads SQLite's .dump; web/tests/postgres.rs checks the same on PostgreSQL",
    ],
}
