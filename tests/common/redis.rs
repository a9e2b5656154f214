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
    /// Under libfaketime: the file holding the clock's offset.
    faketime: Option<std::path::PathBuf>,
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
            faketime: None,
        };
        server.restart();
        Some(server)
    }

    /// Starts a server whose clock the test steps ([`set_clock_offset`]):
    /// `redis-server` under libfaketime (Debian's `faketime` package), the
    /// offset read from a file at every clock read. `None` after a loud SKIP
    /// when `redis-server` or faketime is missing (a failure under
    /// `CI=true`), or when libfaketime cannot run this `redis-server` (it
    /// clashes with jemalloc, which Debian's `redis-server` is linked with:
    /// libfaketime issue #130; that skip is loud too, also under CI).
    pub fn start_with_faketime(test: &str) -> Option<Self> {
        if !redis_server_available(test) {
            return None;
        }
        let skip = |why: &str| {
            let _ = writeln!(
                std::io::stderr(),
                "SKIP {test}: {why}; this test did NOT run"
            );
        };
        let library = faketime_library();
        let found = Command::new("faketime")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        let Some(library) = library.filter(|_| found) else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: faketime is not installed, and CI=true requires it");
            }
            skip("faketime is not installed (apt-get install faketime)");
            return None;
        };
        let port = free_port();
        let offset_file = std::env::temp_dir().join(format!("tower-harden-faketime-{port}"));
        std::fs::write(&offset_file, "+0\n").expect("the offset file is written");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .env("LD_PRELOAD", &library)
            .env("FAKETIME_TIMESTAMP_FILE", &offset_file)
            .env("FAKETIME_NO_CACHE", "1")
            // Redis's own timers stay on the real monotonic clock.
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let server = Self {
            port,
            child: Some(child),
            faketime: Some(offset_file),
        };
        let started = Instant::now();
        while server.try_ping().is_err() {
            if started.elapsed() > START_GUARD {
                skip(&format!(
                    "redis-server under libfaketime ({}) did not answer PING: \
                     libfaketime cannot run a redis-server linked with jemalloc \
                     (libfaketime issue #130)",
                    library.display()
                ));
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    /// Steps the clock of a server started by [`start_with_faketime`]: its
    /// time becomes the real time plus `offset_seconds` (negative: behind).
    pub fn set_clock_offset(&self, offset_seconds: i64) {
        let file = self.faketime.as_ref().expect("a server under faketime");
        std::fs::write(file, format!("{offset_seconds:+}\n")).expect("the offset file is written");
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
        if let Some(file) = &self.faketime {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// libfaketime's preload library where Debian and a source install put it.
fn faketime_library() -> Option<std::path::PathBuf> {
    let mut candidates = vec![
        std::path::PathBuf::from("/usr/local/lib/faketime/libfaketime.so.1"),
        std::path::PathBuf::from("/usr/lib/faketime/libfaketime.so.1"),
    ];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        for entry in entries.flatten() {
            candidates.push(entry.path().join("faketime/libfaketime.so.1"));
        }
    }
    candidates.into_iter().find(|path| path.is_file())
}
