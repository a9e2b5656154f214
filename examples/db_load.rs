//! BENCHMARK LOAD GENERATOR for `GET /db` (`benches/overload.sh` runs it):
//! wrk cannot report the latency of successes alone, and under overload that
//! is the figure that matters (a fast 503 is not a fast answer).
//!
//! ```sh
//! # closed loop: 256 clients, each sending again at once whatever the answer
//! DB_LOAD_ADDR=127.0.0.1:3000 DB_LOAD_CLIENTS=256 cargo run --release --example db_load
//! # open loop: 12,800 requests/s whatever the answers, on up to 2,048 connections
//! DB_LOAD_ADDR=127.0.0.1:3000 DB_LOAD_RATE=12800 cargo run --release --example db_load
//! ```
//!
//! Environment: `DB_LOAD_ADDR` (default 127.0.0.1:3000), `DB_LOAD_PATH`
//! (`/db`), `DB_LOAD_CLIENTS` (closed loop, default 16) or `DB_LOAD_RATE`
//! (open loop, requests per second), `DB_LOAD_SECONDS` (measured, default
//! 10), `DB_LOAD_WARMUP_SECONDS` (sent but not counted, default 3),
//! `DB_LOAD_MAX_CONNECTIONS` (open loop, default 2048: a request due when
//! every connection is busy is counted as `unsent`, not queued).
//!
//! Prints one line of `key=value` pairs: `sent`, `ok` (2xx), `shed` (503),
//! `other` (any other status), `errors` (connection failures), `unsent`,
//! `goodput` (2xx per second), `p50_ms`, `p99_ms` (of the 2xx only),
//! `shed_share`, `cpu_cores` (the generator's own CPU time over wall time:
//! it runs on the server's machine).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    shed: u64,
    other: u64,
    errors: u64,
    unsent: u64,
    /// Latencies of the 2xx, in microseconds.
    latencies: Vec<u32>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.shed += other.shed;
        self.other += other.other;
        self.errors += other.errors;
        self.unsent += other.unsent;
        self.latencies.extend(other.latencies);
    }

    fn record(&mut self, result: Result<u16, ()>, latency: Duration) {
        self.sent += 1;
        match result {
            Ok(200..=299) => {
                self.ok += 1;
                self.latencies
                    .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
            }
            Ok(503) => self.shed += 1,
            Ok(_) => self.other += 1,
            Err(()) => self.errors += 1,
        }
    }
}

struct Settings {
    addr: String,
    path: String,
    measured: Duration,
    warmup: Duration,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}: not a number: {text:?}")),
        Err(_) => default,
    }
}

async fn connect(addr: &str) -> Option<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(sender)
}

/// One request on `sender`: its status, the body read whole.
async fn send(sender: &mut SendRequest<Empty<Bytes>>, settings: &Settings) -> Result<u16, ()> {
    sender.ready().await.map_err(|_| ())?;
    let request = http::Request::get(settings.path.as_str())
        .header("host", "bench")
        .body(Empty::new())
        .map_err(|_| ())?;
    let response = sender.send_request(request).await.map_err(|_| ())?;
    let status = response.status().as_u16();
    response.into_body().collect().await.map_err(|_| ())?;
    Ok(status)
}

/// `clients` connections, each sending again as soon as it has an answer.
async fn closed_loop(settings: Arc<Settings>, clients: usize, measuring: Arc<AtomicBool>) -> Tally {
    let deadline = Instant::now() + settings.warmup + settings.measured;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let settings = settings.clone();
            let measuring = measuring.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut sender = None;
                while Instant::now() < deadline {
                    if sender.is_none() {
                        sender = connect(&settings.addr).await;
                        if sender.is_none() {
                            if measuring.load(Ordering::Relaxed) {
                                tally.errors += 1;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                    let start = Instant::now();
                    let result = send(sender.as_mut().expect("connected"), &settings).await;
                    if result.is_err() {
                        sender = None;
                    }
                    if measuring.load(Ordering::Relaxed) && Instant::now() < deadline {
                        tally.record(result, start.elapsed());
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await.expect("a client task"));
    }
    total
}

/// `rate` requests per second whatever the answers, each on an idle
/// connection (a new one while fewer than `max_connections` are open).
async fn open_loop(
    settings: Arc<Settings>,
    rate: f64,
    max_connections: usize,
    measuring: Arc<AtomicBool>,
) -> Tally {
    let idle: Arc<Mutex<Vec<SendRequest<Empty<Bytes>>>>> = Arc::default();
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let end = start + settings.warmup + settings.measured;
    let mut due = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while Instant::now() < end {
        ticker.tick().await;
        // Every request whose time has come, sent now.
        let target = (start.elapsed().as_secs_f64() * rate) as u64;
        while due < target {
            due += 1;
            let sender = idle.lock().expect("idle").pop();
            let sender = match sender {
                Some(sender) => Some(sender),
                None if open.load(Ordering::Relaxed) < max_connections => {
                    open.fetch_add(1, Ordering::Relaxed);
                    None
                }
                None => {
                    if measuring.load(Ordering::Relaxed) {
                        tally.lock().expect("tally").unsent += 1;
                    }
                    continue;
                }
            };
            let (settings, idle, open, tally, measuring) = (
                settings.clone(),
                idle.clone(),
                open.clone(),
                tally.clone(),
                measuring.clone(),
            );
            tokio::spawn(async move {
                let begun = Instant::now();
                let mut sender = match sender {
                    Some(sender) => sender,
                    None => match connect(&settings.addr).await {
                        Some(sender) => sender,
                        None => {
                            open.fetch_sub(1, Ordering::Relaxed);
                            if measuring.load(Ordering::Relaxed) {
                                tally
                                    .lock()
                                    .expect("tally")
                                    .record(Err(()), begun.elapsed());
                            }
                            return;
                        }
                    },
                };
                let result = send(&mut sender, &settings).await;
                let latency = begun.elapsed();
                if measuring.load(Ordering::Relaxed) && Instant::now() < end {
                    tally.lock().expect("tally").record(result, latency);
                }
                if result.is_ok() {
                    idle.lock().expect("idle").push(sender);
                } else {
                    open.fetch_sub(1, Ordering::Relaxed);
                }
            });
        }
    }
    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    tally
}

/// This process's CPU time (user and system), from `/proc/self/stat`.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports in USER_HZ, 100 on every common configuration.
    Some(Duration::from_millis(ticks * 10))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

#[tokio::main]
async fn main() {
    let settings = Arc::new(Settings {
        addr: env("DB_LOAD_ADDR", "127.0.0.1:3000".to_owned()),
        path: env("DB_LOAD_PATH", "/db".to_owned()),
        measured: Duration::from_secs(env("DB_LOAD_SECONDS", 10)),
        warmup: Duration::from_secs(env("DB_LOAD_WARMUP_SECONDS", 3)),
    });
    let measuring = Arc::new(AtomicBool::new(false));
    {
        let (measuring, warmup) = (measuring.clone(), settings.warmup);
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            measuring.store(true, Ordering::Relaxed);
        });
    }
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut tally = match std::env::var("DB_LOAD_RATE") {
        Ok(_) => {
            open_loop(
                settings.clone(),
                env("DB_LOAD_RATE", 0.0),
                env("DB_LOAD_MAX_CONNECTIONS", 2048),
                measuring,
            )
            .await
        }
        Err(_) => closed_loop(settings.clone(), env("DB_LOAD_CLIENTS", 16), measuring).await,
    };
    let wall = started.elapsed();
    let cpu = cpu_time()
        .zip(cpu_before)
        .map_or(f64::NAN, |(after, before)| {
            (after - before).as_secs_f64() / wall.as_secs_f64()
        });
    tally.latencies.sort_unstable();
    let seconds = settings.measured.as_secs_f64();
    let answered = tally.sent + tally.unsent;
    println!(
        "sent={} ok={} shed={} other={} errors={} unsent={} goodput={:.0} p50_ms={:.1} p99_ms={:.1} shed_share={:.3} cpu_cores={:.2}",
        tally.sent,
        tally.ok,
        tally.shed,
        tally.other,
        tally.errors,
        tally.unsent,
        tally.ok as f64 / seconds,
        percentile(&tally.latencies, 0.50),
        percentile(&tally.latencies, 0.99),
        if answered == 0 { 0.0 } else { tally.shed as f64 / answered as f64 },
        cpu,
    );
}
