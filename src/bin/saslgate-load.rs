//! `saslgate-load`: load generator for saslauthd-protocol daemons (saslgated or
//! the stock saslauthd). N clients, each: connect, send one request, read the
//! answer, close; for T seconds. Prints requests/s and latency percentiles.

use clap::Parser;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "saslgate-load",
    version,
    about = "Load generator for saslauthd-protocol daemons"
)]
struct Args {
    /// Socket of the daemon (DIR/mux).
    #[arg(short = 'f', long = "socket", value_name = "PATH")]
    socket: PathBuf,
    /// Concurrent clients.
    #[arg(short = 'c', long = "concurrency", default_value_t = 8)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(short = 't', long = "seconds", default_value_t = 5.0)]
    seconds: f64,
    #[arg(short = 'u', long = "user")]
    user: String,
    /// Password (benchmark accounts only: visible in the process list).
    #[arg(short = 'p', long = "password")]
    password: String,
    #[arg(short = 's', long = "service", default_value = "imap")]
    service: String,
    #[arg(short = 'r', long = "realm", default_value = "")]
    realm: String,
    /// Send a fifth field (client address, 127.0.0.1;PORT) like newer libsasl2.
    #[arg(long = "five")]
    five: bool,
    /// Answer every request must start with (OK or NO); others count as errors.
    #[arg(long = "expect", default_value = "OK")]
    expect: String,
    /// One line of JSON instead of text.
    #[arg(long = "json")]
    json: bool,
}

struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

fn one(args: &Args, frame: &[u8]) -> Result<Vec<u8>, String> {
    let mut s = UnixStream::connect(&args.socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    s.write_all(frame).map_err(|e| format!("write: {e}"))?;
    let mut head = [0u8; 2];
    s.read_exact(&mut head).map_err(|e| format!("read: {e}"))?;
    let len = usize::from(u16::from_be_bytes(head));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).map_err(|e| format!("read: {e}"))?;
    Ok(body)
}

fn frame(args: &Args, n: usize) -> Vec<u8> {
    let mut fields: Vec<Vec<u8>> = vec![
        args.user.as_bytes().to_vec(),
        args.password.as_bytes().to_vec(),
        args.service.as_bytes().to_vec(),
        args.realm.as_bytes().to_vec(),
    ];
    if args.five {
        fields.push(format!("127.0.0.1;{}", 10000 + n % 50000).into_bytes());
    }
    let mut out = Vec::new();
    for f in &fields {
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn main() {
    let args = Arc::new(Args::parse());
    if args.concurrency == 0 || args.seconds.is_nan() || args.seconds <= 0.0 {
        eprintln!("saslgate-load: --concurrency and --seconds must be positive");
        std::process::exit(2);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..args.concurrency)
        .map(|i| {
            let args = args.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let f = frame(&args, i);
                let mut t = Tally {
                    latencies_us: Vec::with_capacity(1 << 16),
                    errors: 0,
                    first_error: None,
                };
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    match one(&args, &f) {
                        Ok(answer) if answer.starts_with(args.expect.as_bytes()) => {
                            t.latencies_us
                                .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        }
                        Ok(answer) => {
                            t.errors += 1;
                            t.first_error.get_or_insert_with(|| {
                                format!("unexpected answer {:?}", String::from_utf8_lossy(&answer))
                            });
                        }
                        Err(e) => {
                            t.errors += 1;
                            t.first_error.get_or_insert(e);
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
                t
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for h in handles {
        match h.join() {
            Ok(t) => {
                all.extend(t.latencies_us);
                errors += t.errors;
                if first_error.is_none() {
                    first_error = t.first_error;
                }
            }
            Err(_) => errors += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i] as f64 / 1000.0
    };
    let ok = all.len();
    let rps = ok as f64 / elapsed;
    if args.json {
        println!(
            "{{\"concurrency\":{},\"seconds\":{:.2},\"ok\":{},\"errors\":{},\"rps\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
            args.concurrency,
            elapsed,
            ok,
            errors,
            rps,
            pct(0.50),
            pct(0.99)
        );
    } else {
        println!(
            "concurrency {} for {:.1}s: {} ok, {} errors, {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
            args.concurrency,
            elapsed,
            ok,
            errors,
            rps,
            pct(0.50),
            pct(0.99)
        );
    }
    if let Some(e) = first_error {
        eprintln!("saslgate-load: first error: {e}");
    }
    if errors > 0 || ok == 0 {
        std::process::exit(1);
    }
}
