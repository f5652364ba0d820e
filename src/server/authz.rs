//! The tonic `Authorization` service: bound the work, decide, record, answer.

use super::convert::{check_input, check_response_owned, jwt_authn_payloads};
use super::proto::envoy::service::auth::v3::authorization_server::Authorization;
use super::proto::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use crate::cache::{CacheSettings, ClaimsCache};
use crate::clock::Clock;
use crate::config::Snapshot;
use crate::decision::{
    CheckInput, Decision, DecisionContext, Deny, DenyReason, Outcome, Pending, Progress, ProofError, ProofOutcome,
    ProofVerifier, Services, UnixTime, begin, client_key, finish,
};
use crate::jwt::Verifier;
use crate::state::StateHealth;
use crate::state::apikeys::ApiKeyStore;
use crate::state::blocks::{Block, BlockStore};
use crate::state::fleet::StateStore;
use crate::state::membership::MemberStore;
use crate::state::ratelimit::{FleetLimits, RateLimits};
use crate::state::revocation::RevocationStore;
use crate::state::sessions::SessionStore;
use crate::telemetry::audit::AuditSink;
use crate::telemetry::{metrics as names, tracing_otel};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A payload Envoy's `jwt_authn` verified, by its metadata key.
type Attested = (String, serde_json::Map<String, serde_json::Value>);

/// Longest a deny waits to record a credential failure (a shared backend may be slow).
const FAILURE_WRITE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Longest a check waits for an unknown `kid`'s refetch before answering 401.
pub const KEY_REFETCH_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// What [`AppState::new`] is built from.
pub struct StateParts {
    pub snapshot: Arc<Snapshot>,
    pub clock: Arc<dyn Clock>,
    pub max_inflight: usize,
    pub audit: AuditSink,
    pub tracing: bool,
    pub cache: CacheSettings,
    pub revocations: Arc<dyn RevocationStore>,
    pub members: Arc<dyn MemberStore>,
    pub blocks: Arc<dyn BlockStore>,
    pub api_keys: Arc<dyn ApiKeyStore>,
    pub sessions: Arc<dyn SessionStore>,
    /// All of the above as one object (they are one `FleetState`): purged as one.
    pub store: Arc<dyn StateStore>,
    pub nonces: crate::jwt::dpop::Nonces,
    pub state_health: Option<Arc<StateHealth>>,
    /// Fleet-wide rate-limit tiers: the Redis store (when there is one) and the fallback divisor.
    pub fleet: FleetLimits,
}

/// What every Check shares.
pub struct AppState {
    /// The policy in force; hot reload swaps it whole, between checks.
    pub(super) snapshot: ArcSwap<Snapshot>,
    pub(super) clock: Arc<dyn Clock>,
    /// Permits for in-flight checks; none left means an immediate 503 `overloaded`.
    pub(super) inflight: Arc<Semaphore>,
    pub(super) max_inflight: usize,
    pub(super) audit: AuditSink,
    /// Continue the caller's `traceparent` (only worth the parsing when traces are exported).
    pub(super) tracing: bool,
    pub(super) cache: ClaimsCache,
    pub(super) revocations: Arc<dyn RevocationStore>,
    /// Dynamic tenant memberships (admin API).
    pub(super) members: Arc<dyn MemberStore>,
    /// Dynamic IP blocks and failure counts.
    pub(super) blocks: Arc<dyn BlockStore>,
    /// API keys added and revoked at run time.
    pub(super) api_keys: Arc<dyn ApiKeyStore>,
    /// Session last-seen times.
    pub(super) sessions: Arc<dyn SessionStore>,
    pub(super) store: Arc<dyn StateStore>,
    /// DPoP: this process's server nonces and the proofs it has seen.
    pub(super) nonces: crate::jwt::dpop::Nonces,
    pub(super) seen_proofs: crate::state::replay::SeenProofs,
    pub(super) rate_limits: RateLimits,
    pub(super) fleet: FleetLimits,
    metrics: names::CheckMetrics,
    /// Contact with the shared state backend; `None` for memory state.
    pub(super) state_health: Option<Arc<StateHealth>>,
}

impl AppState {
    pub fn new(parts: StateParts) -> Self {
        // Before the cache: both take metric handles, which need the recorder installed.
        let metrics = names::CheckMetrics::register();
        Self {
            metrics,
            snapshot: ArcSwap::new(parts.snapshot),
            clock: parts.clock.clone(),
            inflight: Arc::new(Semaphore::new(parts.max_inflight)),
            max_inflight: parts.max_inflight,
            audit: parts.audit,
            tracing: parts.tracing,
            cache: ClaimsCache::new(parts.cache),
            revocations: parts.revocations,
            members: parts.members,
            blocks: parts.blocks,
            api_keys: parts.api_keys,
            sessions: parts.sessions,
            store: parts.store,
            nonces: parts.nonces,
            seen_proofs: crate::state::replay::SeenProofs::default(),
            rate_limits: RateLimits::new(parts.clock.clone()),
            fleet: parts.fleet,
            state_health: parts.state_health,
        }
    }

    /// Puts `snapshot` in force for every check that starts from now on (reload).
    pub fn replace_snapshot(&self, snapshot: Arc<Snapshot>) -> Arc<Snapshot> {
        self.snapshot.swap(snapshot)
    }

    /// Forgets what has expired: fleet state no longer holding under the policy in force
    /// (revocation lifetimes are read now, not when the revocation was written), idle
    /// rate-limit keys.
    pub fn purge_expired(&self) {
        let now = self.clock.now();
        let lifetimes = self.snapshot.load().revocation_lifetimes.clone();
        self.store.purge(now, lifetimes);
        self.rate_limits.evict_idle();
        self.fleet.evict_idle();
    }

    /// What `/readyz` says: ready only while serving, once every required issuer has had keys
    /// and (Redis) after the first resync. A stale backend is named but does not make the
    /// replica unready: every replica would go at once (the stale policy decides checks).
    pub(super) fn ready_report(&self, serving: bool) -> super::ReadyReport {
        let snapshot = self.snapshot.load();
        let (never, dropped) = snapshot.verifier.issuers_without_keys();
        let names = |list: Vec<Arc<str>>| list.iter().map(|i| i.to_string()).collect::<Vec<String>>();
        let (issuers_without_keys, issuers_past_max_stale) = (names(never), names(dropped));
        let now_ms = self.clock.now_millis();
        let (state, state_contact_age_ms) = match &self.state_health {
            None => ("memory", None),
            Some(h) if !h.synced() => ("not_synced", Some(h.since_heard_ms(now_ms))),
            Some(h) if h.is_stale(now_ms) => ("stale", Some(h.since_heard_ms(now_ms))),
            Some(h) => ("synced", Some(h.since_heard_ms(now_ms))),
        };
        let ready = serving && issuers_without_keys.is_empty() && state != "not_synced";
        // Every readiness reading (the follower's and /readyz's) updates the gauge.
        metrics::gauge!(crate::telemetry::metrics::READY).set(if ready { 1.0 } else { 0.0 });
        super::ReadyReport {
            ready,
            draining: !serving,
            issuers_without_keys,
            issuers_past_max_stale,
            state,
            state_contact_age_ms,
            policy: super::health_http::PolicyId { hash: snapshot.hash.to_string(), generation: snapshot.generation },
        }
    }

    /// Takes every in-flight permit, as if that many checks were running (the overload test).
    pub fn hold_every_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inflight.clone().try_acquire_many_owned(u32::try_from(self.max_inflight).ok()?).ok()
    }

    /// The core's view of this replica's state. `verifier` is the uncached one: the serving
    /// path verifies through the claims cache between [`begin`] and [`finish`], never through it.
    fn services<'a>(&'a self, verifier: &'a Verifier, state_stale: bool) -> Services<'a> {
        Services {
            verifier,
            revocations: self.revocations.as_ref(),
            memberships: self.members.as_ref(),
            blocks: self.blocks.as_ref(),
            rate_limits: &self.rate_limits,
            api_keys: self.api_keys.as_ref(),
            sessions: self.sessions.as_ref(),
            // The serving path verifies proofs at its edge (with the replay check), never here.
            proofs: &crate::decision::binding::NoProofs,
            state_stale,
            trace: None,
        }
    }

    /// The request's DPoP proof, checked once: header, signature and claims under the policy's
    /// `dpop:`, then replay — this replica's memory first, then the fleet's (bounded wait; a
    /// backend that cannot answer refuses the proof rather than risk a replay).
    async fn check_proof(
        &self,
        pending: &Pending<'_>,
        snapshot: &Snapshot,
        bound_key: Option<&str>,
        now: UnixTime,
    ) -> ProofOutcome {
        let (proof, request) = pending.dpop_proof()?;
        let Some(settings) = snapshot.dpop.as_deref() else {
            return Some(Err(ProofError::Invalid("DPoP is not configured".into())));
        };
        let verifier = crate::jwt::dpop::DpopVerifier { settings, nonces: &self.nonces };
        let proof = match verifier.verify_proof(proof, &request, now) {
            Ok(proof) => proof,
            Err(e) => return Some(Err(e)),
        };
        // A proof by another key than the token names is refused by the core; it spends no
        // replay slot (a client with a token of its own cannot fill the cache with them).
        if bound_key != Some(proof.jkt.as_str()) {
            return Some(Ok(proof));
        }
        // As long as the proof can still be accepted anywhere: `iat` up to a leeway ahead,
        // accepted max_age after it, whole seconds, another replica's clock a leeway off.
        let window = std::time::Duration::from_secs(
            (settings.max_age_secs + 2 * settings.leeway_secs + 2).max(1).unsigned_abs(),
        );
        let key = crate::state::replay::SeenProofs::key(&proof.jkt, &proof.jti);
        if self.seen_proofs.is_full() {
            return Some(Err(ProofError::Unavailable("the DPoP replay cache is full".into())));
        }
        if !self.seen_proofs.first_use(key, window) {
            return Some(Err(ProofError::Invalid("proof replayed".into())));
        }
        match tokio::time::timeout(FAILURE_WRITE_WAIT, self.store.first_use(&key, window)).await {
            Ok(Ok(true)) => Some(Ok(proof)),
            Ok(Ok(false)) => Some(Err(ProofError::Invalid("proof replayed (seen by another replica)".into()))),
            Ok(Err(e)) => Some(Err(ProofError::Unavailable(e.to_string()))),
            Err(_) => Some(Err(ProofError::Unavailable("the state backend did not answer in time".into()))),
        }
    }

    /// Decides one request (no transport involved); used by the service and by tests.
    pub async fn check(&self, request: CheckRequest) -> CheckResponse {
        // The one snapshot this check is decided on, taken before the request is converted: it
        // also says whether jwt_authn's metadata is read at all (`envoy_jwt_authn`), so a policy
        // that trusts none pays nothing for metadata Envoy forwards for other filters.
        let snapshot = self.snapshot.load_full();
        let trusts_jwt_authn = snapshot.verifier.issuers.iter().any(|i| i.jwt_authn_payload.is_some());
        let attested = if trusts_jwt_authn { jwt_authn_payloads(&request) } else { Vec::new() };
        let input = check_input(request);
        let span = tracing::info_span!(
            target: "portcullis::check",
            "Check",
            otel.kind = "server",
            request_id = %input.request_id,
            decision = Empty,
            reason = Empty,
            rule = Empty,
        );
        if self.tracing {
            let _ = span.set_parent(tracing_otel::remote_context(&input));
        }
        self.check_input(input, snapshot, &attested, span.clone()).instrument(span).await
    }

    async fn check_input(
        &self,
        input: CheckInput,
        snapshot: Arc<Snapshot>,
        attested: &[Attested],
        span: tracing::Span,
    ) -> CheckResponse {
        let started = Instant::now();
        let decision = match self.inflight.try_acquire() {
            Ok(_permit) => {
                self.metrics.inflight.increment(1.0);
                let decision = self.decide_with_key_refetch(&input, &snapshot, attested).await;
                let decision = self.fleet_limit(decision).await;
                // Inside the permit: a flood of bad tokens with a slow backend stays bounded by
                // max_inflight_checks.
                self.count_failure(&decision, &snapshot).await;
                self.metrics.inflight.decrement(1.0);
                decision
            }
            Err(_) => Decision::deny(
                Deny::new(DenyReason::Overloaded, "max_inflight_checks reached"),
                DecisionContext::default(),
            ),
        };
        self.touch_session(&decision, &snapshot);
        let elapsed = started.elapsed();
        let verdict = if matches!(decision.outcome, Outcome::Allow { .. }) { "allow" } else { "deny" };
        span.record("decision", verdict);
        span.record("reason", decision.reason());
        span.record("rule", decision.context.rule.as_deref().unwrap_or(""));
        match &decision.context.would_deny {
            Some(deny) => self.metrics.dry_run(deny.reason),
            None => self.metrics.decided(&decision.outcome),
        }
        if decision.context.stale_state {
            self.metrics.stale_decision.increment(1);
        }
        if snapshot.rule_metrics {
            let rule = decision.context.rule.clone().unwrap_or_else(|| "(none)".into());
            metrics::counter!(names::RULE_DECISIONS_TOTAL, "rule" => rule, "decision" => verdict).increment(1);
        }
        self.metrics.duration.record(elapsed.as_secs_f64());
        let policy = crate::telemetry::audit::Policy { hash: &snapshot.hash, generation: snapshot.generation };
        self.audit.record(&input, &decision, policy, elapsed, self.clock.now_millis());
        // Last: the answer takes the decision's header strings instead of copying them.
        check_response_owned(decision, &input.request_id, &snapshot.policy.response)
    }

    /// Fleet-wide tiers the decision counted against are checked now (Redis, or the local
    /// fallback); over one, the answer is 429 `rate_limited` like a local tier's. An `ip` tier
    /// (pre-auth, the login throttle) counts every request that reached it, denied or not; the
    /// others only requests that would be allowed.
    async fn fleet_limit(&self, decision: Decision) -> Decision {
        if decision.context.fleet_limits.is_empty() {
            return decision;
        }
        let allowed = matches!(decision.outcome, Outcome::Allow { .. });
        for (tier, key) in &decision.context.fleet_limits {
            if !allowed && tier.key != crate::decision::RateKey::Ip {
                continue;
            }
            if let Err(retry) = self.fleet.check(tier, key).await {
                let mut deny = Deny::new(DenyReason::RateLimited, format!("rate limit {}", tier.name));
                deny.retry_after = Some(retry.max(1));
                return Decision::deny(deny, decision.context);
            }
        }
        decision
    }

    /// Auto-block (docs/contract.md step 14): only invalid credentials count — never missing or expired
    /// ones, never a trusted proxy. OPTIONS counts like any method: a CORS preflight carries no
    /// credential, so only credential guessing over OPTIONS is counted.
    async fn count_failure(&self, decision: &Decision, snapshot: &Snapshot) {
        let Some(rule) = snapshot.policy.ip.auto_block else { return };
        let Outcome::Deny(deny) = &decision.outcome else { return };
        let counted = deny.counts_as_failure;
        let (Some(ip), false) = (decision.context.client_ip, decision.context.client_trusted) else { return };
        if !counted {
            return;
        }
        self.count_failure_of(client_key(ip), rule).await;
    }

    /// One invalid credential from the client `key`, counted in this replica and in the fleet;
    /// past `rule` the client is blocked. Also what an Envoy module's failures reach
    /// (`stream.rs`, `F` lines), so a client guessing through the modules is blocked fleet-wide.
    pub(super) async fn count_failure_of(&self, key: String, rule: crate::decision::AutoBlock) {
        let now = self.clock.now();
        // This replica's count at once; the fleet's within the bounded wait. Redis down or slow
        // never lets a client off: the local count still blocks, locally first.
        let local = self.blocks.count_failure(&key, now, rule.window_secs);
        let shared = tokio::time::timeout(FAILURE_WRITE_WAIT, self.blocks.share_failure(&key, now, rule.window_secs))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        let count = local.max(shared);
        if count < rule.failures {
            return;
        }
        tracing::warn!(client = %key, failures = count, "auto-blocking client after repeated invalid credentials");
        let block = Block { cidr: key.clone(), expires_at: now.0 + rule.block_for_secs };
        self.blocks.block_locally(&block);
        let stored = tokio::time::timeout(FAILURE_WRITE_WAIT, self.blocks.block(block)).await;
        if !matches!(stored, Ok(Ok(()))) {
            tracing::warn!(client = %key, "auto-block applied locally; the state backend gets it at its next resync");
        }
    }

    /// Writes a due session last-seen after an allow, off the request path (the hot path never
    /// waits on a shared backend; a lost write only makes the session look older).
    fn touch_session(&self, decision: &Decision, snapshot: &Snapshot) {
        let (Outcome::Allow { .. }, Some(touch), Some(policy)) =
            (&decision.outcome, &decision.context.session_touch, &snapshot.policy.sessions)
        else {
            return;
        };
        let keep = policy.idle_timeout_secs + policy.granularity_secs;
        let (store, touch) = (self.sessions.clone(), touch.clone());
        tokio::spawn(async move {
            if let Err(e) = store.touch(&touch.iss, &touch.sid, touch.at, keep).await {
                tracing::warn!(error = %e, "could not record session activity");
            }
        });
    }

    /// A session this replica refused as idle is asked of the fleet (this replica holds only
    /// the sessions it has seen, and its times are lower bounds): when the fleet saw it later,
    /// the request is decided again from the same verification (`redo`), past the steps already
    /// counted. Without an answer in time the refusal stands.
    async fn confirm_session(&self, decision: Decision, redo: impl FnOnce() -> Option<Decision>) -> Decision {
        // Only a refusal is confirmed (a dry-run allow keeps the context of what it would deny).
        let (Outcome::Deny(_), Some(judged)) = (&decision.outcome, &decision.context.session_idle) else {
            return decision;
        };
        match tokio::time::timeout(FAILURE_WRITE_WAIT, self.sessions.refresh(&judged.iss, &judged.sid, judged.at)).await
        {
            Ok(Ok(true)) => redo().unwrap_or(decision),
            Ok(Ok(false)) => decision,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "session last-seen not readable from the fleet; the refusal stands");
                decision
            }
            Err(_) => decision,
        }
    }

    /// Decides `input`: the core up to the credential, the JWT through the claims cache (awaited,
    /// not blocking a thread) or Envoy's `jwt_authn` attestation, then the rest. When the token
    /// named a key its remote issuer lacks, or its signature failed under a remote key (a
    /// rotation may have reused the `kid`), asks for a refetch and waits at most
    /// [`KEY_REFETCH_WAIT`] before verifying once more; only a miss that survives a completed
    /// refetch counts toward auto-block. The steps before verification (and their rate-limit
    /// counts) run once; a session-idle refusal is confirmed with the fleet.
    async fn decide_with_key_refetch(
        &self,
        input: &CheckInput,
        snapshot: &Snapshot,
        attested: &[Attested],
    ) -> Decision {
        let now = self.clock.now();
        let state_stale = self.state_health.as_ref().is_some_and(|h| h.is_stale(self.clock.now_millis()));
        let pending = match begin(input, &snapshot.policy, &self.services(&snapshot.verifier, state_stale), now) {
            Progress::Decided(decision) => return decision,
            Progress::Verify(pending) => pending,
        };
        // Envoy's jwt_authn may have verified this very token (`issuers[].envoy_jwt_authn`);
        // otherwise it is verified here, through the cache.
        let verified = match snapshot.verifier.verify_attested(pending.token(), attested) {
            Some(verified) => verified,
            None => self.cache.verify(&snapshot.verifier, pending.token(), pending.digest(), now).await,
        };
        // A proof is checked (and its jti spent) once, and only for a token that verified.
        let mut proof = None;
        if let Ok(token) = &verified {
            let bound = crate::decision::binding::bound_key(token);
            proof = Some(self.check_proof(&pending, snapshot, bound, now).await);
        }
        let first_proof = proof.clone().flatten();
        // Kept for a second decision only where a session may be confirmed with the fleet.
        let again_with = snapshot.policy.sessions.as_ref().and_then(|_| verified.clone().ok());
        let decision =
            finish(&pending, verified, first_proof.clone(), &self.services(&snapshot.verifier, state_stale), now);
        let decision = self
            .confirm_session(decision, || {
                let services = self.services(&snapshot.verifier, state_stale);
                again_with.map(|token| finish(&pending, Ok(token), first_proof, &services, now))
            })
            .await;
        let Some(store) = decision.context.key_miss.and_then(|issuer| snapshot.verifier.store(issuer)) else {
            return decision;
        };
        let mut fetches = store.subscribe_fetches();
        let seen = *fetches.borrow_and_update();
        if !store.request_refetch(self.clock.now_millis()) {
            return decision; // a static key set, or the fetcher refetched recently
        }
        let refetched =
            matches!(tokio::time::timeout(KEY_REFETCH_WAIT, fetches.wait_for(|f| *f != seen)).await, Ok(Ok(_)));
        if !refetched {
            return decision;
        }
        let verified = self.cache.verify(&snapshot.verifier, pending.token(), pending.digest(), now).await;
        let proof = match (proof, &verified) {
            (Some(proof), _) => proof,
            (None, Ok(token)) => {
                let bound = crate::decision::binding::bound_key(token);
                self.check_proof(&pending, snapshot, bound, now).await
            }
            (None, Err(_)) => None,
        };
        let again_with = snapshot.policy.sessions.as_ref().and_then(|_| verified.clone().ok());
        let again = finish(&pending, verified, proof.clone(), &self.services(&snapshot.verifier, state_stale), now);
        let mut again = self
            .confirm_session(again, || {
                let services = self.services(&snapshot.verifier, state_stale);
                again_with.map(|token| finish(&pending, Ok(token), proof, &services, now))
            })
            .await;
        if again.context.key_miss.is_some()
            && let Outcome::Deny(deny) = &mut again.outcome
        {
            deny.counts_as_failure = true; // the freshly fetched keys refuse it too
        }
        again
    }
}

pub struct AuthzService {
    state: Arc<AppState>,
}

impl AuthzService {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        // Deciding is CPU-only and short; it runs inline on the runtime thread (it only awaits
        // for an unknown kid's key refetch, at most KEY_REFETCH_WAIT).
        Ok(Response::new(self.state.check(request.into_inner()).await))
    }
}
