//! Issue 36: fleet state on a real Redis Cluster (three masters, a replica each) started by the
//! test: the store behaviour suite, the change log and state in one hash slot, per-client keys
//! spread over the masters, and a failover of the master holding the change log followed by
//! both replicas with nothing lost.

use crate::redis::{check_path, revoke, token_with_jti, wait_for};
use crate::support::cluster::RedisCluster;
use crate::support::{Launch, Portcullis, scratch};
use portcullis::clock::{Clock, SystemClock};
use portcullis::state::redis_store::RedisState;
use portcullis::state::{RedisSettings, RedisTarget, StateHealth};
use std::sync::Arc;
use std::time::Duration;

fn cluster_store(cluster: &RedisCluster, prefix: &str) -> Arc<RedisState> {
    let settings = RedisSettings {
        target: RedisTarget::Cluster { nodes: vec![cluster.seed()] },
        ..crate::redis::settings(String::new(), prefix)
    };
    let health = Arc::new(StateHealth::new(Duration::from_secs(30), SystemClock.now_millis()));
    Arc::new(RedisState::new(&settings, health, Arc::new(SystemClock)).expect("store"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_keeps_the_fleet_through_a_failover_of_the_change_log_master() {
    let dir = scratch("redis-cluster");
    let mut cluster = RedisCluster::start(&dir);

    // The behaviour every backend shows, on the cluster; a second store follows it.
    let writer = cluster_store(&cluster, "suite");
    crate::redis::suite_then_follow(&writer, cluster_store(&cluster, "suite")).await;

    // Fleet rate-limit keys are per client and spread over the slots: 40 clients' keys land on
    // more than one master (the suite's shared keys are all in `{suite}`'s one slot).
    for i in 0..40 {
        let granted = writer.lease("tier", &format!("client-{i}"), 1_000_000, 5, 1).await.map(|g| g.granted);
        assert_eq!(granted.map_err(|e| e.to_string()), Ok(1), "client {i}");
    }
    assert!(cluster.masters_with_keys() >= 2, "every rate-limit key landed on one master");

    // Two replicas of the sidecar on the cluster.
    let state =
        format!("state: {{ backend: redis, cluster: {{ nodes: [\"{}\"] }}, max_staleness: 30s }}", cluster.seed());
    let start = |name: &str| {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).expect("dir");
        Portcullis::launch(&sub, Launch { extra: &state, ..Launch::default() })
    };
    let (a, b) = (start("a"), start("b"));
    let (before, after, valid) =
        (token_with_jti("clu", "jti-before"), token_with_jti("clu", "jti-after"), token_with_jti("clu", "jti-ok"));
    assert_eq!(revoke(&a, "jti-before"), 201);
    wait_for(&b, &before, (401, "token_revoked"), Duration::from_secs(10)).await;
    assert_eq!(check_path(&a, "/api/items", &format!("Bearer {valid}")).await.0, 200);

    // The change log and every state hash are in the slot of `{portcullis}`: fail its master.
    let slot = cluster.slot("{portcullis}:changes");
    assert_eq!(cluster.slot("{portcullis}:state:revocation"), slot, "one hash slot for the shared keys");
    let master = cluster.master_of(slot);
    let exists = cluster.nodes[master].command("EXISTS {portcullis}:changes");
    assert!(exists.contains(":1"), "the change log is not on the master of its slot: {exists}");
    let took = cluster.fail_master(master);
    println!("the cluster promoted the change log's replica in {took:?}");

    // Writes reach the promoted master; both replicas follow it and lose nothing.
    crate::redis::after_failover(&a, &b, [&before, &after, &valid]).await;
    drop((a, b));
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
