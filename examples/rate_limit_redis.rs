//! Two server instances sharing one limit through one Redis.
//!
//! ```sh
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example rate_limit_redis --features redis
//! ```
//!
//! Both instances run in this process, each with its own Redis connection,
//! as two replicas behind a load balancer would. A client alternates
//! between them: the limit (5 requests per minute per client IP) holds
//! across both, so the sixth request is refused whichever instance gets it.
//! Without a reachable Redis the example says so and stops; the stores
//! would fail open (the default policy) and admit everything.

use std::net::SocketAddr;
use std::time::Duration;

use axum::{routing::get, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_harden::rate_limit::{
    KeyHasher, KeySource, Policy, Quota, RateLimitLayer, RedisStore, TrustedProxies,
};

/// Bounds every network step of the example, so it always ends.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // A prefix of this run's own, so the demo starts from a fresh limit.
    let prefix = format!("example-{}", std::process::id());

    let a = serve_instance("A", &url, &prefix).await?;
    let b = serve_instance("B", &url, &prefix).await?;
    println!("instance A on {a}, instance B on {b}, sharing {url}");

    for n in 1..=8 {
        let (name, addr) = if n % 2 == 1 { ("A", a) } else { ("B", b) };
        let response = tokio::time::timeout(STEP_TIMEOUT, http_get(addr)).await??;
        let status = response.lines().next().unwrap_or_default().to_owned();
        if n == 1 && !response.to_ascii_lowercase().contains("\nratelimit:") {
            println!(
                "no RateLimit header: Redis at {url} is not reachable (the store failed open)"
            );
            return Ok(());
        }
        let ratelimit = header(&response, "ratelimit").unwrap_or("-");
        let retry_after = header(&response, "retry-after").unwrap_or("-");
        println!("request {n} -> {name}: {status:<32} RateLimit: {ratelimit}  Retry-After: {retry_after}");
    }
    println!(
        "one limit of 5 per minute, shared: requests 6, 7 and 8 were refused by both instances"
    );
    Ok(())
}

/// One replica: its own Redis connection, the shared key-hashing secret
/// (so both hash a client to the same Redis key) and the same policy.
async fn serve_instance(
    name: &'static str,
    url: &str,
    prefix: &str,
) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let store = RedisStore::builder().prefix(prefix).connect(url).await?;
    let limits = RateLimitLayer::new(store)
        .key_hasher(KeyHasher::from_secret(
            b"replace with a 32-byte secret shared by replicas",
        ))
        .policy(Policy::new(
            "per-ip",
            Quota::per_minute(5)?,
            KeySource::client_ip(TrustedProxies::new()),
        ));
    let app = Router::new()
        .route(
            "/",
            get(move || async move { format!("hello from {name}\n") }),
        )
        .layer(limits);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(listener, service).await {
            eprintln!("instance {name} stopped: {error}");
        }
    });
    Ok(addr)
}

/// A plain HTTP/1.1 GET; the whole response as text.
async fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response
        .lines()
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .find(|(field, _)| field.trim().eq_ignore_ascii_case(name))
        .map(|(_, value)| value.trim())
}
