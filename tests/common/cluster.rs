//! A real Redis Cluster for a test: 3 primaries and 3 replicas, `redis-server
//! --cluster-enabled yes` on free ports below the ephemeral range (client and bus
//! ports both), joined by `redis-cli --cluster create … --cluster-yes`, and killed
//! and removed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_low_port;

/// How long a node waits for a silent primary before its replica takes over: short,
/// so a failover test takes seconds.
const NODE_TIMEOUT_MS: &str = "1000";

pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

pub struct RedisCluster {
    pub nodes: Vec<Node>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts six nodes and forms the cluster; waits until every node says `ok`.
    pub fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(format!(
            "notifd_cluster_{}_{}",
            std::process::id(),
            super::unique("c")
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir,
        };
        for i in 0..6 {
            let (port, bus) = (free_low_port(), free_low_port());
            let node_dir = cluster.dir.join(i.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    NODE_TIMEOUT_MS,
                ])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs (install redis-server)");
            cluster.nodes.push(Node {
                port,
                child: Some(child),
            });
            wait(Duration::from_secs(10), "a node answers PING", || {
                super::redis_answers(port)
            });
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs (install redis-tools)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_ok(Duration::from_secs(30));
        // A replica that has not synced with its primary yet would not take over
        // (its data counts as too old): wait for every link.
        wait(Duration::from_secs(30), "every replica syncs", || {
            cluster.nodes.iter().all(|node| {
                let info = cluster.cli(node.port, &["INFO", "replication"]);
                info.contains("role:master") || info.contains("master_link_status:up")
            })
        });
        cluster
    }

    /// `redis+cluster://` naming every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Every live node reports `cluster_state:ok` and agrees on three primaries
    /// serving all slots.
    pub fn wait_ok(&self, within: Duration) {
        wait(within, "the cluster is ok", || {
            self.live().all(|node| {
                let info = self.cli(node.port, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_size:3")
            }) && self.primaries().len() == 3
        });
    }

    /// Waits until a replica took over from the primary on `killed`: three
    /// primaries again, `killed` not among them, and every live node `ok`.
    pub fn wait_failover(&self, killed: u16, within: Duration) {
        wait(within, "a replica takes over", || {
            let primaries = self.primaries();
            primaries.len() == 3
                && !primaries.contains(&killed)
                && self.live().all(|node| {
                    self.cli(node.port, &["CLUSTER", "INFO"])
                        .contains("cluster_state:ok")
                })
        });
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// The ports of the primaries (as a live node sees them), those holding slots.
    pub fn primaries(&self) -> Vec<u16> {
        let Some(node) = self.live().next() else {
            return Vec::new();
        };
        self.cli(node.port, &["CLUSTER", "NODES"])
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
            .filter(|line| line.split_whitespace().count() > 8)
            .filter_map(|line| {
                let addr = line.split_whitespace().nth(1)?;
                addr.split(['@', ':']).nth(1)?.parse().ok()
            })
            .collect()
    }

    /// Moves `slot` (which holds no keys) to the primary on `to`, as a resharding
    /// does: IMPORTING on the target, MIGRATING on the owner, then the new owner on
    /// every primary.
    pub fn move_slot(&self, slot: u16, to: u16) {
        let id = |port: u16| self.cli(port, &["CLUSTER", "MYID"]).trim().to_string();
        let owner = self
            .primaries()
            .into_iter()
            .find(|&port| {
                self.cli(port, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
                    .trim()
                    == "0"
                    && self.owns(port, slot)
            })
            .expect("the slot's owner");
        let (slot, to_id, owner_id) = (slot.to_string(), id(to), id(owner));
        self.cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &owner_id]);
        self.cli(owner, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        for port in self.primaries() {
            self.cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
    }

    /// Whether the primary on `port` serves `slot` (its own view).
    pub fn owns(&self, port: u16, slot: u16) -> bool {
        let nodes = self.cli(port, &["CLUSTER", "NODES"]);
        let Some(me) = nodes.lines().find(|line| line.contains("myself")) else {
            return false;
        };
        me.split_whitespace().skip(8).any(|range| {
            let mut ends = range.split('-').filter_map(|n| n.parse::<u16>().ok());
            match (ends.next(), ends.next()) {
                (Some(first), Some(last)) => (first..=last).contains(&slot),
                (Some(only), None) => only == slot,
                _ => false,
            }
        })
    }

    /// `redis-cli -p port args…`, its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Kills (SIGKILL) the node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.port).collect();
        for port in ports {
            self.kill(port);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
