//! The merge rule as a table, and the model checker: random histories of admin writes and
//! removals (several spellings of one identity), Redis restarts (empty and from an older
//! snapshot), lossy failovers, paused and new replicas — after which every replica must enforce
//! the last acknowledged write of every identity.

use super::*;
use crate::decision::{BlockCheck, MembershipCheck, UnixTime};
use crate::state::local::LocalState;
use proptest::prelude::*;
use std::collections::HashMap;

fn member(tenant: &str, sub: &str) -> Item {
    Item::Member(Member { tenant: tenant.into(), iss: "iss".into(), sub: sub.into(), roles: vec!["r".into()] })
}

#[test]
fn merge_table() {
    let block = |w, cidr: &str| Entry::block(w, cidr, 9_999_999_999).expect("cidr");
    let unblock = |w, cidr: &str| Entry::unblock(w, cidr, None).expect("cidr");
    let put = |w| Entry::new(w, member("t", "alice"), None);
    let removed = |w| Entry::tombstone(w, member("t", "alice"), None);
    // (newer, older, whether the first beats the second)
    let cases: Vec<(&str, Entry, Entry, bool)> = vec![
        ("a later add beats a tombstone", block(2, "10.9.9.9"), unblock(1, "10.9.9.9/32"), true),
        ("a later tombstone beats an add", unblock(2, "::ffff:10.9.9.9"), block(1, "10.9.9.9"), true),
        ("an earlier add loses", block(1, "10.9.9.9"), unblock(2, "10.9.9.9"), false),
        ("same ms: a block beats its removal", block(5, "10.9.9.9"), unblock(5, "10.9.9.9"), true),
        ("same ms: a member's removal beats its put", removed(5), put(5), true),
        ("same ms: a put loses to the removal", put(5), removed(5), false),
        ("an entry does not beat itself", put(5), put(5), false),
    ];
    for (name, a, b, want) in cases {
        assert_eq!(a.identity(), b.identity(), "{name}: one identity");
        assert_eq!(a.beats(&b), want, "{name}");
    }
    // Every spelling of one network is one identity; other networks are others.
    let spellings = ["10.9.9.9", "10.9.9.9/32", "::ffff:10.9.9.9", "::ffff:a09:909", "::ffff:10.9.9.9/128"];
    for s in spellings {
        assert_eq!(block(1, s).identity(), (Kind::Block, "10.9.9.9".to_string()), "{s}");
    }
    assert_eq!(block(1, "::ffff:10.0.0.0/104").identity().1, "10.0.0.0/8");
    assert_ne!(block(1, "10.9.9.8").identity(), block(1, "10.9.9.9").identity());
    assert!(Entry::block(1, "10.9.9.9/33", 5).is_err());
}

#[test]
fn entries_round_trip_and_non_canonical_blocks_are_refused() {
    let entries = [
        Entry::block(1_700_000_000_123, "::ffff:10.7.7.7", 1_700_003_600).expect("cidr"),
        Entry::tombstone(7, member("t", "bob"), None),
        Entry::revocation(9, Revocation::Jti { iss: "i".into(), jti: "j:1".into(), expires_at: NEVER }, &Unbounded),
        Entry::new(3, Item::KeyRevocation { name: "ci".into(), sha256: "ab".repeat(32) }, None),
    ];
    for e in entries {
        let text = e.encode();
        assert_eq!(Entry::decode(&text), Ok(e.clone()), "{text}");
        let (w, rank, tiebreak) = e.order();
        assert!(text.starts_with(&format!("{w}:{rank}:{tiebreak:012x}:")), "{text}");
    }
    let forged = r#"1:1:000000000000:{"item":{"type":"block","cidr":"::ffff:10.7.7.7","expires_at":5}}"#;
    assert!(Entry::decode(forged).is_err(), "a block is stored in its canonical spelling only");
}

struct Horizon(i64);

impl Lifetimes for Horizon {
    fn jti_horizon(&self, _iss: &str) -> Option<i64> {
        Some(self.0)
    }
}

/// Issue 32: a jti revocation's lifetime is read from the policy in force when it is purged,
/// so raising `max_token_age` after the revocation extends it; `sub`/`sid` hold for ever
/// unless given an end.
#[test]
fn revocation_lifetimes_are_read_when_purging() {
    let revocation = |r| Entry::revocation(1_000_000, r, &Unbounded);
    let jti = revocation(Revocation::Jti { iss: "i".into(), jti: "j".into(), expires_at: NEVER });
    let sid = revocation(Revocation::Session { iss: "i".into(), sid: "s".into(), expires_at: NEVER });
    let sid_until = revocation(Revocation::Session { iss: "i".into(), sid: "s".into(), expires_at: 2_000 });
    let (short, long) = (Horizon(3_600), Horizon(86_400));
    assert!(jti.expired(1_000 + 3_600, &short));
    assert!(!jti.expired(1_000 + 3_600, &long), "the raised max_token_age holds it");
    assert!(!jti.expired(i64::MAX / 2, &Unbounded));
    assert!(!sid.expired(1_000 + 10 * 86_400, &short), "a sid revocation holds until its end or for ever");
    assert!(sid_until.expired(2_000, &short));
    // Written under 24h, purged under 1h: it holds the 24h it was written with (lowering
    // max_token_age and raising it again never lets the token back in).
    let floored =
        Entry::revocation(1_000_000, Revocation::Jti { iss: "i".into(), jti: "k".into(), expires_at: NEVER }, &long);
    assert!(!floored.expired(1_000 + 3_600, &short));
    assert!(floored.expired(1_000 + 86_400, &short));
}

#[test]
fn forged_entries_are_refused() {
    let key =
        |sha: &str| format!(r#"1:0:000000000000:{{"item":{{"type":"key_revocation","name":"n","sha256":"{sha}"}}}}"#);
    assert!(Entry::decode(&key(&"ab".repeat(32))).is_ok());
    assert!(Entry::decode(&key(&"AB".repeat(32))).is_err(), "one digest, one spelling");
    assert!(Entry::decode(&key("abc")).is_err());
    let far =
        format!(r#"{}:1:000000000000:{{"item":{{"type":"session","iss":"i","sid":"s","at":1}}}}"#, MAX_WRITTEN_MS);
    assert!(Entry::decode(&far).is_err(), "a time Lua cannot hold exactly");
}

// ---- the model checker ----

/// One identity the histories write, in one of its spellings.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// A block of 10.9.9.9 (five spellings) or 192.0.2.0/24 (two).
    Block {
        net: u8,
        spelling: u8,
    },
    Member {
        who: u8,
    },
}

const HOST_SPELLINGS: [&str; 5] =
    ["10.9.9.9", "10.9.9.9/32", "::ffff:10.9.9.9", "::ffff:a09:909", "::ffff:10.9.9.9/128"];
const NET_SPELLINGS: [&str; 2] = ["192.0.2.0/24", "::ffff:192.0.2.0/120"];

impl Target {
    fn key(self) -> (u8, u8) {
        match self {
            Target::Block { net, .. } => (0, net),
            Target::Member { who } => (1, who),
        }
    }

    fn entry(self, w: i64, add: bool) -> Entry {
        match self {
            Target::Block { net, spelling } => {
                let cidr = if net == 0 {
                    HOST_SPELLINGS[usize::from(spelling) % HOST_SPELLINGS.len()]
                } else {
                    NET_SPELLINGS[usize::from(spelling) % NET_SPELLINGS.len()]
                };
                if add {
                    Entry::block(w, cidr, i64::MAX / 4).expect("cidr")
                } else {
                    Entry::unblock(w, cidr, None).expect("cidr")
                }
            }
            Target::Member { who } => {
                let item = member("t", if who == 0 { "alice" } else { "bob" });
                if add { Entry::new(w, item, None) } else { Entry::tombstone(w, item, None) }
            }
        }
    }

    /// Whether `state` enforces this identity as present.
    fn present(self, state: &LocalState) -> bool {
        match self {
            Target::Block { net, .. } => {
                let ip = if net == 0 { "10.9.9.9" } else { "192.0.2.77" };
                state.blocked(ip.parse().expect("ip"), UnixTime(1))
            }
            Target::Member { who } => state.member_roles("t", "iss", if who == 0 { "alice" } else { "bob" }).is_some(),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        replica: u8,
        target: Target,
        add: bool,
    },
    Follow {
        replica: u8,
    },
    Resync {
        replica: u8,
    },
    Pause {
        replica: u8,
    },
    Resume {
        replica: u8,
    },
    /// Redis' replica catches up with the master.
    Replicate,
    /// An RDB snapshot is taken (what a restart with data comes back to).
    Snapshot,
    RestartEmpty,
    RestartFromSnapshot,
    /// The master dies and its lagging replica is promoted: unreplicated writes are lost.
    LossyFailover,
    StartReplica,
    Down,
    Up,
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (0u8..2, 0u8..5).prop_map(|(net, spelling)| Target::Block { net, spelling }),
        (0u8..2).prop_map(|who| Target::Member { who }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, target(), any::<bool>()).prop_map(|(replica, target, add)| Op::Write { replica, target, add }),
        4 => (0u8..4).prop_map(|replica| Op::Follow { replica }),
        1 => (0u8..4).prop_map(|replica| Op::Resync { replica }),
        1 => (0u8..4).prop_map(|replica| Op::Pause { replica }),
        1 => (0u8..4).prop_map(|replica| Op::Resume { replica }),
        2 => Just(Op::Replicate),
        1 => Just(Op::Snapshot),
        1 => Just(Op::RestartEmpty),
        1 => Just(Op::RestartFromSnapshot),
        1 => Just(Op::LossyFailover),
        1 => Just(Op::StartReplica),
        1 => Just(Op::Down),
        1 => Just(Op::Up),
    ]
}

/// Redis as the write script keeps it: field → entry, and the change stream.
#[derive(Clone, Default)]
struct Redis {
    hash: HashMap<Identity, Entry>,
    stream: Vec<Entry>,
    /// Changes whenever the stream is replaced (a restart, a failover): a follower's position
    /// in another epoch is a gap.
    epoch: u32,
}

impl Redis {
    /// The write script: keep the newer entry; an acknowledged write is moved past what is held.
    fn write(&mut self, mut entry: Entry, acknowledged: bool) -> Option<Entry> {
        if let Some(held) = self.hash.get(&entry.identity())
            && !entry.beats(held)
        {
            if !acknowledged {
                return None;
            }
            entry.written_ms = held.written_ms + 1;
        }
        self.hash.insert(entry.identity(), entry.clone());
        self.stream.push(entry.clone());
        Some(entry)
    }
}

struct Replica {
    state: LocalState,
    position: (u32, usize),
    paused: bool,
}

struct World {
    up: bool,
    master: Redis,
    lagging: Redis,
    snapshot: Redis,
    replicas: Vec<Replica>,
    clock: i64,
    /// The last acknowledged write per identity: (target, present).
    acknowledged: HashMap<(u8, u8), (Target, bool)>,
    epochs: u32,
}

impl World {
    fn new() -> Self {
        let mut world = World {
            up: true,
            master: Redis::default(),
            lagging: Redis::default(),
            snapshot: Redis::default(),
            replicas: Vec::new(),
            clock: 1_000,
            acknowledged: HashMap::new(),
            epochs: 0,
        };
        for _ in 0..2 {
            world.start_replica();
        }
        world
    }

    fn start_replica(&mut self) {
        self.replicas.push(Replica { state: LocalState::new(), position: (u32::MAX, 0), paused: false });
        let last = self.replicas.len() - 1;
        self.resync(last);
    }

    fn resync(&mut self, r: usize) {
        if !self.up {
            return;
        }
        let replica = &mut self.replicas[r];
        let plan = replica.state.plan_resync(self.master.hash.values().cloned().collect(), 0);
        for e in plan.take {
            replica.state.merge(e);
        }
        for e in plan.give {
            self.master.write(e, false);
        }
        replica.position = (self.master.epoch, self.master.stream.len());
    }

    fn follow(&mut self, r: usize) {
        if !self.up || self.replicas[r].paused {
            return;
        }
        let (epoch, at) = self.replicas[r].position;
        if epoch != self.master.epoch || at > self.master.stream.len() {
            return self.resync(r); // a gap: the follower resyncs
        }
        for e in self.master.stream[at..].iter().cloned() {
            self.replicas[r].state.merge(e);
        }
        self.replicas[r].position = (epoch, self.master.stream.len());
    }

    fn new_epoch(&mut self, mut redis: Redis) -> Redis {
        self.epochs += 1;
        redis.epoch = self.epochs;
        redis.stream.clear();
        redis
    }

    fn run(&mut self, op: &Op) {
        self.clock += 1;
        let index = |r: u8, n: usize| usize::from(r) % n;
        let n = self.replicas.len();
        match op.clone() {
            Op::Write { replica, target, add } => {
                let r = index(replica, n);
                if !self.up || self.replicas[r].paused {
                    return; // the admin API answers 503: nothing acknowledged
                }
                let mut entry = target.entry(self.clock, add);
                if let Some(held) = self.replicas[r].state.held(&entry) {
                    entry.written_ms = entry.written_ms.max(held.written_ms + 1);
                }
                if let Some(stored) = self.master.write(entry, true) {
                    self.replicas[r].state.merge(stored);
                    self.acknowledged.insert(target.key(), (target, add));
                }
            }
            Op::Follow { replica } => self.follow(index(replica, n)),
            Op::Resync { replica } => {
                let r = index(replica, n);
                if !self.replicas[r].paused {
                    self.resync(r);
                }
            }
            Op::Pause { replica } => self.replicas[index(replica, n)].paused = true,
            Op::Resume { replica } => self.replicas[index(replica, n)].paused = false,
            Op::Replicate => self.lagging = self.master.clone(),
            Op::Snapshot => self.snapshot = self.master.clone(),
            Op::RestartEmpty => self.master = self.new_epoch(Redis::default()),
            Op::RestartFromSnapshot => self.master = self.new_epoch(self.snapshot.clone()),
            Op::LossyFailover => self.master = self.new_epoch(self.lagging.clone()),
            Op::StartReplica => {
                if n < 6 {
                    self.start_replica();
                }
            }
            Op::Down => self.up = false,
            Op::Up => self.up = true,
        }
    }

    /// Redis back, every replica resumed: two rounds of resyncs (the first writes back what
    /// Redis lost, the second brings others' write-backs), then following.
    fn quiesce(&mut self) {
        self.up = true;
        for r in 0..self.replicas.len() {
            self.replicas[r].paused = false;
        }
        for _ in 0..2 {
            for r in 0..self.replicas.len() {
                self.resync(r);
            }
        }
        for r in 0..self.replicas.len() {
            self.follow(r);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// No acknowledged write is lost, reverted or resurrected: after any history, once Redis
    /// is reachable and every replica has resynced, each replica enforces the last
    /// acknowledged write of every identity, whatever spelling wrote it.
    #[test]
    fn acknowledged_writes_hold_on_every_replica(ops in proptest::collection::vec(op(), 1..40)) {
        let mut world = World::new();
        for op in &ops {
            world.run(op);
        }
        world.quiesce();
        for (target, present) in world.acknowledged.values() {
            for (r, replica) in world.replicas.iter().enumerate() {
                prop_assert_eq!(
                    target.present(&replica.state), *present,
                    "replica {} disagrees on {:?} after {:?}", r, target, ops
                );
            }
        }
    }
}

/// Regressions the model checker found while the rule was being built, kept as cases.
#[test]
fn kept_histories() {
    use Op::*;
    let alice = Target::Member { who: 0 };
    let host = |spelling| Target::Block { net: 0, spelling };
    let histories: Vec<Vec<Op>> = vec![
        // Removal acknowledged, then a lossy failover brings the member back in Redis.
        vec![
            Write { replica: 0, target: alice, add: true },
            Replicate,
            Write { replica: 0, target: alice, add: false },
            LossyFailover,
            StartReplica,
        ],
        // An unblock under one spelling, a block under another (the tombstone-by-text bug).
        vec![
            Write { replica: 0, target: host(1), add: false },
            Write { replica: 1, target: host(0), add: true },
            Resync { replica: 0 },
            StartReplica,
        ],
        // Redis restarts empty while a replica is paused; the removal must not come back.
        vec![
            Write { replica: 0, target: alice, add: true },
            Follow { replica: 1 },
            Pause { replica: 1 },
            Write { replica: 0, target: alice, add: false },
            RestartEmpty,
            Resume { replica: 1 },
            Follow { replica: 1 },
        ],
        // A restart from an older snapshot resurrects a removed block in Redis.
        vec![
            Write { replica: 0, target: host(3), add: true },
            Snapshot,
            Write { replica: 1, target: host(2), add: false },
            RestartFromSnapshot,
            StartReplica,
        ],
    ];
    for ops in histories {
        let mut world = World::new();
        for op in &ops {
            world.run(op);
        }
        world.quiesce();
        for (target, present) in world.acknowledged.values() {
            for replica in &world.replicas {
                assert_eq!(target.present(&replica.state), *present, "{target:?} after {ops:?}");
            }
        }
    }
}
