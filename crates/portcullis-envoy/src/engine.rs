//! The decision inside Envoy, safe Rust only: the same core (`begin`/`finish`), verifier, claims
//! cache, fleet-state model and answer as `portcullis serve`'s ext_authz path; only the edges
//! differ (no gRPC, no tokio: a request is decided on the Envoy worker thread that holds it).

use crate::link::StateLink;
use crate::settings::ModuleSettings;
use arc_swap::ArcSwap;
use portcullis::cache::ClaimsCache;
use portcullis::clock::{Clock, SystemClock};
use portcullis::config::Snapshot;
use portcullis::jwt::Verifier;
use portcullis::state::blocks::{Block, BlockStore};
use portcullis::state::fleet::FleetState;
use portcullis::state::journal::MemoryPersist;
use portcullis::state::local::LocalState;
use portcullis::state::ratelimit::RateLimits;
use portcullis::telemetry::audit::AuditSink;
use portcullis_core::{
    Answer, CheckInput, Decision, Deny, DenyReason, OnStale, Outcome, Progress, Services, answer, begin, client_key,
    finish,
};
use std::sync::Arc;
use std::time::Duration;

/// One filter configuration's decision machinery, shared by every worker.
pub struct Engine {
    /// Shared with the state link, which installs remote key sets in its verifier.
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// With `on_stale: serve_local`, the same policy under `on_stale: deny`: what decides until
    /// the sidecar's first snapshot is in (there is no "last synced state" to serve yet).
    unsynced: arc_swap::ArcSwapOption<Snapshot>,
    cache: ClaimsCache,
    /// This Envoy's replica of the fleet state: the sidecar's stream merged into it by the
    /// model's one rule, and the auto-block counts of this Envoy.
    state: Arc<FleetState<MemoryPersist>>,
    rate_limits: RateLimits,
    clock: Arc<dyn Clock>,
    audit: AuditSink,
    link: Option<StateLink>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("policy", &self.snapshot.load().hash).finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(module: ModuleSettings) -> Result<Arc<Self>, String> {
        Self::with_clock(module, Arc::new(SystemClock))
    }

    pub fn with_clock(module: ModuleSettings, clock: Arc<dyn Clock>) -> Result<Arc<Self>, String> {
        let settings = module.settings;
        let local = Arc::new(LocalState::new());
        local.set_lifetimes(settings.snapshot.revocation_lifetimes.clone());
        let state = Arc::new(FleetState::with(local.clone(), MemoryPersist::Ephemeral, clock.clone()));
        let has_sidecar = module.state_socket.is_some();
        let snapshot = Arc::new(ArcSwap::new(settings.snapshot.clone()));
        let link = module
            .state_socket
            .map(|path| StateLink::start(path, local, snapshot.clone(), clock.clone(), module.stale_after));
        // With a sidecar, audit lines go to its sink (the policy's file may be in its container).
        let audit = match &link {
            Some(link) => AuditSink::with_writer(Box::new(link.audit_writer()), settings.audit.allow_sample_rate),
            None => AuditSink::open(&settings.audit),
        }
        .map_err(|e| format!("audit: {e}"))?;
        let unsynced = arc_swap::ArcSwapOption::new(deny_when_stale(&settings.snapshot));
        let engine = Arc::new(Self {
            snapshot,
            unsynced,
            cache: ClaimsCache::new(settings.cache),
            state,
            rate_limits: RateLimits::new(clock.clone()),
            clock,
            audit,
            link,
        });
        if let Some(path) = module.policy_file {
            crate::watch::watch_policy(Arc::downgrade(&engine), path, settings.sources, has_sidecar);
        }
        Ok(engine)
    }

    /// Puts a new policy in force for every request that starts from now on. Remote issuers
    /// get the newest key sets the sidecar sent (the new stores start empty), under the same
    /// lock as a key-set line, so none is lost to the swap.
    pub fn replace_snapshot(&self, snapshot: Arc<Snapshot>) {
        self.state.local().set_lifetimes(snapshot.revocation_lifetimes.clone());
        self.unsynced.store(deny_when_stale(&snapshot));
        match &self.link {
            Some(link) => link.keys.swap_in(snapshot, &self.snapshot, self.clock.now().0),
            None => self.snapshot.store(snapshot),
        }
    }

    pub fn policy_hash(&self) -> Arc<str> {
        self.snapshot.load().hash.clone()
    }

    fn services<'a>(&'a self, verifier: &'a Verifier, state_stale: bool) -> Services<'a> {
        Services {
            verifier,
            revocations: self.state.as_ref(),
            memberships: self.state.as_ref(),
            blocks: self.state.as_ref(),
            rate_limits: &self.rate_limits,
            api_keys: self.state.as_ref(),
            sessions: self.state.as_ref(),
            proofs: &portcullis_core::binding::NoProofs,
            state_stale,
            trace: None,
        }
    }

    /// Decides `input` on one snapshot, audits it and returns what Envoy must do.
    pub fn check(&self, input: &CheckInput) -> (Answer, Vec<(&'static str, String)>) {
        let started = self.clock.now_millis();
        let unsynced = self.link.as_ref().is_some_and(|link| link.never_synced());
        let snapshot = match self.unsynced.load_full() {
            Some(deny) if unsynced => deny,
            _ => self.snapshot.load_full(),
        };
        let decision = self.decide(input, &snapshot);
        self.count_failure(&decision, &snapshot);
        self.ask_for_keys(&decision, &snapshot);
        let policy = portcullis::telemetry::audit::Policy { hash: &snapshot.hash, generation: snapshot.generation };
        let now = self.clock.now_millis();
        let elapsed = Duration::from_millis(u64::try_from(now - started).unwrap_or(0));
        self.audit.record(input, &decision, policy, elapsed, now);
        let metadata =
            portcullis_core::answer::metadata(&decision).into_iter().map(|(k, v)| (k, v.to_string())).collect();
        (answer(decision, &input.request_id, &snapshot.policy.response), metadata)
    }

    fn decide(&self, input: &CheckInput, snapshot: &Snapshot) -> Decision {
        let now = self.clock.now();
        let stale = self.link.as_ref().is_some_and(|link| link.is_stale(self.clock.now_millis()));
        let services = self.services(&snapshot.verifier, stale);
        let decision = match begin(input, &snapshot.policy, &services, now) {
            Progress::Decided(decision) => decision,
            Progress::Verify(pending) => {
                // The cache's futures never wait on I/O: at most on another worker verifying
                // the same token (single flight), which is as long as verifying it here.
                let verified = futures_executor::block_on(self.cache.verify(
                    &snapshot.verifier,
                    pending.token(),
                    pending.digest(),
                    now,
                ));
                finish(&pending, verified, None, &services, now)
            }
        };
        fleet_tiers_unreachable(decision)
    }

    /// Auto-block, counted in this Envoy (docs/contract.md step 14: only invalid credentials,
    /// never a trusted proxy).
    fn count_failure(&self, decision: &Decision, snapshot: &Snapshot) {
        let Some(rule) = snapshot.policy.ip.auto_block else { return };
        let Outcome::Deny(deny) = &decision.outcome else { return };
        let (Some(ip), false, true) =
            (decision.context.client_ip, decision.context.client_trusted, deny.counts_as_failure)
        else {
            return;
        };
        let key = client_key(ip);
        let now = self.clock.now();
        // The fleet's count too: the sidecar counts it with every replica's (and blocks there).
        if let Some(link) = &self.link {
            link.send(format!("F {key}"));
        }
        if self.state.count_failure(&key, now, rule.window_secs) >= rule.failures {
            self.state.block_locally(&Block { cidr: key, expires_at: now.0 + rule.block_for_secs });
        }
    }
}

impl Engine {
    /// A token named a key its remote issuer lacks: the sidecar is asked to refetch (its
    /// cooldown applies), and the key set reaches this Envoy on the stream. This request was
    /// answered already (401): a worker never waits on the sidecar.
    fn ask_for_keys(&self, decision: &Decision, snapshot: &Snapshot) {
        let (Some(link), Some(issuer)) = (&self.link, decision.context.key_miss) else { return };
        if let Some(issuer) = snapshot.verifier.issuers.get(issuer.0) {
            link.ask_refetch(&issuer.issuer);
        }
    }
}

/// `snapshot` under `on_stale: deny`, when it says `serve_local` (else nothing to swap).
fn deny_when_stale(snapshot: &Snapshot) -> Option<Arc<Snapshot>> {
    (snapshot.policy.on_stale == OnStale::ServeLocal).then(|| {
        let mut policy = snapshot.policy.clone();
        policy.on_stale = OnStale::Deny;
        Arc::new(Snapshot {
            policy,
            verifier: snapshot.verifier.clone(),
            generation: snapshot.generation,
            hash: snapshot.hash.clone(),
            admin_token: snapshot.admin_token.clone(),
            revocation_lifetimes: snapshot.revocation_lifetimes.clone(),
            dpop: snapshot.dpop.clone(),
            rule_metrics: snapshot.rule_metrics,
        })
    })
}

/// A fleet-wide tier needs the shared store, which the module cannot reach: such a policy is
/// refused at load (`settings::check_supported`), and should one slip through, its requests
/// are refused, never let past an uncounted limit.
fn fleet_tiers_unreachable(decision: Decision) -> Decision {
    if decision.context.fleet_limits.is_empty() || !matches!(decision.outcome, Outcome::Allow { .. }) {
        return decision;
    }
    let deny = Deny::new(DenyReason::StateStale, "fleet rate limits are not counted inside Envoy");
    Decision::deny(deny, decision.context)
}
