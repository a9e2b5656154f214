//! A `redis-server` of the test's own, on a free port, that the test may
//! kill, restart, pause or flush.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer PING after it was started: a
/// must-not-hang guard, not a performance threshold.
const START_GUARD: Duration = Duration::from_secs(10);

/// A running `redis-server` owned by the test; killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

/// Whether `redis-server` can run here. Without it, a test prints a loud
/// SKIP line and returns, except under `CI=true`, where it fails.
pub fn redis_server_available(test: &str) -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: redis-server is not installed, and CI=true requires it");
        }
        // Straight to the process's stderr: libtest captures `eprintln!` of
        // passing tests, and a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIP {test}: redis-server is not installed (apt-get install redis-server); \
             this test did NOT run"
        );
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

impl RedisServer {
    /// Starts a server on a free port (no persistence) and waits until it
    /// answers. `None` (after the skip message) when `redis-server` is
    /// missing outside CI.
    pub fn start(test: &str) -> Option<Self> {
        if !redis_server_available(test) {
            return None;
        }
        let mut server = Self {
            port: free_port(),
            child: None,
        };
        server.restart();
        Some(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let started = Instant::now();
        while self.try_ping().is_err() {
            assert!(
                started.elapsed() < START_GUARD,
                "redis-server on port {} did not answer PING",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_ping(&self) -> redis::RedisResult<()> {
        let client = redis::Client::open(self.url())?;
        let mut connection = client.get_connection_with_timeout(Duration::from_millis(500))?;
        redis::cmd("PING").query::<String>(&mut connection)?;
        Ok(())
    }

    /// A plain synchronous connection for the test's own commands.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("a valid URL")
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("a connection to the test's redis-server")
    }

    /// Runs one command and returns its reply.
    pub fn command<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command
            .query(&mut self.connection())
            .expect("the command succeeds")
    }

    /// Keys matching `pattern` (SCAN, never KEYS).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut connection = self.connection();
        let iter: redis::Iter<'_, String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter(&mut connection)
            .expect("SCAN works");
        iter.map(|key| key.expect("a key")).collect()
    }

    /// The server's clock (`TIME`) in nanoseconds since the Unix epoch.
    pub fn time_nanos(&self) -> u64 {
        let (seconds, micros): (u64, u64) = self.command(&["TIME"]);
        seconds * 1_000_000_000 + micros * 1_000
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
