//! `saslgate-web --config PATH --db DB --listen ADDR`: the "Password &
//! Security" pages (see the library's documentation). Off until `[web]
//! listen` is set or `--listen` given.

use clap::Parser;
use saslgate::config::{Config, DEFAULT_CONFIG};
use saslgate::http_config::Listen;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "saslgate-web", version = saslgate::VERSION,
          about = "saslgate's Password & Security pages (put nginx with TLS in front)")]
struct Args {
    /// Configuration file (default /etc/saslgate/saslgate.conf, may be absent).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Database path or PostgreSQL URL (overrides the config file).
    #[arg(long, value_name = "DB")]
    db: Option<PathBuf>,
    /// `IP:PORT` or an absolute UNIX socket path (overrides `[web] listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

fn load(args: &Args) -> Result<(Config, Listen), String> {
    let mut config = match &args.config {
        Some(p) => Config::load(p),
        None => Config::load_optional(std::path::Path::new(DEFAULT_CONFIG)),
    }
    .map_err(|e| e.to_string())?;
    if let Some(db) = &args.db {
        config.db = db.clone();
    }
    let listen = match &args.listen {
        Some(text) => Listen::parse(text).map_err(|e| format!("--listen: {e}"))?,
        None => config.web.listen.clone().ok_or(
            "not configured: set [web] listen in the configuration file, or give --listen",
        )?,
    };
    Ok((config, listen))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (config, listen) = match load(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("saslgate-web: {e}");
            return ExitCode::from(2);
        }
    };
    let app = match saslgate_web::App::new(config, saslgate_web::system_clock()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("saslgate-web: {e}");
            return ExitCode::from(3);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("saslgate-web: {e}");
            return ExitCode::from(3);
        }
    };
    eprintln!("saslgate-web: listening on {listen}");
    let stop = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    // The app's last reference is dropped outside the runtime (its
    // PostgreSQL stores own runtimes of their own; see `serve`).
    let keep = std::sync::Arc::clone(&app);
    let served = rt.block_on(saslgate_web::serve(app, &listen, stop));
    drop(rt);
    drop(keep);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("saslgate-web: {listen}: {e}");
            ExitCode::from(3)
        }
    }
}
