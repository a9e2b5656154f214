//! A Redis Cluster of the test's own: six `redis-server --cluster-enabled
//! yes` on free loopback ports (three primaries, three replicas), created
//! with `redis-cli --cluster create`, killed on drop.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Must-not-hang guard for the cluster to form or to fail over.
pub const CLUSTER_GUARD: Duration = Duration::from_secs(30);
/// `cluster-node-timeout`: how long a silent primary takes to be failed.
pub const NODE_TIMEOUT_MS: u64 = 1000;
/// The password of the `default` user (the test's own commands, the
/// replication and `redis-cli`), when the cluster has ACLs.
const ADMIN_PASSWORD: &str = "admin-secret";

/// An ACL user for the limiter: what [`RedisCluster::start_with_acl`]
/// creates.
pub const LIMITER_USER: &str = "limiter";
pub const LIMITER_PASSWORD: &str = "limiter-secret";
/// The limiter's permissions: the script and the commands it calls on its
/// own keys, and the slot map (`CLIENT SETINFO`, which the redis crate also sends, exists from Redis
/// 7.2 on; its refusal is ignored by the crate).
pub const LIMITER_ACL: &[&str] = &[
    "on",
    ">limiter-secret",
    "~rl:*",
    "resetchannels",
    "-@all",
    "+evalsha",
    "+eval",
    "+get",
    "+set",
    "+time",
    "+cluster|slots",
    "+cluster|shards",
    "+ping",
    "+hello",
    "+auth",
];

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub port: u16,
    pub primary: bool,
    /// The primary's id, for a replica.
    pub primary_id: Option<String>,
    pub failed: bool,
}

/// Six nodes; killed, and their directory removed, on drop.
pub struct RedisCluster {
    dir: PathBuf,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
    acl: bool,
}

fn available(test: &str) -> bool {
    let found = ["redis-server", "redis-cli"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|status| status.success())
            .unwrap_or(false)
    });
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: redis-server or redis-cli is not installed, and CI=true requires them");
        }
        let _ = writeln!(
            std::io::stderr(),
            "SKIP {test}: redis-server or redis-cli is not installed (apt-get install \
             redis-server); this test did NOT run"
        );
    }
    found
}

/// Six distinct free ports (and their cluster-bus ports, +10000, free too).
pub fn free_ports() -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < 6 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let port = listener.local_addr().unwrap().port();
        held.push(listener);
        let bus_free = port < 55_535 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
        if bus_free {
            ports.push(port);
        }
    }
    ports
}

impl RedisCluster {
    /// Starts and creates a cluster whose nodes need no password. `None`
    /// (after a loud SKIP line) without the tools, outside CI.
    pub fn start(test: &str) -> Option<Self> {
        Self::start_inner(test, false, free_ports())
    }

    /// As [`start`](Self::start), on six given ports (from [`free_ports`]).
    pub fn start_on(test: &str, ports: Vec<u16>) -> Option<Self> {
        Self::start_inner(test, false, ports)
    }

    /// Whether the tools are here (a loud SKIP line when not, outside CI).
    pub fn available(test: &str) -> bool {
        available(test)
    }

    /// As [`start`](Self::start), with ACLs: the `default` user has a
    /// password, and the user [`LIMITER_USER`] may only run the script on
    /// `rl:*` keys and read the slot map.
    pub fn start_with_acl(test: &str) -> Option<Self> {
        Self::start_inner(test, true, free_ports())
    }

    fn start_inner(test: &str, acl: bool, ports: Vec<u16>) -> Option<Self> {
        if !available(test) {
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "tower-harden-cluster-{}-{}",
            std::process::id(),
            test.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Self {
            dir,
            children: ports.iter().map(|_| None).collect(),
            ports,
            acl,
        };
        for index in 0..6 {
            cluster.spawn(index);
        }
        for &port in &cluster.ports {
            cluster.wait_for(&format!("node {port} answers PING"), || {
                cluster.try_command::<String>(port, &["PING"]).is_ok()
            });
        }
        let mut create = Command::new("redis-cli");
        if acl {
            create.args(["-a", ADMIN_PASSWORD, "--no-auth-warning"]);
        }
        create.args(["--cluster", "create"]);
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let output = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        cluster.wait_until_ok();
        Some(cluster)
    }

    fn spawn(&mut self, index: usize) {
        let port = self.ports[index];
        let mut command = Command::new("redis-server");
        command
            .current_dir(&self.dir)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(self.dir.join(format!("nodes-{port}.conf")))
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            // Replicas sync at once instead of after 5 s.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--logfile")
            .arg(self.dir.join(format!("{port}.log")));
        if self.acl {
            command
                .args(["--requirepass", ADMIN_PASSWORD])
                .args(["--masterauth", ADMIN_PASSWORD])
                .args(["--user", LIMITER_USER])
                .args(LIMITER_ACL);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.children[index] = Some(child);
    }

    fn wait_for(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let started = Instant::now();
        while !condition() {
            assert!(
                started.elapsed() < CLUSTER_GUARD,
                "{what}: did not happen; {}",
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every live node says `cluster_state:ok` and sees three
    /// primaries serving slots, none of them failed, and every replica's
    /// link to its primary is up.
    pub fn wait_until_ok(&self) {
        self.wait_for("cluster_state:ok on every node", || {
            self.live_ports().iter().all(|&port| {
                let info = self
                    .try_command::<String>(port, &["CLUSTER", "INFO"])
                    .unwrap_or_default();
                let replication = self
                    .try_command::<String>(port, &["INFO", "replication"])
                    .unwrap_or_default();
                // A replica must hold its primary's data before a test
                // kills that primary: a replica that never synced refuses
                // to fail over.
                let in_sync = replication.contains("role:master")
                    || replication.contains("master_link_status:up");
                info.contains("cluster_state:ok")
                    && in_sync
                    && self.try_nodes(port).is_some_and(|nodes| {
                        nodes
                            .iter()
                            .filter(|node| node.primary && !node.failed)
                            .count()
                            == 3
                            && nodes
                                .iter()
                                .all(|node| node.failed || self.is_live(node.port))
                    })
            })
        });
    }

    /// What each live node says of the cluster, for a failure message.
    fn describe(&self) -> String {
        self.live_ports()
            .iter()
            .map(|&port| {
                let info = self
                    .try_command::<String>(port, &["CLUSTER", "INFO"])
                    .map(|info| info.lines().take(1).collect::<String>())
                    .unwrap_or_else(|error| error.to_string());
                let nodes = self
                    .try_command::<String>(port, &["CLUSTER", "NODES"])
                    .unwrap_or_else(|error| error.to_string());
                let log = std::fs::read_to_string(self.dir.join(format!("{port}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                format!("\nnode {port}: {info}\n{nodes}\nlog: {tail:#?}")
            })
            .collect()
    }

    fn is_live(&self, port: u16) -> bool {
        self.live_ports().contains(&port)
    }

    pub fn live_ports(&self) -> Vec<u16> {
        self.ports
            .iter()
            .zip(&self.children)
            .filter(|(_, child)| child.is_some())
            .map(|(&port, _)| port)
            .collect()
    }

    /// One node URL per live node (with the limiter's user and password
    /// when the cluster has ACLs).
    pub fn urls(&self) -> Vec<String> {
        self.live_ports()
            .iter()
            .map(|port| {
                if self.acl {
                    format!("redis://{LIMITER_USER}:{LIMITER_PASSWORD}@127.0.0.1:{port}")
                } else {
                    format!("redis://127.0.0.1:{port}")
                }
            })
            .collect()
    }

    fn admin_url(&self, port: u16) -> String {
        if self.acl {
            format!("redis://default:{ADMIN_PASSWORD}@127.0.0.1:{port}")
        } else {
            format!("redis://127.0.0.1:{port}")
        }
    }

    /// Runs one command on the node at `port` (as the admin).
    pub fn try_command<T: redis::FromRedisValue>(
        &self,
        port: u16,
        args: &[&str],
    ) -> redis::RedisResult<T> {
        let client = redis::Client::open(self.admin_url(port))?;
        let mut connection = client.get_connection_with_timeout(Duration::from_secs(2))?;
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command.query(&mut connection)
    }

    pub fn command<T: redis::FromRedisValue>(&self, port: u16, args: &[&str]) -> T {
        self.try_command(port, args)
            .unwrap_or_else(|error| panic!("{args:?} on {port}: {error}"))
    }

    /// Keys matching `pattern` on the node at `port` (SCAN, never KEYS).
    pub fn count_keys(&self, port: u16, pattern: &str) -> usize {
        let client = redis::Client::open(self.admin_url(port)).expect("a valid URL");
        let mut connection = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("a connection to the node");
        let keys: redis::Iter<'_, String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter(&mut connection)
            .expect("SCAN answers");
        keys.count()
    }

    fn try_nodes(&self, port: u16) -> Option<Vec<Node>> {
        let text: String = self.try_command(port, &["CLUSTER", "NODES"]).ok()?;
        Some(
            text.lines()
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split(' ').collect();
                    let port = fields.get(1)?.split([':', '@']).nth(1)?.parse().ok()?;
                    let flags = fields.get(2)?;
                    Some(Node {
                        id: fields[0].to_owned(),
                        port,
                        primary: flags.contains("master"),
                        primary_id: Some(fields.get(3)?.to_string()).filter(|id| id != "-"),
                        failed: flags.contains("fail") && !flags.contains("fail?"),
                    })
                })
                .collect(),
        )
    }

    /// The cluster's nodes, as a live node sees them.
    pub fn nodes(&self) -> Vec<Node> {
        let port = self.live_ports()[0];
        self.try_nodes(port).expect("CLUSTER NODES answers")
    }

    /// The live primaries.
    pub fn primaries(&self) -> Vec<Node> {
        self.nodes()
            .into_iter()
            .filter(|node| node.primary && !node.failed && self.is_live(node.port))
            .collect()
    }

    /// The port of the primary serving `key`'s slot.
    pub fn primary_of(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        let slot: i64 = self.command(port, &["CLUSTER", "KEYSLOT", key]);
        let slots: redis::Value = self.command(port, &["CLUSTER", "SLOTS"]);
        let redis::Value::Array(ranges) = slots else {
            panic!("CLUSTER SLOTS: {slots:?}")
        };
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                continue;
            };
            let (redis::Value::Int(start), redis::Value::Int(end)) = (&fields[0], &fields[1])
            else {
                continue;
            };
            if (*start..=*end).contains(&slot) {
                let redis::Value::Array(primary) = &fields[2] else {
                    panic!("CLUSTER SLOTS: {fields:?}")
                };
                let redis::Value::Int(port) = primary[1] else {
                    panic!("CLUSTER SLOTS: {primary:?}")
                };
                return port as u16;
            }
        }
        panic!("slot {slot} is not served")
    }

    /// Kills the node at `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        let index = self.ports.iter().position(|&p| p == port).expect("a node");
        if let Some(mut child) = self.children[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("cluster logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
