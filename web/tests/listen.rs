//! `--listen PATH`: saslgate-web on a UNIX socket (where nginx on the same
//! host reaches it), believing nginx's X-Real-IP from there.

mod common;
use common::{form, ALICE, ALICE_PW};
use saslgate::http_config::Listen;
use saslgate_testkit::Fixture;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn ask(path: &std::path::Path, request: &str) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serves_on_a_unix_socket_and_believes_x_real_ip_there() {
    let fx = Fixture::new();
    fx.user(ALICE, ALICE_PW);
    let app = saslgate_web::App::new(fx.config.clone(), saslgate_web::system_clock()).unwrap();
    let path = fx.path("web.sock");
    let listen = Listen::Unix(path.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(saslgate_web::serve(app, &listen, async move {
            let _ = stopped.await;
        }))
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&path).is_err() {
        assert!(Instant::now() < deadline, "socket never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    let page = ask(
        &path,
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
    let csrf = &page[i..i + 64];
    let body = form(&[
        ("csrf", csrf),
        ("account", ALICE),
        ("password", "wrong one"),
    ]);
    let answer = ask(
        &path,
        &format!(
            "POST /signin HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: {pre}\r\n\
             X-Real-IP: 192.0.2.7\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(
        fx.sql("SELECT client_addr FROM audit WHERE service = 'web'")
            .trim(),
        "192.0.2.7",
        "the throttle and the audit see the client nginx names"
    );
    stop.send(()).unwrap();
    server.join().unwrap().unwrap();
}
