//! The request as the pages see it (read by axum, body bounded), the
//! response they give, and the rules every answer follows: the security
//! headers on every response, cross-site form posts refused.

use crate::App;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use zeroize::Zeroize;

/// The largest form accepted (the biggest real one is a password change).
pub const FORM_MAX: usize = 8 * 1024;

/// Every page's Content-Security-Policy: no script at all, styles only from
/// the program's own stylesheet, forms only to itself, never framed.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// One request.
#[derive(Debug, Default)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: String,
    pub cookie: String,
    /// `Sec-Fetch-Site` as sent (browsers send it; other clients may not).
    pub fetch_site: Option<String>,
    pub user_agent: String,
    /// The client's address: the peer's, or nginx's `X-Real-IP` when the
    /// peer is this host (loopback or the UNIX socket).
    pub client: String,
    /// The form's fields (`application/x-www-form-urlencoded`), wiped on drop.
    pub form: Form,
    /// The body was over [`FORM_MAX`] (the form is then empty).
    pub too_large: bool,
}

/// Form fields, in order; the values are wiped when dropped (they hold
/// passwords and codes).
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }
    /// The first value of `name` (empty if absent).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
    /// How many times `name` was sent (a repeated single field is bad input).
    pub fn count(&self, name: &str) -> usize {
        self.0.iter().filter(|(k, _)| k == name).count()
    }
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl Drop for Form {
    fn drop(&mut self) {
        for (_, v) in self.0.iter_mut() {
            v.zeroize();
        }
    }
}

/// One response. `secret`: the page shows a secret once (app password,
/// TOTP secret, codes), which `Cache-Control: no-store` keeps out of caches
/// (every page is `no-store` anyway: they are all personal).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub content_type: &'static str,
}

impl Resp {
    pub fn html(status: u16, body: String) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body,
            content_type: "text/html; charset=utf-8",
        }
    }
    /// `303 See Other` to a path of this program (after a POST).
    pub fn redirect(to: &str) -> Resp {
        let mut r = Resp::html(303, String::new());
        r.headers.push(("location", to.to_string()));
        r
    }
    pub fn with_status(mut self, status: u16) -> Resp {
        self.status = status;
        self
    }
    pub fn with_cookie(mut self, cookie: String) -> Resp {
        self.headers.push(("set-cookie", cookie));
        self
    }
}

impl Drop for Resp {
    fn drop(&mut self) {
        self.body.zeroize();
    }
}

/// A form post another site started is refused before anything else
/// (`Sec-Fetch-Site`: only `same-origin`, or `none` for what the person
/// typed). Browsers without the header are held by the form token.
pub fn refuse_cross_site(req: &Req) -> Option<Resp> {
    if req.method != "POST" {
        return None;
    }
    match req.fetch_site.as_deref() {
        None | Some("same-origin") | Some("none") => None,
        Some(_) => Some(crate::page::error(
            403,
            "Refused",
            "This form was sent from another site, so nothing was changed. Open this page \
             yourself and submit it again.",
        )),
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_string())
}

/// The client address a request stands for.
fn client_of(peer: Option<SocketAddr>, headers: &HeaderMap) -> String {
    let local = peer.is_none_or(|p| p.ip().is_loopback());
    if local {
        if let Some(ip) = header(headers, "x-real-ip").and_then(|v| v.trim().parse::<IpAddr>().ok())
        {
            return ip.to_string();
        }
    }
    match peer {
        Some(p) => p.ip().to_string(),
        None => "127.0.0.1".to_string(),
    }
}

/// Reads one request, answers it on a blocking thread, adds the headers.
pub async fn serve_one(app: Arc<App>, request: axum::extract::Request) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let headers = &parts.headers;
    let mut req = Req {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        cookie: headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join("; "),
        fetch_site: header(headers, "sec-fetch-site").map(|s| s.to_ascii_lowercase()),
        user_agent: header(headers, "user-agent")
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect(),
        client: client_of(peer, headers),
        ..Default::default()
    };
    if req.method == "POST" {
        match axum::body::to_bytes(body, FORM_MAX).await {
            Ok(bytes) => {
                req.form = Form::parse(&bytes);
                let mut v = Vec::from(bytes);
                v.zeroize();
            }
            Err(_) => req.too_large = true,
        }
    }
    let answer = tokio::task::spawn_blocking(move || {
        if req.too_large {
            return crate::page::error(
                413,
                "Form too large",
                "The form sent was larger than any of these pages sends, so nothing was changed.",
            );
        }
        app.handle(&req)
    })
    .await
    .unwrap_or_else(|_| {
        crate::page::error(
            500,
            "Internal error",
            "Something went wrong on the server; nothing was changed.",
        )
    });
    into_response(answer)
}

fn into_response(mut r: Resp) -> axum::response::Response {
    let mut out = axum::response::Response::new(Body::from(std::mem::take(&mut r.body)));
    *out.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = out.headers_mut();
    let fixed: [(&str, &str); 8] = [
        ("content-type", r.content_type),
        // Served only over TLS (a __Host- cookie needs it): pin HTTPS.
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        ),
        ("content-security-policy", CSP),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cache-control", "no-store"),
    ];
    for (k, v) in fixed {
        h.insert(k, HeaderValue::from_static(v));
    }
    for (k, v) in r.headers.drain(..) {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.append(k, v);
        }
    }
    out
}
