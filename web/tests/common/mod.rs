//! The web program in-process on a loopback port, with a clock the test
//! sets, and a small HTTP/1.1 client (one request per connection).

#![allow(dead_code)]

use saslgate_testkit::Fixture;
use saslgate_web::App;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

pub const ALICE: &str = "alice@example.org";
pub const ALICE_PW: &str = "alice web password";

/// A test database with alice, and saslgate-web serving it.
pub struct Web {
    // Fields drop in this order: the server stops before its database goes.
    pub host: Host,
    pub fx: Fixture,
}

impl std::ops::Deref for Web {
    type Target = Host;
    fn deref(&self) -> &Host {
        &self.host
    }
}

/// One saslgate-web serving a database (several may serve one: hosts A
/// and B of a shared PostgreSQL database).
pub struct Host {
    pub addr: SocketAddr,
    pub time: Arc<AtomicI64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            // The server's thread must end cleanly (a PostgreSQL store
            // dropped inside the async runtime would panic there).
            let ended = t.join();
            if !std::thread::panicking() {
                assert!(ended.is_ok(), "saslgate-web's thread panicked");
            }
        }
    }
}

impl Web {
    pub fn start() -> Web {
        Web::with(|_| {})
    }

    pub fn with(tweak: impl FnOnce(&mut saslgate::Config)) -> Web {
        let fx = Fixture::with(tweak);
        fx.user(ALICE, ALICE_PW);
        let host = Host::serve(web_config(&fx));
        Web { host, fx }
    }

    pub fn sql(&self, q: &str) -> String {
        self.fx.sql(q)
    }

    pub fn app_count(&self) -> i64 {
        self.sql("SELECT count(*) FROM app_passwords")
            .trim()
            .parse()
            .unwrap()
    }
}

impl Host {
    /// saslgate-web with `config`, on a loopback port, its clock now.
    pub fn serve(config: saslgate::Config) -> Host {
        Host::try_serve(config).unwrap()
    }

    pub fn try_serve(config: saslgate::Config) -> saslgate::Result<Host> {
        let time = Arc::new(AtomicI64::new(saslgate::timefmt::now()));
        let t = Arc::clone(&time);
        let app = App::new(config, Arc::new(move || t.load(Ordering::SeqCst)))?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, thread) = saslgate_web::serve_in_thread(app, listener).unwrap();
        Ok(Host {
            addr,
            time,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn advance(&self, secs: i64) {
        self.time.fetch_add(secs, Ordering::SeqCst);
    }

    /// One request; `headers` extra lines ("Name: value").
    pub fn request(&self, method: &str, path: &str, headers: &[String], body: &str) -> Resp {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        if method == "POST" {
            head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        Resp::parse(&raw)
    }

    pub fn get(&self, path: &str, who: &Browser) -> Resp {
        self.request("GET", path, &who.headers(), "")
    }

    /// A same-origin form post as a browser sends it.
    pub fn post(&self, path: &str, who: &Browser, fields: &[(&str, &str)]) -> Resp {
        let mut h = who.headers();
        h.push("Sec-Fetch-Site: same-origin".into());
        self.request("POST", path, &h, &form(fields))
    }

    /// Signs in; the browser then holds the session cookie.
    pub fn sign_in(&self, who: &mut Browser, account: &str, password: &str, code: &str) -> Resp {
        let page = self.get("/signin", who);
        who.take_cookies(&page);
        let csrf = page.csrf().expect("sign-in form token");
        let r = self.post(
            "/signin",
            who,
            &[
                ("csrf", &csrf),
                ("account", account),
                ("password", password),
                ("code", code),
            ],
        );
        who.take_cookies(&r);
        r
    }

    /// A signed-in browser of alice, with the form token of its session.
    pub fn alice(&self) -> Browser {
        let mut b = Browser::default();
        let r = self.sign_in(&mut b, ALICE, ALICE_PW, "");
        assert_eq!(r.status, 303, "sign-in: {}", r.body);
        b.csrf = self.get("/apps", &b).csrf().unwrap();
        b
    }
}

/// The role saslgate-web connects as on PostgreSQL.
pub const WEB_ROLE: &str = "sg_web";

/// saslgate-web's configuration for the fixture's database: on SQLite the
/// fixture's; on PostgreSQL the web role's (`saslgate init --web-role`),
/// so that every test run there is also a test of that role's privileges.
pub fn web_config(fx: &Fixture) -> saslgate::Config {
    if fx.pg.is_none() {
        return fx.config.clone();
    }
    use saslgate::store::pg::{schema, PgStore};
    let admin = PgStore::open(&fx.config).unwrap();
    grant_role(&admin, WEB_ROLE, schema::RoleKind::Web);
    let mut config = fx.config.clone();
    config.db = fx.pg_url_as(WEB_ROLE).into();
    config
}

/// `schema::grant_role`, one at a time in this process: the role is the
/// cluster's, shared by the tests' databases (the grants are each
/// database's), and two first creations at once would collide.
pub fn grant_role(
    admin: &saslgate::store::pg::PgStore,
    role: &str,
    kind: saslgate::store::pg::schema::RoleKind,
) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    saslgate::store::pg::schema::grant_role(admin, role, kind).unwrap();
}

pub fn form(fields: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A browser's cookie jar (names to values) and its last form token.
#[derive(Default, Clone)]
pub struct Browser {
    pub cookies: Vec<(String, String)>,
    pub csrf: String,
}

impl Browser {
    pub fn headers(&self) -> Vec<String> {
        if self.cookies.is_empty() {
            return Vec::new();
        }
        let c: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        vec![format!("Cookie: {}", c.join("; "))]
    }
    pub fn take_cookies(&mut self, r: &Resp) {
        for sc in r.all("set-cookie") {
            let first = sc.split(';').next().unwrap();
            let (k, v) = first.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != k);
            if !v.is_empty() && !sc.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
    }
    pub fn session(&self) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(k, _)| k == "__Host-saslgate")
            .map(|(_, v)| v.as_str())
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    fn parse(raw: &[u8]) -> Resp {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Resp {
            status,
            headers,
            body: body.to_string(),
        }
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// The first form token on the page.
    pub fn csrf(&self) -> Option<String> {
        self.between("name=\"csrf\" value=\"", "\"")
    }
    pub fn between(&self, start: &str, end: &str) -> Option<String> {
        let i = self.body.find(start)? + start.len();
        let j = self.body[i..].find(end)? + i;
        Some(self.body[i..j].to_string())
    }
    /// The element with `id`'s text (first text after its tag).
    pub fn by_id(&self, id: &str) -> Option<String> {
        let i = self.body.find(&format!("id=\"{id}\""))?;
        let j = self.body[i..].find('>')? + i + 1;
        let k = self.body[j..].find('<')? + j;
        Some(self.body[j..k].to_string())
    }
}
