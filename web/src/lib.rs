//! saslgate-web: the "Password & Security" pages. People sign in with their
//! account's master password (and code) through [`Gate::decide`] with the
//! service `web`, then manage their own app passwords, two-step login,
//! password and sessions. Server-rendered HTML forms only; no JavaScript.
//!
//! Split by job:
//! - [`http`]: the request and response as the pages see them, the security
//!   headers, the form parser (size-limited), cross-site refusal;
//! - `session`: tokens, cookies, the per-session form token, timeouts;
//! - `page`: the HTML layout (maud: every value escaped);
//! - `signin`, `apps`, `security`, `activity`: the pages;
//! - `qr`: the TOTP QR code as inline SVG.
//!
//! Every page runs on a blocking thread (SQLite and bcrypt block): axum
//! only reads the request (its body bounded) and writes the answer.

mod activity;
mod apps;
pub mod http;
mod page;
mod qr;
mod security;
mod session;
mod signin;

use http::{Req, Resp};
use saslgate::http_config::Listen;
use saslgate::store::web::{open_web, WebStore};
use saslgate::{Config, Gate};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// The time in Unix seconds. The program uses the system's; in-process
/// tests pass their own to [`App::new`] to move time (timeouts, the
/// re-authentication window).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(saslgate::timefmt::now)
}

/// Stores kept open between requests.
const POOL_MAX: usize = 8;

/// The program: its configuration, the gate that decides sign-ins, the
/// clock and a few open stores.
pub struct App {
    gate: Gate,
    clock: Clock,
    stores: Mutex<Vec<Box<dyn WebStore>>>,
}

impl App {
    /// Opens the database (it must exist and be a saslgate database).
    pub fn new(config: Config, clock: Clock) -> saslgate::Result<Arc<App>> {
        let first = open_web(&config)?;
        let gate = Gate::open(config)?;
        Ok(Arc::new(App {
            gate,
            clock,
            stores: Mutex::new(vec![first]),
        }))
    }

    pub fn config(&self) -> &Config {
        self.gate.config()
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Runs `f` on a pooled store; a store that failed is dropped, not pooled.
    fn with_store<T>(
        &self,
        f: impl FnOnce(&mut dyn WebStore) -> saslgate::Result<T>,
    ) -> saslgate::Result<T> {
        let taken = self.stores.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut store = match taken {
            Some(s) => s,
            None => open_web(self.config())?,
        };
        let out = f(store.as_mut());
        if out.is_ok() {
            let mut pool = self.stores.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < POOL_MAX {
                pool.push(store);
            }
        }
        out
    }

    /// Answers one request (on a blocking thread).
    pub fn handle(&self, req: &Req) -> Resp {
        if let Some(refusal) = http::refuse_cross_site(req) {
            return refusal;
        }
        let path = req.path.as_str();
        let post = req.method == "POST";
        match (post, path) {
            (false, "/style.css") => page::stylesheet(),
            (false, "/") => signin::home(self, req),
            (false, "/signin") => signin::show(self, req),
            (true, "/signin") => signin::submit(self, req),
            (true, "/signout") => signin::signout(self, req),
            (true, "/reauth") => signin::reauth(self, req),
            (false, "/apps") => apps::list(self, req),
            (true, "/apps/new") => apps::create(self, req),
            (true, "/apps/revoke") => apps::revoke(self, req),
            (false, "/two-step") => security::two_step(self, req),
            (true, "/two-step/start") => security::totp_start(self, req),
            (true, "/two-step/confirm") => security::totp_confirm(self, req),
            (true, "/two-step/off") => security::totp_off(self, req),
            (true, "/codes/new") => security::new_codes(self, req),
            (false, "/password") => security::password_page(self, req),
            (true, "/password") => security::password_change(self, req),
            (false, "/logins") => activity::logins(self, req),
            (false, "/sessions") => activity::sessions(self, req),
            (true, "/sessions/end") => activity::end_one(self, req),
            (true, "/sessions/end-others") => activity::end_others(self, req),
            _ if known_path(path) => page::error(
                405,
                "Wrong method",
                "This address takes a form submission, not a visit (or the other way round).",
            ),
            _ => page::error(404, "Not found", "There is no page at this address."),
        }
    }

    /// The router: every path goes to [`App::handle`].
    pub fn router(self: &Arc<Self>) -> axum::Router {
        let app = Arc::clone(self);
        axum::Router::new().fallback(move |request: axum::extract::Request| {
            let app = Arc::clone(&app);
            async move { http::serve_one(app, request).await }
        })
    }
}

fn known_path(path: &str) -> bool {
    matches!(
        path,
        "/" | "/signin"
            | "/signout"
            | "/reauth"
            | "/apps"
            | "/apps/new"
            | "/apps/revoke"
            | "/two-step"
            | "/two-step/start"
            | "/two-step/confirm"
            | "/two-step/off"
            | "/codes/new"
            | "/password"
            | "/logins"
            | "/sessions"
            | "/sessions/end"
            | "/sessions/end-others"
    )
}

/// Serves until `shutdown` resolves. The caller keeps a clone of `app` and
/// drops it after the runtime that ran this: a PostgreSQL store owns a
/// runtime of its own, which must not be dropped inside another's async
/// context (tokio panics), so the app's last reference must go outside.
pub async fn serve(
    app: Arc<App>,
    listen: &Listen,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = app.router();
    match listen {
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
        Listen::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let listener = tokio::net::UnixListener::bind(path)?;
            axum::serve(listener, router.into_make_service())
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// For in-process tests: serves `app` on an already bound loopback listener
/// from a thread of its own until the returned sender is dropped or sent to.
pub fn serve_in_thread(
    app: Arc<App>,
    listener: std::net::TcpListener,
) -> std::io::Result<(
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
)> {
    listener.set_nonblocking(true)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Dropped last, outside the runtime: see [`serve`].
    let keep = Arc::clone(&app);
    let handle = std::thread::spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let router = app.router();
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
        });
        drop(rt);
        drop(keep);
    });
    Ok((tx, handle))
}
