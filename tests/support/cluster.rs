//! A real Redis Cluster for tests: three masters and a replica each (six `redis-server`
//! processes with `cluster-enabled`), joined by `redis-cli --cluster create`.

use super::{RedisServer, eventually_blocking, free_port};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// One line of `CLUSTER NODES`.
struct NodeLine {
    id: String,
    port: u16,
    master: bool,
    failed: bool,
    /// The id of the master this node replicates (`-` for a master).
    replicates: String,
    slots: Vec<(u16, u16)>,
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = f.get(1)?.split('@').next()?;
            let port = addr.rsplit_once(':')?.1.parse().ok()?;
            let flags = f.get(2)?;
            let slots = f
                .iter()
                .skip(8)
                .filter_map(|r| match r.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => r.parse().ok().map(|s| (s, s)),
                })
                .collect();
            Some(NodeLine {
                id: f.first()?.to_string(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail"),
                replicates: f.get(3)?.to_string(),
                slots,
            })
        })
        .collect()
}

impl RedisCluster {
    pub fn start(dir: &Path) -> RedisCluster {
        let dir = dir.join("cluster");
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let nodes: Vec<RedisServer> = (0..6)
            .map(|i| {
                // The bus port is named, not port + 10000 (which may be outside the free range).
                let bus = free_port().to_string();
                let conf = format!("nodes-{i}.conf");
                RedisServer::start_with(
                    &dir,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        &bus,
                        "--cluster-config-file",
                        &conf,
                        "--cluster-node-timeout",
                        "1000",
                        "--repl-diskless-sync-delay",
                        "0",
                    ],
                )
            })
            .collect();
        let cli = super::redis_binary().with_file_name("redis-cli");
        let mut create = Command::new(&cli);
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create.args(["--cluster-replicas", "1", "--cluster-yes"]).output().expect("redis-cli --cluster");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok("the cluster never formed");
        cluster
    }

    /// `host:port` of the first node (the seed a client is given).
    pub fn seed(&self) -> String {
        format!("127.0.0.1:{}", self.nodes[0].port)
    }

    fn live(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.proc.is_some())
    }

    fn table(&self) -> Vec<NodeLine> {
        self.live().next().map(|n| parse_nodes(&n.command("CLUSTER NODES"))).unwrap_or_default()
    }

    /// Waits until every live node says the cluster is ok and every live replica is linked to
    /// its master.
    pub fn wait_ok(&self, what: &str) {
        let ok = || {
            let states: Vec<String> = self.live().map(|n| n.command("CLUSTER INFO")).collect();
            let linked = self.live().all(|n| {
                let info = n.command("INFO replication");
                info.contains("role:master") || info.contains("master_link_status:up")
            });
            if linked && states.iter().all(|s| s.contains("cluster_state:ok")) { Ok(()) } else { Err(states) }
        };
        eventually_blocking(Duration::from_secs(30), what, ok);
    }

    /// The slot of `key`.
    pub fn slot(&self, key: &str) -> u16 {
        let reply = self.nodes[0].command(&format!("CLUSTER KEYSLOT {key}"));
        reply.trim().trim_start_matches(':').parse().expect("slot")
    }

    /// The index (in `nodes`) of the live master serving `slot`.
    pub fn master_of(&self, slot: u16) -> usize {
        let table = self.table();
        let port = table
            .iter()
            .find(|n| n.master && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|n| n.port)
            .expect("a master for the slot");
        self.nodes.iter().position(|n| n.port == port).expect("a node of ours")
    }

    /// Masters (indexes) holding at least one key.
    pub fn masters_with_keys(&self) -> usize {
        let table = self.table();
        let masters: Vec<u16> = table.iter().filter(|n| n.master && !n.failed).map(|n| n.port).collect();
        self.nodes
            .iter()
            .filter(|n| n.proc.is_some() && masters.contains(&n.port))
            .filter(|n| n.command("DBSIZE").trim().trim_start_matches(':').parse::<u64>().is_ok_and(|k| k > 0))
            .count()
    }

    /// Kills the master at `index` and waits until its replica serves its slots.
    pub fn fail_master(&mut self, index: usize) -> Duration {
        let table = self.table();
        let port = self.nodes[index].port;
        let id = table.iter().find(|n| n.port == port).map(|n| n.id.clone()).expect("the master's id");
        let replica = table.iter().find(|n| n.replicates == id).map(|n| n.port).expect("a replica of the master");
        // What the master acknowledged is on its replica before it goes (a failover loses
        // what was never replicated; that loss is the resync's to repair, not this test's).
        let offset = |n: &RedisServer, field: &str| {
            let info = n.command("INFO replication");
            info.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().parse::<u64>().ok())
        };
        let replica_node = self.nodes.iter().find(|n| n.port == replica).expect("the replica");
        let synced =
            || match (offset(&self.nodes[index], "master_repl_offset:"), offset(replica_node, "slave_repl_offset:")) {
                (Some(m), Some(r)) if r >= m => Ok(()),
                other => Err(other),
            };
        eventually_blocking(Duration::from_secs(15), "the replica never caught up with its master", synced);
        self.nodes[index].stop();
        let promoted = || {
            let text = self.live().next().map(|n| n.command("CLUSTER NODES")).unwrap_or_default();
            let now_master = parse_nodes(&text).iter().any(|n| n.port == replica && n.master);
            if now_master { Ok(()) } else { Err(text) }
        };
        let (_, took) = eventually_blocking(Duration::from_secs(30), "the replica was never promoted", promoted);
        self.wait_ok("the cluster never recovered from the failover");
        took
    }
}
