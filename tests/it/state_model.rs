//! Issue 32, the one state model against the real thing: a memory backend restarted, a lossy
//! Sentinel failover, a resync against a large keyspace, the model checker's histories on real
//! `redis-server` processes, and decisions under reload checked against `explain`.

use crate::redis::{check, check_as, check_path, revoke, settings, token_with_jti};
use crate::support::{Portcullis, RedisServer, corpus, eventually, eventually_blocking, is, now, scratch};
use portcullis::clock::{Clock, SystemClock};
use portcullis::decision::{BlockCheck, MembershipCheck};
use portcullis::state::StateHealth;
use portcullis::state::blocks::{Block, BlockStore};
use portcullis::state::membership::{Member, MemberStore};
use portcullis::state::redis_store::RedisState;
use std::sync::Arc;
use std::time::Duration;

fn bearer(sub: &str) -> String {
    format!(
        "Bearer {}",
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, sub, now()))
    )
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
    assert!(status.is_ok_and(|s| s.success()), "kill -{name} {pid}");
}

/// (revoked token, blocked client's reason, member's status) on `p`.
async fn enforced(p: &Portcullis, token: &str, dave: &str) -> ((u16, String), String, u16) {
    (
        check(p, token).await,
        check_as(p, "192.0.2.44", "/api/items", &bearer("x")).await.1,
        check_path(p, "/tenants/hooli/x", dave).await.0,
    )
}

/// Before: the memory backend forgot every revocation, block and member at a restart (revoke →
/// 401, restart → 200, `GET /v1/revocations` → `[]`). Now it journals them to `state.dir`
/// before answering 201 and replays them at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_what_the_memory_backend_acknowledged() {
    let dir = scratch("state-journal");
    let p = Portcullis::start(&dir, "", &[]);
    let token = token_with_jti("journal", "jti-journal");
    assert_eq!(check(&p, &token).await.0, 200);
    assert_eq!(revoke(&p, "jti-journal"), 201);
    let block = p.admin_request("POST", "/v1/blocks", r#"{"cidr":"::ffff:192.0.2.44","ttl":"1h"}"#);
    assert_eq!(block.map(|r| r.status), Some(201));
    let member = format!(r#"{{"iss":"{}","sub":"dave","roles":["viewer"]}}"#, corpus::ISSUER);
    assert_eq!(p.admin_request("PUT", "/v1/tenants/hooli/members", &member).map(|r| r.status), Some(201));
    let dave = bearer("dave");
    let want = ((401, "token_revoked".to_string()), "ip_blocked".to_string(), 200);
    assert_eq!(enforced(&p, &token, &dave).await, want);
    drop(p);
    let p = Portcullis::start(&dir, "", &[]);
    assert_eq!(enforced(&p, &token, &dave).await, want, "a restart kept every acknowledged write");
    let listed = p.admin_request("GET", "/v1/revocations", "").map(|r| r.body).unwrap_or_default();
    assert!(listed.contains("jti-journal"), "{listed}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Before: a member removal acknowledged just before a lossy Sentinel failover was undone on
/// every replica (memberships were replaced from Redis at the resync, with no tombstone). Now
/// the removal is a tombstone the replicas hold and write back: the member stays out on A and
/// B, and a replica started after the failover never lets it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_failover_does_not_bring_a_removed_member_back() {
    let dir = scratch("state-lossy");
    let mut master = RedisServer::start(&dir);
    let master_port = master.port.to_string();
    let standby = RedisServer::start_with(&dir, &["--replicaof", "127.0.0.1", &master_port]);
    let linked = || {
        let info = standby.command("INFO replication");
        if info.contains("master_link_status:up") { Ok(()) } else { Err(info) }
    };
    eventually_blocking(Duration::from_secs(10), "the standby never linked", linked);
    let sentinel = RedisServer::start_sentinel(&dir, master.port);
    let state = format!(
        "state: {{ backend: redis, sentinel: {{ master: mymaster, nodes: [\"127.0.0.1:{}\"] }}, max_staleness: 30s, resync_interval: 1s }}",
        sentinel.port
    );
    let start = |name: &str| {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).expect("dir");
        Portcullis::start(&sub, &state, &[])
    };
    let (a, b) = (start("a"), start("b"));
    let dave = bearer("dave");
    let body = format!(r#"{{"iss":"{}","sub":"dave","roles":["viewer"]}}"#, corpus::ISSUER);
    assert_eq!(a.admin_request("PUT", "/v1/tenants/hooli/members", &body).map(|r| r.status), Some(201));
    let seen = || async { is(check_path(&b, "/tenants/hooli/x", &dave).await.0, 200) };
    eventually(Duration::from_secs(10), "B never saw the member", seen).await;
    // Every write so far is on the standby (whatever the keys look like).
    assert_eq!(master.command("WAIT 1 5000").trim(), ":1", "the standby never acknowledged the writes");

    // The standby stops and loses its link: the removal never reaches it.
    let standby_pid = standby.proc.as_ref().map(|p| p.child.id()).expect("standby pid");
    signal(standby_pid, "STOP");
    master.command("CLIENT KILL TYPE replica");
    assert_eq!(a.admin_request("DELETE", "/v1/tenants/hooli/members", &body).map(|r| r.status), Some(200));
    assert_eq!(check_path(&a, "/tenants/hooli/x", &dave).await.0, 403, "A refuses at once");
    let heard = || async { is(check_path(&b, "/tenants/hooli/x", &dave).await.0, 403) };
    eventually(Duration::from_secs(10), "B never heard the removal", heard).await;
    master.stop();
    signal(standby_pid, "CONT");
    let promoted = || {
        let reply = sentinel.command("SENTINEL get-master-addr-by-name mymaster");
        if reply.contains(&standby.port.to_string()) { Ok(()) } else { Err(reply) }
    };
    let (_, failover) = eventually_blocking(Duration::from_secs(30), "no failover", promoted);
    println!("the standby, without the removal, was promoted after {failover:?}");

    // A and B reconnect through the sentinel and resync against the promoted standby (A writes
    // its tombstone back there); a replica started after that must not let dave in either.
    for (name, p) in [("a", &a), ("b", &b)] {
        let resynced = || async {
            let metrics = p.get("/metrics").map(|r| r.body).unwrap_or_default();
            let n = metrics
                .lines()
                .find_map(|l| l.strip_prefix("portcullis_state_resyncs_total{reason=\"reconnect\"} "))
                .and_then(|v| v.parse::<f64>().ok());
            if n.is_some_and(|n| n >= 1.0) { Ok(()) } else { Err(n) }
        };
        eventually(Duration::from_secs(20), &format!("{name} never resynced with the new master"), resynced).await;
    }
    let c = start("c");
    for _ in 0..20 {
        for (name, p) in [("a", &a), ("b", &b), ("c", &c)] {
            assert_eq!(check_path(p, "/tenants/hooli/x", &dave).await.0, 403, "{name} let the removed member in");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((a, b, c, sentinel, standby, master));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A resync reads each kind's one hash with `HSCAN`: against 100,000 unrelated keys a replica
/// resyncs without a keyspace `SCAN` or `KEYS`. (The one `SCAN` is the first replica's
/// migration of an earlier release's per-item keys, once per Redis.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_reads_the_state_hashes_never_the_keyspace() {
    use portcullis::state::revocation::{Revocation, RevocationStore};
    let dir = scratch("state-hscan");
    let redis = RedisServer::start_with(&dir, &["--enable-debug-command", "local"]);
    redis.command("DEBUG POPULATE 100000 unrelated 16");
    assert_eq!(redis.command("DBSIZE").trim(), ":100000");
    // State an earlier release kept in per-item keys: migrated once, by the first replica.
    let mut old = redis::Client::open(redis.url()).expect("client").get_connection().expect("connect");
    let old_block = r#"{"type":"block","cidr":"10.1.2.4","expires_at":99999999999}"#;
    let old_member = r#"{"type":"member_put","tenant":"old","iss":"i","sub":"s","roles":[]}"#;
    let _: () = redis::cmd("SET").arg("hscan:block:x").arg(old_block).query(&mut old).expect("set");
    let _: () = redis::cmd("SET").arg("hscan:member:y").arg(old_member).query(&mut old).expect("set");
    let writer = crate::redis::store(redis.url(), "hscan");
    let migrating = tokio::spawn(writer.clone().follow());
    let migrated = || async {
        let got = (
            writer.blocked("10.1.2.4".parse().expect("ip"), portcullis::decision::UnixTime(now())),
            writer.member_roles("old", "i", "s").is_some(),
        );
        if got == (true, true) { Ok(()) } else { Err(got) }
    };
    eventually(Duration::from_secs(10), "the old keys were never migrated", migrated).await;
    migrating.abort();
    let forever = i64::MAX;
    writer.add(Revocation::Jti { iss: "i".into(), jti: "j".into(), expires_at: forever }).await.expect("revoke");
    writer.block(Block { cidr: "10.1.2.3".into(), expires_at: now() + 3600 }).await.expect("block");
    let member = Member { tenant: "t".into(), iss: "i".into(), sub: "s".into(), roles: vec![] };
    MemberStore::put(writer.as_ref(), member).await.expect("member");
    redis.command("CONFIG RESETSTAT");
    let late = crate::redis::store(redis.url(), "hscan");
    let following = tokio::spawn(late.clone().follow());
    let synced = || async {
        let got = (
            RevocationStore::list(late.as_ref(), portcullis::decision::UnixTime(now())).len(),
            late.blocked("10.1.2.3".parse().expect("ip"), portcullis::decision::UnixTime(now())),
            late.member_roles("t", "i", "s").is_some() && late.member_roles("old", "i", "s").is_some(),
        );
        if got == (1, true, true) { Ok(()) } else { Err(got) }
    };
    eventually(Duration::from_secs(10), "the late replica never resynced", synced).await;
    following.abort();
    let stats = redis.command("INFO commandstats");
    assert!(stats.contains("cmdstat_hscan:"), "{stats}");
    assert!(!stats.contains("cmdstat_scan:") && !stats.contains("cmdstat_keys:"), "a keyspace scan: {stats}");
    let _ = std::fs::remove_dir_all(&dir);
}

mod histories {
    //! The model checker's histories, bounded, against real `redis-server`: several in-process
    //! replicas (each a `RedisState` with its follower), Redis restarted empty or from an older
    //! snapshot (what a lossy failover leaves), followers paused and replicas started late.
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    #[derive(Debug, Clone)]
    enum Op {
        Block { replica: usize, spelling: usize, add: bool },
        Member { replica: usize, add: bool },
        Snapshot,
        RestartEmpty,
        RestartFromSnapshot,
        Pause { replica: usize },
        StartReplica,
    }

    const SPELLINGS: [&str; 4] = ["10.9.9.9", "10.9.9.9/32", "::ffff:10.9.9.9", "::ffff:a09:909"];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..3, 0usize..4, any::<bool>()).prop_map(|(replica, spelling, add)| Op::Block { replica, spelling, add }),
            3 => (0usize..3, any::<bool>()).prop_map(|(replica, add)| Op::Member { replica, add }),
            1 => Just(Op::Snapshot),
            1 => Just(Op::RestartEmpty),
            1 => Just(Op::RestartFromSnapshot),
            1 => (0usize..3).prop_map(|replica| Op::Pause { replica }),
            1 => Just(Op::StartReplica),
        ]
    }

    struct Replica {
        store: Arc<RedisState>,
        follower: Option<tokio::task::JoinHandle<()>>,
    }

    fn replica(url: &str) -> Replica {
        let mut s = settings(url.to_string(), "model");
        s.resync_interval = Duration::from_secs(1);
        let health = Arc::new(StateHealth::new(Duration::from_secs(30), SystemClock.now_millis()));
        let store = Arc::new(RedisState::new(&s, health, Arc::new(SystemClock)).expect("store"));
        let follower = Some(tokio::spawn(store.clone().follow()));
        Replica { store, follower }
    }

    async fn run(ops: Vec<Op>, dir: &std::path::Path) -> Result<(), String> {
        let _ = std::fs::remove_file(dir.join("dump.rdb"));
        let mut redis = RedisServer::start(dir);
        let url = redis.url();
        let mut replicas = vec![replica(&url), replica(&url)];
        // The last acknowledged write of each identity: (blocked, member).
        let (mut blocked, mut member) = (None, None);
        let far = now() + 86_400;
        for op in &ops {
            match op.clone() {
                Op::Block { replica, spelling, add } => {
                    let store = &replicas[replica % replicas.len()].store;
                    let cidr = SPELLINGS[spelling];
                    let written = if add {
                        store.block(Block { cidr: cidr.into(), expires_at: far }).await
                    } else {
                        store.unblock(cidr).await
                    };
                    if written.is_ok() {
                        blocked = Some(add);
                    }
                }
                Op::Member { replica, add } => {
                    let store = &replicas[replica % replicas.len()].store;
                    let m = Member { tenant: "t".into(), iss: "i".into(), sub: "s".into(), roles: vec![] };
                    let written = if add {
                        MemberStore::put(store.as_ref(), m).await
                    } else {
                        MemberStore::remove(store.as_ref(), "t", "i", "s").await
                    };
                    if written.is_ok() {
                        member = Some(add);
                    }
                }
                Op::Snapshot => {
                    redis.command("SAVE");
                }
                Op::RestartEmpty => {
                    let _ = std::fs::remove_file(dir.join("dump.rdb"));
                    redis = tokio::task::spawn_blocking(move || {
                        redis.restart();
                        redis
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                }
                Op::RestartFromSnapshot => {
                    redis = tokio::task::spawn_blocking(move || {
                        redis.restart();
                        redis
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                }
                Op::Pause { replica } => {
                    let n = replicas.len();
                    if let Some(f) = replicas[replica % n].follower.take() {
                        f.abort();
                    }
                }
                Op::StartReplica => replicas.push(replica(&url)),
            }
        }
        // Quiesce: every follower running; periodic resyncs (1 s) converge the views.
        for r in &mut replicas {
            if r.follower.is_none() {
                r.follower = Some(tokio::spawn(r.store.clone().follow()));
            }
        }
        let host = "10.9.9.9".parse().expect("ip");
        let t = portcullis::decision::UnixTime(now());
        let agreed = || async {
            let views: Vec<(bool, bool)> = replicas
                .iter()
                .map(|r| (r.store.blocked(host, t), r.store.member_roles("t", "i", "s").is_some()))
                .collect();
            let good = views
                .iter()
                .all(|(b, m)| blocked.is_none_or(|want| want == *b) && member.is_none_or(|want| want == *m));
            if good { Ok(()) } else { Err(views) }
        };
        let settled = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                if agreed().await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let views = agreed().await;
        for r in &mut replicas {
            if let Some(f) = r.follower.take() {
                f.abort();
            }
        }
        match (settled, views) {
            (Ok(()), _) => Ok(()),
            (Err(_), Err(views)) => Err(format!("want blocked {blocked:?} member {member:?}, replicas say {views:?}")),
            (Err(_), Ok(())) => Ok(()),
        }
    }

    /// Bounded: a few histories per run (each restarts real processes); the pure model checker
    /// (`state::model::tests`) runs thousands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn model_histories_hold_against_real_redis() {
        let dir = scratch("state-histories");
        let mut runner = TestRunner::new(Config { cases: 6, failure_persistence: None, ..Config::default() });
        let strategy = proptest::collection::vec(op(), 3..10);
        let handle = tokio::runtime::Handle::current();
        let result = tokio::task::block_in_place(|| {
            runner.run(&strategy, |ops| {
                let dir = dir.clone();
                handle.block_on(run(ops, &dir)).map_err(TestCaseError::fail)
            })
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// One snapshot per check, proven against `explain`: while the policy flips every 200 µs (a thread of its own)
/// between A and B (B adds `not: suspended` to the API route and so reads a claim A's verified
/// tokens do not keep), concurrent identical checks (coalesced by the claims cache, which keeps
/// nothing with `ttl: 0s`) are decided; every audit line names the snapshot that decided
/// (policy hash and generation), and `explain` of that snapshot must give the same answer.
/// Before: allows of the suspended token under B, decided on A's verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decisions_under_reload_match_explain_of_the_snapshot_they_name() {
    use portcullis::config::{Settings, parse_and_validate};
    use portcullis::dev::explain::{ExplainRequest, explain};
    use portcullis::dev::request::{HeaderEncoding, check_request};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = scratch("state-reload-explain");
    let audit = dir.join("audit.log");
    let base = format!(
        "{}\ncache: {{ ttl: 0s }}\ntelemetry: {{ audit: {{ file: \"{}\" }} }}\n",
        crate::support::policy_with_ports("127.0.0.1:0", 0),
        audit.display()
    );
    let api = "{ name: api, match: { path_prefix: /api }, require: { scopes: [read] } }";
    assert!(base.contains(api));
    let b_text = base.replace(
        api,
        "{ name: api, match: { path_prefix: /api }, require: { scopes: [read], not: { claims: [ { path: /suspended, equals: true } ] } } }",
    );
    let load = |text: &str, generation: u64| -> Settings {
        let mut settings = parse_and_validate(text, &corpus::fixtures()).unwrap_or_else(|e| panic!("{e}"));
        if let Some(snapshot) = Arc::get_mut(&mut settings.snapshot) {
            snapshot.generation = generation;
        }
        settings
    };
    let (a, b) = (load(&base, 0), load(&b_text, 1));
    assert_ne!(a.snapshot.hash, b.snapshot.hash);
    let server = crate::support::InProcess::start_at_now(&a).await;
    let now_s = server.clock().now().0;
    let mut suspended = corpus::claims(corpus::ISSUER, "sus", now_s);
    suspended["suspended"] = serde_json::json!(true);
    let tokens = [
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &suspended),
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "ok", now_s)),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    // A thread of its own, so the flips keep coming however busy the runtime is.
    let flipper = {
        let (state, stop) = (server.state.clone(), stop.clone());
        let snapshots = [b.snapshot.clone(), a.snapshot.clone()];
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_micros(200));
                state.replace_snapshot(snapshots[n % 2].clone());
                n += 1;
            }
            n
        })
    };
    let mut workers = Vec::new();
    for w in 0..16 {
        let (state, stop, sent, tokens) = (server.state.clone(), stop.clone(), sent.clone(), tokens.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Acquire) {
                // Mostly the suspended token, so checks of it coalesce.
                let which = usize::from(i % 4 == 3);
                let bearer = format!("Bearer {}", tokens[which]);
                let mut request =
                    check_request("GET", "/api/items", &[("authorization", &bearer)], HeaderEncoding::Map);
                if let Some(http) =
                    request.attributes.as_mut().and_then(|a| a.request.as_mut()).and_then(|r| r.http.as_mut())
                {
                    http.id = format!("w{w}-{i}-t{which}");
                }
                state.check(request).await;
                sent.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    stop.store(true, Ordering::Release);
    for w in workers {
        w.await.expect("worker");
    }
    let flips = flipper.join().expect("flipper");
    let sent = sent.load(Ordering::Relaxed);
    let lines = || {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        let n = text.lines().count();
        if n >= sent { Ok(text) } else { Err(n) }
    };
    let (text, _) = eventually_blocking(Duration::from_secs(10), "audit lines missing", lines);
    let by_hash: HashMap<String, &Settings> =
        [(a.snapshot.hash.to_string(), &a), (b.snapshot.hash.to_string(), &b)].into_iter().collect();
    let mut expected: HashMap<(String, String), (String, String)> = HashMap::new();
    let (mut checked, mut under_b, mut mismatches) = (0, 0, Vec::new());
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line).expect("audit json");
        let id = event["request_id"].as_str().unwrap_or_default().to_string();
        let Some(which) = id.rsplit_once("-t").and_then(|(_, t)| t.parse::<usize>().ok()) else { continue };
        let hash = event["policy"].as_str().unwrap_or_default().to_string();
        let settings = by_hash.get(&hash).unwrap_or_else(|| panic!("audit names an unknown policy {hash}"));
        under_b += usize::from(hash == *b.snapshot.hash);
        let want = expected.entry((hash.clone(), which.to_string())).or_insert_with(|| {
            let request = ExplainRequest {
                path: "/api/items".into(),
                token: Some(tokens[which].clone()),
                ..ExplainRequest::default()
            };
            let e = explain(settings, &request, portcullis::decision::UnixTime(now_s));
            (e.decision.to_string(), e.reason.to_string())
        });
        let got = (
            event["decision"].as_str().unwrap_or_default().to_string(),
            event["reason"].as_str().unwrap_or_default().to_string(),
        );
        if got != *want {
            mismatches.push(format!("{id} under {hash}: audited {got:?}, explain says {want:?}"));
        }
        checked += 1;
    }
    println!("{checked} audited decisions over {flips} reloads checked against explain ({under_b} under B)");
    assert!(checked >= sent && under_b > 0 && flips >= 10, "{checked} of {sent}, {under_b} under B, {flips} flips");
    assert_eq!(expected.get(&(b.snapshot.hash.to_string(), "0".into())).map(|w| w.1.as_str()), Some("claim_mismatch"));
    assert!(mismatches.is_empty(), "{} mismatches: {:?}", mismatches.len(), &mismatches[..mismatches.len().min(5)]);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload cannot bring in a journal the running process never opened: started with
/// acknowledged ephemeral state, a policy that swaps the acknowledgment for `state.dir` is
/// refused (counted, logged, the old policy stays), so run-time writes are never taken on the
/// promise of a journal that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_promise_a_journal_the_process_does_not_have() {
    let dir = scratch("state-reload-journal");
    let p = Portcullis::start(&dir, "state: { backend: memory, acknowledge_ephemeral_state: true }", &[]);
    let text = std::fs::read_to_string(&p.config).expect("policy");
    let journaled = text.replace(
        "state: { backend: memory, acknowledge_ephemeral_state: true }",
        &format!("state: {{ backend: memory, dir: \"{}\" }}", dir.join("later").display()),
    );
    assert_ne!(journaled, text);
    std::fs::write(&p.config, journaled).expect("write");
    p.signal("HUP");
    let refused = || async {
        let metrics = p.get("/metrics").map(|r| r.body).unwrap_or_default();
        let errors = metrics
            .lines()
            .find_map(|l| l.strip_prefix("portcullis_config_reload_total{result=\"error\"} "))
            .and_then(|v| v.parse::<f64>().ok());
        if errors.is_some_and(|n| n >= 1.0) { Ok(()) } else { Err(errors) }
    };
    eventually(Duration::from_secs(10), "the reload was not refused", refused).await;
    let log = std::fs::read_to_string(&p.proc.stderr).unwrap_or_default()
        + &std::fs::read_to_string(&p.proc.stdout).unwrap_or_default();
    assert!(log.contains("restart to apply it"), "{log}");
    assert!(!dir.join("later").exists(), "no journal was opened");
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}
